-- Figures for GET /metrics, read at scrape time; each must stay cheap at any data size.

-- name: count_active_segments
-- Segments are few (analysts create them by hand), so an exact count is cheap.
SELECT count(*) AS segments
  FROM segments
 WHERE deleted_at IS NULL;

-- name: estimate_memberships
-- The planner's row estimate, kept current by autovacuum: no scan of a table of millions.
-- It is -1 until the table is first analyzed, shown as 0.
SELECT greatest(reltuples, 0)::bigint AS memberships
  FROM pg_class
 WHERE oid = 'memberships'::regclass;
