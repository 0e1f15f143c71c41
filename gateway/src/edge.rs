//! What every request goes through first: request id, paths with another spelling refused (400),
//! panic guard, body-size and time limits, the one error shape for anything that failed
//! underneath, security headers, metrics, access log, and the gateway's security events
//! (`SecurityEvents`: refused tokens, 403s, rate-limit abuse).

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError, web};
use futures_util::FutureExt as _;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Registry};
use service_kit::errors::ErrorCode;
use service_kit::metrics::{counter_vec, counter_vec_from_zero, register};
use tracing::Instrument as _;

use crate::client_ip::{ClientAddr, TrustedProxies};
use crate::error::{ApiError, REQUEST_ID};

/// Limits, metrics and the trusted proxies the edge applies; shared by all workers.
#[derive(Clone)]
pub struct Edge {
    pub max_body_bytes: usize,
    /// Whose `X-Forwarded-For` (or `Forwarded`) is believed, for the client address.
    pub trusted_proxies: TrustedProxies,
    pub request_timeout: Duration,
    pub body_read_timeout: Duration,
    /// For file uploads, both the request's and the body's deadline (`UPLOAD_TIMEOUT_MS`).
    pub upload_timeout: Duration,
    /// Security events raised at the edge (refused tokens, 403s, address abuse).
    pub security: SecurityEvents,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

/// `security_events_total{event_type,severity}`, the gateway's share of the platform's security
/// events (auth-service counts its own under the same name), each also logged as one line with
/// `security_event` naming it.
#[derive(Clone)]
pub struct SecurityEvents(IntCounterVec);

impl SecurityEvents {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        // The events the gateway raises, from 0, so an alert sees the first one.
        counter_vec_from_zero(
            registry,
            "security_events_total",
            "Security events raised by the gateway, by type and severity",
            &["event_type", "severity"],
            &[
                &["token_rejected", "low"],
                &["token_rejected", "medium"],
                &["forbidden", "medium"],
                &["rate_limit_abuse", "medium"],
            ],
        )
        .map(Self)
    }

    /// Counts one event; the caller logs it with what it knows.
    pub fn raise(&self, event_type: &str, severity: &str) {
        self.0.with_label_values(&[event_type, severity]).inc();
    }

    /// Events counted so far of one type and severity.
    #[cfg(test)]
    pub fn count(&self, event_type: &str, severity: &str) -> u64 {
        self.0.with_label_values(&[event_type, severity]).get()
    }
}

/// The user agent as a security event's log line carries it (bounded).
pub fn user_agent(headers: &header::HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect()
}

/// Decrements the in-flight gauge however the request ends (even when the client goes away).
struct InFlight(IntGauge);

impl InFlight {
    fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Edge {
    /// Requests being served right now (the drain waits for this to reach zero).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn new(
        max_body_bytes: usize,
        trusted_proxies: TrustedProxies,
        request_timeout: Duration,
        body_read_timeout: Duration,
        upload_timeout: Duration,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let requests = counter_vec(
            registry,
            "http_requests_total",
            "HTTP requests answered, by method, route pattern and status",
            &["method", "route", "status"],
        )?;
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from request headers to response headers",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["method", "route"],
            )?,
        )?;
        let in_flight = register(
            registry,
            IntGauge::new("http_requests_in_flight", "HTTP requests being served right now")?,
        )?;
        Ok(Self {
            max_body_bytes,
            trusted_proxies,
            request_timeout,
            body_read_timeout,
            upload_timeout,
            security: SecurityEvents::new(registry)?,
            requests,
            duration,
            in_flight,
        })
    }
}

const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (header::STRICT_TRANSPORT_SECURITY, "max-age=63072000; includeSubDomains"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    ),
];

/// Headers only the gateway may set on a call inward; a client sending them is ignored.
const INTERNAL_HEADERS: [&str; 3] = ["x-user-id", "x-user-roles", "x-internal-token"];

