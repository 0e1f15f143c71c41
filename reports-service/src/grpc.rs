//! `reports.v1.ReportsService` over tonic: decode, validate, call the store, map errors.

use chrono::Utc;
use proto::reports::v1::reports_service_server::ReportsService;
use proto::reports::v1::{ListNearbyAlertsRequest, ListNearbyAlertsResponse, NearbyAlert};
use service_kit::db::Pool;
use tonic::{Request, Response, Status};

use crate::alerts::{ALERT_WINDOW, Alert, NearbyQuery};
use crate::store::{self, StoreError};

pub struct ReportsGrpc {
    pool: Pool,
}

impl ReportsGrpc {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn status_of(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(cause) => {
            tracing::warn!(error = format!("{cause:#}"), "database unavailable");
            Status::unavailable("database unavailable")
        }
        StoreError::Unexpected(cause) => {
            tracing::error!(error = format!("{cause:#}"), "unexpected store error");
            Status::internal("internal error")
        }
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
        let rows = store::nearby_alerts(&self.pool, &query, Utc::now() - ALERT_WINDOW)
            .await
            .map_err(status_of)?;
        let alerts = rows
            .into_iter()
            .map(Alert::from)
            .map(|a| NearbyAlert {
                category: a.category,
                severity: a.severity,
                occurred_at: Some(prost_types::Timestamp {
                    seconds: a.occurred_at.timestamp(),
                    nanos: 0,
                }),
                lat: a.lat,
                lng: a.lng,
            })
            .collect();
        Ok(Response::new(ListNearbyAlertsResponse { alerts }))
    }
}
