//! Auth routes: register, login, refresh, logout, logout-all, and the caller's profile.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use serde::{Deserialize, Serialize};

use super::{AppState, upstream_request};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson};
use crate::error::ApiError;

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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
    pub device: DeviceBody,
    pub captcha_token: Option<String>,
    pub totp_code: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
    /// The device the app runs on. A retry of the same refresh from the same device within a few
    /// seconds (a lost response) returns the same new pair instead of ending the session.
    pub device_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    /// Optional: the session of this refresh token ends too.
    pub refresh_token: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensBody {
    pub access_token: String,
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
    pub income_tier: Option<String>,
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    pub user: UserBody,
    pub tokens: TokensBody,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefreshedBody {
    pub tokens: TokensBody,
}

fn tokens(t: Option<pb::Tokens>) -> TokensBody {
    let t = t.unwrap_or_default();
    TokensBody {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: "Bearer",
        expires_in: t.expires_in,
    }
}

fn user(u: Option<pb::User>) -> UserBody {
    let u = u.unwrap_or_default();
    UserBody {
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
        first_name: u.first_name,
        last_name: u.last_name,
        income_tier: Some(u.income_tier).filter(|t| !t.is_empty()),
        roles: u.roles,
        mfa_enabled: u.mfa_enabled,
        created_at: u
            .created_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
            .unwrap_or(DateTime::UNIX_EPOCH),
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

fn client(state: &AppState) -> AuthServiceClient<tonic::transport::Channel> {
    AuthServiceClient::new(state.upstreams.auth.clone())
}

fn upstream(e: tonic::Status) -> ApiError {
    ApiError::from_status("auth", &e)
}

/// Create an account; answers with the user and a first session's tokens.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses(
        (status = 201, description = "Account created", body = SessionBody),
        (status = 400, description = "A field is invalid (details name it), or the password is too common", body = crate::error::ErrorBody),
        (status = 409, description = "An account with this e-mail exists", body = crate::error::ErrorBody),
    ))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::RegisterRequest {
        email: b.email,
        password: b.password,
        first_name: b.first_name,
        last_name: b.last_name,
        income_tier: b.income_tier.unwrap_or_default(),
        captcha_token: b.captcha_token.unwrap_or_default(),
        device: b.device.map(device),
    };
    let r = client(&state)
        .register(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Created().json(SessionBody {
        user: user(r.user),
        tokens: tokens(r.tokens),
    }))
}

/// Log in with e-mail and password. Unknown e-mail and wrong password give the same answer.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = SessionBody),
        (status = 401, description = "INVALID_CREDENTIALS", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::LoginRequest {
        email: b.email,
        password: b.password,
        device: Some(device(b.device)),
        captcha_token: b.captcha_token.unwrap_or_default(),
        totp_code: b.totp_code.unwrap_or_default(),
    };
    let r = client(&state)
        .login(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Ok().json(SessionBody {
        user: user(r.user),
        tokens: tokens(r.tokens),
    }))
}

/// Spend a refresh token for a new pair. Presenting a spent token again ends its session
/// (401 TOKEN_REUSED), except for a retry from the same device within a few seconds.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens; the old refresh token is spent", body = RefreshedBody),
        (status = 401, description = "UNAUTHENTICATED, TOKEN_REUSED, TOKEN_REVOKED or TOKEN_EXPIRED", body = crate::error::ErrorBody),
    ))]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::RefreshRequest {
        refresh_token: b.refresh_token,
        device_id: b.device_id.unwrap_or_default(),
    };
    let r = client(&state)
        .refresh(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Ok().json(RefreshedBody {
        tokens: tokens(Some(r)),
    }))
}

