-- The relay deletes an event's row once analytics-service has it (service_kit::outbox), where it
-- set `delivered_at` and kept the row for OUTBOX_RETENTION_HOURS. That column was in the pending
-- index's predicate, so every delivery wrote a new version of the row and two index entries, and
-- the table carried a week of delivered events that nothing read (the receiver keeps them, by
-- event id). Now the outbox holds only what is still owed: pending and dead events.
--
-- During a rolling update a relay of the release before this one fails its first delivery mark
-- (the column is gone), drops its connection and with it the relay lock; a replica of this release
-- takes the lock and delivers the same events again, which analytics-service stores once.
DELETE FROM reports.outbox WHERE delivered_at IS NOT NULL;
DROP INDEX reports.outbox_pending_idx;
ALTER TABLE reports.outbox DROP COLUMN delivered_at;
-- What the relay reads: pending events in order.
CREATE INDEX outbox_pending_idx ON reports.outbox (next_attempt_at, id) WHERE dead_at IS NULL;
