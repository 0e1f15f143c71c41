-- A refresh token that is not a session's current one is looked up as a session's previous one
-- (a retry, or reuse) under FOR UPDATE; without this index every unknown refresh token scanned the
-- whole sessions table. Built without blocking writes. If the build fails, PostgreSQL leaves an
-- invalid index behind: DROP INDEX CONCURRENTLY auth.sessions_previous_refresh_hash_idx; then
-- migrate again.
CREATE INDEX CONCURRENTLY sessions_previous_refresh_hash_idx ON auth.sessions (previous_refresh_hash)
    WHERE previous_refresh_hash IS NOT NULL;
