DROP TABLE auth.recovery_codes;
ALTER TABLE auth.users DROP COLUMN mfa_locked_until, DROP COLUMN mfa_failures, DROP COLUMN mfa_last_step, DROP COLUMN mfa_pending_secret;
