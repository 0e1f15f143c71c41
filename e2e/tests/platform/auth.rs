//! Identity end to end: every auth route through the gateway over TLS, and the attacks an
//! attacker would try first, each failing safely.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use xtask::testkit::TestPlatform;

use crate::{client, error_code};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(tp: &TestPlatform) -> Self {
        Self {
            http: client(tp),
            base: tp.base_url(),
        }
    }

    async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    async fn me(&self, bearer: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/me", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request")
    }

    async fn register(&self, email: &str) -> Value {
        let res = self.post("/v1/auth/register", registration(email), None).await;
        assert_eq!(res.status().as_u16(), 201, "register {email}");
        res.json().await.expect("json")
    }

    async fn login(&self, email: &str, password: &str, device: &str) -> reqwest::Response {
        let body = json!({"email": email, "password": password, "device": {"device_id": device, "platform": "ios"}});
        self.post("/v1/auth/login", body, None).await
    }

    /// `GET /v1/me/devices`: the caller's device list.
    async fn devices(&self, bearer: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/v1/me/devices", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), 200, "devices");
        res.json().await.expect("json")
    }

    /// `DELETE /v1/me/devices/{device}`, confirmed with the account's password.
    async fn remove_device(&self, bearer: &str, device: &str) -> reqwest::Response {
        self.remove_device_with(bearer, device, Some(json!({"password": PASSWORD})))
            .await
    }

    /// `DELETE /v1/me/devices/{device}` with this body (or none).
    async fn remove_device_with(&self, bearer: &str, device: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self
            .http
            .delete(format!("{}/v1/me/devices/{device}", self.base))
            .bearer_auth(bearer);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request")
    }

    /// `DELETE /v1/me/mfa/totp`: MFA off with the password and a code.
    async fn mfa_off(&self, bearer: &str, password: &str, code: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}/v1/me/mfa/totp", self.base))
            .bearer_auth(bearer)
            .json(&json!({"password": password, "code": code}))
            .send()
            .await
            .expect("request")
    }

    async fn refresh(&self, token: &str, device: Option<&str>) -> reqwest::Response {
        let mut body = json!({"refresh_token": token});
        if let Some(d) = device {
            body["device_id"] = json!(d);
        }
        self.post("/v1/auth/refresh", body, None).await
    }
}

const PASSWORD: &str = "correct horse battery staple";

fn registration(email: &str) -> Value {
    json!({
        "email": email,
        "password": PASSWORD,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "income_tier": "middle",
        "device": {"device_id": "phone-1", "platform": "ios", "model": "iPhone 15", "os_version": "18.1"}
    })
}

/// The members of a user in every answer that carries one.
const USER_KEYS: [&str; 9] = [
    "created_at",
    "email",
    "email_verified",
    "first_name",
    "id",
    "income_tier",
    "last_name",
    "mfa_enabled",
    "roles",
];

