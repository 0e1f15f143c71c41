//! End-to-end tests: the four real binaries, real PostgreSQL and Redis, HTTPS like a phone.
//! Run them with `cargo xtask test` (it provides TEST_PG_URL and TEST_REDIS_URL).
//!
//! Each test starts the platform it needs (`TestPlatform::builder`: its settings, and only the
//! services it reaches). Checks that change nothing the others read share one platform as one
//! test per file (`auth::shared_account_checks`, `edge::shared_edge_checks`): nextest runs every
//! test in a process of its own, so that is what saves the starts. A test that sets its own
//! configuration, stops a process or Redis, or reads a platform-wide count starts its own.

mod attachments;
mod auth;
mod backup;
mod config;
mod contract;
mod database;
mod edge;
mod internal_tls;
mod lifecycle;
mod maintenance;
mod operations;
mod outbox;
mod pitr;
mod rate_limit;
mod reports;
mod tracing;
mod walkthrough;

use std::future::Future;
use std::time::{Duration, Instant};

use xtask::testkit::TestPlatform;

/// An HTTPS client that trusts only the test platform's self-signed certificate.
pub fn client(tp: &TestPlatform) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&tp.ca_pem()).expect("test CA");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Polls `check` until it yields a value or `timeout` passes (readiness, not a fixed sleep).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET on an admin port (plain HTTP, loopback): status and JSON body.
pub fn admin_get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = xtask::platform::http_get(port, path)?;
    Some((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
}

/// The value of one counter series (`name{labels}`) on an admin port; 0 while it has none.
pub fn metric(port: u16, series: &str) -> u64 {
    let (_, text) = xtask::platform::http_get(port, "/metrics").expect("metrics");
    xtask::platform::metric_value(&text, series).map_or(0, |v| v as u64)
}

/// A PEM Ed25519 signing key (PKCS#8) the platform has never seen, made as `cargo xtask` makes
/// the development one.
pub fn new_signing_key_pem() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("e2e-key-{}", uuid::Uuid::new_v4()));
    let secrets = xtask::secrets::DevSecrets::load_or_create(&dir).expect("secrets");
    let pem = std::fs::read(secrets.path("jwt_signing_keys.pem")).expect("pem");
    let _ = std::fs::remove_dir_all(&dir);
    pem
}

/// `token` with its header and claims as they are and the signature of another Ed25519 key over
/// them: well-formed to the last byte, so only the signature check can refuse it.
pub fn forge(token: &str) -> String {
    let other = jsonwebtoken::EncodingKey::from_ed_pem(&new_signing_key_pem()).expect("ed key");
    let (signed, _) = token.rsplit_once('.').expect("a JWT");
    let signature =
        jsonwebtoken::crypto::sign(signed.as_bytes(), &other, jsonwebtoken::Algorithm::EdDSA).expect("sign");
    format!("{signed}.{signature}")
}

/// The keys of a JSON object, sorted: a body is compared by its exact key set, so a field that
/// should never be there (a hash, a private key half) is caught whatever it is called.
pub fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Asserts the API's one error shape and returns the code.
pub async fn error_code(res: reqwest::Response, status: u16) -> String {
    assert_eq!(res.status().as_u16(), status, "unexpected status");
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["request_id"].as_str(), request_id.as_deref(), "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"].as_str().expect("code").to_owned()
}

/// Runs an auth-service operator command against the test platform's database.
pub fn operator(tp: &TestPlatform, args: &[&str]) -> (bool, String) {
    let db = tp.databases.iter().find(|d| d.service == "auth").expect("auth db");
    let out = std::process::Command::new(xtask::platform::bin_dir().join("auth-service"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &tp.redis_url)
        .env("REDIS_KEY_PREFIX", &tp.redis_prefix)
        .env("APP_ENV", "test")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("auth-service runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (up to 20 s) until the revocation marker `marker` names the Redis server `conn` talks to,
/// by its `run_id`, as auth-service sets it once every revocation is copied in.
pub async fn marker_names_this_server(conn: &redis::aio::MultiplexedConnection, marker: &str, what: &str) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn.clone())
        .await
        .expect("INFO");
    let run_id = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .expect("run_id")
        .trim()
        .to_owned();
    eventually(what, Duration::from_secs(20), || {
        let (mut conn, run_id) = (conn.clone(), run_id.clone());
        async move {
            let value: Option<String> = redis::cmd("GET").arg(marker).query_async(&mut conn).await.ok()?;
            (value == Some(run_id)).then_some(())
        }
    })
    .await;
}
