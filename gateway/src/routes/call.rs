//! One way for a handler to call a service: the request carries what the service may want to
//! know about the HTTP request (request id, client address and user agent, the caller's token;
//! set here only, a client cannot send them) and the W3C trace context of a client span under the
//! request's span when spans are exported, the channel's deadline bounds it
//! (`GRPC_REQUEST_TIMEOUT_MS`), and a failure becomes the API's error through the one gRPC → HTTP
//! table ([`ApiError::from_status`]).

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, web};
use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::reports::v1::reports_service_client::ReportsServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::auth::Authenticated;
use crate::client_ip::ClientAddr;
use crate::error::ApiError;
use crate::state::AppState;
use crate::upstream::Upstreams;

/// The user agent is forwarded for the audit log, cut to this many characters.
const USER_AGENT_CHARS: usize = 256;

/// `LoginRequest` of `proto::auth::v1::LoginRequest`: names the call in its span.
fn short_type_name<M>() -> &'static str {
    let name = std::any::type_name::<M>();
    name.rsplit("::").next().unwrap_or(name)
}

/// A service's client, made on the HTTP worker's channel.
pub trait Service: Sized {
    /// Names the service in messages and logs.
    const NAME: &'static str;
    fn client(upstreams: &Upstreams) -> Self;
}

impl Service for AuthServiceClient<Channel> {
    const NAME: &'static str = "auth";
    fn client(upstreams: &Upstreams) -> Self {
        Self::new(upstreams.auth.clone())
    }
}

impl Service for ReportsServiceClient<Channel> {
    const NAME: &'static str = "reports";
    fn client(upstreams: &Upstreams) -> Self {
        Self::new(upstreams.reports.clone())
    }
}

/// Calls to auth-service, as a handler argument.
pub type AuthCall = Call<AuthServiceClient<Channel>>;
/// Calls to reports-service, as a handler argument.
pub type ReportsCall = Call<ReportsServiceClient<Channel>>;

/// Calls to one service on behalf of one HTTP request (a handler argument).
pub struct Call<C> {
    service: &'static str,
    client: C,
    req: HttpRequest,
    /// The caller's `Authorization` value, forwarded (the service verifies it again).
    bearer: Option<String>,
}

impl<C: Service> FromRequest for Call<C> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(match req.app_data::<web::Data<AppState>>() {
            Some(state) => Ok(Self::new(C::NAME, C::client(&state.upstreams), req.clone())),
            None => Err(ApiError::internal()),
        })
    }
}

impl<C> Call<C> {
    pub fn new(service: &'static str, client: C, req: HttpRequest) -> Self {
        Self {
            service,
            client,
            req,
            bearer: None,
        }
    }

    /// The call is made for `caller`, whose token goes along.
    pub fn by(self, caller: &Authenticated) -> Self {
        Self {
            bearer: Some(caller.bearer.clone()),
            ..self
        }
    }

    /// Sends `message` through `rpc` (one method of the client) and answers the response's message,
    /// or the API's error for the status.
    pub async fn send<M, R>(
        mut self,
        message: M,
        rpc: impl AsyncFnOnce(&mut C, tonic::Request<M>) -> Result<tonic::Response<R>, tonic::Status>,
    ) -> Result<R, ApiError> {
        let mut request = self.request(message);
        // With spans exported, the call is a client span under the request's span, and the
        // service continues its trace; otherwise nothing is made (`Span::none` costs nothing).
        let span = if service_kit::telemetry::exporting() {
            let span = tracing::info_span!(
                "grpc.client",
                otel.name = format!("{}/{}", self.service, short_type_name::<M>()),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
            );
            service_kit::telemetry::inject(&span, request.metadata_mut());
            span
        } else {
            tracing::Span::none()
        };
        match rpc(&mut self.client, request).instrument(span.clone()).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                span.record("otel.status_code", "error");
                if let Some(cause) = crate::error::transport_failure(&status)
                    && let Some(state) = self.req.app_data::<web::Data<AppState>>()
                {
                    state
                        .upstream_unavailable
                        .with_label_values(&[self.service, cause])
                        .inc();
                }
                Err(ApiError::from_status(self.service, &status))
            }
        }
    }

    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = crate::upstream::request(message, self.bearer.as_deref());
        let md = request.metadata_mut();
        if let Some(ip) = ClientAddr::of(&self.req)
            && let Ok(v) = MetadataValue::try_from(ip.to_string())
        {
            md.insert("x-client-ip", v);
        }
        let agent = self
            .req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let Ok(v) = MetadataValue::try_from(agent.chars().take(USER_AGENT_CHARS).collect::<String>()) {
            md.insert("x-user-agent", v);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use actix_web::HttpMessage as _;
    use actix_web::test::TestRequest;
    use service_kit::errors::ErrorCode;

    use super::*;

    #[tokio::test]
    async fn a_call_carries_the_request_and_maps_the_status() {
        let req = TestRequest::default()
            .insert_header(("user-agent", "app/1.0"))
            .to_http_request();
        req.extensions_mut().insert(ClientAddr(Some([198, 51, 100, 7].into())));
        let seen = Call::new("auth", (), req.clone())
            .send(7_u32, async |_, request: tonic::Request<u32>| {
                let md = request.metadata();
                let get = |name: &str| md.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Ok(tonic::Response::new((
                    *request.get_ref(),
                    get("x-client-ip"),
                    get("x-user-agent"),
                    get("authorization"),
                )))
            })
            .await
            .expect("answered");
        assert_eq!(
            seen,
            (7, Some("198.51.100.7".to_owned()), Some("app/1.0".to_owned()), None)
        );

        for (status, code) in [
            (tonic::Status::not_found("row 7"), ErrorCode::NotFound),
            (tonic::Status::unavailable("refused"), ErrorCode::Unavailable),
            (
                service_kit::errors::status(ErrorCode::AccountLocked, "Locked."),
                ErrorCode::AccountLocked,
            ),
        ] {
            let e = Call::new("auth", (), req.clone())
                .send((), async |_, _| Err::<tonic::Response<()>, _>(status.clone()))
                .await
                .expect_err("refused");
            assert_eq!(e.code, code, "{status:?}");
        }
    }
}
