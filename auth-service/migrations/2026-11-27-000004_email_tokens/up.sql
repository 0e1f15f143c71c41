-- Single-use tokens mailed to people: address verification (24 h) and password reset (1 h).
-- Only the SHA-256 of a token is stored.
CREATE TABLE auth.email_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id     uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    purpose     text        NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX email_tokens_user_idx ON auth.email_tokens (user_id, purpose);
