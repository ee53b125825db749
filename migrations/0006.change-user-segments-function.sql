-- depends: 0005.rollout-row-for-every-segment
-- A change of a registered user's segments in one statement, so that it costs one round trip
-- (segsvc/memberships.py). Its steps are those the service ran one by one before, in the same
-- order, each with a fresh snapshot (a plpgsql function's statements take one each, as separate
-- statements of a READ COMMITTED transaction do):
--   1. lock the user row (FOR NO KEY UPDATE: rollouts may still take KEY SHARE meanwhile);
--   2. lock the named active segments FOR SHARE in segment_id order (a deletion waits for this
--      change; a segment deleted meanwhile is gone);
--   3. lock the user's memberships FOR UPDATE in segment_id order (the expiry job skips them);
--   4. read the change time, after every lock, so that no later change gets an earlier time;
--   5. settle memberships expired by then, at their expiry time; remove; add; with history.
-- The user's deletion settles with the same function (sql/memberships.sql).
-- Refusals raise, so that nothing is applied: SGU01 the user is not registered (the caller
-- registers it, in a transaction, and calls again), SG404 slugs that name no active segment
-- (DETAIL: them, space-separated, in code point order), SG422 expiries not after the change
-- time (DETAIL: their indexes in the adds, comma-separated). Returns the user's segments after
-- the change.
-- `notify` payloads go to the read caches' channel (segsvc/read_cache.py), delivered at commit.
-- `actor` and `request_id` tag the transaction (segsvc/audit.py), as every change's are.

