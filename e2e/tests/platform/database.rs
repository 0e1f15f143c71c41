//! Per-service roles and schemas, migrations, and readiness that follows the database.

use std::time::Duration;

use crate::{admin_get, client, error_code, eventually};

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_twice_is_a_no_op() {
    let (_, _, dbs) = xtask::testkit::fresh_databases("mig").await.expect("databases");
    let first = xtask::testkit::migrate(&dbs).expect("first migrate");
    for log in &first {
        assert!(
            log.contains("\"message\":\"applied ") && log.contains(" migration(s)"),
            "first run should apply: {log}"
        );
    }
    let second = xtask::testkit::migrate(&dbs).expect("second migrate");
    for log in &second {
        assert!(log.contains("nothing applied"), "second run should be a no-op: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_sees_only_its_own_schema() {
    let (_, _, dbs) = xtask::testkit::fresh_databases("iso").await.expect("databases");
    xtask::testkit::migrate(&dbs).expect("migrate");
    let url = |service: &str| {
        dbs.iter()
            .find(|d| d.service == service)
            .expect("service db")
            .url
            .clone()
    };
    let own_table = [
        ("auth", "auth.users"),
        ("reports", "reports.reports"),
        ("analytics", "analytics.ingested_events"),
    ];

    for (service, mine) in own_table {
        let db = connect(&url(service)).await;
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {mine}"), &[])
            .await
            .expect("own table readable")
            .get(0);
        assert_eq!(n, 0);
        for (_, theirs) in own_table.iter().filter(|(s, _)| *s != service) {
            let err = db
                .query_one(&format!("SELECT count(*) FROM {theirs}"), &[])
                .await
                .expect_err("must be denied");
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{service} reading {theirs}: {err}"
            );
        }
        let err = db
            .batch_execute("CREATE TABLE public.smuggled (x int)")
            .await
            .expect_err("public is closed");
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        // Diesel's bookkeeping lives in the service's own schema too.
        let row = db
            .query_one(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = '__diesel_schema_migrations'",
                &[],
            )
            .await
            .expect("migrations table");
        assert_eq!(row.get::<_, String>(0), service);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_database_is_unreachable_turns_unready_and_recovers() {
    let tp = xtask::testkit::TestPlatform::builder("dbdown")
        .all_services()
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let alerts = format!("{}/v1/alerts/nearby?lat=52.52&lng=13.40&radius_m=1000", tp.base_url());
    let role = tp
        .databases
        .iter()
        .find(|d| d.service == "reports")
        .expect("reports db")
        .role
        .clone();
    let admin = connect(&tp.admin_url).await;

    // Cut reports-service off its database: no new logins, existing sessions ended.
    admin
        .batch_execute(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
        .await
        .expect("nologin");
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("terminate");

    let reports_admin = tp.platform.ports.reports_admin;
    eventually("reports /ready to be 503", Duration::from_secs(15), || async move {
        admin_get(reports_admin, "/ready").filter(|(s, b)| *s == 503 && b["checks"]["database"] == false)
    })
    .await;
    let gateway_admin = tp.platform.ports.gateway_admin;
    eventually(
        "gateway to report reports down",
        Duration::from_secs(15),
        || async move {
            admin_get(gateway_admin, "/ready").filter(|(s, b)| {
                *s == 200 && b["status"] == "degraded" && b["checks"]["reports"] == false && b["checks"]["auth"] == true
            })
        },
    )
    .await;
    let res = http.get(&alerts).send().await.expect("request");
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(error_code(res, 503).await, "UNAVAILABLE");

    admin
        .batch_execute(&format!("ALTER ROLE \"{role}\" LOGIN"))
        .await
        .expect("login again");
    eventually("gateway ready again", Duration::from_secs(15), || async move {
        admin_get(gateway_admin, "/ready").filter(|(s, b)| *s == 200 && b["status"] == "ready")
    })
    .await;
    let res = http.get(&alerts).send().await.expect("request");
    assert_eq!(res.status().as_u16(), 200);
}

/// Every refresh lookup of auth-service is an index lookup: a refresh token that is no session's
/// current one is looked up as a previous one, and an unknown token (an attacker's guess) must not
/// cost a scan of every session. The planner is told to avoid sequential scans, so the plan names
/// an index exactly when one can answer the query.
#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_lookups_use_an_index() {
    let (_, _, dbs) = xtask::testkit::fresh_databases("idx").await.expect("databases");
    xtask::testkit::migrate(&dbs).expect("migrate");
    let auth = dbs.iter().find(|d| d.service == "auth").expect("auth db");
    let db = connect(&auth.url).await;
    db.batch_execute("SET enable_seqscan = off")
        .await
        .expect("planner setting");
    for column in ["refresh_hash", "previous_refresh_hash"] {
        let plan: Vec<String> = db
            .query(
                &format!("EXPLAIN SELECT id FROM auth.sessions WHERE {column} = $1 FOR UPDATE"),
                &[&vec![0u8; 32]],
            )
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index"),
            "{column} is looked up without an index:\n{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{column}:\n{plan}");
    }
}

/// Issue 17, item 8: after the master key was split by HKDF and recovery codes moved to argon2id,
/// a TOTP seed sealed under the master key itself (format version 1) still opens, and is sealed
/// again under the derived key on first use; a recovery code stored as a keyed HMAC still works,
/// once. The stored values were made with Python's `cryptography` for a fixed key and user id
/// (auth-service's `sealed::tests::the_legacy_test_vectors_open` checks the same vectors).
#[tokio::test(flavor = "multi_thread")]
async fn totp_seeds_and_recovery_codes_from_before_the_key_split_still_work() {
    const KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    const USER: &str = "00000000-0000-4000-8000-000000000017";
    const SEALED_V1: &str =
        "01000102030405060708090a0b34eca2e9841ac533a4367521e2e96e0d05a5f75ac0f39948289bd4759492a0baa929fb02";
    const RECOVERY_HMAC: &str = "17ff97a79f1e37142511628807adc9ec39f1ed32d5fe5708786fc809f0e5e52e";
    const PASSWORD: &str = "correct horse battery staple";

    let key_file = std::env::temp_dir().join(format!("e2e-legacy-key-{}", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, KEY).expect("key file");
    let key_path = key_file.to_string_lossy().into_owned();
    let tp = xtask::testkit::TestPlatform::builder("legacyseed")
        .auth_env(&[("ENCRYPTION_KEY_FILE", &key_path)])
        .start()
        .await
        .expect("platform");
    let _ = std::fs::remove_file(&key_file);
    let http = client(&tp);
    let post = |path: &str, body: serde_json::Value| http.post(format!("{}{path}", tp.base_url())).json(&body).send();
    let res = post(
        "/v1/auth/register",
        serde_json::json!({"email": "donor@example.org", "password": PASSWORD, "first_name": "Don", "last_name": "Or"}),
    )
    .await
    .expect("register");
    assert_eq!(res.status().as_u16(), 201);

    // An account as it was stored before: MFA on with a version-1 seed and a keyed-HMAC code.
    let db = connect(&tp.admin_url).await;
    db.batch_execute(&format!(
        "INSERT INTO auth.users (id, email, password_hash, first_name, last_name, mfa_enabled, mfa_secret) \
         SELECT '{USER}', 'legacy@example.org', password_hash, 'Old', 'Seed', true, decode('{SEALED_V1}', 'hex') \
         FROM auth.users WHERE email = 'donor@example.org'; \
         INSERT INTO auth.recovery_codes (user_id, code_hash) VALUES ('{USER}', decode('{RECOVERY_HMAC}', 'hex'));"
    ))
    .await
    .expect("legacy rows");

    // RFC 6238's seed "12345678901234567890", as an authenticator app holds it.
    let app = totp_rs::Totp::from_url(
        "otpauth://totp/Old:legacy%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Old",
    )
    .expect("otpauth");
    let login = |code: String| {
        post(
            "/v1/auth/login",
            serde_json::json!({"email": "legacy@example.org", "password": PASSWORD, "totp_code": code,
                "device": {"device_id": "d", "platform": "ios"}}),
        )
    };
    let code = app.generate_current().to_string();
    assert_eq!(
        login(code).await.expect("login").status().as_u16(),
        200,
        "a version-1 seed"
    );
    let version: i32 = db
        .query_one(
            &format!("SELECT get_byte(mfa_secret, 0) FROM auth.users WHERE id = '{USER}'"),
            &[],
        )
        .await
        .expect("seed")
        .get(0);
    assert_eq!(version, 2, "the seed was not sealed again under the derived key");

    assert_eq!(
        login("abcde fghjk".to_owned()).await.expect("login").status().as_u16(),
        200,
        "a recovery code stored before argon2id"
    );
    let res = login("ABCDE-FGHJK".to_owned()).await.expect("login");
    assert_eq!(
        error_code(res, 401).await,
        "MFA_REQUIRED",
        "a recovery code worked twice"
    );
}
