//! Logging and traces, set up once per process.
//!
//! `LOG_FORMAT=json` (the default when stderr is not a terminal) writes one JSON object per line
//! with `service`, `version`, `environment`, and the fields of every enclosing span (so a
//! `request_id` recorded on a request span appears on each line logged inside it).
//! `LOG_FORMAT=pretty` is for people at a terminal. `LOG_LEVEL` takes an `EnvFilter` directive.
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (an `http://` URL of an OpenTelemetry collector) turns spans into
//! OpenTelemetry spans, exported in batches over OTLP/gRPC with the process's `service.name` and
//! version; JSON lines then carry `trace_id` and `span_id`. A trace continues across processes
//! through the W3C `traceparent` (and `tracestate`): [`continue_remote`] on the receiving span,
//! [`inject`] into a gRPC call, [`current_traceparent`] for what is stored to be sent on later.
//! Unset, there is no OpenTelemetry layer at all: none of these allocate or look anything up.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Env, Environment};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector spans are exported to; unset, none are.
    pub otlp_endpoint: Option<String>,
}

impl LogConfig {
    pub fn from_env(env: &Env) -> Self {
        let default_format = if std::io::stderr().is_terminal() {
            "pretty"
        } else {
            "json"
        };
        let format = match env.one_of("LOG_FORMAT", default_format, &["json", "pretty"]) {
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Json,
        };
        let level = env.optional_string("LOG_LEVEL").unwrap_or_else(|| "info".to_owned());
        if EnvFilter::try_new(&level).is_err() {
            env.problem(
                "LOG_LEVEL",
                format!("is not a valid filter (e.g. info or warn,gateway=debug), got {level:?}"),
            );
        }
        let otlp_endpoint = env.optional_string(OTLP_ENDPOINT_VAR).filter(|v| !v.is_empty());
        if let Some(endpoint) = &otlp_endpoint
            && !valid_otlp_endpoint(endpoint)
        {
            env.problem(
                OTLP_ENDPOINT_VAR,
                format!("must be an http:// URL of an OTLP/gRPC collector (e.g. http://otel-collector:4317), got {endpoint:?}"),
            );
        }
        Self {
            format,
            level,
            otlp_endpoint,
        }
    }
}

const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A collector beside the process (a sidecar or the cluster's agent), reached in plain gRPC:
/// TLS to the collector is not built in.
fn valid_otlp_endpoint(endpoint: &str) -> bool {
    endpoint.starts_with("http://")
        && endpoint
            .parse::<tonic::transport::Uri>()
            .is_ok_and(|uri| uri.host().is_some_and(|h| !h.is_empty()))
}

/// True once spans are exported; everything trace-related is skipped otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Kept to flush the last spans at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether this process exports spans (`OTEL_EXPORTER_OTLP_ENDPOINT` set and the exporter built).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Exports the spans still waiting in the batch (at most 5 s). Call once, on the way out.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
    {
        tracing::warn!(error = %e, "could not export the last spans");
    }
}

/// The OTLP exporter, its tonic channel driven by a runtime of its own: `init` runs before the
/// process's runtime exists, and the batch processor exports from a thread of its own.
fn tracer_provider(
    service: &'static str,
    environment: Environment,
    endpoint: &str,
) -> anyhow::Result<SdkTracerProvider> {
    use anyhow::Context as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the OTLP exporter's runtime")?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("the OTLP span exporter")?
    };
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .context("the OTLP exporter's thread")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "deployment.environment.name",
            environment.as_str(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber (and, with `OTEL_EXPORTER_OTLP_ENDPOINT`, the span exporter).
/// Call once, first thing in `main`.
pub fn init(service: &'static str, environment: Environment, config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, exporter_error) = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => match tracer_provider(service, environment, endpoint) {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let otel = provider.as_ref().map(|provider| otel_layer(provider.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match config.format {
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(JsonLayer {
                service,
                version: env!("CARGO_PKG_VERSION"),
                environment: environment.as_str(),
                traces: provider.is_some(),
                dispatch: OnceLock::new(),
                sink: stderr_sink(),
            })
            .try_init(),
    };
    // A second init (several apps in one test process) keeps the first subscriber; that is fine.
    if result.is_ok()
        && let Some(provider) = provider
    {
        let _ = PROVIDER.set(provider);
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = config.otlp_endpoint.as_deref().unwrap_or_default(),
            "exporting spans over OTLP"
        );
    }
    if let Some(e) = exporter_error {
        tracing::error!(error = format!("{e:#}"), "spans are not exported");
    }
}

