-- Many users' memberships of one segment in one change (segsvc/members.py). The global lock
-- order (README "Design notes"): the users' rows, in id order; the segment, shared; the users'
-- memberships of it; then the change time. Ids come as array literals ('{1,2,3}'): a list would
-- go as ARRAY[...] of 10,000 expressions, parsed and planned by each statement.
--
-- A membership or an exclusion is reached by its primary key from the requested ids, never by
-- `segment_id = <this segment>` alone: the requested rows carry the segment id as a column of a
-- MATERIALIZED CTE, which the planner cannot read as a constant. It sees the whole table behind
-- the join, and chooses between probing the key once per requested id and hashing the table on
-- estimates that hold: the CTE's from the array's length, the table's from its size. With the
-- constant it estimated the segment's rows from statistics that read a segment created or
-- filled since the last ANALYZE as empty (one row), and joined the renewals to the memberships
-- found before them by a nested loop that read all of those for each renewal (on the bench's
-- data, 5,000 x 5,000 rows: 2.2 s of renewing 5,000 ids and removing 5,000 in one call). No CTE
-- is joined to another, but for the one row of `segment`.

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
-- The expiry job skips locked memberships; this waits for the ones it is ending. In user order
-- whatever the plan: rows are locked as they come out of the sort.
WITH requested AS MATERIALIZED (
    SELECT user_id, %(segment_id)s::bigint AS segment_id
      FROM unnest(%(user_ids)s::bigint[]) AS requested (user_id)
)
SELECT m.user_id
  FROM requested r
  JOIN memberships m ON m.user_id = r.user_id AND m.segment_id = r.segment_id
 ORDER BY m.user_id
   FOR UPDATE OF m;

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
WITH requested AS MATERIALIZED (
    SELECT r.user_id, %(segment_id)s::bigint AS segment_id,
           coalesce(r.expires_at, %(at)s + r.ttl_seconds * interval '1 second') AS expires_at
      FROM unnest(%(add_user_ids)s::bigint[],
                  %(add_expires_at)s::timestamptz[],
                  %(add_ttl_seconds)s::bigint[]) AS r (user_id, expires_at, ttl_seconds)
),
leaving AS MATERIALIZED (
    SELECT user_id, %(segment_id)s::bigint AS segment_id
      FROM unnest(%(remove_user_ids)s::bigint[]) AS leaving (user_id)
),
-- Read once, not once per removed user.
segment AS MATERIALIZED (
    SELECT segment_id, slug, auto_percent FROM segments WHERE segment_id = %(segment_id)s
),
-- Each requested id with its membership before the change, if any: one probe of the key each,
-- which the renewal and the insertion both filter.
previous AS MATERIALIZED (
    SELECT r.user_id, r.segment_id, r.expires_at AS renewed_until,
           m.user_id IS NOT NULL AS member, m.expires_at,
           m.expires_at IS NOT NULL AND m.expires_at <= %(at)s AS lapsed
      FROM requested r
      LEFT JOIN memberships m ON m.user_id = r.user_id AND m.segment_id = r.segment_id
),
renewed AS (
    UPDATE memberships m
       SET added_at = CASE WHEN p.lapsed THEN %(at)s ELSE m.added_at END,
           expires_at = p.renewed_until,
           source = 'manual'
      FROM previous p
     WHERE p.member AND m.user_id = p.user_id AND m.segment_id = p.segment_id
 RETURNING m.user_id, p.lapsed, p.expires_at AS lapsed_at
),
inserted AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT user_id, segment_id, %(at)s, renewed_until
      FROM previous
     WHERE NOT member
     ORDER BY user_id
 RETURNING user_id
),
removed AS (
    DELETE FROM memberships m
     USING leaving l
     WHERE m.user_id = l.user_id AND m.segment_id = l.segment_id
 RETURNING m.user_id,
           m.expires_at IS NOT NULL AND m.expires_at <= %(at)s AS lapsed,
           m.expires_at AS lapsed_at
),
included AS (
    DELETE FROM auto_exclusions e
     USING requested r
     WHERE e.segment_id = r.segment_id AND e.user_id = r.user_id
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT s.segment_id, d.user_id, CASE WHEN d.lapsed THEN d.lapsed_at ELSE %(at)s END
      FROM removed d
     CROSS JOIN segment s
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
