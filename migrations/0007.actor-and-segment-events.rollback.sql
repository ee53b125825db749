DROP TABLE segment_events;
ALTER TABLE membership_history
    DROP CONSTRAINT membership_history_actor_check,
    DROP COLUMN actor,
    DROP COLUMN request_id;
