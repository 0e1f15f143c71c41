//! The process's Prometheus registry (with `process_*`, `build_info` and pool gauges every
//! process exports), and gRPC server metrics recorded per method.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tonic::codegen::http;

/// The commit a binary was built from: `PLATFORM_COMMIT` at build time (the image build sets it),
/// else `unknown`.
pub const COMMIT: &str = match option_env!("PLATFORM_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// A process's registry with what every process exports from start: `process_*` (resident
/// memory, CPU seconds, open files; Linux) and `build_info{version,commit}` at 1.
pub fn process_registry() -> prometheus::Result<Registry> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    let build = register(
        &registry,
        IntGaugeVec::new(
            Opts::new(
                "build_info",
                "1, labelled with the version and commit of the running binary",
            ),
            &["version", "commit"],
        )?,
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT]).set(1);
    Ok(registry)
}

/// A counter with `labels`, registered with every series of `known` at 0, so an alert on its
/// increase sees the first event (a series born at 1 has no increase). `known` lists label values
/// in the order of `labels`.
pub fn counter_vec_from_zero(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    known: &[&[&str]],
) -> prometheus::Result<IntCounterVec> {
    let counter = counter_vec(registry, name, help, labels)?;
    for values in known {
        counter.get_metric_with_label_values(values)?;
    }
    Ok(counter)
}

/// What a connection pool reports at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections checked out.
    pub in_use: i64,
    /// Connections open and waiting in the pool.
    pub idle: i64,
    /// Callers waiting for a connection right now.
    pub waiting: i64,
    /// The most connections the pool opens.
    pub max: i64,
}

impl PoolStatus {
    /// From the figures every deadpool `Status` has (the PostgreSQL and Redis pools link
    /// different deadpool versions).
    pub fn of_deadpool(max_size: usize, size: usize, available: usize, waiting: usize) -> Self {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            in_use: n(size.saturating_sub(available)),
            idle: n(available),
            waiting: n(waiting),
            max: n(max_size),
        }
    }
}

/// `pool_connections{pool,state="in_use"|"idle"}`, `pool_waiting{pool}` and
/// `pool_max_connections{pool}`, read from the pool at each scrape (no task, never stale).
/// `pool` names it: `postgres`, `redis`.
pub fn register_pool(
    registry: &Registry,
    pool: &str,
    status: impl Fn() -> PoolStatus + Send + Sync + 'static,
) -> prometheus::Result<()> {
    let labels = prometheus::labels! { "pool".to_owned() => pool.to_owned() };
    let connections = IntGaugeVec::new(
        Opts::new("pool_connections", "Connections of a pool, by state (in_use, idle)").const_labels(labels.clone()),
        &["state"],
    )?;
    let waiting = IntGauge::with_opts(
        Opts::new("pool_waiting", "Callers waiting for a connection of the pool").const_labels(labels.clone()),
    )?;
    let max =
        IntGauge::with_opts(Opts::new("pool_max_connections", "Most connections the pool opens").const_labels(labels))?;
    registry.register(Box::new(PoolCollector {
        connections,
        waiting,
        max,
        status: Box::new(status),
    }))
}

struct PoolCollector {
    connections: IntGaugeVec,
    waiting: IntGauge,
    max: IntGauge,
    status: Box<dyn Fn() -> PoolStatus + Send + Sync>,
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.connections.desc();
        descs.extend(self.waiting.desc());
        descs.extend(self.max.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = (self.status)();
        self.connections.with_label_values(&["in_use"]).set(status.in_use);
        self.connections.with_label_values(&["idle"]).set(status.idle);
        self.waiting.set(status.waiting);
        self.max.set(status.max);
        let mut families = self.connections.collect();
        families.extend(self.waiting.collect());
        families.extend(self.max.collect());
        families
    }
}

