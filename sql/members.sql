-- Many users' memberships of one segment in one change (segsvc/members.py). The global lock
-- order (README "Design notes"): the users' rows, in id order; the segment, shared; the users'
-- memberships of it; then the change time. Ids come as array literals ('{1,2,3}'): a list would
-- go as ARRAY[...] of 10,000 expressions, parsed and planned by each statement.

-- name: lock_or_register_users
-- Every row in one pass in id order, so that this never deadlocks with another writer of users
-- in id order (a rollout's chunk, another bulk change, a registration): an existing user is
-- locked as lock_user_for_change locks one (ON CONFLICT DO UPDATE locks the row even when its
-- WHERE is false, so nothing is written, and setting no key column makes it FOR NO KEY
-- UPDATE), a missing one registered. A user deleted while this waits for it is registered
-- again. register_users would not do: its DO NOTHING locks no existing row, and locking them
-- afterwards would take them behind the inserted ones, out of id order. Returns the users this
-- registered, to enrol in the percentage segments as every registration does.
INSERT INTO users AS u (user_id, registered_at)
SELECT user_id, now()
  FROM unnest(%(user_ids)s::bigint[]) AS requested (user_id)
 ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET registered_at = u.registered_at WHERE false
RETURNING user_id;

-- name: lock_segment_of_members
-- Shared, as a user's change locks the segments it names: a deletion or a ramp of the segment
-- waits for this change, and a segment deleted meanwhile is gone.
SELECT segment_id
  FROM segments
 WHERE slug = %(slug)s AND deleted_at IS NULL
   FOR SHARE;

-- name: lock_segment_members
-- The expiry job skips locked memberships; this waits for the ones it is ending.
SELECT user_id
  FROM memberships
 WHERE segment_id = %(segment_id)s AND user_id = ANY (%(user_ids)s::bigint[])
 ORDER BY user_id
   FOR UPDATE;

-- name: change_segment_members
-- The whole change, as a user's PATCH makes it for each of these users and this segment, in one
-- statement that changes each membership once (a row changed twice in one statement keeps one
-- of the changes, which one is not defined):
-- - an expired membership ends at its expiry time, as settle_expired_user_memberships ends it,
--   before the change: one of an id in `remove` is deleted with its `expired` row (and the
--   user excluded from the rollout if the expiry was inside its range); one of an id in `add`
--   is taken over by the new membership (its `expired` row, then an `added` one, both here);
-- - other memberships of ids in `add` are renewed: they keep added_at, take the new expiry and
--   become manual, with no history row (change_user_segments, migrations/0006); the missing
--   ones are inserted;
-- - other memberships of ids in `remove` end with a `manual` row and exclude the user from the
--   rollout (as change_user_segments removes); adding by hand lifts an exclusion.
-- expires_at wins over ttl_seconds; both null means permanent. Answers the counts and the users
-- whose reads change.
WITH requested AS (
    SELECT user_id,
           coalesce(expires_at, %(at)s + ttl_seconds * interval '1 second') AS expires_at
      FROM unnest(%(add_user_ids)s::bigint[],
                  %(add_expires_at)s::timestamptz[],
                  %(add_ttl_seconds)s::bigint[]) AS r (user_id, expires_at, ttl_seconds)
),
previous AS (
    SELECT m.user_id, m.expires_at,
           m.expires_at IS NOT NULL AND m.expires_at <= %(at)s AS lapsed
      FROM memberships m
      JOIN requested r USING (user_id)
     WHERE m.segment_id = %(segment_id)s
),
renewed AS (
    UPDATE memberships m
       SET added_at = CASE WHEN p.lapsed THEN %(at)s ELSE m.added_at END,
           expires_at = r.expires_at,
           source = 'manual'
      FROM requested r
      JOIN previous p USING (user_id)
     WHERE m.segment_id = %(segment_id)s AND m.user_id = r.user_id
 RETURNING m.user_id, p.lapsed, p.expires_at AS lapsed_at
),
inserted AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT r.user_id, %(segment_id)s, %(at)s, r.expires_at
      FROM requested r
      LEFT JOIN previous p USING (user_id)
     WHERE p.user_id IS NULL
     ORDER BY r.user_id
 RETURNING user_id
),
removed AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s AND user_id = ANY (%(remove_user_ids)s::bigint[])
 RETURNING user_id,
           expires_at IS NOT NULL AND expires_at <= %(at)s AS lapsed,
           expires_at AS lapsed_at
),
included AS (
    DELETE FROM auto_exclusions e
     USING requested r
     WHERE e.segment_id = %(segment_id)s AND e.user_id = r.user_id
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT s.segment_id, d.user_id, CASE WHEN d.lapsed THEN d.lapsed_at ELSE %(at)s END
      FROM removed d
      JOIN segments s ON s.segment_id = %(segment_id)s
     WHERE NOT d.lapsed OR segment_bucket(s.slug, d.user_id) < s.auto_percent * 100
     ORDER BY d.user_id
        ON CONFLICT (segment_id, user_id) DO NOTHING
),
history AS (
    INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
    SELECT user_id, %(segment_id)s, operation, reason, at
      FROM (SELECT user_id, 'removed' AS operation, 'expired' AS reason, lapsed_at AS at
              FROM renewed
             WHERE lapsed
             UNION ALL
            SELECT user_id, 'added', 'manual', %(at)s FROM renewed WHERE lapsed
             UNION ALL
            SELECT user_id, 'added', 'manual', %(at)s FROM inserted
             UNION ALL
            SELECT user_id, 'removed',
                   CASE WHEN lapsed THEN 'expired' ELSE 'manual' END,
                   CASE WHEN lapsed THEN lapsed_at ELSE %(at)s END
              FROM removed) AS changes
     ORDER BY at, user_id, operation DESC
)
SELECT (SELECT count(*) FROM inserted) + (SELECT count(*) FROM renewed WHERE lapsed) AS added,
       (SELECT count(*) FROM renewed WHERE NOT lapsed) AS renewed,
       (SELECT count(*) FROM removed WHERE NOT lapsed) AS removed,
       ARRAY(SELECT user_id FROM renewed
             UNION ALL
             SELECT user_id FROM inserted
             UNION ALL
             SELECT user_id FROM removed WHERE NOT lapsed) AS changed_user_ids;