fn tokens(body: &Value) -> (String, String) {
    let t = &body["tokens"];
    (
        t["access_token"].as_str().expect("access").to_owned(),
        t["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

/// The checks below share one platform (one start instead of ten), each with accounts of its own,
/// run in turn. Two read the whole platform and go first: `hostile_input…` counts every account,
/// `wrong_password…` reads auth-service's counters. The address-wide login failure limit is
/// lifted, since every check logs in from the same address (its own test sets it).
#[tokio::test(flavor = "multi_thread")]
async fn shared_account_checks() {
    let tp = TestPlatform::builder("authshared")
        .auth_env(&[("LOGIN_IP_MAX_FAILURES", "100000")])
        .start()
        .await
        .expect("platform");
    let tp = &tp;
    hostile_input_is_refused_and_changes_nothing(tp).await;
    wrong_password_and_unknown_email_look_the_same_and_five_failures_lock(tp).await;
    register_me_login_refresh_logout(tp).await;
    a_spent_refresh_token_ends_its_session_but_a_quick_retry_does_not(tp).await;
    logout_with_another_users_refresh_token_ends_only_the_callers_session(tp).await;
    forged_and_stale_tokens_are_refused(tp).await;
    profile_password_and_devices(tp).await;
    a_device_id_two_users_both_use_stays_each_ones_own(tp).await;
    totp_mfa_with_replay_protection_and_recovery_codes(tp).await;
    operators_grant_and_revoke_roles_and_import_old_accounts(tp).await;
    deeply_nested_or_huge_json_is_refused(tp).await;
    only_administrators_read_the_audit_log(tp).await;
}

async fn register_me_login_refresh_logout(tp: &TestPlatform) {
    let api = Api::new(tp);

    let body = api.register("Ada@Example.org").await;
    assert_eq!(body["user"]["email"], "Ada@Example.org");
    assert_eq!(body["user"]["roles"], json!(["user"]));
    assert_eq!(body["user"]["income_tier"], "middle");
    assert_eq!(body["user"]["email_verified"], false);
    assert_eq!(body["tokens"]["token_type"], "Bearer");
    assert_eq!(body["tokens"]["expires_in"], 3600);
    // Exactly these members: no password hash, MFA secret or anything else slips in.
    assert_eq!(crate::keys(&body), ["tokens", "user"], "{body}");
    assert_eq!(crate::keys(&body["user"]), USER_KEYS, "{body}");
    assert_eq!(
        crate::keys(&body["tokens"]),
        ["access_token", "expires_in", "refresh_token", "token_type"],
        "{body}"
    );
    let (access, _) = tokens(&body);

    let res = api.me(&access).await;
    assert_eq!(res.status().as_u16(), 200);
    let me: Value = res.json().await.expect("json");
    assert_eq!(crate::keys(&me), USER_KEYS, "{me}");
    assert_eq!(me["id"], body["user"]["id"]);
    assert_eq!(me["mfa_enabled"], false);

    // Same e-mail, other case: a conflict, and nothing new is created.
    let res = api
        .post("/v1/auth/register", registration("ada@example.ORG"), None)
        .await;
    assert_eq!(error_code(res, 409).await, "CONFLICT");

    let res = api.login("ada@example.org", PASSWORD, "phone-2").await;
    assert_eq!(res.status().as_u16(), 200);
    let (access2, refresh2) = tokens(&res.json().await.expect("json"));

    let res = api.refresh(&refresh2, None).await;
    assert_eq!(res.status().as_u16(), 200);
    let (access3, refresh3) = tokens(&res.json().await.expect("json"));
    assert_ne!(refresh3, refresh2);
    assert_eq!(api.me(&access3).await.status().as_u16(), 200);

    let res = api.post("/v1/auth/logout", json!({}), Some(&access3)).await;
    assert_eq!(res.status().as_u16(), 204);
    // This access token stops working at once, and so does the session's refresh token.
    assert_eq!(error_code(api.me(&access3).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(
        error_code(api.refresh(&refresh3, None).await, 401).await,
        "TOKEN_REVOKED"
    );
    // An access token of the same session issued earlier is refused by auth-service (session ended).
    assert_eq!(error_code(api.me(&access2).await, 401).await, "TOKEN_REVOKED");
    // The first session (registration) is untouched.
    assert_eq!(api.me(&access).await.status().as_u16(), 200);

    // Logout-all ends every session, including ones not named.
    let res = api.login("ada@example.org", PASSWORD, "phone-3").await;
    let (access4, _) = tokens(&res.json().await.expect("json"));
    let res = api.post("/v1/auth/logout-all", json!({}), Some(&access4)).await;
    assert_eq!(res.status().as_u16(), 204);
    for token in [&access, &access4] {
        assert_eq!(error_code(api.me(token).await, 401).await, "TOKEN_REVOKED");
    }
}

async fn a_spent_refresh_token_ends_its_session_but_a_quick_retry_does_not(tp: &TestPlatform) {
    let api = Api::new(tp);
    api.register("grace@example.org").await;

    // A phone that lost the answer retries the same refresh: same device, within the grace.
    let (_, r0) = tokens(
        &api.login("grace@example.org", PASSWORD, "dev-a")
            .await
            .json()
            .await
            .expect("json"),
    );
    let first: Value = api.refresh(&r0, Some("dev-a")).await.json().await.expect("json");
    let retried = api.refresh(&r0, Some("dev-a")).await;
    assert_eq!(retried.status().as_u16(), 200);
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(
        retried["tokens"]["refresh_token"], first["tokens"]["refresh_token"],
        "the retry must get the same new token"
    );
    let (_, r1) = tokens(&retried);
    assert_eq!(
        api.refresh(&r1, Some("dev-a")).await.status().as_u16(),
        200,
        "the session lives on"
    );

    // Anyone else presenting a spent token ends the session (RFC 9700 §4.14.2).
    let (access, r0) = tokens(
        &api.login("grace@example.org", PASSWORD, "dev-b")
            .await
            .json()
            .await
            .expect("json"),
    );
    let (_, r1) = tokens(&api.refresh(&r0, Some("dev-b")).await.json().await.expect("json"));
    assert_eq!(
        error_code(api.refresh(&r0, Some("dev-evil")).await, 401).await,
        "TOKEN_REUSED"
    );
    assert_eq!(
        error_code(api.refresh(&r1, Some("dev-b")).await, 401).await,
        "TOKEN_REVOKED",
        "the live token died too"
    );
    assert_eq!(error_code(api.me(&access).await, 401).await, "TOKEN_REVOKED");

    // A token spent two rotations ago is reuse too.
    let (_, r0) = tokens(
        &api.login("grace@example.org", PASSWORD, "dev-c")
            .await
            .json()
            .await
            .expect("json"),
    );
    let (_, r1) = tokens(&api.refresh(&r0, None).await.json().await.expect("json"));
    let (_, r2) = tokens(&api.refresh(&r1, None).await.json().await.expect("json"));
    assert_eq!(error_code(api.refresh(&r0, None).await, 401).await, "TOKEN_REUSED");
    assert_eq!(error_code(api.refresh(&r2, None).await, 401).await, "TOKEN_REVOKED");

    // Garbage is simply unauthenticated.
    assert_eq!(
        error_code(api.refresh("not-a-token", None).await, 401).await,
        "UNAUTHENTICATED"
    );

    // Whoever presents a spent token is on record: address and user agent (issue 17, item 9).
    let (_, r0) = tokens(
        &api.login("grace@example.org", PASSWORD, "dev-d")
            .await
            .json()
            .await
            .expect("json"),
    );
    api.refresh(&r0, Some("dev-d")).await;
    let res = api
        .http
        .post(format!("{}/v1/auth/refresh", api.base))
        .header("user-agent", "thief-app/6.6")
        .json(&json!({"refresh_token": r0, "device_id": "dev-x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(res, 401).await, "TOKEN_REUSED");

    // Reuse was recorded as a security event.
    let db = db(tp).await;
    assert_eq!(events_of(&db, "token_reuse_detected", "grace@example.org").await, 3);
    let last = db
        .query_one(
            "SELECT ip, details->>'user_agent' FROM auth.security_events \
             WHERE event_type = 'token_reuse_detected' ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await
        .expect("event");
    let (ip, agent): (Option<String>, Option<String>) = (last.get(0), last.get(1));
    assert!(
        ip.is_some_and(|ip| !ip.is_empty()),
        "no client address on the reuse event"
    );
    assert_eq!(agent.as_deref(), Some("thief-app/6.6"));
    // The retry served within the grace is on record too (issue 17, item 8).
    assert_eq!(events_of(&db, "refresh_retry_grace", "grace@example.org").await, 1);
}

async fn wrong_password_and_unknown_email_look_the_same_and_five_failures_lock(tp: &TestPlatform) {
    let api = Api::new(tp);
    api.register("lock@example.org").await;

    let strip = |mut v: Value| {
        v["error"]["request_id"] = Value::Null;
        v
    };
    let wrong = api.login("lock@example.org", "not the right password", "d").await;
    assert_eq!(wrong.status().as_u16(), 401);
    let unknown = api.login("nobody@example.org", "not the right password", "d").await;
    assert_eq!(unknown.status().as_u16(), 401);
    let malformed = api.login("not-an-email", "x", "d").await;
    assert_eq!(malformed.status().as_u16(), 401);
    let (w, u, m): (Value, Value, Value) = (
        wrong.json().await.expect("j"),
        unknown.json().await.expect("j"),
        malformed.json().await.expect("j"),
    );
    assert_eq!(w["error"]["code"], "INVALID_CREDENTIALS");
    assert_eq!(strip(w.clone()), strip(u));
    assert_eq!(strip(w), strip(m));

    for attempt in 2..=4 {
        let res = api.login("lock@example.org", "still not it", "d").await;
        assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS", "attempt {attempt}");
    }
    // Locked for 900 s from the fifth failure, which happened while this request was under way.
    let sent = std::time::Instant::now();
    let res = api.login("lock@example.org", "fifth wrong one", "d").await;
    let took = sent.elapsed().as_secs();
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (900 - took - 1..=900).contains(&retry_after),
        "{retry_after} after a request of {took} s"
    );
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");
    // Locked means locked, even with the right password.
    let res = api.login("lock@example.org", PASSWORD, "d").await;
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");

    // Operators see it: counted by type and severity on auth-service's admin port (seven failed
    // logins: five on the account, one unknown address, one malformed).
    let (_, metrics) = xtask::platform::http_get(tp.platform.ports.auth_admin, "/metrics").expect("metrics");
    assert!(
        metrics.contains("security_events_total{event_type=\"account_locked\",severity=\"high\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("security_events_total{event_type=\"login_failed\",severity=\"low\"} 7"),
        "{metrics}"
    );
}

async fn hostile_input_is_refused_and_changes_nothing(tp: &TestPlatform) {
    let api = Api::new(tp);
    let cases = [
        ("email", registration("x'); DROP TABLE auth.users;--@example.org")),
        ("email", registration(&format!("{}@example.org", "a".repeat(10_000)))),
        (
            "password",
            json!({"email": "p@example.org", "password": "password1234", "first_name": "A", "last_name": "B"}),
        ),
        (
            "password",
            json!({"email": "p@example.org", "password": "short", "first_name": "A", "last_name": "B"}),
        ),
        (
            "first_name",
            json!({"email": "p@example.org", "password": PASSWORD, "first_name": "", "last_name": "B"}),
        ),
        (
            "income_tier",
            json!({"email": "p@example.org", "password": PASSWORD, "first_name": "A", "last_name": "B", "income_tier": "rich"}),
        ),
    ];
    for (field, body) in cases {
        let res = api.post("/v1/auth/register", body, None).await;
        assert_eq!(res.status().as_u16(), 400, "{field}");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["error"]["code"], "VALIDATION_FAILED", "{v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
    }
    // Every string has an outer bound at the edge, whatever route and however deep.
    let long = "x".repeat(100_000);
    let mut nested = registration("long@example.org");
    nested["device"]["model"] = json!(long);
    let login = json!({"email": "a@example.org", "password": long, "device": {"device_id": "d", "platform": "ios"}});
    for (path, body, field) in [
        ("/v1/auth/register", nested, "device.model"),
        ("/v1/auth/login", login, "password"),
        ("/v1/auth/password-reset", json!({"email": long}), "email"),
    ] {
        let res = api.post(path, body, None).await;
        assert_eq!(res.status().as_u16(), 400, "{path}");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
        assert!(
            v["error"]["details"][0]["issue"]
                .as_str()
                .is_some_and(|m| m.starts_with("must be at most")),
            "{v}"
        );
    }
    // Unknown fields (a client trying to set its own roles) are refused, naming the field.
    let mut body = registration("roles@example.org");
    body["roles"] = json!(["admin"]);
    let res = api.post("/v1/auth/register", body, None).await;
    assert_eq!(res.status().as_u16(), 400);
    let v: Value = res.json().await.expect("json");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("roles")),
        "{v}"
    );
    // Malformed JSON.
    let res = api
        .http
        .post(format!("{}/v1/auth/login", api.base))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("request");
    assert_eq!(error_code(res, 400).await, "MALFORMED_JSON");

    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let n: i64 = db
        .query_one("SELECT count(*) FROM auth.users", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "a refused registration created an account");
}

/// The current TOTP step, once at least 5 s of it remain: a check that needs codes of one step
/// waits (at most 5 s) for the next step rather than straddle two.
async fn early_in_a_step() -> u64 {
    let into_step = now() % 30;
    if into_step >= 25 {
        tokio::time::sleep(std::time::Duration::from_secs(30 - into_step)).await;
    }
    now() / 30
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

async fn forged_and_stale_tokens_are_refused(tp: &TestPlatform) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    let api = Api::new(tp);
    let body = api.register("target@example.org").await;
    let (access, _) = tokens(&body);
    assert_eq!(api.me(&access).await.status().as_u16(), 200);

    let real_pem = std::fs::read(tp.secrets.path("jwt_signing_keys.pem")).expect("key");
    let real_key = EncodingKey::from_ed_pem(&real_pem).expect("ed key");
    let header = jsonwebtoken::decode_header(&access).expect("header");
    let kid = header.kid.clone().expect("kid");
    let claims = claims_of(&access);
    let sign = |claims: &Value, typ: &str, kid: &str, key: &EncodingKey| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.to_owned());
        h.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&h, claims, key).expect("sign")
    };
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    // Control: the test's own signing works, so each refusal below is about the one thing changed.
    assert_eq!(
        api.me(&sign(&claims, "at+jwt", &kid, &real_key))
            .await
            .status()
            .as_u16(),
        200
    );

    let other_key = EncodingKey::from_ed_pem(&crate::new_signing_key_pem()).expect("ed key");
    let jwks: Value = api
        .http
        .get(format!("{}/.well-known/jwks.json", api.base))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let public_x = B64.decode(jwks["keys"][0]["x"].as_str().expect("x")).expect("x");
    let hs256_with_public = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&public_x)).expect("hs256")
    };
    let alg_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string()),
        access.split('.').nth(1).expect("payload")
    );
    let edited = {
        let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
        parts[1] = B64.encode(with("roles", json!(["admin"])).to_string());
        parts.join(".")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "UNAUTHENTICATED"),
        ("HS256 keyed with the public key", hs256_with_public, "UNAUTHENTICATED"),
        (
            "unknown kid",
            sign(&claims, "at+jwt", "made-up-kid", &real_key),
            "UNAUTHENTICATED",
        ),
        (
            "signed by another key",
            sign(&claims, "at+jwt", &kid, &other_key),
            "UNAUTHENTICATED",
        ),
        (
            "expired",
            sign(&with("exp", json!(now() - 3600)), "at+jwt", &kid, &real_key),
            "TOKEN_EXPIRED",
        ),
        (
            "nbf in the future",
            sign(&with("nbf", json!(now() + 3600)), "at+jwt", &kid, &real_key),
            "UNAUTHENTICATED",
        ),
        (
            "wrong iss",
            sign(&with("iss", json!("https://evil.example")), "at+jwt", &kid, &real_key),
            "UNAUTHENTICATED",
        ),
        (
            "wrong aud",
            sign(&with("aud", json!("another-api")), "at+jwt", &kid, &real_key),
            "UNAUTHENTICATED",
        ),
        ("wrong typ", sign(&claims, "JWT", &kid, &real_key), "UNAUTHENTICATED"),
        ("payload edited after signing", edited, "UNAUTHENTICATED"),
        ("not a JWT", "garbage".to_owned(), "UNAUTHENTICATED"),
    ];
    for (what, token, code) in cases {
        let res = api.me(&token).await;
        assert_eq!(res.status().as_u16(), 401, "{what}");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
    }
    let res = api
        .http
        .get(format!("{}/v1/me", api.base))
        .send()
        .await
        .expect("no token");
    assert_eq!(error_code(res, 401).await, "UNAUTHENTICATED");
    let res = api
        .http
        .get(format!("{}/v1/me", api.base))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .expect("basic");
    assert_eq!(error_code(res, 401).await, "UNAUTHENTICATED");
}