/// `tls_certificate_expiry_timestamp_seconds{cert}`: when the first certificate of each PEM file
/// expires (Unix seconds), read at each scrape so a renewed file shows at once. `certs` pairs a
/// name (`grpc`: the mTLS certificate; `public`: the gateway's HTTPS) with its file; one call per
/// process. A file that cannot be read or parsed exports no series for that scrape.
pub fn register_certificate_expiry(
    registry: &Registry,
    certs: Vec<(&'static str, std::path::PathBuf)>,
) -> prometheus::Result<()> {
    let gauge = prometheus::GaugeVec::new(
        Opts::new(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate this process presents expires (Unix seconds), by certificate",
        ),
        &["cert"],
    )?;
    registry.register(Box::new(CertificateExpiry { gauge, certs }))
}

struct CertificateExpiry {
    gauge: prometheus::GaugeVec,
    certs: Vec<(&'static str, std::path::PathBuf)>,
}

impl Collector for CertificateExpiry {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;
        self.gauge.reset();
        for (name, path) in &self.certs {
            let expiry = CertificateDer::pem_file_iter(path)
                .ok()
                .and_then(|mut certs| certs.next())
                .and_then(Result::ok)
                .and_then(|der| not_after(&der));
            if let Some(expiry) = expiry {
                self.gauge.with_label_values(&[name]).set(expiry as f64);
            }
        }
        self.gauge.collect()
    }
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `notAfter` of an X.509 certificate, in Unix seconds (RFC 5280: Certificate → TBSCertificate
/// → [version] serial signature issuer validity{notBefore notAfter}).
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der_element(der)?;
    let (_, tbs, _) = der_element(certificate)?;
    let (tag, _, mut rest) = der_element(tbs)?;
    if tag == 0xa0 {
        // Explicit version; the serial number follows.
        (_, _, rest) = der_element(rest)?;
    }
    let (_, _, rest) = der_element(rest)?; // signature algorithm
    let (_, _, rest) = der_element(rest)?; // issuer
    let (_, validity, _) = der_element(rest)?;
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, time, _) = der_element(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime, YYMMDDHHMMSSZ: years 50-99 are 19xx (RFC 5280 4.1.2.5.1).
        0x17 => format!("{}{text}", if text.get(..2)? >= "50" { "19" } else { "20" }),
        // GeneralizedTime, YYYYMMDDHHMMSSZ.
        0x18 => text.to_owned(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Registers `metric` in `registry` and hands it back, so a metric is made and registered in one
/// expression: `let hits = register(registry, IntCounter::new("hits_total", "…")?)?;`. Fails
/// when the registry already holds a metric of that name (two owners of one series).
pub fn register<M>(registry: &Registry, metric: M) -> prometheus::Result<M>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A counter with `labels`, made and registered in `registry` in one call (most labelled metrics
/// are of this kind). Fails as [`register`] does.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// `grpc_server_handled_total{method,code}` and `grpc_server_handling_seconds{method}`.
#[derive(Clone)]
pub struct GrpcMetrics {
    handled: IntCounterVec,
    seconds: HistogramVec,
}

impl GrpcMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let handled = counter_vec(
            registry,
            "grpc_server_handled_total",
            "gRPC calls completed, by method and status code",
            &["method", "code"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time to produce the response headers of a gRPC call",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method"],
        )?;
        Ok(Self {
            handled,
            seconds: register(registry, seconds)?,
        })
    }
}

impl<S> tower::Layer<S> for GrpcMetrics {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The path is "/package.Service/Method"; unknown paths are folded into one label so a
        // scanner cannot blow up the metric's cardinality.
        let method = grpc_method_label(req.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            metrics
                .seconds
                .with_label_values(&[&method])
                .observe(started.elapsed().as_secs_f64());
            let code = match &result {
                // A trailers-only response (every error status) carries grpc-status in the
                // headers; a streamed OK carries it in trailers, after this point.
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |c| code_name(tonic::Code::from(c))),
                Err(_) => "TRANSPORT",
            };
            metrics.handled.with_label_values(&[method.as_str(), code]).inc();
            result
        })
    }
}

