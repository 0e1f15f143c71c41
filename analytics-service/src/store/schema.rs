//! Diesel table definitions for schema `analytics` (kept in step with `migrations/`).

diesel::table! {
    analytics.ingested_events (event_id) {
        event_id -> Uuid,
        user_id -> Nullable<Uuid>,
        source -> Text,
        name -> Text,
        occurred_at -> Timestamptz,
        received_at -> Timestamptz,
        properties -> Jsonb,
        traceparent -> Text,
    }
}