/// A client-supplied request id is kept when it is a sane token, so a phone can correlate its
/// retries; anything else is replaced.
fn sane_request_id(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| v.to_owned())
}

fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Renders an error from a layer that is not ours (actix extractors, CORS) in the API's shape.
fn api_error_of(e: &Error) -> ApiError {
    if let Some(api) = e.as_error::<ApiError>() {
        return api.clone();
    }
    let status = e.as_response_error().status_code();
    if status.is_server_error() {
        tracing::error!(error = %e, "unexpected error below the edge");
    }
    api_error_for_status(status)
}

/// A request id of our own: a v4 UUID from the thread's CSPRNG (`Uuid::new_v4` makes a getrandom
/// system call per request: 0.7% of the gateway's CPU samples under load, in the kernel alone).
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// The errors actix-http's HTTP/1 dispatcher answers by itself, before any middleware sees a
/// request (bytes that are not HTTP, headers over its limit, headers that never finished): in the
/// API's error shape like any other, with the security headers and a request id of their own.
/// Fills `headers` and returns the body (see `actix_http::h1::set_error_body`).
pub fn protocol_error(status: StatusCode, headers: &mut header::HeaderMap) -> web::Bytes {
    let response = api_error_for_status(status)
        .with_request_id(new_request_id())
        .error_response();
    for (name, value) in response.headers() {
        headers.insert(name.clone(), value.clone());
    }
    response.into_body().try_into_bytes().unwrap_or_default()
}

/// The API error that stands for a bare status from a layer below.
fn api_error_for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::REQUEST_TIMEOUT => {
            ApiError::coded(ErrorCode::RequestTimeout, "The request did not arrive in time.")
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ApiError::coded(ErrorCode::HeadersTooLarge, "The request headers are too large.")
        }
        StatusCode::NOT_FOUND => ApiError::not_found(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::coded(ErrorCode::PayloadTooLarge, "The request body is too large."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::coded(
            ErrorCode::UnsupportedMediaType,
            "This content type is not accepted here.",
        ),
        StatusCode::FORBIDDEN => ApiError::coded(ErrorCode::Forbidden, "You may not do this."),
        s if s.is_client_error() => ApiError::coded(ErrorCode::BadRequest, "The request is not valid."),
        _ => ApiError::internal(),
    }
}

/// Whether a response is an error that some layer below rendered in its own format (for example
/// actix-cors refusing a preflight with a plain-text body).
fn foreign_error(res: &ServiceResponse<BoxBody>) -> bool {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    (status.is_client_error() || status.is_server_error()) && !json
}

/// Puts the security headers and the request id on a response.
pub fn harden(headers: &mut actix_web::http::header::HeaderMap, request_id: &str) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.remove(header::SERVER);
    headers.remove(HeaderName::from_static("x-powered-by"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
}

/// Paths whose identifiers the access log and spans leave out: the log line also names the caller
/// (`user_id`), and a reporter reading or withdrawing an anonymous report would tie their id to
/// the report's in every log and trace the gateway ships. The route pattern stays.
const UNLOGGED_IDS_UNDER: &str = "/v1/reports/";

/// `path` as the access log and the request's span show it: under [`UNLOGGED_IDS_UNDER`], every
/// segment that is not a plain lowercase word (`attachments`) is written `{id}`.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix(UNLOGGED_IDS_UNDER) else {
        return path.into();
    };
    let plain = |segment: &str| segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let segments: Vec<&str> = rest
        .split('/')
        .map(|segment| if plain(segment) { segment } else { "{id}" })
        .collect();
    format!("{UNLOGGED_IDS_UNDER}{}", segments.join("/")).into()
}

/// Why a raw request path is refused, if it is: a percent-encoded unreserved character (RFC 3986
/// ALPHA / DIGIT / `-._~`, which has a plain spelling: `/v1/auth/%6Cogin` is `/v1/auth/login` to
/// the router), an escape that is not two hex digits, or an empty segment (`//`).
pub fn path_refusal(path: &str) -> Option<&'static str> {
    if path.contains("//") {
        return Some("The path has an empty segment (//).");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) else {
            return Some("The path has a malformed percent-escape.");
        };
        let decoded = (hi * 16 + lo) as u8;
        if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
            return Some("The path percent-encodes a character that must be written as is.");
        }
        i = at + 3;
    }
    None
}

