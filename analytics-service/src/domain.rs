//! What the use cases and the store both speak: events as the sink accepts them, each value valid
//! once built. No I/O, no diesel, no protobuf.

use chrono::{DateTime, Utc};

/// The most events one delivery may carry.
pub const MAX_BATCH: usize = 500;
/// The most bytes of JSON one event's payload may have.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The longest event type (the `name` column's bound).
pub const MAX_EVENT_TYPE_CHARS: usize = 100;
/// The longest traceparent kept (a W3C one is 55 characters).
pub const MAX_TRACEPARENT_CHARS: usize = 128;

/// Why an envelope was refused; [`InvalidEvent::field`] names the envelope field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("event_id must be a UUID")]
    EventId,
    #[error("producer must be one of: auth, reports")]
    Producer,
    #[error("event_type must be 1 to 100 characters of a-z, 0-9, '.', '_' or '-'")]
    EventType,
    #[error("occurred_at is required")]
    OccurredAt,
    #[error("traceparent must be at most 128 visible ASCII characters")]
    Traceparent,
    #[error("payload must be a JSON object")]
    PayloadNotAnObject,
    #[error("payload must be at most 65536 bytes")]
    PayloadTooLarge,
}

impl InvalidEvent {
    pub fn field(&self) -> &'static str {
        match self {
            Self::EventId => "event_id",
            Self::Producer => "producer",
            Self::EventType => "event_type",
            Self::OccurredAt => "occurred_at",
            Self::Traceparent => "traceparent",
            Self::PayloadNotAnObject | Self::PayloadTooLarge => "payload",
        }
    }
}

/// Why a whole delivery was refused before its events were looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBatch {
    #[error("events must hold 1 to 500 events")]
    Size,
}

/// The services whose outboxes deliver here (the `source` column's values, app events aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Producer {
    Auth,
    Reports,
}

impl Producer {
    pub fn parse(s: &str) -> Result<Self, InvalidEvent> {
        match s {
            "auth" => Ok(Self::Auth),
            "reports" => Ok(Self::Reports),
            _ => Err(InvalidEvent::Producer),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Reports => "reports",
        }
    }

    /// The process whose client certificate may deliver this producer's events.
    pub fn process(self) -> &'static str {
        match self {
            Self::Auth => "auth-service",
            Self::Reports => "reports-service",
        }
    }
}

/// The first event of `events` that `caller` (the process its client certificate names) may not
/// deliver: each service delivers its own events only, and the gateway none. A caller named by no
/// certificate (plain gRPC, development only) may deliver any.
pub fn not_the_callers(caller: Option<&str>, events: &[IncomingEvent]) -> Option<usize> {
    let caller = caller?;
    events.iter().position(|e| e.producer.process() != caller)
}

/// One event as delivered, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub event_id: uuid::Uuid,
    pub producer: Producer,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub traceparent: String,
    pub payload: serde_json::Value,
}

impl IncomingEvent {
    /// Checks every field of an envelope; the first refusal wins.
    pub fn new(
        event_id: &str,
        producer: &str,
        event_type: &str,
        occurred_at: Option<DateTime<Utc>>,
        traceparent: &str,
        payload: &[u8],
    ) -> Result<Self, InvalidEvent> {
        // Only the hyphenated form: one event has one spelling, so one idempotency key.
        let event_id = uuid::Uuid::try_parse(event_id)
            .ok()
            .filter(|id| id.hyphenated().to_string() == event_id.to_ascii_lowercase())
            .ok_or(InvalidEvent::EventId)?;
        let producer = Producer::parse(producer)?;
        let type_ok = (1..=MAX_EVENT_TYPE_CHARS).contains(&event_type.len())
            && event_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !type_ok {
            return Err(InvalidEvent::EventType);
        }
        let occurred_at = occurred_at.ok_or(InvalidEvent::OccurredAt)?;
        if traceparent.len() > MAX_TRACEPARENT_CHARS || !traceparent.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidEvent::Traceparent);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidEvent::PayloadTooLarge);
        }
        let payload: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| InvalidEvent::PayloadNotAnObject)?;
        if !payload.is_object() {
            return Err(InvalidEvent::PayloadNotAnObject);
        }
        Ok(Self {
            event_id,
            producer,
            event_type: event_type.to_owned(),
            occurred_at,
            traceparent: traceparent.to_owned(),
            payload,
        })
    }
}

