-- The transactional outbox (service_kit::outbox): each domain event is written here in the
-- transaction of the change it describes, then delivered by the relay to analytics-service.
-- Not user-scoped (no row-level security): payloads carry no reporter identity.
CREATE TABLE reports.outbox (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    traceparent     text        NOT NULL DEFAULT '',
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    dead_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- What the relay reads: pending events in order.
CREATE INDEX outbox_pending_idx ON reports.outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
