//! Maintenance windows (`MAINTENANCE_FILE`): announced on `/v1/status`, refused with 503
//! `MAINTENANCE` while in force, reloaded without a restart, a broken file refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use xtask::testkit::{Service, TestPlatform};

use crate::{client, error_code, eventually, metric};

/// 2100-01-01T00:00:00Z in Unix seconds: the end of the window in force in this test.
const END_OF_WINDOW: u64 = 4_102_444_800;

const IN_FORCE: &str = "[[window]]\nstarts_at = \"2000-01-01T00:00:00Z\"\nends_at = 2100-01-01T00:00:00Z\n\
    kind = \"scheduled\"\nmessage = \"Upgrading the database.\"\n";
const UPCOMING: &str = "[[window]]\nstarts_at = \"2100-01-01T00:00:00Z\"\nends_at = \"2100-01-01T01:00:00Z\"\n\
    kind = \"emergency\"\nmessage = \"Moving to a new region.\"\n";

async fn status(http: &reqwest::Client, base: &str) -> (u16, Option<String>, Value) {
    let res = http.get(format!("{base}/v1/status")).send().await.expect("status");
    let cache = res
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (res.status().as_u16(), cache, res.json().await.expect("json"))
}

/// During a window every API route (an unknown path too) is 503 `MAINTENANCE` with the window's
/// message and `Retry-After` until it ends, while `/health`, `/ready`, `/v1/status`,
/// `/openapi.json` and the JWKS are served. A rewritten file is in force without a restart; a
/// broken one is refused and the windows in force stay.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_refuses_the_api_until_the_file_moves_it_and_a_broken_file_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("maintenance-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("maintenance.toml");
    std::fs::write(&file, IN_FORCE).expect("maintenance file");
    let tp = TestPlatform::builder("maint")
        .gateway_env(&[
            ("MAINTENANCE_FILE", file.to_str().expect("utf-8 path")),
            ("MAINTENANCE_RELOAD_SECONDS", "1"),
        ])
        .services(&[Service::Auth])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    let admin = tp.platform.ports.gateway_admin;

    let login = || {
        http.post(format!("{base}/v1/auth/login"))
            .json(
                &serde_json::json!({"email": "a@example.org", "password": "correct horse battery staple",
                "device": {"device_id": "d", "platform": "ios"}}),
            )
            .send()
    };
    let res = login().await.expect("login");
    assert_eq!(res.status().as_u16(), 503);
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    assert!(retry_after.abs_diff(END_OF_WINDOW - now) <= 5, "{retry_after}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "MAINTENANCE", "{body}");
    assert_eq!(body["error"]["message"], "Upgrading the database.", "{body}");
    assert!(body["error"]["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    let unknown = http
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .expect("unknown path");
    assert_eq!(error_code(unknown, 503).await, "MAINTENANCE");

    for path in ["/health", "/ready", "/openapi.json", "/.well-known/jwks.json"] {
        let res = http.get(format!("{base}{path}")).send().await.expect(path);
        assert_eq!(res.status().as_u16(), 200, "{path}");
    }
    let (code, cache, body) = status(&http, &base).await;
    assert_eq!((code, cache.as_deref()), (200, Some("public, max-age=30")));
    assert_eq!(
        body,
        serde_json::json!({"windows": [{"starts_at": "2000-01-01T00:00:00Z", "ends_at": "2100-01-01T00:00:00Z",
            "kind": "scheduled", "message": "Upgrading the database."}]})
    );
    eventually("maintenance_active 1", Duration::from_secs(10), || async move {
        (metric(admin, "maintenance_active") == 1).then_some(())
    })
    .await;

    // The operator moves the window to the future, replacing the file whole (as a ConfigMap is).
    let replace = |text: &str| {
        let next = dir.join("next.toml");
        std::fs::write(&next, text).expect("maintenance file");
        std::fs::rename(&next, &file).expect("maintenance file swapped");
    };
    replace(UPCOMING);
    let moved = eventually("the new windows on /v1/status", Duration::from_secs(15), || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let (_, _, body) = status(&http, &base).await;
            (body["windows"][0]["message"] == "Moving to a new region.").then_some(body)
        }
    })
    .await;
    assert_eq!(moved["windows"].as_array().map(Vec::len), Some(1), "{moved}");
    assert_eq!(moved["windows"][0]["kind"], "emergency");
    assert_eq!(
        error_code(login().await.expect("login"), 401).await,
        "INVALID_CREDENTIALS"
    );
    eventually("maintenance_active 0", Duration::from_secs(10), || async move {
        (metric(admin, "maintenance_active") == 0).then_some(())
    })
    .await;

    // A broken file is refused and counted; the windows in force stay.
    replace("[[window]\nstarts_at = \"soon\"\n");
    eventually("the broken file refused", Duration::from_secs(15), || async move {
        (metric(admin, "maintenance_file_reloads_total{result=\"refused\"}") == 1).then_some(())
    })
    .await;
    assert_eq!(metric(admin, "maintenance_file_reloads_total{result=\"applied\"}"), 1);
    assert_eq!(status(&http, &base).await.2, moved);
    assert_eq!(
        error_code(login().await.expect("login"), 401).await,
        "INVALID_CREDENTIALS"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
