//! Sessions: register, log in, refresh, log out (this session or all).

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CAPTCHA, CODE, DEVICE_ID, EMAIL, INCOME_TIER, NAME, PASSWORD, TOKEN, TokensBody, UserBody, tokens, user};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;
use crate::routes::call::AuthCall;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// A stable random id the app generates once per install (1..128 characters).
    pub device_id: String,
    /// ios | android | web
    pub platform: String,
    pub model: Option<String>,
    pub os_version: Option<String>,
}

impl DeviceBody {
    fn strings(&self) -> [(&'static str, Option<&str>, usize); 4] {
        [
            ("device.device_id", Some(&self.device_id), DEVICE_ID),
            ("device.platform", Some(&self.platform), 32),
            ("device.model", self.model.as_deref(), NAME),
            ("device.os_version", self.os_version.as_deref(), 100),
        ]
    }
}

fn device(d: DeviceBody) -> pb::Device {
    pb::Device {
        device_id: d.device_id,
        platform: d.platform,
        model: d.model.unwrap_or_default(),
        os_version: d.os_version.unwrap_or_default(),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    /// 12..128 characters, not a common password.
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    /// low | lower_middle | middle | upper_middle | high
    pub income_tier: Option<String>,
    pub captcha_token: Option<String>,
    pub device: Option<DeviceBody>,
}

impl Bounded for RegisterBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        let mut out = vec![
            ("email", Some(self.email.as_str()), EMAIL),
            ("password", Some(&self.password), PASSWORD),
            ("first_name", Some(&self.first_name), NAME),
            ("last_name", Some(&self.last_name), NAME),
            ("income_tier", self.income_tier.as_deref(), INCOME_TIER),
            ("captcha_token", self.captcha_token.as_deref(), CAPTCHA),
        ];
        out.extend(self.device.iter().flat_map(DeviceBody::strings));
        out
    }
}

impl From<RegisterBody> for pb::RegisterRequest {
    fn from(b: RegisterBody) -> Self {
        Self {
            email: b.email,
            password: b.password,
            first_name: b.first_name,
            last_name: b.last_name,
            income_tier: b.income_tier.unwrap_or_default(),
            captcha_token: b.captcha_token.unwrap_or_default(),
            device: b.device.map(device),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
    pub device: DeviceBody,
    pub captcha_token: Option<String>,
    pub totp_code: Option<String>,
}

impl Bounded for LoginBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        let mut out = vec![
            ("email", Some(self.email.as_str()), EMAIL),
            ("password", Some(&self.password), PASSWORD),
            ("captcha_token", self.captcha_token.as_deref(), CAPTCHA),
            ("totp_code", self.totp_code.as_deref(), CODE),
        ];
        out.extend(self.device.strings());
        out
    }
}

impl From<LoginBody> for pb::LoginRequest {
    fn from(b: LoginBody) -> Self {
        Self {
            email: b.email,
            password: b.password,
            device: Some(device(b.device)),
            captcha_token: b.captcha_token.unwrap_or_default(),
            totp_code: b.totp_code.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
    /// The device the app runs on. A retry of the same refresh from the same device within a few
    /// seconds (a lost response) returns the same new pair instead of ending the session.
    pub device_id: Option<String>,
}

impl Bounded for RefreshBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("refresh_token", Some(self.refresh_token.as_str()), TOKEN),
            ("device_id", self.device_id.as_deref(), DEVICE_ID),
        ]
    }
}

impl From<RefreshBody> for pb::RefreshRequest {
    fn from(b: RefreshBody) -> Self {
        Self {
            refresh_token: b.refresh_token,
            device_id: b.device_id.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    /// Optional: the session of this refresh token ends too.
    pub refresh_token: Option<String>,
}

impl Bounded for LogoutBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("refresh_token", self.refresh_token.as_deref(), TOKEN)]
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    pub user: UserBody,
    pub tokens: TokensBody,
}

impl From<pb::SessionResponse> for SessionBody {
    fn from(r: pb::SessionResponse) -> Self {
        Self {
            user: user(r.user),
            tokens: tokens(r.tokens),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefreshedBody {
    pub tokens: TokensBody,
}

/// Create an account; answers with the user and a first session's tokens.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses(
        (status = 201, description = "Account created", body = SessionBody),
        (status = 400, description = "A field is invalid (details name it), or the password is too common", body = crate::error::ErrorBody),
        (status = 409, description = "An account with this e-mail exists", body = crate::error::ErrorBody),
    ))]
pub async fn register(auth_service: AuthCall, body: BoundedJson<RegisterBody>) -> Result<HttpResponse, ApiError> {
    let message = pb::RegisterRequest::from(body.into_inner());
    let r = auth_service.send(message, async |c, m| c.register(m).await).await?;
    Ok(HttpResponse::Created().json(SessionBody::from(r)))
}

/// Log in with e-mail and password. Unknown e-mail and wrong password give the same answer.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = SessionBody),
        (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn login(auth_service: AuthCall, body: BoundedJson<LoginBody>) -> Result<HttpResponse, ApiError> {
    let message = pb::LoginRequest::from(body.into_inner());
    let r = auth_service.send(message, async |c, m| c.login(m).await).await?;
    Ok(HttpResponse::Ok().json(SessionBody::from(r)))
}

/// Spend a refresh token for a new pair. Presenting a spent token again ends its session
/// (401 TOKEN_REUSED), except for a retry from the same device within a few seconds.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens; the old refresh token is spent", body = RefreshedBody),
        (status = 401, description = "UNAUTHENTICATED, TOKEN_REUSED, TOKEN_REVOKED or TOKEN_EXPIRED", body = crate::error::ErrorBody),
    ))]
pub async fn refresh(auth_service: AuthCall, body: BoundedJson<RefreshBody>) -> Result<HttpResponse, ApiError> {
    let message = pb::RefreshRequest::from(body.into_inner());
    let r = auth_service.send(message, async |c, m| c.refresh(m).await).await?;
    Ok(HttpResponse::Ok().json(RefreshedBody {
        tokens: tokens(Some(r)),
    }))
}

/// End this session; the access token stops working at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body(content = LogoutBody, description = "Optional"),
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn logout(
    auth: Authenticated,
    auth_service: AuthCall,
    body: Option<BoundedJson<LogoutBody>>,
) -> Result<HttpResponse, ApiError> {
    let refresh_token = body.and_then(|b| b.into_inner().refresh_token).unwrap_or_default();
    let message = pb::LogoutRequest { refresh_token };
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.logout(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// End every session of the caller.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "All sessions ended"), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn logout_all(auth: Authenticated, auth_service: AuthCall) -> Result<HttpResponse, ApiError> {
    auth_service
        .by(&auth)
        .send(pb::LogoutAllRequest::default(), async |c, m| c.logout_all(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
