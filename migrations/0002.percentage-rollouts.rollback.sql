ALTER TABLE membership_history DROP CONSTRAINT membership_history_reason_check;
ALTER TABLE membership_history ADD CONSTRAINT membership_history_reason_check
    CHECK (reason IN ('manual', 'expired', 'segment_deleted', 'user_deleted'));
CREATE INDEX memberships_segment_id_idx ON memberships (segment_id);
DROP INDEX memberships_segment_user_idx;
DROP TABLE auto_exclusions;
ALTER TABLE memberships DROP COLUMN source;
ALTER TABLE segments DROP COLUMN auto_percent;
DROP FUNCTION segment_bucket(text, bigint);
