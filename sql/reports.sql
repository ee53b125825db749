-- The history report: every join and leave in a period, read a page at a time, in (at,
-- history_id) order, after the last row of the previous page. Rows after `as_of` (the report's
-- start) are left out, so a long download does not chase new changes; a null `period_end` means
-- no end but `as_of`. The bounds come from Python as instants (timestamptz with their offset) and
-- every time is turned to UTC explicitly, so the session's TimeZone changes nothing.
-- Times are formatted here as the JSON API writes them (rfc3339_utc, migrations/0008), so rows
-- stream as text; the last two columns are the page position, its time in UTC without a zone.

-- name: history_report_page
-- Straight from an index: (at, history_id) for everyone, (user_id, at, history_id) for one user.
SELECT h.user_id,
       s.slug,
       h.operation,
       rfc3339_utc(h.at) AS at,
       h.reason,
       h.segment_id,
       h.actor,
       h.at AT TIME ZONE 'UTC' AS position_at,
       h.history_id AS position_id
  FROM membership_history h
  JOIN segments s ON s.segment_id = h.segment_id
 WHERE h.at >= %(period_start)s
   AND (%(period_end)s::timestamptz IS NULL OR h.at < %(period_end)s::timestamptz)
   AND h.at <= %(as_of)s
   AND (%(after_at)s::timestamp IS NULL
        OR (h.at, h.history_id)
           > (%(after_at)s::timestamp AT TIME ZONE 'UTC', %(after_id)s::bigint))
   AND (%(user_id)s::bigint IS NULL OR h.user_id = %(user_id)s::bigint)
 ORDER BY h.at, h.history_id
 LIMIT %(page_rows)s;

-- name: report_segment_ids
-- Every segment that ever had the slug, deleted ones included.
SELECT segment_id FROM segments WHERE slug = %(slug)s;

-- name: history_report_page_of_segments
-- The same page of some segments only (those of one slug): each segment's next rows come in
-- order from (segment_id, at, history_id), or from the user's index for one user, and the few
-- pages are merged. Not `segment_id = ANY (...)`: a scan of several values of that index is not
-- in time order, so every page would sort all the rows after it.
SELECT h.user_id,
       s.slug,
       h.operation,
       rfc3339_utc(h.at) AS at,
       h.reason,
       h.segment_id,
       h.actor,
       h.at AT TIME ZONE 'UTC' AS position_at,
       h.history_id AS position_id
  FROM unnest(%(segment_ids)s::bigint[]) AS wanted (segment_id)
 CROSS JOIN LATERAL (
       SELECT *
         FROM membership_history h
        WHERE h.segment_id = wanted.segment_id
          AND h.at >= %(period_start)s
          AND (%(period_end)s::timestamptz IS NULL OR h.at < %(period_end)s::timestamptz)
          AND h.at <= %(as_of)s
          AND (%(after_at)s::timestamp IS NULL
               OR (h.at, h.history_id)
                  > (%(after_at)s::timestamp AT TIME ZONE 'UTC', %(after_id)s::bigint))
          AND (%(user_id)s::bigint IS NULL OR h.user_id = %(user_id)s::bigint)
        ORDER BY h.at, h.history_id
        LIMIT %(page_rows)s) h
  JOIN segments s ON s.segment_id = h.segment_id
 ORDER BY h.at, h.history_id
 LIMIT %(page_rows)s;
