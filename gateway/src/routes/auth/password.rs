//! Passwords: change (signed in), and reset by a mailed link.

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::Deserialize;

use super::{EMAIL, PASSWORD, TOKEN};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::routes::call::AuthCall;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    /// A wrong one counts as a failed login.
    #[schema(max_length = 1024)]
    pub current_password: String,
    /// 12..128 characters, not a common password, not containing the name or the e-mail's local
    /// part.
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

impl Bounded for ChangePasswordBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("current_password", Some(self.current_password.as_str()), PASSWORD),
            ("new_password", Some(&self.new_password), PASSWORD),
        ]
    }
}

impl From<ChangePasswordBody> for pb::ChangePasswordRequest {
    fn from(b: ChangePasswordBody) -> Self {
        Self {
            current_password: b.current_password,
            new_password: b.new_password,
        }
    }
}

/// Change the password; every other session ends (this one continues).
#[utoipa::path(post, path = "/v1/me/password", tag = "auth", request_body = ChangePasswordBody, security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "VALIDATION_FAILED: the new password is refused (details say why); MALFORMED_JSON; CAPTCHA_REQUIRED after failed passwords", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated, or INVALID_CREDENTIALS: the current password is wrong (counted as a failed login)", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong passwords", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn change_password(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ChangePasswordRequest::from(body.into_inner());
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.change_password(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequestBody {
    #[schema(format = Email, max_length = 320)]
    pub email: String,
}

impl Bounded for ResetRequestBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("email", Some(self.email.as_str()), EMAIL)]
    }
}

impl From<ResetRequestBody> for pb::PasswordResetRequest {
    fn from(b: ResetRequestBody) -> Self {
        Self { email: b.email }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmBody {
    #[schema(max_length = 1024)]
    pub token: String,
    /// 12..128 characters, not a common password, not containing the name or the e-mail's local
    /// part.
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

impl Bounded for ResetConfirmBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("token", Some(self.token.as_str()), TOKEN),
            ("new_password", Some(&self.new_password), PASSWORD),
        ]
    }
}

impl From<ResetConfirmBody> for pb::ConfirmPasswordResetRequest {
    fn from(b: ResetConfirmBody) -> Self {
        Self {
            token: b.token,
            new_password: b.new_password,
        }
    }
}

/// Ask for a password-reset link. The answer is the same, and as quick, whether or not the
/// address has an account; an account gets at most one mail per `PASSWORD_RESET_COOLDOWN` (60 s).
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = ResetRequestBody,
    responses((status = 202, description = "If the address has an account, and none was mailed within the cooldown, a link is on its way"),
        (status = 400, description = "VALIDATION_FAILED or MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn password_reset(
    auth_service: AuthCall,
    body: BoundedJson<ResetRequestBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::PasswordResetRequest::from(body.into_inner());
    auth_service
        .send(message, async |c, m| c.request_password_reset(m).await)
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Choose a new password with the mailed token (single use, 1 h); every session ends.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirmBody,
    responses((status = 204, description = "Password changed; log in again"),
        (status = 400, description = "VALIDATION_FAILED: the token is invalid, expired or used, or the password is refused; MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn password_reset_confirm(
    auth_service: AuthCall,
    body: BoundedJson<ResetConfirmBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ConfirmPasswordResetRequest::from(body.into_inner());
    auth_service
        .send(message, async |c, m| c.confirm_password_reset(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
