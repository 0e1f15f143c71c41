//! Contract fuzzing: schemathesis against a running test platform's /openapi.json (issue 17).
//!
//! The document is the contract the apps are generated from, so everything the gateway enforces
//! must be in it: a valid request (by the schema) is accepted, an invalid one refused, every
//! answer's status is documented and its body matches. schemathesis checks exactly that, with the
//! examples, the boundaries, random data and the stateful sequences the document's links allow.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use xtask::testkit::{Service, TestPlatform};

use crate::client;

/// Enough cases per operation to reach each schema rule's boundaries, few enough to stay within
/// about a minute on two cores; the seed makes a failure reproducible.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "17";

/// Contains neither the names nor the e-mail's local part (the password rule refuses those).
const PASSWORD: &str = "seven quiet harbours at dusk";

/// Signs `email` in (registering it first when `register`) and returns the access token.
async fn access_token(tp: &TestPlatform, email: &str, register: bool) -> String {
    let device = json!({"device_id": "schemathesis", "platform": "web"});
    let (path, body, status) = if register {
        let body = json!({
            "email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace", "device": device,
        });
        ("register", body, 201)
    } else {
        (
            "login",
            json!({"email": email, "password": PASSWORD, "device": device}),
            200,
        )
    };
    let res = client(tp)
        .post(format!("{}/v1/auth/{path}", tp.base_url()))
        .json(&body)
        .send()
        .await
        .expect(path);
    assert_eq!(res.status().as_u16(), status, "{path}");
    let session: Value = res.json().await.expect("session");
    session["tokens"]["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// Makes `email` an administrator, as an operator would.
fn grant_admin(tp: &TestPlatform, email: &str) {
    let (ok, out) = crate::operator(tp, &["grant-role", "--email", email, "--role", "admin"]);
    assert!(ok, "{out}");
}

/// schemathesis' configuration: an administrator's token on every protected route, except that
/// the routes that end sessions (logout, removing a device) get accounts of their own, so that
/// they do not log the rest out. Routes whose schema-valid requests can still be refused for what
/// no schema can say (a mailed token or a cursor that was never handed out, a password that is
/// too common; on removing a device, that one of `password` and `totp_code` is needed) accept
/// that 400, and the routes that take a password (login, and every re-authentication) accept the
/// lock the fuzzer's own wrong passwords bring about. The one server error allowed is the documented 503 (a slow upstream on a loaded
/// host); a 500 fails.
fn config(admin: &str, leaver: &str, remover: &str) -> String {
    format!(
        r#"
headers = {{ Authorization = "Bearer {admin}" }}
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-path-regex = "^/v1/auth/logout"
headers = {{ Authorization = "Bearer {leaver}" }}

[[operations]]
include-path-regex = "^/v1/me/devices/"
headers = {{ Authorization = "Bearer {remover}" }}
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "423", "429"]

[[operations]]
include-path-regex = "^/v1/(auth/(register|verify-email|password-reset/confirm)|admin/audit-logs)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-path-regex = "^/v1/me/password$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "423", "429"]

[[operations]]
include-path-regex = "^/v1/(me/mfa/totp(/confirm)?|auth/logout-all)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "409", "423", "429"]

# A schema can say "binary" but not "a well-formed JPEG, PNG, GIF or PDF": random bytes are 415.
[[operations]]
include-path-regex = "^/v1/reports/[^/]+/attachments$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "415", "422", "429"]

[[operations]]
include-path-regex = "^/v1/(admin/)?reports"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path-regex = "^/v1/auth/login$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "423", "429"]
"#
    )
}

/// Runs schemathesis from `dir` (its configuration and the CA); every request and answer goes
/// to `report` (HAR and JUnit), for reading a failure after the run.
fn schemathesis(dir: &Path, base_url: &str, report: &Path) -> (bool, String) {
    let st = xtask::schemathesis::ensure().expect("schemathesis");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .args(["run", &format!("{base_url}/openapi.json")])
        .arg("--tls-verify")
        .arg(dir.join("ca.pem"))
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "2", "--request-timeout", "10", "--no-color"])
        .args(["--suppress-health-check", "too_slow"])
        .args(["--report", "har,junit", "--report-dir"])
        .arg(report)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("running schemathesis");
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

/// Every check of schemathesis passes against the whole API: no server error, no undocumented
/// status, no answer outside its schema, no schema-valid request refused, no invalid one accepted.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_keeps_its_openapi_contract_under_fuzzing() {
    let tp = TestPlatform::builder("contract")
        .services(&[Service::Auth, Service::Reports])
        // Registrations are the fuzzer's commonest write: cheap hashes keep it in its time budget.
        // Every request comes from one address, so the per-address failure limit is lifted.
        .auth_env(&[
            ("ARGON2_MEMORY_KIB", "8192"),
            ("ARGON2_ITERATIONS", "1"),
            ("LOGIN_IP_MAX_FAILURES", "100000"),
        ])
        .start()
        .await
        .expect("platform");
    access_token(&tp, "fuzz.admin@example.org", true).await;
    grant_admin(&tp, "fuzz.admin@example.org");
    let admin = access_token(&tp, "fuzz.admin@example.org", false).await;
    let leaver = access_token(&tp, "fuzz.leaver@example.org", true).await;
    let remover = access_token(&tp, "fuzz.remover@example.org", true).await;

    let dir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("work dir");
    std::fs::write(dir.join("ca.pem"), tp.ca_pem()).expect("ca");
    std::fs::write(dir.join("schemathesis.toml"), config(&admin, &leaver, &remover)).expect("config");
    let report = xtask::workspace_root()
        .join("target")
        .join("schemathesis")
        .join("report");
    let _ = std::fs::remove_dir_all(&report);
    let base_url = tp.base_url();
    let (passed, output) = tokio::task::spawn_blocking(move || {
        let result = schemathesis(&dir, &base_url, &report);
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
    .await
    .expect("schemathesis task");
    assert!(
        passed,
        "schemathesis found contract failures (every request and answer: target/schemathesis/report/):\n{output}"
    );
}
