//! REST handlers: decode and validate the request, call one service, shape the answer.

pub mod alerts;
pub mod jwks;
pub mod ops;

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

/// The shared application state of every handler.
pub struct AppState {
    pub upstreams: crate::upstream::Upstreams,
    pub started: std::time::Instant,
}

/// Every route of the public API. A known path with another method answers 405 with `Allow`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/health", ops::health))
        .service(get("/ready", ops::ready))
        .service(get("/openapi.json", ops::openapi))
        .service(get("/.well-known/jwks.json", jwks::jwks))
        .service(get("/v1/alerts/nearby", alerts::nearby));
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(|| async {
            let mut res = actix_web::ResponseError::error_response(&ApiError::method_not_allowed());
            res.headers_mut().insert(
                actix_web::http::header::ALLOW,
                actix_web::http::header::HeaderValue::from_static("GET, HEAD"),
            );
            Ok::<HttpResponse, actix_web::Error>(res)
        }))
}

/// Unknown paths.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
