//! Incident reports (reports-service): a reporter's own reports (`/v1/reports`) and the
//! moderators' queue and status moves (`/v1/admin/reports`).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use proto::reports::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::query::StrictQuery;
use crate::routes::call::ReportsCall;
use crate::routes::{non_empty, time};

// Bounds at the edge, as reports-service applies them (it checks them again, with the same words).
const CATEGORY: usize = 32;
const TITLE: usize = 200;
const DESCRIPTION: usize = 10_000;
const ADDRESS: usize = 500;
const TIME: usize = 64;
const NOTE: usize = 2000;
/// The header that makes a create idempotent (API.md, "Conventions").
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What an incident was (the schema of `category`; bodies carry a string so that another value
/// gets VALIDATION_FAILED naming the field).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the values are checked by reports-service
pub enum Category {
    Harassment,
    Assault,
    Theft,
    Vandalism,
    Discrimination,
    Stalking,
    Cyber,
    Other,
}

/// How serious it was.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Where a report is: `submitted → under_review → resolved | dismissed`.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // a schema only
pub enum ReportStatus {
    Submitted,
    UnderReview,
    Resolved,
    Dismissed,
}

/// A status a moderator moves a report to.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // a schema only
pub enum TargetStatus {
    UnderReview,
    Resolved,
    Dismissed,
}

/// Where it happened: stored encrypted, never shown to anyone but the reporter and moderators.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
    #[schema(max_length = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl From<LocationBody> for pb::Location {
    fn from(l: LocationBody) -> Self {
        Self {
            lat: l.lat,
            lng: l.lng,
            address: l.address,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReportBody {
    #[schema(value_type = Category)]
    pub category: String,
    /// 1..=200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: String,
    /// 1..=10000 characters, not only spaces.
    #[schema(min_length = 1, max_length = 10000, pattern = r"\S")]
    pub description: String,
    /// Default medium.
    #[schema(value_type = Option<Severity>)]
    pub severity: Option<String>,
    /// RFC 3339; not more than 5 minutes in the future, not older than a year.
    #[schema(value_type = DateTime<Utc>)]
    pub occurred_at: String,
    pub location: Option<LocationBody>,
    /// Moderators never see who filed an anonymous report. Default false.
    pub anonymous: Option<bool>,
}

fn location_strings(l: Option<&LocationBody>) -> Option<(&'static str, Option<&str>, usize)> {
    l.map(|l| ("location.address", l.address.as_deref(), ADDRESS))
}

impl Bounded for CreateReportBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        let mut out = vec![
            ("category", Some(self.category.as_str()), CATEGORY),
            ("title", Some(&self.title), TITLE),
            ("description", Some(&self.description), DESCRIPTION),
            ("severity", self.severity.as_deref(), CATEGORY),
            ("occurred_at", Some(&self.occurred_at), TIME),
        ];
        out.extend(location_strings(self.location.as_ref()));
        out
    }
}

/// An RFC 3339 time of a body, or VALIDATION_FAILED naming `field`.
fn time_field(field: &str, value: &str) -> Result<prost_types::Timestamp, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| service_kit::proto_time::to_timestamp(t.with_timezone(&Utc)))
        .map_err(|_| ApiError::validation(field, "must be an RFC 3339 time, e.g. 2026-12-06T17:30:00Z"))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateReportBody {
    #[schema(value_type = Option<Category>)]
    pub category: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub title: Option<String>,
    #[schema(min_length = 1, max_length = 10000, pattern = r"\S")]
    pub description: Option<String>,
    #[schema(value_type = Option<Severity>)]
    pub severity: Option<String>,
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub occurred_at: Option<String>,
    /// null removes the location.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(value_type = Option<LocationBody>)]
    pub location: Option<Option<LocationBody>>,
}

impl Bounded for UpdateReportBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        let mut out = vec![
            ("category", self.category.as_deref(), CATEGORY),
            ("title", self.title.as_deref(), TITLE),
            ("description", self.description.as_deref(), DESCRIPTION),
            ("severity", self.severity.as_deref(), CATEGORY),
            ("occurred_at", self.occurred_at.as_deref(), TIME),
        ];
        out.extend(location_strings(self.location.as_ref().and_then(Option::as_ref)));
        out
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveStatusBody {
    #[schema(value_type = TargetStatus)]
    pub status: String,
    /// For moderators only (stored encrypted), 0..=2000 characters.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
    /// Shown to the reporter with the report, 0..=2000 characters.
    #[schema(max_length = 2000)]
    pub public_note: Option<String>,
}

