//! `GET /v1/alerts/nearby`: recent moderated incidents near a point, coarsened.

use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use proto::reports::v1::ListNearbyAlertsRequest;
use serde::Serialize;

use super::call::ReportsCall;
use crate::error::ApiError;
use crate::query::StrictQuery;

#[derive(Serialize, utoipa::ToSchema)]
pub struct NearbyAlerts {
    pub items: Vec<NearbyAlert>,
    /// Always null: results are bounded by radius and `limit`.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NearbyAlert {
    /// harassment | assault | theft | vandalism | discrimination | stalking | cyber | other
    pub category: String,
    /// low | medium | high | critical
    pub severity: String,
    /// Truncated to the hour.
    pub occurred_at: DateTime<Utc>,
    pub location: CoarseLocation,
}

/// The centre of a grid cell of 0.01 degree (about 1.1 km), never the reported point.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CoarseLocation {
    pub lat: f64,
    pub lng: f64,
}

/// Recent incidents a moderator has accepted, near a point, newest first. No reporter identity,
/// no report id, no text; location coarsened to a grid cell, time to the hour. Public, so people
/// can see what happens around them before signing up.
#[utoipa::path(get, path = "/v1/alerts/nearby", tag = "reports",
    params(
        ("lat" = f64, Query, minimum = -90, maximum = 90, description = "Latitude, -90..=90"),
        ("lng" = f64, Query, minimum = -180, maximum = 180, description = "Longitude, -180..=180"),
        ("radius_m" = u32, Query, minimum = 1, maximum = 5000, description = "Metres, 1..=5000"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1..=100, default 20"),
    ),
    responses(
        (status = 200, description = "Alerts, newest first", body = NearbyAlerts),
        (status = 400, description = "A parameter is missing, repeated, unknown or out of range", body = crate::error::ErrorBody),
        (status = 503, description = "reports-service is unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn nearby(req: HttpRequest, reports_service: ReportsCall) -> Result<HttpResponse, ApiError> {
    let q = StrictQuery::parse(req.query_string(), &["lat", "lng", "radius_m", "limit"])?;
    let message = ListNearbyAlertsRequest {
        lat: q.required("lat", "a number between -90 and 90")?,
        lng: q.required("lng", "a number between -180 and 180")?,
        radius_m: q.required("radius_m", "an integer between 1 and 5000")?,
        limit: super::page_limit(&q)?,
    };
    let alerts = reports_service
        .send(message, async |c, m| c.list_nearby_alerts(m).await)
        .await?
        .alerts;
    let items = alerts
        .into_iter()
        .map(|a| NearbyAlert {
            category: a.category,
            severity: a.severity,
            occurred_at: super::time(a.occurred_at.as_ref()),
            location: CoarseLocation { lat: a.lat, lng: a.lng },
        })
        .collect();
    Ok(HttpResponse::Ok().json(NearbyAlerts {
        items,
        next_cursor: None,
    }))
}
