-- Every event analytics has taken in, keyed by the producer's event id: delivery is at least once
-- (outbox relays and phones retry), so a repeated id is recognised here and counted once.
CREATE TABLE analytics.ingested_events (
    event_id     uuid        PRIMARY KEY,
    user_id      uuid,
    source       text        NOT NULL CHECK (source IN ('app', 'auth', 'reports')),
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    properties   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (pg_column_size(properties) <= 8192)
);

CREATE INDEX ingested_events_user_time_idx ON analytics.ingested_events (user_id, occurred_at DESC);
CREATE INDEX ingested_events_name_time_idx ON analytics.ingested_events (name, occurred_at DESC);
