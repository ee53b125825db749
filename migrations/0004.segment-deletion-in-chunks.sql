-- depends: 0003.rollout-convergence
-- A segment's deletion answers at once: the segment is marked deleted (gone from reads, listings
-- and changes) and its members leave in chunks, each row dated at the deletion; once none is
-- left it becomes inactive. A deleted segment may still have members (is_active true) while
-- they leave; an inactive one never has any (the memberships' foreign key).

ALTER TABLE segments DROP CONSTRAINT segments_check;
ALTER TABLE segments ADD CONSTRAINT segments_active_unless_deleted
    CHECK (is_active OR deleted_at IS NOT NULL);

-- Segments whose members are still leaving, for the job that removes them.
CREATE INDEX segments_leaving_idx ON segments (deleted_at) WHERE is_active AND deleted_at IS NOT NULL;
