//! Builds the gateway (binds the public and admin ports, port 0 allowed) and runs it until
//! shutdown: on SIGTERM `/ready` turns 503 `draining`, the listener stops accepting, in-flight
//! requests finish (up to `SHUTDOWN_TIMEOUT_SECONDS`), then the process exits.

use std::sync::Arc;
use std::time::Instant;

use actix_cors::Cors;
use actix_web::http::{Method, header};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use service_kit::admin::{AdminServer, Readiness};
use service_kit::errors::ErrorCode;
use service_kit::shutdown::Shutdown;

use crate::config::GatewayConfig;
use crate::edge::{Edge, edge};
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;
use crate::upstream::Upstreams;

pub struct Application {
    server: actix_web::dev::Server,
    admin: AdminServer,
    upstreams: Upstreams,
    edge: web::Data<Edge>,
    shutdown_timeout: std::time::Duration,
}

/// Exact origins only; with `credentials` (`CORS_CREDENTIALS`), browsers may send cookies and
/// `Authorization` to us from those origins.
fn cors(origins: &[String], credentials: bool) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
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
    if credentials {
        cors = cors.supports_credentials();
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
                E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::payload_too_large(limit),
                E::ContentType => ApiError::coded(
                    ErrorCode::UnsupportedMediaType,
                    "Send JSON with Content-Type: application/json.",
                ),
                // serde names the offending field ("unknown field `x`", "missing field `y`").
                E::Deserialize(e) if e.is_data() => {
                    ApiError::coded(ErrorCode::ValidationFailed, first_line(&e.to_string()))
                }
                E::Payload(p) if crate::body::is_read_timeout(p) => ApiError::body_timeout(),
                _ => ApiError::malformed_json("The request body is not valid JSON."),
            };
            api.into()
        })
}

/// Right inside the edge's request span, before anything makes a child of it: that span continues
/// the client's W3C `traceparent` (a malformed one is ignored and the trace starts here). In the
/// stack only while spans are exported.
async fn continue_trace(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if service_kit::telemetry::exporting() {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        service_kit::telemetry::continue_remote(&tracing::Span::current(), header("traceparent"), header("tracestate"));
    }
    next.call(req).await
}

fn first_line(s: &str) -> String {
    // serde_json appends " at line 1 column 9": position is noise for an app developer.
    s.split(" at line ").next().unwrap_or(s).chars().take(200).collect()
}

impl Application {
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let registry = service_kit::metrics::process_registry()?;
        let mut certificates = Vec::new();
        if let Some(tls) = &config.tls {
            certificates.push(("public", tls.cert_file.clone()));
        }
        if let service_kit::grpc_tls::GrpcTls::Mutual(files) = &config.upstreams.tls {
            certificates.push(("grpc", files.cert_file.clone()));
        }
        service_kit::metrics::register_certificate_expiry(&registry, certificates)?;
        let edge_state = web::Data::new(Edge::new(
            config.max_body_bytes,
            config.trusted_proxies.clone(),
            config.request_timeout,
            config.body_read_timeout,
            config.upstreams.upload_timeout,
            &registry,
        )?);
        let upstreams = Upstreams::new(&config.upstreams, config.redis_url.as_ref())?;
        let verifier = service_kit::auth::Verifier::new(
            config.verifier.clone(),
            service_kit::auth::jwks_over_grpc(upstreams.auth.clone()),
        );
        let state = AppState {
            upstreams: upstreams.clone(),
            verifier,
            revocation: crate::revocation::RevocationCheck::new(
                upstreams.redis.clone(),
                config.redis_keys.clone(),
                config.rate_limit.redis_timeout,
                upstreams.auth.clone(),
                config.revocation_cache,
                &registry,
            )?,
            verify_tokens: config.verify_tokens,
            started: Instant::now(),
            // From 0 for every service the gateway calls and every cause, so a first failure is an increase.
            upstream_unavailable: service_kit::metrics::counter_vec_from_zero(
                &registry,
                "upstream_unavailable_total",
                "Calls to a service that got no answer (each answered 503), by service and cause",
                &["upstream", "cause"],
                &[
                    &["auth", "unreachable"],
                    &["auth", "deadline"],
                    &["auth", "connection_lost"],
                    &["reports", "unreachable"],
                    &["reports", "deadline"],
                    &["reports", "connection_lost"],
                ],
            )?,
        };
        let origins = Arc::new(config.allowed_origins.clone());
        let cors_credentials = config.cors_credentials;
        let max_body = config.max_body_bytes;

