//! `auth.v1.AuthService` over tonic: decode, verify the caller's token where one is needed, call
//! the use case, map errors through service-kit's one table.

use std::sync::Arc;

use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_server::AuthService;
use secrecy::SecretString;
use service_kit::auth::Verifier;
use service_kit::errors::{ErrorCode, status, status_retry_after};
use tonic::{Request, Response, Status};

use crate::account::Device;
use crate::keys::SigningKeys;
use crate::service::{AuditQuery, Auth, AuthError, LoginInput, ProfileUpdate, RegisterInput, Tokens};
use crate::store::{Actor, UserRow};

pub struct AuthGrpc {
    keys: Arc<SigningKeys>,
    auth: Auth,
    verifier: Verifier,
}

impl AuthGrpc {
    pub fn new(keys: Arc<SigningKeys>, auth: Auth, verifier: Verifier) -> Self {
        Self { keys, auth, verifier }
    }
}

fn actor<T>(request: &Request<T>) -> Actor {
    let get = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect::<String>())
    };
    Actor {
        user_id: None,
        ip: get("x-client-ip"),
        user_agent: get("x-user-agent"),
    }
}

fn to_status(e: AuthError) -> Status {
    match e {
        AuthError::Invalid(i) => {
            let mut s = status(ErrorCode::ValidationFailed, i.issue);
            s.metadata_mut().insert(
                service_kit::grpc::FIELD_METADATA,
                tonic::metadata::MetadataValue::from_static(i.field),
            );
            s
        }
        AuthError::EmailTaken => status(ErrorCode::Conflict, "An account with this e-mail already exists."),
        AuthError::InvalidCredentials => status(ErrorCode::InvalidCredentials, "E-mail or password is wrong."),
        AuthError::Locked { retry_after } => status_retry_after(
            ErrorCode::AccountLocked,
            "Too many failed attempts; the account is locked for a while.",
            retry_after,
        ),
        AuthError::TokenReused => status(
            ErrorCode::TokenReused,
            "This refresh token was already used; the session has ended.",
        ),
        AuthError::Revoked => status(ErrorCode::TokenRevoked, "This session has ended; log in again."),
        AuthError::Expired => status(ErrorCode::TokenExpired, "This session has expired; log in again."),
        AuthError::Unauthenticated => status(ErrorCode::Unauthenticated, "Authentication is required."),
        AuthError::NotFound => status(ErrorCode::NotFound, "No such resource."),
        AuthError::Forbidden => status(ErrorCode::Forbidden, "This needs the admin role."),
        AuthError::MfaRequired => status(
            ErrorCode::MfaRequired,
            "A code from your authenticator app (or a recovery code) is required.",
        ),
        AuthError::MfaInvalid => status(ErrorCode::MfaRequired, "The code is not valid; try the current one."),
        AuthError::Conflict(message) => status(ErrorCode::Conflict, message),
        AuthError::TooManyFailures { retry_after } => status_retry_after(
            ErrorCode::RateLimitExceeded,
            "Too many failed logins from this network; wait and try again.",
            retry_after,
        ),
        AuthError::CaptchaRequired => status(ErrorCode::CaptchaRequired, "Solve the CAPTCHA and send its token."),
        AuthError::CaptchaFailed => status(ErrorCode::CaptchaFailed, "The CAPTCHA was not solved; try again."),
        AuthError::Unavailable(cause) => {
            tracing::warn!(error = format!("{cause:#}"), "dependency unavailable");
            status(ErrorCode::Unavailable, "Temporarily unavailable; retry shortly.")
        }
        AuthError::Unexpected(cause) => {
            tracing::error!(error = format!("{cause:#}"), "unexpected error");
            status(ErrorCode::Internal, "internal error")
        }
    }
}

fn device(d: Option<pb::Device>) -> Result<Option<Device>, Status> {
    d.map(|d| Device::parse(&d.device_id, &d.platform, &d.model, &d.os_version))
        .transpose()
        .map_err(|i| to_status(AuthError::Invalid(i)))
}

fn user_pb(u: &UserRow) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        email_verified: u.email_verified,
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        income_tier: u.income_tier.clone().unwrap_or_default(),
        roles: u.roles.clone(),
        mfa_enabled: u.mfa_enabled,
        created_at: Some(prost_types::Timestamp {
            seconds: u.created_at.timestamp(),
            nanos: 0,
        }),
    }
}

