-- auth-service copies the revocations committed since its last round into Redis every few seconds
-- (src/revocation_sync.rs). The indexes its range queries need are built by the next migrations,
-- one each, without blocking writes (CREATE INDEX CONCURRENTLY cannot share a file).
ALTER TABLE auth.token_blacklist ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
