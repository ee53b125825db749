-- Segments: creation, listing, deletion.
-- member_count counts memberships a read would return: expired ones are not counted.

-- name: create_segment
INSERT INTO segments (slug, description, auto_percent, created_at)
VALUES (%(slug)s, %(description)s, %(auto_percent)s, now())
ON CONFLICT (slug) WHERE deleted_at IS NULL DO NOTHING
RETURNING segment_id, slug;

-- name: find_segments
-- All segments, or one slug; active only unless include_deleted. Ordered by slug, then age. A
-- segment whose percentage was ever set has a rollout: users_left counts the registered users
-- its chunks have still to reach (an index-only range scan, only while it converges).
SELECT s.slug, s.description, s.auto_percent, s.created_at, s.deleted_at,
       (SELECT count(*)
          FROM memberships m
         WHERE m.segment_id = s.segment_id
           AND (m.expires_at IS NULL OR m.expires_at > now())) AS member_count,
       r.started_at AS rollout_started_at,
       r.finished_at AS rollout_finished_at,
       CASE WHEN r.segment_id IS NOT NULL AND r.finished_at IS NULL
            THEN (SELECT count(*) FROM users u WHERE u.user_id > r.converged_up_to)
            ELSE 0 END AS rollout_users_left
  FROM segments s
  LEFT JOIN rollouts r ON r.segment_id = s.segment_id
 WHERE (s.deleted_at IS NULL OR %(include_deleted)s)
   AND (%(slug)s::text IS NULL OR s.slug = %(slug)s)
 ORDER BY s.slug, s.created_at;

-- name: lock_active_segment
-- Before deleting or changing a segment: concurrent membership changes naming it wait for this
-- transaction, and the expiry job skips its memberships meanwhile. NO KEY UPDATE, not UPDATE:
-- a user's change or deletion that ends its membership here takes KEY SHARE on this row (the
-- history's foreign key) while holding that membership, which this transaction waits for; under
-- FOR UPDATE both would wait for each other, a deadlock.
SELECT segment_id, slug, description, auto_percent
  FROM segments
 WHERE slug = %(slug)s AND deleted_at IS NULL
   FOR NO KEY UPDATE;

-- name: remove_all_segment_members
WITH removed AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'segment_deleted', %(at)s
  FROM removed
 ORDER BY user_id;

-- name: update_segment
UPDATE segments
   SET auto_percent = %(auto_percent)s,
       description = %(description)s
 WHERE segment_id = %(segment_id)s;

-- name: mark_segment_deleted
UPDATE segments
   SET deleted_at = %(at)s, is_active = false
 WHERE segment_id = %(segment_id)s;

-- name: active_segment_id
SELECT segment_id
  FROM segments
 WHERE slug = %(slug)s AND deleted_at IS NULL;

-- name: segment_members
-- One page in user order, by keyset (user ids after `after`), from the (segment_id, user_id)
-- index. One row more than asked tells whether another page follows.
SELECT user_id, added_at, expires_at, source
  FROM memberships
 WHERE segment_id = %(segment_id)s
   AND user_id > %(after)s
   AND (expires_at IS NULL OR expires_at > now())
 ORDER BY user_id
 LIMIT %(limit)s + 1;
