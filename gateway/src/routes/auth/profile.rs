//! The caller's profile, and the confirmation of its e-mail address.

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::Deserialize;

use super::{INCOME_TIER, NAME, TOKEN, UserBody, user};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::routes::call::AuthCall;

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Profile", body = UserBody), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn me(auth: Authenticated, auth_service: AuthCall) -> Result<HttpResponse, ApiError> {
    let u = auth_service
        .by(&auth)
        .send(pb::GetMeRequest {}, async |c, m| c.get_me(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(user(Some(u))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeBody {
    #[schema(value_type = Option<super::PersonName>)]
    pub first_name: Option<String>,
    #[schema(value_type = Option<super::PersonName>)]
    pub last_name: Option<String>,
    /// null clears it.
    #[serde(default, deserialize_with = "crate::body::present")]
    #[schema(value_type = Option<super::IncomeTier>)]
    pub income_tier: Option<Option<String>>,
}

impl Bounded for UpdateMeBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("first_name", self.first_name.as_deref(), NAME),
            ("last_name", self.last_name.as_deref(), NAME),
            (
                "income_tier",
                self.income_tier.as_ref().and_then(Option::as_deref),
                INCOME_TIER,
            ),
        ]
    }
}

impl From<UpdateMeBody> for pb::UpdateMeRequest {
    fn from(b: UpdateMeBody) -> Self {
        Self {
            first_name: b.first_name,
            last_name: b.last_name,
            income_tier: b.income_tier.map(Option::unwrap_or_default),
        }
    }
}

/// Change names or income tier.
#[utoipa::path(patch, path = "/v1/me", tag = "auth", request_body = UpdateMeBody, security(("bearer" = [])),
    responses((status = 200, description = "Updated profile", body = UserBody), (status = 400, description = "A field is invalid", body = crate::error::ErrorBody)))]
pub async fn update_me(
    auth: Authenticated,
    auth_service: AuthCall,
    body: BoundedJson<UpdateMeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // The service reads "" as "clear it"; the contract says null does that.
    if body.income_tier.as_ref().is_some_and(|t| t.as_deref() == Some("")) {
        return Err(ApiError::validation(
            "income_tier",
            "must be one of low, lower_middle, middle, upper_middle, high, or null",
        ));
    }
    let message = pb::UpdateMeRequest::from(body);
    let u = auth_service
        .by(&auth)
        .send(message, async |c, m| c.update_me(m).await)
        .await?;
    Ok(HttpResponse::Ok().json(user(Some(u))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The token from the e-mail's link.
    #[schema(min_length = 1, max_length = 1024)]
    pub token: String,
}

impl Bounded for TokenBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("token", Some(self.token.as_str()), TOKEN)]
    }
}

impl From<TokenBody> for pb::VerifyEmailRequest {
    fn from(b: TokenBody) -> Self {
        Self { token: b.token }
    }
}

/// Confirm the e-mail address with the token mailed at registration (single use, 24 h).
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenBody,
    responses((status = 204, description = "Address confirmed"),
        (status = 400, description = "The token is invalid, expired or already used", body = crate::error::ErrorBody)))]
pub async fn verify_email(auth_service: AuthCall, body: BoundedJson<TokenBody>) -> Result<HttpResponse, ApiError> {
    let message = pb::VerifyEmailRequest::from(body.into_inner());
    auth_service.send(message, async |c, m| c.verify_email(m).await).await?;
    Ok(HttpResponse::NoContent().finish())
}
