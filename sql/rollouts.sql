-- Percentage rollouts: a segment with auto_percent p holds every registered user whose
-- segment_bucket(slug, user_id) < p * 100 (see migrations/0002), as `auto` memberships.

-- name: lock_user_set_shared
-- Registrations and deletions of users run concurrently with each other but never with a
-- percentage change (a creation or a ramp): that would miss a user registered meanwhile (neither
-- sees the other's uncommitted rows), or fail on a user deleted under it.
SELECT pg_advisory_xact_lock_shared(7357001);

-- name: lock_user_set_exclusive
SELECT pg_advisory_xact_lock(7357001);

-- name: lock_auto_segments
-- Shared: a concurrent deletion of one of them finishes first, and then it is not enrolled into.
SELECT segment_id
  FROM segments
 WHERE auto_percent > 0 AND deleted_at IS NULL
 ORDER BY segment_id
   FOR SHARE;

-- name: enroll_new_users
-- The users were registered by this transaction, so none has a membership yet, nor can another
-- transaction add one before this commits: no ON CONFLICT, whose speculative insertion cost a
-- quarter of the memberships' insert.
WITH enrolled AS (
    INSERT INTO memberships (user_id, segment_id, added_at, source)
    SELECT u.user_id, s.segment_id, %(at)s, 'auto'
      FROM unnest(%(user_ids)s::bigint[]) AS u (user_id)
      JOIN segments s ON s.segment_id = ANY (%(segment_ids)s::bigint[])
     WHERE segment_bucket(s.slug, u.user_id) < s.auto_percent * 100
     ORDER BY u.user_id, s.segment_id
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'added', 'auto', %(at)s
  FROM enrolled
 ORDER BY user_id, segment_id;

-- name: enroll_bucket_range
-- Ramp-up: every registered user whose bucket is in [from_bucket, to_bucket) and who is neither
-- a member nor excluded by hand. No user is registered or deleted meanwhile (lock_user_set_*).
WITH enrolled AS (
    INSERT INTO memberships (user_id, segment_id, added_at, source)
    SELECT u.user_id, %(segment_id)s, %(at)s, 'auto'
      FROM users u
     WHERE segment_bucket(%(slug)s, u.user_id) >= %(from_bucket)s
       AND segment_bucket(%(slug)s, u.user_id) < %(to_bucket)s
       AND NOT EXISTS (SELECT 1 FROM memberships m
                        WHERE m.user_id = u.user_id AND m.segment_id = %(segment_id)s)
       AND NOT EXISTS (SELECT 1 FROM auto_exclusions e
                        WHERE e.user_id = u.user_id AND e.segment_id = %(segment_id)s)
     -- No index gives this order, so a sort reads every candidate before the first insert: the
     -- membership check then never scans rows this statement is adding (quadratic otherwise).
     ORDER BY segment_bucket(%(slug)s, u.user_id), u.user_id
        ON CONFLICT (user_id, segment_id) DO NOTHING
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'added', 'auto', %(at)s
  FROM enrolled
 ORDER BY user_id;

-- name: disenroll_from_bucket
-- Ramp-down: only automatic members whose bucket is now out of range; manual ones stay.
WITH removed AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s
       AND source = 'auto'
       AND segment_bucket(%(slug)s, user_id) >= %(from_bucket)s
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'auto', %(at)s
  FROM removed
 ORDER BY user_id;
