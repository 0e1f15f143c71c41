//! REST handlers: decode and validate the request, call one service, shape the answer.

pub mod alerts;
pub mod attachments;
pub mod auth;
pub mod call;
pub mod jwks;
pub mod ops;
pub mod reports;

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

/// Every route of the public API. A known path with another method answers 405 with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(only(GET, "/health", ops::health))
        .service(only(GET, "/ready", ops::ready))
        .service(only(GET, "/openapi.json", ops::openapi))
        .service(only(GET, "/.well-known/jwks.json", jwks::jwks))
        .service(only(GET, "/v1/alerts/nearby", alerts::nearby))
        .service(
            web::resource("/v1/reports")
                .route(web::get().to(reports::list))
                .route(web::post().to(reports::create))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, POST"))),
        )
        .service(
            web::resource("/v1/reports/{id}")
                .route(web::get().to(reports::get))
                .route(web::patch().to(reports::update))
                .route(web::delete().to(reports::delete))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, PATCH, DELETE"))),
        )
        .service(only(GET, "/v1/admin/reports", reports::queue))
        .service(only(POST, "/v1/admin/reports/{id}/status", reports::move_status))
        .service(only(POST, "/v1/reports/{id}/attachments", attachments::upload))
        .service(only(
            GET,
            "/v1/reports/{id}/attachments/{attachment_id}",
            attachments::download,
        ))
        .service(only(POST, "/v1/auth/register", auth::register))
        .service(only(POST, "/v1/auth/login", auth::login))
        .service(only(POST, "/v1/auth/refresh", auth::refresh))
        .service(only(POST, "/v1/auth/logout", auth::logout))
        .service(only(POST, "/v1/auth/logout-all", auth::logout_all))
        .service(only(POST, "/v1/auth/verify-email", auth::verify_email))
        .service(only(POST, "/v1/auth/password-reset", auth::password_reset))
        .service(only(
            POST,
            "/v1/auth/password-reset/confirm",
            auth::password_reset_confirm,
        ))
        .service(
            web::resource("/v1/me")
                .route(web::get().to(auth::me))
                .route(web::patch().to(auth::update_me))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, PATCH"))),
        )
        .service(only(POST, "/v1/me/password", auth::change_password))
        .service(only(GET, "/v1/me/devices", auth::devices))
        .service(only(GET, "/v1/admin/audit-logs", auth::audit_logs))
        .service(
            web::resource("/v1/me/mfa/totp")
                .route(web::post().to(auth::mfa_enroll))
                .route(web::delete().to(auth::mfa_disable))
                .default_service(web::to(|| method_not_allowed("POST, DELETE"))),
        )
        .service(only(POST, "/v1/me/mfa/totp/confirm", auth::mfa_confirm))
        .service(
            web::resource("/v1/me/devices/{device_id}")
                .route(web::delete().to(auth::remove_device))
                .default_service(web::to(|| method_not_allowed("DELETE"))),
        );
}

/// A method's route constructor, with the `Allow` header of a resource that has only it.
type Method = (fn() -> actix_web::Route, &'static str);
const GET: Method = (web::get, "GET, HEAD");
const POST: Method = (web::post, "POST");

/// A resource with one method; any other answers 405 with `Allow`.
fn only<F, Args>((route, allow): Method, path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(route().to(handler))
        .default_service(web::to(move || method_not_allowed(allow)))
}

async fn method_not_allowed(allow: &'static str) -> Result<HttpResponse, actix_web::Error> {
    let mut res = actix_web::ResponseError::error_response(&ApiError::method_not_allowed());
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    Ok(res)
}

/// A list's `limit` query parameter: 1..=100 as documented, or 0 (the services' "default") when
/// absent. Checked here so that 0 or 101 is refused whatever the service would make of it.
pub fn page_limit(q: &crate::query::StrictQuery) -> Result<u32, ApiError> {
    const EXPECTED: &str = "an integer between 1 and 100";
    match q.optional::<u32>("limit", EXPECTED)? {
        None => Ok(0),
        Some(n @ 1..=100) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", &format!("must be {EXPECTED}"))),
    }
}

/// A time a service sent; the epoch when it sent none (never, for the fields read with it).
pub(crate) fn time(t: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    service_kit::proto_time::from_timestamp(t).unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

/// An optional text a service sends as "" when absent.
pub(crate) fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// Unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
