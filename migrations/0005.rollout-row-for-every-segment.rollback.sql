DELETE FROM rollouts WHERE started_at IS NULL;
ALTER TABLE rollouts DROP CONSTRAINT rollouts_unstarted_is_finished;
ALTER TABLE rollouts ALTER COLUMN started_at SET NOT NULL;
