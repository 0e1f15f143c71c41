//! The gateway's edge over real TLS: security headers, the error shape, limits, TLS versions.

use crate::{client, error_code};

const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

fn assert_hardened(res: &reqwest::Response) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            res.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on {}",
            res.url()
        );
    }
    assert!(res.headers().get("server").is_none(), "Server header leaks the stack");
    assert!(res.headers().get("x-powered-by").is_none());
    assert!(res.headers().get("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_is_hardened_and_every_failure_has_the_error_shape() {
    let tp = xtask::testkit::start("edge", &[("MAX_BODY_BYTES", "2048")])
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();

    let res = http
        .get(format!("{base}/health"))
        .header("x-request-id", "phone-retry-42")
        .send()
        .await
        .expect("health");
    assert_eq!(res.status().as_u16(), 200);
    assert_hardened(&res);
    assert_eq!(
        res.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("phone-retry-42")
    );
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["status"], "healthy");

    let res = http.get(format!("{base}/v1/nothing-here")).send().await.expect("404");
    assert_hardened(&res);
    assert_eq!(error_code(res, 404).await, "NOT_FOUND");

    let res = http.delete(format!("{base}/health")).send().await.expect("405");
    assert_hardened(&res);
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD")
    );
    assert_eq!(error_code(res, 405).await, "METHOD_NOT_ALLOWED");

    let res = http
        .post(format!("{base}/v1/nothing-here"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("413");
    assert_hardened(&res);
    assert_eq!(error_code(res, 413).await, "PAYLOAD_TOO_LARGE");

    let res = http
        .get(format!("{base}/v1/alerts/nearby?lat=1&lat=2&lng=3&radius_m=10"))
        .send()
        .await
        .expect("dup");
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
    let res = http
        .get(format!("{base}/v1/alerts/nearby?lat=52.5&lng=13.4&radius_m=99999"))
        .send()
        .await
        .expect("range");
    let body: serde_json::Value = {
        assert_eq!(res.status().as_u16(), 400);
        res.json().await.expect("json")
    };
    assert_eq!(body["error"]["details"][0]["field"], "radius_m", "{body}");

    let res = http
        .get(format!("{base}/v1/alerts/nearby?lat=52.5&lng=13.4&radius_m=1000"))
        .send()
        .await
        .expect("alerts");
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"items": [], "next_cursor": null}));

    let res = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["keys"][0]["kty"], "OKP");
    assert_eq!(body["keys"][0]["alg"], "EdDSA");
    assert_eq!(body["keys"][0]["use"], "sig");
    assert!(body["keys"][0].get("d").is_none(), "private half published: {body}");

    let res = http.get(format!("{base}/openapi.json")).send().await.expect("openapi");
    let doc: serde_json::Value = res.json().await.expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for path in ["/health", "/ready", "/.well-known/jwks.json", "/v1/alerts/nearby"] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }

    // Metrics are on the admin port only.
    let res = http.get(format!("{base}/metrics")).send().await.expect("metrics");
    assert_eq!(res.status().as_u16(), 404);
    let (status, text) = xtask::platform::http_get(tp.platform.ports.gateway_admin, "/metrics").expect("admin metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_12_and_13_by_default_and_13_only_when_configured() {
    let tp = xtask::testkit::start("tls", &[]).await.expect("platform");
    let ca = || reqwest::Certificate::from_pem(&tp.ca_pem()).expect("ca");
    let only = |v: reqwest::tls::Version| {
        reqwest::Client::builder()
            .add_root_certificate(ca())
            .tls_built_in_root_certs(false)
            .min_tls_version(v)
            .max_tls_version(v)
            .build()
            .expect("client")
    };
    let url = format!("{}/health", tp.base_url());
    assert!(
        only(reqwest::tls::Version::TLS_1_2).get(&url).send().await.is_ok(),
        "TLS 1.2 refused by default"
    );
    assert!(
        only(reqwest::tls::Version::TLS_1_3).get(&url).send().await.is_ok(),
        "TLS 1.3 refused"
    );
    drop(tp);

    let tp = xtask::testkit::start("tls13", &[("TLS_MIN_VERSION", "1.3")])
        .await
        .expect("platform");
    let url = format!("{}/health", tp.base_url());
    let ca = reqwest::Certificate::from_pem(&tp.ca_pem()).expect("ca");
    let v12 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    assert!(v12.get(&url).send().await.is_err(), "TLS 1.2 accepted in 1.3-only mode");
    assert_eq!(client(&tp).get(&url).send().await.expect("1.3").status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_allows_only_the_listed_origins() {
    let tp = xtask::testkit::start("cors", &[("ALLOWED_ORIGINS", "https://app.example.com")])
        .await
        .expect("platform");
    let http = client(&tp);
    let url = format!("{}/v1/alerts/nearby", tp.base_url());
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };

    let res = preflight("https://app.example.com").await.expect("preflight");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    assert_hardened(&res);

    let res = preflight("https://evil.example.net").await.expect("preflight");
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "a foreign origin was allowed"
    );
    assert_ne!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.expect("error shape");
    assert_eq!(body["success"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_connection() {
    let tp = xtask::testkit::start("certswap", &[("TLS_RELOAD_SECONDS", "1")])
        .await
        .expect("platform");
    // A new pair, as cert-manager would write it.
    let dir = std::env::temp_dir().join(format!("e2e-cert-{}", std::process::id()));
    let fresh = xtask::secrets::DevSecrets::load_or_create(&dir).expect("new pair");
    let new_ca = std::fs::read(fresh.path("tls.crt")).expect("new cert");
    let trusting_only_new = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&new_ca).expect("ca"))
            .tls_built_in_root_certs(false)
            .build()
            .expect("client")
    };
    let url = format!("{}/health", tp.base_url());
    assert!(
        trusting_only_new().get(&url).send().await.is_err(),
        "the new certificate is served before the swap"
    );

    std::fs::copy(fresh.path("tls.key"), tp.secrets.path("tls.key")).expect("swap key");
    std::fs::copy(fresh.path("tls.crt"), tp.secrets.path("tls.crt")).expect("swap cert");
    crate::eventually(
        "the new certificate to be served",
        std::time::Duration::from_secs(15),
        || {
            let url = url.clone();
            let client = trusting_only_new();
            async move { client.get(&url).send().await.ok().filter(|r| r.status().is_success()) }
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
