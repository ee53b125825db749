-- The web console's signed-out sessions (segsvc/console/access.py, migrations/0009).

-- name: console_session_signed_out
SELECT EXISTS (
    SELECT 1 FROM console_sign_outs WHERE session_digest = %(session_digest)s
) AS signed_out;

-- name: record_console_sign_out
-- Forgets the sign-outs whose cookies have all expired, in the same statement: the table holds
-- only the sessions signed out in the last cookie lifetime.
WITH forgotten AS (
    DELETE FROM console_sign_outs WHERE kept_until < now()
)
INSERT INTO console_sign_outs (session_digest, kept_until)
VALUES (%(session_digest)s, now() + make_interval(secs => %(kept_seconds)s))
ON CONFLICT (session_digest) DO NOTHING;