/// A batch's size, checked before its events are.
pub fn check_batch_size(len: usize) -> Result<(), InvalidBatch> {
    if (1..=MAX_BATCH).contains(&len) {
        Ok(())
    } else {
        Err(InvalidBatch::Size)
    }
}

/// What a delivery did: events stored now, and events stored before (by their id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ingested {
    pub accepted: u32,
    pub duplicates: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b0e7ad4-3f0c-4d8e-9a51-3c2f1a6e9d10";

    fn event(
        id: &str,
        producer: &str,
        event_type: &str,
        traceparent: &str,
        payload: &[u8],
    ) -> Result<IncomingEvent, InvalidEvent> {
        IncomingEvent::new(id, producer, event_type, Some(Utc::now()), traceparent, payload)
    }

    #[test]
    fn a_well_formed_envelope_is_accepted() {
        let e = event(
            ID,
            "reports",
            "report.submitted",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            br#"{"report_id":"x"}"#,
        )
        .expect("valid");
        assert_eq!(e.producer, Producer::Reports);
        let events = [e.clone()];
        assert_eq!(super::not_the_callers(Some("reports-service"), &events), None);
        assert_eq!(super::not_the_callers(Some("auth-service"), &events), Some(0));
        assert_eq!(super::not_the_callers(Some("gateway"), &events), Some(0));
        assert_eq!(
            super::not_the_callers(None, &events),
            None,
            "development: no certificate"
        );
        assert_eq!(e.payload["report_id"], "x");
        assert!(
            event(ID, "auth", "user.registered", "", b"{}").is_ok(),
            "no traceparent is fine"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(Result<IncomingEvent, InvalidEvent>, &str); 11] = [
            (event("not-a-uuid", "reports", "a", "", b"{}"), "event_id"),
            (
                event("0b0e7ad43f0c4d8e9a513c2f1a6e9d10", "reports", "a", "", b"{}"),
                "event_id",
            ),
            (event(ID, "app", "a", "", b"{}"), "producer"),
            (event(ID, "", "a", "", b"{}"), "producer"),
            (event(ID, "reports", "", "", b"{}"), "event_type"),
            (event(ID, "reports", &"a".repeat(101), "", b"{}"), "event_type"),
            (event(ID, "reports", "Report Submitted", "", b"{}"), "event_type"),
            (event(ID, "reports", "a", "has space", b"{}"), "traceparent"),
            (event(ID, "reports", "a", "", b"[1]"), "payload"),
            (event(ID, "reports", "a", "", b"{not json"), "payload"),
            (IncomingEvent::new(ID, "reports", "a", None, "", b"{}"), "occurred_at"),
        ];
        for (i, (result, field)) in cases.into_iter().enumerate() {
            assert_eq!(result.expect_err("refused").field(), field, "case {i}");
        }
    }

    #[test]
    fn payloads_are_bounded_at_64_kib() {
        let fill = |n: usize| format!(r#"{{"x":"{}"}}"#, "a".repeat(n - 8)).into_bytes();
        assert_eq!(fill(MAX_PAYLOAD_BYTES).len(), MAX_PAYLOAD_BYTES);
        assert!(event(ID, "reports", "a", "", &fill(MAX_PAYLOAD_BYTES)).is_ok());
        assert_eq!(
            event(ID, "reports", "a", "", &fill(MAX_PAYLOAD_BYTES + 1)).expect_err("too large"),
            InvalidEvent::PayloadTooLarge
        );
    }

    #[test]
    fn batches_hold_1_to_500_events() {
        assert!(check_batch_size(0).is_err());
        assert!(check_batch_size(1).is_ok());
        assert!(check_batch_size(500).is_ok());
        assert!(check_batch_size(501).is_err());
    }
}