-- Ends the user's memberships whose time ran out by `settled_at`, recorded at their expiry time,
-- before any other change of the user, so that the history reads the same whenever the expiry
-- job runs. An expiry inside the segment's rollout range excludes the user from the rollout,
-- dated at the expiry, as a removal by hand does (README "Expiry (TTL)"). A deleted segment's
-- members leave at its deletion (sql/segments.sql: remove_leaving_members), so only expiries
-- before it are expiries. The caller holds the user's memberships locked.
CREATE FUNCTION settle_expired_user_memberships(settled_user_id bigint, settled_at timestamptz)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- plpgsql, not sql: its plan is kept for the session, where a sql function's body is planned
    -- at every call (0.34 ms, a third of a user's change).
    WITH expired AS (
        DELETE FROM memberships m
         USING segments s
         WHERE m.user_id = settled_user_id
           AND m.expires_at <= settled_at
           AND s.segment_id = m.segment_id
           AND (s.deleted_at IS NULL OR m.expires_at <= s.deleted_at)
     RETURNING m.user_id, m.segment_id, m.expires_at
    ),
    excluded AS (
        INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
        SELECT e.segment_id, e.user_id, e.expires_at
          FROM expired e JOIN segments s USING (segment_id)
         WHERE segment_bucket(s.slug, e.user_id) < s.auto_percent * 100
            ON CONFLICT (segment_id, user_id) DO NOTHING
    )
    INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
    SELECT e.user_id, e.segment_id, 'removed', 'expired', e.expires_at
      FROM expired e
     ORDER BY e.expires_at, e.segment_id;
END
$$;

CREATE FUNCTION change_user_segments(
    changed_user_id bigint,
    add_slugs text[],
    add_expires_at timestamptz[],
    add_ttl_seconds bigint[],
    remove_slugs text[],
    notify text[],
    actor text,
    request_id text
) RETURNS TABLE (slug text, added_at timestamptz, expires_at timestamptz)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    slugs text[] := add_slugs || remove_slugs;
    unknown text[];
    past text;
    changed_at timestamptz;
BEGIN
    -- Who changed it, and in which request: for the rows this writes (see migrations/0007).
    PERFORM set_config('segsvc.actor', coalesce(actor, ''), true),
            set_config('segsvc.request_id', coalesce(request_id, ''), true);
    PERFORM FROM users u WHERE u.user_id = changed_user_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SGU01',
            MESSAGE = format('user %s is not registered', changed_user_id);
    END IF;

    PERFORM FROM segments s
      WHERE s.slug = ANY (slugs) AND s.deleted_at IS NULL
      ORDER BY s.segment_id
        FOR SHARE;
    unknown := ARRAY(
        SELECT DISTINCT asked.slug COLLATE "C"
          FROM unnest(slugs) AS asked (slug)
         WHERE NOT EXISTS (
               SELECT FROM segments s WHERE s.slug = asked.slug AND s.deleted_at IS NULL)
         ORDER BY 1);
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'SG404',
            MESSAGE = 'no active segment for some slugs', DETAIL = array_to_string(unknown, ' ');
    END IF;

    PERFORM FROM memberships m
      WHERE m.user_id = changed_user_id
      ORDER BY m.segment_id
        FOR UPDATE;
    changed_at := clock_timestamp();

    past := (SELECT string_agg((asked.index - 1)::text, ',' ORDER BY asked.index)
               FROM unnest(add_expires_at) WITH ORDINALITY AS asked (expires_at, index)
              WHERE asked.expires_at <= changed_at);
    IF past IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SG422',
            MESSAGE = 'expiries not in the future', DETAIL = past;
    END IF;

    PERFORM settle_expired_user_memberships(changed_user_id, changed_at);

    -- A removal by hand also keeps rollouts from putting the user back into the segment.
    WITH removed AS (
        DELETE FROM memberships m
         USING segments s
         WHERE m.user_id = changed_user_id
           AND s.segment_id = m.segment_id
           AND s.slug = ANY (remove_slugs) AND s.deleted_at IS NULL
     RETURNING m.user_id, m.segment_id
    ),
    excluded AS (
        INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
        SELECT r.segment_id, r.user_id, changed_at
          FROM removed r
            ON CONFLICT (segment_id, user_id) DO NOTHING
    )
    INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
    SELECT r.user_id, r.segment_id, 'removed', 'manual', changed_at
      FROM removed r
     ORDER BY r.segment_id;

    -- Existing memberships keep added_at and take the requested expiry, and become manual (a
    -- person now manages them, so rollouts leave them alone); new ones get a history row.
    -- expires_at wins over ttl_seconds; both null means permanent. Adding by hand lifts an
    -- exclusion from rollouts.
    WITH requested AS (
        SELECT s.segment_id,
               coalesce(r.expires_at, changed_at + r.ttl_seconds * interval '1 second')
                   AS expires_at
          FROM unnest(add_slugs, add_expires_at, add_ttl_seconds)
               AS r (slug, expires_at, ttl_seconds)
          JOIN segments s ON s.slug = r.slug AND s.deleted_at IS NULL
    ),
    renewed AS (
        UPDATE memberships m
           SET expires_at = requested.expires_at, source = 'manual'
          FROM requested
         WHERE m.user_id = changed_user_id AND m.segment_id = requested.segment_id
     RETURNING m.segment_id
    ),
    inserted AS (
        INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
        SELECT changed_user_id, requested.segment_id, changed_at, requested.expires_at
          FROM requested
         WHERE requested.segment_id NOT IN (SELECT renewed.segment_id FROM renewed)
         ORDER BY requested.segment_id
            ON CONFLICT (user_id, segment_id) DO NOTHING
     RETURNING user_id, segment_id
    ),
    included AS (
        DELETE FROM auto_exclusions x
         WHERE x.user_id = changed_user_id
           AND x.segment_id IN (SELECT requested.segment_id FROM requested)
    )
    INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
    SELECT i.user_id, i.segment_id, 'added', 'manual', changed_at
      FROM inserted i
     ORDER BY i.segment_id;

    PERFORM pg_notify('segsvc_changes', payload) FROM unnest(notify) AS payload;

    RETURN QUERY
    SELECT s.slug, m.added_at, m.expires_at
      FROM memberships m
      JOIN segments s ON s.segment_id = m.segment_id
     WHERE m.user_id = changed_user_id
       AND (m.expires_at IS NULL OR m.expires_at > changed_at)
       AND s.deleted_at IS NULL
     ORDER BY s.slug;
END
$$;
