-- Built without blocking writes. If the build fails, PostgreSQL leaves an invalid index behind:
-- DROP INDEX CONCURRENTLY auth.token_blacklist_created_idx; then migrate again.
CREATE INDEX CONCURRENTLY token_blacklist_created_idx ON auth.token_blacklist (created_at);
