//! What the use cases and the store both speak: validated queries, the store's questions and the
//! records it answers with. Values here are valid once built; no I/O, no diesel, no protobuf.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

pub const MAX_RADIUS_M: u32 = 5000;
pub const MAX_LIMIT: u32 = 100;
pub const DEFAULT_LIMIT: u32 = 20;

/// Why a nearby query was refused; [`InvalidQuery::field`] names the request field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidQuery {
    #[error("must be between -90 and 90")]
    Lat,
    #[error("must be between -180 and 180")]
    Lng,
    #[error("must be between 1 and 5000")]
    Radius,
    #[error("must be between 1 and 100")]
    Limit,
}

impl InvalidQuery {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Lat => "lat",
            Self::Lng => "lng",
            Self::Radius => "radius_m",
            Self::Limit => "limit",
        }
    }
}

/// A validated nearby query: a point, a radius and how many alerts at most.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    lat: f64,
    lng: f64,
    radius_m: u32,
    limit: u32,
}

impl NearbyQuery {
    /// `limit` 0 means the default.
    pub fn new(lat: f64, lng: f64, radius_m: u32, limit: u32) -> Result<Self, InvalidQuery> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(InvalidQuery::Lat);
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(InvalidQuery::Lng);
        }
        if radius_m == 0 || radius_m > MAX_RADIUS_M {
            return Err(InvalidQuery::Radius);
        }
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        if limit > MAX_LIMIT {
            return Err(InvalidQuery::Limit);
        }
        Ok(Self {
            lat,
            lng,
            radius_m,
            limit,
        })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }

    pub fn lng(&self) -> f64 {
        self.lng
    }

    pub fn radius_m(&self) -> u32 {
        self.radius_m
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// A grid cell as stored in clear beside a report (`cell_lat`, `cell_lng`): hundredths of a degree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub lat: i32,
    pub lng: i32,
}

/// Inclusive ranges of grid cells, latitude and longitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellBox {
    pub lat: (i32, i32),
    pub lng: (i32, i32),
}

/// The store's question for nearby alerts, every rule already applied: which cells, which
/// statuses, since when, how many.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFilter {
    pub cells: CellBox,
    pub statuses: &'static [&'static str],
    pub since: DateTime<Utc>,
    pub limit: u32,
}

/// A report as the alert rules need it, exact time and cell included: never shown as is.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub category: String,
    pub severity: String,
    pub occurred_at: DateTime<Utc>,
    pub cell: Cell,
}

/// What a stranger may see of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub category: String,
    pub severity: String,
    /// Truncated to the hour.
    pub occurred_at: DateTime<Utc>,
    /// Centre of the grid cell.
    pub lat: f64,
    pub lng: f64,
}

// ---- Incident reports -------------------------------------------------------------------------

pub const CATEGORIES: &[&str] = &[
    "harassment",
    "assault",
    "theft",
    "vandalism",
    "discrimination",
    "stalking",
    "cyber",
    "other",
];
pub const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];
pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 10_000;
pub const ADDRESS_MAX: usize = 500;
pub const NOTE_MAX: usize = 2000;
/// How far in the future `occurred_at` may be (clocks of phones drift).
pub const FUTURE_SLACK: TimeDelta = TimeDelta::minutes(5);
/// How far back `occurred_at` may be.
pub const MAX_AGE: TimeDelta = TimeDelta::days(365);

/// A request field that was refused, and why (a sentence fit for the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{issue}")]
pub struct Invalid {
    pub field: &'static str,
    pub issue: &'static str,
}

fn invalid(field: &'static str, issue: &'static str) -> Invalid {
    Invalid { field, issue }
}

/// A report's place in its life: `submitted → under_review → resolved | dismissed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    UnderReview,
    Resolved,
    Dismissed,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Submitted,
        Status::UnderReview,
        Status::Resolved,
        Status::Dismissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::UnderReview => "under_review",
            Self::Resolved => "resolved",
            Self::Dismissed => "dismissed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One of [`CATEGORIES`].
