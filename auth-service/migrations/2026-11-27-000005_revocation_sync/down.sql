ALTER TABLE auth.token_blacklist DROP COLUMN created_at;
