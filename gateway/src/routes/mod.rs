//! REST handlers: decode and validate the request, call one service, shape the answer.

pub mod alerts;
pub mod auth;
pub mod call;
pub mod jwks;
pub mod ops;

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

/// Every route of the public API. A known path with another method answers 405 with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/health", ops::health))
        .service(get("/ready", ops::ready))
        .service(get("/openapi.json", ops::openapi))
        .service(get("/.well-known/jwks.json", jwks::jwks))
        .service(get("/v1/alerts/nearby", alerts::nearby))
        .service(post("/v1/auth/register", auth::register))
        .service(post("/v1/auth/login", auth::login))
        .service(post("/v1/auth/refresh", auth::refresh))
        .service(post("/v1/auth/logout", auth::logout))
        .service(post("/v1/auth/logout-all", auth::logout_all))
        .service(post("/v1/auth/verify-email", auth::verify_email))
        .service(post("/v1/auth/password-reset", auth::password_reset))
        .service(post("/v1/auth/password-reset/confirm", auth::password_reset_confirm))
        .service(
            web::resource("/v1/me")
                .route(web::get().to(auth::me))
                .route(web::patch().to(auth::update_me))
                .default_service(web::to(|| method_not_allowed("GET, HEAD, PATCH"))),
        )
        .service(post("/v1/me/password", auth::change_password))
        .service(get("/v1/me/devices", auth::devices))
        .service(get("/v1/admin/audit-logs", auth::audit_logs))
        .service(
            web::resource("/v1/me/mfa/totp")
                .route(web::post().to(auth::mfa_enroll))
                .route(web::delete().to(auth::mfa_disable))
                .default_service(web::to(|| method_not_allowed("POST, DELETE"))),
        )
        .service(post("/v1/me/mfa/totp/confirm", auth::mfa_confirm))
        .service(
            web::resource("/v1/me/devices/{device_id}")
                .route(web::delete().to(auth::remove_device))
                .default_service(web::to(|| method_not_allowed("DELETE"))),
        );
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(|| method_not_allowed("GET, HEAD")))
}

fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|| method_not_allowed("POST")))
}

async fn method_not_allowed(allow: &'static str) -> Result<HttpResponse, actix_web::Error> {
    let mut res = actix_web::ResponseError::error_response(&ApiError::method_not_allowed());
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    Ok(res)
}

/// Unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
