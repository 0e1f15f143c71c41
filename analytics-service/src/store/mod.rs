//! Queries over schema `analytics`: the only module that knows diesel and SQL. It takes the
//! records of `domain` and answers domain values, never its rows, and applies no rule of its own.

pub mod schema;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::db::Pool;
use service_kit::store_error::StoreError;

use crate::domain::IncomingEvent;

#[derive(Insertable)]
#[diesel(table_name = schema::ingested_events)]
struct NewEvent<'a> {
    event_id: uuid::Uuid,
    source: &'a str,
    name: &'a str,
    occurred_at: chrono::DateTime<chrono::Utc>,
    properties: &'a serde_json::Value,
    traceparent: &'a str,
}

/// Stores the events whose ids are new, all in one statement (so all or none); answers the ids
/// stored now. An id seen before, or twice in `events`, is stored once.
pub async fn insert_new(pool: &Pool, events: &[IncomingEvent]) -> Result<Vec<uuid::Uuid>, StoreError> {
    use schema::ingested_events::dsl as e;
    let rows: Vec<NewEvent<'_>> = events
        .iter()
        .map(|ev| NewEvent {
            event_id: ev.event_id,
            source: ev.producer.as_str(),
            name: &ev.event_type,
            occurred_at: ev.occurred_at,
            properties: &ev.payload,
            traceparent: &ev.traceparent,
        })
        .collect();
    let mut conn = pool.get().await?;
    Ok(diesel::insert_into(e::ingested_events)
        .values(&rows)
        .on_conflict(e::event_id)
        .do_nothing()
        .returning(e::event_id)
        .get_results(&mut conn)
        .await?)
}
