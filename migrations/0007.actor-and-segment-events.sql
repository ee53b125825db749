-- depends: 0006.change-user-segments-function
-- Who changed what. A request that changes anything tags its transaction with its actor (the
-- token's name, or X-Actor on an open API) and its request id, as the settings `segsvc.actor`
-- and `segsvc.request_id` (set_config(..., true): they end with the transaction; segsvc/audit.py).
-- Rows written in that transaction take them as column defaults, so every statement that writes
-- history records them without naming them; a background job's rows (rollout chunks, expiries,
-- a deleted segment's members leaving) have none. A setting never set reads NULL, one set by an
-- earlier transaction of the session reads '': both are no actor.

ALTER TABLE membership_history
    ADD COLUMN actor text DEFAULT nullif(current_setting('segsvc.actor', true), ''),
    ADD COLUMN request_id text DEFAULT nullif(current_setting('segsvc.request_id', true), '');
-- NOT VALID, then validated: the check reads the existing rows without blocking writers.
ALTER TABLE membership_history
    ADD CONSTRAINT membership_history_actor_check CHECK (char_length(actor) <= 64) NOT VALID;
ALTER TABLE membership_history VALIDATE CONSTRAINT membership_history_actor_check;

-- One row per segment-level change, values before and after as JSON objects of the fields that
-- changed: `created` (after: description, auto_percent), `description_changed`,
-- `percentage_changed` (auto_percent), `deleted` (before: description, auto_percent). A PATCH of
-- both fields writes two rows. The log starts with this migration: earlier changes have none.
CREATE TABLE segment_events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    segment_id bigint NOT NULL REFERENCES segments (segment_id),
    slug       text NOT NULL,
    kind       text NOT NULL
               CHECK (kind IN ('created', 'description_changed', 'percentage_changed', 'deleted')),
    before     jsonb,
    after      jsonb,
    actor      text DEFAULT nullif(current_setting('segsvc.actor', true), '')
               CHECK (char_length(actor) <= 64),
    request_id text DEFAULT nullif(current_setting('segsvc.request_id', true), ''),
    at         timestamptz NOT NULL
);

-- A slug's events, every segment that ever had it, in order (GET /segments/<slug>/events).
CREATE INDEX segment_events_slug_idx ON segment_events (slug, event_id);
