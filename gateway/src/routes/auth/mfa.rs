//! Two-factor authentication by TOTP (RFC 6238): enroll, confirm, turn off.

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CODE, PASSWORD};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::routes::call::AuthCall;

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    /// Base32 seed, for typing into an authenticator app by hand.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub otpauth_uri: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The 6-digit code the authenticator app shows now.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The current password (a wrong one counts as a failed login).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

impl Bounded for EnrollBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("password", Some(self.password.as_str()), PASSWORD)]
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// The current password (a wrong one counts as a failed login).
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
    /// A current TOTP code or an unused recovery code.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

impl Bounded for DisableBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("password", Some(self.password.as_str()), PASSWORD),
            ("code", Some(self.code.as_str()), CODE),
        ]
    }
}

impl Bounded for CodeBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("code", Some(self.code.as_str()), CODE)]
    }
}

impl From<CodeBody> for pb::MfaCodeRequest {
    fn from(b: CodeBody) -> Self {
        Self { code: b.code }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown only now: each logs in once in place of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// Start TOTP enrollment (RFC 6238) with the current password: a new seed, active once
/// confirmed with a code.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "auth", request_body = EnrollBody, security(("bearer" = [])),
    responses((status = 200, description = "Seed to add to an authenticator app", body = TotpEnrollment),
        (status = 400, description = "VALIDATION_FAILED (an empty password names `password`), MALFORMED_JSON, or CAPTCHA_REQUIRED after failed passwords", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated, or INVALID_CREDENTIALS: the password is wrong (counted as a failed login)", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 409, description = "MFA is already on", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong passwords", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn mfa_enroll(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<EnrollBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::MfaEnrollRequest {
        password: body.into_inner().password,
    };
    let e = auth_service
        .by(&auth)
        .send(message, async |c, m| c.mfa_enroll(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(TotpEnrollment {
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
    }))
}

/// Confirm enrollment with a first code; MFA is on from now, and login needs `totp_code`. Every
/// other session ends, and the user is told by mail.
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "auth", request_body = CodeBody, security(("bearer" = [])),
    responses((status = 200, description = "MFA on; recovery codes shown once", body = RecoveryCodes),
        (status = 400, description = "VALIDATION_FAILED (the code is not 6 digits) or MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated, or MFA_REQUIRED: the code is not valid", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 409, description = "CONFLICT: no enrollment started, or MFA already on", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong codes (counted with the codes of login)", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn mfa_confirm(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::MfaCodeRequest::from(body.into_inner());
    let r = auth_service
        .by(&auth)
        .send(message, async |c, m| c.mfa_confirm(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(RecoveryCodes {
        recovery_codes: r.recovery_codes,
    }))
}

/// Turn MFA off with the current password and a current TOTP code or a recovery code. Every other
/// session ends, and the user is told by mail.
#[utoipa::path(delete, path = "/v1/me/mfa/totp", tag = "auth", request_body = DisableBody, security(("bearer" = [])),
    responses((status = 204, description = "MFA off"),
        (status = 400, description = "VALIDATION_FAILED (an empty password names `password`), MALFORMED_JSON, or CAPTCHA_REQUIRED after failed passwords", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated; INVALID_CREDENTIALS (the password is wrong, counted as a failed login); MFA_REQUIRED (the code is not valid)", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 409, description = "CONFLICT: MFA is not on", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong passwords or codes", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn mfa_disable(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<DisableBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let message = pb::MfaDisableRequest {
        password: body.password,
        code: body.code,
    };
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.mfa_disable(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
