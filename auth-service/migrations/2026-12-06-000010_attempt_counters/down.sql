DROP INDEX auth.recovery_codes_user_idx;
DROP INDEX auth.recovery_codes_legacy_key;
-- Argon2id-hashed codes cannot become keyed HMACs again: they go (users re-enroll MFA).
DELETE FROM auth.recovery_codes WHERE code_hash IS NULL;
ALTER TABLE auth.recovery_codes
    DROP CONSTRAINT recovery_codes_one_hash,
    DROP COLUMN code_phc,
    DROP COLUMN id,
    ALTER COLUMN code_hash SET NOT NULL,
    ADD PRIMARY KEY (user_id, code_hash);
ALTER TABLE auth.users DROP COLUMN mfa_lock_count;
DROP TABLE auth.login_throttle;
