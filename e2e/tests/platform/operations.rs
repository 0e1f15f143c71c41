//! What operators run: the deploy/ files checked with real tools, metrics every alert rule and
//! dashboard names exist on a running stack, traces end to end (issue 19).
//!
//! The tools themselves (promtool, kubectl kustomize, kubernetes-validate, checkov,
//! docker-compose) run in `cargo xtask test` before the suite (`xtask::deploy_checks`); here the
//! files meet the real processes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use xtask::testkit::TestPlatform;

use crate::client;

/// Series Prometheus makes itself, exported by no process.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

fn repo_file(path: &str) -> PathBuf {
    xtask::workspace_root().join(path)
}

/// Words of PromQL that are not metric names.
const PROMQL_WORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "inf", "nan", "time"];
/// Words followed by a list of label names, not metrics.
const LABEL_LIST_WORDS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression reads: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{…}` or after `by`/`without`/`on`/`ignoring`), strings,
/// durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, label matchers and range selectors out first; they hold identifiers that are not metrics.
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                plain.push(' ');
            }
            _ => plain.push(c),
        }
    }
    let bytes: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let mut next = i;
            while next < bytes.len() && bytes[next].is_whitespace() {
                next += 1;
            }
            let rest: String = bytes[next..].iter().take(8).collect();
            // A function, or an aggregation with its grouping first (`sum by (job) (…)`).
            let called = bytes.get(next) == Some(&'(')
                || ["by", "without"].iter().any(|w| {
                    rest.strip_prefix(w)
                        .is_some_and(|r| r.starts_with(|c: char| c == '(' || c.is_whitespace()))
                });
            // A number's exponent or a duration's unit follows a digit: not a word.
            let after_digit = start > 0 && bytes[start - 1].is_ascii_digit();
            if LABEL_LIST_WORDS.contains(&word.as_str()) {
                if called {
                    while i < bytes.len() && bytes[i] != ')' {
                        i += 1;
                    }
                }
            } else if !called && !after_digit && !PROMQL_WORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr:` of a Prometheus rules file (one line, or a `|` block).
fn rule_expressions(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() {
            continue;
        }
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent.len())
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

/// Every `expr` of a Grafana dashboard's targets.
fn dashboard_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_expressions(v, out)),
        _ => {}
    }
}

/// Every metric named by the alert rules and the dashboards, with where it is named.
fn named_metrics() -> Vec<(String, String)> {
    let mut named = Vec::new();
    let rules = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    let exprs = rule_expressions(&rules);
    assert!(exprs.len() >= 8, "alerts.yml has its rules: {exprs:?}");
    for expr in exprs {
        named.extend(
            metric_names(&expr)
                .into_iter()
                .map(|m| (m, "deploy/prometheus/alerts.yml".to_owned())),
        );
    }
    let dir = repo_file("deploy/grafana/dashboards");
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        dashboards += 1;
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
        let mut exprs = Vec::new();
        dashboard_expressions(&json, &mut exprs);
        assert!(!exprs.is_empty(), "{} has no queries", path.display());
        let file = format!("deploy/grafana/dashboards/{}", entry.file_name().to_string_lossy());
        for expr in exprs {
            named.extend(metric_names(&expr).into_iter().map(|m| (m, file.clone())));
        }
    }
    assert!(dashboards >= 3, "the dashboards are provisioned from {}", dir.display());
    named
}

