//! Per-service roles and schemas (an owner that migrates, a runtime role that owns nothing),
//! migrations, and readiness that follows the database.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use xtask::provision::ServiceDb;

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

/// Each service's tables, one per service, that every check below touches.
const OWN_TABLE: [(&str, &str); 3] = [
    ("auth", "auth.users"),
    ("reports", "reports.reports"),
    ("analytics", "analytics.ingested_events"),
];

fn db_of<'a>(dbs: &'a [ServiceDb], service: &str) -> &'a ServiceDb {
    dbs.iter().find(|d| d.service == service).expect("service db")
}

/// Asserts that `sql` fails with insufficient privilege (42501) and a message containing `says`.
async fn refused(db: &tokio_postgres::Client, sql: &str, says: &str) {
    let err = db.batch_execute(sql).await.expect_err(sql);
    let detail = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {err}");
    assert!(detail.contains(says), "{sql}: expected \"{says}\", got \"{detail}\"");
}

/// Issue 18: the role a service serves with reads and writes rows and nothing more. It cannot
/// change, drop or create a table, turn row-level security off, become the owner, write the
/// migration bookkeeping, or read another service's schema.
#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_role_changes_rows_and_nothing_else() {
    let (_, admin_url, dbs) = xtask::testkit::fresh_databases("rt").await.expect("databases");
    xtask::testkit::migrate(&dbs).expect("migrate");
    let admin = connect(&admin_url).await;
    for (service, table) in OWN_TABLE {
        let db = db_of(&dbs, service);
        let row = admin
            .query_one(
                "SELECT r.rolsuper, r.rolbypassrls, r.rolcreatedb, r.rolcreaterole, n.nspowner::regrole::text,
                        pg_has_role(r.oid, n.nspowner, 'MEMBER'),
                        (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
                 FROM pg_roles r, pg_namespace n WHERE r.rolname = $1 AND n.nspname = $2",
                &[&db.role, &service],
            )
            .await
            .expect("role");
        assert_eq!(
            (
                row.get::<_, bool>(0),
                row.get::<_, bool>(1),
                row.get::<_, bool>(2),
                row.get::<_, bool>(3)
            ),
            (false, false, false, false),
            "{}: superuser, bypassrls, createdb, createrole",
            db.role
        );
        assert_eq!(
            row.get::<_, String>(4),
            db.owner_role,
            "the owner owns schema {service}"
        );
        assert!(!row.get::<_, bool>(5), "{} is a member of the owner", db.role);
        assert_eq!(row.get::<_, i64>(6), 0, "{} owns relations", db.role);

        let rt = connect(&db.url).await;
        // Rows: yes (an empty table is enough to prove the rights).
        rt.batch_execute(&format!("DELETE FROM {table} WHERE false"))
            .await
            .expect("the runtime role deletes rows");
        refused(
            &rt,
            &format!("ALTER TABLE {table} ADD COLUMN smuggled int"),
            "must be owner",
        )
        .await;
        refused(
            &rt,
            &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
            "must be owner",
        )
        .await;
        refused(
            &rt,
            &format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"),
            "must be owner",
        )
        .await;
        refused(&rt, &format!("DROP TABLE {table}"), "must be owner").await;
        refused(&rt, &format!("TRUNCATE {table}"), "permission denied").await;
        refused(
            &rt,
            &format!("CREATE TABLE {service}.smuggled (x int)"),
            "permission denied for schema",
        )
        .await;
        refused(
            &rt,
            &format!("SET ROLE \"{}\"", db.owner_role),
            "permission denied to set role",
        )
        .await;
        refused(
            &rt,
            &format!("INSERT INTO {service}.__diesel_schema_migrations (version) VALUES ('99999999999999')"),
            "permission denied for table",
        )
        .await;
        for (other, theirs) in OWN_TABLE.iter().filter(|(s, _)| *s != service) {
            refused(
                &rt,
                &format!("SELECT count(*) FROM {theirs}"),
                "permission denied for schema",
            )
            .await;
            let owner_of_theirs = &db_of(&dbs, other).owner_role;
            refused(
                &rt,
                &format!("SET ROLE \"{owner_of_theirs}\""),
                "permission denied to set role",
            )
            .await;
        }
    }
}

