DROP INDEX CONCURRENTLY reports.outbox_owed_idx;