async fn profile_password_and_devices(tp: &TestPlatform) {
    let api = Api::new(tp);
    let a = api.register("alice@example.org").await;
    let (alice_phone, _) = tokens(&a);
    let (alice_tablet, alice_tablet_refresh) = tokens(
        &api.login("alice@example.org", PASSWORD, "tablet-1")
            .await
            .json()
            .await
            .expect("json"),
    );
    let b = api.register("bob@example.org").await;
    let (bob, _) = tokens(&b);

    // PATCH /v1/me: names and tier change, explicit null clears the tier, bad values are named.
    let res = api
        .http
        .patch(format!("{}/v1/me", api.base))
        .bearer_auth(&alice_phone)
        .json(&json!({"first_name": "Ada", "income_tier": null}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status().as_u16(), 200);
    let me: Value = res.json().await.expect("json");
    assert_eq!(
        (me["first_name"].clone(), me["income_tier"].clone()),
        (json!("Ada"), Value::Null)
    );
    let res = api
        .http
        .patch(format!("{}/v1/me", api.base))
        .bearer_auth(&alice_phone)
        .json(&json!({"income_tier": "rich"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");

    // Devices: Alice sees her two, the calling one marked current.
    let list = api.devices(&alice_phone).await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");
    let current: Vec<&str> = items
        .iter()
        .filter(|d| d["current"] == true)
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    assert_eq!(current, vec!["phone-1"]);

    // Bob cannot see or delete Alice's devices: her device id names nothing of his.
    let res = api.remove_device(&bob, "tablet-1").await;
    assert_eq!(error_code(res, 404).await, "NOT_FOUND");
    assert_eq!(
        api.me(&alice_tablet).await.status().as_u16(),
        200,
        "Bob's attempt touched Alice's session"
    );

    // Alice removes her tablet: its access and refresh tokens die at once; her phone carries on.
    let res = api.remove_device(&alice_phone, "tablet-1").await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&alice_tablet).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(
        error_code(api.refresh(&alice_tablet_refresh, None).await, 401).await,
        "TOKEN_REVOKED"
    );
    assert_eq!(api.me(&alice_phone).await.status().as_u16(), 200);

    // Password change: the current password is checked; other sessions end, this one continues.
    let (alice_laptop, _) = tokens(
        &api.login("alice@example.org", PASSWORD, "laptop")
            .await
            .json()
            .await
            .expect("json"),
    );
    let change = |current: &str, new: &str| {
        api.http
            .post(format!("{}/v1/me/password", api.base))
            .bearer_auth(&alice_phone)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    assert_eq!(
        error_code(
            change("wrong password!", "a brand new passphrase").await.expect("req"),
            401
        )
        .await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        error_code(change(PASSWORD, "password1234").await.expect("req"), 400).await,
        "VALIDATION_FAILED"
    );
    assert_eq!(
        change(PASSWORD, "a brand new passphrase")
            .await
            .expect("req")
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        error_code(api.me(&alice_laptop).await, 401).await,
        "TOKEN_REVOKED",
        "token used after password change"
    );
    assert_eq!(api.me(&alice_phone).await.status().as_u16(), 200);
    assert_eq!(
        error_code(api.login("alice@example.org", PASSWORD, "x").await, 401).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        api.login("alice@example.org", "a brand new passphrase", "x")
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn captcha_at_registration_and_after_three_failures_through_a_fake_siteverify() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let siteverify = MockServer::start().await;
    let answer = |token: &str, body: Value| {
        Mock::given(method("POST"))
            .and(path("/siteverify"))
            .and(body_string_contains("secret=test-captcha-secret"))
            .and(body_string_contains(format!("response={token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
    };
    answer("good-token", json!({"success": true})).mount(&siteverify).await;
    answer(
        "bad-token",
        json!({"success": false, "error-codes": ["invalid-input-response"]}),
    )
    .mount(&siteverify)
    .await;
    Mock::given(method("POST"))
        .and(body_string_contains("response=outage-token"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&siteverify)
        .await;
    let url = format!("{}/siteverify", siteverify.uri());
    let tp = TestPlatform::builder("captcha")
        .gateway_env(&LOOPBACK_IS_A_PROXY)
        .auth_env(&[
            ("CAPTCHA_PROVIDER", "turnstile"),
            ("CAPTCHA_SECRET", "test-captcha-secret"),
            ("CAPTCHA_VERIFY_URL", &url),
        ])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);

    let with_token = |token: Option<&str>| {
        let mut body = registration("captcha@example.org");
        if let Some(t) = token {
            body["captcha_token"] = json!(t);
        }
        body
    };
    let res = api.post("/v1/auth/register", with_token(None), None).await;
    assert_eq!(error_code(res, 400).await, "CAPTCHA_REQUIRED");
    let res = api.post("/v1/auth/register", with_token(Some("bad-token")), None).await;
    assert_eq!(error_code(res, 400).await, "CAPTCHA_FAILED");
    // The provider failing is our outage, never a pass (fail closed).
    let res = api
        .post("/v1/auth/register", with_token(Some("outage-token")), None)
        .await;
    assert_eq!(error_code(res, 503).await, "UNAVAILABLE");
    let res = api
        .post("/v1/auth/register", with_token(Some("good-token")), None)
        .await;
    assert_eq!(res.status().as_u16(), 201);

    for _ in 0..3 {
        assert_eq!(
            error_code(api.login("captcha@example.org", "wrong password!", "d").await, 401).await,
            "INVALID_CREDENTIALS"
        );
    }
    // After three failures even the right password needs a solved CAPTCHA.
    assert_eq!(
        error_code(api.login("captcha@example.org", PASSWORD, "d").await, 400).await,
        "CAPTCHA_REQUIRED"
    );
    let body = json!({"email": "captcha@example.org", "password": PASSWORD, "device": {"device_id": "d", "platform": "ios"}, "captcha_token": "good-token"});
    assert_eq!(api.post("/v1/auth/login", body, None).await.status().as_u16(), 200);

    // A soft lock (issue 17, item 4): an address that locked the account waits, unless the right
    // password comes with a solved CAPTCHA; a wrong one with a CAPTCHA still meets the lock.
    let login = |from: &'static str, password: &'static str, captcha: Option<&'static str>| {
        let mut body = json!({"email": "captcha@example.org", "password": password,
            "device": {"device_id": "d", "platform": "ios"}});
        if let Some(t) = captcha {
            body["captcha_token"] = json!(t);
        }
        let api = &api;
        async move { api.post_from(from, "/v1/auth/login", body).await }
    };
    let from = "203.0.113.80";
    for attempt in 1..=4 {
        let res = login(from, "wrong password!", Some("good-token")).await;
        assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS", "attempt {attempt}");
    }
    let res = login(from, "wrong password!", Some("good-token")).await;
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");
    assert_eq!(
        error_code(login(from, PASSWORD, None).await, 423).await,
        "ACCOUNT_LOCKED"
    );
    let res = login(from, "wrong password!", Some("good-token")).await;
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");
    assert_eq!(login(from, PASSWORD, Some("good-token")).await.status().as_u16(), 200);

    // Guesses spread over many addresses, one each: after ten, every attempt on the account needs
    // a CAPTCHA, from anywhere, even with the right password; it is never a lock.
    let spread = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
        "198.51.100.6",
        "198.51.100.7",
        "198.51.100.8",
        "198.51.100.9",
        "198.51.100.10",
    ];
    for from in spread {
        let res = login(from, "wrong password!", None).await;
        assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS", "from {from}");
    }
    let res = login("198.51.100.11", PASSWORD, None).await;
    assert_eq!(error_code(res, 400).await, "CAPTCHA_REQUIRED");
    assert_eq!(
        login("198.51.100.11", PASSWORD, Some("good-token"))
            .await
            .status()
            .as_u16(),
        200
    );
    // The owner's login started the count over.
    assert_eq!(login("198.51.100.12", PASSWORD, None).await.status().as_u16(), 200);

    // A soft lock is no open door for a CAPTCHA-solving service: each wrong password a CAPTCHA
    // let through locks the pair again, and from the third lock on a CAPTCHA passes no more:
    // even the right password waits for the lock to run out.
    let farm = "203.0.113.81";
    for attempt in 1..=4 {
        let res = login(farm, "wrong password!", Some("good-token")).await;
        assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS", "attempt {attempt}");
    }
    for lock in 1..=3 {
        let res = login(farm, "wrong password!", Some("good-token")).await;
        assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED", "lock {lock}");
    }
    let res = login(farm, PASSWORD, Some("good-token")).await;
    assert_eq!(
        error_code(res, 423).await,
        "ACCOUNT_LOCKED",
        "a CAPTCHA passed the third lock"
    );
    assert!(
        events_of(&db(&tp).await, "account_locked", "captcha@example.org").await >= 4,
        "each lock is on record"
    );
}

async fn totp_mfa_with_replay_protection_and_recovery_codes(tp: &TestPlatform) {
    use totp_rs::{Secret, Totp};

    let api = Api::new(tp);
    let (access, _) = tokens(&api.register("mfa@example.org").await);

    let res = api
        .post("/v1/me/mfa/totp", json!({"password": PASSWORD}), Some(&access))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let enrollment: Value = res.json().await.expect("json");
    assert!(
        enrollment["otpauth_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://totp/")),
        "{enrollment}"
    );
    // The app's side: what an authenticator does with the otpauth URI.
    let totp = Totp::from_url(enrollment["otpauth_uri"].as_str().expect("uri")).expect("otpauth uri");
    let code_at = |step: u64| totp.generate(step * 30).to_string();
    // A code is accepted in its step and the next one, never before; the confirmation uses the
    // step before and the login the current one, so both must fall in one step.
    let step = early_in_a_step().await;

    let res = api
        .post("/v1/me/mfa/totp/confirm", json!({"code": "000000"}), Some(&access))
        .await;
    assert_eq!(error_code(res, 401).await, "MFA_REQUIRED");
    // The app's code of the next step (a clock ahead) is not accepted.
    let res = api
        .post(
            "/v1/me/mfa/totp/confirm",
            json!({"code": code_at(step + 1)}),
            Some(&access),
        )
        .await;
    assert_eq!(error_code(res, 401).await, "MFA_REQUIRED", "a code from the future");
    let confirm_code = code_at(step - 1);
    let res = api
        .post("/v1/me/mfa/totp/confirm", json!({"code": confirm_code}), Some(&access))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let codes: Vec<String> =
        serde_json::from_value(res.json::<Value>().await.expect("json")["recovery_codes"].clone()).expect("codes");
    assert_eq!(codes.len(), 10);
    let me: Value = api.me(&access).await.json().await.expect("json");
    assert_eq!(me["mfa_enabled"], true);

    let login = |code: Option<String>| {
        let mut body = json!({"email": "mfa@example.org", "password": PASSWORD, "device": {"device_id": "d", "platform": "android"}});
        if let Some(c) = code {
            body["totp_code"] = json!(c);
        }
        api.post("/v1/auth/login", body, None)
    };
    assert_eq!(error_code(login(None).await, 401).await, "MFA_REQUIRED");
    // The code that confirmed the enrollment was used once: a replay is refused.
    assert_eq!(error_code(login(Some(confirm_code)).await, 401).await, "MFA_REQUIRED");
    // A fresh code (the current step) works once, then is refused.
    let fresh = code_at(step);
    assert_eq!(login(Some(fresh.clone())).await.status().as_u16(), 200);
    assert_eq!(
        error_code(login(Some(fresh)).await, 401).await,
        "MFA_REQUIRED",
        "TOTP code replayed"
    );
    // A recovery code works once, in any spelling.
    let recovery = codes[0].to_lowercase().replace('-', " ");
    assert_eq!(login(Some(recovery.clone())).await.status().as_u16(), 200);
    assert_eq!(error_code(login(Some(recovery)).await, 401).await, "MFA_REQUIRED");

    // The seed never leaves the database in clear.
    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let row = db
        .query_one("SELECT mfa_secret FROM auth.users WHERE email = 'mfa@example.org'", &[])
        .await
        .expect("row");
    let stored: Vec<u8> = row.get(0);
    let secret = Secret::try_from_base32(enrollment["secret"].as_str().expect("secret")).expect("base32");
    let raw = secret.as_bytes().to_vec();
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "TOTP seed stored in clear"
    );
    // Recovery codes are kept as argon2id hashes only (ASVS 6.5.2).
    let phcs: Vec<Option<String>> = db
        .query(
            "SELECT code_phc FROM auth.recovery_codes WHERE user_id = \
             (SELECT id FROM auth.users WHERE email = 'mfa@example.org')",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(phcs.len(), 10);
    assert!(
        phcs.iter()
            .all(|p| p.as_deref().is_some_and(|p| p.starts_with("$argon2id$"))),
        "{phcs:?}"
    );

    // Turning MFA off takes the password and a valid code; then a password alone logs in again.
    let res = api.mfa_off(&access, PASSWORD, "123456").await;
    assert_eq!(error_code(res, 401).await, "MFA_REQUIRED");
    let res = api.mfa_off(&access, PASSWORD, &codes[1]).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(login(None).await.status().as_u16(), 200);
}

async fn operators_grant_and_revoke_roles_and_import_old_accounts(tp: &TestPlatform) {
    let api = Api::new(tp);
    api.register("mod@example.org").await;

    let (ok, out) = crate::operator(tp, &["grant-role", "--email", "MOD@example.org", "--role", "moderator"]);
    assert!(ok, "{out}");
    let (access, _) = tokens(
        &api.login("mod@example.org", PASSWORD, "d")
            .await
            .json()
            .await
            .expect("json"),
    );
    let me: Value = api.me(&access).await.json().await.expect("json");
    assert_eq!(me["roles"], json!(["user", "moderator"]));
    let (ok, out) = crate::operator(tp, &["grant-role", "--email", "mod@example.org", "--role", "superuser"]);
    assert!(!ok, "an unknown role was accepted: {out}");
    let (ok, out) = crate::operator(tp, &["grant-role", "--email", "nobody@example.org", "--role", "admin"]);
    assert!(!ok && out.contains("no account"), "{out}");

    // Revoking ends the sessions, so no token keeps the old role.
    let (ok, out) = crate::operator(
        tp,
        &["revoke-role", "--email", "mod@example.org", "--role", "moderator"],
    );
    assert!(ok, "{out}");
    assert_eq!(error_code(api.me(&access).await, 401).await, "TOKEN_REVOKED");
    let (access, _) = tokens(
        &api.login("mod@example.org", PASSWORD, "d")
            .await
            .json()
            .await
            .expect("json"),
    );
    let me: Value = api.me(&access).await.json().await.expect("json");
    assert_eq!(me["roles"], json!(["user"]));

    // Accounts from the old Node system log in with their old password and are re-hashed.
    let old_hash = bcrypt::hash("an old node password", 4).expect("bcrypt");
    let file = tp.secrets.path("import.jsonl");
    let lines = [
        json!({"email": "old@example.org", "password_hash": old_hash, "first_name": "Old", "last_name": "Timer", "email_verified": true}).to_string(),
        json!({"email": "mod@example.org", "password_hash": old_hash, "first_name": "Dup", "last_name": "Licate"}).to_string(),
        json!({"email": "weak@example.org", "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99", "first_name": "M", "last_name": "D"}).to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let (ok, out) = crate::operator(tp, &["import-users", file.to_str().expect("path")]);
    assert!(ok, "{out}");
    assert!(out.contains("imported 1, already present 1, invalid 1"), "{out}");
    assert!(!out.contains("5f4dcc3b"), "a hash was printed: {out}");
    let res = api.login("old@example.org", "an old node password", "d").await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], true);
    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let row = db
        .query_one(
            "SELECT password_hash FROM auth.users WHERE email = 'old@example.org'",
            &[],
        )
        .await
        .expect("row");
    assert!(
        row.get::<_, String>(0).starts_with("$argon2id$"),
        "not re-hashed on login"
    );
    assert_eq!(
        api.login("old@example.org", "an old node password", "d")
            .await
            .status()
            .as_u16(),
        200
    );
}

/// A platform whose auth-service mails through a fake SMTP relay (and `env` besides).
async fn with_fake_relay(tag: &str, env: &[(&str, &str)]) -> (xtask::fake_smtp::FakeSmtp, TestPlatform) {
    let relay = xtask::fake_smtp::FakeSmtp::start().await.expect("fake smtp");
    let port = relay.port.to_string();
    let tp = TestPlatform::builder(tag)
        .auth_env(&[
            ("MAILER", "smtp"),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &port),
            ("SMTP_TLS", "none"),
            ("SMTP_FROM", "Platform <no-reply@example.org>"),
        ])
        .auth_env(env)
        .start()
        .await
        .expect("platform");
    (relay, tp)
}

/// The token in a mailed link `…?token=XYZ`.
fn token_in(mail: &xtask::fake_smtp::Mail) -> String {
    let start = mail.data.find("token=").expect("a link with a token") + "token=".len();
    mail.data[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn email_verification_and_password_reset_through_a_fake_relay() {
    use std::time::Duration;

    let (mut relay, tp) = with_fake_relay("mail", &[("APP_BASE_URL", "https://app.example.org")]).await;
    let api = Api::new(&tp);
    let wait = Duration::from_secs(10);

    let (access, _) = tokens(&api.register("mail@example.org").await);
    let mail = relay.next(wait).await.expect("verification mail");
    assert_eq!(mail.recipients, vec!["mail@example.org"]);
    assert!(
        mail.data.contains("https://app.example.org/verify-email?token="),
        "{}",
        mail.data
    );
    let token = token_in(&mail);
    assert_eq!(
        api.post("/v1/auth/verify-email", json!({"token": token}), None)
            .await
            .status()
            .as_u16(),
        204
    );
    let me: Value = api.me(&access).await.json().await.expect("json");
    assert_eq!(me["email_verified"], true);
    let res = api.post("/v1/auth/verify-email", json!({"token": token}), None).await;
    assert_eq!(
        error_code(res, 400).await,
        "VALIDATION_FAILED",
        "a verification token worked twice"
    );

    // Reset: the same 202 for an unknown address, and no mail for it.
    let res = api
        .post("/v1/auth/password-reset", json!({"email": "nobody@example.org"}), None)
        .await;
    assert_eq!(res.status().as_u16(), 202);
    let res = api
        .post("/v1/auth/password-reset", json!({"email": "MAIL@example.org"}), None)
        .await;
    assert_eq!(res.status().as_u16(), 202);
    let mail = relay.next(wait).await.expect("reset mail");
    assert_eq!(
        mail.recipients,
        vec!["mail@example.org"],
        "a mail went to an unknown address first"
    );
    assert!(relay.is_empty());
    let token = token_in(&mail);

    // A refused password does not burn the token; a good one ends every session.
    let confirm = |password: &str| {
        api.post(
            "/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": password}),
            None,
        )
    };
    assert_eq!(
        error_code(confirm("password1234").await, 400).await,
        "VALIDATION_FAILED"
    );
    assert_eq!(confirm("a fresh reset passphrase").await.status().as_u16(), 204);
    assert_eq!(
        error_code(confirm("another fresh passphrase").await, 400).await,
        "VALIDATION_FAILED",
        "reset token used twice"
    );
    assert_eq!(error_code(api.me(&access).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(
        error_code(api.login("mail@example.org", PASSWORD, "d").await, 401).await,
        "INVALID_CREDENTIALS"
    );
    assert_eq!(
        api.login("mail@example.org", "a fresh reset passphrase", "d")
            .await
            .status()
            .as_u16(),
        200
    );
    let res = api
        .post(
            "/v1/auth/password-reset/confirm",
            json!({"token": "made-up", "new_password": "whatever passphrase"}),
            None,
        )
        .await;
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_from_one_address_across_accounts_are_stopped() {
    let tp = TestPlatform::builder("stuffing")
        .auth_env(&[("LOGIN_IP_MAX_FAILURES", "3")])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    api.register("victim@example.org").await;
    // Credential stuffing: one wrong password each for many accounts, all from one address.
    for who in ["a@example.org", "b@example.org", "victim@example.org"] {
        assert_eq!(
            error_code(api.login(who, "leaked password 1", "d").await, 401).await,
            "INVALID_CREDENTIALS"
        );
    }
    let res = api.login("victim@example.org", PASSWORD, "d").await;
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    assert_eq!(error_code(res, 429).await, "RATE_LIMIT_EXCEEDED");
}

async fn deeply_nested_or_huge_json_is_refused(tp: &TestPlatform) {
    let api = Api::new(tp);
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = api
        .http
        .post(format!("{}/v1/auth/login", api.base))
        .header("content-type", "application/json")
        .body(format!("{{\"email\": {deep}}}"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status().as_u16(),
        400,
        "deep nesting must be refused, not crash the gateway"
    );
    let huge =
        json!({"email": "a".repeat(2 * 1024 * 1024), "password": "x", "device": {"device_id": "d", "platform": "ios"}});
    let res = api.post("/v1/auth/login", huge, None).await;
    assert_eq!(error_code(res, 413).await, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        api.http
            .get(format!("{}/health", api.base))
            .send()
            .await
            .expect("alive")
            .status()
            .as_u16(),
        200
    );
}

async fn only_administrators_read_the_audit_log(tp: &TestPlatform) {
    let api = Api::new(tp);
    let (user, _) = tokens(&api.register("plain@example.org").await);
    api.register("boss@example.org").await;
    let list = |token: String, query: &str| {
        api.http
            .get(format!("{}/v1/admin/audit-logs{query}", api.base))
            .bearer_auth(token)
            .send()
    };

    let res = list(user.clone(), "").await.expect("list");
    assert_eq!(error_code(res, 403).await, "FORBIDDEN");

    let (ok, out) = crate::operator(tp, &["grant-role", "--email", "boss@example.org", "--role", "admin"]);
    assert!(ok, "{out}");
    let (admin, _) = tokens(
        &api.login("boss@example.org", PASSWORD, "d")
            .await
            .json()
            .await
            .expect("json"),
    );
    let res = list(admin.clone(), "?limit=2").await.expect("list");
    assert_eq!(res.status().as_u16(), 200);
    let page: Value = res.json().await.expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let page2: Value = list(admin.clone(), &format!("?limit=2&cursor={cursor}"))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_ne!(page2["items"][0]["id"], page["items"][0]["id"], "the cursor moves on");
    // An entry names what changed, never a value (a password hash, a secret): exactly these members.
    assert_eq!(crate::keys(&page), ["items", "next_cursor"], "{page}");
    for entry in page["items"].as_array().expect("items") {
        assert_eq!(
            crate::keys(entry),
            [
                "action",
                "actor_id",
                "changed_fields",
                "created_at",
                "id",
                "ip",
                "resource",
                "resource_id",
                "user_agent"
            ],
            "{entry}"
        );
    }
    let res = list(admin.clone(), "?cursor=garbage").await.expect("list");
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
    let res = list(admin.clone(), "?limit=1&limit=2").await.expect("list");
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");

    // A revoked role stops working at once (its sessions end).
    let (ok, out) = crate::operator(tp, &["revoke-role", "--email", "boss@example.org", "--role", "admin"]);
    assert!(ok, "{out}");
    let res = list(admin, "").await.expect("list");
    assert_eq!(error_code(res, 401).await, "TOKEN_REVOKED");
}

/// A refresh token in a logout body ends its session only when it is the caller's: whoever got
/// hold of another user's refresh token cannot log that user out with it (nor spend it).
async fn logout_with_another_users_refresh_token_ends_only_the_callers_session(tp: &TestPlatform) {
    let api = Api::new(tp);
    let (erin, erin_refresh) = tokens(&api.register("erin@example.org").await);
    let (mallory, _) = tokens(&api.register("mallory@example.org").await);
    let res = api
        .post(
            "/v1/auth/logout",
            json!({"refresh_token": erin_refresh}),
            Some(&mallory),
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&mallory).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(api.me(&erin).await.status().as_u16(), 200, "Erin's session ended");
    assert_eq!(
        api.refresh(&erin_refresh, None).await.status().as_u16(),
        200,
        "Erin's refresh token was spent or revoked"
    );
}

/// Two users may name a device the same (`phone-1` is every app's first guess): each lists and
/// removes only their own, and removing mine leaves theirs and its sessions alone.
async fn a_device_id_two_users_both_use_stays_each_ones_own(tp: &TestPlatform) {
    let api = Api::new(tp);
    let (carol_phone, _) = tokens(&api.register("carol@example.org").await);
    let (carol_laptop, _) = tokens(
        &api.login("carol@example.org", PASSWORD, "laptop")
            .await
            .json()
            .await
            .expect("json"),
    );
    let (dave_phone, dave_refresh) = tokens(&api.register("dave@example.org").await);
    let devices = |token: String| {
        let api = &api;
        async move {
            let list = api.devices(&token).await;
            let mut ids: Vec<String> = list["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|d| d["device_id"].as_str().expect("device_id").to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(devices(dave_phone.clone()).await, ["phone-1"]);
    assert_eq!(devices(carol_laptop.clone()).await, ["laptop", "phone-1"]);

    let res = api.remove_device(&carol_laptop, "phone-1").await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&carol_phone).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(
        api.me(&dave_phone).await.status().as_u16(),
        200,
        "Dave's phone was signed out"
    );
    assert_eq!(
        api.refresh(&dave_refresh, Some("phone-1")).await.status().as_u16(),
        200,
        "Dave's phone lost its refresh token"
    );
    assert_eq!(devices(dave_phone).await, ["phone-1"]);
    assert_eq!(devices(carol_laptop).await, ["laptop"]);
}

/// auth-service's count of `GetJwks` calls it answered (any status), from its admin port.
fn jwks_fetches(tp: &TestPlatform) -> u64 {
    let (_, text) = xtask::platform::http_get(tp.platform.ports.auth_admin, "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("/GetJwks\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).expect("header").kid.expect("kid")
}

/// A signing key withdrawn by auth-service (dropped from its key file, auth-service restarted)
/// stops verifying at the gateway itself within `JWKS_REFRESH_SECONDS`, without a gateway
/// restart: the gateway refuses the token (a `token_rejected` event at the edge) instead of
/// passing it on to a service on the strength of a key it fetched long ago.
#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawn_signing_key_stops_verifying_at_the_gateway_without_a_restart() {
    use std::time::Duration;

    let mut tp = TestPlatform::builder("withdrawn")
        .gateway_env(&[("JWKS_REFRESH_SECONDS", "1")])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (old_token, _) = tokens(&api.register("withdrawn@example.org").await);
    assert_eq!(api.me(&old_token).await.status().as_u16(), 200);

    let keys_file = tp.secrets.path("jwt_signing_keys.pem");
    std::fs::write(&keys_file, crate::new_signing_key_pem()).expect("key file without the old key");
    assert!(
        tp.platform.auth.stop(Duration::from_secs(15)),
        "auth-service stopped cleanly"
    );
    tp.platform.auth.restart().expect("auth-service again");
    let auth_admin = tp.platform.ports.auth_admin;
    crate::eventually("auth-service ready again", Duration::from_secs(30), || async move {
        crate::admin_get(auth_admin, "/ready").filter(|(s, _)| *s == 200)
    })
    .await;

    let gateway_admin = tp.platform.ports.gateway_admin;
    let rejected = || {
        crate::metric(
            gateway_admin,
            "security_events_total{event_type=\"token_rejected\",severity=\"medium\"}",
        )
    };
    let before = rejected();
    crate::eventually(
        "the gateway to stop trusting the withdrawn key",
        Duration::from_secs(20),
        || {
            let api = &api;
            let old_token = &old_token;
            async move {
                let res = api.me(old_token).await;
                assert_eq!(res.status().as_u16(), 401, "a token of a withdrawn key was served");
                (rejected() > before).then_some(())
            }
        },
    )
    .await;
}

/// A signing key rotated the way an operator does it (the new key first in the key file, the old
/// one kept after it to verify the tokens it signed, auth-service restarted) is trusted by the
/// gateway without a restart, within `JWKS_REFETCH_SECONDS` (default 5); and tokens naming kids
/// that exist nowhere cost auth-service at most one `GetJwks` per that interval, however many.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_signing_key_is_trusted_without_a_gateway_restart_and_invented_kids_cost_one_fetch() {
    use std::time::{Duration, Instant};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const REFETCH_SECONDS: u64 = 5;
    let mut tp = TestPlatform::builder("rotation").start().await.expect("platform");
    let (http, base) = (client(&tp), tp.base_url());
    let me = |token: String| http.get(format!("{base}/v1/me")).bearer_auth(token).send();
    let register = {
        let api = Api::new(&tp);
        api.register("rotate@example.org").await
    };
    let (old_token, _) = tokens(&register);
    assert_eq!(me(old_token.clone()).await.expect("me").status().as_u16(), 200);

    let keys_file = tp.secrets.path("jwt_signing_keys.pem");
    let old_pem = std::fs::read(&keys_file).expect("key file");
    let new_pem = crate::new_signing_key_pem();
    std::fs::write(&keys_file, [new_pem.clone(), old_pem].concat()).expect("rotated key file");
    assert!(
        tp.platform.auth.stop(Duration::from_secs(15)),
        "auth-service stopped cleanly"
    );
    tp.platform.auth.restart().expect("auth-service again");
    let auth_admin = tp.platform.ports.auth_admin;
    crate::eventually("auth-service ready again", Duration::from_secs(30), || async move {
        crate::admin_get(auth_admin, "/ready").filter(|(s, _)| *s == 200)
    })
    .await;

    let api = Api::new(&tp);
    let res = api.login("rotate@example.org", PASSWORD, "phone-2").await;
    assert_eq!(res.status().as_u16(), 200);
    let (new_token, _) = tokens(&res.json().await.expect("json"));
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, kid_of(&old_token), "the new key signs");
    crate::eventually(
        "the gateway to trust the new key",
        Duration::from_secs(REFETCH_SECONDS + 15),
        || {
            let request = me(new_token.clone());
            async move { (request.await.ok()?.status().as_u16() == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        me(old_token).await.expect("me").status().as_u16(),
        200,
        "a token of the old key, kept to verify, was refused"
    );

    // Tokens like the real one, each naming a kid that exists nowhere.
    let claims = claims_of(&new_token);
    let key = EncodingKey::from_ed_pem(&new_pem).expect("new key");
    let invented: Vec<String> = (0..100)
        .map(|i| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(format!("invented-{i}"));
            header.typ = Some("at+jwt".to_owned());
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        })
        .collect();
    let before = jwks_fetches(&tp);
    assert!(
        before >= 1,
        "the new key was fetched by GetJwks, counted since the restart"
    );
    let started = Instant::now();
    for token in invented {
        let res = me(token).await.expect("me");
        assert_eq!(error_code(res, 401).await, "UNAUTHENTICATED");
    }
    let spent = jwks_fetches(&tp) - before;
    let allowed = 1 + started.elapsed().as_secs() / REFETCH_SECONDS;
    assert!(
        spent <= allowed,
        "{spent} GetJwks calls for 100 invented kids in {:?}",
        started.elapsed()
    );
}

/// With the default `REVOCATION_CACHE_SECONDS` (2, also the most allowed), while Redis is down, auth-service's "not
/// revoked" spares it the same question for those seconds, and a token revoked meanwhile is
/// refused by the gateway itself once they are over: never sooner (the cache is used), and
/// promptly after.
#[tokio::test(flavor = "multi_thread")]
async fn by_default_a_token_revoked_while_redis_is_down_is_refused_at_the_edge_after_two_seconds() {
    use std::time::{Duration, Instant};

    let (_own, redis, tp) = TestPlatform::builder("revocationcache")
        .start_on_own_redis()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (access, _) = tokens(&api.register("cache@example.org").await);
    drop(redis);
    let gateway_admin = tp.platform.ports.gateway_admin;
    crate::eventually("/ready to report Redis down", Duration::from_secs(10), || async move {
        crate::admin_get(gateway_admin, "/ready").filter(|(_, b)| b["checks"]["redis"] == false)
    })
    .await;
    let count = |result: &str| {
        crate::metric(
            gateway_admin,
            &format!("revocation_fallback_total{{result=\"{result}\"}}"),
        )
    };

    // auth-service answers first; the next requests are answered from the cache.
    let asked = Instant::now();
    assert_eq!(api.me(&access).await.status().as_u16(), 200);
    let (valid, cached) = (count("valid"), count("cached"));
    assert!(valid >= 1, "auth-service was not asked");
    for _ in 0..3 {
        assert_eq!(api.me(&access).await.status().as_u16(), 200);
    }
    // At most once more per 2 s since the first answer (none, unless the host is very slow).
    let asked_again = count("valid") - valid;
    let seconds = asked.elapsed().as_secs();
    assert!(
        asked_again <= seconds / 2,
        "auth-service asked {asked_again} more times in {seconds} s"
    );
    assert!(
        count("cached") - cached + asked_again >= 3,
        "answered without the fallback"
    );

    // The session ends (in PostgreSQL; Redis is down). Until the cached answer is 2 s old the
    // gateway lets the token through to auth-service, which refuses it on its own; then the
    // gateway refuses it itself.
    let res = api.post("/v1/auth/logout", json!({}), Some(&access)).await;
    assert_eq!(res.status().as_u16(), 204);
    let edge = "The access token has been revoked; log in again.";
    crate::eventually("the gateway to refuse the token", Duration::from_secs(30), || async {
        let res = api.me(&access).await;
        assert_eq!(res.status().as_u16(), 401, "a revoked token was served");
        let body: Value = res.json().await.ok()?;
        (body["error"]["message"] == edge).then_some(())
    })
    .await;
    let took = asked.elapsed();
    assert!(took >= Duration::from_secs(2), "the cache was not used: {took:?}");
    assert!(took < Duration::from_secs(15), "refused only after {took:?}");
}

/// Revocation must not fail open: while Redis is gone the gateway asks auth-service, whose answer
/// comes from PostgreSQL, including for a logout made during the outage.
#[tokio::test(flavor = "multi_thread")]
async fn revoked_tokens_stay_revoked_while_redis_is_down() {
    use std::time::Duration;

    // No caching of "not revoked", so a logout during the outage shows at once.
    let (own, redis, tp) = TestPlatform::builder("revocationdown")
        .gateway_env(&[("REVOCATION_CACHE_SECONDS", "0")])
        .auth_env(&[("REVOCATION_SYNC_SECONDS", "1")])
        .start_on_own_redis()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (before_outage, _) = tokens(&api.register("outage@example.org").await);
    let mut sessions = Vec::new();
    for device in ["phone-2", "phone-3"] {
        let res = api.login("outage@example.org", PASSWORD, device).await;
        sessions.push(tokens(&res.json().await.expect("json")).0);
    }
    let res = api.post("/v1/auth/logout", json!({}), Some(&before_outage)).await;
    assert_eq!(res.status().as_u16(), 204);

    drop(redis);
    let gateway_admin = tp.platform.ports.gateway_admin;
    crate::eventually("/ready to report Redis down", Duration::from_secs(10), || async move {
        crate::admin_get(gateway_admin, "/ready").filter(|(_, b)| b["checks"]["redis"] == false)
    })
    .await;
    // Revoked before the outage: still refused. A live session: still served.
    refused_at_the_edge(api.me(&before_outage).await).await;
    assert_eq!(api.me(&sessions[0]).await.status().as_u16(), 200);
    // A logout during the outage lands in PostgreSQL and takes effect at once.
    let res = api.post("/v1/auth/logout", json!({}), Some(&sessions[0])).await;
    assert_eq!(res.status().as_u16(), 204);
    refused_at_the_edge(api.me(&sessions[0]).await).await;
    assert_eq!(api.me(&sessions[1]).await.status().as_u16(), 200);
    // A forged token (a live session's header and claims, another key's signature) is still
    // refused by its signature, before any fallback.
    let forged = crate::forge(&sessions[1]);
    assert_eq!(error_code(api.me(&forged).await, 401).await, "UNAUTHENTICATED");

    let count = |result: &str| {
        crate::metric(
            gateway_admin,
            &format!("revocation_fallback_total{{result=\"{result}\"}}"),
        )
    };
    assert!(count("revoked") >= 2);
    assert!(count("valid") >= 2);

    // Redis comes back empty (no persistence): it forgot every revocation. Until auth-service has
    // copied them back from PostgreSQL it lacks the marker, and the gateway asks auth-service, so
    // the tokens revoked before and during the outage stay refused at every moment.
    let redis = own.start().expect("redis again");
    crate::eventually("/ready to report Redis back", Duration::from_secs(10), || async move {
        crate::admin_get(gateway_admin, "/ready").filter(|(_, b)| b["checks"]["redis"] == true)
    })
    .await;
    refused_at_the_edge(api.me(&before_outage).await).await;
    refused_at_the_edge(api.me(&sessions[0]).await).await;
    assert_eq!(api.me(&sessions[1]).await.status().as_u16(), 200);
    let client = redis::Client::open(redis.url()).expect("redis url");
    let conn = client.get_multiplexed_async_connection().await.expect("redis");
    let prefix = tp.redis_prefix.clone();
    let mut keys: Vec<String> = [&before_outage, &sessions[0]]
        .iter()
        .map(|t| format!("{prefix}revoked:sid:{}", claim(t, "sid")))
        .collect();
    keys.push(format!("{prefix}revoked:complete:v2"));
    wait_for_keys(&conn, &keys, "auth-service to copy the revocations back").await;
    // Read from Redis again, with the same answers.
    refused_at_the_edge(api.me(&before_outage).await).await;
    assert_eq!(api.me(&sessions[1]).await.status().as_u16(), 200);
    // One full copy at start (a new Redis), one after the wipe.
    assert!(sync_rounds(&tp, "full") >= 2);
}

/// A frozen Redis (accepts, never answers: a stalled host, a full disk under AOF) is "slow", not
/// "down": nothing refuses the connection, so only the gateway's own timeout bounds each request.
/// Every request still answers within that bound, with the local limits and auth-service's word on
/// revocation (503 while auth-service cannot answer either, never a pass); when Redis thaws it
/// decides again, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_redis_costs_each_request_its_timeout_and_nothing_else() {
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let gateway_env = [
        ("REVOCATION_CACHE_SECONDS", "0"),
        // One request earned back every 5 minutes: the local burst of 3 is still spent when the
        // requests below (one waiting on a frozen auth-service) are done, however slow the host.
        ("RATE_LIMIT_MAX_REQUESTS", "12"),
        ("RATE_LIMIT_WINDOW", "3600"),
        ("RATE_LIMIT_BURST", "3"),
        ("RATE_LIMIT_REDIS_TIMEOUT_MS", "100"),
        ("GRPC_REQUEST_TIMEOUT_MS", "1000"),
    ];
    let (_own, redis, tp) = TestPlatform::builder("redisfrozen")
        .gateway_env(&gateway_env)
        .start_on_own_redis()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (revoked, _) = tokens(&api.register("frozen@example.org").await);
    let res = api.login("frozen@example.org", PASSWORD, "phone-2").await;
    let (live, _) = tokens(&res.json().await.expect("json"));
    assert_eq!(
        api.post("/v1/auth/logout", json!({}), Some(&revoked))
            .await
            .status()
            .as_u16(),
        204
    );
    // Redis decides this one: the user's bucket (burst 3) has 2 left in Redis.
    assert_eq!(api.me(&live).await.status().as_u16(), 200);

    let redis_pid = Pid::from_raw(redis.pid() as i32);
    kill(redis_pid, Signal::SIGSTOP).expect("freeze Redis");
    // Each request waits for Redis at most the timeout, once, then the fallbacks decide: the local
    // limiter (a fresh burst of 3 for this user) and auth-service for revocation.
    // Well under the request timeout (15 s), which is what would answer a request that waited on
    // Redis for ever (with 503 too), and far over the 1.1 s the timeouts add up to.
    let timed = |started: Instant| {
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "a request waited {took:?} on a frozen Redis"
        );
    };
    let started = Instant::now();
    refused_at_the_edge(api.me(&revoked).await).await;
    timed(started);
    // Neither Redis nor auth-service answers: the revocation is unknown, and a live token is
    // refused (503), not let through.
    let gateway_admin = tp.platform.ports.gateway_admin;
    tp.platform.auth.signal(Signal::SIGSTOP);
    let started = Instant::now();
    assert_eq!(error_code(api.me(&live).await, 503).await, "UNAVAILABLE");
    timed(started);
    assert_eq!(
        crate::metric(gateway_admin, "revocation_fallback_total{result=\"unavailable\"}"),
        1
    );
    tp.platform.auth.signal(Signal::SIGCONT);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        statuses.push(api.me(&live).await.status().as_u16());
        timed(started);
    }
    assert_eq!(statuses, vec![200, 429], "the local limiter holds the same policy");
    crate::eventually(
        "/ready to report Redis unanswering",
        Duration::from_secs(10),
        || async move {
            crate::admin_get(gateway_admin, "/ready")
                .filter(|(s, b)| *s == 200 && b["status"] == "degraded" && b["checks"]["redis"] == false)
        },
    )
    .await;
    let metric = |series: &str| crate::metric(gateway_admin, series);
    // Two policies (api and the global ceiling) per request.
    assert!(metric("rate_limit_fallback_total{mode=\"local\"}") >= 8);
    assert!(metric("revocation_fallback_total{result=\"revoked\"}") >= 1);

    kill(redis_pid, Signal::SIGCONT).expect("thaw Redis");
    crate::eventually("/ready to report Redis back", Duration::from_secs(20), || async move {
        crate::admin_get(gateway_admin, "/ready").filter(|(s, b)| *s == 200 && b["checks"]["redis"] == true)
    })
    .await;
    // Redis decides again: no fallback counted, and the revocation read from Redis. (The scripts
    // the gateway gave up on ran when Redis thawed, past their deadline, and spent nothing: see
    // `rate_limit::scripts_a_frozen_redis_runs_late_spend_nothing`.)
    let counts = || {
        (
            metric("rate_limit_fallback_total{mode=\"local\"}"),
            metric("revocation_fallback_total{result=\"revoked\"}"),
        )
    };
    let res = crate::eventually("Redis to decide again", Duration::from_secs(20), || async {
        let before = counts();
        let res = api.me(&revoked).await;
        (res.status().as_u16() == 401 && counts() == before).then_some(res)
    })
    .await;
    refused_at_the_edge(res).await;
    drop(redis);
}

/// The revocation sync of auth-service: a revocation whose Redis write was lost is copied by the
/// next round; a Redis that lost everything, or whose marker names another server (restored from
/// a snapshot), is not trusted by the gateway and gets every revocation back.
#[tokio::test(flavor = "multi_thread")]
async fn redis_gets_back_every_revocation_it_lost() {
    let tp = TestPlatform::builder("revocationsync")
        .auth_env(&[("REVOCATION_SYNC_SECONDS", "1")])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (revoked, _) = tokens(&api.register("sync@example.org").await);
    let res = api.login("sync@example.org", PASSWORD, "phone-2").await;
    let (live, _) = tokens(&res.json().await.expect("json"));
    let res = api.post("/v1/auth/logout", json!({}), Some(&revoked)).await;
    assert_eq!(res.status().as_u16(), 204);
    refused_at_the_edge(api.me(&revoked).await).await;

    let client = redis::Client::open(tp.redis_url.as_str()).expect("redis url");
    let conn = client.get_multiplexed_async_connection().await.expect("redis");
    let prefix = tp.redis_prefix.clone();
    let marker = format!("{prefix}revoked:complete:v2");
    let lost = [
        format!("{prefix}revoked:sid:{}", claim(&revoked, "sid")),
        format!("{prefix}revoked:jti:{}", claim(&revoked, "jti")),
    ];
    let watched: Vec<String> = lost.iter().chain([&marker]).cloned().collect();
    let back = |what: &'static str| wait_for_keys(&conn, &watched, what);
    let del = |keys: Vec<String>| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<u64>(&mut conn)
                .await
                .expect("DEL")
        }
    };
    back("the first copy").await;

    // A write that never landed (the marker stays): the next round copies it, without a full copy.
    let (full_before, renewed_before) = (sync_rounds(&tp, "full"), sync_rounds(&tp, "renewed"));
    assert_eq!(del(lost.to_vec()).await, 2);
    back("the lost revocation copied by the next round").await;
    assert_eq!(sync_rounds(&tp, "full"), full_before);
    assert!(sync_rounds(&tp, "renewed") > renewed_before);

    // Redis emptied (this deployment's keys): the gateway never accepts the token meanwhile.
    let full_before = sync_rounds(&tp, "full");
    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn.clone())
        .await
        .expect("KEYS");
    assert!(all.contains(&marker), "{all:?}");
    del(all).await;
    refused_at_the_edge(api.me(&revoked).await).await;
    assert_eq!(api.me(&live).await.status().as_u16(), 200);
    back("every revocation copied back").await;
    assert!(sync_rounds(&tp, "full") > full_before);

    // A marker naming another server (Redis restored from an older snapshot): copied again too,
    // and the marker then names this server.
    let full_before = sync_rounds(&tp, "full");
    assert_eq!(del(lost.to_vec()).await, 2);
    redis::cmd("SET")
        .arg(&marker)
        .arg("0000000000000000000000000000000000000000")
        .query_async::<()>(&mut conn.clone())
        .await
        .expect("SET");
    crate::marker_names_this_server(&conn, &marker, "the marker to name this server again").await;
    back("every revocation copied after a snapshot restore").await;
    assert!(sync_rounds(&tp, "full") > full_before);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&marker)
        .query_async(&mut conn.clone())
        .await
        .expect("TTL");
    assert!((1..=6).contains(&ttl), "the marker is a lease of 6 rounds, got {ttl}");
    refused_at_the_edge(api.me(&revoked).await).await;
    assert_eq!(api.me(&live).await.status().as_u16(), 200);
}

/// Waits until every one of `keys` exists in Redis.
async fn wait_for_keys(conn: &redis::aio::MultiplexedConnection, keys: &[String], what: &str) {
    crate::eventually(what, std::time::Duration::from_secs(20), || {
        let (mut conn, keys) = (conn.clone(), keys.to_vec());
        async move {
            let n: usize = redis::cmd("EXISTS").arg(&keys).query_async(&mut conn).await.ok()?;
            (n == keys.len()).then_some(())
        }
    })
    .await;
}

/// A 401 `TOKEN_REVOKED` decided by the gateway (its own message), not by auth-service's `GetMe`,
/// which checks the session in PostgreSQL too.
async fn refused_at_the_edge(res: reqwest::Response) {
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "TOKEN_REVOKED", "{body}");
    assert_eq!(
        body["error"]["message"], "The access token has been revoked; log in again.",
        "{body}"
    );
}