pub fn category(s: &str, field: &'static str) -> Result<&'static str, Invalid> {
    CATEGORIES.iter().copied().find(|c| *c == s).ok_or_else(|| {
        invalid(
            field,
            "must be one of harassment, assault, theft, vandalism, discrimination, stalking, cyber, other",
        )
    })
}

/// One of [`SEVERITIES`].
pub fn severity(s: &str, field: &'static str) -> Result<&'static str, Invalid> {
    SEVERITIES
        .iter()
        .copied()
        .find(|c| *c == s)
        .ok_or_else(|| invalid(field, "must be one of low, medium, high, critical"))
}

/// A text of 1..=`max` characters that is not only white space.
pub fn text(s: String, field: &'static str, max: usize, issue: &'static str) -> Result<String, Invalid> {
    if s.trim().is_empty() || s.chars().count() > max {
        return Err(invalid(field, issue));
    }
    Ok(s)
}

pub fn title(s: String) -> Result<String, Invalid> {
    text(s, "title", TITLE_MAX, "must be 1 to 200 characters, not only spaces")
}

pub fn description(s: String) -> Result<String, Invalid> {
    text(
        s,
        "description",
        DESCRIPTION_MAX,
        "must be 1 to 10000 characters, not only spaces",
    )
}

/// When the incident happened: not more than [`FUTURE_SLACK`] ahead of `now`, not older than [`MAX_AGE`].
pub fn occurred_at(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    let at = at.ok_or_else(|| invalid("occurred_at", "is required"))?;
    if at > now + FUTURE_SLACK {
        return Err(invalid("occurred_at", "must not be in the future"));
    }
    if at < now - MAX_AGE {
        return Err(invalid("occurred_at", "must be within the last year"));
    }
    Ok(at)
}

/// Where an incident happened, as the reporter gave it (stored sealed, never shown to others).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
    pub address: Option<String>,
}

impl Location {
    pub fn new(lat: f64, lng: f64, address: Option<String>) -> Result<Self, Invalid> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(invalid("location.lat", "must be between -90 and 90"));
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(invalid("location.lng", "must be between -180 and 180"));
        }
        if address.as_ref().is_some_and(|a| a.chars().count() > ADDRESS_MAX) {
            return Err(invalid("location.address", "must be at most 500 characters"));
        }
        Ok(Self { lat, lng, address })
    }

    /// The sealed form: `lat,lng` then a newline and the address (if any); parsed back by [`Self::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{},{}", self.lat, self.lng);
        if let Some(a) = &self.address {
            out.push('\n');
            out.push_str(a);
        }
        out.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (point, address) = match text.split_once('\n') {
            Some((p, a)) => (p, Some(a.to_owned())),
            None => (text, None),
        };
        let (lat, lng) = point.split_once(',')?;
        Some(Self {
            lat: lat.parse().ok()?,
            lng: lng.parse().ok()?,
            address,
        })
    }
}

/// A validated new report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportDraft {
    pub category: &'static str,
    pub title: String,
    pub description: String,
    pub severity: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub location: Option<Location>,
    pub anonymous: bool,
}

/// What a change does to the location.
#[derive(Debug, Clone, PartialEq)]
pub enum LocationChange {
    Keep,
    Clear,
    Set(Location),
}

/// A validated change of a report: the fields that are set.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportChanges {
    pub category: Option<&'static str>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<&'static str>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub location: LocationChange,
}

