//! The transactional outbox: a service records each domain event in its own `outbox` table in the
//! transaction of the write that caused it ([`enqueue`]), and a relay delivers the table's rows to
//! their receivers afterwards, at least once (receivers de-duplicate by `event_id`).
//!
//! Every service that publishes events has, in its own schema, the table of
//! `reports-service/migrations/2026-12-07-000003_outbox` (copy it).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// One domain event, as the write that causes it records it.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Unique per event: the receiver's idempotency key.
    pub event_id: uuid::Uuid,
    /// Dotted type, e.g. `report.submitted`.
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    /// W3C traceparent of the request that caused the event ("" when none).
    pub traceparent: String,
    /// The event's fields. Never personal data a receiver must not see.
    pub payload: serde_json::Value,
}

/// Records `event` in `{schema}.outbox`; call it inside the transaction of the write it describes,
/// so the event exists exactly when the write does.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    event: &OutboxEvent,
) -> diesel::QueryResult<()> {
    // `schema` is a compile-time identifier of the service, never input.
    diesel::sql_query(format!(
        "INSERT INTO {schema}.outbox (event_id, event_type, occurred_at, traceparent, payload) \
         VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind::<SqlUuid, _>(event.event_id)
    .bind::<Text, _>(event.event_type)
    .bind::<Timestamptz, _>(event.occurred_at)
    .bind::<Text, _>(&event.traceparent)
    .bind::<Jsonb, _>(&event.payload)
    .execute(conn)
    .await
    .map(|_| ())
}
