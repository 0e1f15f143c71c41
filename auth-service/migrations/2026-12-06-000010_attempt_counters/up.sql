-- Failed logins counted per (account, client address) instead of per account, so an attacker
-- locks only their own address out (issue 17). `subject` is HMAC-SHA256 of the normalised e-mail
-- under a key derived from ENCRYPTION_KEY: addresses with no account are counted the same way, so
-- a locked account and an unknown one answer alike, and no e-mail is stored here. `address` is the
-- client address (an IPv6 one as its /64), or '*' for the account across all addresses (a CAPTCHA
-- after many failures from anywhere, never a lock). An attempt is counted (reserved) before the password
-- is checked, so concurrent guesses cannot all be judged against one snapshot.
CREATE TABLE auth.login_throttle (
    subject      bytea       NOT NULL CHECK (octet_length(subject) = 32),
    address      text        NOT NULL CHECK (char_length(address) <= 64),
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lock_count   integer     NOT NULL DEFAULT 0 CHECK (lock_count >= 0),
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, address)
);
CREATE INDEX login_throttle_updated_idx ON auth.login_throttle (updated_at);

-- The MFA lock escalates like the password lock (doubling per lock, up to a day).
ALTER TABLE auth.users
    ADD COLUMN mfa_lock_count integer NOT NULL DEFAULT 0 CHECK (mfa_lock_count >= 0);

-- Recovery codes are hashed with argon2id (ASVS 6.5.2) in `code_phc`. Codes handed out before
-- keep their keyed HMAC in `code_hash` and keep working until used or replaced (a code cannot be
-- re-hashed without being presented, and a presented code is spent). A row has one or the other.
ALTER TABLE auth.recovery_codes DROP CONSTRAINT recovery_codes_pkey;
ALTER TABLE auth.recovery_codes
    ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    ADD COLUMN code_phc text CHECK (code_phc LIKE '$argon2id$%'),
    ALTER COLUMN code_hash DROP NOT NULL,
    ADD CONSTRAINT recovery_codes_one_hash CHECK ((code_hash IS NULL) <> (code_phc IS NULL));
CREATE UNIQUE INDEX recovery_codes_legacy_key ON auth.recovery_codes (user_id, code_hash)
    WHERE code_hash IS NOT NULL;
CREATE INDEX recovery_codes_user_idx ON auth.recovery_codes (user_id) WHERE used_at IS NULL;