/// auth-service's count of revocation sync rounds with this result.
fn sync_rounds(tp: &xtask::testkit::TestPlatform, result: &str) -> u64 {
    crate::metric(
        tp.platform.ports.auth_admin,
        &format!("revocation_sync_total{{result=\"{result}\"}}"),
    )
}

/// The claims of a JWT, read without verifying it.
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// One string claim of a JWT, read without verifying it.
fn claim(token: &str, name: &str) -> String {
    claims_of(token)[name].as_str().expect("a string claim").to_owned()
}

/// Argon2 at its floor, so that hashing (a few at a time on a 2-CPU host) does not line the
/// concurrent requests up one after the other and hide the race.
const FAST_ARGON2: [(&str, &str); 2] = [("ARGON2_MEMORY_KIB", "8192"), ("ARGON2_ITERATIONS", "1")];

/// The loopback peer (the test client) is a trusted proxy, so `X-Forwarded-For` picks the
/// client address each request comes from.
const LOOPBACK_IS_A_PROXY: [(&str, &str); 1] = [("TRUSTED_PROXIES", "127.0.0.0/8, ::1")];

impl Api {
    /// `POST path` from client address `from` (through the trusted loopback proxy).
    async fn post_from(&self, from: &str, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-forwarded-for", from)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    async fn login_from(&self, from: &str, email: &str, password: &str) -> reqwest::Response {
        let body = json!({"email": email, "password": password, "device": {"device_id": "d", "platform": "ios"}});
        self.post_from(from, "/v1/auth/login", body).await
    }
}

