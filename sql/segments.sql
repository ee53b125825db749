-- Segments: creation, listing, deletion.
-- member_count counts memberships a read would return: expired ones are not counted.

-- name: create_segment
INSERT INTO segments (slug, description, created_at)
VALUES (%(slug)s, %(description)s, now())
ON CONFLICT (slug) WHERE deleted_at IS NULL DO NOTHING
RETURNING slug, description, created_at, deleted_at, 0 AS member_count;

-- name: find_segments
-- All segments, or one slug; active only unless include_deleted. Ordered by slug, then age.
SELECT s.slug, s.description, s.created_at, s.deleted_at,
       (SELECT count(*)
          FROM memberships m
         WHERE m.segment_id = s.segment_id
           AND (m.expires_at IS NULL OR m.expires_at > now())) AS member_count
  FROM segments s
 WHERE (s.deleted_at IS NULL OR %(include_deleted)s)
   AND (%(slug)s::text IS NULL OR s.slug = %(slug)s)
 ORDER BY s.slug, s.created_at;

-- name: lock_active_segment
-- Blocks concurrent membership changes of this segment until the deletion commits.
SELECT segment_id
  FROM segments
 WHERE slug = %(slug)s AND deleted_at IS NULL
   FOR UPDATE;

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

-- name: mark_segment_deleted
UPDATE segments
   SET deleted_at = %(at)s, is_active = false
 WHERE segment_id = %(segment_id)s;
