//! The restore drill: what users wrote through the gateway survives backup.sh, the loss of every
//! schema and of the file store, and restore.sh, byte for byte.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use xtask::testkit::{Service, TestPlatform};

use crate::client;

const PASSWORD: &str = "correct horse battery staple";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const SCHEMAS: [&str; 3] = ["auth", "reports", "analytics"];

fn script(name: &str) -> std::path::PathBuf {
    xtask::workspace_root().join("deploy/scripts").join(name)
}

/// Runs `cmd` (a deploy script): its exit code and its output, both streams.
pub(crate) fn run(cmd: &mut Command, what: &str) -> (i32, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn login(tp: &TestPlatform, email: &str) -> reqwest::Response {
    let body = json!({"email": email, "password": PASSWORD, "device": {"device_id": "phone-1", "platform": "ios"}});
    client(tp)
        .post(format!("{}/v1/auth/login", tp.base_url()))
        .json(&body)
        .send()
        .await
        .expect("login")
}

async fn register(tp: &TestPlatform, email: &str) -> String {
    let body = json!({
        "email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace",
        "device": {"device_id": "phone-1", "platform": "ios"}
    });
    let res = client(tp)
        .post(format!("{}/v1/auth/register", tp.base_url()))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201, "register {email}");
    let v: Value = res.json().await.expect("json");
    v["tokens"]["access_token"].as_str().expect("token").to_owned()
}