fn tokens_pb(t: Tokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_in: t.expires_in as u32,
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .keys
            .jwks()
            .map(|k| pb::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.x.clone(),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::SessionResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let input = RegisterInput {
            email: r.email,
            password: SecretString::from(r.password),
            first_name: r.first_name,
            last_name: r.last_name,
            income_tier: r.income_tier,
            device: device(r.device)?,
            captcha_token: r.captcha_token,
        };
        let (user, tokens) = self.auth.register(input, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::SessionResponse {
            user: Some(user_pb(&user)),
            tokens: Some(tokens_pb(tokens)),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::SessionResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let device = device(r.device)?.ok_or_else(|| {
            to_status(AuthError::Invalid(crate::account::Invalid {
                field: "device",
                issue: "is required",
            }))
        })?;
        let input = LoginInput {
            email: r.email,
            password: SecretString::from(r.password),
            device,
            captcha_token: r.captcha_token,
            mfa_code: r.totp_code,
        };
        let (user, tokens) = self.auth.login(input, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::SessionResponse {
            user: Some(user_pb(&user)),
            tokens: Some(tokens_pb(tokens)),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::Tokens>, Status> {
        let r = request.into_inner();
        let tokens = self
            .auth
            .refresh(&r.refresh_token, &r.device_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(tokens_pb(tokens)))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let r = request.into_inner();
        self.auth
            .logout(&claims, Some(&r.refresh_token), actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_all(&self, request: Request<pb::LogoutAllRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        self.auth.logout_all(&claims, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let user = self.auth.me(&claims).await.map_err(to_status)?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn check_token(
        &self,
        request: Request<pb::CheckTokenRequest>,
    ) -> Result<Response<pb::CheckTokenResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let revoked = self.auth.token_revoked(&claims).await.map_err(to_status)?;
        Ok(Response::new(pb::CheckTokenResponse { revoked }))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Result<Response<pb::User>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let r = request.into_inner();
        let update = ProfileUpdate {
            first_name: r.first_name,
            last_name: r.last_name,
            income_tier: r.income_tier,
        };
        let user = self.auth.update_me(&claims, update, actor).await.map_err(to_status)?;
        Ok(Response::new(user_pb(&user)))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let r = request.into_inner();
        let (current, new) = (
            SecretString::from(r.current_password),
            SecretString::from(r.new_password),
        );
        self.auth
            .change_password(&claims, &current, &new, actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let rows = self.auth.devices(&claims).await.map_err(to_status)?;
        let ts = |t: chrono::DateTime<chrono::Utc>| {
            Some(prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            })
        };
        let devices = rows
            .into_iter()
            .map(|d| pb::KnownDevice {
                current: d.device_id == claims.did,
                device_id: d.device_id,
                platform: d.platform,
                model: d.model.unwrap_or_default(),
                os_version: d.os_version.unwrap_or_default(),
                first_seen_at: ts(d.first_seen_at),
                last_seen_at: ts(d.last_seen_at),
                trusted: d.trusted,
                risk_score: u32::try_from(d.risk_score).unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let r = request.into_inner();
        self.auth
            .remove_device(&claims, &r.device_id, actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn mfa_enroll(
        &self,
        request: Request<pb::MfaEnrollRequest>,
    ) -> Result<Response<pb::MfaEnrollResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let e = self.auth.mfa_enroll(&claims).await.map_err(to_status)?;
        Ok(Response::new(pb::MfaEnrollResponse {
            secret: e.secret_base32,
            otpauth_uri: e.otpauth_uri,
        }))
    }

    async fn mfa_confirm(
        &self,
        request: Request<pb::MfaCodeRequest>,
    ) -> Result<Response<pb::MfaConfirmResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let code = request.into_inner().code;
        let recovery_codes = self.auth.mfa_confirm(&claims, &code, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::MfaConfirmResponse { recovery_codes }))
    }

    async fn mfa_disable(
        &self,
        request: Request<pb::MfaCodeRequest>,
    ) -> Result<Response<pb::MfaDisableResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let actor = actor(&request);
        let code = request.into_inner().code;
        self.auth.mfa_disable(&claims, &code, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::MfaDisableResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let actor = actor(&request);
        let token = request.into_inner().token;
        self.auth.verify_email(&token, actor).await.map_err(to_status)?;
        Ok(Response::new(pb::VerifyEmailResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::PasswordResetRequest>,
    ) -> Result<Response<pb::PasswordResetResponse>, Status> {
        let actor = actor(&request);
        let email = request.into_inner().email;
        self.auth
            .request_password_reset(&email, actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PasswordResetResponse {}))
    }

    async fn confirm_password_reset(
        &self,
        request: Request<pb::ConfirmPasswordResetRequest>,
    ) -> Result<Response<pb::PasswordResetResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        self.auth
            .confirm_password_reset(&r.token, &SecretString::from(r.new_password), actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PasswordResetResponse {}))
    }

    async fn list_audit_logs(
        &self,
        request: Request<pb::ListAuditLogsRequest>,
    ) -> Result<Response<pb::ListAuditLogsResponse>, Status> {
        let claims = service_kit::auth::verify_request(&self.verifier, &request).await?;
        let r = request.into_inner();
        let time = |t: Option<prost_types::Timestamp>| t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0));
        let query = AuditQuery {
            user_id: r.user_id,
            from: time(r.from),
            to: time(r.to),
            limit: r.limit,
            cursor: r.cursor,
        };
        let (rows, next) = self.auth.audit_logs(&claims, query).await.map_err(to_status)?;
        let ts = |t: chrono::DateTime<chrono::Utc>| {
            Some(prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            })
        };
        let items = rows
            .into_iter()
            .map(|a| pb::AuditLogEntry {
                id: a.id.to_string(),
                actor_id: a.actor_id.map(|u| u.to_string()).unwrap_or_default(),
                action: a.action,
                resource: a.resource,
                resource_id: a.resource_id.unwrap_or_default(),
                ip: a.ip.unwrap_or_default(),
                user_agent: a.user_agent.unwrap_or_default(),
                changed_fields: a.changed_fields,
                created_at: ts(a.created_at),
            })
            .collect();
        Ok(Response::new(pb::ListAuditLogsResponse {
            items,
            next_cursor: next.unwrap_or_default(),
        }))
    }
}
