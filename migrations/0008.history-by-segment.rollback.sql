DROP FUNCTION rfc3339_utc(timestamptz);
DROP INDEX membership_history_segment_at_idx;
