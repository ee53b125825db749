-- The history report: every join and leave in a period, read a page at a time.

-- name: history_report_page
-- One page in (at, history_id) order, after the last row of the previous page, straight from an
-- index: (at, history_id) for everyone, (user_id, at, history_id) for one user. Rows after
-- `as_of` (the report's start) are left out, so a long download does not chase new changes.
-- Times are formatted here as the JSON API writes them (RFC 3339 UTC, microseconds only when there
-- are any), so rows stream as text; the last two columns are the page position. `%%` is a
-- literal percent sign, as the driver reads the text for bound parameters.
SELECT h.user_id,
       s.slug,
       h.operation,
       to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
       || CASE WHEN extract(microseconds FROM h.at)::integer %% 1000000 = 0 THEN ''
               ELSE to_char(h.at AT TIME ZONE 'UTC', '.US') END
       || 'Z' AS at,
       h.reason,
       h.at AS position_at,
       h.history_id AS position_id
  FROM membership_history h
  JOIN segments s ON s.segment_id = h.segment_id
 WHERE h.at >= %(period_start)s
   AND h.at < %(period_end)s
   AND h.at <= %(as_of)s
   AND (%(after_at)s::timestamptz IS NULL
        OR (h.at, h.history_id) > (%(after_at)s::timestamptz, %(after_id)s::bigint))
   AND (%(user_id)s::bigint IS NULL OR h.user_id = %(user_id)s::bigint)
 ORDER BY h.at, h.history_id
 LIMIT %(page_rows)s;
