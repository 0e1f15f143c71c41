//! A reporter's own reports: create, list, read, change, withdraw.

use chrono::Utc;
use prost::Message as _;
use proto::reports::v1 as pb;
use proto::reports::v1::{
    CreateReportRequest, DeleteReportRequest, DeleteReportResponse, GetReportRequest, ListMyReportsRequest,
    ListReportsResponse, Report, UpdateReportRequest,
};
use service_kit::errors::{self, ErrorCode};
use service_kit::grpc::invalid_field;
use service_kit::idempotency;
use service_kit::proto_time::{from_timestamp, some_timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{ReportsGrpc, auth};
use crate::domain::{
    self, IdempotencyKey, Invalid, ListQuery, Location, LocationChange, ReportAttachment, ReportChanges, ReportDraft,
};
use crate::service::{Created, KeyError, ReportError};

/// The method name hashed with a create's request (service_kit::idempotency).
const CREATE: &str = "/reports.v1.ReportsService/CreateReport";

pub(super) fn invalid(e: Invalid) -> Status {
    invalid_field(e.field, e.issue)
}

/// Each use-case refusal as the status the table gives it; causes to the log only.
pub(super) fn status(e: ReportError) -> Status {
    match e {
        ReportError::NotFound => errors::status(ErrorCode::NotFound, "No such report."),
        ReportError::NotEditable => errors::status(
            ErrorCode::Conflict,
            "The report is being moderated and can no longer be changed.",
        ),
        ReportError::BadMove => errors::status(
            ErrorCode::Conflict,
            "Reports move submitted → under_review → resolved or dismissed; this move is not allowed.",
        ),
        ReportError::IdempotencyKeyReused => errors::status(
            ErrorCode::IdempotencyKeyReused,
            "This Idempotency-Key was used with another request; use a new key for a new request.",
        ),
        ReportError::RequestInProgress => errors::status_retry_after(
            ErrorCode::RequestInProgress,
            "A request with this Idempotency-Key is still running; retry shortly.",
            1,
        ),
        ReportError::Store(e) | ReportError::Keys(KeyError::Store(e)) => e.into_status(),
        ReportError::Unreadable(cause) => {
            tracing::error!(cause, "sealed report data does not open");
            errors::status(ErrorCode::Internal, "internal error")
        }
        ReportError::Keys(e) => {
            tracing::error!(error = %e, "a data key does not unwrap");
            errors::status(ErrorCode::Internal, "internal error")
        }
    }
}

/// A report id from a request: one that is not a UUID names no report.
pub(super) fn report_id(id: &str) -> Result<Uuid, Status> {
    Uuid::try_parse(id).map_err(|_| status(ReportError::NotFound))
}

fn attachment_pb(a: ReportAttachment) -> pb::AttachmentInfo {
    pb::AttachmentInfo {
        id: a.id.to_string(),
        content_type: a.content_type,
        size: a.size,
        sha256: a.sha256,
        created_at: some_timestamp(a.created_at),
    }
}

pub(super) fn report_pb(r: domain::Report) -> Report {
    Report {
        id: r.id.to_string(),
        category: r.category,
        title: r.title,
        description: r.description,
        severity: r.severity,
        status: r.status,
        occurred_at: some_timestamp(r.occurred_at),
        location: r.location.map(|l| pb::Location {
            lat: l.lat,
            lng: l.lng,
            address: l.address,
        }),
        anonymous: r.anonymous,
        attachments: r.attachments.into_iter().map(attachment_pb).collect(),
        created_at: some_timestamp(r.created_at),
        updated_at: some_timestamp(r.updated_at),
        public_note: r.public_note,
    }
}

fn location(l: pb::Location) -> Result<Location, Status> {
    Location::new(l.lat, l.lng, l.address).map_err(invalid)
}

fn draft(r: CreateReportRequest) -> Result<ReportDraft, Status> {
    let now = Utc::now();
    Ok(ReportDraft {
        category: domain::category(&r.category, "category").map_err(invalid)?,
        title: domain::title(r.title).map_err(invalid)?,
        description: domain::description(r.description).map_err(invalid)?,
        severity: domain::severity(r.severity.as_deref().unwrap_or("medium"), "severity").map_err(invalid)?,
        occurred_at: domain::occurred_at(from_timestamp(r.occurred_at.as_ref()), now).map_err(invalid)?,
        location: r.location.map(location).transpose()?,
        anonymous: r.anonymous,
    })
}

fn changes(r: UpdateReportRequest) -> Result<ReportChanges, Status> {
    let location = match (r.location, r.clear_location) {
        (Some(_), true) => {
            return Err(invalid_field("location", "must be left out when clear_location is set"));
        }
        (Some(l), false) => LocationChange::Set(location(l)?),
        (None, true) => LocationChange::Clear,
        (None, false) => LocationChange::Keep,
    };
    Ok(ReportChanges {
        category: r
            .category
            .map(|c| domain::category(&c, "category"))
            .transpose()
            .map_err(invalid)?,
        title: r.title.map(domain::title).transpose().map_err(invalid)?,
        description: r.description.map(domain::description).transpose().map_err(invalid)?,
        severity: r
            .severity
            .map(|s| domain::severity(&s, "severity"))
            .transpose()
            .map_err(invalid)?,
        occurred_at: match r.occurred_at {
            None => None,
            Some(t) => Some(domain::occurred_at(from_timestamp(Some(&t)), Utc::now()).map_err(invalid)?),
        },
        location,
    })
}

pub async fn create(g: &ReportsGrpc, request: Request<CreateReportRequest>) -> Result<Response<Report>, Status> {
    let caller = auth::caller(&g.verifier, &request).await?;
    let mut r = request.into_inner();
    let key = std::mem::take(&mut r.idempotency_key);
    let idempotency = if key.is_empty() {
        None
    } else if !idempotency::valid_key(&key) {
        return Err(invalid_field(
            "idempotency_key",
            "must be 1 to 255 visible ASCII characters",
        ));
    } else {
        Some(IdempotencyKey {
            request_hash: idempotency::request_hash(CREATE, &r),
            key,
        })
    };
    let draft = draft(r)?;
    let encode = |report: &domain::Report| report_pb(report.clone()).encode_to_vec();
    match g
        .reports
        .create(&caller, draft, idempotency, encode)
        .await
        .map_err(status)?
    {
        Created::New(report) => Ok(Response::new(report_pb(*report))),
        Created::Replayed(bytes) => idempotency::decode::<Report>(&bytes).map(Response::new).map_err(|e| {
            tracing::error!(error = %e, "a stored response does not decode");
            errors::status(ErrorCode::Internal, "internal error")
        }),
    }
}

pub async fn list_mine(
    g: &ReportsGrpc,
    request: Request<ListMyReportsRequest>,
) -> Result<Response<ListReportsResponse>, Status> {
    let caller = auth::caller(&g.verifier, &request).await?;
    let r = request.into_inner();
    let query = ListQuery::new(&r.status, r.limit, &r.cursor).map_err(invalid)?;
    let page = g.reports.list_mine(&caller, query).await.map_err(status)?;
    Ok(Response::new(ListReportsResponse {
        reports: page.items.into_iter().map(report_pb).collect(),
        next_cursor: page.next.map(|c| c.encode()).unwrap_or_default(),
    }))
}

pub async fn get(g: &ReportsGrpc, request: Request<GetReportRequest>) -> Result<Response<Report>, Status> {
    let caller = auth::caller(&g.verifier, &request).await?;
    let id = report_id(&request.get_ref().id)?;
    let report = g.reports.get(&caller, id).await.map_err(status)?;
    Ok(Response::new(report_pb(report)))
}

pub async fn update(g: &ReportsGrpc, request: Request<UpdateReportRequest>) -> Result<Response<Report>, Status> {
    let caller = auth::caller(&g.verifier, &request).await?;
    let r = request.into_inner();
    let id = report_id(&r.id)?;
    let changes = changes(r)?;
    let report = g.reports.update(&caller, id, changes).await.map_err(status)?;
    Ok(Response::new(report_pb(report)))
}

pub async fn delete(
    g: &ReportsGrpc,
    request: Request<DeleteReportRequest>,
) -> Result<Response<DeleteReportResponse>, Status> {
    let caller = auth::caller(&g.verifier, &request).await?;
    let id = report_id(&request.get_ref().id)?;
    g.reports.delete(&caller, id).await.map_err(status)?;
    Ok(Response::new(DeleteReportResponse {}))
}
