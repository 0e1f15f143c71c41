//! A reporter's own reports: create, list, read, change, withdraw.

use proto::reports::v1::{
    CreateReportRequest, DeleteReportRequest, DeleteReportResponse, GetReportRequest, ListMyReportsRequest,
    ListReportsResponse, Report, UpdateReportRequest,
};
use tonic::{Request, Response, Status};

use crate::service::Reports;

fn not_yet() -> Status {
    Status::unimplemented("incident reports are being built (issue 18)")
}

pub async fn create(_reports: &Reports, _request: Request<CreateReportRequest>) -> Result<Response<Report>, Status> {
    Err(not_yet())
}

pub async fn list_mine(
    _reports: &Reports,
    _request: Request<ListMyReportsRequest>,
) -> Result<Response<ListReportsResponse>, Status> {
    Err(not_yet())
}

pub async fn get(_reports: &Reports, _request: Request<GetReportRequest>) -> Result<Response<Report>, Status> {
    Err(not_yet())
}

pub async fn update(_reports: &Reports, _request: Request<UpdateReportRequest>) -> Result<Response<Report>, Status> {
    Err(not_yet())
}

pub async fn delete(
    _reports: &Reports,
    _request: Request<DeleteReportRequest>,
) -> Result<Response<DeleteReportResponse>, Status> {
    Err(not_yet())
}
