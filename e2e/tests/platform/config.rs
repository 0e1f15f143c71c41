//! A bad configuration stops a binary at once with one line naming every problem, and only those.

use std::process::Command;

fn serve(binary: &str, env: &[(&str, &str)]) -> (i32, String) {
    serve_with(binary, env, &[])
}

/// The same, with `process`'s valid mTLS settings (`GRPC_TLS_*`) added, so that only the
/// problems a test is about are reported.
fn serve_tls(binary: &str, env: &[(&str, &str)]) -> (i32, String) {
    serve_with(binary, env, &grpc_tls(binary))
}

/// `GRPC_TLS_*` for `process`: a certificate from the internal CA, as the test kit gives it.
pub fn grpc_tls(process: &str) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!("e2e-grpc-tls-{}-{process}", std::process::id()));
    let ca = xtask::certs::InternalCa::shared().expect("internal CA");
    let issued = ca.issue(process, &dir).expect("certificate");
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    vec![
        ("GRPC_TLS_CERT_FILE".to_owned(), path(&issued.cert)),
        ("GRPC_TLS_KEY_FILE".to_owned(), path(&issued.key)),
        ("GRPC_TLS_CA_FILE".to_owned(), path(&ca.cert_path())),
    ]
}

fn serve_with(binary: &str, env: &[(&str, &str)], more: &[(String, String)]) -> (i32, String) {
    let out = Command::new(xtask::platform::bin_dir().join(binary))
        .arg("serve")
        .env_clear()
        .envs(more.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One line naming exactly these problems, in the order the binary checks them: none missing,
/// none more.
fn assert_one_line(stderr: &str, binary: &str, problems: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert_eq!(
        lines[0],
        format!("{binary}: invalid configuration: {}", problems.join("; "))
    );
}

#[test]
fn missing_variables_are_named() {
    let (code, stderr) = serve("auth-service", &[]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "auth-service",
        &[
            "JWT_SIGNING_KEYS is missing (set JWT_SIGNING_KEYS or JWT_SIGNING_KEYS_FILE)",
            "REDIS_URL is missing (set REDIS_URL or REDIS_URL_FILE)",
            "DEVICE_ID_SALT is missing (set DEVICE_ID_SALT or DEVICE_ID_SALT_FILE)",
            "REFRESH_TOKEN_SECRET is missing (set REFRESH_TOKEN_SECRET or REFRESH_TOKEN_SECRET_FILE)",
            "ENCRYPTION_KEY is missing (set ENCRYPTION_KEY or ENCRYPTION_KEY_FILE)",
            "CAPTCHA_PROVIDER=disabled is refused when APP_ENV=production",
            "SMTP_HOST is missing (required when MAILER=smtp)",
            "SMTP_FROM is missing (required when MAILER=smtp)",
            "APP_BASE_URL is missing (the links in e-mails point there)",
            "DATABASE_URL is missing (set DATABASE_URL or DATABASE_URL_FILE)",
            "GRPC_TLS_CERT_FILE is missing (or GRPC_INSECURE=true with APP_ENV=development)",
            "GRPC_TLS_KEY_FILE is missing (or GRPC_INSECURE=true with APP_ENV=development)",
            "GRPC_TLS_CA_FILE is missing (or GRPC_INSECURE=true with APP_ENV=development)",
        ],
    );
}

#[test]
fn malformed_values_are_named_without_echoing_secrets() {
    let (code, stderr) = serve_tls(
        "reports-service",
        &[
            ("DATABASE_URL", "mysql://user:hunter2@db/x"),
            ("DATABASE_MAX_CONNECTIONS", "lots"),
            // A valid keyring (32 bytes), so the two faults above are the only ones.
            ("ENCRYPTION_KEYS", "k:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
        ],
    );
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "reports-service",
        &[
            "DATABASE_URL must be a postgres:// URL",
            "DATABASE_MAX_CONNECTIONS must be an integer in 1..=1000, got \"lots\"",
        ],
    );
    assert!(!stderr.contains("hunter2"), "a secret was printed: {stderr}");
}

#[test]
fn out_of_range_values_are_named() {
    let (code, stderr) = serve_tls(
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
        "analytics-service",
        &[
            "GRPC_PORT must be an integer in 0..=65535, got \"70000\"",
            "DATABASE_TIMEOUT_MS must be an integer in 100..=60000, got 5",
        ],
    );
}

#[test]
fn gateway_refuses_plain_http_in_production_and_unreadable_secrets() {
    let (code, stderr) = serve_tls(
        "gateway",
        &[
            ("ALLOW_PLAIN_HTTP", "true"),
            ("REDIS_URL_FILE", "/nonexistent/redis-url"),
        ],
    );
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "gateway",
        &[
            "ALLOW_PLAIN_HTTP is refused when APP_ENV=production; configure TLS_CERT_FILE and TLS_KEY_FILE",
            "REDIS_URL_FILE names a file that cannot be read (/nonexistent/redis-url: No such file or directory (os error 2))",
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

/// rustls speaks nothing below TLS 1.2, and the gateway says so at start rather than serving a
/// minimum it cannot honour.
#[test]
fn gateway_refuses_a_tls_minimum_below_1_2() {
    for version in ["1.0", "1.1"] {
        let (code, stderr) = serve_tls(
            "gateway",
            &[
                ("APP_ENV", "test"),
                ("TLS_CERT_FILE", "/nonexistent/tls.crt"),
                ("TLS_KEY_FILE", "/nonexistent/tls.key"),
                ("TLS_MIN_VERSION", version),
            ],
        );
        assert_eq!(code, 2, "{stderr}");
        assert_one_line(
            &stderr,
            "gateway",
            &[&format!("TLS_MIN_VERSION must be one of 1.2|1.3, got \"{version}\"")],
        );
    }
}
