//! The devices the caller has logged in from.

use super::session::ReauthBody;
use super::{non_empty, time};
use crate::auth::Authenticated;
use crate::body::OptionalJson;
use crate::error::ApiError;
use crate::routes::call::AuthCall;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use proto::auth::v1 as pb;
use serde::Serialize;

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
    responses((status = 200, description = "Known devices", body = DeviceList),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn devices(auth: Authenticated, auth_service: AuthCall) -> Result<HttpResponse, ApiError> {
    let r = auth_service
        .by(&auth)
        .send(pb::ListDevicesRequest {}, async |c, m| c.list_devices(m).await)
        .await?;
    let items = r
        .devices
        .into_iter()
        .map(|d| DeviceView {
            device_id: d.device_id,
            platform: d.platform,
            model: non_empty(d.model),
            os_version: non_empty(d.os_version),
            first_seen_at: time(d.first_seen_at.as_ref()),
            last_seen_at: time(d.last_seen_at.as_ref()),
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

/// Forget a device, with the password (or, with two-step verification on, a TOTP code) in the
/// body; its sessions end at once. 404 for a device the caller does not have.
#[utoipa::path(delete, path = "/v1/me/devices/{device_id}", tag = "auth", security(("bearer" = [])),
    params(("device_id" = String, Path, description = "As listed by GET /v1/me/devices")),
    request_body(content = ReauthBody, description = "`password`, or `totp_code` when two-step verification is on"),
    responses((status = 204, description = "Removed"),
        (status = 400, description = "VALIDATION_FAILED (neither password nor totp_code: names `password`), MALFORMED_JSON, or CAPTCHA_REQUIRED after failed passwords", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated; INVALID_CREDENTIALS (a wrong password counts as a failed login); MFA_REQUIRED (a wrong code)", body = crate::error::ErrorBody),
        (status = 404, description = "No such device", body = crate::error::ErrorBody),
        (status = 408, description = "REQUEST_TIMEOUT", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = crate::error::ErrorBody),
        (status = 423, description = "ACCOUNT_LOCKED, with Retry-After: too many wrong passwords or codes", body = crate::error::ErrorBody),
        (status = 429, description = "RATE_LIMIT_EXCEEDED, with Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "UNAVAILABLE, with Retry-After", body = crate::error::ErrorBody)))]
pub async fn remove_device(
    auth: Authenticated,
    auth_service: AuthCall,
    path: web::Path<String>,
    body: OptionalJson<ReauthBody>,
) -> Result<HttpResponse, ApiError> {
    let reauth = body.into_inner().unwrap_or_default();
    let message = pb::RemoveDeviceRequest {
        device_id: path.into_inner(),
        reauth: Some(reauth.into()),
    };
    auth_service
        .by(&auth)
        .send(message, async |c, m| c.remove_device(m).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
