-- Percentage rollouts: a segment with auto_percent p holds every registered user whose
-- segment_bucket(slug, user_id) < p * 100 (see migrations/0002) as `auto` memberships, minus the
-- users excluded from it. A change of p restarts the segment's row in `rollouts`; chunks of users
-- in id order then converge them to p, each chunk one transaction (segsvc/rollout.py).
-- Lock order: a rollout's row, then users, then memberships. A change of p takes the rollout's
-- row before the segment's, so a chunk never runs under a changing target.

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

-- name: lock_rollout
-- Before a change of the segment's percentage or its deletion: waits for a running chunk, or
-- for another such change. Every segment has this row from its creation (migrations/0005).
SELECT segment_id
  FROM rollouts
 WHERE segment_id = %(segment_id)s
   FOR UPDATE;

-- name: create_unstarted_rollout
-- A segment created without a percentage still gets its row, so that its first change always
-- has one to lock (migrations/0005); unstarted and finished, it has nothing to converge.
INSERT INTO rollouts (segment_id, converged_up_to, started_at, finished_at)
VALUES (%(segment_id)s, 0, NULL, %(at)s);

-- name: restart_rollout
-- The target changed: every user is converged again, from the first. Inserts the row of a
-- segment created before migrations/0005 by a version that made none.
INSERT INTO rollouts (segment_id, converged_up_to, started_at)
VALUES (%(segment_id)s, 0, %(at)s)
    ON CONFLICT (segment_id) DO UPDATE
   SET converged_up_to = 0, started_at = %(at)s, finished_at = NULL, waits_for = NULL;

-- name: end_rollout
UPDATE rollouts
   SET finished_at = %(at)s
 WHERE segment_id = %(segment_id)s AND finished_at IS NULL;

-- name: claim_rollout
-- The oldest unfinished rollout that no one else is stepping (its row lock is the lease: a
-- killed worker's lease ends with its connection), among those whose wait is over.
SELECT r.segment_id, r.converged_up_to, r.waits_for IS NULL AS not_waiting_yet,
       s.slug, s.auto_percent
  FROM rollouts r
  JOIN segments s ON s.segment_id = r.segment_id
 WHERE r.finished_at IS NULL
   AND s.deleted_at IS NULL
   AND (r.waits_for IS NULL
        OR NOT EXISTS (SELECT 1
                         FROM pg_stat_activity a
                        WHERE a.backend_xid = ANY (r.waits_for)))
 ORDER BY r.started_at, r.segment_id
 LIMIT 1
   FOR UPDATE OF r SKIP LOCKED;

-- name: wait_for_running_transactions
-- Taken after the change committed: any registration that could not see it is in here (a
-- registration has its transaction id from its first insert, before it reads the segments).
-- Only this database's transactions: others on the same server never hold up a rollout.
UPDATE rollouts
   SET waits_for = coalesce((SELECT array_agg(backend_xid)
                               FROM pg_stat_activity
                              WHERE datname = current_database()
                                AND backend_xid IS NOT NULL
                                AND pid <> pg_backend_pid()), ARRAY[]::xid[])
 WHERE segment_id = %(segment_id)s;

-- name: lock_user_chunk
-- Shared locks: a change or deletion of one of these users waits for the chunk, or the chunk for
-- it, so the chunk's time comes after every change of theirs it follows. The ids come back as
-- one array literal, passed as is to the chunk's other statements (a list would go as
-- ARRAY[...] of 10,000 expressions, parsed and planned by each), with the first and last id,
-- which bound their index scans to the chunk.
SELECT count(*) AS users,
       coalesce(min(user_id), 0) AS first_user_id,
       coalesce(max(user_id), 0) AS last_user_id,
       coalesce(array_agg(user_id ORDER BY user_id), ARRAY[]::bigint[])::text AS user_ids
  FROM (SELECT user_id
          FROM users
         WHERE user_id > %(after)s
         ORDER BY user_id
         LIMIT %(chunk_users)s
           FOR SHARE) AS chunk;

-- name: lock_chunk_memberships
-- The expiry job skips locked memberships; this waits for one it is ending.
SELECT user_id
  FROM memberships
 WHERE segment_id = %(segment_id)s
   AND user_id BETWEEN %(first_user_id)s AND %(last_user_id)s
   AND user_id = ANY (%(user_ids)s::bigint[])
 ORDER BY user_id
   FOR UPDATE;

-- name: enroll_user_chunk
-- The chunk's users in the range who are neither members nor excluded; returns them, whose
-- cached reads are then out of date.
WITH enrolled AS (
    INSERT INTO memberships (user_id, segment_id, added_at, source)
    SELECT u.user_id, %(segment_id)s, %(at)s, 'auto'
      FROM unnest(%(user_ids)s::bigint[]) AS u (user_id)
     WHERE segment_bucket(%(slug)s, u.user_id) < %(bucket_limit)s
       AND NOT EXISTS (SELECT 1 FROM memberships m
                        WHERE m.user_id = u.user_id AND m.segment_id = %(segment_id)s)
       AND NOT EXISTS (SELECT 1 FROM auto_exclusions e
                        WHERE e.user_id = u.user_id AND e.segment_id = %(segment_id)s)
     ORDER BY u.user_id
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'added', 'auto', %(at)s
  FROM enrolled
 ORDER BY user_id
RETURNING user_id;

-- name: disenroll_user_chunk
-- Only automatic members out of the range; manual ones stay. Returns them, as enroll_user_chunk.
WITH removed AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s
       AND user_id BETWEEN %(first_user_id)s AND %(last_user_id)s
       AND user_id = ANY (%(user_ids)s::bigint[])
       AND source = 'auto'
       AND segment_bucket(%(slug)s, user_id) >= %(bucket_limit)s
 RETURNING user_id, segment_id
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'auto', %(at)s
  FROM removed
 ORDER BY user_id
RETURNING user_id;

-- name: advance_rollout
UPDATE rollouts
   SET converged_up_to = %(converged_up_to)s,
       finished_at = CASE WHEN %(finished)s THEN %(at)s END
 WHERE segment_id = %(segment_id)s;

-- name: count_converging_rollouts
SELECT count(*) AS rollouts
  FROM rollouts r
  JOIN segments s ON s.segment_id = r.segment_id
 WHERE r.finished_at IS NULL AND s.deleted_at IS NULL;

-- name: settle_expired_chunk_memberships
-- The chunk's memberships of this segment whose time ran out end at their expiry time first, as
-- every other change does; an expiry inside the rollout's range excludes the user from it.
WITH expired AS (
    DELETE FROM memberships
     WHERE segment_id = %(segment_id)s
       AND user_id BETWEEN %(first_user_id)s AND %(last_user_id)s
       AND user_id = ANY (%(user_ids)s::bigint[])
       AND expires_at <= %(at)s
 RETURNING user_id, segment_id, expires_at
),
excluded AS (
    INSERT INTO auto_exclusions (segment_id, user_id, excluded_at)
    SELECT segment_id, user_id, expires_at
      FROM expired
     WHERE segment_bucket(%(slug)s, user_id) < %(bucket_limit)s
        ON CONFLICT (segment_id, user_id) DO NOTHING
)
INSERT INTO membership_history (user_id, segment_id, operation, reason, at)
SELECT user_id, segment_id, 'removed', 'expired', expires_at
  FROM expired
 ORDER BY expires_at, user_id;