fn grpc_method_label(path: &str) -> String {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(service), Some(method), None)
            if service.len() < 128
                && method.len() < 128
                && service
                    .chars()
                    .chain(method.chars())
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') =>
        {
            format!("{service}/{method}")
        }
        _ => "unknown".to_owned(),
    }
}

/// The label for a status code, as the gRPC spec spells it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::{
        PoolStatus, counter_vec, counter_vec_from_zero, grpc_method_label, process_registry,
        register_certificate_expiry, register_pool, render,
    };

    #[test]
    fn every_process_exports_build_info_and_process_metrics_from_start() {
        let text = render(&process_registry().expect("registry"));
        assert!(
            text.contains(&format!(
                "build_info{{commit=\"{}\",version=\"{}\"}} 1",
                super::COMMIT,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }

    #[test]
    fn certificate_expiry_is_read_from_the_file() {
        let dir = std::env::temp_dir().join(format!("cert-expiry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut params = rcgen::CertificateParams::new(vec!["gateway".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let path = dir.join("gateway.crt");
        std::fs::write(&path, cert.pem()).expect("write");
        let registry = Registry::new();
        register_certificate_expiry(&registry, vec![("grpc", path), ("public", dir.join("missing.crt"))])
            .expect("register");
        let text = render(&registry);
        // 2031-03-04T00:00:00Z
        assert!(
            text.contains("tls_certificate_expiry_timestamp_seconds{cert=\"grpc\"} 1930348800"),
            "{text}"
        );
        assert!(
            !text.contains("cert=\"public\""),
            "an unreadable file exports nothing: {text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn known_series_start_at_zero() {
        let registry = Registry::new();
        counter_vec_from_zero(&registry, "events_total", "e", &["kind"], &[&["a"], &["b"]]).expect("register");
        let text = render(&registry);
        assert!(text.contains("events_total{kind=\"a\"} 0"), "{text}");
        assert!(text.contains("events_total{kind=\"b\"} 0"), "{text}");
    }

    #[test]
    fn pool_gauges_are_read_at_each_scrape() {
        let registry = Registry::new();
        let status = std::sync::Arc::new(std::sync::Mutex::new(PoolStatus::default()));
        let read = status.clone();
        register_pool(&registry, "postgres", move || *read.lock().expect("lock")).expect("register");
        *status.lock().expect("lock") = PoolStatus {
            in_use: 3,
            idle: 2,
            waiting: 1,
            max: 10,
        };
        let text = render(&registry);
        for line in [
            "pool_connections{pool=\"postgres\",state=\"in_use\"} 3",
            "pool_connections{pool=\"postgres\",state=\"idle\"} 2",
            "pool_waiting{pool=\"postgres\"} 1",
            "pool_max_connections{pool=\"postgres\"} 10",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn a_name_has_one_owner() {
        let registry = Registry::new();
        let first = counter_vec(&registry, "hits_total", "hits", &["kind"]).expect("first owner");
        first.with_label_values(&["a"]).inc();
        let second = counter_vec(&registry, "hits_total", "hits", &["kind"]);
        assert!(
            matches!(second, Err(prometheus::Error::AlreadyReg)),
            "a second owner of hits_total is refused"
        );
        // The first owner's series is untouched.
        assert_eq!(first.with_label_values(&["a"]).get(), 1);
        assert_eq!(registry.gather().len(), 1);
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            grpc_method_label("/auth.v1.AuthService/GetJwks"),
            "auth.v1.AuthService/GetJwks"
        );
        assert_eq!(grpc_method_label("/x/y/z"), "unknown");
        assert_eq!(grpc_method_label("/a'b/c"), "unknown");
        assert_eq!(grpc_method_label(&format!("/{}/m", "a".repeat(500))), "unknown");
    }
}
