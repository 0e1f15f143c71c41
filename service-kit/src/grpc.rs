//! The tonic server every service runs: its own services plus `grpc.health.v1` and server
//! reflection (v1 and v1alpha, listing only what this service serves), mTLS with the caller
//! checked ([`crate::grpc_tls`]), per-call tracing spans (continuing the caller's W3C trace
//! context) and metrics, and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::grpc_tls::{GrpcTls, PeerIdentityLayer};
use crate::metrics::GrpcMetrics;
use crate::shutdown::Shutdown;

/// How the server meets its callers: TLS (or not) and who may call.
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    pub tls: GrpcTls,
    /// `GRPC_ALLOWED_CLIENTS`: names a client certificate must carry.
    pub allowed_clients: Vec<String>,
}

/// The names reflection lists: the service's own, health, and reflection itself.
pub fn reflected_services(own: &[&str]) -> Vec<String> {
    own.iter()
        .copied()
        .chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ])
        .map(str::to_owned)
        .collect()
}

/// A bound gRPC server; `run` serves until shutdown, then lets in-flight calls finish.
pub struct GrpcServer {
    listener: TcpListener,
}

impl GrpcServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `routes` (the service's own, named `services`) with health and reflection added.
    #[allow(clippy::too_many_arguments)] // the parts of one server, each from a different place
    pub async fn run(
        self,
        routes: Routes,
        services: &[&str],
        health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        file_descriptor_set: &'static [u8],
        security: ServerSecurity,
        metrics: GrpcMetrics,
        max_call: Duration,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let reflection = || {
            reflected_services(services).into_iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(file_descriptor_set)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                tonic_reflection::server::Builder::with_service_name,
            )
        };
        let routes = routes
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut builder = Server::builder();
        if let Some(tls) = security.tls.server_config() {
            builder = builder.tls_config(tls.timeout(Duration::from_secs(5)))?;
        }
        let identity = PeerIdentityLayer::new(security.tls.is_mutual().then_some(security.allowed_clients));
        builder
            .timeout(max_call)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .trace_fn(call_span)
            .layer(metrics)
            .layer(identity)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown.wait())
            .await?;
        Ok(())
    }
}

/// The span of one call: its method and request id on every log line, and (when spans are
/// exported) the trace of the caller's `traceparent` continued, so that the gateway's request and
/// this call are one trace.
fn call_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    let span = tracing::info_span!(
        "grpc",
        method = %path,
        request_id = %header("x-request-id").unwrap_or(""),
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
    );
    if crate::telemetry::exporting() {
        crate::telemetry::continue_remote(&span, header("traceparent"), header("tracestate"));
    }
    span
}

/// Metadata key that names the request field an `INVALID_ARGUMENT` is about; the gateway turns it
/// into `details: [{field, issue}]`.
pub const FIELD_METADATA: &str = "x-field";

/// `VALIDATION_FAILED` (`INVALID_ARGUMENT`) about one field, with a message safe to show the client.
pub fn invalid_field(field: &'static str, issue: &str) -> tonic::Status {
    let mut status = crate::errors::status(crate::errors::ErrorCode::ValidationFailed, issue);
    status
        .metadata_mut()
        .insert(FIELD_METADATA, tonic::metadata::MetadataValue::from_static(field));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ERROR_CODE_METADATA;

    #[test]
    fn an_invalid_field_is_validation_failed_and_names_the_field() {
        let s = invalid_field("radius_m", "must be between 1 and 5000");
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), "must be between 1 and 5000");
        let meta = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok());
        assert_eq!(meta(ERROR_CODE_METADATA), Some("VALIDATION_FAILED"));
        assert_eq!(meta(FIELD_METADATA), Some("radius_m"));
    }
}
