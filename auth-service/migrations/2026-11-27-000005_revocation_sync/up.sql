-- auth-service copies the revocations committed since its last round into Redis every few seconds
-- (src/revocation_sync.rs): these indexes keep its range queries off full scans.
ALTER TABLE auth.token_blacklist ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX token_blacklist_created_idx ON auth.token_blacklist (created_at);
CREATE INDEX sessions_revoked_at_idx ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX users_tokens_not_before_idx ON auth.users (tokens_not_before) WHERE tokens_not_before IS NOT NULL;
