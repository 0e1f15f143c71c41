-- Built without blocking writes. If the build fails, PostgreSQL leaves an invalid index behind:
-- DROP INDEX CONCURRENTLY auth.users_tokens_not_before_idx; then migrate again.
CREATE INDEX CONCURRENTLY users_tokens_not_before_idx ON auth.users (tokens_not_before) WHERE tokens_not_before IS NOT NULL;