impl Bounded for MoveStatusBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("status", Some(self.status.as_str()), CATEGORY),
            ("note", self.note.as_deref(), NOTE),
            ("public_note", self.public_note.as_deref(), NOTE),
        ]
    }
}

/// A file of a report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportAttachment {
    pub id: String,
    /// image/jpeg | image/png | image/gif | application/pdf, judged from the bytes.
    pub content_type: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A report as its reporter reads it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportBody {
    pub id: String,
    #[schema(value_type = Category)]
    pub category: String,
    pub title: String,
    pub description: String,
    #[schema(value_type = Severity)]
    pub severity: String,
    #[schema(value_type = ReportStatus)]
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub location: Option<LocationBody>,
    pub anonymous: bool,
    pub attachments: Vec<ReportAttachment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the moderator told the reporter with the last status move.
    pub public_note: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub items: Vec<ReportBody>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A status move and the moderator's notes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModerationNoteBody {
    pub moderator_id: String,
    #[schema(value_type = ReportStatus)]
    pub from_status: String,
    #[schema(value_type = ReportStatus)]
    pub to_status: String,
    pub note: String,
    pub public_note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A report as moderators see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModeratedReportBody {
    pub report: ReportBody,
    /// null for an anonymous report.
    pub reporter_id: Option<String>,
    /// Oldest first.
    pub notes: Vec<ModerationNoteBody>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModerationPage {
    pub items: Vec<ModeratedReportBody>,
    pub next_cursor: Option<String>,
}

fn report_body(r: pb::Report) -> ReportBody {
    ReportBody {
        id: r.id,
        category: r.category,
        title: r.title,
        description: r.description,
        severity: r.severity,
        status: r.status,
        occurred_at: time(r.occurred_at.as_ref()),
        location: r.location.map(|l| LocationBody {
            lat: l.lat,
            lng: l.lng,
            address: l.address,
        }),
        anonymous: r.anonymous,
        attachments: r
            .attachments
            .into_iter()
            .map(|a| ReportAttachment {
                id: a.id,
                content_type: a.content_type,
                size: a.size,
                sha256: a.sha256,
                created_at: time(a.created_at.as_ref()),
            })
            .collect(),
        created_at: time(r.created_at.as_ref()),
        updated_at: time(r.updated_at.as_ref()),
        public_note: r.public_note,
    }
}

fn moderated_body(m: pb::ModeratedReport) -> ModeratedReportBody {
    ModeratedReportBody {
        report: report_body(m.report.unwrap_or_default()),
        reporter_id: non_empty(m.reporter_id),
        notes: m
            .notes
            .into_iter()
            .map(|n| ModerationNoteBody {
                moderator_id: n.moderator_id,
                from_status: n.from_status,
                to_status: n.to_status,
                note: n.note,
                public_note: n.public_note,
                created_at: time(n.created_at.as_ref()),
            })
            .collect(),
    }
}

/// The `Idempotency-Key` header: absent, or 1..=255 visible ASCII characters (else 400 naming it).
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(String::new());
    };
    let refused = || {
        ApiError::validation(
            IDEMPOTENCY_KEY,
            "must be one header of 1 to 255 visible ASCII characters",
        )
    };
    if values.next().is_some() {
        return Err(refused());
    }
    value
        .to_str()
        .ok()
        .filter(|k| service_kit::idempotency::valid_key(k))
        .map(str::to_owned)
        .ok_or_else(refused)
}

/// A report id from the path: anything but a UUID names no report.
fn report_id(path: web::Path<String>) -> Result<String, ApiError> {
    let id = path.into_inner();
    uuid::Uuid::try_parse(&id).map_err(|_| ApiError::not_found())?;
    Ok(id)
}

/// File a report (status `submitted`). Title, description and location are stored encrypted;
/// strangers only ever see a coarse, offset grid cell once a moderator accepts it (nearby alerts).
/// With an `Idempotency-Key`, a retry of the same request within 24 hours answers the first
/// response and files nothing new.
#[utoipa::path(post, path = "/v1/reports", operation_id = "create_report", tag = "reports", request_body = CreateReportBody, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7e]+$",
        description = "1..=255 visible ASCII characters: the same key and body within 24 h answer the first response")),
    responses(
        (status = 201, description = "Filed (or the first answer to the same request under this Idempotency-Key)", body = ReportBody),
        (status = 400, description = "VALIDATION_FAILED naming the field (or the Idempotency-Key header), MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 409, description = "REQUEST_IN_PROGRESS: the first request under this Idempotency-Key is still running", body = crate::error::ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: this Idempotency-Key came with another request", body = crate::error::ErrorBody),
    ))]
