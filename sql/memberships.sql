-- Memberships of users in segments, and the history rows every change writes.
-- Writers of a user's memberships hold the user's row lock (users.sql: lock_user_for_change or
-- lock_user_for_deletion), then the rows of lock_user_memberships, and pass %(at)s, the change time read
-- from the database once those locks are held.

-- name: change_time
-- Read after the locks are taken, so that a later change never gets an earlier time.
SELECT clock_timestamp() AS at;

-- name: user_segments
-- The hot read path: one index range scan on the memberships primary key. An id that is not
-- registered has no memberships and reads what registering it now would give it: the percentage
-- segments whose bucket rule selects it, added now. For a registered user the second branch costs
-- one probe of the users primary key (a one-time filter) and computes no bucket. read_at and
-- stored tell the read cache the database's time and whether the rows are stored or computed.
SELECT s.slug, m.added_at, m.expires_at, now() AS read_at, true AS stored
  FROM memberships m
  JOIN segments s ON s.segment_id = m.segment_id
 WHERE m.user_id = %(user_id)s
   AND (m.expires_at IS NULL OR m.expires_at > now())
   AND s.deleted_at IS NULL
 UNION ALL
SELECT s.slug, now(), NULL, now(), false
  FROM segments s
 WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = %(user_id)s)
   AND s.deleted_at IS NULL
   AND s.auto_percent > 0
   AND segment_bucket(s.slug, %(user_id)s) < s.auto_percent * 100
 ORDER BY slug;

-- name: users_segments
-- user_segments for many users in one statement (the batch lookup), ordered by user then slug.
-- The ids come as one array literal (a list would go as ARRAY[...] of up to 1,000 expressions).
SELECT m.user_id, s.slug, m.added_at, m.expires_at, now() AS read_at, true AS stored
  FROM memberships m
  JOIN segments s ON s.segment_id = m.segment_id
 WHERE m.user_id = ANY (%(user_ids)s::bigint[])
   AND (m.expires_at IS NULL OR m.expires_at > now())
   AND s.deleted_at IS NULL
 UNION ALL
SELECT asked.user_id, s.slug, now(), NULL, now(), false
  FROM unnest(%(user_ids)s::bigint[]) AS asked (user_id)
  JOIN segments s ON s.deleted_at IS NULL AND s.auto_percent > 0
 WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = asked.user_id)
   AND segment_bucket(s.slug, asked.user_id) < s.auto_percent * 100
 ORDER BY user_id, slug;

-- name: user_history
-- A user's latest history rows, newest first: a backward scan of the (user_id, at, history_id)
-- index. Times are timestamptz values, written out in UTC by the caller.
SELECT s.slug, h.operation, h.at, h.reason, h.actor
  FROM membership_history h
  JOIN segments s ON s.segment_id = h.segment_id
 WHERE h.user_id = %(user_id)s
 ORDER BY h.at DESC, h.history_id DESC
 LIMIT %(limit)s;

-- name: lock_user_memberships
-- The expiry job locks the memberships it ends and skips locked ones, so a change of this user
-- either makes the job skip them or waits for it and then reads a later change time.
SELECT segment_id
  FROM memberships
 WHERE user_id = %(user_id)s
 ORDER BY segment_id
   FOR UPDATE;

-- name: change_user_segments
-- A change of a registered user's segments, all in one statement: migrations/0006 holds the
-- function, its lock order and its refusals (SGU01 not registered, SG404 unknown slugs, SG422
-- past expiries). In autocommit the statement is the whole transaction: one round trip.
SELECT slug, added_at, expires_at
  FROM change_user_segments(
           %(user_id)s,
           %(add_slugs)s::text[],
           %(add_expires_at)s::timestamptz[],
           %(add_ttl_seconds)s::bigint[],
           %(remove_slugs)s::text[],
           %(notify)s::text[],
           %(actor)s::text,
           %(request_id)s::text);

-- name: settle_expired_user_memberships
-- Ends the user's memberships expired by then, at their expiry time (migrations/0006 holds the
-- function, which change_user_segments runs too).
SELECT settle_expired_user_memberships(%(user_id)s, %(at)s);

-- name: settle_expired_segment_memberships
-- As settle_expired_user_memberships. The exclusion's foreign key locks each user (KEY SHARE):
-- `due` takes those locks before the memberships', the order of a user's deletion, which would
-- otherwise hold the user and wait for a membership this holds. Reads the segment's percentage,
-- so a change of it must settle before writing the new one.
WITH due AS (
    SELECT m.user_id
      FROM memberships m
      JOIN users u ON u.user_id = m.user_id
     WHERE m.segment_id = %(segment_id)s AND m.expires_at <= %(at)s
     ORDER BY m.user_id
       FOR KEY SHARE OF u
),
expired AS (
    DELETE FROM memberships m
     USING due
     WHERE m.segment_id = %(segment_id)s AND m.user_id = due.user_id AND m.expires_at <= %(at)s
 RETURNING m.user_id, m.segment_id, m.expires_at
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT segment_id, user_id, expires_at
      FROM expired JOIN segments s USING (segment_id)
     WHERE segment_bucket(s.slug, user_id) < s.auto_percent * 100
        ON CONFLICT (segment_id, user_id) DO NOTHING
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, user_id;

-- name: remove_all_user_memberships
-- A membership of a segment deleted meanwhile (its members still leaving) ends at the deletion,
-- as the segment's other members do: no row of a segment is dated after its deletion.
WITH removed AS (
    DELETE FROM memberships m
     USING segments s
     WHERE m.user_id = %(user_id)s AND s.segment_id = m.segment_id
 RETURNING m.user_id, m.segment_id, s.deleted_at
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed',
       CASE WHEN deleted_at IS NULL THEN 'user_deleted' ELSE 'segment_deleted' END,
       coalesce(deleted_at, %(at)s)
  FROM removed
 ORDER BY segment_id;
