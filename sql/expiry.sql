-- Ending memberships whose time ran out (the expiry job and the report's settling).

-- name: expire_due_memberships
-- One batch. Locked rows are skipped, never waited for: a user's change holds its memberships
-- (memberships.sql: lock_user_memberships) and settles them itself, and a segment deletion or
-- ramp holds its segment (FOR NO KEY UPDATE, which FOR SHARE conflicts with) and settles that
-- segment's. Each row ends at its own expiry time.
WITH due AS (
    SELECT m.user_id, m.segment_id
      FROM memberships m
      JOIN segments s ON s.segment_id = m.segment_id
     WHERE m.expires_at <= %(at)s
     ORDER BY m.expires_at
     LIMIT %(batch_size)s
       FOR UPDATE OF m SKIP LOCKED
       FOR SHARE OF s SKIP LOCKED
),
expired AS (
    DELETE FROM memberships m
     USING due
     WHERE m.user_id = due.user_id AND m.segment_id = due.segment_id
 RETURNING m.user_id, m.segment_id, m.expires_at
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, user_id, segment_id;

-- name: due_memberships_remain
SELECT EXISTS (SELECT 1 FROM memberships WHERE expires_at <= %(at)s) AS remain;
