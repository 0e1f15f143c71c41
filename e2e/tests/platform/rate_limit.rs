//! Rate limits at the edge, shared through Redis: exact boundaries, headers that count down,
//! separate buckets per route and per user.

use serde_json::json;

use crate::{client, error_code};

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_routes_allow_a_burst_of_three_per_address_and_route() {
    let tp = xtask::testkit::start(
        "rlauth",
        &[
            ("AUTH_RATE_LIMIT_MAX_REQUESTS", "5"),
            ("AUTH_RATE_LIMIT_BURST", "3"),
            ("AUTH_RATE_LIMIT_WINDOW", "60"),
        ],
    )
    .await
    .expect("platform");
    let http = client(&tp);
    let login = || {
        http.post(format!("{}/v1/auth/login", tp.base_url()))
            .json(&json!({"email": "x@example.org", "password": "wrong password 1", "device": {"device_id": "d", "platform": "ios"}}))
            .send()
    };
    for remaining in [2, 1, 0] {
        let res = login().await.expect("login");
        assert_eq!(res.status().as_u16(), 401);
        assert_eq!(header(&res, "ratelimit-policy").as_deref(), Some("\"auth\";q=5;w=60"));
        let rl = header(&res, "ratelimit").expect("RateLimit");
        assert!(rl.starts_with(&format!("\"auth\";r={remaining};t=")), "{rl}");
    }
    let res = login().await.expect("login");
    // One emission (60 s / 5) after the first of the burst, less the time the three logins took.
    let retry_after: u64 = header(&res, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((8..=12).contains(&retry_after), "{retry_after}");
    assert!(header(&res, "ratelimit").is_some_and(|v| v.starts_with("\"auth\";r=0;")));
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");

    // Another route has its own bucket; routes outside /v1/auth are not in this policy.
    let res = http
        .post(format!("{}/v1/auth/password-reset", tp.base_url()))
        .json(&json!({"email": "x@example.org"}))
        .send()
        .await
        .expect("reset");
    assert_eq!(res.status().as_u16(), 202);
    let res = http
        .get(format!("{}/health", tp.base_url()))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status().as_u16(), 200);

    let (_, metrics) = xtask::platform::http_get(tp.platform.ports.gateway_admin, "/metrics").expect("metrics");
    assert!(
        metrics.contains("rate_limit_violations_total{policy=\"auth\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_limits_are_per_user_and_per_address_without_a_user() {
    let tp = xtask::testkit::start("rlapi", &[("RATE_LIMIT_MAX_REQUESTS", "60"), ("RATE_LIMIT_BURST", "2")])
        .await
        .expect("platform");
    let http = client(&tp);
    let register = |email: &'static str| {
        http.post(format!("{}/v1/auth/register", tp.base_url()))
            .json(&json!({"email": email, "password": "correct horse battery staple", "first_name": "A", "last_name": "B"}))
            .send()
    };
    let token = |body: serde_json::Value| body["tokens"]["access_token"].as_str().expect("token").to_owned();
    let alice = token(
        register("alice@example.org")
            .await
            .expect("register")
            .json()
            .await
            .expect("json"),
    );
    let bob = token(
        register("bob@example.org")
            .await
            .expect("register")
            .json()
            .await
            .expect("json"),
    );
    let me = |t: &str| http.get(format!("{}/v1/me", tp.base_url())).bearer_auth(t).send();

    for _ in 0..2 {
        assert_eq!(me(&alice).await.expect("me").status().as_u16(), 200);
    }
    let res = me(&alice).await.expect("me");
    assert_eq!(header(&res, "ratelimit-policy").as_deref(), Some("\"api\";q=60;w=60"));
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
    // Bob shares the address but not the bucket.
    assert_eq!(me(&bob).await.expect("me").status().as_u16(), 200);
    // A forged token cannot spend Alice's quota: it is limited by address and refused.
    let res = me("not.a.token").await.expect("me");
    assert_eq!(error_code(res, 401).await, "UNAUTHENTICATED");
}