/// Issue 18: the owner runs migrations; a table a later migration creates is usable by the
/// runtime role at once (the owner's default privileges), sequences included, without
/// provisioning again.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_migrations_tables_are_usable_by_the_runtime_role() {
    let (_, _, dbs) = xtask::testkit::fresh_databases("defpriv").await.expect("databases");
    xtask::testkit::migrate(&dbs).expect("the owner migrates");
    for (service, _) in OWN_TABLE {
        let db = db_of(&dbs, service);
        let owner = connect(&db.owner_url).await;
        // What a new migration does, as the owner.
        owner
            .batch_execute(&format!(
                "CREATE TABLE {service}.later (id bigserial PRIMARY KEY, note text NOT NULL);
                 ALTER TABLE {service}.later ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE {service}.later FORCE ROW LEVEL SECURITY;
                 CREATE POLICY later_all ON {service}.later USING (true);"
            ))
            .await
            .expect("the owner creates a table");
        let rt = connect(&db.url).await;
        rt.batch_execute(&format!(
            "INSERT INTO {service}.later (note) VALUES ('a'), ('b');
             UPDATE {service}.later SET note = 'c' WHERE note = 'b';
             DELETE FROM {service}.later WHERE note = 'a';"
        ))
        .await
        .expect("the runtime role writes the new table");
        let n: i64 = rt
            .query_one(&format!("SELECT count(*) FROM {service}.later"), &[])
            .await
            .expect("read")
            .get(0);
        assert_eq!(n, 1);
        refused(
            &rt,
            &format!("ALTER TABLE {service}.later DISABLE ROW LEVEL SECURITY"),
            "must be owner",
        )
        .await;
    }
    let second = xtask::testkit::migrate(&dbs).expect("the owner migrates again");
    assert!(second.iter().all(|log| log.contains("nothing applied")), "{second:?}");
}

