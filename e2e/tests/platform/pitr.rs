//! The point-in-time recovery drill: a PostgreSQL archiving its WAL with the compose settings
//! (`xtask::pitr`), a base backup by deploy/scripts/basebackup.sh, one write before a moment T and
//! one after it through the gateway, deploy/scripts/pitr-restore.sh to T, and the platform on the
//! restored cluster: the first write is there, the second is not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use xtask::provision::{self, SERVICES};
use xtask::testkit::{Service, TestPlatform};

use crate::backup::{Work, file_report, run};
use crate::rate_limit::registered;
use crate::{client, eventually};

const PASSWORD: &str = "correct horse battery staple";

async fn login(tp: &TestPlatform, email: &str) -> u16 {
    client(tp)
        .post(format!("{}/v1/auth/login", tp.base_url()))
        .json(&json!({"email": email, "password": PASSWORD, "device": {"device_id": "phone-1", "platform": "ios"}}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

async fn get_report(tp: &TestPlatform, token: &str, report: &str) -> (u16, Value) {
    let res = client(tp)
        .get(format!("{}/v1/reports/{report}", tp.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get report");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until every WAL segment up to the one holding everything written so far is archived.
async fn archived_up_to_now(db: &tokio_postgres::Client) {
    let segment: String = db
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .expect("pg_switch_wal")
        .get(0);
    let segment = segment.as_str();
    eventually("the WAL archived", Duration::from_secs(30), || async move {
        let row = db
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .expect("pg_stat_archiver");
        let (last, failed, failed_wal): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(failed, 0, "archive_command failed for {failed_wal}");
        (last.as_str() >= segment).then_some(())
    })
    .await;
}

/// The restored server has replayed to its target and promoted (accepts writes).
async fn promoted(url: &str) -> tokio_postgres::Client {
    let db = provision::connect(url).await.expect("the restored server");
    let client = &db;
    eventually("the restored server promoted", Duration::from_secs(60), || async move {
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .expect("pg_is_in_recovery")
            .get(0);
        (!in_recovery).then_some(())
    })
    .await;
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_recovery_keeps_the_write_before_the_target_and_not_the_one_after() {
    let mut tp = TestPlatform::builder("pitr")
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform");
    // Under /tmp: the postgres account must reach every directory of the drill.
    let work = Work(PathBuf::from("/tmp").join(format!("e2e-pitr-{}", uuid::Uuid::new_v4())));
    xtask::pitr::owned_by_postgres(work.path()).expect("work dir");
    let volumes = work.path().join("volumes");
    let compose_file =
        std::fs::read_to_string(xtask::workspace_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose = xtask::pitr::compose_postgres(&compose_file).expect("the compose postgres service");
    let archive = compose
        .host_path("/var/lib/postgresql/wal-archive", &volumes)
        .expect("the archive volume");

    // A cluster archiving its WAL as the compose PostgreSQL does, provisioned and migrated as the
    // platform's is, and auth-service and reports-service moved onto it.
    let port = xtask::free_port().expect("port");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let primary = xtask::pitr::start_archiving(&compose, &volumes, &work.path().join("primary"), port, &password)
        .await
        .expect("an archiving PostgreSQL");
    let admin_url = primary.admin_url("postgres");
    let admin = provision::connect(&admin_url).await.expect("admin");
    provision::create_database(&admin, "platform").await.expect("database");
    let db_url = primary.admin_url("platform");
    let mut databases = Vec::new();
    for service in SERVICES {
        let runtime_password = uuid::Uuid::new_v4().simple().to_string();
        databases.push(
            provision::provision_service(
                &db_url,
                "127.0.0.1",
                port,
                "platform",
                "svc_",
                service,
                &runtime_password,
            )
            .await
            .expect("provision"),
        );
    }
    xtask::testkit::migrate(&databases).expect("migrations");
    for (process, service) in [(&mut tp.platform.auth, "auth"), (&mut tp.platform.reports, "reports")] {
        let db = databases.iter().find(|d| d.service == service).expect("database");
        process.stop(Duration::from_secs(10));
        process.set_env("DATABASE_URL", &db.service_url());
        process.set_env("DATABASE_MIGRATION_URL", &db.migration_url());
        let ca = db.tls_ca.as_ref().expect("our PostgreSQL speaks TLS");
        process.set_env("DATABASE_TLS_CA_FILE", &ca.to_string_lossy());
        process.restart().expect("restart on the archiving cluster");
    }
    tp.platform
        .wait_ready(Duration::from_secs(30))
        .expect("ready on the archiving cluster");
    let db = provision::connect(&db_url).await.expect("platform database");

    // The base backup, as cron runs it; a server it cannot reach is exit code 3.
    let basebackup = |port: u16, keep: &str| {
        let mut cmd = xtask::pitr::script_as_postgres("basebackup.sh").expect("basebackup.sh");
        cmd.arg(format!("host=127.0.0.1 port={port} user=postgres"))
            .env("PGPASSWORD", &password)
            .env("WAL_ARCHIVE_DIR", &archive)
            .env("BASEBACKUP_KEEP", keep);
        run(&mut cmd, "basebackup.sh")
    };
    let closed = xtask::free_port().expect("port");
    let (code, out) = basebackup(closed, "7");
    assert_eq!(code, 3, "an unreachable server: {out}");
    let (code, out) = basebackup(port, "0");
    assert_eq!(code, 2, "BASEBACKUP_KEEP=0 would delete every backup: {out}");
    let (code, out) = basebackup(port, "7");
    assert_eq!(code, 0, "basebackup.sh: {out}");

    // Write A, the moment T, write B; everything archived.
    let http = client(&tp);
    let ada = registered(&http, &tp.base_url(), "ada@example.org").await;
    let before = file_report(&tp, &ada, "Bike taken from the rack").await;
    let (status, before_json) = get_report(&tp, &ada, &before).await;
    assert_eq!(status, 200);
    let target: String = db
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .expect("clock")
        .get(0);
    registered(&http, &tp.base_url(), "bob@example.org").await;
    let after = file_report(&tp, &ada, "Window smashed").await;
    assert_eq!(get_report(&tp, &ada, &after).await.0, 200);
    archived_up_to_now(&db).await;
    // A base backup after T cannot stop at T: the restore has to start from the first one.
    let (code, out) = basebackup(port, "7");
    assert_eq!(code, 0, "the second basebackup.sh: {out}");
    let backups = || {
        let mut names: Vec<String> = std::fs::read_dir(archive.join("base"))
            .expect("base/")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(backups().len(), 2, "{:?}", backups());

    // The disaster: the services and the server stopped; a new data directory restored to T.
    tp.platform.auth.stop(Duration::from_secs(10));
    tp.platform.reports.stop(Duration::from_secs(10));
    drop(db);
    drop(admin);
    primary.stop();
    let backups_before = backups();
    let restored = work.path().join("restored");
    let restore = |target: &str, data: &Path| {
        let mut cmd = xtask::pitr::script_as_postgres("pitr-restore.sh").expect("pitr-restore.sh");
        cmd.arg(target).arg(data).env("WAL_ARCHIVE_DIR", &archive);
        run(&mut cmd, "pitr-restore.sh")
    };
    let (code, out) = restore("2000-01-01 00:00:00+00", &restored);
    assert_eq!(code, 3, "no base backup is that old: {out}");
    let (code, out) = restore(&target, &work.path().join("primary"));
    assert_eq!(code, 2, "the old cluster is never overwritten: {out}");
    let (code, out) = restore(&target, &restored);
    assert_eq!(code, 0, "pitr-restore.sh: {out}");
    assert!(out.contains(&backups()[0]), "the base backup complete before T: {out}");

    // The restored server on the same port: it replays to T and promotes.
    let restored_pg = xtask::devstack::Postgres::start(&restored, port, &password).expect("the restored cluster");
    let admin = promoted(&restored_pg.admin_url("postgres")).await;
    for setting in ["restore_command", "recovery_target_time", "recovery_target_action"] {
        admin
            .batch_execute(&format!("ALTER SYSTEM RESET {setting}"))
            .await
            .expect("ALTER SYSTEM RESET");
    }
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_file_settings WHERE name LIKE 'recovery_target%' OR name = 'restore_command'",
            &[],
        )
        .await
        .expect("pg_file_settings")
        .get(0);
    assert_eq!(left, 0, "the recovery settings are gone from the configuration files");

    tp.platform.auth.restart().expect("auth-service again");
    tp.platform.reports.restart().expect("reports-service again");
    tp.platform
        .wait_ready(Duration::from_secs(30))
        .expect("the platform ready on the restored cluster");

    // Through the gateway: A as it was, B never happened.
    assert_eq!(
        get_report(&tp, &ada, &before).await,
        (200, before_json),
        "the report before T"
    );
    assert_eq!(login(&tp, "ada@example.org").await, 200, "the user registered before T");
    assert_eq!(get_report(&tp, &ada, &after).await.0, 404, "the report after T");
    assert_eq!(login(&tp, "bob@example.org").await, 401, "the user registered after T");
    // The restored cluster takes writes (a new timeline), and a new base backup keeping only
    // itself removes the older ones and the WAL before it.
    file_report(&tp, &ada, "Written after the recovery").await;
    // Archived segments (24 hex digits; not the .history and .backup files), in order.
    let segments = || {
        let mut names: Vec<String> = std::fs::read_dir(archive.join("wal"))
            .expect("wal/")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        names.sort();
        names
    };
    let oldest_segment = segments()[0].clone();
    let (code, out) = basebackup(port, "1");
    assert_eq!(code, 0, "basebackup.sh after the recovery: {out}");
    let kept = backups();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        !kept.contains(&backups_before[0]),
        "the oldest base backup is gone: {kept:?}"
    );
    assert!(
        !segments().contains(&oldest_segment),
        "the WAL before the kept base backup is gone: {:?}",
        segments()
    );
}