pub async fn create(
    req: HttpRequest,
    auth: Authenticated,
    reports_service: ReportsCall,
    body: BoundedJson<CreateReportBody>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let b = body.into_inner();
    let message = pb::CreateReportRequest {
        idempotency_key: key,
        occurred_at: Some(time_field("occurred_at", &b.occurred_at)?),
        category: b.category,
        title: b.title,
        description: b.description,
        severity: b.severity,
        location: b.location.map(Into::into),
        anonymous: b.anonymous.unwrap_or(false),
    };
    let report = reports_service
        .by(&auth)
        .send(message, async |c, m| c.create_report(m).await)
        .await?;
    Ok(HttpResponse::Created().json(report_body(report)))
}

/// The caller's own reports, newest first.
#[utoipa::path(get, path = "/v1/reports", operation_id = "list_reports", tag = "reports", security(("bearer" = [])),
    params(
        ("status" = Option<ReportStatus>, Query, description = "Only this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = ReportPage),
        (status = 400, description = "VALIDATION_FAILED naming the parameter (a cursor this list never handed out is one)", body = crate::error::ErrorBody),
    ))]
pub async fn list(
    req: HttpRequest,
    auth: Authenticated,
    reports_service: ReportsCall,
) -> Result<HttpResponse, ApiError> {
    let q = StrictQuery::parse(req.query_string(), &["status", "limit", "cursor"])?;
    let message = pb::ListMyReportsRequest {
        status: q.optional("status", "a status")?.unwrap_or_default(),
        limit: crate::routes::page_limit(&q)?,
        cursor: q.optional("cursor", "a cursor")?.unwrap_or_default(),
    };
    let r = reports_service
        .by(&auth)
        .send(message, async |c, m| c.list_my_reports(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(ReportPage {
        items: r.reports.into_iter().map(report_body).collect(),
        next_cursor: non_empty(r.next_cursor),
    }))
}

/// One of the caller's own reports (404 for anyone else's).
#[utoipa::path(get, path = "/v1/reports/{id}", operation_id = "get_report", tag = "reports", security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The report's id (a UUID)")),
    responses(
        (status = 200, description = "The report", body = ReportBody),
        (status = 404, description = "No such report of the caller's", body = crate::error::ErrorBody),
    ))]
pub async fn get(
    auth: Authenticated,
    reports_service: ReportsCall,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::GetReportRequest { id: report_id(path)? };
    let report = reports_service
        .by(&auth)
        .send(message, async |c, m| c.get_report(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(report_body(report)))
}

/// Change a report while it is `submitted`: the fields that are sent (`location: null` removes
/// the location).
#[utoipa::path(patch, path = "/v1/reports/{id}", operation_id = "update_report", tag = "reports", request_body = UpdateReportBody, security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The report's id (a UUID)")),
    responses(
        (status = 200, description = "The changed report", body = ReportBody),
        (status = 404, description = "No such report of the caller's", body = crate::error::ErrorBody),
        (status = 409, description = "CONFLICT: a moderator has taken the report up; it can no longer be changed", body = crate::error::ErrorBody),
    ))]
pub async fn update(
    auth: Authenticated,
    reports_service: ReportsCall,
    path: web::Path<String>,
    body: BoundedJson<UpdateReportBody>,
) -> Result<HttpResponse, ApiError> {
    let id = report_id(path)?;
    let b = body.into_inner();
    let message = pb::UpdateReportRequest {
        id,
        occurred_at: b.occurred_at.map(|t| time_field("occurred_at", &t)).transpose()?,
        category: b.category,
        title: b.title,
        description: b.description,
        severity: b.severity,
        clear_location: matches!(b.location, Some(None)),
        location: b.location.flatten().map(Into::into),
    };
    let report = reports_service
        .by(&auth)
        .send(message, async |c, m| c.update_report(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(report_body(report)))
}

/// Withdraw one of the caller's reports.
#[utoipa::path(delete, path = "/v1/reports/{id}", operation_id = "delete_report", tag = "reports", security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The report's id (a UUID)")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 404, description = "No such report of the caller's", body = crate::error::ErrorBody),
    ))]