/// Issue 18: a database provisioned with one role per service (it owned its schema) is
/// provisioned again in place: that role becomes the runtime role, everything it owned moves to
/// the owner, the data stays, and the service serves with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_with_one_role_per_service_is_split_in_place() {
    let admin_url = std::env::var("TEST_PG_URL").expect("TEST_PG_URL (run with cargo xtask test)");
    let database = format!("tsplit_{}", std::process::id());
    let prefix = format!("{database}_");
    let admin = xtask::provision::connect(&admin_url).await.expect("admin");
    xtask::provision::create_database(&admin, &database)
        .await
        .expect("database");
    let db_admin_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => panic!("TEST_PG_URL names no database"),
    };
    let (host, port) = {
        let after = db_admin_url.rsplit_once('@').map_or(db_admin_url.as_str(), |(_, h)| h);
        let (h, p) = after
            .split('/')
            .next()
            .and_then(|hp| hp.rsplit_once(':'))
            .expect("host:port");
        (h.to_owned(), p.parse::<u16>().expect("port"))
    };
    let service = "analytics";
    let old_role = format!("{prefix}{service}");
    let password = "one-role-password";
    // Provisioning as it was before the split: one role owning the schema.
    let db_admin = connect(&db_admin_url).await;
    db_admin
        .batch_execute(&format!(
            "CREATE ROLE \"{old_role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}';
             ALTER ROLE \"{old_role}\" IN DATABASE \"{database}\" SET search_path = {service};
             CREATE SCHEMA {service} AUTHORIZATION \"{old_role}\";
             REVOKE ALL ON SCHEMA {service} FROM PUBLIC;
             REVOKE ALL ON SCHEMA public FROM PUBLIC;
             REVOKE ALL ON DATABASE \"{database}\" FROM PUBLIC;
             GRANT CONNECT, TEMPORARY ON DATABASE \"{database}\" TO \"{old_role}\";"
        ))
        .await
        .expect("one-role provisioning");
    let old_url = format!("postgres://{old_role}:{password}@{host}:{port}/{database}");
    // Without DATABASE_MIGRATION_URL, migrations use DATABASE_URL (as before the split).
    let out = std::process::Command::new(xtask::platform::bin_dir().join("analytics-service"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &old_url)
        .env("APP_ENV", "test")
        .env("LOG_FORMAT", "json")
        .output()
        .expect("migrate runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let event = uuid::Uuid::new_v4().to_string();
    db_admin
        .execute(
            "INSERT INTO analytics.ingested_events (event_id, source, name, occurred_at) \
             VALUES ($1::text::uuid, 'reports', 'ReportSubmitted', now())",
            &[&event],
        )
        .await
        .expect("a row from before");

    let split = xtask::provision::provision_service(&db_admin_url, &host, port, &database, &prefix, service, password)
        .await
        .expect("provisioning again splits the role");
    assert_eq!(split.role, old_role, "the old role is the runtime role");
    let owners: Vec<String> = db_admin
        .query(
            "SELECT DISTINCT relowner::regrole::text FROM pg_class WHERE relnamespace = 'analytics'::regnamespace
             UNION SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'analytics'",
            &[],
        )
        .await
        .expect("owners")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        owners,
        std::slice::from_ref(&split.owner_role),
        "everything moved to the owner"
    );
    let dbs = [split];
    let again = xtask::testkit::migrate(&dbs).expect("the owner migrates");
    assert!(again[0].contains("nothing applied"), "{}", again[0]);
    let rt = connect(&dbs[0].url).await;
    let n: i64 = rt
        .query_one(
            "SELECT count(*) FROM analytics.ingested_events WHERE event_id = $1::text::uuid",
            &[&event],
        )
        .await
        .expect("the data stayed and is readable")
        .get(0);
    assert_eq!(n, 1);
    refused(&rt, "DROP TABLE analytics.ingested_events", "must be owner").await;
    let temporary = rt
        .batch_execute("CREATE TEMPORARY TABLE t (x int)")
        .await
        .expect_err("temp");
    assert_eq!(temporary.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{temporary}");
    // Provisioning is re-runnable on the split database too.
    xtask::provision::provision_service(&db_admin_url, &host, port, &database, &prefix, service, password)
        .await
        .expect("provisioning a third time");
}

/// `analytics-service serve` against `url` with `APP_ENV=app_env` (mTLS settings, loopback
/// ports), its log going to a file.
struct Analytics {
    child: std::process::Child,
    admin: u16,
    log: std::path::PathBuf,
}

impl Analytics {
    fn serve(url: &str, app_env: &str) -> Self {
        let admin = xtask::free_port().expect("port");
        let log = std::env::temp_dir().join(format!("e2e-analytics-{}.log", uuid::Uuid::new_v4()));
        let child = std::process::Command::new(xtask::platform::bin_dir().join("analytics-service"))
            .arg("serve")
            .env_clear()
            .envs(crate::config::grpc_tls("analytics-service"))
            .env("DATABASE_URL", url)
            .env("APP_ENV", app_env)
            .env("LOG_FORMAT", "json")
            .env("GRPC_HOST", "127.0.0.1")
            .env("GRPC_PORT", xtask::free_port().expect("port").to_string())
            .env("ADMIN_HOST", "127.0.0.1")
            .env("METRICS_PORT", admin.to_string())
            .env("DATABASE_CHECK_INTERVAL_MS", "250")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("analytics-service starts");
        Self { child, admin, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its `/ready` answers 200.
    async fn ready(&self) {
        let admin = self.admin;
        eventually("analytics-service ready", Duration::from_secs(20), || async move {
            admin_get(admin, "/ready").filter(|(s, _)| *s == 200)
        })
        .await;
    }

    /// Waits until the log has a line containing `text`.
    async fn logged(&self, text: &str) {
        let what = format!("analytics-service to log \"{text}\"");
        eventually(&what, Duration::from_secs(20), || async move {
            self.log().contains(text).then_some(())
        })
        .await;
    }
}

impl Drop for Analytics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Issue 18: in production a service refuses to serve with a role that owns its schema (the
/// owner can turn row-level security off, and is not held by it unless forced); elsewhere it
/// warns. The runtime role serves in production.
#[tokio::test(flavor = "multi_thread")]
async fn production_refuses_to_serve_with_the_schema_owner() {
    let (_, _, dbs) = xtask::testkit::fresh_databases("ownerprod").await.expect("databases");
    xtask::testkit::migrate(&dbs).expect("migrate");
    let db = db_of(&dbs, "analytics");

    let mut owner = Analytics::serve(&db.owner_url, "production");
    owner.logged("refuses to serve").await;
    let status = eventually("the refusing process to exit", Duration::from_secs(10), || {
        let exited = owner.child.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    let log = owner.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("DATABASE_URL's role owns schema analytics") && log.contains("DATABASE_MIGRATION_URL"),
        "{log}"
    );
    assert!(!log.contains(&db.owner_url), "the URL was logged: {log}");

    // Elsewhere: a warning, and it serves.
    let owner = Analytics::serve(&db.owner_url, "test");
    owner.logged("production refuses this").await;
    owner.ready().await;

    // The runtime role serves in production.
    let mut runtime = Analytics::serve(&db.url, "production");
    runtime.logged("reads and writes rows only").await;
    runtime.ready().await;
    assert!(runtime.child.try_wait().expect("wait").is_none(), "{}", runtime.log());
}
