//! Rate limits at the edge, shared through Redis: exact boundaries, headers that count down,
//! separate buckets per route and per user.
//!
//! A boundary holds only if nothing is earned back while the test spends the burst, however slow
//! the host: the policies under test earn one request back in minutes (an hour-long window), and
//! a `Retry-After` is bounded by the time the test measured.

use std::time::{Duration, Instant};

use serde_json::json;
use xtask::testkit::{Service, TestPlatform};

use crate::{client, error_code};

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A public route under the `api` policy (served by reports-service).
fn alerts_url(tp: &TestPlatform) -> String {
    format!("{}/v1/alerts/nearby?lat=52.5&lng=13.4&radius_m=100", tp.base_url())
}

/// Asserts the limit a response announces: `policy` (`"name";q=…;w=…`) and the requests left.
fn assert_announced(res: &reqwest::Response, policy: &str, remaining: u64) {
    assert_eq!(header(res, "ratelimit-policy").as_deref(), Some(policy));
    let name = policy.split(';').next().unwrap_or_default();
    let rl = header(res, "ratelimit").expect("RateLimit");
    assert!(rl.starts_with(&format!("{name};r={remaining};t=")), "{rl}");
}

/// The `auth` policy at 5 an hour with a burst of 3: nothing is earned back during a test.
const AUTH_BURST_OF_THREE: [(&str, &str); 3] = [
    ("AUTH_RATE_LIMIT_MAX_REQUESTS", "5"),
    ("AUTH_RATE_LIMIT_BURST", "3"),
    ("AUTH_RATE_LIMIT_WINDOW", "3600"),
];

/// The `auth` policy at 5 an hour with a burst of 1.
const AUTH_BURST_OF_ONE: [(&str, &str); 3] = [
    ("AUTH_RATE_LIMIT_MAX_REQUESTS", "5"),
    ("AUTH_RATE_LIMIT_WINDOW", "3600"),
    ("AUTH_RATE_LIMIT_BURST", "1"),
];

/// A password-reset request (an `auth` route) said to be forwarded for `xff`.
fn forwarded_reset(
    http: &reqwest::Client,
    base: &str,
    xff: &'static str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    http.post(format!("{base}/v1/auth/password-reset"))
        .header("x-forwarded-for", xff)
        .json(&json!({"email": "x@example.org"}))
        .send()
}

/// Registers `email` and answers its access token.
pub async fn registered(http: &reqwest::Client, base: &str, email: &str) -> String {
    let res = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery staple", "first_name": "A", "last_name": "B"}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let body: serde_json::Value = res.json().await.expect("json");
    body["tokens"]["access_token"].as_str().expect("token").to_owned()
}

/// A user's call of an authenticated route that does not call auth-service itself: the user is
/// refused the administrators' route (403) by the gateway, once the token is known to stand.
struct Audit {
    http: reqwest::Client,
    url: String,
    access: String,
}

impl Audit {
    async fn call(&self) -> reqwest::Response {
        self.http
            .get(&self.url)
            .bearer_auth(&self.access)
            .send()
            .await
            .expect("audit")
    }
}

/// A registered user's [`Audit`], a connection to the platform's Redis and the name of its
/// revocation marker, once auth-service has set the marker to name this server.
async fn user_and_marker(tp: &TestPlatform) -> (Audit, redis::aio::MultiplexedConnection, String) {
    let http = client(tp);
    let access = registered(&http, &tp.base_url(), "marker@example.org").await;
    let (conn, marker) = marker_in_place(tp).await;
    let url = format!("{}/v1/admin/audit-logs", tp.base_url());
    (Audit { http, url, access }, conn, marker)
}