        let limiter = crate::rate_limit::Limiter::new(
            config.rate_limit.clone(),
            upstreams.redis.clone(),
            config.redis_keys.clone(),
            edge_state.security.clone(),
            &registry,
        )?;
        crate::rate_limit::watch_policy_file(limiter.clone(), config.common.environment, &registry)?;
        let maintenance = web::Data::new(crate::maintenance::Maintenance::start(&config.maintenance, &registry)?);
        let maintenance_file = config.maintenance.file.is_some();
        let tracing_on = service_kit::telemetry::exporting();
        let edge_for_drain = edge_state.clone();
        let conn_watch = crate::conn_watch::ConnWatch::new(config.keep_alive, config.header_read_timeout, &registry)?;
        // What the HTTP/1 dispatcher answers by itself (not HTTP, headers too large or too slow)
        // gets the API's error shape too.
        actix_http::h1::set_error_body(crate::edge::protocol_error);
        let server = HttpServer::new(move || {
            // Runs on each worker: its channels and Redis connections are driven by its own
            // runtime. Caches, buckets and counters stay shared.
            let (state, limiter) = match state.upstreams.for_worker() {
                Ok(upstreams) => {
                    let revocation = state
                        .revocation
                        .for_worker(upstreams.redis.clone(), upstreams.auth.clone());
                    let limiter = limiter.with_redis(upstreams.redis.clone());
                    (
                        AppState {
                            upstreams,
                            revocation,
                            ..state.clone()
                        },
                        limiter,
                    )
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "worker upstreams; sharing the main ones");
                    (state.clone(), limiter.clone())
                }
            };
            App::new()
                .app_data(edge_state.clone())
                .app_data(web::Data::new(state))
                .app_data(web::Data::new(limiter))
                .app_data(maintenance.clone())
                .app_data(json_config(max_body))
                .app_data(web::PayloadConfig::new(max_body))
                .configure(routes::configure)
                .configure(routes::ops::configure_status)
                .default_service(web::to(routes::not_found))
                .wrap(from_fn(crate::rate_limit::limit))
                // Each `from_fn` layer costs a boxed future per request: these two are in the
                // stack only when configured.
                .wrap(Condition::new(maintenance_file, from_fn(crate::maintenance::guard)))
                .wrap(cors(&origins, cors_credentials))
                .wrap(Condition::new(tracing_on, from_fn(continue_trace)))
                .wrap(from_fn(edge))
        })
        .workers(config.workers)
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .client_request_timeout(config.header_read_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .keep_alive(config.keep_alive)
        .tls_handshake_timeout(config.tls_handshake_timeout)
        // actix counts connections per worker.
        .max_connections(connection_cap(config.max_connections).div_ceil(config.workers))
        .on_connect(move |io, data| conn_watch.on_connect(io, data))
        // Small responses go out at once: with Nagle, a response split over two writes (TLS
        // record, body) waits for the client's delayed ACK, tens of milliseconds.
        .tcp_nodelay(true)
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
        if !config.verify_tokens || !config.rate_limit.enabled {
            tracing::warn!(
                verify_tokens = config.verify_tokens,
                rate_limit = config.rate_limit.enabled,
                "edge checks switched off: benchmark configuration, never for real traffic"
            );
        }
        config.rate_limit.log("rate-limit policies");
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
            edge: edge_for_drain,
            shutdown_timeout: config.shutdown_timeout,
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
                // Stop accepting, then wait for in-flight requests only: idle keep-alive
                // connections (HTTP/2 clients keep theirs open) must not hold the exit up.
                let stopping = handle.stop(true);
                let idle = wait_until_idle(&self.edge, self.shutdown_timeout);
                tokio::select! {
                    () = stopping => { server.await??; }
                    idle = idle => {
                        if idle {
                            tracing::info!("no request in flight; closing idle connections");
                        } else {
                            tracing::warn!(timeout_s = self.shutdown_timeout.as_secs(), "requests still in flight at the shutdown timeout; closing them");
                        }
                    }
                }
            }
        }
        admin_trigger.trigger();
        admin.await??;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Resolves when no request is in flight (true) or at `timeout` (false).