/// The metric names in a Prometheus text exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_a_rule_or_a_dashboard_names_is_exported() {
    let tp = TestPlatform::builder("operations")
        .all_services()
        .auth_env(&[("ACTIVE_USERS_REFRESH_SECONDS", "1")])
        .start()
        .await
        .expect("platform");
    let http = client(&tp);
    let base = tp.base_url();
    // One request of each kind, so series born with the first request (per route) exist.
    for path in [
        "/health",
        "/.well-known/jwks.json",
        "/v1/alerts/nearby?lat=52.52&lng=13.40&radius_m=1000",
    ] {
        let res = http.get(format!("{base}{path}")).send().await.expect("request");
        assert_eq!(res.status().as_u16(), 200, "{path}");
    }
    let ports = tp.platform.ports;
    let mut exported = BTreeSet::new();
    for (process, port) in [
        ("gateway", ports.gateway_admin),
        ("auth-service", ports.auth_admin),
        ("reports-service", ports.reports_admin),
        ("analytics-service", ports.analytics_admin),
    ] {
        let (status, text) = xtask::platform::http_get(port, "/metrics").expect("metrics");
        assert_eq!(status, 200, "{process} /metrics");
        let names = exported_names(&text);
        // What every process exports from start (issue 19).
        for required in [
            "build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "tls_certificate_expiry_timestamp_seconds",
        ] {
            assert!(names.contains(required), "{process} does not export {required}");
        }
        if process != "gateway" {
            for required in ["pool_connections", "pool_waiting", "database_up"] {
                assert!(names.contains(required), "{process} does not export {required}");
            }
        }
        exported.extend(names);
    }
    let missing: BTreeSet<String> = named_metrics()
        .into_iter()
        .filter(|(m, _)| !exported.contains(m) && !PROMETHEUS_OWN.contains(&m.as_str()))
        .map(|(m, file)| format!("{m} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "named by a rule or a dashboard but exported by no process: {missing:?}"
    );

    // Counters the alerts watch exist from start, at 0, for their known labels.
    let (_, gateway) = xtask::platform::http_get(ports.gateway_admin, "/metrics").expect("metrics");
    for series in [
        "rate_limit_violations_total{policy=\"auth\"}",
        "rate_limit_fallback_total{mode=\"local\"}",
        "revocation_fallback_total{result=\"unavailable\"}",
        "security_events_total{event_type=\"token_rejected\",severity=\"medium\"}",
        "upstream_unavailable_total{cause=\"unreachable\",upstream=\"reports\"}",
    ] {
        assert_eq!(
            xtask::platform::metric_value(&gateway, series),
            Some(0.0),
            "{series} at 0 on a fresh gateway"
        );
    }

    // Active users (the business dashboard): at 0 for every window before anyone signs up, then
    // counted from the sessions.
    let (_, auth) = xtask::platform::http_get(ports.auth_admin, "/metrics").expect("metrics");
    for window in ["1d", "7d", "30d"] {
        let series = format!("active_users{{window=\"{window}\"}}");
        assert_eq!(xtask::platform::metric_value(&auth, &series), Some(0.0), "{series}");
    }
    let res = http
        .post(format!("{base}/v1/auth/register"))
        .json(&serde_json::json!({
            "email": "active.user@example.org", "password": "correct horse battery staple",
            "first_name": "Ada", "last_name": "Lovelace",
            "device": {"device_id": "phone-1", "platform": "ios"},
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    for window in ["1d", "7d", "30d"] {
        let series = format!("active_users{{window=\"{window}\"}}");
        crate::eventually(&series, std::time::Duration::from_secs(10), || async {
            (crate::metric(ports.auth_admin, &series) == 1).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn the_healthcheck_subcommand_asks_the_admin_port() {
    let tp = TestPlatform::builder("healthcheck")
        .services(&[xtask::testkit::Service::Auth])
        .start()
        .await
        .expect("platform");
    let bins = xtask::platform::bin_dir();
    let check = |binary: &str, port: u16| {
        Command::new(bins.join(binary))
            .arg("healthcheck")
            .env_clear()
            .env("METRICS_PORT", port.to_string())
            .env("ADMIN_HOST", "0.0.0.0")
            .status()
            .expect("healthcheck")
            .code()
    };
    let ports = tp.platform.ports;
    // Only the admin address is read: the image's HEALTHCHECK runs with the serving environment,
    // but a check must never need the secrets.
    assert_eq!(check("gateway", ports.gateway_admin), Some(0));
    assert_eq!(check("auth-service", ports.auth_admin), Some(0));
    let closed = xtask::free_port().expect("port");
    assert_eq!(check("gateway", closed), Some(1), "nothing listens: unhealthy");
    assert_eq!(check("auth-service", closed), Some(1));
    // A bad admin port is a configuration error.
    let bad = Command::new(bins.join("reports-service"))
        .arg("healthcheck")
        .env_clear()
        .env("METRICS_PORT", "not-a-port")
        .status()
        .expect("healthcheck");
    assert_eq!(bad.code(), Some(2));
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (job) (rate(http_requests_total{status=~"5.."}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.05"#
        ),
        ["http_requests_total"]
    );
    assert_eq!(
        names("histogram_quantile(0.95, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m]))) > 0.5"),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum by (job, instance) (increase(rate_limit_fallback_total[5m])) > 0\n or sum by (job, instance) (increase(revocation_fallback_total[5m])) > 0"
        ),
        ["rate_limit_fallback_total", "revocation_fallback_total"]
    );
    assert_eq!(
        names("(min by (job, instance, cert) (tls_certificate_expiry_timestamp_seconds) - time()) < 14 * 86400"),
        ["tls_certificate_expiry_timestamp_seconds"]
    );
    assert_eq!(
        names("process_open_fds / process_max_fds"),
        ["process_max_fds", "process_open_fds"]
    );
    assert_eq!(names(r#"up{job=~"gateway|auth-service"} == 0 offset 1e3"#), ["up"]);
}

#[test]
fn rule_expressions_are_read_from_the_rules_file() {
    let rules = "groups:\n  - rules:\n      - alert: A\n        expr: |\n          sum(a_total)\n            / sum(b_total)\n        for: 5m\n      - alert: B\n        expr: c == 0\n";
    assert_eq!(
        rule_expressions(rules),
        ["          sum(a_total)\n            / sum(b_total)", "c == 0"]
    );
}

/// Where a deployment's environment comes from.
#[derive(Clone, Copy, Debug)]
enum Deployed {
    /// docker-compose.yml (secrets under `/run/secrets/`).
    Compose,
    /// `kubectl kustomize deploy/k8s/overlays/prod` (files under `/etc/platform/`).
    Prod,
}

/// The four processes started from their binaries with the environment `deployed` gives them,
/// rewritten only where a test must: host names to loopback, fixed ports to free ones, mount
/// paths to files holding this test's secrets, and the database and Redis to the test's own.
struct AsDeployed {
    children: Vec<(&'static str, std::process::Child, PathBuf)>,
    dir: PathBuf,
}

impl Drop for AsDeployed {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PROCESSES: [&str; 4] = ["auth-service", "reports-service", "analytics-service", "gateway"];

/// A TLS Redis of a test's own, stopped before its directory goes.
type OwnTlsRedis = Option<(xtask::devstack::Redis, xtask::testkit::OwnRedis)>;

async fn start_as_deployed(deployed: Deployed) -> (AsDeployed, xtask::platform::Ports, OwnTlsRedis) {
    use base64::Engine as _;
    let tag = format!("{deployed:?}").to_lowercase();
    let dir = std::env::temp_dir().join(format!("as-deployed-{tag}-{}", uuid::Uuid::new_v4()));
    let secrets = xtask::secrets::DevSecrets::load_or_create(&dir.join("secrets")).expect("secrets");
    let (_, _, dbs) = xtask::testkit::fresh_databases(&format!("dep{tag}"))
        .await
        .expect("databases");
    xtask::testkit::migrate(&dbs).expect("migrate");
    let db = |service: &str| dbs.iter().find(|d| d.service == service).expect("database");
    let ports = xtask::platform::Ports::free().expect("ports");
    let closed = xtask::free_port().expect("port");
    // Production speaks TLS to Redis (rediss:// with REDIS_TLS_CA_FILE): a TLS Redis of our own.
    let (redis_url, own_redis) = match deployed {
        Deployed::Compose => (std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL"), None),
        Deployed::Prod => {
            let own = xtask::testkit::OwnRedis::new("asdeployed").expect("redis dir");
            let redis = own.start_tls().expect("TLS Redis");
            (redis.url(), Some((redis, own)))
        }
    };
    let keyring = format!("k1:{}", base64::engine::general_purpose::STANDARD.encode(rand_bytes()));
    let ca = xtask::certs::InternalCa::shared().expect("CA").cert_path();
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let grpc = |process: &str, ext: &str| read(PathBuf::from(secrets.grpc(process, ext)));
    let service_of = |process: &str| process.trim_end_matches("-service").to_owned();

    // The content behind each file a process is given, by the name deploy/ gives it.
    let content = |process: &str, file: &str| -> Vec<u8> {
        match (deployed, file) {
            (Deployed::Compose, "ca_crt") | (Deployed::Prod, "grpc/ca.crt") => grpc("ca", "crt"),
            (Deployed::Compose, "tls_crt") | (Deployed::Prod, "https/tls.crt") => read(secrets.path("tls.crt")),
            (Deployed::Compose, "tls_key") | (Deployed::Prod, "https/tls.key") => read(secrets.path("tls.key")),
            (Deployed::Prod, "grpc/tls.crt") => grpc(process, "crt"),
            (Deployed::Prod, "grpc/tls.key") => grpc(process, "key"),
            (Deployed::Prod, "trust/postgres-ca.crt" | "trust/redis-ca.crt") => read(ca.clone()),
            (Deployed::Compose, "redis_url") | (Deployed::Prod, "secrets/redis-url") => redis_url.clone().into_bytes(),
            (Deployed::Compose, name) if name.ends_with("_database_url") => {
                db(name.trim_end_matches("_database_url")).url.clone().into_bytes()
            }
            (Deployed::Prod, "secrets/database-url") => {
                let d = db(&service_of(process));
                let url = d.service_url();
                if url.contains("sslmode=") {
                    url
                } else {
                    format!("{url}?sslmode=verify-full")
                }
                .into_bytes()
            }
            (Deployed::Compose, "encryption_keys") | (Deployed::Prod, "secrets/encryption-keys") => {
                keyring.clone().into_bytes()
            }
            (Deployed::Prod, "secrets/captcha-secret") => b"test-captcha-secret".to_vec(),
            (Deployed::Prod, "secrets/smtp-pass") => b"test-smtp-password".to_vec(),
            // The mTLS files of a process: `gateway_crt`, `auth_service_key`, …
            (Deployed::Compose, name)
                if PROCESSES.iter().any(|p| {
                    [
                        format!("{}_crt", p.replace('-', "_")),
                        format!("{}_key", p.replace('-', "_")),
                    ]
                    .contains(&name.to_owned())
                }) =>
            {
                let (stem, ext) = name.rsplit_once('_').expect("name_ext");
                grpc(&stem.replace('_', "-"), ext)
            }
            (Deployed::Compose, "jwt_signing_keys") | (Deployed::Prod, "secrets/jwt-signing-keys") => {
                read(secrets.path("jwt_signing_keys.pem"))
            }
            // No secret: the maintenance windows deploy/ mounts, as they are.
            (_, "maintenance/maintenance.toml") => read(repo_file("deploy/maintenance/maintenance.toml")),
            (Deployed::Compose, name) => read(secrets.path(name)),
            (Deployed::Prod, name) => match name.strip_prefix("secrets/") {
                Some(secret) => read(secrets.path(&secret.replace('-', "_"))),
                None => panic!("no test content for {name} of {process}"),
            },
        }
    };

    let (compose, rendered) = match deployed {
        Deployed::Compose => (
            std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose"),
            String::new(),
        ),
        Deployed::Prod => (
            String::new(),
            xtask::deploy_checks::render_overlay("prod").expect("kustomize"),
        ),
    };
    let own_ports = |process: &str| match process {
        "gateway" => (ports.gateway, ports.gateway_admin),
        "auth-service" => (ports.auth, ports.auth_admin),
        "reports-service" => (ports.reports, ports.reports_admin),
        _ => (ports.analytics, ports.analytics_admin),
    };
    let hosts = [
        ("auth-service:50051", ports.auth),
        ("reports-service:50052", ports.reports),
        ("analytics-service:50053", ports.analytics),
        ("otel-collector.observability:4317", closed),
        ("otel-collector:4317", closed),
    ];
    let mut running = AsDeployed {
        children: Vec::new(),
        dir: dir.clone(),
    };
    for process in PROCESSES {
        let spec = match deployed {
            Deployed::Compose => xtask::deploy_checks::compose_process(&compose, process),
            Deployed::Prod => xtask::deploy_checks::deployment_process(&rendered, process),
        }
        .expect("deployed process");
        let (port, admin) = own_ports(process);
        let files = dir.join(process);
        let mut env = std::collections::BTreeMap::new();
        for (name, value) in &spec.env {
            let mut value = value.clone();
            for (host, port) in hosts {
                value = value.replace(host, &format!("127.0.0.1:{port}"));
            }
            let mounted = value
                .strip_prefix("/run/secrets/")
                .or_else(|| value.strip_prefix("/etc/platform/"))
                .map(str::to_owned);
            if let Some(file) = mounted {
                let path = files.join(&file);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                std::fs::write(&path, content(process, &file)).expect("write");
                value = path.to_string_lossy().into_owned();
            }
            match name.as_str() {
                "PORT" | "GRPC_PORT" => value = port.to_string(),
                "METRICS_PORT" => value = admin.to_string(),
                _ => {}
            }
            env.insert(name.clone(), value);
        }
        let log = dir.join(format!("{process}.log"));
        let child = Command::new(xtask::platform::bin_dir().join(process))
            .args(&spec.args)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(&env)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start");
        running.children.push((process, child, log));
    }
    (running, ports, own_redis)
}

/// 32 random bytes (two v4 UUIDs: 244 random bits, plenty for a test key).
fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// Waits until every process answers `/ready` 200 (the gateway with every check up); a process
/// that exits fails the test with its log.
async fn every_process_becomes_ready(running: &mut AsDeployed, ports: xtask::platform::Ports) {
    let admin = [
        ("auth-service", ports.auth_admin),
        ("reports-service", ports.reports_admin),
        ("analytics-service", ports.analytics_admin),
        ("gateway", ports.gateway_admin),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        for (name, child, log) in &mut running.children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited ({status}) with the deployed environment:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        let ready: Vec<bool> = admin
            .iter()
            .map(|(_, port)| {
                crate::admin_get(*port, "/ready")
                    .is_some_and(|(status, body)| status == 200 && body["status"] == "ready")
            })
            .collect();
        if ready.iter().all(|r| *r) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = running
                .children
                .iter()
                .map(|(name, _, log)| format!("--- {name}\n{}", std::fs::read_to_string(log).unwrap_or_default()))
                .collect();
            panic!("not ready after 60 s ({admin:?} → {ready:?}):\n{}", logs.join("\n"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A variable renamed in the code but not in docker-compose.yml fails here: the processes start
/// with exactly the variables compose gives them.
#[tokio::test]
async fn the_processes_get_ready_with_the_environment_docker_compose_gives_them() {
    let (mut running, ports, _redis) = start_as_deployed(Deployed::Compose).await;
    every_process_becomes_ready(&mut running, ports).await;
}

/// The same with the environment of the Kubernetes `prod` overlay (APP_ENV=production, TLS to
/// PostgreSQL and Redis, every secret a mounted file).
#[tokio::test]
async fn the_processes_get_ready_with_the_environment_of_the_prod_overlay() {
    let (mut running, ports, _redis) = start_as_deployed(Deployed::Prod).await;
    every_process_becomes_ready(&mut running, ports).await;
}
