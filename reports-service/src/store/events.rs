//! The outbox of schema `reports` (service_kit::outbox): domain events written in the
//! transaction of the change they describe.

use service_kit::outbox::{OutboxEvent, enqueue};
use service_kit::store_error::StoreError;

use super::Conn;
use crate::domain::DomainEvent;

pub async fn record(conn: &Conn, event: DomainEvent) -> Result<(), StoreError> {
    Ok(enqueue(conn, "reports", &outbox_event(event)).await?)
}

/// `event` as the outbox stores it: a fresh event id, and the trace of the request that caused it
/// so the receiver can continue it; none for an anonymous report, whose trace would lead back to
/// the reporter's account.
pub(super) fn outbox_event(event: DomainEvent) -> OutboxEvent {
    OutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event.event_type,
        occurred_at: event.occurred_at,
        traceparent: if event.anonymous {
            String::new()
        } else {
            service_kit::telemetry::current_traceparent()
        },
        payload: event.payload,
    }
}
