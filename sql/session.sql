-- Per-transaction settings.

-- name: extend_statement_timeout
-- For the rare bulk statements (percentage rollouts); ends with the transaction.
SELECT set_config('statement_timeout', %(milliseconds)s, true);