/// End this session; the access token stops working at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body(content = LogoutBody, description = "Optional"),
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn logout(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    body: Option<BoundedJson<LogoutBody>>,
) -> Result<HttpResponse, ApiError> {
    let refresh_token = body.and_then(|b| b.into_inner().refresh_token).unwrap_or_default();
    let message = pb::LogoutRequest { refresh_token };
    client(&state)
        .logout(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

/// End every session of the caller.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "All sessions ended"), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn logout_all(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    client(&state)
        .logout_all(upstream_request(&req, pb::LogoutAllRequest {}, Some(&auth)))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Profile", body = UserBody), (status = 401, description = "Not authenticated", body = crate::error::ErrorBody)))]
pub async fn me(req: HttpRequest, auth: Authenticated, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let u = client(&state)
        .get_me(upstream_request(&req, pb::GetMeRequest {}, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Ok().json(user(Some(u))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// low | lower_middle | middle | upper_middle | high; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub income_tier: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Change names or income tier.
#[utoipa::path(patch, path = "/v1/me", tag = "auth", request_body = UpdateMeBody, security(("bearer" = [])),
    responses((status = 200, description = "Updated profile", body = UserBody), (status = 400, description = "A field is invalid", body = crate::error::ErrorBody)))]
pub async fn update_me(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    body: BoundedJson<UpdateMeBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let message = pb::UpdateMeRequest {
        first_name: b.first_name,
        last_name: b.last_name,
        income_tier: b.income_tier.map(Option::unwrap_or_default),
    };
    let u = client(&state)
        .update_me(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Ok().json(user(Some(u))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    pub current_password: String,
    /// 12..128 characters, not a common password.
    pub new_password: String,
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
    client(&state)
        .change_password(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub platform: String,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub trusted: bool,
    /// 0..100
    pub risk_score: u32,
    /// The device of the calling session.
    pub current: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
    /// Always null: a user has few devices.
    pub next_cursor: Option<String>,
}

/// The devices the caller has logged in from, most recent first.
#[utoipa::path(get, path = "/v1/me/devices", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Known devices", body = DeviceList)))]
pub async fn devices(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let r = client(&state)
        .list_devices(upstream_request(&req, pb::ListDevicesRequest {}, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
    let time = |t: Option<prost_types::Timestamp>| {
        t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
            .unwrap_or(DateTime::UNIX_EPOCH)
    };
    let items = r
        .devices
        .into_iter()
        .map(|d| DeviceView {
            device_id: d.device_id,
            platform: d.platform,
            model: Some(d.model).filter(|m| !m.is_empty()),
            os_version: Some(d.os_version).filter(|v| !v.is_empty()),
            first_seen_at: time(d.first_seen_at),
            last_seen_at: time(d.last_seen_at),
            trusted: d.trusted,
            risk_score: d.risk_score,
            current: d.current,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeviceList {
        items,
        next_cursor: None,
    }))
}

/// Forget a device; its sessions end at once. 404 for a device the caller does not have.
#[utoipa::path(delete, path = "/v1/me/devices/{device_id}", tag = "auth", security(("bearer" = [])),
    params(("device_id" = String, Path, description = "As listed by GET /v1/me/devices")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such device", body = crate::error::ErrorBody)))]
pub async fn remove_device(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::RemoveDeviceRequest {
        device_id: path.into_inner(),
    };
    client(&state)
        .remove_device(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

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

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown only now: each logs in once in place of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// Start TOTP enrollment (RFC 6238): a new seed, active once confirmed with a code.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Seed to add to an authenticator app", body = TotpEnrollment),
        (status = 409, description = "MFA is already on", body = crate::error::ErrorBody)))]
pub async fn mfa_enroll(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let e = client(&state)
        .mfa_enroll(upstream_request(&req, pb::MfaEnrollRequest {}, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
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
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    body: BoundedJson<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::MfaCodeRequest {
        code: body.into_inner().code,
    };
    let r = client(&state)
        .mfa_confirm(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(HttpResponse::Ok().json(RecoveryCodes {
        recovery_codes: r.recovery_codes,
    }))
}

/// Turn MFA off with a current TOTP code or a recovery code.
#[utoipa::path(delete, path = "/v1/me/mfa/totp", tag = "auth", request_body = CodeBody, security(("bearer" = [])),
    responses((status = 204, description = "MFA off"), (status = 401, description = "MFA_REQUIRED: the code is not valid", body = crate::error::ErrorBody)))]
pub async fn mfa_disable(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
    body: BoundedJson<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::MfaCodeRequest {
        code: body.into_inner().code,
    };
    client(&state)
        .mfa_disable(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The token from the e-mail's link.
    pub token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequestBody {
    pub email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmBody {
    pub token: String,
    /// 12..128 characters, not a common password.
    pub new_password: String,
}

/// Confirm the e-mail address with the token mailed at registration (single use, 24 h).
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenBody,
    responses((status = 204, description = "Address confirmed"),
        (status = 400, description = "The token is invalid, expired or already used", body = crate::error::ErrorBody)))]
pub async fn verify_email(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: BoundedJson<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::VerifyEmailRequest {
        token: body.into_inner().token,
    };
    client(&state)
        .verify_email(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
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
    client(&state)
        .request_password_reset(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?;
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
    client(&state)
        .confirm_password_reset(upstream_request(&req, message, None))
        .await
        .map_err(upstream)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changed_fields: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Admin: the identity service's audit log, newest first (other services' logs join this list
/// with their own issues).
#[utoipa::path(get, path = "/v1/admin/audit-logs", tag = "auth", security(("bearer" = [])),
    params(
        ("user_id" = Option<String>, Query, description = "Only this actor"),
        ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<u32>, Query, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, description = "A page", body = AuditPage),
        (status = 403, description = "Not an administrator", body = crate::error::ErrorBody)))]
pub async fn audit_logs(
    req: HttpRequest,
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth.require_role("admin")?;
    let q = crate::query::StrictQuery::parse(req.query_string(), &["user_id", "from", "to", "limit", "cursor"])?;
    let time = |name: &str| -> Result<Option<prost_types::Timestamp>, ApiError> {
        Ok(q.optional::<DateTime<Utc>>(name, "an RFC 3339 time")?
            .map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            }))
    };
    let message = pb::ListAuditLogsRequest {
        user_id: q.optional("user_id", "a UUID")?.unwrap_or_default(),
        from: time("from")?,
        to: time("to")?,
        limit: q.optional("limit", "an integer between 1 and 100")?.unwrap_or(0),
        cursor: q.optional("cursor", "a cursor")?.unwrap_or_default(),
    };
    let r = client(&state)
        .list_audit_logs(upstream_request(&req, message, Some(&auth)))
        .await
        .map_err(upstream)?
        .into_inner();
    let opt = |s: String| Some(s).filter(|s| !s.is_empty());
    let items = r
        .items
        .into_iter()
        .map(|a| AuditEntry {
            id: a.id,
            actor_id: opt(a.actor_id),
            action: a.action,
            resource: a.resource,
            resource_id: opt(a.resource_id),
            ip: opt(a.ip),
            user_agent: opt(a.user_agent),
            changed_fields: a.changed_fields,
            created_at: a
                .created_at
                .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
                .unwrap_or(DateTime::UNIX_EPOCH),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage {
        items,
        next_cursor: opt(r.next_cursor),
    }))
}

// Outer bounds at the edge: no string of a body reaches a service at any length. The services
// apply the precise rules (e.g. passwords of 12..128 characters) with their own messages.
const EMAIL: usize = 320;
const PASSWORD: usize = 1024;
const NAME: usize = 200;
const TOKEN: usize = 1024;
const CAPTCHA: usize = 8192;
const CODE: usize = 64;

impl DeviceBody {
    fn strings(&self) -> [(&'static str, Option<&str>, usize); 4] {
        [
            ("device.device_id", Some(&self.device_id), 256),
            ("device.platform", Some(&self.platform), 32),
            ("device.model", self.model.as_deref(), NAME),
            ("device.os_version", self.os_version.as_deref(), 100),
        ]
    }
}

impl Bounded for RegisterBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        let mut out = vec![
            ("email", Some(self.email.as_str()), EMAIL),
            ("password", Some(&self.password), PASSWORD),
            ("first_name", Some(&self.first_name), NAME),
            ("last_name", Some(&self.last_name), NAME),
            ("income_tier", self.income_tier.as_deref(), 32),
            ("captcha_token", self.captcha_token.as_deref(), CAPTCHA),
        ];
        out.extend(self.device.iter().flat_map(DeviceBody::strings));
        out
    }
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

impl Bounded for RefreshBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("refresh_token", Some(self.refresh_token.as_str()), TOKEN),
            ("device_id", self.device_id.as_deref(), 256),
        ]
    }
}

impl Bounded for LogoutBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("refresh_token", self.refresh_token.as_deref(), TOKEN)]
    }
}

impl Bounded for UpdateMeBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("first_name", self.first_name.as_deref(), NAME),
            ("last_name", self.last_name.as_deref(), NAME),
            ("income_tier", self.income_tier.as_ref().and_then(Option::as_deref), 32),
        ]
    }
}

impl Bounded for ChangePasswordBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("current_password", Some(self.current_password.as_str()), PASSWORD),
            ("new_password", Some(&self.new_password), PASSWORD),
        ]
    }
}

impl Bounded for CodeBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("code", Some(self.code.as_str()), CODE)]
    }
}

impl Bounded for TokenBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("token", Some(self.token.as_str()), TOKEN)]
    }
}

impl Bounded for ResetRequestBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![("email", Some(self.email.as_str()), EMAIL)]
    }
}

impl Bounded for ResetConfirmBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("token", Some(self.token.as_str()), TOKEN),
            ("new_password", Some(&self.new_password), PASSWORD),
        ]
    }
}
