//! `auth.v1.AuthService` over tonic: decode into domain types, verify the caller's token where one
//! is needed, call the use case, answer from the domain records; errors become statuses in
//! `status.rs`.

mod status;

use std::sync::Arc;

use proto::auth::v1 as pb;
use proto::auth::v1::auth_service_server::AuthService;
use secrecy::SecretString;
use service_kit::auth::{AccessClaims, Verifier};
use service_kit::proto_time::{from_timestamp, some_timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{Actor, AuditEntry, Device, Invalid, KnownDevice, User};
use crate::keys::SigningKeys;
use crate::service::{AuditQuery, Auth, LoginInput, ProfileUpdate, Reauth, RegisterInput, Tokens};

pub struct AuthGrpc {
    keys: Arc<SigningKeys>,
    auth: Auth,
    verifier: Verifier,
}

impl AuthGrpc {
    pub fn new(keys: Arc<SigningKeys>, auth: Auth, verifier: Verifier) -> Self {
        Self { keys, auth, verifier }
    }

    /// The verified claims of the caller's access token.
    async fn claims<T>(&self, request: &Request<T>) -> Result<AccessClaims, Status> {
        service_kit::auth::verify_request(&self.verifier, request).await
    }

    /// The same, and who the caller is for the audit log (only calls that write one: the reads on
    /// every request, `GetMe` and `CheckToken`, skip copying the address and user agent).
    async fn caller<T>(&self, request: &Request<T>) -> Result<(AccessClaims, Actor), Status> {
        Ok((self.claims(request).await?, actor(request)))
    }
}

/// The client's address and user agent, as the gateway passes them.
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

fn device(d: Option<pb::Device>) -> Result<Option<Device>, Status> {
    d.map(|d| Device::parse(&d.device_id, &d.platform, &d.model, &d.os_version))
        .transpose()
        .map_err(status::invalid)
}

/// What the caller sent to prove it is them again (absent: nothing).
fn reauth(r: Option<pb::Reauthentication>) -> Reauth {
    let r = r.unwrap_or_default();
    Reauth {
        password: SecretString::from(r.password),
        totp_code: r.totp_code,
    }
}

fn user_pb(u: User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email,
        email_verified: u.email_verified,
        first_name: u.first_name,
        last_name: u.last_name,
        income_tier: u.income_tier.unwrap_or_default(),
        roles: u.roles,
        mfa_enabled: u.mfa.enabled,
        created_at: some_timestamp(u.created_at),
    }
}

fn session_pb(user: User, t: Tokens) -> pb::SessionResponse {
    pb::SessionResponse {
        user: Some(user_pb(user)),
        tokens: Some(tokens_pb(t)),
    }
}

fn tokens_pb(t: Tokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_in: t.expires_in as u32,
    }
}

fn device_pb(d: KnownDevice, current: &str) -> pb::KnownDevice {
    pb::KnownDevice {
        current: d.device_id == current,
        device_id: d.device_id,
        platform: d.platform,
        model: d.model.unwrap_or_default(),
        os_version: d.os_version.unwrap_or_default(),
        first_seen_at: some_timestamp(d.first_seen_at),
        last_seen_at: some_timestamp(d.last_seen_at),
        trusted: d.trusted,
        risk_score: u32::try_from(d.risk_score).unwrap_or(0),
    }
}

