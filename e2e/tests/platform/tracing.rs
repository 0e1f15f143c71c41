//! Traces end to end: a test OTLP receiver (`xtask::otlp`) gets the spans of the gateway and of
//! auth-service, and one login is one trace across both, continuing the client's `traceparent`
//! when it sends a valid one.

use std::time::Duration;

use serde_json::json;
use xtask::otlp::{OtlpReceiver, ReceivedSpan};
use xtask::testkit::{Service, TestPlatform};

use crate::client;

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// Logs in with `x-request-id: request_id` (and a `traceparent`, when given): the status.
async fn login(http: &reqwest::Client, base: &str, request_id: &str, traceparent: Option<&str>) -> u16 {
    let mut request = http
        .post(format!("{base}/v1/auth/login"))
        .header("x-request-id", request_id)
        .json(
            &json!({"email": "trace@example.org", "password": "correct horse battery staple",
            "device": {"device_id": "phone-1", "platform": "ios"}}),
        );
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().await.expect("login").status().as_u16()
}

/// One login as the receiver saw it: the gateway's request span, its client span, and
/// auth-service's span of the call.
struct LoginTrace {
    request: ReceivedSpan,
    call: ReceivedSpan,
    served: ReceivedSpan,
}

fn login_trace(spans: &[ReceivedSpan], request_id: &str) -> Option<LoginTrace> {
    let request = spans.iter().find(|s| {
        s.service == "gateway"
            && s.name == "http"
            && s.attributes.get("request_id").map(String::as_str) == Some(request_id)
    })?;
    let call = spans
        .iter()
        .find(|s| s.service == "gateway" && s.parent_span_id == request.span_id)?;
    let served = spans
        .iter()
        .find(|s| s.service == "auth-service" && s.parent_span_id == call.span_id)?;
    Some(LoginTrace {
        request: request.clone(),
        call: call.clone(),
        served: served.clone(),
    })
}

/// One login gives spans from the gateway and from auth-service with one trace id: the gateway's
/// request span is the parent of its gRPC call, whose span is the parent of auth-service's. A
/// client's `traceparent` is continued (same trace, parent the client's span); a malformed one is
/// ignored and the gateway starts the trace.
#[tokio::test(flavor = "multi_thread")]
async fn one_login_is_one_trace_across_the_gateway_and_auth_service() {
    let otlp = OtlpReceiver::start().await.expect("OTLP receiver");
    let endpoint = otlp.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Batches go out every 100 ms rather than 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let tp = TestPlatform::builder("traces")
        .gateway_env(&env)
        .auth_env(&env)
        .services(&[Service::Auth])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    crate::rate_limit::registered(&http, &base, "trace@example.org").await;

    assert_eq!(login(&http, &base, "trace-login-1", None).await, 200);
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(login(&http, &base, "trace-login-2", Some(&client_parent)).await, 200);
    let malformed = format!("00-{CLIENT_TRACE}-nothexatall!-01");
    assert_eq!(login(&http, &base, "trace-login-3", Some(&malformed)).await, 200);

    let (own, continued, fresh) = otlp
        .wait_for("the spans of three logins", Duration::from_secs(30), |spans| {
            Some((
                login_trace(spans, "trace-login-1")?,
                login_trace(spans, "trace-login-2")?,
                login_trace(spans, "trace-login-3")?,
            ))
        })
        .await
        .expect("spans");

    for (what, t) in [("own", &own), ("continued", &continued), ("fresh", &fresh)] {
        assert_eq!(t.call.trace_id, t.request.trace_id, "{what}");
        assert_eq!(t.served.trace_id, t.request.trace_id, "{what}");
        assert_eq!(t.served.name, "auth.v1.AuthService/Login", "{what}");
        assert_eq!(
            t.served.attributes.get("request_id"),
            t.request.attributes.get("request_id")
        );
        assert!(!t.request.version.is_empty() && !t.served.version.is_empty(), "{what}");
        assert_eq!(t.request.trace_id.len(), 32, "{what}");
        assert_ne!(t.request.trace_id, "0".repeat(32), "{what}");
    }
    // Without a traceparent, or with a malformed one, the gateway's span starts the trace.
    assert_eq!(own.request.parent_span_id, "");
    assert_eq!(fresh.request.parent_span_id, "");
    assert_ne!(own.request.trace_id, fresh.request.trace_id);
    assert_ne!(fresh.request.trace_id, CLIENT_TRACE);
    // With the client's, the gateway's span is a child of the client's span.
    assert_eq!(continued.request.trace_id, CLIENT_TRACE);
    assert_eq!(continued.request.parent_span_id, CLIENT_SPAN);
}
