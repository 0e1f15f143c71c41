//! Maintenance windows (`MAINTENANCE_FILE`): announced on `GET /v1/status` before they start, and
//! in force while they run: every route but the operational ones answers 503 `MAINTENANCE` with
//! `Retry-After` (seconds until the window ends) and the window's message.
//!
//! The file is TOML, one `[[window]]` table per window; times are RFC 3339 with an offset (quoted
//! or as TOML date-times):
//!
//! ```toml
//! [[window]]
//! starts_at = "2026-12-24T02:00:00Z"
//! ends_at = "2026-12-24T03:00:00Z"
//! kind = "scheduled"            # scheduled | emergency
//! message = "Database upgrade. We are back at 03:00 UTC."
//! ```
//!
//! It is reloaded when it changes ([`crate::file_watch`]); a broken file is refused (logged with
//! its cause, `maintenance_file_reloads_total{result="refused"}`) and the windows in force stay.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _, web};
use chrono::{DateTime, Utc};
use prometheus::{IntGauge, Registry};
use serde::{Deserialize, Serialize};
use service_kit::config::Env;
use service_kit::errors::ErrorCode;

use crate::error::ApiError;
use crate::file_watch::{WatchedFile, watch};

/// Paths served during a window: probes, the windows themselves, and what a client needs to
/// understand the answer. The admin port is another server and never refuses.
const ALWAYS_SERVED: [&str; 5] = [
    "/health",
    "/ready",
    "/v1/status",
    "/openapi.json",
    "/.well-known/jwks.json",
];

/// At most this many windows in the file; a message at most this many characters.
const MAX_WINDOWS: usize = 100;
const MAX_MESSAGE_CHARS: usize = 500;

/// What kind of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Planned and announced ahead (the apps warn their users 48 hours before).
    Scheduled,
    /// Unplanned: announced when it starts.
    Emergency,
}

/// One maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub starts_at: DateTime<Utc>,
    /// Later than `starts_at`.
    pub ends_at: DateTime<Utc>,
    pub kind: Kind,
    /// For the users, shown by the apps (and the `message` of the 503 during the window).
    pub message: String,
}

/// `GET /v1/status`: current and upcoming windows, earliest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub windows: Vec<Window>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    window: Vec<Window>,
}

/// The windows of a file's text, earliest first, or why the text is refused.
pub fn parse(text: &str) -> Result<Vec<Window>, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    // TOML's own date-times become RFC 3339 strings, which is what a window's times are read from.
    if let Some(toml::Value::Array(windows)) = table.get_mut("window") {
        for window in windows.iter_mut().filter_map(toml::Value::as_table_mut) {
            for (_, value) in window.iter_mut() {
                if let toml::Value::Datetime(dt) = value {
                    *value = toml::Value::String(dt.to_string());
                }
            }
        }
    }
    let file: FileText = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| toml_error(text, &e))?;
    if file.window.len() > MAX_WINDOWS {
        return Err(format!("more than {MAX_WINDOWS} windows"));
    }
    for (i, w) in file.window.iter().enumerate() {
        let n = i + 1;
        if w.ends_at <= w.starts_at {
            return Err(format!("window {n}: ends_at must be after starts_at"));
        }
        let chars = w.message.trim().chars().count();
        if chars == 0 || chars > MAX_MESSAGE_CHARS {
            return Err(format!(
                "window {n}: message must have 1 to {MAX_MESSAGE_CHARS} characters"
            ));
        }
    }
    let mut windows = file.window;
    windows.sort_by_key(|w| (w.starts_at, w.ends_at));
    Ok(windows)
}

/// TOML's message on one line, with the line of the file it is about when it knows.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).map_or(0, |before| before.lines().count().max(1));
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// The windows not over at `now` (current and upcoming), earliest first.
pub fn upcoming(windows: &[Window], now: DateTime<Utc>) -> Vec<Window> {
    windows.iter().filter(|w| w.ends_at > now).cloned().collect()
}

/// The window in force at `now` (of several, the one that ends last) and when maintenance ends:
/// windows that overlap or touch it count as one.
pub fn in_force(windows: &[Window], now: DateTime<Utc>) -> Option<(&Window, DateTime<Utc>)> {
    let current = windows
        .iter()
        .filter(|w| w.starts_at <= now && now < w.ends_at)
        .max_by_key(|w| w.ends_at)?;
    let mut until = current.ends_at;
    while let Some(later) = windows
        .iter()
        .filter(|w| w.starts_at <= until && w.ends_at > until)
        .map(|w| w.ends_at)
        .max()
    {
        until = later;
    }
    Some((current, until))
}

