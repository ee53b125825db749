-- Users: registration, lookup, deletion.

-- name: register_users
-- Sorted so that concurrent batches lock rows in the same order and cannot deadlock.
INSERT INTO users (user_id, registered_at)
SELECT DISTINCT user_id, now()
  FROM unnest(%(user_ids)s::bigint[]) AS requested (user_id)
 ORDER BY user_id
    ON CONFLICT (user_id) DO NOTHING;

-- name: get_user
SELECT user_id, registered_at
  FROM users
 WHERE user_id = %(user_id)s;

-- name: register_and_lock_user
-- Registers the user if needed and locks the row either way: every change of a user's
-- memberships holds this lock, so changes to one user are serialised. The no-op update is
-- what takes the lock atomically, even against a concurrent deletion of the user.
INSERT INTO users (user_id, registered_at)
VALUES (%(user_id)s, now())
    ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id
RETURNING user_id;

-- name: lock_user
SELECT user_id
  FROM users
 WHERE user_id = %(user_id)s
   FOR UPDATE;

-- name: delete_user
DELETE FROM users
 WHERE user_id = %(user_id)s;
