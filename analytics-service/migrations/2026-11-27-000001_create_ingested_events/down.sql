DROP TABLE analytics.ingested_events;