/// Files a report through the gateway as `token`'s user; its id.
pub(crate) async fn file_report(tp: &TestPlatform, token: &str, title: &str) -> String {
    let body = json!({
        "category": "theft", "title": title, "description": "Cut the lock.",
        "occurred_at": (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "location": {"lat": 52.52, "lng": 13.405},
    });
    let res = client(tp)
        .post(format!("{}/v1/reports", tp.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("file a report");
    assert_eq!(res.status().as_u16(), 201, "file a report");
    let v: Value = res.json().await.expect("json");
    v["id"].as_str().expect("report id").to_owned()
}

/// Everything a user reads back: the report's JSON and the attachment's bytes.
async fn read_back(tp: &TestPlatform, token: &str, report: &str, attachment: &str) -> (Value, Vec<u8>) {
    let http = client(tp);
    let res = http
        .get(format!("{}/v1/reports/{report}", tp.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get report");
    assert_eq!(res.status().as_u16(), 200, "GET /v1/reports/{report}");
    let json: Value = res.json().await.expect("json");
    let res = http
        .get(format!(
            "{}/v1/reports/{report}/attachments/{attachment}",
            tp.base_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(res.status().as_u16(), 200, "download {attachment}");
    (json, res.bytes().await.expect("bytes").to_vec())
}

fn copy_dir(from: &Path, to: &Path) {
    let (code, out) = run(Command::new("cp").arg("-a").arg(from).arg(to), "cp -a");
    assert_eq!(code, 0, "cp -a {} {}: {out}", from.display(), to.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_drill_brings_back_users_reports_and_attachments_byte_for_byte() {
    let age = xtask::devstack::program_or_install("age", "age").expect("age");
    let keygen = xtask::devstack::find_program("age-keygen").expect("age-keygen comes with age");
    let mut tp = TestPlatform::builder("backup")
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform");
    let work = Work(std::env::temp_dir().join(format!("e2e-backup-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(work.path()).expect("work dir");
    let key = work.path().join("key.txt");
    let (code, out) = run(Command::new(&keygen).arg("-o").arg(&key), "age-keygen");
    assert_eq!(code, 0, "{out}");
    let (code, recipient) = run(Command::new(&keygen).arg("-y").arg(&key), "age-keygen -y");
    assert_eq!(code, 0, "{recipient}");
    let recipient = recipient.trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");

    // What users wrote, through the gateway.
    let ada = register(&tp, "ada@example.org").await;
    let bob = register(&tp, "bob@example.org").await;
    let mut written = Vec::new();
    for (token, title) in [(&ada, "Bike taken from the rack"), (&bob, "Window smashed")] {
        let report = file_report(&tp, token, title).await;
        let res = client(&tp)
            .post(format!("{}/v1/reports/{report}/attachments", tp.base_url()))
            .bearer_auth(token)
            .header("content-type", "application/pdf")
            .body(PDF)
            .send()
            .await
            .expect("upload");
        assert_eq!(res.status().as_u16(), 201, "upload");
        let stored: Value = res.json().await.expect("json");
        let attachment = stored["id"].as_str().expect("attachment id").to_owned();
        let (json, bytes) = read_back(&tp, token, &report, &attachment).await;
        assert_eq!(hex_sha256(&bytes), stored["sha256"].as_str().expect("sha256"));
        written.push((token.clone(), report, attachment, json, bytes));
    }

    // The backup, as the CronJob runs it: a role with BYPASSRLS and SELECT only, made as the
    // README says (the tables FORCE row-level security: their owner would see no rows).
    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    let backup_role = format!("{}_backup", tp.database);
    let backup_password = uuid::Uuid::new_v4().simple().to_string();
    db.batch_execute(&format!(
        "CREATE ROLE {backup_role} LOGIN BYPASSRLS PASSWORD '{backup_password}'"
    ))
    .await
    .expect("backup role");
    db.batch_execute(&format!("GRANT CONNECT ON DATABASE {} TO {backup_role}", tp.database))
        .await
        .expect("connect grant");
    for schema in SCHEMAS {
        db.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {backup_role}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {backup_role}; \
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {backup_role}"
        ))
        .await
        .expect("backup grants");
    }
    let mut backup_url = reqwest::Url::parse(&tp.admin_url).expect("admin URL");
    backup_url.set_username(&backup_role).expect("user");
    backup_url.set_password(Some(&backup_password)).expect("password");
    let backups = work.path().join("backups");
    let backup = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new("sh");
        cmd.arg(script("backup.sh"))
            .arg(backup_url.as_str())
            .env("BACKUP_DIR", &backups)
            .env("BACKUP_AGE_RECIPIENT", &recipient)
            .env("PATH", path_with(&age));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        run(&mut cmd, "backup.sh")
    };
    let (code, out) = backup(&[("BACKUP_AGE_RECIPIENT", "")]);
    assert_eq!(code, 2, "no recipient is a configuration error: {out}");
    let (code, out) = backup(&[]);
    assert_eq!(code, 0, "backup.sh: {out}");
    let made: Vec<_> = std::fs::read_dir(&backups)
        .expect("backups")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(made.len(), 1, "one complete backup and no partial one: {made:?}");
    let snapshot = made[0].clone();
    for schema in SCHEMAS {
        let sealed = std::fs::read(snapshot.join(format!("{schema}.dump.age"))).expect("dump");
        assert!(
            sealed.starts_with(b"age-encryption.org/v1"),
            "{schema} is encrypted with age"
        );
    }
    let sums = std::fs::read_to_string(snapshot.join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(sums.lines().count(), SCHEMAS.len(), "{sums}");
    // The file store is copied beside the database backup: its objects are sealed already.
    let files = tp.reports_files_dir();
    let files_copy = work.path().join("files-copy");
    copy_dir(&files, &files_copy);

    // The disaster: services stopped, every schema and every stored object gone.
    tp.platform.auth.stop(Duration::from_secs(10));
    tp.platform.reports.stop(Duration::from_secs(10));
    for schema in SCHEMAS {
        db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop schema");
    }
    std::fs::remove_dir_all(&files).expect("remove the file store");

    // A damaged backup is refused before anything is touched.
    let restore = |backup: &Path| {
        run(
            Command::new("sh")
                .arg(script("restore.sh"))
                .arg(backup)
                .arg(&tp.admin_url)
                .env("BACKUP_AGE_IDENTITY", &key)
                .env("RESTORE_ROLE_PREFIX", format!("{}_", tp.database))
                .env("PATH", path_with(&age)),
            "restore.sh",
        )
    };
    let damaged = work.path().join("damaged");
    copy_dir(&snapshot, &damaged);
    let mut bytes = std::fs::read(damaged.join("reports.dump.age")).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(damaged.join("reports.dump.age"), bytes).expect("write");
    let (code, out) = restore(&damaged);
    assert_eq!(code, 3, "a checksum mismatch: {out}");

    let (code, out) = restore(&snapshot);
    assert_eq!(code, 0, "restore.sh: {out}");
    copy_dir(&files_copy, &files);
    for schema in SCHEMAS {
        let owner: String = db
            .query_one(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                &[&schema],
            )
            .await
            .expect("schema")
            .get(0);
        assert_eq!(owner, format!("{}_{schema}_owner", tp.database), "{schema}");
    }

    tp.platform.auth.restart().expect("auth-service again");
    tp.platform.reports.restart().expect("reports-service again");
    tp.platform
        .wait_ready(Duration::from_secs(30))
        .expect("the platform ready again after the restore");

    // Everything reads back the same, and the users can sign in with their passwords.
    for (token, report, attachment, json, bytes) in &written {
        let (json_after, bytes_after) = read_back(&tp, token, report, attachment).await;
        assert_eq!(&json_after, json, "report {report}");
        assert_eq!(&bytes_after, bytes, "attachment {attachment}");
        assert_eq!(hex_sha256(&bytes_after), hex_sha256(PDF));
    }
    for email in ["ada@example.org", "bob@example.org"] {
        let res = login(&tp, email).await;
        assert_eq!(res.status().as_u16(), 200, "login {email} after the restore");
    }
    let res = login(&tp, "carol@example.org").await;
    assert_eq!(res.status().as_u16(), 401, "nobody new appeared");
}

/// A directory of the test's own, removed at the end (the drills' keys, backups and clusters).
pub(crate) struct Work(pub(crate) std::path::PathBuf);

impl Work {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PATH with the directory of `age` first (apt puts it in /usr/bin, which is on PATH anyway).
fn path_with(age: &Path) -> std::ffi::OsString {
    let mut dirs = vec![age.parent().expect("age's directory").to_path_buf()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).expect("PATH")
}
