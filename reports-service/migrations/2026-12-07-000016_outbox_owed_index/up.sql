-- Migration 000017 stops keeping delivered events, and the relay then reads what is owed by
-- `dead_at IS NULL` alone. This index serves it; built first, without blocking the creates that
-- insert into the outbox meanwhile (CREATE INDEX CONCURRENTLY cannot share a file). If the build
-- fails, PostgreSQL leaves an invalid index behind: DROP INDEX CONCURRENTLY
-- reports.outbox_owed_idx; then migrate again.
CREATE INDEX CONCURRENTLY outbox_owed_idx ON reports.outbox (next_attempt_at, id) WHERE dead_at IS NULL;
