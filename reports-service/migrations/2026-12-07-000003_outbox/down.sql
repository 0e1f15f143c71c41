DROP TABLE reports.outbox;
