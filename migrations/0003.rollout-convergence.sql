-- depends: 0002.percentage-rollouts
-- Percentage changes converge in the background: a change records the target (the segment's
-- auto_percent) and restarts the segment's rollout; chunks of users, one transaction each, then
-- bring every registered user to it (segsvc/rollout.py).

CREATE TABLE rollouts (
    segment_id      bigint PRIMARY KEY REFERENCES segments (segment_id),
    -- Users with ids up to this one are converged to the target; chunks move it up.
    converged_up_to bigint NOT NULL DEFAULT 0 CHECK (converged_up_to >= 0),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    -- Transactions of this database running when the rollout was first picked up; chunks start
    -- once all have ended, so that a registration that read the segments before the change is
    -- visible to them.
    waits_for       xid[],
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);

CREATE INDEX rollouts_converging_idx ON rollouts (started_at) WHERE finished_at IS NULL;

-- Percentages set before this migration were applied at once, in the changing transaction.
INSERT INTO rollouts (segment_id, converged_up_to, started_at, finished_at)
SELECT segment_id, 9223372036854775807, created_at, created_at
  FROM segments
 WHERE auto_percent > 0 AND deleted_at IS NULL;
