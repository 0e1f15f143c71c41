//! The outbox of schema `reports` (service_kit::outbox): domain events written in the
//! transaction of the change they describe.

use service_kit::outbox::{OutboxEvent, enqueue};
use service_kit::store_error::StoreError;

use super::Conn;
use crate::domain::DomainEvent;

pub async fn record(conn: &mut Conn, event: DomainEvent) -> Result<(), StoreError> {
    let event = OutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event.event_type,
        occurred_at: event.occurred_at,
        traceparent: String::new(),
        payload: event.payload,
    };
    Ok(enqueue(conn, "reports", &event).await?)
}
