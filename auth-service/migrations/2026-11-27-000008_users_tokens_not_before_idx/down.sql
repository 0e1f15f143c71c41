DROP INDEX CONCURRENTLY auth.users_tokens_not_before_idx;
