-- depends: 0001.initial-schema
-- Percentage rollouts: a segment can take a share of all users automatically, deterministically.

-- The bucket 0..9999 of a (slug, user) pair: the first 32 bits of md5('<slug>:<user_id>') as an
-- unsigned number, mod 10000. segsvc/rollout.py computes the same in Python; tests keep them
-- equal. Plain SQL (not plpgsql), so the planner inlines it.
CREATE FUNCTION segment_bucket(slug text, user_id bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT (('x' || substr(md5(slug || ':' || user_id::text), 1, 8))::bit(32)::bigint % 10000)::integer
$$;

ALTER TABLE segments
    ADD COLUMN auto_percent numeric(5, 2) NOT NULL DEFAULT 0
        CHECK (auto_percent >= 0 AND auto_percent <= 100);

ALTER TABLE memberships
    ADD COLUMN source text NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'auto'));

-- A user removed from a segment by hand is not put back by a rollout; adding them by hand again
-- lifts this. Gone with the user.
CREATE TABLE auto_exclusions (
    segment_id  bigint NOT NULL REFERENCES segments (segment_id),
    user_id     bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    excluded_at timestamptz NOT NULL,
    PRIMARY KEY (segment_id, user_id)
);

CREATE INDEX auto_exclusions_user_id_idx ON auto_exclusions (user_id);

-- Pages through a segment's members in user order; also serves everything the old index did.
CREATE INDEX memberships_segment_user_idx ON memberships (segment_id, user_id);
DROP INDEX memberships_segment_id_idx;

ALTER TABLE membership_history DROP CONSTRAINT membership_history_reason_check;
ALTER TABLE membership_history ADD CONSTRAINT membership_history_reason_check
    CHECK (reason IN ('manual', 'expired', 'segment_deleted', 'user_deleted', 'auto'));
