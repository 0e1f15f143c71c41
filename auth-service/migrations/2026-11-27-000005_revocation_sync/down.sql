DROP INDEX auth.users_tokens_not_before_idx;
DROP INDEX auth.sessions_revoked_at_idx;
DROP INDEX auth.token_blacklist_created_idx;
ALTER TABLE auth.token_blacklist DROP COLUMN created_at;
