//! The process's Prometheus registry, and gRPC server metrics recorded per method.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use tonic::codegen::http;

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

    use super::{counter_vec, grpc_method_label};

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
