//! A service going down and coming back, and the gateway draining on SIGTERM.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xtask::testkit::TestPlatform;

use crate::{admin_get, client, error_code, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_service_degrades_only_its_routes_and_recovers() {
    // The request timeout far above the gRPC deadline, so that an answer before it is the
    // deadline's, however slow the host.
    let mut tp = TestPlatform::builder("down")
        .gateway_env(&[("GRPC_REQUEST_TIMEOUT_MS", "5000"), ("REQUEST_TIMEOUT_MS", "20000")])
        .all_services()
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    let alerts = format!("{base}/v1/alerts/nearby?lat=52.52&lng=13.40&radius_m=1000");
    let jwks = format!("{base}/.well-known/jwks.json");
    let gateway_admin = tp.platform.ports.gateway_admin;

    // A frozen service (accepts, never answers) costs the caller the gRPC deadline, not a hang.
    assert_eq!(http.get(&alerts).send().await.expect("warm").status().as_u16(), 200);
    tp.platform.reports.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let res = http.get(&alerts).send().await.expect("answered, not hung");
    let waited = started.elapsed();
    // Not before the deadline; after it, whatever the host's delays, as long as the deadline
    // answered (the request timeout, 20 s, answers 503 too).
    assert!(waited >= Duration::from_millis(4900), "took {waited:?}");
    assert!(waited < Duration::from_secs(20), "took {waited:?}");
    assert_eq!(error_code(res, 503).await, "UNAVAILABLE");
    tp.platform.reports.signal(Signal::SIGCONT);

    tp.platform.reports.kill();

    let body = eventually("/ready to turn degraded", Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{base}/ready");
        async move {
            let res = http.get(&url).send().await.ok()?;
            (res.status().as_u16() == 200).then_some(())?;
            let body: serde_json::Value = res.json().await.ok()?;
            (body["status"] == "degraded").then_some(body)
        }
    })
    .await;
    assert_eq!(body["checks"]["reports"], false, "{body}");
    assert_eq!(body["checks"]["auth"], true, "{body}");
    assert_eq!(body["checks"]["analytics"], true, "{body}");
    assert_eq!(body["checks"]["redis"], true, "{body}");

    // A dead service refuses the connection: answered without waiting for the (5 s) deadline.
    let started = Instant::now();
    let res = http.get(&alerts).send().await.expect("answered, not hung");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    assert_eq!(
        res.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(error_code(res, 503).await, "UNAVAILABLE");

    let res = http.get(&jwks).send().await.expect("auth route");
    assert_eq!(res.status().as_u16(), 200, "another service's route must keep working");

    tp.platform.reports.restart().expect("restart");
    eventually("/ready to be ready again", Duration::from_secs(20), || async move {
        admin_get(gateway_admin, "/ready").filter(|(s, b)| *s == 200 && b["status"] == "ready")
    })
    .await;
    let res = http.get(&alerts).send().await.expect("reports route");
    assert_eq!(res.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let mut tp = TestPlatform::builder("drain")
        .gateway_env(&[("GRPC_REQUEST_TIMEOUT_MS", "20000"), ("REQUEST_TIMEOUT_MS", "25000")])
        .all_services()
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let alerts = format!("{}/v1/alerts/nearby?lat=52.52&lng=13.40&radius_m=1000", tp.base_url());
    // Warm the connection to reports-service so the paused process only delays the answer.
    assert_eq!(http.get(&alerts).send().await.expect("warm").status().as_u16(), 200);
    let gateway_admin = tp.platform.ports.gateway_admin;

    // Freeze reports-service: the next call waits on it, a slow request as far as the gateway knows.
    tp.platform.reports.signal(Signal::SIGSTOP);
    let in_flight = tokio::spawn({
        let http = http.clone();
        let alerts = alerts.clone();
        async move { http.get(&alerts).send().await }
    });
    eventually("the request to be in flight", Duration::from_secs(10), || async move {
        let (_, text) = xtask::platform::http_get(gateway_admin, "/metrics")?;
        text.lines().any(|l| l == "http_requests_in_flight 1").then_some(())
    })
    .await;

    tp.platform.gateway.signal(Signal::SIGTERM);
    eventually("/ready to say draining", Duration::from_secs(10), || async move {
        admin_get(gateway_admin, "/ready").filter(|(s, b)| *s == 503 && b["status"] == "draining")
    })
    .await;
    let public = tp.platform.ports.gateway;
    eventually(
        "the public port to stop accepting",
        Duration::from_secs(10),
        || async move {
            std::net::TcpStream::connect(("127.0.0.1", public))
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the slow request ended before the service answered"
    );

    tp.platform.reports.signal(Signal::SIGCONT);
    let res = in_flight.await.expect("task").expect("the in-flight request completed");
    assert_eq!(res.status().as_u16(), 200);
    let status = tp
        .platform
        .gateway
        .wait_exit(Duration::from_secs(20))
        .expect("gateway exits after draining");
    assert!(status.success(), "gateway exit status {status}");
}

/// A service killed while calls to it are in flight: the gateway answers each of them 503
/// `UNAVAILABLE` with `Retry-After` (the write may or may not have happened; the client retries),
/// never 500, and counts them. The service is frozen first so the calls are surely waiting on it
/// when the kill comes (no timing involved).
#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_mid_call_answers_503_never_500() {
    const CALLS: usize = 6;
    let mut tp = TestPlatform::builder("midcall")
        .gateway_env(&[("GRPC_REQUEST_TIMEOUT_MS", "20000"), ("REQUEST_TIMEOUT_MS", "25000")])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let register = format!("{}/v1/auth/register", tp.base_url());
    let body = |i: usize| serde_json::json!({"email": format!("midcall{i}@example.org"), "password": "correct horse battery staple", "first_name": "A", "last_name": "B"});
    // Warm the connection to auth-service: the calls below go over it, not a new one.
    let res = http.post(&register).json(&body(0)).send().await.expect("warm");
    assert_eq!(res.status().as_u16(), 201);
    let gateway_admin = tp.platform.ports.gateway_admin;

    tp.platform.auth.signal(Signal::SIGSTOP);
    let mut calls = tokio::task::JoinSet::new();
    for i in 1..=CALLS {
        let request = http.post(&register).json(&body(i)).send();
        calls.spawn(request);
    }
    eventually("every call to be in flight", Duration::from_secs(10), || async move {
        let (_, text) = xtask::platform::http_get(gateway_admin, "/metrics")?;
        text.lines()
            .any(|l| l == format!("http_requests_in_flight {CALLS}"))
            .then_some(())
    })
    .await;
    // SIGKILL (a crash): the connection the calls wait on is reset under them.
    tp.platform.auth.kill();

    while let Some(res) = calls.join_next().await {
        let res = res.expect("task").expect("answered");
        let status = res.status().as_u16();
        assert!(
            res.status().is_success() || status == 503,
            "a call in flight when its service died got {status}"
        );
        if status == 503 {
            assert_eq!(
                res.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                Some("5")
            );
            assert_eq!(error_code(res, 503).await, "UNAVAILABLE");
        }
    }
    let (_, text) = xtask::platform::http_get(gateway_admin, "/metrics").expect("metrics");
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("upstream_unavailable_total{") && l.contains("upstream=\"auth\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, CALLS, "{text}");

    // The client's way out of "may or may not have happened": the same registration again, once
    // the service is back, is created (201) or already there (409), either a success.
    tp.platform.auth.restart().expect("restart");
    eventually("auth-service back", Duration::from_secs(20), || async move {
        admin_get(gateway_admin, "/ready").filter(|(_, b)| b["checks"]["auth"] == true)
    })
    .await;
    for i in 1..=CALLS {
        // A 503 still (a worker's channel reconnecting) is retried, as a client would.
        let status = eventually("an answer other than 503", Duration::from_secs(10), || {
            let request = http.post(&register).json(&body(i)).send();
            async move { Some(request.await.ok()?.status().as_u16()).filter(|s| *s != 503) }
        })
        .await;
        assert!(status == 201 || status == 409, "retry {i}: {status}");
    }
}
