//! Sessions: register, log in, refresh, log out (this session or all).

use actix_web::HttpResponse;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{CAPTCHA, CODE, DEVICE_ID, EMAIL, INCOME_TIER, NAME, PASSWORD, TOKEN, TokensBody, UserBody, tokens, user};
use crate::auth::Authenticated;
use crate::body::{Bounded, BoundedJson, OptionalJson};
use crate::error::ApiError;
use crate::routes::call::AuthCall;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// A stable random id the app generates once per install (1..128 characters).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub device_id: String,
    #[schema(value_type = Platform)]
    pub platform: String,
    #[schema(max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub model: Option<String>,
    #[schema(max_length = 50, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub os_version: Option<String>,
}

/// The platform an app runs on (the schema of `device.platform`; the body keeps a string so that
/// another value gets the API's VALIDATION_FAILED naming the field).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the values are checked by auth-service
pub enum Platform {
    Ios,
    Android,
    Web,
}

/// Proof that the caller is the account's owner, for changes that a stolen access token alone
/// must not make: the current password, or (with two-step verification on) a current TOTP code
/// or a recovery code. A wrong password counts as a failed login.
#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReauthBody {
    #[schema(min_length = 1, max_length = 1024)]
    pub password: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub totp_code: Option<String>,
}

impl From<ReauthBody> for pb::Reauthentication {
    fn from(b: ReauthBody) -> Self {
        Self {
            password: b.password.unwrap_or_default(),
            totp_code: b.totp_code.unwrap_or_default(),
        }
    }
}

impl Bounded for ReauthBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("password", self.password.as_deref(), PASSWORD),
            ("totp_code", self.totp_code.as_deref(), CODE),
        ]
    }
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
    /// An address with one `@`, a dot in the domain, no spaces (the document states the ASCII
    /// subset; auth-service also takes international addresses).
    #[schema(format = Email, max_length = 254,
        pattern = r"^[\x21-\x3f\x41-\x7e]{1,64}@[\x21-\x2d\x2f-\x3f\x41-\x7e]+(\.[\x21-\x2d\x2f-\x3f\x41-\x7e]+)+$")]
    pub email: String,
    /// 12..128 characters, not a common password, not containing the name or the e-mail's local
    /// part.
    #[schema(min_length = 12, max_length = 128)]
    pub password: String,
    /// 1..100 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub first_name: String,
    /// 1..100 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub last_name: String,
    #[schema(value_type = Option<super::IncomeTier>)]
    pub income_tier: Option<String>,
    #[schema(max_length = 8192)]
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
    #[schema(max_length = 320)]
    pub email: String,
    #[schema(max_length = 1024)]
    pub password: String,
    pub device: DeviceBody,
    /// Needed after a few failures (CAPTCHA_REQUIRED), and to pass a lock with the right password.
    #[schema(max_length = 8192)]
    pub captcha_token: Option<String>,
    /// A TOTP code or a recovery code, when two-step verification is on.
    #[schema(max_length = 64)]
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
    #[schema(max_length = 1024)]
    pub refresh_token: String,
    /// The device the app runs on. A retry of the same refresh from the same device within a few
    /// seconds (a lost response) returns the same new pair instead of ending the session.
    #[schema(max_length = 256)]
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
    #[schema(max_length = 1024)]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutAllBody {
    /// Keep the calling session and end every other one; needs `password` (or, with two-step
    /// verification on, `totp_code`). Without it (the default), every session ends, this one too,
    /// and nothing else is needed.
    pub keep_current: Option<bool>,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub totp_code: Option<String>,
}

impl Bounded for LogoutAllBody {
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
        vec![
            ("password", self.password.as_deref(), PASSWORD),
            ("totp_code", self.totp_code.as_deref(), CODE),
        ]
    }
}

