//! Moderators' calls: the queue, and moving a report along its statuses.

use proto::reports::v1::{
    ListModerationQueueRequest, ListModerationQueueResponse, ModeratedReport, MoveReportStatusRequest,
};
use tonic::{Request, Response, Status};

use crate::service::Reports;

fn not_yet() -> Status {
    Status::unimplemented("moderation is being built (issue 18)")
}

pub async fn queue(
    _reports: &Reports,
    _request: Request<ListModerationQueueRequest>,
) -> Result<Response<ListModerationQueueResponse>, Status> {
    Err(not_yet())
}

pub async fn move_status(
    _reports: &Reports,
    _request: Request<MoveReportStatusRequest>,
) -> Result<Response<ModeratedReport>, Status> {
    Err(not_yet())
}
