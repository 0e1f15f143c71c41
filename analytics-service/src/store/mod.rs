//! Queries over schema `analytics`: the only module that knows diesel and SQL. It takes the
//! records of `domain` and answers domain values, never its rows, and applies no rule of its own.

pub mod schema;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::db::Pool;
use service_kit::statement::statement;
use service_kit::store_error::StoreError;

use crate::domain::IncomingEvent;

#[derive(QueryableByName)]
struct StoredId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: uuid::Uuid,
}

/// Stores the events whose ids are new, all in one statement (so all or none); answers the ids
/// stored now. An id seen before, or twice in `events`, is stored once. The batch goes as one
/// array per column, so the text is the same for every batch size and PostgreSQL plans it once
/// per connection (a `VALUES` list of the batch's rows was parsed and planned on every call).
pub async fn insert_new(pool: &Pool, events: &[IncomingEvent]) -> Result<Vec<uuid::Uuid>, StoreError> {
    use diesel::sql_types::{Array, Jsonb, Text, Timestamptz, Uuid};
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
    let sources: Vec<&str> = events.iter().map(|e| e.producer.as_str()).collect();
    let names: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
    let traceparents: Vec<&str> = events.iter().map(|e| e.traceparent.as_str()).collect();
    let mut conn = pool.get().await?;
    let stored: Vec<StoredId> = statement(
        "INSERT INTO analytics.ingested_events (event_id, source, name, occurred_at, properties, traceparent) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::text[]) \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Array<Text>, _>(sources)
    .bind::<Array<Text>, _>(names)
    .bind::<Array<Timestamptz>, _>(times)
    .bind::<Array<Jsonb>, _>(payloads)
    .bind::<Array<Text>, _>(traceparents)
    .load(&mut conn)
    .await?;
    Ok(stored.into_iter().map(|s| s.event_id).collect())
}
