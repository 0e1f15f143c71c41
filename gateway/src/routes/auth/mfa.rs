//! Two-factor authentication by TOTP (RFC 6238): enroll, confirm, turn off.

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use super::CODE;
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
    /// A 6-digit code from the authenticator app (or, to turn MFA off, a recovery code).
    pub code: String,
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

/// Start TOTP enrollment (RFC 6238): a new seed, active once confirmed with a code.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Seed to add to an authenticator app", body = TotpEnrollment),
        (status = 409, description = "MFA is already on", body = crate::error::ErrorBody)))]
pub async fn mfa_enroll(auth: Authenticated, auth_service: AuthCall) -> Result<HttpResponse, ApiError> {
    let e = auth_service
        .by(&auth)
        .send(pb::MfaEnrollRequest::default(), async |c, m| c.mfa_enroll(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(TotpEnrollment {
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
    }))
}

/// Confirm enrollment with a first code; MFA is on from now, and login needs `totp_code`.
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "auth", request_body = CodeBody, security(("bearer" = [])),
    responses((status = 200, description = "MFA on; recovery codes shown once", body = RecoveryCodes),
        (status = 401, description = "MFA_REQUIRED: the code is not valid", body = crate::error::ErrorBody)))]
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

/// Turn MFA off with a current TOTP code or a recovery code.
#[utoipa::path(delete, path = "/v1/me/mfa/totp", tag = "auth", request_body = CodeBody, security(("bearer" = [])),
    responses((status = 204, description = "MFA off"), (status = 401, description = "MFA_REQUIRED: the code is not valid", body = crate::error::ErrorBody)))]
pub async fn mfa_disable(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::MfaDisableRequest {
        password: String::new(),
        code: body.into_inner().code,
    };
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.mfa_disable(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
