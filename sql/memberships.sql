-- Memberships of users in segments, and the history rows every change writes.
-- Writers of a user's memberships hold the user's row lock (users.sql: lock_user_for_change or
-- lock_user_for_deletion), then the rows of lock_user_memberships, and pass %(at)s, the change time read
-- from the database once those locks are held.

-- name: change_time
-- Read after the locks are taken, so that a later change never gets an earlier time.
SELECT clock_timestamp() AS at;

-- name: user_segments
-- The hot read path: one index range scan on the memberships primary key.
SELECT s.slug, m.added_at, m.expires_at
  FROM memberships m
  JOIN segments s ON s.segment_id = m.segment_id
 WHERE m.user_id = %(user_id)s
   AND (m.expires_at IS NULL OR m.expires_at > now())
 ORDER BY s.slug;

-- name: lock_active_segments_by_slug
-- FOR SHARE makes a concurrent segment deletion wait for this change, and makes this change
-- see a segment deleted meanwhile as gone.
SELECT segment_id, slug
  FROM segments
 WHERE slug = ANY (%(slugs)s::text[]) AND deleted_at IS NULL
 ORDER BY segment_id
   FOR SHARE;

-- name: lock_user_memberships
-- The expiry job locks the memberships it ends and skips locked ones, so a change of this user
-- either makes the job skip them or waits for it and then reads a later change time.
SELECT segment_id
  FROM memberships
 WHERE user_id = %(user_id)s
 ORDER BY segment_id
   FOR UPDATE;

-- name: settle_expired_user_memberships
-- Ends the memberships whose time ran out, recorded at their expiry time, before any other
-- change of this user so that the history reads the same whenever the expiry job runs.
WITH expired AS (
    DELETE FROM memberships
     WHERE user_id = %(user_id)s AND expires_at <= %(at)s
 RETURNING user_id, segment_id, expires_at
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, segment_id;

-- name: settle_expired_segment_memberships
WITH expired AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s AND expires_at <= %(at)s
 RETURNING user_id, segment_id, expires_at
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, user_id;

-- name: add_user_memberships
-- Existing memberships keep added_at and take the requested expiry, and become manual (a person
-- now manages them, so rollouts leave them alone); new ones get a history row. expires_at wins
-- over ttl_seconds; both null means permanent. Adding by hand lifts an exclusion from rollouts.
WITH requested AS (
    SELECT segment_id,
           coalesce(expires_at, %(at)s + ttl_seconds * interval '1 second') AS expires_at
      FROM unnest(%(segment_ids)s::bigint[],
                  %(expires_at)s::timestamptz[],
                  %(ttl_seconds)s::bigint[]) AS r (segment_id, expires_at, ttl_seconds)
),
renewed AS (
    UPDATE memberships m
       SET expires_at = requested.expires_at, source = 'manual'
      FROM requested
     WHERE m.user_id = %(user_id)s AND m.segment_id = requested.segment_id
 RETURNING m.segment_id
),
inserted AS (
    INSERT INTO memberships (user_id, segment_id, added_at, expires_at)
    SELECT %(user_id)s, segment_id, %(at)s, expires_at
      FROM requested
     WHERE segment_id NOT IN (SELECT segment_id FROM renewed)
     ORDER BY segment_id
        ON CONFLICT (user_id, segment_id) DO NOTHING
 RETURNING user_id, segment_id
),
included AS (
    DELETE FROM auto_exclusions
     WHERE user_id = %(user_id)s AND segment_id IN (SELECT segment_id FROM requested)
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'added', 'manual', %(at)s
  FROM inserted
 ORDER BY segment_id;

-- name: remove_user_memberships
-- A removal by hand also keeps rollouts from putting the user back into the segment.
WITH removed AS (
    DELETE FROM memberships
     WHERE user_id = %(user_id)s AND segment_id = ANY (%(segment_ids)s::bigint[])
 RETURNING user_id, segment_id
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT segment_id, user_id, %(at)s
      FROM removed
        ON CONFLICT (segment_id, user_id) DO NOTHING
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'manual', %(at)s
  FROM removed
 ORDER BY segment_id;

-- name: remove_all_user_memberships
WITH removed AS (
    DELETE FROM memberships
     WHERE user_id = %(user_id)s
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'user_deleted', %(at)s
  FROM removed
 ORDER BY segment_id;
