//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers' annotations.

use serde::Serialize;
use utoipa::OpenApi;

/// Liveness body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always "healthy".
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
}

/// Readiness body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// ready | degraded | draining | unavailable
    pub status: String,
    /// One boolean per dependency: auth, reports, analytics, and redis when configured.
    /// Absent while draining.
    pub checks: Option<std::collections::BTreeMap<String, bool>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Incident reporting and budgeting API",
        description = "The REST contract of the mobile apps. Every error has one shape (ErrorBody); \
            every response carries X-Request-Id. Unknown query parameters and repeated parameters are refused. \
            Rate-limited responses carry RateLimit-Policy and RateLimit (IETF draft); a refusal is 429 \
            RATE_LIMIT_EXCEEDED with Retry-After. Every string of a JSON body has an upper bound (400 \
            VALIDATION_FAILED naming the field); a body larger than the limit is 413 PAYLOAD_TOO_LARGE, \
            and one that does not arrive in time is 408 REQUEST_TIMEOUT. Over HTTP/1.1, request headers \
            that do not arrive in time are 408 REQUEST_TIMEOUT, more than 96 headers 431 \
            HEADERS_TOO_LARGE, and bytes that are not HTTP 400 BAD_REQUEST, in the same shape.",
    ),
    paths(
        crate::routes::ops::health,
        crate::routes::ops::ready,
        crate::routes::ops::openapi,
        crate::routes::jwks::jwks,
        crate::routes::alerts::nearby,
        crate::routes::auth::register,
        crate::routes::auth::login,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::logout_all,
        crate::routes::auth::verify_email,
        crate::routes::auth::password_reset,
        crate::routes::auth::password_reset_confirm,
        crate::routes::auth::me,
        crate::routes::auth::update_me,
        crate::routes::auth::change_password,
        crate::routes::auth::devices,
        crate::routes::auth::remove_device,
        crate::routes::auth::mfa_enroll,
        crate::routes::auth::mfa_confirm,
        crate::routes::auth::mfa_disable,
        crate::routes::auth::audit_logs,
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::error::FieldIssue)),
    tags(
        (name = "operations", description = "Liveness, readiness, this document"),
        (name = "auth", description = "Accounts and tokens (auth-service)"),
        (name = "reports", description = "Incident reports and alerts (reports-service)"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the protected routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