pub async fn edge(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let edge = req.app_data::<web::Data<Edge>>().cloned();
    let _in_flight = edge.as_ref().map(|e| InFlight::start(&e.in_flight));
    // The connection's watchdog leaves it alone while a request is in flight on it.
    let _busy = req
        .conn_data::<crate::conn_watch::Connection>()
        .map(crate::conn_watch::Connection::busy);
    let request_id = sane_request_id(req.headers().get("x-request-id")).unwrap_or_else(new_request_id);
    for name in INTERNAL_HEADERS {
        req.headers_mut().remove(name);
    }
    // Once per request; the rate limiter and the calls to the services read it.
    let client = edge
        .as_ref()
        .map(|e| ClientAddr::of_request(&e.trusted_proxies, &req))
        .unwrap_or_default();
    req.extensions_mut().insert(client);
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        method,
        path = %logged_path(req.path()),
        user_id = tracing::field::Empty
    );
    let is_upload = crate::upload::is_upload_path(req.method(), req.path());
    // A file upload takes minutes on a slow network; everything else has seconds.
    let (max_body, timeout, body_timeout) = edge.as_ref().map_or(
        (usize::MAX, Duration::from_secs(30), Duration::from_secs(30)),
        |e| match is_upload {
            true => (e.max_body_bytes, e.upload_timeout + e.request_timeout, e.upload_timeout),
            false => (e.max_body_bytes, e.request_timeout, e.body_read_timeout),
        },
    );
    // A body must arrive within its own deadline. HTTP/2 bodies need not declare a length, so
    // every request that may carry one is watched.
    let bodiless = matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS")
        && !req.headers().contains_key(header::CONTENT_LENGTH)
        && !req.headers().contains_key(header::TRANSFER_ENCODING);
    if edge.is_some() && !bodiless {
        let payload = actix_web::HttpMessage::take_payload(&mut req);
        req.set_payload(crate::body::with_read_deadline(payload, body_timeout));
    }

    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path_problem = path_refusal(req.uri().path());
    let inner = async {
        // The router matches the decoded path; anything that decodes to another spelling of a
        // route (or that a proxy in front may normalise differently) is refused before any
        // policy is chosen from it.
        if let Some(problem) = path_problem {
            tracing::info!(problem, "path refused");
            return Ok(req.into_response(ApiError::coded(ErrorCode::BadRequest, problem).error_response()));
        }
        // Refuse before reading: the body may be gigabytes.
        // Files have their own limit, applied as they stream (`upload`).
        if declared_len.is_some_and(|n| n > max_body as u64) && !is_upload {
            return Ok(req.into_response(ApiError::payload_too_large(max_body).error_response()));
        }
        // The request moves into the handler; when the handler fails without a response (panic,
        // timeout, an error below), the error itself renders the response (with the request id).
        match tokio::time::timeout(timeout, AssertUnwindSafe(next.call(req)).catch_unwind()).await {
            Ok(Ok(Ok(res))) => {
                let mut res = res.map_into_boxed_body();
                if res.status() == StatusCode::REQUEST_TIMEOUT {
                    // The rest of the body may still be on its way: do not read it, hang up.
                    tracing::info!("request body not received in time; closing the connection");
                    res.response_mut()
                        .head_mut()
                        .set_connection_type(actix_web::http::ConnectionType::Close);
                }
                if foreign_error(&res) {
                    let api = api_error_for_status(res.status());
                    Ok(res.into_response(api.error_response()))
                } else {
                    Ok(res)
                }
            }
            Ok(Ok(Err(e))) => Err(api_error_of(&e)),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned());
                tracing::error!(
                    panic = what.as_deref().unwrap_or("non-string payload"),
                    "handler panicked"
                );
                Err(ApiError::internal())
            }
            Err(_) => {
                tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
                Err(ApiError::timeout())
            }
        }
    };
    let outcome = REQUEST_ID
        .scope(RefCell::new(request_id.clone()), inner)
        .instrument(span.clone())
        .await;

    let (route, status) = match &outcome {
        Ok(res) => (
            res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned()),
            res.status().as_u16(),
        ),
        Err(api) => ("unmatched".to_owned(), api.code.http_status()),
    };
    let elapsed = started.elapsed();
    // Read only for a 403 (a security event): most requests never pay for the copy.
    let agent = match &outcome {
        Ok(res) if status == 403 => user_agent(res.request().headers()),
        _ => String::new(),
    };
    if let Some(edge) = &edge {
        edge.requests
            .with_label_values(&[method, route.as_str(), status.to_string().as_str()])
            .inc();
        edge.duration
            .with_label_values(&[method, route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(route = %route, status, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
        if status == 403
            && let Some(edge) = &edge
        {
            // Someone authenticated asked for what is not theirs (a role they lack, a resource a
            // service refused them): a probe as often as a bug.
            edge.security.raise("forbidden", "medium");
            tracing::warn!(
                security_event = "forbidden",
                severity = "medium",
                route = %route,
                client_ip = client.0.map(|ip| ip.to_string()).unwrap_or_default(),
                user_agent = agent,
                "security event: request refused with 403"
            );
        }
    });
    match outcome {
        Ok(mut res) => {
            harden(res.headers_mut(), &request_id);
            Ok(res)
        }
        Err(api) => Err(api.with_request_id(request_id).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids_are_left_out_of_the_logged_path() {
        let id = "3f1c2b9e-8d4a-4b0e-9f6e-2a7c5d1e0b43";
        for (path, logged) in [
            (format!("/v1/reports/{id}"), "/v1/reports/{id}"),
            (format!("/v1/reports/{id}/attachments"), "/v1/reports/{id}/attachments"),
            (
                format!("/v1/reports/{id}/attachments/{id}"),
                "/v1/reports/{id}/attachments/{id}",
            ),
            (format!("/v1/reports/{id}/"), "/v1/reports/{id}/"),
            ("/v1/reports/a%2Fb".to_owned(), "/v1/reports/{id}"),
        ] {
            assert_eq!(logged_path(&path), logged, "{path}");
        }
        // Elsewhere the path is logged as it came: a moderator's moves name no reporter.
        for path in ["/v1/reports", "/v1/me", &format!("/v1/admin/reports/{id}/status")] {
            assert_eq!(logged_path(path), path);
        }
    }

    #[test]
    fn paths_with_another_spelling_are_refused() {
        for ok in [
            "/",
            "/v1/auth/login",
            "/v1/reports/a%2Fb",
            "/v1/x%20y",
            "/v1/%C3%A9",
            "/v1/auth/login/",
        ] {
            assert_eq!(path_refusal(ok), None, "{ok}");
        }
        for bad in [
            "/v1/auth/%6Cogin",
            "/v1/auth/%6cogin",
            "/%761/auth/login",
            "/v1/auth/login%2E",
            "/v1/%2d",
            "/v1/%5f",
            "/v1/%7E",
            "/v1/%7e",
            "/v1/%30",
            "/v1/%41",
            "/v1/%5A",
            "//v1/auth/login",
            "/v1//auth/login",
            "/v1/auth/login//",
            "/v1/%",
            "/v1/%4",
            "/v1/%zz",
        ] {
            assert!(path_refusal(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn request_ids_from_clients_must_be_tokens() {
        let ok = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(sane_request_id(Some(&ok)).as_deref(), Some("abc-123_x.y"));
        for bad in ["", "a b", "a\"b", "<script>", &"x".repeat(65)] {
            let v = HeaderValue::from_str(bad).expect("header");
            assert_eq!(sane_request_id(Some(&v)), None, "{bad:?}");
        }
    }
}
