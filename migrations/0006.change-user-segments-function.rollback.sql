DROP FUNCTION change_user_segments(bigint, text[], timestamptz[], bigint[], text[], text[], text, text);
DROP FUNCTION settle_expired_user_memberships(bigint, timestamptz);
