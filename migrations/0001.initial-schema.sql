-- Segments, users, memberships and their history.
-- Integrity lives here: the application relies on these constraints, not on Python checks.

CREATE TABLE segments (
    segment_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL
                CHECK (slug ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description text
                CHECK (char_length(description) <= 1000),
    created_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    -- Redundant with deleted_at, but lets memberships reference "an active segment" (see below).
    is_active   boolean NOT NULL DEFAULT true,
    CHECK (is_active = (deleted_at IS NULL)),
    CHECK (deleted_at IS NULL OR deleted_at >= created_at),
    UNIQUE (segment_id, is_active)
);

-- One active segment per slug; a deleted slug may be created again as a new segment.
CREATE UNIQUE INDEX segments_active_slug_key ON segments (slug) WHERE deleted_at IS NULL;

CREATE TABLE users (
    user_id       bigint PRIMARY KEY CHECK (user_id > 0),
    registered_at timestamptz NOT NULL
);

CREATE TABLE memberships (
    user_id           bigint NOT NULL REFERENCES users (user_id),
    segment_id        bigint NOT NULL,
    -- Always true: with the foreign key below, a segment cannot be marked deleted while it
    -- still has members, so no membership can ever point at a deleted segment.
    segment_is_active boolean NOT NULL DEFAULT true CHECK (segment_is_active),
    added_at          timestamptz NOT NULL,
    expires_at        timestamptz,
    PRIMARY KEY (user_id, segment_id),
    FOREIGN KEY (segment_id, segment_is_active) REFERENCES segments (segment_id, is_active),
    CHECK (expires_at IS NULL OR expires_at > added_at)
);

CREATE INDEX memberships_segment_id_idx ON memberships (segment_id);
CREATE INDEX memberships_expires_at_idx ON memberships (expires_at) WHERE expires_at IS NOT NULL;

-- Append-only log of every join and leave. No foreign key to users: history outlives a
-- deleted user, and a user id registered again continues the same history.
CREATE TABLE membership_history (
    history_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL CHECK (user_id > 0),
    segment_id bigint NOT NULL REFERENCES segments (segment_id),
    operation  text NOT NULL CHECK (operation IN ('added', 'removed')),
    reason     text NOT NULL
               CHECK (reason IN ('manual', 'expired', 'segment_deleted', 'user_deleted')),
    at         timestamptz NOT NULL
);

CREATE INDEX membership_history_at_idx ON membership_history (at, history_id);
CREATE INDEX membership_history_user_at_idx ON membership_history (user_id, at, history_id);
