//! The domain events of reports (`report.submitted`, `report.status_changed`, `report.deleted`)
//! and what their payloads may carry: the report's id, category, severity, status(es), the grid
//! cell already stored in clear (offset, see `alerts`) and the hour of occurrence. Never the
//! reporter, never the text or the exact place. Pure: domain values in and out.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::domain::{Cell, DomainEvent, NewReport, Status, StoredReport};

pub const SUBMITTED: &str = "report.submitted";
pub const STATUS_CHANGED: &str = "report.status_changed";
pub const DELETED: &str = "report.deleted";

/// What every event says of its report.
struct Subject<'a> {
    id: uuid::Uuid,
    category: &'a str,
    severity: &'a str,
    cell: Option<Cell>,
    occurred_at: DateTime<Utc>,
    anonymous: bool,
}

impl<'a> From<&'a StoredReport> for Subject<'a> {
    fn from(r: &'a StoredReport) -> Self {
        Self {
            id: r.id,
            category: &r.category,
            severity: &r.severity,
            cell: r.cell,
            occurred_at: r.occurred_at,
            anonymous: r.anonymous,
        }
    }
}

/// An event of `event_type` about `report`, with `extra` fields beside the common ones.
fn event(event_type: &'static str, report: Subject<'_>, extra: &[(&str, &str)], now: DateTime<Utc>) -> DomainEvent {
    let hour = report
        .occurred_at
        .duration_trunc(TimeDelta::hours(1))
        .unwrap_or(report.occurred_at);
    let mut payload = json!({
        "report_id": report.id,
        "category": report.category,
        "severity": report.severity,
        "cell": report.cell.map(|c| json!({"lat": c.lat, "lng": c.lng})),
        "occurred_hour": hour.to_rfc3339(),
    });
    for (name, value) in extra {
        payload[*name] = Value::from(*value);
    }
    DomainEvent {
        event_type,
        occurred_at: now,
        payload,
        anonymous: report.anonymous,
    }
}

/// `report.submitted`, for a report being filed: made from the row before it is written, so
/// that the event can go out with the insert (status `submitted`, as every new report is).
pub fn submitted(report: &NewReport, now: DateTime<Utc>) -> DomainEvent {
    let subject = Subject {
        id: report.id,
        category: report.category,
        severity: report.severity,
        cell: report.cell,
        occurred_at: report.occurred_at,
        anonymous: report.anonymous,
    };
    event(SUBMITTED, subject, &[("status", Status::Submitted.as_str())], now)
}

/// `report.status_changed`: `report` as it is after the move from `from`.
pub fn status_changed(report: &StoredReport, from: &str, now: DateTime<Utc>) -> DomainEvent {
    event(
        STATUS_CHANGED,
        report.into(),
        &[("from_status", from), ("to_status", &report.status)],
        now,
    )
}

/// `report.deleted`: the reporter withdrew it.
pub fn deleted(report: &StoredReport, now: DateTime<Utc>) -> DomainEvent {
    event(DELETED, report.into(), &[("status", &report.status)], now)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn payloads_carry_no_reporter_and_no_text() {
        let at: DateTime<Utc> = "2026-12-06T16:47:12Z".parse().expect("time");
        let reporter = Uuid::from_u128(0xfeed);
        let report = StoredReport {
            id: Uuid::from_u128(1),
            user_id: reporter,
            category: "theft".into(),
            severity: "high".into(),
            status: "under_review".into(),
            title_ct: b"sealed title".to_vec(),
            description_ct: b"sealed description".to_vec(),
            location_ct: None,
            public_note_ct: None,
            cell: Some(Cell { lat: 5252, lng: 1341 }),
            anonymous: false,
            occurred_at: at,
            created_at: at,
            updated_at: at,
        };
        let event = status_changed(&report, "submitted", at);
        assert_eq!(event.event_type, "report.status_changed");
        let mut keys: Vec<&str> = event
            .payload
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "category",
                "cell",
                "from_status",
                "occurred_hour",
                "report_id",
                "severity",
                "to_status"
            ]
        );
        assert_eq!(event.payload["occurred_hour"], "2026-12-06T16:00:00+00:00");
        let text = event.payload.to_string();
        assert!(!text.contains(&reporter.to_string()) && !text.contains("sealed"));
        let new = NewReport {
            id: report.id,
            user_id: reporter,
            category: "theft",
            severity: "high",
            title_ct: report.title_ct.clone(),
            description_ct: report.description_ct.clone(),
            location_ct: None,
            cell: report.cell,
            anonymous: false,
            occurred_at: at,
        };
        let filed = submitted(&new, at);
        assert_eq!(filed.payload["status"], "submitted");
        assert_eq!(filed.payload["report_id"], event.payload["report_id"]);
        assert_eq!(filed.payload["cell"], event.payload["cell"]);
        assert_eq!(deleted(&report, at).event_type, "report.deleted");
    }
}
