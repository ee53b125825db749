-- depends: 0004.segment-deletion-in-chunks
-- Every segment has its rollouts row from its creation, so that a change of its percentage or
-- its deletion always finds a row to lock first (the lock order: the rollout, then the segment).
-- Before, a segment whose percentage was never set had none: a ramp of it locked nothing, a
-- deletion took the segment and then waited for the row a concurrent ramp had created and
-- locked, which waited for the segment: a deadlock. A percentage never set leaves the row
-- unstarted (started_at NULL) and finished (nothing to converge).

ALTER TABLE rollouts ALTER COLUMN started_at DROP NOT NULL;
ALTER TABLE rollouts ADD CONSTRAINT rollouts_unstarted_is_finished
    CHECK (started_at IS NOT NULL OR finished_at IS NOT NULL);

INSERT INTO rollouts (segment_id, converged_up_to, started_at, finished_at)
SELECT s.segment_id, 0, NULL, s.created_at
  FROM segments s
 WHERE NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.segment_id = s.segment_id);
