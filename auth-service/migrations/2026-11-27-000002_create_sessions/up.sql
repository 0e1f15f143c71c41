-- Lockout escalation and "not before" (logout-all, password change), kept in PostgreSQL so that a
-- revocation survives a Redis outage.
ALTER TABLE auth.users
    ADD COLUMN lock_count integer NOT NULL DEFAULT 0 CHECK (lock_count >= 0),
    ADD COLUMN tokens_not_before timestamptz;

-- One row per login. Only hashes of refresh tokens are stored.
CREATE TABLE auth.sessions (
    id                     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    device_id              text        NOT NULL CHECK (char_length(device_id) BETWEEN 1 AND 128),
    refresh_hash           bytea       NOT NULL UNIQUE CHECK (octet_length(refresh_hash) = 32),
    previous_refresh_hash  bytea       CHECK (octet_length(previous_refresh_hash) = 32),
    rotated_at             timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    last_used_at           timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz NOT NULL,
    revoked_at             timestamptz,
    revoked_reason         text
);
CREATE INDEX sessions_user_live_idx ON auth.sessions (user_id) WHERE revoked_at IS NULL;

-- Every refresh token ever spent, so that presenting one again is recognised as reuse however
-- many rotations ago it was spent (RFC 9700 §4.14.2). Rows go with their session.
CREATE TABLE auth.spent_refresh_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id  uuid        NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    spent_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spent_refresh_tokens_session_idx ON auth.spent_refresh_tokens (session_id);

-- Devices a user has logged in from; fingerprint_hash = HMAC-SHA256(DEVICE_ID_SALT, device_id).
CREATE TABLE auth.device_fingerprints (
    user_id           uuid        NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    fingerprint_hash  bytea       NOT NULL CHECK (octet_length(fingerprint_hash) = 32),
    device_id         text        NOT NULL CHECK (char_length(device_id) BETWEEN 1 AND 128),
    platform          text        NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    model             text        CHECK (char_length(model) <= 100),
    os_version        text        CHECK (char_length(os_version) <= 50),
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz NOT NULL DEFAULT now(),
    risk_score        smallint    NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    trusted           boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, fingerprint_hash)
);

-- Access tokens revoked before their expiry (logout); Redis holds the same for the hot path.
CREATE TABLE auth.token_blacklist (
    jti         uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    device_id   text,
    reason      text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX token_blacklist_expires_idx ON auth.token_blacklist (expires_at);

CREATE TABLE auth.security_events (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid,
    event_type  text        NOT NULL,
    severity    text        NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    ip          text,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_events_user_time_idx ON auth.security_events (user_id, created_at DESC);

-- Every mutation, written in the same transaction as the change. Never secrets.
CREATE TABLE auth.audit_logs (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    actor_id        uuid,
    action          text        NOT NULL,
    resource        text        NOT NULL,
    resource_id     text,
    ip              text,
    user_agent      text,
    changed_fields  text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_actor_time_idx ON auth.audit_logs (actor_id, created_at DESC);
