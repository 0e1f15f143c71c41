//! `reports.v1.ReportsService` over tonic: decode into domain values, call the use case, map
//! errors through service-kit's one table. One submodule per group of calls; this file only
//! routes each call to it.

mod attachments;
pub mod auth;
mod moderation;
mod reports;

use proto::reports::v1::reports_service_server::ReportsService;
use proto::reports::v1::{
    Attachment, CreateReportRequest, DeleteReportRequest, DeleteReportResponse, DownloadAttachmentRequest,
    GetReportRequest, ListModerationQueueRequest, ListModerationQueueResponse, ListMyReportsRequest,
    ListNearbyAlertsRequest, ListNearbyAlertsResponse, ListReportsResponse, ModeratedReport, MoveReportStatusRequest,
    NearbyAlert, Report, UpdateReportRequest, UploadAttachmentRequest,
};
use service_kit::proto_time::some_timestamp;
use service_kit::store_error::StoreError;
use tonic::{Request, Response, Status};

use crate::domain::{Alert, NearbyQuery};
use crate::service::Reports;
use crate::service::attachments::Attachments;

pub struct ReportsGrpc {
    reports: Reports,
    attachments: Attachments,
    /// Verifies every call's bearer token (see `auth`).
    verifier: service_kit::auth::Verifier,
}

impl ReportsGrpc {
    pub fn new(reports: Reports, attachments: Attachments, verifier: service_kit::auth::Verifier) -> Self {
        Self {
            reports,
            attachments,
            verifier,
        }
    }
}

fn alert_pb(a: Alert) -> NearbyAlert {
    NearbyAlert {
        category: a.category,
        severity: a.severity,
        occurred_at: some_timestamp(a.occurred_at),
        lat: a.lat,
        lng: a.lng,
    }
}

#[tonic::async_trait]
impl ReportsService for ReportsGrpc {
    type DownloadAttachmentStream = attachments::DownloadStream;

    async fn create_report(&self, request: Request<CreateReportRequest>) -> Result<Response<Report>, Status> {
        reports::create(self, request).await
    }

    async fn list_my_reports(
        &self,
        request: Request<ListMyReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        reports::list_mine(self, request).await
    }

    async fn get_report(&self, request: Request<GetReportRequest>) -> Result<Response<Report>, Status> {
        reports::get(self, request).await
    }

    async fn update_report(&self, request: Request<UpdateReportRequest>) -> Result<Response<Report>, Status> {
        reports::update(self, request).await
    }

    async fn delete_report(
        &self,
        request: Request<DeleteReportRequest>,
    ) -> Result<Response<DeleteReportResponse>, Status> {
        reports::delete(self, request).await
    }

    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<UploadAttachmentRequest>>,
    ) -> Result<Response<Attachment>, Status> {
        attachments::upload(&self.attachments, &self.verifier, request).await
    }

    async fn download_attachment(
        &self,
        request: Request<DownloadAttachmentRequest>,
    ) -> Result<Response<Self::DownloadAttachmentStream>, Status> {
        attachments::download(&self.attachments, &self.verifier, request).await
    }

    async fn list_moderation_queue(
        &self,
        request: Request<ListModerationQueueRequest>,
    ) -> Result<Response<ListModerationQueueResponse>, Status> {
        moderation::queue(self, request).await
    }

    async fn move_report_status(
        &self,
        request: Request<MoveReportStatusRequest>,
    ) -> Result<Response<ModeratedReport>, Status> {
        moderation::move_status(self, request).await
    }

    async fn list_nearby_alerts(
        &self,
        request: Request<ListNearbyAlertsRequest>,
    ) -> Result<Response<ListNearbyAlertsResponse>, Status> {
        let r = request.into_inner();
        let query = NearbyQuery::new(r.lat, r.lng, r.radius_m, r.limit)
            .map_err(|e| service_kit::grpc::invalid_field(e.field(), &e.to_string()))?;
        let alerts = self
            .reports
            .nearby_alerts(&query)
            .await
            .map_err(StoreError::into_status)?;
        Ok(Response::new(ListNearbyAlertsResponse {
            alerts: alerts.into_iter().map(alert_pb).collect(),
        }))
    }
}
