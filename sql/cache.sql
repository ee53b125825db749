-- Change notifications for the workers' read caches (segsvc/read_cache.py,
-- segsvc/change_listener.py). Payloads are `<instance>:<user ids, comma-separated>` or
-- `<instance>:*` (every user).

-- name: notify_changes
-- In the changing transaction, just before its COMMIT: PostgreSQL delivers the notifications at
-- commit, and only if it commits.
SELECT pg_notify('segsvc_changes', payload)
  FROM unnest(%(payloads)s::text[]) AS payload;

-- name: listen_for_changes
LISTEN segsvc_changes;

-- name: listener_heartbeat
-- Its answer comes after every notification committed before it was sent.
SELECT 1;
