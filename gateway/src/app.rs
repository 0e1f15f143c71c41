//! Builds the gateway (binds the public and admin ports, port 0 allowed) and runs it until
//! shutdown: on SIGTERM `/ready` turns 503 `draining`, the listener stops accepting, in-flight
//! requests finish (up to `SHUTDOWN_TIMEOUT_SECONDS`), then the process exits.

use std::sync::Arc;
use std::time::Instant;

use actix_cors::Cors;
use actix_web::http::{Method, header};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use prometheus::Registry;
use service_kit::admin::{AdminServer, Readiness};
use service_kit::shutdown::Shutdown;

use crate::config::GatewayConfig;
use crate::edge::{Edge, edge};
use crate::error::ApiError;
use crate::routes::{self, AppState};
use crate::upstream::Upstreams;

pub struct Application {
    server: actix_web::dev::Server,
    admin: AdminServer,
    upstreams: Upstreams,
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The JSON extractor's limits and errors, in the API's shape.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(move |err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let api = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => {
                    ApiError::payload_too_large(limit)
                }
                E::ContentType => ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "Send JSON with Content-Type: application/json.",
                ),
                E::Deserialize(e) if e.is_data() => {
                    // serde names the offending field ("unknown field `x`", "missing field `y`").
                    ApiError::new(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        "VALIDATION_FAILED",
                        first_line(&e.to_string()),
                    )
                }
                _ => ApiError::malformed_json("The request body is not valid JSON."),
            };
            api.into()
        })
}

fn first_line(s: &str) -> String {
    // serde_json appends " at line 1 column 9": position is noise for an app developer.
    s.split(" at line ")
        .next()
        .unwrap_or(s)
        .chars()
        .take(200)
        .collect()
}

impl Application {
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let edge_state = web::Data::new(Edge::new(
            config.max_body_bytes,
            config.request_timeout,
            &registry,
        )?);
        let upstreams = Upstreams::new(&config.upstreams, config.redis_url.as_ref())?;
        let state = web::Data::new(AppState {
            upstreams: upstreams.clone(),
            started: Instant::now(),
        });
        let origins = Arc::new(config.allowed_origins.clone());
        let max_body = config.max_body_bytes;

        let server = HttpServer::new(move || {
            App::new()
                .app_data(edge_state.clone())
                .app_data(state.clone())
                .app_data(json_config(max_body))
                .app_data(web::PayloadConfig::new(max_body))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap(cors(&origins))
                .wrap(from_fn(edge))
        })
        .workers(config.workers)
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .client_request_timeout(std::time::Duration::from_secs(5))
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .keep_alive(std::time::Duration::from_secs(30))
        .max_connections(25_000)
        .disable_signals();

        let listener = std::net::TcpListener::bind(config.public_addr)
            .with_context(|| format!("binding the public port {}", config.public_addr))?;
        let public_addr = listener.local_addr()?;
        let server = match &config.tls {
            Some(tls) => server.listen_rustls_0_23(listener, crate::tls::server_config(tls)?)?,
            None => {
                tracing::warn!("serving plain HTTP (ALLOW_PLAIN_HTTP=true): development only");
                server.listen(listener)?
            }
        }
        .run();

        let readiness: Readiness = {
            let upstreams = upstreams.clone();
            Arc::new(move || {
                let upstreams = upstreams.clone();
                Box::pin(async move { upstreams.readiness().await })
            })
        };
        let admin = AdminServer::bind(config.common.admin_addr, registry, readiness).await?;
        tracing::info!(
            public = %public_addr,
            admin = %admin.local_addr()?,
            tls = config.tls.is_some(),
            environment = config.common.environment.as_str(),
            "gateway listening"
        );
        Ok(Self {
            server,
            admin,
            upstreams,
        })
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let (admin_trigger, admin_shutdown) = service_kit::shutdown::channel();
        let admin = tokio::spawn(self.admin.run(admin_shutdown));
        let mut server = tokio::spawn(self.server);
        tokio::select! {
            result = &mut server => {
                result??;
                tracing::error!("HTTP server stopped on its own");
            }
            () = shutdown.wait() => {
                self.upstreams.start_draining();
                tracing::info!("draining: no new connections, finishing in-flight requests");
                handle.stop(true).await;
                server.await??;
            }
        }
        admin_trigger.trigger();
        admin.await??;
        tracing::info!("gateway stopped");
        Ok(())
    }
}