/// `tracing` spans as OpenTelemetry spans, with only what a trace viewer needs.
fn otel_layer<S>(
    tracer: opentelemetry_sdk::trace::Tracer,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // A span is started when first needed (a child, its context, its end), not when first
        // entered: the gateway's request span gets its remote parent after it is entered.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
}

/// Where JSON lines go: stderr, or a test's buffer.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

fn stderr_sink() -> Sink {
    Box::new(|line| {
        let _ = std::io::stderr().lock().write_all(line);
    })
}

/// The W3C trace-context headers of a request, as an OpenTelemetry extractor.
struct TraceHeaders<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` (new, not yet entered by a child) continue the trace of a `traceparent` that came
/// in with a request, or was stored with an event. A missing or malformed one is ignored: the
/// span then starts a trace of its own. Does nothing unless spans are exported.
pub fn continue_remote(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !exporting() {
        return;
    }
    let Some(traceparent) = traceparent else {
        return;
    };
    let cx = TraceContextPropagator::new().extract(&TraceHeaders {
        traceparent: Some(traceparent),
        tracestate,
    });
    if cx.span().span_context().is_valid() {
        // Only fails for a span already started, which a caller's own bug would be; the trace
        // then stays one of its own.
        let _ = span.set_parent(cx);
    }
}

/// gRPC metadata as an OpenTelemetry injector.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Puts `span`'s trace context (`traceparent`, `tracestate`) into a call's metadata, so that the
/// service's span continues the trace as its child. Does nothing unless spans are exported.
pub fn inject(span: &Span, metadata: &mut tonic::metadata::MetadataMap) {
    if !exporting() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// The W3C `traceparent` of the current span (`00-<trace id>-<span id>-<flags>`), or "" outside
/// a trace or when spans are not exported: stored with an outbox event, it lets the consumer's
/// span continue the trace of the request that wrote the event.
pub fn current_traceparent() -> String {
    if !exporting() {
        return String::new();
    }
    traceparent_of(&Span::current().context())
}

fn traceparent_of(cx: &opentelemetry::Context) -> String {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return String::new();
    }
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// Writes each event as one JSON line on stderr.
struct JsonLayer {
    service: &'static str,
    version: &'static str,
    environment: &'static str,
    /// Spans are exported: lines inside a span carry its `trace_id` and `span_id`.
    traces: bool,
    /// The subscriber this layer is part of, to read a span's OpenTelemetry context.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    sink: Sink,
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if is_otel_field(field) {
            return;
        }
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().to_owned(), Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if is_otel_field(field) {
            return;
        }
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, so an operator sees why, not just the outermost wrapper.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
}

/// `otel.name`, `otel.kind`, ...: instructions to the OpenTelemetry layer, not log fields.
fn is_otel_field(field: &Field) -> bool {
    field.name().starts_with("otel.")
}

impl JsonLayer {
    /// The trace and span ids of the innermost span of `scope` that has an OpenTelemetry context.
    fn trace_ids<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let scope = ctx.event_scope(event)?;
        for span in scope {
            let cx = tracing_opentelemetry::get_otel_context(&mut span.extensions_mut(), &dispatch);
            if let Some(cx) = cx {
                let otel_span = cx.span();
                let sc = otel_span.span_context();
                if sc.is_valid() {
                    return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
                }
            }
        }
        None
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().to_string().to_lowercase()),
        );
        line.insert("service".into(), Value::String(self.service.into()));
        line.insert("version".into(), Value::String(self.version.into()));
        line.insert("environment".into(), Value::String(self.environment.into()));
        line.insert("target".into(), Value::String(event.metadata().target().into()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (k, v) in fields {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if self.traces
            && let Some((trace_id, span_id)) = self.trace_ids(event, &ctx)
        {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        event.record(&mut JsonVisitor(&mut line));
        let mut out = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        out.push(b'\n');
        (self.sink)(&out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CLIENT_SPAN: &str = "00f067aa0ba902b7";

    /// Lines logged by `run` under a subscriber that traces (no exporter: spans are still made).
    fn logged(run: impl FnOnce()) -> Vec<Value> {
        EXPORTING.store(true, Ordering::Relaxed);
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(otel_layer(provider.tracer("test")))
            .with(JsonLayer {
                service: "test",
                version: "0",
                environment: "test",
                traces: true,
                dispatch: OnceLock::new(),
                sink: Box::new(move |line| sink.lock().expect("lines").extend_from_slice(line)),
            });
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(lines.lock().expect("lines").clone()).expect("utf-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn a_request_continues_the_callers_trace_and_every_line_inside_names_it() {
        let mut seen = (String::new(), String::new());
        let lines = logged(|| {
            // As in the gateway: the request's span is entered before its parent is known.
            let span = tracing::info_span!("http", request_id = "r1");
            let _entered = span.enter();
            let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
            continue_remote(&tracing::Span::current(), Some(&traceparent), Some("vendor=x"));
            tracing::info!("inside");
            let call = tracing::info_span!("grpc.client", otel.kind = "client");
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject(&call, &mut metadata);
            let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            seen = (current_traceparent(), get("traceparent"));
            assert_eq!(get("tracestate"), "vendor=x");
        });
        let (own, sent) = seen;
        // The request's span is a child of the client's: same trace, a span id of its own.
        assert!(own.starts_with(&format!("00-{CLIENT_TRACE}-")), "{own}");
        assert!(!own.contains(CLIENT_SPAN) && own.ends_with("-01"), "{own}");
        // The service is told the client span, a child of the request's.
        assert!(
            sent.starts_with(&format!("00-{CLIENT_TRACE}-")) && sent != own,
            "{sent}"
        );
        let line = lines.iter().find(|l| l["message"] == "inside").expect("the line");
        assert_eq!(line["trace_id"], CLIENT_TRACE);
        assert_eq!(line["span_id"].as_str(), own.split('-').nth(2));
        assert_eq!(line["request_id"], "r1");
        assert!(line.get("otel.kind").is_none(), "{line}");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_trace_of_its_own_and_lines_outside_have_none() {
        let mut own = String::new();
        let lines = logged(|| {
            tracing::info!("outside");
            for bad in [
                "",
                "00-xyz",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            ] {
                let span = tracing::info_span!("http");
                continue_remote(&span, Some(bad), None);
                let _entered = span.enter();
                own = current_traceparent();
                assert!(own.starts_with("00-") && !own.contains(CLIENT_TRACE), "{bad:?}: {own}");
            }
        });
        let outside = lines.iter().find(|l| l["message"] == "outside").expect("the line");
        assert!(outside.get("trace_id").is_none(), "{outside}");
        assert_eq!(own.len(), 55);
    }

    /// Without an exporter the OpenTelemetry layer is `None` in the stack: the filter still
    /// decides, and lines carry no trace fields.
    #[test]
    fn without_an_exporter_lines_are_as_before() {
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let otel: Option<tracing_opentelemetry::OpenTelemetryLayer<_, opentelemetry_sdk::trace::Tracer>> = None;
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(otel)
            .with(JsonLayer {
                service: "test",
                version: "0",
                environment: "test",
                traces: false,
                dispatch: OnceLock::new(),
                sink: Box::new(move |line| sink.lock().expect("lines").extend_from_slice(line)),
            });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc", otel.kind = "server", request_id = "r2");
            let _entered = span.enter();
            tracing::debug!("filtered out");
            tracing::info!("kept");
        });
        let text = String::from_utf8(lines.lock().expect("lines").clone()).expect("utf-8");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["message"], "kept");
        assert_eq!(lines[0]["request_id"], "r2");
        for absent in ["trace_id", "span_id", "otel.kind"] {
            assert!(lines[0].get(absent).is_none(), "{absent}: {text}");
        }
    }

    #[test]
    fn only_http_urls_name_a_collector() {
        for ok in ["http://otel-collector:4317", "http://127.0.0.1:4317"] {
            assert!(valid_otlp_endpoint(ok), "{ok}");
        }
        for bad in ["otel:4317", "https://otel:4317", "http://", "grpc://otel:4317"] {
            assert!(!valid_otlp_endpoint(bad), "{bad}");
        }
    }
}
