-- The history report: every join and leave in a period of whole UTC months.

-- name: history_report
-- Ordered by time, then id, straight from an index: (at, history_id) for everyone,
-- (user_id, at, history_id) for one user. Times are formatted here as the JSON API writes them
-- (RFC 3339 UTC, microseconds only when there are any), so rows stream as text. `%%` is a
-- literal percent sign, as the driver reads the text for bound parameters.
SELECT h.user_id,
       s.slug,
       h.operation,
       to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
       || CASE WHEN extract(microseconds FROM h.at)::integer %% 1000000 = 0 THEN ''
               ELSE to_char(h.at AT TIME ZONE 'UTC', '.US') END
       || 'Z' AS at,
       h.reason
  FROM membership_history h
  JOIN segments s ON s.segment_id = h.segment_id
 WHERE h.at >= make_timestamptz(%(from_year)s, %(from_month)s, 1, 0, 0, 0, 'UTC')
   AND h.at < make_timestamptz(%(to_year)s, %(to_month)s, 1, 0, 0, 0, 'UTC') + interval '1 month'
   AND (%(user_id)s::bigint IS NULL OR h.user_id = %(user_id)s::bigint)
 ORDER BY h.at, h.history_id;
