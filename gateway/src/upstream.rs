//! One gRPC channel per service (connect and call deadlines, reconnecting on demand), the
//! metadata every call carries, and the readiness of everything the gateway depends on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use service_kit::admin::ReadyReport;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::UpstreamConfig;
use crate::redis_link::RedisLink;

/// How long a readiness probe waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Channels to the services and the link to Redis. Each HTTP worker has its own (see
/// [`Upstreams::for_worker`]), so a request's I/O is driven by the thread that serves it instead of
/// waking another thread twice per call; one more set serves readiness and the JWKS.
#[derive(Clone)]
pub struct Upstreams {
    pub auth: Channel,
    pub reports: Channel,
    /// reports-service for file uploads: the same server, with `UPLOAD_TIMEOUT_MS` as each call's deadline.
    pub reports_uploads: Channel,
    pub analytics: Channel,
    pub redis: Option<RedisLink>,
    draining: Arc<AtomicBool>,
    config: UpstreamConfig,
}

/// A lazy channel to `url`, over mTLS (the gateway's certificate, the server checked against the
/// internal CA) unless `GRPC_INSECURE`.
fn channel(url: &str, config: &UpstreamConfig) -> anyhow::Result<Channel> {
    channel_with_deadline(url, config, config.request_timeout)
}

/// An upload call's deadline: its body's (`UPLOAD_TIMEOUT_MS`, so a slow client is told apart
/// as 408), then a service call's to store it.
fn upload_deadline(config: &UpstreamConfig) -> Duration {
    config.upload_timeout + config.request_timeout
}

/// A lazy channel to `url` whose calls each have `deadline`.
fn channel_with_deadline(url: &str, config: &UpstreamConfig, deadline: Duration) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?;
    if let Some(tls) = config.tls.client_config() {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// A call to a service carrying the current request's id, and `authorization` (the whole header
/// value) when given. The deadline is the channel's (`GRPC_REQUEST_TIMEOUT_MS`).
pub fn request<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let md = request.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(crate::error::current_request_id()) {
        md.insert("x-request-id", v);
    }
    if let Some(value) = authorization
        && let Ok(v) = MetadataValue::try_from(value)
    {
        md.insert("authorization", v);
    }
    request
}

impl Upstreams {
    /// Builds lazy channels: nothing connects until the first call, so the gateway starts (and
    /// serves what it can) while a service is still down.
    pub fn new(config: &UpstreamConfig, redis_url: Option<&secrecy::SecretString>) -> anyhow::Result<Self> {
        Ok(Self {
            auth: channel(&config.auth_url, config)?,
            reports: channel(&config.reports_url, config)?,
            reports_uploads: channel_with_deadline(&config.reports_url, config, upload_deadline(config))?,
            analytics: channel(&config.analytics_url, config)?,
            redis: redis_url
                .map(|url| RedisLink::with_ca(url, config.redis_tls_ca.as_deref()))
                .transpose()?,
            draining: Arc::new(AtomicBool::new(false)),
            config: config.clone(),
        })
    }

    /// The same upstreams for one HTTP worker: its own lazy channels and Redis connection (their
    /// I/O runs on the runtime of the thread that first uses them, so call this on the worker),
    /// sharing the draining flag.
    pub fn for_worker(&self) -> anyhow::Result<Self> {
        Ok(Self {
            auth: channel(&self.config.auth_url, &self.config)?,
            reports: channel(&self.config.reports_url, &self.config)?,
            reports_uploads: channel_with_deadline(
                &self.config.reports_url,
                &self.config,
                upload_deadline(&self.config),
            )?,
            analytics: channel(&self.config.analytics_url, &self.config)?,
            redis: self.redis.as_ref().map(RedisLink::fresh),
            draining: self.draining.clone(),
            config: self.config.clone(),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `ready` when every dependency answers, `degraded` (still ready: serve what we can) when some
    /// do not, not ready only while draining or when nothing answers at all.
    pub async fn readiness(&self) -> ReadyReport {
        if self.is_draining() {
            return ReadyReport {
                ready: false,
                body: json!({"status": "draining"}),
            };
        }
        let (auth, reports, analytics, redis) = tokio::join!(
            serving(self.auth.clone()),
            serving(self.reports.clone()),
            serving(self.analytics.clone()),
            redis_up(self.redis.as_ref()),
        );
        let mut checks = json!({"auth": auth, "reports": reports, "analytics": analytics});
        let mut all = vec![auth, reports, analytics];
        if let Some(redis) = redis {
            checks["redis"] = json!(redis);
            all.push(redis);
        }
        let status = if all.iter().all(|up| *up) {
            "ready"
        } else if all.iter().any(|up| *up) {
            "degraded"
        } else {
            "unavailable"
        };
        ReadyReport {
            ready: status != "unavailable",
            body: json!({"status": status, "checks": checks}),
        }
    }
}

async fn serving(channel: Channel) -> bool {
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(resp)) => resp.into_inner().status == ServingStatus::Serving as i32,
        _ => false,
    }
}

/// `None` when Redis is not configured.
async fn redis_up(link: Option<&RedisLink>) -> Option<bool> {
    let pong = link?
        .query(CHECK_TIMEOUT, |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
    Some(pong.is_ok())
}
