-- Segments: creation, listing, deletion.
-- member_count counts memberships a read would return: expired ones are not counted.

-- name: create_segment
-- With its `created` audit event (migrations/0007), when it was created.
WITH created AS (
    INSERT INTO segments (slug, description, auto_percent, created_at)
    VALUES (%(slug)s, %(description)s, %(auto_percent)s, now())
    ON CONFLICT (slug) WHERE deleted_at IS NULL DO NOTHING
    RETURNING segment_id, slug, description, auto_percent, created_at
),
event AS (
    INSERT INTO segment_events (segment_id, slug, kind, after, at)
    SELECT segment_id, slug, 'created',
           jsonb_build_object('description', description, 'auto_percent', auto_percent),
           created_at
      FROM created
)
SELECT segment_id, slug FROM created;

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
-- By id, the one whose rollout row this transaction locked first (segsvc/segments.py): locking
-- by slug could take a segment created again under the slug meanwhile without its rollout's
-- row, and then wait for that row while its holder waits for the segment.
SELECT segment_id, slug, description, auto_percent
  FROM segments
 WHERE segment_id = %(segment_id)s AND deleted_at IS NULL
   FOR NO KEY UPDATE;

-- name: claim_leaving_segment
-- The oldest deleted segment whose members are still leaving, that no one else is emptying (its
-- row lock is the lease; the expiry job skips its memberships meanwhile).
SELECT segment_id, deleted_at
  FROM segments
 WHERE is_active AND deleted_at IS NOT NULL
 ORDER BY deleted_at, segment_id
 LIMIT 1
   FOR NO KEY UPDATE SKIP LOCKED;

-- name: remove_leaving_members
-- A chunk of a deleted segment's members leaves, each dated at the deletion, or at its own
-- expiry when that came first. Memberships a user's change or deletion holds are skipped: those
-- end them by the same rule.
WITH chunk AS (
    SELECT user_id
      FROM memberships
     WHERE segment_id = %(segment_id)s
     ORDER BY user_id
     LIMIT %(chunk_members)s
       FOR UPDATE SKIP LOCKED
),
removed AS (
    DELETE FROM memberships m
     USING chunk
     WHERE m.segment_id = %(segment_id)s AND m.user_id = chunk.user_id
 RETURNING m.user_id, m.segment_id, m.expires_at
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed',
       CASE WHEN expires_at <= %(deleted_at)s THEN 'expired' ELSE 'segment_deleted' END,
       least(expires_at, %(deleted_at)s)
  FROM removed
 ORDER BY user_id;

-- name: leaving_segments_remain
SELECT EXISTS (SELECT 1 FROM segments WHERE is_active AND deleted_at IS NOT NULL) AS remain;

-- name: deactivate_left_segment
-- Once no member is left, the segment becomes inactive: from then on the memberships' foreign
-- key refuses any membership in it.
UPDATE segments
   SET is_active = false
 WHERE segment_id = %(segment_id)s
   AND NOT EXISTS (SELECT 1 FROM memberships WHERE segment_id = %(segment_id)s)
RETURNING segment_id;

-- name: update_segment
-- The caller holds the segment's row. One audit event per field that changed, with the values
-- before and after.
WITH previous AS (
    SELECT segment_id, description, auto_percent FROM segments WHERE segment_id = %(segment_id)s
),
updated AS (
    UPDATE segments s
       SET auto_percent = %(auto_percent)s,
           description = %(description)s
      FROM previous p
     WHERE s.segment_id = p.segment_id
 RETURNING s.segment_id, s.slug, s.description, s.auto_percent,
           p.description AS previous_description, p.auto_percent AS previous_percent
)
INSERT INTO segment_events (segment_id, slug, kind, before, after, at)
SELECT segment_id, slug, 'description_changed',
       jsonb_build_object('description', previous_description),
       jsonb_build_object('description', description), %(at)s
  FROM updated
 WHERE description IS DISTINCT FROM previous_description
 UNION ALL
SELECT segment_id, slug, 'percentage_changed',
       jsonb_build_object('auto_percent', previous_percent),
       jsonb_build_object('auto_percent', auto_percent), %(at)s
  FROM updated
 WHERE auto_percent <> previous_percent;

-- name: mark_segment_deleted
-- Gone from reads, listings and changes at once; its members leave in chunks afterwards. Its
-- `deleted` audit event keeps what it was.
WITH deleted AS (
    UPDATE segments
       SET deleted_at = %(at)s
     WHERE segment_id = %(segment_id)s
 RETURNING segment_id, slug, description, auto_percent
)
INSERT INTO segment_events (segment_id, slug, kind, before, at)
SELECT segment_id, slug, 'deleted',
       jsonb_build_object('description', description, 'auto_percent', auto_percent), %(at)s
  FROM deleted;

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
