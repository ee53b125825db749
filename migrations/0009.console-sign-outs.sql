-- depends: 0008.history-by-segment
-- A web console session lives in a signed cookie, so a copy of the cookie would outlive the
-- browser's sign-out unless the service remembers it: a row per signed-out session (by the
-- SHA-256 of its random id, never the id), kept until every cookie the session was given has
-- expired. Not user data: a small table of its own that a sharded database keeps on one node.
CREATE TABLE console_sign_outs (
    session_digest bytea PRIMARY KEY CHECK (octet_length(session_digest) = 32),
    kept_until timestamptz NOT NULL
);
