DROP INDEX segments_leaving_idx;
ALTER TABLE segments DROP CONSTRAINT segments_active_unless_deleted;
ALTER TABLE segments ADD CONSTRAINT segments_check CHECK (is_active = (deleted_at IS NULL));
