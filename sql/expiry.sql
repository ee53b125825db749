-- Ending memberships whose time ran out (the expiry job and the report's settling).

-- name: expire_due_memberships
-- One batch. Locked rows are skipped, never waited for: a user's change holds its memberships
-- (memberships.sql: lock_user_memberships) and settles them itself, and a ramp, or a chunk of a
-- deleted segment's members leaving, holds its segment (FOR NO KEY UPDATE, which FOR SHARE
-- conflicts with) and ends those itself. Each row ends at its own expiry time. An expiry inside the segment's rollout range,
-- judged on the locked (so latest) percentage, excludes the user from the rollout
-- (memberships.sql: settle_expired_user_memberships). The user is held too, as the exclusion's
-- foreign key needs, and skipped while being deleted: the deletion settles its memberships itself.
WITH due AS (
    SELECT m.user_id, m.segment_id,
           segment_bucket(s.slug, m.user_id) < s.auto_percent * 100 AS inside_rollout
      FROM memberships m
      JOIN segments s ON s.segment_id = m.segment_id
      JOIN users u ON u.user_id = m.user_id
     WHERE m.expires_at <= %(at)s
       AND (s.deleted_at IS NULL OR m.expires_at <= s.deleted_at)
     ORDER BY m.expires_at
     LIMIT %(batch_size)s
       FOR UPDATE OF m SKIP LOCKED
       FOR SHARE OF s SKIP LOCKED
       FOR KEY SHARE OF u SKIP LOCKED
),
expired AS (
    DELETE FROM memberships m
     USING due
     WHERE m.user_id = due.user_id AND m.segment_id = due.segment_id
 RETURNING m.user_id, m.segment_id, m.expires_at, due.inside_rollout
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT segment_id, user_id, expires_at
      FROM expired
     WHERE inside_rollout
        ON CONFLICT (segment_id, user_id) DO NOTHING
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, user_id, segment_id;

-- name: due_memberships_remain
-- What expire_due_memberships ends: a deleted segment's members leave at its deletion instead.
SELECT EXISTS (SELECT 1
                 FROM memberships m
                 JOIN segments s ON s.segment_id = m.segment_id
                WHERE m.expires_at <= %(at)s
                  AND (s.deleted_at IS NULL OR m.expires_at <= s.deleted_at)) AS remain;
