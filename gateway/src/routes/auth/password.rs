//! Passwords: change (signed in), and reset by a mailed link.

use actix_web::{HttpRequest, HttpResponse, web};
use proto::auth::v1 as pb;
use serde::Deserialize;

use super::{EMAIL, PASSWORD, TOKEN};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::routes::call::Call;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    pub current_password: String,
    /// 12..128 characters, not a common password.
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

/// Change the password; every other session ends (this one continues).
#[utoipa::path(post, path = "/v1/me/password", tag = "auth", request_body = ChangePasswordBody, security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The new password is refused", body = crate::error::ErrorBody),
        (status = 401, description = "INVALID_CREDENTIALS: the current password is wrong", body = crate::error::ErrorBody),
    ))]
pub async fn change_password(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    body: BoundedJson<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::ChangePasswordRequest {
        current_password: b.current_password,
        new_password: b.new_password,
    };
    Call::auth(&state, &req, Some(&auth))
        .send(message, async |c, m| c.change_password(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequestBody {
    pub email: String,
}

impl Bounded for ResetRequestBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("email", Some(self.email.as_str()), EMAIL)]
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmBody {
    pub token: String,
    /// 12..128 characters, not a common password.
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

/// Ask for a password-reset link. The answer is the same whether or not the address has an account.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = ResetRequestBody,
    responses((status = 202, description = "If the address has an account, a link is on its way")))]
pub async fn password_reset(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<ResetRequestBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::PasswordResetRequest {
        email: body.into_inner().email,
    };
    Call::auth(&state, &req, None)
        .send(message, async |c, m| c.request_password_reset(m).await)
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Choose a new password with the mailed token (single use, 1 h); every session ends.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirmBody,
    responses((status = 204, description = "Password changed; log in again"),
        (status = 400, description = "The token is invalid, expired or used, or the password is refused", body = crate::error::ErrorBody)))]
pub async fn password_reset_confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<ResetConfirmBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::ConfirmPasswordResetRequest {
        token: b.token,
        new_password: b.new_password,
    };
    Call::auth(&state, &req, None)
        .send(message, async |c, m| c.confirm_password_reset(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
