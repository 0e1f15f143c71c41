ALTER TABLE analytics.ingested_events DROP CONSTRAINT ingested_events_properties_check;
ALTER TABLE analytics.ingested_events ADD CONSTRAINT ingested_events_properties_check
    CHECK (pg_column_size(properties) <= 8192);
ALTER TABLE analytics.ingested_events DROP COLUMN traceparent;