/// The 503 during a window: its message, `Retry-After` the whole seconds until it ends (at least 1).
pub fn refusal(window: &Window, until: DateTime<Utc>, now: DateTime<Utc>) -> ApiError {
    let millis = (until - now).num_milliseconds().max(1);
    let seconds = u32::try_from((millis + 999) / 1000).unwrap_or(u32::MAX);
    ApiError {
        retry_after: Some(seconds),
        ..ApiError::coded(ErrorCode::Maintenance, window.message.clone())
    }
}

/// `MAINTENANCE_FILE` and how often it is read, parsed at start.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceConfig {
    /// The file, its text and its windows at start; `None` when unset (no windows, ever).
    pub file: Option<(String, String, Vec<Window>)>,
    /// `MAINTENANCE_RELOAD_SECONDS` (default 10).
    pub reload_every: Duration,
}

impl MaintenanceConfig {
    /// An unreadable or invalid file at start is a configuration problem (the process does not
    /// start); later, a broken change keeps the windows in force.
    pub fn from_env(env: &Env) -> Self {
        let reload_every = env.seconds_in("MAINTENANCE_RELOAD_SECONDS", 10, 1, 3600);
        let file = env
            .optional_string("MAINTENANCE_FILE")
            .filter(|p| !p.is_empty())
            .and_then(|path| {
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        env.problem("MAINTENANCE_FILE", format!("cannot be read ({path}): {e}"));
                        return None;
                    }
                };
                match parse(&text) {
                    Ok(windows) => Some((path, text, windows)),
                    Err(e) => {
                        env.problem("MAINTENANCE_FILE", format!("is invalid ({path}): {e}"));
                        None
                    }
                }
            });
        Self { file, reload_every }
    }
}

/// The windows in force, shared by every worker.
#[derive(Clone)]
pub struct Maintenance {
    windows: Arc<RwLock<Arc<Vec<Window>>>>,
    /// When the earliest window starts (Unix milliseconds; `i64::MAX` without any): before it,
    /// as with none, a request costs one atomic load here.
    first_start: Arc<AtomicI64>,
}

fn first_start(windows: &[Window]) -> i64 {
    windows
        .iter()
        .map(|w| w.starts_at.timestamp_millis())
        .min()
        .unwrap_or(i64::MAX)
}

impl Maintenance {
    fn new(windows: Vec<Window>) -> Self {
        Self {
            first_start: Arc::new(AtomicI64::new(first_start(&windows))),
            windows: Arc::new(RwLock::new(Arc::new(windows))),
        }
    }

    /// The windows of `config`, the file watched for changes, and `maintenance_active` kept up
    /// to date (every second). Needs the runtime.
    pub fn start(config: &MaintenanceConfig, registry: &Registry) -> prometheus::Result<Self> {
        let active = service_kit::metrics::register(
            registry,
            IntGauge::new("maintenance_active", "1 while a maintenance window is in force")?,
        )?;
        let reloads = service_kit::metrics::counter_vec(
            registry,
            "maintenance_file_reloads_total",
            "Changes of the maintenance-window file, by result (applied, refused)",
            &["result"],
        )?;
        let Some((path, text, windows)) = config.file.clone() else {
            return Ok(Self::new(Vec::new()));
        };
        let this = Self::new(windows);
        let file = WatchedFile {
            path,
            what: "maintenance-window file",
            text,
            every: config.reload_every,
            reloads,
        };
        let target = this.clone();
        watch(file, move |text| {
            let windows = parse(&text)?;
            tracing::info!(windows = windows.len(), "maintenance windows reloaded");
            target.replace(windows);
            Ok(())
        });
        let watched = this.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                active.set(i64::from(watched.refusal(Utc::now()).is_some()));
            }
        });
        Ok(this)
    }

    fn replace(&self, windows: Vec<Window>) {
        let first = first_start(&windows);
        *self.windows.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(windows);
        self.first_start.store(first, Ordering::Release);
    }

    fn snapshot(&self) -> Arc<Vec<Window>> {
        self.windows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current and upcoming windows.
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        Status {
            windows: upcoming(&self.snapshot(), now),
        }
    }

    /// The answer for a request at `now`, while a window is in force.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<ApiError> {
        if now.timestamp_millis() < self.first_start.load(Ordering::Acquire) {
            return None;
        }
        let windows = self.snapshot();
        in_force(&windows, now).map(|(window, until)| refusal(window, until, now))
    }
}

