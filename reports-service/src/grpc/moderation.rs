//! Moderators' calls: the queue, and moving a report along its statuses. The token must grant
//! `moderator` or `admin`; the reporter of an anonymous report is never sent.

use proto::reports::v1 as pb;
use proto::reports::v1::{
    ListModerationQueueRequest, ListModerationQueueResponse, ModeratedReport, MoveReportStatusRequest,
};
use service_kit::errors::{self, ErrorCode};
use service_kit::proto_time::some_timestamp;
use tonic::{Request, Response, Status};

use super::reports::{invalid, report_id, report_pb, status};
use super::{ReportsGrpc, auth};
use crate::domain::{self, Caller, ListQuery, StatusMove};

async fn moderator<T>(g: &ReportsGrpc, request: &Request<T>) -> Result<Caller, Status> {
    let caller = auth::caller(&g.verifier, request).await?;
    if !caller.staff {
        return Err(errors::status(
            ErrorCode::Forbidden,
            "This needs the moderator or admin role.",
        ));
    }
    Ok(caller)
}

fn moderated_pb(m: domain::ModeratedReport) -> ModeratedReport {
    ModeratedReport {
        report: Some(report_pb(m.report)),
        reporter_id: m.reporter_id.map(|id| id.to_string()).unwrap_or_default(),
        notes: m
            .notes
            .into_iter()
            .map(|n| pb::ModerationNote {
                moderator_id: n.moderator_id.to_string(),
                from_status: n.from_status,
                to_status: n.to_status,
                note: n.note,
                public_note: n.public_note,
                created_at: some_timestamp(n.created_at),
            })
            .collect(),
    }
}

pub async fn queue(
    g: &ReportsGrpc,
    request: Request<ListModerationQueueRequest>,
) -> Result<Response<ListModerationQueueResponse>, Status> {
    moderator(g, &request).await?;
    let r = request.into_inner();
    let query = ListQuery::new(&r.status, r.limit, &r.cursor).map_err(invalid)?;
    let page = g.reports.moderation_queue(query).await.map_err(status)?;
    Ok(Response::new(ListModerationQueueResponse {
        reports: page.items.into_iter().map(moderated_pb).collect(),
        next_cursor: page.next.map(|c| c.encode()).unwrap_or_default(),
    }))
}

pub async fn move_status(
    g: &ReportsGrpc,
    request: Request<MoveReportStatusRequest>,
) -> Result<Response<ModeratedReport>, Status> {
    let caller = moderator(g, &request).await?;
    let r = request.into_inner();
    let id = report_id(&r.id)?;
    let step = StatusMove::new(&r.status, r.note, r.public_note).map_err(invalid)?;
    let moved = g.reports.move_status(&caller, id, step).await.map_err(status)?;
    Ok(Response::new(moderated_pb(moved)))
}
