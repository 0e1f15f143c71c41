ALTER INDEX reports.outbox_pending_idx RENAME TO outbox_owed_idx;
ALTER TABLE reports.outbox ADD COLUMN delivered_at timestamptz;
CREATE INDEX outbox_pending_idx ON reports.outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
