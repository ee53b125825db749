-- Users: registration, lookup, deletion.

-- name: register_users
-- Sorted so that concurrent batches lock rows in the same order and cannot deadlock (a batch
-- comes in chunks of ascending ids, see segsvc/users.py). Returns the users this statement
-- registered (not those registered before).
INSERT INTO users (user_id, registered_at)
SELECT DISTINCT user_id, now()
  FROM unnest(%(user_ids)s::bigint[]) AS requested (user_id)
 ORDER BY user_id
    ON CONFLICT (user_id) DO NOTHING
RETURNING user_id;

-- name: get_user
SELECT user_id, registered_at
  FROM users
 WHERE user_id = %(user_id)s;

-- name: count_registered_users
-- The web console's rollout progress: an index-only scan, run while a rollout converges.
SELECT count(*) AS users
  FROM users;

-- name: lock_user_for_change
-- Every change of a user's memberships holds this lock, so changes to one user are serialised.
-- NO KEY UPDATE still lets rollouts take KEY SHARE locks on the user meanwhile.
SELECT user_id
  FROM users
 WHERE user_id = %(user_id)s
   FOR NO KEY UPDATE;

-- name: lock_user_for_deletion
SELECT user_id
  FROM users
 WHERE user_id = %(user_id)s
   FOR UPDATE;

-- name: delete_user
DELETE FROM users
 WHERE user_id = %(user_id)s;
