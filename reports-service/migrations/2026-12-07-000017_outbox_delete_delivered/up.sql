-- The relay deletes an event's row once analytics-service has it (service_kit::outbox), where it
-- set `delivered_at` and kept the row for OUTBOX_RETENTION_HOURS. That column was in the pending
-- index's predicate, so every delivery wrote a new version of the row and two index entries, and
-- the table carried a week of delivered events that nothing read (the receiver keeps them, by
-- event id). Now the outbox holds only what is still owed: pending and dead events.
--
-- The delete takes row locks on delivered rows only, which nothing else writes, so creates go on
-- meanwhile; the column's drop takes the table's lock for a moment at the end. The index that
-- replaces the old one was built by 000016 without blocking writes; dropping the column drops the
-- old one (its predicate names it).
--
-- During a rolling update a relay of the release before this one fails its first delivery mark
-- (the column is gone), drops its connection and with it the relay lock; a replica of this release
-- takes the lock and delivers the same events again, which analytics-service stores once.
DELETE FROM reports.outbox WHERE delivered_at IS NOT NULL;
ALTER TABLE reports.outbox DROP COLUMN delivered_at;
-- What the relay reads: owed events in order.
ALTER INDEX reports.outbox_owed_idx RENAME TO outbox_pending_idx;
