//! REST handlers: decode and validate the request, call one service, shape the answer.

pub mod alerts;
pub mod auth;
pub mod jwks;
pub mod ops;

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

/// The application state of every handler (one per HTTP worker, see `app`).
#[derive(Clone)]
pub struct AppState {
    pub upstreams: crate::upstream::Upstreams,
    pub verifier: service_kit::auth::Verifier,
    pub revocation: crate::revocation::RevocationCheck,
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// False only in benchmarks (`GATEWAY_VERIFY_TOKENS=false`): the services still verify.
    pub verify_tokens: bool,
    pub started: std::time::Instant,
}

/// A call to a service, carrying what the service may want to know about the HTTP request: the
/// request id, the client's address and user agent, and the caller's token when there is one.
/// These are set here only; a client cannot send them.
pub fn upstream_request<T>(
    req: &actix_web::HttpRequest,
    message: T,
    auth: Option<&crate::auth::Authenticated>,
) -> tonic::Request<T> {
    use tonic::metadata::MetadataValue;
    let mut request = tonic::Request::new(message);
    let md = request.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(crate::error::current_request_id()) {
        md.insert("x-request-id", v);
    }
    let client = req
        .app_data::<actix_web::web::Data<AppState>>()
        .and_then(|state| crate::client_ip::of_request(&state.trusted_proxies, req));
    if let Some(ip) = client
        && let Ok(v) = MetadataValue::try_from(ip.to_string())
    {
        md.insert("x-client-ip", v);
    }
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Ok(v) = MetadataValue::try_from(agent.chars().take(256).collect::<String>()) {
        md.insert("x-user-agent", v);
    }
    if let Some(auth) = auth
        && let Ok(v) = MetadataValue::try_from(auth.bearer.as_str())
    {
        md.insert("authorization", v);
    }
    request
}

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
