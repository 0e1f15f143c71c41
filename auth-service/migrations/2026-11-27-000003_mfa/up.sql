-- TOTP seeds are kept encrypted (AES-256-GCM under ENCRYPTION_KEY). A seed being enrolled waits in
-- mfa_pending_secret until the first code confirms it. mfa_last_step is the last accepted time
-- step, so a code is accepted once. TOTP failures count and lock apart from password failures.
ALTER TABLE auth.users
    ADD COLUMN mfa_pending_secret bytea,
    ADD COLUMN mfa_last_step bigint,
    ADD COLUMN mfa_failures integer NOT NULL DEFAULT 0 CHECK (mfa_failures >= 0),
    ADD COLUMN mfa_locked_until timestamptz;

-- Ten single-use codes per enrollment, shown once, stored as keyed hashes.
CREATE TABLE auth.recovery_codes (
    user_id    uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