/// Codes confirming an enrollment are counted like every code of the user: after
/// `LOGIN_MAX_ATTEMPTS` wrong ones even the right code is refused until the lock runs out, so a
/// stolen access token cannot try a pending seed's million codes one after the other.
#[tokio::test(flavor = "multi_thread")]
async fn confirming_an_enrollment_counts_wrong_codes_and_locks() {
    use totp_rs::Totp;

    let tp = TestPlatform::builder("confirmlock")
        .auth_env(&[("LOGIN_MAX_ATTEMPTS", "3")])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let (access, _) = tokens(&api.register("confirm@example.org").await);
    let res = api
        .post("/v1/me/mfa/totp", json!({"password": PASSWORD}), Some(&access))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let enrollment: Value = res.json().await.expect("json");
    let totp = Totp::from_url(enrollment["otpauth_uri"].as_str().expect("uri")).expect("otpauth uri");
    let step = early_in_a_step().await;
    let right = totp.generate(step * 30).to_string();
    // Codes no step near now produces: wrong for certain.
    let near: Vec<String> = (step - 2..=step + 2)
        .map(|s| totp.generate(s * 30).to_string())
        .collect();
    let wrong: Vec<String> = (0..100u32)
        .map(|n| format!("{:06}", n * 7919 % 1_000_000))
        .filter(|c| !near.contains(c))
        .take(3)
        .collect();
    let confirm = |code: &str| api.post("/v1/me/mfa/totp/confirm", json!({"code": code}), Some(&access));
    for code in &wrong[..2] {
        assert_eq!(error_code(confirm(code).await, 401).await, "MFA_REQUIRED");
    }
    // The third wrong code reaches the limit and locks; then the right one is refused too.
    assert_eq!(error_code(confirm(&wrong[2]).await, 423).await, "ACCOUNT_LOCKED");
    let res = confirm(&right).await;
    assert!(res.headers().contains_key("retry-after"), "{:?}", res.headers());
    assert_eq!(
        error_code(res, 423).await,
        "ACCOUNT_LOCKED",
        "a right code while locked"
    );
}

