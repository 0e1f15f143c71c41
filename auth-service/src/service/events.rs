//! Security events: stored (in the caller's transaction), counted in
//! `security_events_total{event_type,severity}`, and logged as one JSON line each.

use crate::domain::UserId;

use crate::store::{self, Conn, StoreError};

/// The (event type, severity) pairs auth-service records.
const KNOWN: &[&[&str]] = &[
    &["account_locked", "high"],
    &["token_reuse_detected", "high"],
    &["new_device", "medium"],
    &["mfa_failed", "medium"],
    &["login_failed", "low"],
    &["captcha_failed", "low"],
    &["password_reset_throttled", "low"],
    &["refresh_retry_grace", "low"],
];

#[derive(Clone)]
pub struct SecurityEvents {
    counter: prometheus::IntCounterVec,
}

impl SecurityEvents {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        // Every event this service records, at 0 from start: an alert on the first one
        // (SecurityThreatDetected) needs the series before it moves.
        let counter = service_kit::metrics::counter_vec_from_zero(
            registry,
            "security_events_total",
            "Security events recorded, by type and severity",
            &["event_type", "severity"],
            KNOWN,
        )?;
        Ok(Self { counter })
    }

    pub async fn record(
        &self,
        conn: &mut Conn,
        user: Option<UserId>,
        event_type: &'static str,
        severity: &'static str,
        ip: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        store::security_event(conn, user, event_type, severity, ip, details).await?;
        self.counter.with_label_values(&[event_type, severity]).inc();
        tracing::info!(security_event = event_type, severity, user_id = ?user, client_ip = ip, "security event");
        Ok(())
    }
}
