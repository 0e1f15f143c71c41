DROP TABLE auth.audit_logs;
DROP TABLE auth.security_events;
DROP TABLE auth.token_blacklist;
DROP TABLE auth.device_fingerprints;
DROP TABLE auth.spent_refresh_tokens;
DROP TABLE auth.sessions;
ALTER TABLE auth.users DROP COLUMN tokens_not_before, DROP COLUMN lock_count;