/// A guess whose caller goes away midway (the gateway's deadline, a dropped connection) is still
/// judged to its end: reaching the limit becomes a lock that runs out. Cancelled between counting
/// and judging, the count would stay at its limit with no lock, refusing every later attempt from
/// that address, the owner's right password too, for good.
#[tokio::test(flavor = "multi_thread")]
async fn guesses_cut_off_midway_still_end_in_a_lock_that_runs_out() {
    use std::time::Duration;

    use proto::auth::v1::LoginRequest;
    use proto::auth::v1::auth_service_client::AuthServiceClient;

    const ADDRESS: &str = "203.0.113.9";
    let tp = TestPlatform::builder("cutoff")
        .auth_env(&[
            ("LOGIN_MAX_ATTEMPTS", "3"),
            ("LOCKOUT_SECONDS", "1"),
            // A hash of a good fraction of a second, so a 20 ms caller is gone long before it ends.
            ("ARGON2_MEMORY_KIB", "131072"),
            ("ARGON2_ITERATIONS", "6"),
        ])
        .start()
        .await
        .expect("platform");
    let channel = crate::internal_tls::channel(&tp, tp.platform.ports.auth, Some("gateway"))
        .await
        .expect("channel as the gateway");
    let mut auth = AuthServiceClient::new(channel);
    let registration = crate::internal_tls::registration("cutoff@example.org");
    let (password, device) = (registration.password.clone(), registration.device.clone());
    auth.register(registration).await.expect("register");
    let login = |password: &str, timeout: Option<Duration>| {
        let mut request = tonic::Request::new(LoginRequest {
            email: "cutoff@example.org".to_owned(),
            password: password.to_owned(),
            device: device.clone(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-client-ip", ADDRESS.parse().expect("ascii"));
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    };

    for _ in 0..3 {
        let cut = auth
            .login(login("wrong password 1234", Some(Duration::from_millis(20))))
            .await;
        let status = cut.expect_err("the caller gave up before the hash ended");
        assert!(
            matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded),
            "{status:?}"
        );
    }
    let db = db(&tp).await;
    crate::eventually(
        "the third guess, judged all the same, to lock the address",
        Duration::from_secs(20),
        || {
            let db = &db;
            async move {
                let locks: i64 = db
                    .query_one(
                        "SELECT count(*) FROM auth.login_throttle WHERE address = $1 AND lock_count = 1",
                        &[&ADDRESS],
                    )
                    .await
                    .ok()?
                    .get(0);
                (locks == 1).then_some(())
            }
        },
    )
    .await;
    // The lock runs out, and the owner's right password works from that address again.
    crate::eventually("the right password after the lock", Duration::from_secs(20), || {
        let mut auth = auth.clone();
        let request = login(&password, None);
        async move { auth.login(request).await.ok().map(|_| ()) }
    })
    .await;
}

async fn db(tp: &TestPlatform) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    db
}

/// Security events of one type for the account with this e-mail.
async fn events_of(db: &tokio_postgres::Client, event_type: &str, email: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM auth.security_events WHERE event_type = $1 \
         AND user_id = (SELECT id FROM auth.users WHERE lower(email) = lower($2))",
        &[&event_type, &email],
    )
    .await
    .expect("count")
    .get(0)
}

