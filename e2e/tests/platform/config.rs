//! A bad configuration stops a binary at once with one line naming the variable.

use std::process::Command;

fn serve(binary: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(xtask::platform::bin_dir().join(binary))
        .arg("serve")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line(stderr: &str, must_contain: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for needle in must_contain {
        assert!(lines[0].contains(needle), "{:?} should contain {needle:?}", lines[0]);
    }
}

#[test]
fn missing_variables_are_named() {
    let (code, stderr) = serve("auth-service", &[]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        &[
            "auth-service: invalid configuration:",
            "DATABASE_URL is missing",
            "JWT_SIGNING_KEYS is missing",
        ],
    );
}

#[test]
fn malformed_values_are_named_without_echoing_secrets() {
    let (code, stderr) = serve(
        "reports-service",
        &[
            ("DATABASE_URL", "mysql://user:hunter2@db/x"),
            ("DATABASE_MAX_CONNECTIONS", "lots"),
        ],
    );
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        &[
            "DATABASE_URL must be a postgres:// URL",
            "DATABASE_MAX_CONNECTIONS must be an integer in 1..=1000, got \"lots\"",
        ],
    );
    assert!(!stderr.contains("hunter2"), "a secret was printed: {stderr}");
}

#[test]
fn out_of_range_values_are_named() {
    let (code, stderr) = serve(
        "analytics-service",
        &[
            ("DATABASE_URL", "postgres://u:p@127.0.0.1:1/x"),
            ("GRPC_PORT", "70000"),
            ("DATABASE_TIMEOUT_MS", "5"),
        ],
    );
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        &[
            "GRPC_PORT must be an integer in 0..=65535, got \"70000\"",
            "DATABASE_TIMEOUT_MS must be an integer in 100..=60000, got 5",
        ],
    );
}

#[test]
fn gateway_refuses_plain_http_in_production_and_unreadable_secrets() {
    let (code, stderr) = serve(
        "gateway",
        &[
            ("ALLOW_PLAIN_HTTP", "true"),
            ("REDIS_URL_FILE", "/nonexistent/redis-url"),
        ],
    );
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        &[
            "ALLOW_PLAIN_HTTP is refused when APP_ENV=production",
            "REDIS_URL_FILE names a file that cannot be read",
        ],
    );
}

#[test]
fn help_lists_the_subcommands() {
    for binary in ["auth-service", "reports-service", "analytics-service", "gateway"] {
        let out = Command::new(xtask::platform::bin_dir().join(binary))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{binary} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("serve"), "{binary} --help: {text}");
        if binary != "gateway" {
            assert!(text.contains("migrate"), "{binary} --help: {text}");
        }
    }
}
