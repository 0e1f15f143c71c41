//! `reports.v1.ReportsService` over tonic: decode into domain values, call the use case, map
//! errors through service-kit's one table.

use proto::reports::v1::reports_service_server::ReportsService;
use proto::reports::v1::{ListNearbyAlertsRequest, ListNearbyAlertsResponse, NearbyAlert};
use service_kit::proto_time::some_timestamp;
use service_kit::store_error::StoreError;
use tonic::{Request, Response, Status};

use crate::domain::{Alert, NearbyQuery};
use crate::service::Reports;

pub struct ReportsGrpc {
    reports: Reports,
}

impl ReportsGrpc {
    pub fn new(reports: Reports) -> Self {
        Self { reports }
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