/// Enrolls and confirms TOTP for the holder of `access`; returns the app's side and the recovery
/// codes. The confirming code is the step before `early_in_a_step`'s, so the current step's code
/// is still unused.
async fn turn_mfa_on(api: &Api, access: &str) -> (totp_rs::Totp, u64, Vec<String>) {
    let res = api
        .post("/v1/me/mfa/totp", json!({"password": PASSWORD}), Some(access))
        .await;
    assert_eq!(res.status().as_u16(), 200, "enroll");
    let enrollment: Value = res.json().await.expect("json");
    let totp = totp_rs::Totp::from_url(enrollment["otpauth_uri"].as_str().expect("uri")).expect("uri");
    let step = early_in_a_step().await;
    let code = totp.generate((step - 1) * 30).to_string();
    let res = api
        .post("/v1/me/mfa/totp/confirm", json!({"code": code}), Some(access))
        .await;
    assert_eq!(res.status().as_u16(), 200, "confirm");
    let body: Value = res.json().await.expect("json");
    let codes = serde_json::from_value(body["recovery_codes"].clone()).expect("codes");
    (totp, step, codes)
}

/// Issue 17, item 2: 24 guesses at once against one account each reserve an attempt before they
/// are judged, so at most `LOGIN_MAX_ATTEMPTS` (5) of them are checked; the others are refused as
/// locked. Before, all 24 read the same count (0) and all were checked. The same for 24 wrong
/// TOTP codes, each after the right password from an address of its own (so the per-address
/// password counter does not stand in for the MFA one).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_are_judged_at_most_login_max_attempts_times() {
    let tp = TestPlatform::builder("guessrace")
        .auth_env(&FAST_ARGON2)
        .auth_env(&[("LOGIN_IP_MAX_FAILURES", "100000")])
        .gateway_env(&LOOPBACK_IS_A_PROXY)
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let db = db(&tp).await;

    api.register("race@example.org").await;
    let api = &api;
    let guesses = (0..24).map(|i| async move {
        api.login_from("203.0.113.50", "race@example.org", &format!("wrong guess {i:02}"))
            .await
    });
    let answers = futures_util::future::join_all(guesses).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert!(statuses.iter().all(|s| [401, 423].contains(s)), "{statuses:?}");
    let judged = events_of(&db, "login_failed", "race@example.org").await;
    assert!(
        (1..=5).contains(&judged),
        "{judged} of 24 concurrent guesses were judged"
    );
    assert!(statuses.contains(&423), "{statuses:?}");

    let (access, _) = tokens(&api.register("race-mfa@example.org").await);
    let (totp, step, _) = turn_mfa_on(api, &access).await;
    // A code that is neither this step's nor the one before: wrong whenever it arrives.
    let valid = [step - 1, step, step + 1].map(|s| totp.generate(s * 30).to_string());
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .expect("a wrong code");
    let guesses = (0..24).map(|i| {
        let body = json!({"email": "race-mfa@example.org", "password": PASSWORD, "totp_code": wrong,
            "device": {"device_id": "d", "platform": "ios"}});
        let from = format!("198.51.100.{}", i + 1);
        async move { api.post_from(&from, "/v1/auth/login", body).await }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| [401, 423].contains(s)), "{statuses:?}");
    let judged = events_of(&db, "mfa_failed", "race-mfa@example.org").await;
    assert!((1..=5).contains(&judged), "{judged} of 24 concurrent codes were judged");
    // MFA is locked now, even for the right code.
    let body = json!({"email": "race-mfa@example.org", "password": PASSWORD, "totp_code": totp.generate(step * 30).to_string(),
        "device": {"device_id": "d", "platform": "ios"}});
    let res = api.post_from("198.51.100.200", "/v1/auth/login", body).await;
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");
}