pub async fn delete(
    auth: Authenticated,
    reports_service: ReportsCall,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::DeleteReportRequest { id: report_id(path)? };
    reports_service
        .by(&auth)
        .send(message, async |c, m| c.delete_report(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// 403 unless the token grants `moderator` or `admin` (reports-service checks again).
fn require_moderator(auth: &Authenticated) -> Result<(), ApiError> {
    auth.require_role("moderator")
        .or_else(|_| auth.require_role("admin"))
        .map_err(|_| {
            ApiError::coded(
                service_kit::errors::ErrorCode::Forbidden,
                "This needs the moderator or admin role.",
            )
        })
}

/// Moderators: the queue of one status (default `submitted`), oldest first. Anonymous reports
/// come without their reporter.
#[utoipa::path(get, path = "/v1/admin/reports", operation_id = "moderation_queue", tag = "reports", security(("bearer" = [])),
    params(
        ("status" = Option<ReportStatus>, Query, description = "Default submitted"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page", body = ModerationPage),
        (status = 400, description = "VALIDATION_FAILED naming the parameter", body = crate::error::ErrorBody),
        (status = 403, description = "FORBIDDEN: not a moderator or administrator", body = crate::error::ErrorBody),
    ))]
pub async fn queue(
    req: HttpRequest,
    auth: Authenticated,
    reports_service: ReportsCall,
) -> Result<HttpResponse, ApiError> {
    require_moderator(&auth)?;
    let q = StrictQuery::parse(req.query_string(), &["status", "limit", "cursor"])?;
    let message = pb::ListModerationQueueRequest {
        status: q.optional("status", "a status")?.unwrap_or_default(),
        limit: crate::routes::page_limit(&q)?,
        cursor: q.optional("cursor", "a cursor")?.unwrap_or_default(),
    };
    let r = reports_service
        .by(&auth)
        .send(message, async |c, m| c.list_moderation_queue(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(ModerationPage {
        items: r.reports.into_iter().map(moderated_body).collect(),
        next_cursor: non_empty(r.next_cursor),
    }))
}

/// Moderators: move a report `submitted → under_review → resolved | dismissed`, with a note for
/// moderators (stored encrypted) and, optionally, one shown to the reporter. Reports under review
/// or resolved appear (coarsened) in nearby alerts.
#[utoipa::path(post, path = "/v1/admin/reports/{id}/status", operation_id = "move_report_status", tag = "reports", request_body = MoveStatusBody, security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The report's id (a UUID)")),
    responses(
        (status = 200, description = "The report after the move", body = ModeratedReportBody),
        (status = 403, description = "FORBIDDEN: not a moderator or administrator", body = crate::error::ErrorBody),
        (status = 404, description = "No such report", body = crate::error::ErrorBody),
        (status = 409, description = "CONFLICT: this move is not allowed from the report's status", body = crate::error::ErrorBody),
    ))]
pub async fn move_status(
    auth: Authenticated,
    reports_service: ReportsCall,
    path: web::Path<String>,
    body: BoundedJson<MoveStatusBody>,
) -> Result<HttpResponse, ApiError> {
    require_moderator(&auth)?;
    let id = report_id(path)?;
    let b = body.into_inner();
    let message = pb::MoveReportStatusRequest {
        id,
        status: b.status,
        note: b.note.unwrap_or_default(),
        public_note: b.public_note,
    };
    let moved = reports_service
        .by(&auth)
        .send(message, async |c, m| c.move_report_status(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(moderated_body(moved)))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn the_idempotency_key_is_absent_or_well_formed() {
        let with = |values: &[&str]| {
            let mut r = TestRequest::default();
            for v in values {
                r = r.append_header((IDEMPOTENCY_KEY, *v));
            }
            idempotency_key(&r.to_http_request())
        };
        assert_eq!(with(&[]).ok().as_deref(), Some(""));
        assert_eq!(with(&["k-1"]).ok().as_deref(), Some("k-1"));
        for bad in [vec!["a b"], vec![&*"k".repeat(256)], vec!["a", "b"]] {
            let e = with(&bad).expect_err("refused");
            assert_eq!(e.details[0].field, IDEMPOTENCY_KEY, "{bad:?}");
        }
    }

    #[test]
    fn a_patch_tells_a_removed_location_from_an_untouched_one() {
        let parse = |json: &str| serde_json::from_str::<UpdateReportBody>(json).expect("body");
        assert!(parse("{}").location.is_none());
        assert!(matches!(parse(r#"{"location": null}"#).location, Some(None)));
        assert!(matches!(
            parse(r#"{"location": {"lat": 1, "lng": 2}}"#).location,
            Some(Some(_))
        ));
        assert!(serde_json::from_str::<UpdateReportBody>(r#"{"colour": "red"}"#).is_err());
    }
}
