-- Domain events from the services' outboxes (events.v1.EventSink) land in ingested_events too:
-- `source` is the producer, `name` the event type, `properties` the payload. They carry the W3C
-- traceparent of the request that caused them, and may be larger than an app event: the sink
-- bounds their payload at 64 KiB of JSON text, so the 8 KiB column bound stays for app events.
ALTER TABLE analytics.ingested_events ADD COLUMN traceparent text NOT NULL DEFAULT '';
ALTER TABLE analytics.ingested_events DROP CONSTRAINT ingested_events_properties_check;
ALTER TABLE analytics.ingested_events ADD CONSTRAINT ingested_events_properties_check
    CHECK (source <> 'app' OR pg_column_size(properties) <= 8192);