/// Issue 17, item 2, the per-address count: 24 guesses at once from one address, each at another
/// account, are counted in Redis before they are judged, so only `LOGIN_IP_MAX_FAILURES` (3) are
/// checked and the rest wait (429). Before, all 24 read a count of 0.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_across_accounts_are_judged_at_most_login_ip_max_failures_times() {
    let tp = TestPlatform::builder("stuffrace")
        .auth_env(&FAST_ARGON2)
        .auth_env(&[("LOGIN_IP_MAX_FAILURES", "3")])
        .start()
        .await
        .expect("platform");
    let api = &Api::new(&tp);
    let guesses = (0..24).map(|i| async move {
        api.login(&format!("stuffed-{i}@example.org"), "leaked password 1", "d")
            .await
    });
    let answers = futures_util::future::join_all(guesses).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
    let judged: i64 = db(&tp)
        .await
        .query_one(
            "SELECT count(*) FROM auth.security_events WHERE event_type = 'login_failed'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        (1..=3).contains(&judged),
        "{judged} of 24 concurrent guesses were judged"
    );
}

/// Issue 17, items 4 and 6: failed logins count per (account, client address), an IPv6 client by
/// its /64. An attacker who locks an account from their address does not lock its owner out from
/// another; an e-mail with no account locks and answers exactly like one that has.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holds_for_the_address_that_earned_it_and_unknown_emails_answer_alike() {
    let tp = TestPlatform::builder("pairlock")
        .auth_env(&[("LOGIN_IP_MAX_FAILURES", "100000")])
        .gateway_env(&LOOPBACK_IS_A_PROXY)
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    api.register("owner@example.org").await;

    let attacker = "203.0.113.66";
    for attempt in 1..=4 {
        let res = api.login_from(attacker, "owner@example.org", "guess guess guess").await;
        assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS", "attempt {attempt}");
    }
    let res = api.login_from(attacker, "owner@example.org", "guess guess guess").await;
    assert_eq!(error_code(res, 423).await, "ACCOUNT_LOCKED");
    let res = api.login_from(attacker, "owner@example.org", PASSWORD).await;
    assert_eq!(
        error_code(res, 423).await,
        "ACCOUNT_LOCKED",
        "the attacker's address stays locked"
    );
    // The owner, elsewhere, logs in.
    let res = api.login_from("198.51.100.23", "owner@example.org", PASSWORD).await;
    assert_eq!(res.status().as_u16(), 200, "the owner was locked out by someone else");

    // IPv6: the whole /64 of the attacker is one address; the next /64 is another.
    for _ in 1..=5 {
        api.login_from("2001:db8:1:2::1", "owner@example.org", "guess guess guess")
            .await;
    }
    let res = api
        .login_from("2001:db8:1:2:ffff:ffff:ffff:fffe", "owner@example.org", PASSWORD)
        .await;
    assert_eq!(
        error_code(res, 423).await,
        "ACCOUNT_LOCKED",
        "another address of the same /64"
    );
    let res = api.login_from("2001:db8:1:3::1", "owner@example.org", PASSWORD).await;
    assert_eq!(res.status().as_u16(), 200, "the next /64 is someone else");

    // An unknown e-mail locks like a known one; the answers are the same, word for word.
    let from = "192.0.2.44";
    for email in ["owner@example.org", "ghost@example.org"] {
        for _ in 1..=5 {
            api.login_from(from, email, "guess guess guess").await;
        }
    }
    let answer = |email: &'static str| {
        let api = &api;
        async move {
            let res = api.login_from(from, email, "one more guess").await;
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            let mut body: Value = res.json().await.expect("json");
            body["error"]["request_id"] = Value::Null;
            (status, retry_after, body)
        }
    };
    let (known, unknown) = (answer("owner@example.org").await, answer("GHOST@example.org").await);
    assert_eq!(known.0, 423, "{known:?}");
    assert_eq!(known.2["error"]["code"], "ACCOUNT_LOCKED");
    assert_eq!(known, unknown);
}

/// Issue 17, items 5 and 10: changing a factor or ending the other sessions needs the password
/// (or, with MFA on, a code) again, and a wrong password there is a failed login; turning MFA on
/// or off ends the other sessions and mails the user; logout-all without `keep_current` ends
/// every session, the caller's too. Passwords with the user's names are refused.
#[tokio::test(flavor = "multi_thread")]
async fn factor_changes_need_the_password_again_and_end_the_other_sessions() {
    use std::time::Duration;

    let (mut relay, tp) = with_fake_relay("reauth", &[]).await;
    let api = Api::new(&tp);
    let db = db(&tp).await;
    let wait = Duration::from_secs(10);
    let email = "factor@example.org";

    // Item 10: a password with the user's name or the e-mail's local part is refused.
    for password in ["ada lovelace forever!", "my factor passphrase"] {
        let mut body = registration(email);
        body["password"] = json!(password);
        let res = api.post("/v1/auth/register", body, None).await;
        assert_eq!(res.status().as_u16(), 400, "{password}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
        assert!(body.to_string().contains("must not contain your name"), "{body}");
    }

    let (access, _) = tokens(&api.register(email).await);
    relay.next(wait).await.expect("verification mail");
    let other = || async { tokens(&api.login(email, PASSWORD, "tablet").await.json().await.expect("json")).0 };
    let tablet = other().await;

    // Enroll: no password is a clear 400; a wrong one a failed login; the right one works.
    let res = api
        .post("/v1/me/mfa/totp", json!({"password": ""}), Some(&access))
        .await;
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
    let res = api
        .post("/v1/me/mfa/totp", json!({"password": "not my password"}), Some(&access))
        .await;
    assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS");
    assert_eq!(events_of(&db, "login_failed", email).await, 1);
    let (totp, step, codes) = turn_mfa_on(&api, &access).await;
    // MFA on: the other session ends, this one goes on, and the user is told.
    assert_eq!(error_code(api.me(&tablet).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(api.me(&access).await.status().as_u16(), 200);
    let mail = relay.next(wait).await.expect("MFA-on mail");
    assert_eq!(mail.recipients, vec![email]);
    assert!(mail.data.contains("Two-step verification is on"), "{}", mail.data);

    // Device removal: nothing, or a wrong password, is refused; a current TOTP code will do.
    let login_with = |code: String| {
        let body = json!({"email": email, "password": PASSWORD, "totp_code": code,
            "device": {"device_id": "tablet", "platform": "ios"}});
        api.post("/v1/auth/login", body, None)
    };
    let res = login_with(codes[0].clone()).await;
    assert_eq!(res.status().as_u16(), 200);
    let tablet = tokens(&res.json().await.expect("json")).0;
    let res = api.remove_device_with(&access, "tablet", None).await;
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
    let res = api
        .remove_device_with(&access, "tablet", Some(json!({"password": "wrong wrong wrong"})))
        .await;
    assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS");
    let res = api
        .remove_device_with(&access, "tablet", Some(json!({"totp_code": "000000"})))
        .await;
    assert_eq!(error_code(res, 401).await, "MFA_REQUIRED");
    let code = totp.generate(step * 30).to_string();
    let res = api
        .remove_device_with(&access, "tablet", Some(json!({"totp_code": code})))
        .await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&tablet).await, 401).await, "TOKEN_REVOKED");

    // Logout of the others: needs the password; this session goes on.
    let res = login_with(codes[1].clone()).await;
    let tablet = tokens(&res.json().await.expect("json")).0;
    let res = api
        .post("/v1/auth/logout-all", json!({"keep_current": true}), Some(&access))
        .await;
    assert_eq!(error_code(res, 400).await, "VALIDATION_FAILED");
    assert_eq!(api.me(&tablet).await.status().as_u16(), 200);
    let res = api
        .post(
            "/v1/auth/logout-all",
            json!({"keep_current": true, "password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&tablet).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(api.me(&access).await.status().as_u16(), 200);

    // Disable: the password and a code; the other sessions end and the user is told.
    let res = login_with(codes[2].clone()).await;
    let tablet = tokens(&res.json().await.expect("json")).0;
    let res = api.mfa_off(&access, "wrong wrong wrong", &codes[3]).await;
    assert_eq!(error_code(res, 401).await, "INVALID_CREDENTIALS");
    let res = api.mfa_off(&access, PASSWORD, &codes[3]).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&tablet).await, 401).await, "TOKEN_REVOKED");
    assert_eq!(api.me(&access).await.status().as_u16(), 200);
    let mail = relay.next(wait).await.expect("MFA-off mail");
    assert!(mail.data.contains("Two-step verification is off"), "{}", mail.data);

    // A wrong current password on a password change is a failed login: the fifth in a row locks
    // the account for this address, and a login from here then waits too.
    let change = |current: &'static str| {
        api.post(
            "/v1/me/password",
            json!({"current_password": current, "new_password": "a brand new passphrase"}),
            Some(&access),
        )
    };
    for _ in 1..=4 {
        assert_eq!(
            error_code(change("wrong wrong wrong").await, 401).await,
            "INVALID_CREDENTIALS"
        );
    }
    assert_eq!(
        error_code(change("wrong wrong wrong").await, 423).await,
        "ACCOUNT_LOCKED"
    );
    assert_eq!(
        error_code(api.login(email, PASSWORD, "x").await, 423).await,
        "ACCOUNT_LOCKED"
    );

    // Logout-all without keep_current ends every session, the caller's too, and needs nothing.
    let res = api.post("/v1/auth/logout-all", json!({}), Some(&access)).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.me(&access).await, 401).await, "TOKEN_REVOKED");
}

/// Issue 17, item 7: one reset mail per account per `PASSWORD_RESET_COOLDOWN`, and the same answer
/// for an address with an account and one without.
#[tokio::test(flavor = "multi_thread")]
async fn password_resets_mail_once_per_cooldown_and_answer_alike() {
    use std::time::Duration;

    let (mut relay, tp) = with_fake_relay("resetflood", &[]).await;
    let api = Api::new(&tp);
    let db = db(&tp).await;
    let wait = Duration::from_secs(10);
    api.register("flood@example.org").await;
    relay.next(wait).await.expect("verification mail");

    let reset = |email: &'static str| {
        let api = &api;
        async move {
            let res = api.post("/v1/auth/password-reset", json!({"email": email}), None).await;
            let status = res.status().as_u16();
            let length = res.headers().get("content-length").cloned();
            (status, length, res.bytes().await.expect("body"))
        }
    };
    let known = reset("flood@example.org").await;
    let unknown = reset("nobody-here@example.org").await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown, "known and unknown addresses answer alike");
    let mail = relay.next(wait).await.expect("reset mail");
    assert_eq!(mail.recipients, vec!["flood@example.org"]);

    // Again within the cooldown: the same answer, and no second mail.
    assert_eq!(reset("FLOOD@example.org").await, known);
    crate::eventually("the throttled reset", wait, || {
        let db = &db;
        async move { (events_of(db, "password_reset_throttled", "flood@example.org").await == 1).then_some(()) }
    })
    .await;
    assert!(relay.is_empty(), "a second reset mail within the cooldown");

    // Text that is no address at all is refused (that tells nothing about accounts).
    for not_an_address in ["", "flood", "@example.org"] {
        let (status, _, body) = reset(not_an_address).await;
        assert_eq!(status, 400, "{not_an_address:?}");
        let body: Value = serde_json::from_slice(&body).expect("error body");
        assert_eq!(body["error"]["code"], "VALIDATION_FAILED", "{not_an_address:?}");
    }
}