/// The middleware: during a window, every path but [`ALWAYS_SERVED`] is 503 `MAINTENANCE`, before
/// the rate limiter (nothing is counted or asked of Redis) and any handler.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let refused = match req.app_data::<web::Data<Maintenance>>() {
        Some(m) if !ALWAYS_SERVED.contains(&req.path()) => m.refusal(Utc::now()),
        _ => None,
    };
    match refused {
        Some(api) => Ok(req.into_response(api.error_response())),
        None => next.call(req).await.map(ServiceResponse::map_into_boxed_body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn window(starts: &str, ends: &str, message: &str) -> Window {
        Window {
            starts_at: at(starts),
            ends_at: at(ends),
            kind: Kind::Scheduled,
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_file_is_read_with_quoted_or_toml_times_and_sorted() {
        let text = r#"
[[window]]
starts_at = 2026-12-24T04:00:00+01:00
ends_at = 2026-12-24T05:00:00+01:00
kind = "emergency"
message = "Second"

[[window]]
starts_at = "2026-12-24T01:00:00Z"
ends_at = "2026-12-24T02:00:00Z"
kind = "scheduled"
message = "First"
"#;
        let windows = parse(text).expect("valid");
        assert_eq!(
            windows,
            vec![
                window("2026-12-24T01:00:00Z", "2026-12-24T02:00:00Z", "First"),
                Window {
                    kind: Kind::Emergency,
                    ..window("2026-12-24T03:00:00Z", "2026-12-24T04:00:00Z", "Second")
                },
            ]
        );
        assert_eq!(parse("").expect("no windows"), Vec::new());
    }

    #[test]
    fn a_broken_file_is_refused_with_its_cause() {
        let base = |extra: &str| {
            format!(
                "[[window]]\nstarts_at = \"2026-12-24T01:00:00Z\"\nends_at = \"2026-12-24T02:00:00Z\"\nkind = \"scheduled\"\n{extra}"
            )
        };
        for (text, cause) in [
            ("[[window]\n".to_owned(), "line 1: unclosed array table"),
            (base("message = \"x\"\nsevere = true\n"), "severe"),
            (base(""), "message"),
            (base("message = \"  \"\n"), "message"),
            (base("message = \"x\"\n").replace("scheduled", "sometime"), "sometime"),
            (base("message = \"x\"\n").replace("02:00:00Z", "00:00:00Z"), "ends_at"),
            (
                base("message = \"x\"\n").replace("2026-12-24T01:00:00Z", "tomorrow"),
                "input",
            ),
            ("[[windows]]\n".to_owned(), "windows"),
        ] {
            let e = parse(&text).expect_err(&text);
            assert!(!e.contains('\n'), "{e}");
            assert!(e.to_lowercase().contains(cause), "{text}: {e}");
        }
    }

    #[test]
    fn past_windows_are_dropped_from_the_status() {
        let windows = vec![
            window("2026-12-24T01:00:00Z", "2026-12-24T02:00:00Z", "past"),
            window("2026-12-24T02:30:00Z", "2026-12-24T03:30:00Z", "current"),
            window("2026-12-25T01:00:00Z", "2026-12-25T02:00:00Z", "upcoming"),
        ];
        let shown = upcoming(&windows, at("2026-12-24T03:00:00Z"));
        let messages: Vec<_> = shown.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(messages, ["current", "upcoming"]);
    }

    #[test]
    fn a_window_in_force_refuses_until_its_end_and_overlaps_count_as_one() {
        let windows = vec![
            window("2026-12-24T01:00:00Z", "2026-12-24T02:00:00Z", "first"),
            window("2026-12-24T01:30:00Z", "2026-12-24T02:30:00Z", "second"),
            window("2026-12-24T02:30:00Z", "2026-12-24T03:00:00Z", "third"),
            window("2026-12-25T01:00:00Z", "2026-12-25T02:00:00Z", "later"),
        ];
        assert!(in_force(&windows, at("2026-12-24T00:59:59Z")).is_none());
        assert!(in_force(&windows, at("2026-12-24T03:00:00Z")).is_none());
        let now = at("2026-12-24T01:15:00Z");
        let (w, until) = in_force(&windows, now).expect("in force");
        assert_eq!((w.message.as_str(), until), ("first", at("2026-12-24T03:00:00Z")));
        let e = refusal(w, until, now);
        assert_eq!((e.code, e.status().as_u16()), (ErrorCode::Maintenance, 503));
        assert_eq!(e.retry_after, Some(105 * 60));
        assert_eq!(e.message, "first");
        // Less than a second left is still "retry after 1 second", never 0.
        let almost = at("2026-12-25T01:59:59.500Z");
        let (w, until) = in_force(&windows, almost).expect("in force");
        assert_eq!(refusal(w, until, almost).retry_after, Some(1));
    }

    #[test]
    fn only_a_window_in_force_refuses() {
        let m = Maintenance::new(Vec::new());
        assert!(m.refusal(Utc::now()).is_none());
        m.replace(vec![window("2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "now")]);
        assert_eq!(m.refusal(Utc::now()).map(|e| e.code), Some(ErrorCode::Maintenance));
        m.replace(vec![window("2999-01-01T00:00:00Z", "2999-01-02T00:00:00Z", "later")]);
        assert!(m.refusal(Utc::now()).is_none());
        assert!(m.refusal(at("2999-01-01T12:00:00Z")).is_some());
        m.replace(Vec::new());
        assert!(m.refusal(Utc::now()).is_none());
    }
}
