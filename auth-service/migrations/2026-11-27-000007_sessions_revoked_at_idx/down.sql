DROP INDEX CONCURRENTLY auth.sessions_revoked_at_idx;
