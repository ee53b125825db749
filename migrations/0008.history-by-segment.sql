-- depends: 0007.actor-and-segment-events
-- The history report of one slug (every segment that ever had it) reads each of its segments'
-- rows in report order, `(at, history_id)`, straight from this index, a page at a time: without
-- it a page of a small segment scanned every row of the period. One more index entry per history
-- row written. Plain CREATE INDEX: yoyo runs a migration in a transaction, where CONCURRENTLY
-- cannot run; it blocks writes of history (so every change) while it is built.
CREATE INDEX membership_history_segment_at_idx ON membership_history (segment_id, at, history_id);

-- A time as the JSON API writes it: RFC 3339 in UTC, microseconds only when there are any.
-- Plain SQL and STABLE (to_char is), so the planner inlines it into the report's queries.
CREATE FUNCTION rfc3339_utc(at timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN extract(microseconds FROM at AT TIME ZONE 'UTC')::integer % 1000000 = 0
                   THEN '' ELSE to_char(at AT TIME ZONE 'UTC', '.US') END
           || 'Z'
$$;
