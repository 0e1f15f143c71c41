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

/// Metrics of issue 18's outbox, exported by reports-service once that work is merged (the
/// helper writing it names them `outbox_pending`, `outbox_delivered_total`, `outbox_dead_total`).
/// MERGE NOTE: empty this list when the outbox's metrics are on the branch.
const ARRIVING_WITH_THE_OUTBOX: [&str; 3] = ["outbox_pending", "outbox_delivered_total", "outbox_dead_total"];

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
        .filter(|(m, _)| {
            !exported.contains(m)
                && !PROMETHEUS_OWN.contains(&m.as_str())
                && !ARRIVING_WITH_THE_OUTBOX.contains(&m.as_str())
        })
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
