DROP INDEX CONCURRENTLY auth.token_blacklist_created_idx;