/// A connection to the platform's Redis and the name of its revocation marker, once auth-service
/// has set the marker to name this server (its `run_id`).
async fn marker_in_place(tp: &TestPlatform) -> (redis::aio::MultiplexedConnection, String) {
    let client = redis::Client::open(tp.redis_url.as_str()).expect("redis url");
    let conn = client.get_multiplexed_async_connection().await.expect("redis");
    let marker = format!("{}revoked:complete:v2", tp.redis_prefix);
    crate::marker_names_this_server(&conn, &marker, "auth-service to set the marker").await;
    (conn, marker)
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_routes_allow_a_burst_of_three_per_address_and_route() {
    let tp = TestPlatform::builder("rlauth")
        .gateway_env(&AUTH_BURST_OF_THREE)
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let login = || {
        http.post(format!("{}/v1/auth/login", tp.base_url()))
            .json(&json!({"email": "x@example.org", "password": "wrong password 1", "device": {"device_id": "d", "platform": "ios"}}))
            .send()
    };
    let first = Instant::now();
    for remaining in [2, 1, 0] {
        let res = login().await.expect("login");
        assert_eq!(res.status().as_u16(), 401);
        assert_announced(&res, "\"auth\";q=5;w=3600", remaining);
    }
    let res = login().await.expect("login");
    // One emission (3600 s / 5) after the first of the burst, less the time the logins took.
    let took = first.elapsed().as_secs();
    let retry_after: u64 = header(&res, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (720 - took - 1..=720).contains(&retry_after),
        "{retry_after} after {took} s"
    );
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

/// The signed-in routes that check a password or a code are on the `auth` policy, per address,
/// like login: a stolen access token guesses no faster there. Removing devices shares one bucket
/// whatever the device id; listing them stays on the `api` policy.
#[tokio::test(flavor = "multi_thread")]
async fn routes_that_check_a_password_are_on_the_auth_policy() {
    let tp = TestPlatform::builder("rlreauth")
        .gateway_env(&AUTH_BURST_OF_THREE)
        .start()
        .await
        .expect("platform");
    let (http, base) = (client(&tp), tp.base_url());
    let access = registered(&http, &base, "reauth@example.org").await;
    let wrong = "wrong password 1234";
    let change = || {
        http.post(format!("{base}/v1/me/password"))
            .bearer_auth(&access)
            .json(&json!({"current_password": wrong, "new_password": "another long passphrase"}))
            .send()
    };
    for remaining in [2, 1, 0] {
        let res = change().await.expect("password change");
        assert_eq!(res.status().as_u16(), 401);
        assert_announced(&res, "\"auth\";q=5;w=3600", remaining);
    }
    assert_eq!(
        error_code(change().await.expect("password change"), 429).await,
        "RATE_LIMIT_EXCEEDED"
    );

    let remove = |device: &str| {
        http.delete(format!("{base}/v1/me/devices/{device}"))
            .bearer_auth(&access)
            .json(&json!({"password": wrong}))
            .send()
    };
    for (device, remaining) in [("a", 2), ("b", 1), ("c", 0)] {
        let res = remove(device).await.expect("device removal");
        assert_announced(&res, "\"auth\";q=5;w=3600", remaining);
    }
    let res = remove("d").await.expect("device removal");
    assert_eq!(
        error_code(res, 429).await,
        "RATE_LIMIT_EXCEEDED",
        "another device id, the same bucket"
    );
    let list = http.get(format!("{base}/v1/me/devices")).bearer_auth(&access).send();
    let res = list.await.expect("devices");
    assert_eq!(res.status().as_u16(), 200, "listing is no guess");
}

/// Another spelling of a path (a percent-encoded unreserved character, an empty segment) is
/// refused at the edge with 400 before any policy is chosen: `POST /v1/auth/%6Cogin` reached the
/// login handler outside the `auth` policy, and `/%761/auth/login` fell to `global` alone.
#[tokio::test(flavor = "multi_thread")]
async fn encoded_spellings_of_every_route_class_are_refused_before_the_limits() {
    let tp = TestPlatform::builder("rlencoded")
        .gateway_env(&AUTH_BURST_OF_THREE)
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    let login_body = json!({"email": "x@example.org", "password": "wrong password 1", "device": {"device_id": "d", "platform": "ios"}});
    // Each route class (auth, events, api, global) with its letters, its version and its
    // separators spelt otherwise.
    let posts = [
        "/v1/auth/%6Cogin",
        "/v1/auth/%6cogin",
        "/v1/auth/logi%6E",
        "/%761/auth/login",
        "/v%31/auth/login",
        "/v1/%61uth/login",
        "//v1/auth/login",
        "/v1//auth/login",
        "/v1/auth/login%2D",
        "/v1/auth/%72egister",
        "/v1/auth/%72efresh",
        "/v1/auth/password%2Dreset",
        "/v1/auth/password-reset/%63onfirm",
        "/v1/auth/verify%2demail",
        "/v1/auth/%6Cogout",
        "/v1/%65vents",
        "//v1/events",
        "/v1/me/%70assword",
    ];
    for path in posts {
        let res = http
            .post(format!("{base}{path}"))
            .json(&login_body)
            .send()
            .await
            .expect("post");
        assert!(header(&res, "ratelimit").is_none(), "{path}: no policy is spent");
        assert_eq!(error_code(res, 400).await, "BAD_REQUEST", "{path}");
    }
    let gets = [
        "/v1/alerts/%6Eearby?lat=52.5&lng=13.4&radius_m=100",
        "/%761/alerts/nearby?lat=52.5&lng=13.4&radius_m=100",
        "/v1/%6De",
        "/v1/me%5Fdevices",
        "/%68ealth",
        "/health%7E",
        "//health",
        "/.well-known/jwks%2Ejson",
    ];
    for path in gets {
        let res = http.get(format!("{base}{path}")).send().await.expect("get");
        assert!(header(&res, "ratelimit").is_none(), "{path}: no policy is spent");
        assert_eq!(error_code(res, 400).await, "BAD_REQUEST", "{path}");
    }
    // The login bucket of this address is whole: the burst of three is still there.
    for remaining in [2, 1, 0] {
        let res = http
            .post(format!("{base}/v1/auth/login"))
            .json(&login_body)
            .send()
            .await
            .expect("login");
        assert_eq!(res.status().as_u16(), 401);
        assert_announced(&res, "\"auth\";q=5;w=3600", remaining);
    }
    let res = http
        .post(format!("{base}/v1/auth/login"))
        .json(&login_body)
        .send()
        .await
        .expect("login");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
}

/// The old deployment's "skip successful requests": only failed attempts spend the `auth` bucket,
/// and an address that keeps hitting the wall raises one security event.
#[tokio::test(flavor = "multi_thread")]
async fn failures_only_mode_counts_failed_logins_and_abuse_raises_one_event() {
    let tp = TestPlatform::builder("rlfailures")
        .gateway_env(&[
            ("AUTH_RATE_LIMIT_MAX_REQUESTS", "5"),
            ("AUTH_RATE_LIMIT_WINDOW", "3600"),
            ("AUTH_RATE_LIMIT_BURST", "3"),
            ("AUTH_RATE_LIMIT_SKIP_SUCCESSFUL", "true"),
            ("RATE_LIMIT_ABUSE_THRESHOLD", "3"),
        ])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let res = http
        .post(format!("{}/v1/auth/register", tp.base_url()))
        .json(&json!({"email": "ok@example.org", "password": "correct horse battery staple", "first_name": "A", "last_name": "B"}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    let login = |password: &'static str| {
        http.post(format!("{}/v1/auth/login", tp.base_url()))
            .json(&json!({"email": "ok@example.org", "password": password, "device": {"device_id": "d", "platform": "ios"}}))
            .send()
    };
    // Five successes in a row, more than the burst: none of them is counted.
    for _ in 0..5 {
        let res = login("correct horse battery staple").await.expect("login");
        assert_eq!(res.status().as_u16(), 200);
        assert!(header(&res, "ratelimit").is_some_and(|v| v.starts_with("\"auth\";r=3;")));
    }
    // Failures are: the burst of three, then 429 for failures and successes alike.
    for remaining in [2, 1, 0] {
        let res = login("wrong password 1").await.expect("login");
        assert_eq!(res.status().as_u16(), 401);
        let rl = header(&res, "ratelimit").expect("RateLimit");
        assert!(rl.starts_with(&format!("\"auth\";r={remaining};")), "{rl}");
    }
    assert_eq!(
        error_code(login("wrong password 1").await.expect("login"), 429).await,
        "RATE_LIMIT_EXCEEDED"
    );
    let metric = "security_events_total{event_type=\"rate_limit_abuse\",severity=\"medium\"}";
    let admin = tp.platform.ports.gateway_admin;
    let (_, metrics) = xtask::platform::http_get(admin, "/metrics").expect("metrics");
    assert!(
        metrics.contains(&format!("{metric} 0")),
        "at 0 before the first: {metrics}"
    );
    // The third refusal from this address raises the event; the fourth does not raise another.
    for _ in 0..3 {
        let res = login("correct horse battery staple").await.expect("login");
        assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
    }
    let (_, metrics) = xtask::platform::http_get(admin, "/metrics").expect("metrics");
    assert!(metrics.contains(&format!("{metric} 1")), "{metrics}");
}

/// The global ceiling per address stands in front of every route, the public ones included. Its
/// policy comes from a policy file (`RATE_LIMIT_CONFIG_FILE`), as a ConfigMap would give it, and a
/// changed file is put in force without a restart, unless it is invalid.
#[tokio::test(flavor = "multi_thread")]
async fn the_global_ceiling_covers_every_route() {
    let dir = std::env::temp_dir().join(format!("rlglobal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("rate-limits.toml");
    std::fs::write(&file, "[global]\nmax_requests = 60\nwindow_seconds = 3600\nburst = 3\n").expect("policy file");
    let tp = TestPlatform::builder("rlglobal")
        .gateway_env(&[
            ("RATE_LIMIT_CONFIG_FILE", file.to_str().expect("utf-8 path")),
            ("RATE_LIMIT_CONFIG_RELOAD_SECONDS", "1"),
        ])
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let health = format!("{}/health", tp.base_url());
    for remaining in [2, 1, 0] {
        let res = http.get(&health).send().await.expect("health");
        assert_eq!(res.status().as_u16(), 200);
        assert_announced(&res, "\"global\";q=60;w=3600", remaining);
    }
    assert_eq!(
        error_code(http.get(&health).send().await.expect("health"), 429).await,
        "RATE_LIMIT_EXCEEDED"
    );
    // Another route's own policy has room, but the address's ceiling is reached.
    let res = http.get(alerts_url(&tp)).send().await.expect("alerts");
    assert_eq!(
        header(&res, "ratelimit-policy").as_deref(),
        Some("\"global\";q=60;w=3600")
    );
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");

    // The operator raises the ceiling: the next requests get it, without a restart. (The bucket
    // keeps its state: a burst of 1000 at 0.6 s covers the 180 s the old policy had queued.)
    // Replaced whole, as Kubernetes swaps a mounted ConfigMap.
    let replace = |text: &str| {
        let next = dir.join("next.toml");
        std::fs::write(&next, text).expect("policy file");
        std::fs::rename(&next, &file).expect("policy file swapped");
    };
    replace("[global]\nmax_requests = 6000\nwindow_seconds = 3600\nburst = 1000\n");
    let wider = "\"global\";q=6000;w=3600";
    crate::eventually("the new policy in force", std::time::Duration::from_secs(10), || {
        let request = http.get(&health).send();
        async move {
            let res = request.await.ok()?;
            (res.status().as_u16() == 200 && header(&res, "ratelimit-policy").as_deref() == Some(wider)).then_some(())
        }
    })
    .await;
    // A typo is refused and counted; the policy in force stays.
    replace("[global]\nmax_request = 1\n");
    let admin = tp.platform.ports.gateway_admin;
    crate::eventually(
        "the bad file refused",
        std::time::Duration::from_secs(10),
        || async move {
            let (_, metrics) = xtask::platform::http_get(admin, "/metrics")?;
            (metrics.contains("rate_limit_config_reloads_total{result=\"applied\"} 1")
                && metrics.contains("rate_limit_config_reloads_total{result=\"refused\"} 1"))
            .then_some(())
        },
    )
    .await;
    let res = http.get(&health).send().await.expect("health");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "ratelimit-policy").as_deref(), Some(wider));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A policy faster than one request per millisecond is enforced as configured. Buckets counted in
/// whole milliseconds once turned a million a second into a thousand, and refused these.
#[tokio::test(flavor = "multi_thread")]
async fn rates_above_a_thousand_per_second_are_enforced_as_configured() {
    use futures_util::StreamExt as _;
    let tp = TestPlatform::builder("rlfast")
        .gateway_env(&[
            ("GLOBAL_RATE_LIMIT_MAX_REQUESTS", "1000000"),
            ("GLOBAL_RATE_LIMIT_WINDOW", "1"),
            ("GLOBAL_RATE_LIMIT_BURST", "5"),
        ])
        .services(&[])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let health = format!("{}/health", tp.base_url());
    let statuses: Vec<u16> = futures_util::stream::iter(0..400)
        .map(|_| {
            let request = http.get(&health).send();
            async move { request.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(refused, 0, "{statuses:?}");
    let res = http.get(&health).send().await.expect("health");
    assert_announced(&res, "\"global\";q=1000000;w=1", 4);
}

/// Analytics batches have their own policy, per user (per address without a valid token). No
/// route serves `/v1/events` yet (analytics ingestion is to come): the limiter stands in front of
/// the path all the same, and what passes it is answered 404 in the error shape.
#[tokio::test(flavor = "multi_thread")]
async fn event_batches_have_their_own_policy() {
    let tp = TestPlatform::builder("rlevents")
        .gateway_env(&[
            ("EVENTS_RATE_LIMIT_MAX_REQUESTS", "30"),
            ("EVENTS_RATE_LIMIT_WINDOW", "3600"),
            ("EVENTS_RATE_LIMIT_BURST", "2"),
        ])
        .services(&[Service::Reports])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let send = || {
        http.post(format!("{}/v1/events", tp.base_url()))
            .json(&json!({"events": []}))
            .send()
    };
    for remaining in [1, 0] {
        let res = send().await.expect("events");
        assert_announced(&res, "\"events\";q=30;w=3600", remaining);
        assert_eq!(error_code(res, 404).await, "NOT_FOUND");
    }
    assert_eq!(
        error_code(send().await.expect("events"), 429).await,
        "RATE_LIMIT_EXCEEDED"
    );
    // The api bucket of the same address is untouched.
    let res = http.get(alerts_url(&tp)).send().await.expect("alerts");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        header(&res, "ratelimit-policy")
            .as_deref()
            .map(|v| v.starts_with("\"api\"")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_limits_are_per_user_and_per_address_without_a_user() {
    let tp = TestPlatform::builder("rlapi")
        .gateway_env(&[
            ("RATE_LIMIT_MAX_REQUESTS", "60"),
            ("RATE_LIMIT_WINDOW", "3600"),
            ("RATE_LIMIT_BURST", "2"),
        ])
        .start()
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
    assert_eq!(header(&res, "ratelimit-policy").as_deref(), Some("\"api\";q=60;w=3600"));
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
    // Bob shares the address but not the bucket.
    assert_eq!(me(&bob).await.expect("me").status().as_u16(), 200);
    // A forged token naming Alice (her header and claims, another key's signature) is not Alice:
    // were it counted in her spent bucket it would get 429; it is limited by address and refused.
    let forged = crate::forge(&alice);
    let res = me(&forged).await.expect("me");
    assert_eq!(error_code(res, 401).await, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let strict = AUTH_BURST_OF_ONE;
    let reset = forwarded_reset;

    // The test client is an untrusted peer: a new X-Forwarded-For does not buy a new bucket.
    let tp = TestPlatform::builder("xffno")
        .gateway_env(&strict)
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    assert_eq!(
        reset(&http, &tp.base_url(), "1.2.3.4")
            .await
            .expect("req")
            .status()
            .as_u16(),
        202
    );
    let res = reset(&http, &tp.base_url(), "5.6.7.8").await.expect("req");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
    drop(tp);

    // Behind a trusted proxy (loopback here), the forwarded address is the client.
    let tp = TestPlatform::builder("xffyes")
        .gateway_env(&strict)
        .gateway_env(&[("TRUSTED_PROXIES", "127.0.0.0/8, ::1")])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    assert_eq!(
        reset(&http, &tp.base_url(), "1.2.3.4")
            .await
            .expect("req")
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        reset(&http, &tp.base_url(), "5.6.7.8")
            .await
            .expect("req")
            .status()
            .as_u16(),
        202
    );
    let res = reset(&http, &tp.base_url(), "1.2.3.4").await.expect("req");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
}

/// An IPv6 client is one bucket per /64 (a host is handed a whole /64: without this, each of its
/// 2^64 addresses had a bucket of its own), and addresses compare canonically: the proxies listed
/// as IPv4-mapped (`::ffff:127.0.0.0/104`) trust the IPv4 peer, and a client forwarded as
/// `::ffff:a.b.c.d` is `a.b.c.d`.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_count_by_their_64_and_mapped_addresses_are_ipv4() {
    let tp = TestPlatform::builder("rlipv6")
        .gateway_env(&AUTH_BURST_OF_ONE)
        .gateway_env(&[("TRUSTED_PROXIES", "::ffff:127.0.0.0/104, ::1")])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    let reset = |xff: &'static str| forwarded_reset(&http, &base, xff);
    for (xff, status) in [
        ("2001:db8:1:2::1", 202),
        // Another address of the same /64: the same bucket, spent.
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", 429),
        // The next /64 is another client.
        ("2001:db8:1:3::1", 202),
        ("198.51.100.7", 202),
        // The same IPv4 client, spelt as a mapped IPv6 address.
        ("::ffff:198.51.100.7", 429),
    ] {
        let res = reset(xff).await.expect("reset");
        assert_eq!(res.status().as_u16(), status, "{xff}");
    }
}

/// `TRUSTED_PROXIES` wider than /8 (IPv4) or /32 (IPv6) would let anyone inside choose the
/// address it is limited as: the gateway refuses to start, naming the entry.
#[test]
fn trusted_proxy_ranges_wider_than_8_or_32_stop_the_gateway() {
    for wide in ["0.0.0.0/0", "2001:db8::/16", "::ffff:0.0.0.0/96"] {
        let out = std::process::Command::new(xtask::platform::bin_dir().join("gateway"))
            .arg("serve")
            .env_clear()
            .env("APP_ENV", "development")
            .env("ALLOW_PLAIN_HTTP", "true")
            .env("TRUSTED_PROXIES", wide)
            .output()
            .expect("gateway runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("TRUSTED_PROXIES lists {wide}, wider than")),
            "{wide}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_enforce_one_limit_together() {
    let tp = TestPlatform::builder("twogw")
        .gateway_env(&[
            ("AUTH_RATE_LIMIT_MAX_REQUESTS", "5"),
            ("AUTH_RATE_LIMIT_WINDOW", "3600"),
            ("AUTH_RATE_LIMIT_BURST", "2"),
        ])
        .start()
        .await
        .expect("platform");
    let (public, admin) = (xtask::free_port().expect("port"), xtask::free_port().expect("port"));
    let _replica = tp.platform.extra_gateway(public, admin).expect("second gateway");
    crate::eventually(
        "the second gateway to be ready",
        Duration::from_secs(20),
        || async move {
            crate::admin_get(admin, "/ready")
                .filter(|(s, b)| *s == 200 && b["checks"]["auth"] == true && b["checks"]["redis"] == true)
        },
    )
    .await;
    let http = client(&tp);
    let reset = |port: u16| {
        http.post(format!("https://localhost:{port}/v1/auth/password-reset"))
            .json(&json!({"email": "x@example.org"}))
            .send()
    };
    let first = tp.platform.ports.gateway;
    assert_eq!(reset(first).await.expect("req").status().as_u16(), 202);
    assert_eq!(reset(public).await.expect("req").status().as_u16(), 202);
    // The burst of two is spent across both replicas.
    let res = reset(first).await.expect("req");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
    let res = reset(public).await.expect("req");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_going_away_falls_back_to_local_limits_and_comes_back() {
    let env = [
        ("RATE_LIMIT_MAX_REQUESTS", "60"),
        ("RATE_LIMIT_WINDOW", "3600"),
        ("RATE_LIMIT_BURST", "3"),
    ];
    let (own, redis, tp) = TestPlatform::builder("rediskill")
        .gateway_env(&env)
        .services(&[Service::Auth, Service::Reports])
        .start_on_own_redis()
        .await
        .expect("platform");
    let http = client(&tp);
    let alerts = alerts_url(&tp);
    assert_eq!(http.get(&alerts).send().await.expect("req").status().as_u16(), 200);

    drop(redis);
    let gateway_admin = tp.platform.ports.gateway_admin;
    crate::eventually("/ready to report Redis down", Duration::from_secs(10), || async move {
        crate::admin_get(gateway_admin, "/ready")
            .filter(|(s, b)| *s == 200 && b["status"] == "degraded" && b["checks"]["redis"] == false)
    })
    .await;
    // The local limiter holds the same policy: nothing 5xx, a fresh burst of three, then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http.get(&alerts).send().await.expect("req").status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert!(
        crate::metric(gateway_admin, "rate_limit_fallback_total{mode=\"local\"}") > 0,
        "the local limiter decided"
    );

    // Redis returns on the same address: the gateway uses it again without a restart.
    let redis = own.start().expect("redis again");
    crate::eventually("/ready to report Redis back", Duration::from_secs(20), || async move {
        crate::admin_get(gateway_admin, "/ready").filter(|(s, b)| *s == 200 && b["checks"]["redis"] == true)
    })
    .await;
    // Each worker reconnects on its next request (within half a second of its last attempt); then
    // the decision is Redis's again (no fallback counted) and a fresh Redis has fresh buckets.
    let fallbacks = || crate::metric(gateway_admin, "rate_limit_fallback_total{mode=\"local\"}");
    crate::eventually("decisions made in Redis again", Duration::from_secs(10), || {
        let (http, alerts) = (http.clone(), alerts.clone());
        async move {
            let before = fallbacks();
            let status = http.get(&alerts).send().await.ok()?.status().as_u16();
            (status == 200 && fallbacks() == before).then_some(())
        }
    })
    .await;
    drop(redis);
}

/// A frozen Redis keeps the decision scripts sent to it and runs them when it thaws, long after
/// the gateway decided those requests without it: they must not spend the buckets a second time.
#[tokio::test(flavor = "multi_thread")]
async fn scripts_a_frozen_redis_runs_late_spend_nothing() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let env = [
        // One worker, so one connection to Redis: its commands run in the order they were sent,
        // and the first answer after the thaw comes after every script sent during the freeze.
        ("WORKERS", "1"),
        // Ten an hour, all as a burst: nothing is earned back while the test runs.
        ("RATE_LIMIT_MAX_REQUESTS", "10"),
        ("RATE_LIMIT_WINDOW", "3600"),
        ("RATE_LIMIT_BURST", "10"),
        ("RATE_LIMIT_REDIS_TIMEOUT_MS", "200"),
    ];
    let (_own, redis, tp) = TestPlatform::builder("redislate")
        .gateway_env(&env)
        .services(&[Service::Auth, Service::Reports])
        .start_on_own_redis()
        .await
        .expect("platform");
    let http = client(&tp);
    let alerts = alerts_url(&tp);
    let policy = "\"api\";q=10;w=3600";
    let gateway_admin = tp.platform.ports.gateway_admin;
    let fallbacks = || crate::metric(gateway_admin, "rate_limit_fallback_total{mode=\"local\"}");
    // Requests until one is decided by Redis, and how many that took. Those decided locally on
    // the way (a slow host, Redis slower than the timeout) are spent in Redis too when their
    // script runs in time; a script that runs past its deadline spends nothing.
    let until_redis_decides = || async {
        let tries = std::sync::atomic::AtomicU64::new(0);
        let res = crate::eventually("Redis to decide", Duration::from_secs(20), || {
            let (http, alerts) = (http.clone(), alerts.clone());
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                let before = fallbacks();
                let res = http.get(&alerts).send().await.ok()?;
                (res.status().as_u16() == 200 && fallbacks() == before).then_some(res)
            }
        })
        .await;
        (res, tries.into_inner())
    };
    let remaining = |res: &reqwest::Response| -> u64 {
        assert_eq!(header(res, "ratelimit-policy").as_deref(), Some(policy));
        let rl = header(res, "ratelimit").expect("RateLimit");
        rl.split(";r=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|r| r.parse().ok())
            .expect(&rl)
    };
    // Before: one request (or a few on a slow host) spent in Redis, which has answered, so the
    // gateway knows its clock.
    let (res, before) = until_redis_decides().await;
    assert!(before < 5, "Redis answered only after {before} tries");
    assert_eq!(remaining(&res), 10 - before);

    let redis_pid = Pid::from_raw(redis.pid() as i32);
    kill(redis_pid, Signal::SIGSTOP).expect("freeze Redis");
    // Decided locally after the timeout (a fresh local burst), each leaving a script in Redis.
    let frozen = fallbacks();
    for _ in 0..4 {
        assert_eq!(http.get(&alerts).send().await.expect("req").status().as_u16(), 200);
    }
    assert!(fallbacks() >= frozen + 4, "decided without Redis");
    // The last script's deadline is the timeout after it was sent, and its answer came only just
    // after that deadline: thawed at once, Redis could run it a few milliseconds late on an idle
    // host but just in time on a loaded one (where the gateway's estimate of Redis's clock is
    // coarser). Staying frozen for another timeout puts every script clearly past its deadline,
    // which is what this test is about; it waits for no event, so there is nothing to poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(redis_pid, Signal::SIGCONT).expect("thaw Redis");

    // The first decision Redis makes again counts the requests before the freeze and itself,
    // not the four made during it. (Any attempt on the way decided locally may count, if Redis ran
    // its script just within its deadline.)
    let (res, after) = until_redis_decides().await;
    let left = remaining(&res);
    assert!(
        (10u64.saturating_sub(before + after)..=9 - before).contains(&left),
        "{left} left after {before} requests before the freeze and {after} after it"
    );
    drop(redis);
}

/// The revocation marker vouches for Redis only when it names this Redis server (its value is
/// the `run_id` auth-service copied the revocations into). A Redis restored from a snapshot holds
/// the marker of the server the snapshot was taken on, and may lack revocations made since: the
/// limiter's script must not count it as complete, so the gateway asks auth-service (frozen here:
/// 503 after the gRPC deadline, where a vouching Redis would have let the token through).
#[tokio::test(flavor = "multi_thread")]
async fn a_marker_naming_another_redis_server_does_not_vouch() {
    let tp = TestPlatform::builder("rlrunid")
        .gateway_env(&[("GRPC_REQUEST_TIMEOUT_MS", "1000")])
        .start()
        .await
        .expect("platform");
    let (audit, conn, marker) = user_and_marker(&tp).await;
    assert_eq!(error_code(audit.call().await, 403).await, "FORBIDDEN");

    // auth-service frozen (it would repair the marker, and it is who the gateway asks next).
    tp.platform.auth.signal(nix::sys::signal::Signal::SIGSTOP);
    let _: () = redis::cmd("SET")
        .arg(&marker)
        .arg("0000000000000000000000000000000000000000")
        .query_async(&mut conn.clone())
        .await
        .expect("SET");
    let res = audit.call().await;
    tp.platform.auth.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(error_code(res, 503).await, "UNAVAILABLE");
}

/// While Redis cannot vouch (no marker), the gateway asks auth-service and holds a "valid" answer
/// at most 2 s: a token revoked meanwhile is refused within that (it was 5 s by default, up to 60).
/// No timing is assumed: every pass must have been asked within 2 s of the first answer, which
/// the cached entry cannot outlive.
#[tokio::test(flavor = "multi_thread")]
async fn without_redis_vouching_a_valid_answer_is_held_at_most_two_seconds() {
    let tp = TestPlatform::builder("rlvalidhold")
        // The marker, once withdrawn below, is not put back during the test.
        .auth_env(&[("REVOCATION_SYNC_SECONDS", "300")])
        .start()
        .await
        .expect("platform");
    let (audit, conn, marker) = user_and_marker(&tp).await;
    let _: u64 = redis::cmd("DEL")
        .arg(&marker)
        .query_async(&mut conn.clone())
        .await
        .expect("DEL");
    assert_eq!(error_code(audit.call().await, 403).await, "FORBIDDEN");
    let answered = Instant::now();
    let res = audit
        .http
        .post(format!("{}/v1/auth/logout", tp.base_url()))
        .bearer_auth(&audit.access)
        .json(&json!({}))
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success(), "{}", res.status());
    let code = crate::eventually("the revoked token refused", Duration::from_secs(10), || {
        let audit = &audit;
        async move {
            let sent = Instant::now();
            let res = audit.call().await;
            if res.status().as_u16() == 403 {
                assert!(
                    sent < answered + Duration::from_secs(2),
                    "a revoked token passed {:?} after the valid answer was cached",
                    sent - answered
                );
                return None;
            }
            Some(error_code(res, 401).await)
        }
    })
    .await;
    assert_eq!(code, "TOKEN_REVOKED");
}