fn audit_pb(a: AuditEntry) -> pb::AuditLogEntry {
    pb::AuditLogEntry {
        id: a.id.to_string(),
        actor_id: a.actor.user_id.map(|u| u.to_string()).unwrap_or_default(),
        action: a.action,
        resource: a.resource,
        resource_id: a.resource_id.unwrap_or_default(),
        ip: a.actor.ip.unwrap_or_default(),
        user_agent: a.actor.user_agent.unwrap_or_default(),
        changed_fields: a.changed_fields,
        created_at: some_timestamp(a.created_at),
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
        let (user, tokens) = self.auth.register(input, actor).await?;
        Ok(Response::new(session_pb(user, tokens)))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::SessionResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let device = device(r.device)?.ok_or_else(|| {
            status::invalid(Invalid {
                field: "device",
                issue: "is required",
            })
        })?;
        let input = LoginInput {
            email: r.email,
            password: SecretString::from(r.password),
            device,
            captcha_token: r.captcha_token,
            mfa_code: r.totp_code,
        };
        let auth = self.auth.clone();
        let (user, tokens) = to_the_end(async move { Ok(auth.login(input, actor).await?) }).await?;
        Ok(Response::new(session_pb(user, tokens)))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::Tokens>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let tokens = self.auth.refresh(&r.refresh_token, &r.device_id, actor).await?;
        Ok(Response::new(tokens_pb(tokens)))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        self.auth.logout(&claims, Some(&r.refresh_token), actor).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_all(&self, request: Request<pb::LogoutAllRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        let auth = self.auth.clone();
        to_the_end(async move {
            Ok(auth
                .logout_all(&claims, r.keep_current, reauth(r.reauth), actor)
                .await?)
        })
        .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        let claims = self.claims(&request).await?;
        let user = self.auth.me(&claims).await?;
        Ok(Response::new(user_pb(user)))
    }

    async fn check_token(
        &self,
        request: Request<pb::CheckTokenRequest>,
    ) -> Result<Response<pb::CheckTokenResponse>, Status> {
        let claims = self.claims(&request).await?;
        let revoked = self.auth.token_revoked(&claims).await?;
        Ok(Response::new(pb::CheckTokenResponse { revoked }))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Result<Response<pb::User>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        let update = ProfileUpdate {
            first_name: r.first_name,
            last_name: r.last_name,
            income_tier: r.income_tier,
        };
        let user = self.auth.update_me(&claims, update, actor).await?;
        Ok(Response::new(user_pb(user)))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        let (current, new) = (
            SecretString::from(r.current_password),
            SecretString::from(r.new_password),
        );
        let auth = self.auth.clone();
        to_the_end(async move { Ok(auth.change_password(&claims, &current, &new, actor).await?) }).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let claims = self.claims(&request).await?;
        let devices = self.auth.devices(&claims).await?;
        let devices = devices.into_iter().map(|d| device_pb(d, &claims.did)).collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        let auth = self.auth.clone();
        to_the_end(async move {
            Ok(auth
                .remove_device(&claims, &r.device_id, reauth(r.reauth), actor)
                .await?)
        })
        .await?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn mfa_enroll(
        &self,
        request: Request<pb::MfaEnrollRequest>,
    ) -> Result<Response<pb::MfaEnrollResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let password = SecretString::from(request.into_inner().password);
        let auth = self.auth.clone();
        let e = to_the_end(async move { Ok(auth.mfa_enroll(&claims, &password, actor).await?) }).await?;
        Ok(Response::new(pb::MfaEnrollResponse {
            secret: e.secret_base32,
            otpauth_uri: e.otpauth_uri,
        }))
    }

    async fn mfa_confirm(
        &self,
        request: Request<pb::MfaCodeRequest>,
    ) -> Result<Response<pb::MfaConfirmResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let code = request.into_inner().code;
        let auth = self.auth.clone();
        let recovery_codes = to_the_end(async move { Ok(auth.mfa_confirm(&claims, &code, actor).await?) }).await?;
        Ok(Response::new(pb::MfaConfirmResponse { recovery_codes }))
    }

    async fn mfa_disable(
        &self,
        request: Request<pb::MfaDisableRequest>,
    ) -> Result<Response<pb::MfaDisableResponse>, Status> {
        let (claims, actor) = self.caller(&request).await?;
        let r = request.into_inner();
        let password = SecretString::from(r.password);
        let auth = self.auth.clone();
        to_the_end(async move { Ok(auth.mfa_disable(&claims, &password, &r.code, actor).await?) }).await?;
        Ok(Response::new(pb::MfaDisableResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let actor = actor(&request);
        let token = request.into_inner().token;
        self.auth.verify_email(&token, actor).await?;
        Ok(Response::new(pb::VerifyEmailResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::PasswordResetRequest>,
    ) -> Result<Response<pb::PasswordResetResponse>, Status> {
        let actor = actor(&request);
        let email = request.into_inner().email;
        self.auth.request_password_reset(&email, actor)?;
        Ok(Response::new(pb::PasswordResetResponse {}))
    }

    async fn confirm_password_reset(
        &self,
        request: Request<pb::ConfirmPasswordResetRequest>,
    ) -> Result<Response<pb::PasswordResetResponse>, Status> {
        let actor = actor(&request);
        let r = request.into_inner();
        let new = SecretString::from(r.new_password);
        self.auth.confirm_password_reset(&r.token, &new, actor).await?;
        Ok(Response::new(pb::PasswordResetResponse {}))
    }

    async fn list_audit_logs(
        &self,
        request: Request<pb::ListAuditLogsRequest>,
    ) -> Result<Response<pb::ListAuditLogsResponse>, Status> {
        let claims = self.claims(&request).await?;
        let r = request.into_inner();
        let query = AuditQuery {
            user_id: r.user_id,
            from: from_timestamp(r.from.as_ref()),
            to: from_timestamp(r.to.as_ref()),
            limit: r.limit,
            cursor: r.cursor,
        };
        let (entries, next) = self.auth.audit_logs(&claims, query).await?;
        Ok(Response::new(pb::ListAuditLogsResponse {
            items: entries.into_iter().map(audit_pb).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }
}

/// Runs a use case that judges a password or a code to its end, even when the caller goes away
/// midway (the gateway's deadline, a dropped connection): the attempt is counted before the
/// secret is judged, and only the end records the outcome (a lock, or the count starting over).
/// Cancelled in between, the count would stay at its limit with no lock to run out, refusing
/// every later attempt, the owner's too.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    use tracing::Instrument as _;
    match tokio::spawn(work.in_current_span()).await {
        Ok(result) => result,
        Err(e) => Err(status::unexpected(anyhow::anyhow!(
            "a judged attempt did not run to its end: {e}"
        ))),
    }
}