impl ReportChanges {
    /// The names of the fields this change sets, for the audit log (never their values).
    pub fn field_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [
            (self.category.is_some(), "category"),
            (self.title.is_some(), "title"),
            (self.description.is_some(), "description"),
            (self.severity.is_some(), "severity"),
            (self.occurred_at.is_some(), "occurred_at"),
            (self.location != LocationChange::Keep, "location"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

/// A report as stored: clear columns, sealed ones as their bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReport {
    pub id: Uuid,
    pub user_id: Uuid,
    pub category: String,
    pub severity: String,
    pub status: String,
    pub title_ct: Vec<u8>,
    pub description_ct: Vec<u8>,
    pub location_ct: Option<Vec<u8>>,
    pub public_note_ct: Option<Vec<u8>>,
    pub cell: Option<Cell>,
    pub anonymous: bool,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the database gave a report it stored: the rest of the row is the [`NewReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct Filed {
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new report's row, sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReport {
    pub id: Uuid,
    pub user_id: Uuid,
    pub category: &'static str,
    pub severity: &'static str,
    pub title_ct: Vec<u8>,
    pub description_ct: Vec<u8>,
    pub location_ct: Option<Vec<u8>>,
    pub cell: Option<Cell>,
    pub anonymous: bool,
    pub occurred_at: DateTime<Utc>,
}

/// A change of a report's row, sealed: each `Some` is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportUpdate {
    pub category: Option<&'static str>,
    pub severity: Option<&'static str>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub title_ct: Option<Vec<u8>>,
    pub description_ct: Option<Vec<u8>>,
    /// `Some(None)` removes the location and its cell.
    pub location: Option<Option<(Vec<u8>, Cell)>>,
}

/// A file of a report, as the report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportAttachment {
    pub id: Uuid,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A report as its reporter (or a moderator) reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: Uuid,
    pub category: String,
    pub title: String,
    pub description: String,
    pub severity: String,
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub location: Option<Location>,
    pub anonymous: bool,
    pub attachments: Vec<ReportAttachment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub public_note: Option<String>,
}

/// Where a keyset page starts: after the row with this (created_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// Opaque to clients: microseconds and the id, `[0-9a-f_-]` only.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_micros(), self.id.simple())
    }

    pub fn decode(s: &str) -> Result<Self, Invalid> {
        let bad = || invalid("cursor", "is not a cursor this list handed out");
        let (micros, id) = s.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::try_parse(id).map_err(|_| bad())?,
        })
    }
}

/// A page request: a status filter, how many, and where to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl ListQuery {
    /// `status` "" is every status; `limit` 0 is the default; `cursor` "" is the first page.
    pub fn new(status: &str, limit: u32, cursor: &str) -> Result<Self, Invalid> {
        let status = match status {
            "" => None,
            s => Some(
                Status::parse(s)
                    .ok_or_else(|| invalid("status", "must be one of submitted, under_review, resolved, dismissed"))?,
            ),
        };
        let limit = match limit {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            _ => return Err(invalid("limit", "must be between 1 and 100")),
        };
        let after = match cursor {
            "" => None,
            c => Some(Cursor::decode(c)?),
        };
        Ok(Self { status, limit, after })
    }
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Who acts, as the request tells: the verified user and where the request came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub user_id: Uuid,
    /// The token grants `moderator` or `admin`.
    pub staff: bool,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// An audit row: who did what to which resource; field names only, never values.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub actor_id: Option<Uuid>,
    pub action: &'static str,
    pub resource: &'static str,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changed_fields: Vec<&'static str>,
}

/// A domain event on its way to the outbox: its type and its JSON fields.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    /// About an anonymous report: nothing may link the event to the request that caused it (its
    /// trace would lead to the reporter's account in the gateway's spans and logs).
    pub anonymous: bool,
}

/// A moderator's status move, sealed, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNote {
    pub id: Uuid,
    pub report_id: Uuid,
    pub moderator_id: Uuid,
    pub from_status: String,
    pub to_status: String,
    pub note_ct: Vec<u8>,
    pub public_note_ct: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// A status move as moderators read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModerationNote {
    pub moderator_id: Uuid,
    pub from_status: String,
    pub to_status: String,
    pub note: String,
    pub public_note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A report as moderators see it: never the reporter of an anonymous report.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeratedReport {
    pub report: Report,
    /// `None` for anonymous reports.
    pub reporter_id: Option<Uuid>,
    pub notes: Vec<ModerationNote>,
}

/// A validated status move.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusMove {
    pub to: Status,
    pub note: String,
    pub public_note: Option<String>,
}

impl StatusMove {
    pub fn new(to: &str, note: String, public_note: Option<String>) -> Result<Self, Invalid> {
        let to = Status::parse(to)
            .filter(|s| *s != Status::Submitted)
            .ok_or_else(|| invalid("status", "must be one of under_review, resolved, dismissed"))?;
        if note.chars().count() > NOTE_MAX {
            return Err(invalid("note", "must be at most 2000 characters"));
        }
        if public_note.as_ref().is_some_and(|n| n.chars().count() > NOTE_MAX) {
            return Err(invalid("public_note", "must be at most 2000 characters"));
        }
        Ok(Self { to, note, public_note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_input() {
        assert_eq!(NearbyQuery::new(90.5, 0.0, 100, 0), Err(InvalidQuery::Lat));
        assert_eq!(NearbyQuery::new(f64::NAN, 0.0, 100, 0), Err(InvalidQuery::Lat));
        assert_eq!(NearbyQuery::new(0.0, -180.1, 100, 0), Err(InvalidQuery::Lng));
        assert_eq!(NearbyQuery::new(0.0, f64::INFINITY, 100, 0), Err(InvalidQuery::Lng));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 0, 0), Err(InvalidQuery::Radius));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 5001, 0), Err(InvalidQuery::Radius));
        assert_eq!(NearbyQuery::new(0.0, 0.0, 5000, 101), Err(InvalidQuery::Limit));
        assert_eq!(
            NearbyQuery::new(0.0, 0.0, 5000, 0).map(|q| q.limit()),
            Ok(DEFAULT_LIMIT)
        );
    }

    #[test]
    fn report_fields_are_checked_and_named() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().expect("time");
        assert_eq!(category("theft", "category"), Ok("theft"));
        assert_eq!(category("Theft", "category").map_err(|e| e.field), Err("category"));
        assert_eq!(severity("urgent", "severity").map_err(|e| e.field), Err("severity"));
        assert!(title("a".repeat(200)).is_ok());
        assert_eq!(title("a".repeat(201)).map_err(|e| e.field), Err("title"));
        assert_eq!(title("   ".into()).map_err(|e| e.field), Err("title"));
        assert!(description("é".repeat(10_000)).is_ok());
        assert!(description("é".repeat(10_001)).is_err());
        assert!(occurred_at(Some(now + TimeDelta::minutes(5)), now).is_ok());
        assert!(occurred_at(Some(now + TimeDelta::minutes(6)), now).is_err());
        assert!(occurred_at(Some(now - TimeDelta::days(365)), now).is_ok());
        assert!(occurred_at(Some(now - TimeDelta::days(366)), now).is_err());
        assert_eq!(occurred_at(None, now).map_err(|e| e.field), Err("occurred_at"));
        assert_eq!(Location::new(91.0, 0.0, None).map_err(|e| e.field), Err("location.lat"));
        assert_eq!(
            Location::new(0.0, 181.0, None).map_err(|e| e.field),
            Err("location.lng")
        );
        assert_eq!(
            Location::new(0.0, 0.0, Some("x".repeat(501))).map_err(|e| e.field),
            Err("location.address")
        );
    }

    #[test]
    fn a_location_round_trips_through_its_sealed_form() {
        for loc in [
            Location::new(52.520008, 13.404954, Some("Alexanderplatz 1,\nBerlin".into())).expect("valid"),
            Location::new(-33.9, 151.2, None).expect("valid"),
        ] {
            assert_eq!(Location::from_bytes(&loc.to_bytes()), Some(loc));
        }
    }

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_765_000_000_123_456).expect("time"),
            id: Uuid::from_u128(7),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert!(
            c.encode()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        );
        for bad in ["", "x", "1_nope", "abc_00000000000000000000000000000007"] {
            assert_eq!(Cursor::decode(bad).map_err(|e| e.field), Err("cursor"), "{bad}");
        }
        assert_eq!(ListQuery::new("open", 0, "").map_err(|e| e.field), Err("status"));
        assert_eq!(ListQuery::new("", 101, "").map_err(|e| e.field), Err("limit"));
        assert_eq!(ListQuery::new("", 0, "").map(|q| q.limit), Ok(DEFAULT_LIMIT));
    }

    #[test]
    fn a_move_goes_to_a_later_status_with_bounded_notes() {
        assert!(StatusMove::new("resolved", String::new(), None).is_ok());
        assert_eq!(
            StatusMove::new("submitted", String::new(), None).map_err(|e| e.field),
            Err("status")
        );
        assert_eq!(
            StatusMove::new("resolved", "n".repeat(2001), None).map_err(|e| e.field),
            Err("note")
        );
        let changes = ReportChanges {
            category: None,
            title: Some("t".into()),
            description: None,
            severity: Some("low"),
            occurred_at: None,
            location: LocationChange::Clear,
        };
        assert_eq!(changes.field_names(), ["title", "severity", "location"]);
    }
}
