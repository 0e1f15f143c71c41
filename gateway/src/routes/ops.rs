//! Operations routes: liveness, readiness, the OpenAPI document, maintenance windows.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi as _;

use crate::state::AppState;

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = crate::openapi::Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(service_kit::admin::health_body(state.started))
}

/// Readiness. `ready`: every dependency answers; `degraded` (still 200): some do not, and routes
/// that need them answer 503 while the rest work; 503 `draining` while shutting down, or
/// `unavailable` when no dependency answers at all.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready or degraded", body = crate::openapi::Ready),
        (status = 503, description = "Draining, or nothing behind the gateway answers", body = crate::openapi::Ready),
    ))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let report = state.upstreams.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(report.body)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(crate::openapi::ApiDoc::openapi())
}

/// Scheduled maintenance: the windows in force and upcoming, earliest first (past ones are
/// dropped). During a window every other route but these operational ones answers 503
/// `MAINTENANCE` with `Retry-After` (seconds until it ends) and the window's message.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "Current and upcoming maintenance windows. Cached for 30 seconds.",
        body = crate::maintenance::Status,
        headers(("Cache-Control" = String, description = "public, max-age=30")))))]
pub async fn status(maintenance: web::Data<crate::maintenance::Maintenance>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=30"))
        .json(maintenance.status(chrono::Utc::now()))
}

/// `/v1/status` in the route table (GET only, 405 with `Allow` otherwise).
pub fn configure_status(cfg: &mut web::ServiceConfig) {
    cfg.service(super::only(super::GET, "/v1/status", status));
}
