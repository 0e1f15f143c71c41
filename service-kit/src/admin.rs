//! The admin HTTP server every process runs on its own port: `/metrics` (Prometheus text),
//! `/health` (liveness) and `/ready` (readiness, 503 when the process cannot do its job).
//! It is plain HTTP and must stay off the public network.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// What `/ready` answers: whether to return 200, and the JSON body.
pub struct ReadyReport {
    pub ready: bool,
    pub body: Value,
}

pub type ReadinessFuture = Pin<Box<dyn Future<Output = ReadyReport> + Send>>;
/// Computes readiness on demand.
pub type Readiness = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
    started: Instant,
}

/// `{"status":"healthy","version":…,"uptime_seconds":…}`, shared with the gateway's public `/health`.
pub fn health_body(started: Instant) -> Value {
    json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs(),
    })
}

/// A bound admin server; `run` serves until shutdown.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr, registry: Registry, readiness: Readiness) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = AdminState {
            registry,
            readiness,
            started: Instant::now(),
        };
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(state);
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.wait())
            .await
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::metrics::render(&state.registry),
    )
}

async fn health(State(state): State<AdminState>) -> impl IntoResponse {
    axum::Json(health_body(state.started))
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let report = (state.readiness)().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report.body))
}
