-- Built without blocking writes. If the build fails, PostgreSQL leaves an invalid index behind:
-- DROP INDEX CONCURRENTLY auth.sessions_revoked_at_idx; then migrate again.
CREATE INDEX CONCURRENTLY sessions_revoked_at_idx ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;
