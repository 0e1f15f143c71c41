//! Logging, set up once per process.
//!
//! `LOG_FORMAT=json` (the default when stderr is not a terminal) writes one JSON object per line
//! with `service`, `version`, `environment`, and the fields of every enclosing span (so a
//! `request_id` or `trace_id` recorded on a request span appears on each line logged inside it).
//! `LOG_FORMAT=pretty` is for people at a terminal. `LOG_LEVEL` takes an `EnvFilter` directive.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
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
        Self { format, level }
    }
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str, environment: Environment, config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
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
            })
            .try_init(),
    };
    // A second init (several apps in one test process) keeps the first subscriber; that is fine.
    let _ = result;
}

/// Writes each event as one JSON line on stderr.
struct JsonLayer {
    service: &'static str,
    version: &'static str,
    environment: &'static str,
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().to_owned(), Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
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

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
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
        event.record(&mut JsonVisitor(&mut line));
        let mut out = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        out.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&out);
    }
}