async fn wait_until_idle(edge: &Edge, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    loop {
        tick.tick().await;
        if edge.in_flight() == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// File descriptors kept for everything but client connections: each worker's gRPC channels and
/// Redis connection, the admin port, certificate files.
const FD_RESERVE: u64 = 512;

/// Raises the soft open-files limit to the hard one, and fits the connection cap under it: past
/// the limit, accepting fails, and the listener stalls for every client rather than only the
/// newest ones waiting in the backlog.
fn connection_cap(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = if limit > 2 * FD_RESERVE {
        limit - FD_RESERVE
    } else {
        limit / 2
    };
    if wanted as u64 <= room {
        return wanted;
    }
    tracing::warn!(
        max_connections = wanted,
        open_files_limit = limit,
        using = room,
        "MAX_CONNECTIONS is more than the open-files limit (ulimit -n) leaves room for; raise the limit \
         (LimitNOFILE, the container's nofile ulimit) or lower MAX_CONNECTIONS"
    );
    usize::try_from(room).unwrap_or(wanted).max(1)
}

#[cfg(test)]
mod tests {
    //! The edge's behaviour for failures that no public route can provoke on purpose (a panic,
    //! a JSON body), checked in-process with the same middleware and extractor configuration.

    use actix_web::{App, HttpResponse, test, web};
    use serde_json::Value;

    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Body {
        amount: u32,
    }

    async fn echo(body: web::Json<Body>) -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({"amount": body.amount}))
    }

    async fn boom() -> HttpResponse {
        panic!("secret detail that must not leak")
    }

    /// The edge with a 1 KiB body limit, 5 s per request, 1 s per body.
    fn test_edge() -> Edge {
        let (request, body) = (std::time::Duration::from_secs(5), std::time::Duration::from_secs(1));
        let upload = std::time::Duration::from_secs(60);
        Edge::new(
            1024,
            Default::default(),
            request,
            body,
            upload,
            &prometheus::Registry::new(),
        )
        .expect("metrics")
    }

    async fn call(req: test::TestRequest) -> (u16, actix_web::http::header::HeaderMap, Value) {
        let edge_state = web::Data::new(test_edge());
        let app = test::init_service(
            App::new()
                .app_data(edge_state)
                .app_data(json_config(1024))
                .route("/echo", web::post().to(echo))
                .route("/boom", web::get().to(boom))
                .default_service(web::to(routes::not_found))
                .wrap(from_fn(edge)),
        )
        .await;
        // Errors that leave the middleware as `Err` are rendered by actix; do the same here.
        let res = match test::try_call_service(&app, req.to_request()).await {
            Ok(res) => res.map_into_boxed_body(),
            Err(e) => {
                actix_web::dev::ServiceResponse::new(test::TestRequest::default().to_http_request(), e.error_response())
            }
        };
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body: Value = serde_json::from_slice(&test::read_body(res).await).unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Another spelling of a route's path never reaches it: 400 in the error shape, hardened.
    #[actix_web::test]
    async fn other_spellings_of_a_path_are_refused_before_the_route() {
        for uri in ["/%65cho", "//echo", "/echo%7E"] {
            let (status, headers, body) = call(
                test::TestRequest::post()
                    .uri(uri)
                    .insert_header(("content-type", "application/json"))
                    .set_payload(r#"{"amount": 1}"#),
            )
            .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("BAD_REQUEST")),
                "{uri}"
            );
            assert!(headers.contains_key("x-request-id"), "{uri}");
        }
        let (status, _, _) = call(
            test::TestRequest::post()
                .uri("/echo")
                .insert_header(("content-type", "application/json"))
                .set_payload(r#"{"amount": 1}"#),
        )
        .await;
        assert_eq!(status, 200);
    }

    #[actix_web::test]
    async fn cors_credentials_only_when_configured() {
        for credentials in [false, true] {
            let app = test::init_service(
                App::new()
                    .route("/echo", web::post().to(echo))
                    .wrap(cors(&["https://app.example.com".to_owned()], credentials)),
            )
            .await;
            let req = test::TestRequest::default()
                .method(actix_web::http::Method::OPTIONS)
                .uri("/echo")
                .insert_header(("origin", "https://app.example.com"))
                .insert_header(("access-control-request-method", "POST"))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status().as_u16(), 200);
            let allowed = res
                .headers()
                .get("access-control-allow-credentials")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert_eq!(
                allowed.as_deref(),
                credentials.then_some("true"),
                "credentials={credentials}"
            );
        }
    }

    #[actix_web::test]
    async fn malformed_json_is_400_in_the_error_shape() {
        let req = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"amount\": ");
        let (status, headers, body) = call(req).await;
        assert_eq!(status, 400);
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], ErrorCode::MalformedJson.as_str());
        assert_eq!(
            body["error"]["request_id"].as_str(),
            headers.get("x-request-id").and_then(|v| v.to_str().ok())
        );
    }

    #[actix_web::test]
    async fn unknown_field_is_named() {
        let req = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", "application/json"))
            .set_payload(r#"{"amount":1,"admin":true}"#);
        let (status, _, body) = call(req).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], ErrorCode::ValidationFailed.as_str());
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| m.contains("admin")),
            "{body}"
        );
    }

    #[actix_web::test]
    async fn wrong_content_type_is_415() {
        let req = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", "text/plain"))
            .set_payload(r#"{"amount":1}"#);
        let (status, _, body) = call(req).await;
        assert_eq!(status, 415);
        assert_eq!(body["error"]["code"], ErrorCode::UnsupportedMediaType.as_str());
    }

    #[actix_web::test]
    async fn chunked_body_over_the_limit_is_413() {
        // No Content-Length: the limit is enforced while reading.
        let req = test::TestRequest::post()
            .uri("/echo")
            .insert_header(("content-type", "application/json"))
            .set_payload(format!(r#"{{"amount":1,"pad":"{}"}}"#, "x".repeat(4096)));
        let mut req = req.to_request();
        req.headers_mut().remove("content-length");
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(test_edge()))
                .app_data(json_config(1024))
                .route("/echo", web::post().to(echo))
                .wrap(from_fn(edge)),
        )
        .await;
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status().as_u16(), 413);
        let body: Value = serde_json::from_slice(&test::read_body(res).await).expect("json");
        assert_eq!(body["error"]["code"], ErrorCode::PayloadTooLarge.as_str());
    }

    #[actix_web::test]
    async fn a_panic_is_500_without_detail_and_with_security_headers() {
        let (status, headers, body) = call(
            test::TestRequest::get()
                .uri("/boom")
                .insert_header(("x-request-id", "trace-me-1")),
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], ErrorCode::Internal.as_str());
        assert_eq!(body["error"]["request_id"], "trace-me-1");
        assert!(!body.to_string().contains("secret detail"));
        assert_eq!(
            headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            Some("trace-me-1")
        );
        assert_eq!(
            headers.get("x-frame-options").and_then(|v| v.to_str().ok()),
            Some("DENY")
        );
    }

    #[actix_web::test]
    async fn client_request_ids_that_are_not_tokens_are_replaced() {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (status, headers, _) = call(
                test::TestRequest::get()
                    .uri("/nothing")
                    .insert_header(("x-request-id", "a b<c>")),
            )
            .await;
            assert_eq!(status, 404);
            let id = headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let parsed = uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1], "each request gets an ID of its own");
    }
}