impl From<LogoutAllBody> for pb::LogoutAllRequest {
    fn from(b: LogoutAllBody) -> Self {
        let reauth = ReauthBody {
            password: b.password,
            totp_code: b.totp_code,
        };
        Self {
            keep_current: b.keep_current.unwrap_or(false),
            reauth: Some(reauth.into()),
        }
    }
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
        (status = 400, description = "VALIDATION_FAILED: a field is invalid (details name it), or the password is too common or contains the name or e-mail; MALFORMED_JSON; CAPTCHA_REQUIRED / CAPTCHA_FAILED", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT: the body came too slowly", body = crate::error::ErrorBody),
        (status = 409, description = "An account with this e-mail exists", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: the body is not JSON", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After: a write answered 503 may or may not have happened (retry; a 409 on retry means it did)", body = crate::error::ErrorBody),
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
        (status = 400, description = "VALIDATION_FAILED (the device), MALFORMED_JSON, CAPTCHA_REQUIRED or CAPTCHA_FAILED", body = crate::error::ErrorBody),
        (status = 401, description = "INVALID_CREDENTIALS (wrong password or unknown e-mail, alike), or MFA_REQUIRED (a code is missing or wrong)", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many failures for this account from this address (known and unknown e-mails alike); the right password with a solved CAPTCHA still logs in", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After (also: too many failed logins from this address)", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody),
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
        (status = 400, description = "VALIDATION_FAILED or MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 401, description = "UNAUTHENTICATED, TOKEN_REUSED, TOKEN_REVOKED or TOKEN_EXPIRED", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn refresh(auth_service: AuthCall, body: BoundedJson<RefreshBody>) -> Result<HttpResponse, ApiError> {
    let message = pb::RefreshRequest::from(body.into_inner());
    let r = auth_service.send(message, async |c, m| c.refresh(m).await).await?;
    Ok(HttpResponse::Ok().json(RefreshedBody {
        tokens: tokens(Some(r)),
    }))
}

/// End this session; the access token stops working at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body(content = Option<LogoutBody>, description = "Optional; when sent, it must be valid"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = "VALIDATION_FAILED or MALFORMED_JSON", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn logout(
    auth: Authenticated,
    auth_service: AuthCall,
    body: OptionalJson<LogoutBody>,
) -> Result<HttpResponse, ApiError> {
    let refresh_token = body.into_inner().and_then(|b| b.refresh_token).unwrap_or_default();
    let message = pb::LogoutRequest { refresh_token };
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.logout(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// End every session of the caller, this one too; or, with `keep_current` and the password (or a
/// TOTP code), every other one.
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    request_body(content = Option<LogoutAllBody>, description = "Optional; when sent, it must be valid"),
    responses(
        (status = 204, description = "Sessions ended"),
        (status = 400, description = "VALIDATION_FAILED (keep_current without password or totp_code names `password`), MALFORMED_JSON, or CAPTCHA_REQUIRED after failed passwords", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated; INVALID_CREDENTIALS (a wrong password counts as a failed login); MFA_REQUIRED (a wrong code)", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong passwords or codes", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn logout_all(
    auth: Authenticated,
    auth_service: AuthCall,
    body: OptionalJson<LogoutAllBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::LogoutAllRequest::from(body.into_inner().unwrap_or_default());
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.logout_all(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    /// The rules auth-service enforces on these bodies are in the document, so a contract fuzzer
    /// generates only what the product accepts (issue 17, contract fuzzing).
    #[test]
    fn the_document_states_the_body_rules() {
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).expect("json");
        let schema = |name: &str| doc["components"]["schemas"][name].clone();
        let register = schema("RegisterBody");
        assert_eq!(register["properties"]["password"]["minLength"], 12, "{register}");
        assert_eq!(register["properties"]["password"]["maxLength"], 128, "{register}");
        assert_eq!(register["properties"]["email"]["format"], "email", "{register}");
        assert_eq!(schema("Platform")["enum"], serde_json::json!(["ios", "android", "web"]));
        assert_eq!(
            schema("IncomeTier")["enum"],
            serde_json::json!(["low", "lower_middle", "middle", "upper_middle", "high"])
        );
        assert!(
            register["properties"]["first_name"]["pattern"].is_string(),
            "{register}"
        );
        assert_eq!(
            schema("ChangePasswordBody")["properties"]["new_password"]["minLength"],
            12
        );
        assert_eq!(
            schema("ResetConfirmBody")["properties"]["new_password"]["maxLength"],
            128
        );
        let statuses = |path: &str, method: &str| -> Vec<String> {
            let responses = doc["paths"][path][method]["responses"].as_object().expect("responses");
            responses.keys().cloned().collect()
        };
        for (path, method) in [
            ("/v1/auth/login", "post"),
            ("/v1/auth/logout-all", "post"),
            ("/v1/me/devices/{device_id}", "delete"),
            ("/v1/me/mfa/totp", "post"),
            ("/v1/me/mfa/totp", "delete"),
            ("/v1/me/password", "post"),
            ("/v1/auth/password-reset", "post"),
        ] {
            let got = statuses(path, method);
            for status in ["400", "408", "413", "429", "503"] {
                assert!(
                    got.iter().any(|s| s == status),
                    "{method} {path} lacks {status}: {got:?}"
                );
            }
        }
    }
}
