//! Typed configuration from environment variables.
//!
//! Every process parses its configuration once, at start, from an [`Env`]: a snapshot of the
//! variables (tests build one from a map and never touch the process environment). Secrets may come
//! from `NAME` or from the file named by `NAME_FILE` (Kubernetes and Docker secrets). Every problem
//! is collected, and [`Env::finish`] reports them all in one line that names each variable.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// One line naming every bad variable and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// The individual problems, one per variable.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// A snapshot of configuration variables that records every problem met while reading it.
#[derive(Default)]
pub struct Env {
    vars: HashMap<String, String>,
    problems: RefCell<Vec<String>>,
}

/// Names only: the values include secrets (`DATABASE_URL`, `JWT_SIGNING_KEYS`, ...).
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env")
            .field("names", &names)
            .field("problems", &self.problems.borrow())
            .finish()
    }
}

impl Env {
    /// The process environment, read once.
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars())
    }

    /// Variables from any source (tests use this instead of mutating the environment).
    pub fn from_map<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            vars: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Records a problem found by the caller (cross-field rules).
    pub fn problem(&self, name: &str, what: impl fmt::Display) {
        self.problems.borrow_mut().push(format!("{name} {what}"));
    }

    /// Raw value; empty strings count as unset.
    fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A plain (non-secret) string, if set.
    pub fn optional_string(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_owned)
    }

    /// A plain string that must be set.
    pub fn string(&self, name: &str) -> Option<String> {
        let value = self.optional_string(name);
        if value.is_none() {
            self.problem(name, "is missing");
        }
        value
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE` (trailing newline trimmed).
    pub fn optional_secret(&self, name: &str) -> Option<SecretString> {
        let file_var = format!("{name}_FILE");
        match (self.raw(name), self.raw(&file_var)) {
            (Some(_), Some(_)) => {
                self.problem(name, format!("and {file_var} are both set; set only one"));
                None
            }
            (Some(value), None) => Some(SecretString::from(value.to_owned())),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let text = text.trim_end_matches(['\r', '\n']).to_owned();
                    if text.is_empty() {
                        self.problem(&file_var, format!("names an empty file ({path})"));
                        None
                    } else {
                        Some(SecretString::from(text))
                    }
                }
                Err(e) => {
                    self.problem(&file_var, format!("names a file that cannot be read ({path}: {e})"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A secret that must be set (as `NAME` or `NAME_FILE`).
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        let value = self.optional_secret(name);
        if value.is_none() && !self.has_problem_for(name) {
            self.problem(name, format!("is missing (set {name} or {name}_FILE)"));
        }
        value
    }

    fn has_problem_for(&self, name: &str) -> bool {
        self.problems.borrow().iter().any(|p| p.starts_with(name))
    }

    /// A value parsed with `FromStr`, or `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T, expected: &str) -> T
    where
        T: FromStr,
    {
        match self.raw(name) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(v) => v,
                Err(_) => {
                    self.problem(name, format!("must be {expected}, got {raw:?}"));
                    default
                }
            },
        }
    }

    /// An integer within `min..=max`, or `default` when unset.
    pub fn int_in<T>(&self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let expected = format!("an integer in {min}..={max}");
        let value = self.parse_or(name, default, &expected);
        if value < min || value > max {
            self.problem(name, format!("must be {expected}, got {value}"));
            return default;
        }
        value
    }

    /// A duration given in whole seconds within `min..=max`.
    pub fn seconds_in(&self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.int_in(name, default, min, max))
    }

    /// A duration given in milliseconds within `min..=max`.
    pub fn millis_in(&self, name: &str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.int_in(name, default, min, max))
    }

    /// A boolean (`true|false|1|0|yes|no`), or `default` when unset.
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        match self.raw(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    self.problem(name, format!("must be true or false, got {v:?}"));
                    default
                }
            },
        }
    }

    /// One of a fixed set of words, or `default` when unset.
    pub fn one_of<'a>(&self, name: &str, default: &'a str, allowed: &[&'a str]) -> &'a str {
        match self.raw(name) {
            None => default,
            Some(raw) => match allowed.iter().find(|a| a.eq_ignore_ascii_case(raw.trim())) {
                Some(found) => found,
                None => {
                    self.problem(name, format!("must be one of {}, got {raw:?}", allowed.join("|")));
                    default
                }
            },
        }
    }

    /// A listen address: `HOST_VAR` (default 0.0.0.0) and `PORT_VAR` (1..=65535; 0 is allowed so
    /// tests can ask the kernel for a free port).
    pub fn listen_addr(&self, host_var: &str, port_var: &str, default_port: u16) -> SocketAddr {
        self.listen_addr_or(host_var, port_var, IpAddr::from([0, 0, 0, 0]), default_port)
    }

    /// The same with another default host (the services' gRPC port: loopback outside production).
    pub fn listen_addr_or(
        &self,
        host_var: &str,
        port_var: &str,
        default_host: IpAddr,
        default_port: u16,
    ) -> SocketAddr {
        let host: IpAddr = self.parse_or(host_var, default_host, "an IP address");
        let port = self.int_in(port_var, default_port, 0, u16::MAX);
        SocketAddr::new(host, port)
    }

    /// Fails with every problem recorded so far.
    pub fn finish(self) -> Result<(), ConfigError> {
        let problems = self.problems.into_inner();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Where the process runs; production refuses development shortcuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    /// `APP_ENV` = development | test | production (default production, so that forgetting it
    /// never relaxes a check).
    pub fn from_env(env: &Env) -> Self {
        match env.one_of("APP_ENV", "production", &["development", "test", "production"]) {
            "development" => Self::Development,
            "test" => Self::Test,
            _ => Self::Production,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

/// Settings every process shares: who it is, how it logs, where its admin port listens.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub service: &'static str,
    pub environment: Environment,
    pub log: crate::telemetry::LogConfig,
    /// `/metrics`, `/health`, `/ready` (plain HTTP; keep it off the internet).
    pub admin_addr: SocketAddr,
    /// `WORKER_THREADS` (1..=1024): the async runtime's threads; default, the CPUs this process
    /// may use. Fewer than the host's CPUs when several processes share them (the whole platform
    /// on one small host): a request then wakes fewer threads (bench: reports-service's CPU per
    /// create 236 → 178 µs with 1 on 2 shared cores).
    pub worker_threads: Option<usize>,
}

impl CommonConfig {
    pub fn from_env(env: &Env, service: &'static str, default_admin_port: u16) -> Self {
        Self {
            service,
            environment: Environment::from_env(env),
            log: crate::telemetry::LogConfig::from_env(env),
            admin_addr: env.listen_addr("ADMIN_HOST", "METRICS_PORT", default_admin_port),
            worker_threads: env
                .optional_string("WORKER_THREADS")
                .map(|_| env.int_in("WORKER_THREADS", 1, 1, 1024)),
        }
    }

    /// The process's async runtime, with [`Self::worker_threads`].
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.worker_threads {
            builder.worker_threads(n);
        }
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn missing_required_variable_is_named() {
        let e = env(&[]);
        assert_eq!(e.string("DATABASE_URL"), None);
        let err = e.finish().expect_err("missing variable must fail");
        assert_eq!(err.to_string(), "invalid configuration: DATABASE_URL is missing");
    }

    #[test]
    fn worker_threads_default_to_the_runtime_s_and_are_bounded() {
        let unset = env(&[]);
        assert_eq!(CommonConfig::from_env(&unset, "svc", 9091).worker_threads, None);
        let one = env(&[("WORKER_THREADS", "1")]);
        let config = CommonConfig::from_env(&one, "svc", 9091);
        assert_eq!(config.worker_threads, Some(1));
        assert!(one.finish().is_ok());
        let runtime = config.runtime().expect("a runtime");
        assert_eq!(runtime.metrics().num_workers(), 1);
        let zero = env(&[("WORKER_THREADS", "0")]);
        CommonConfig::from_env(&zero, "svc", 9091);
        let err = zero.finish().expect_err("0 threads must fail");
        assert!(
            err.to_string()
                .contains("WORKER_THREADS must be an integer in 1..=1024, got 0"),
            "{err}"
        );
    }

    #[test]
    fn malformed_integer_is_named_with_its_value() {
        let e = env(&[("DATABASE_MAX_CONNECTIONS", "ten")]);
        assert_eq!(e.int_in("DATABASE_MAX_CONNECTIONS", 10u32, 1, 1000), 10);
        let err = e.finish().expect_err("malformed value must fail");
        assert_eq!(
            err.to_string(),
            "invalid configuration: DATABASE_MAX_CONNECTIONS must be an integer in 1..=1000, got \"ten\""
        );
    }

    #[test]
    fn out_of_range_integer_is_named() {
        let e = env(&[("METRICS_PORT", "70000")]);
        e.listen_addr("ADMIN_HOST", "METRICS_PORT", 9090);
        let err = e.finish().expect_err("out of range must fail");
        assert_eq!(
            err.to_string(),
            "invalid configuration: METRICS_PORT must be an integer in 0..=65535, got \"70000\""
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_on_one_line() {
        let e = env(&[("LOG_FORMAT", "xml"), ("GRPC_PORT", "-1")]);
        e.string("DATABASE_URL");
        crate::telemetry::LogConfig::from_env(&e);
        e.int_in("GRPC_PORT", 50051u16, 0, u16::MAX);
        let err = e.finish().expect_err("three problems");
        assert_eq!(err.problems().len(), 3);
        assert!(!err.to_string().contains('\n'));
        for name in ["DATABASE_URL", "LOG_FORMAT", "GRPC_PORT"] {
            assert!(err.to_string().contains(name), "{err} should name {name}");
        }
    }

    #[test]
    fn secret_comes_from_file_and_both_forms_conflict() {
        let dir = std::env::temp_dir().join(format!("svc-kit-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("key");
        std::fs::write(&path, "s3cret\n").expect("write secret");
        let path = path.to_string_lossy().into_owned();

        let e = env(&[("ENCRYPTION_KEY_FILE", &path)]);
        let secret = e.secret("ENCRYPTION_KEY").expect("read from file");
        assert_eq!(secret.expose_secret(), "s3cret");
        assert!(e.finish().is_ok());

        let e = env(&[("ENCRYPTION_KEY", "x"), ("ENCRYPTION_KEY_FILE", &path)]);
        assert!(e.secret("ENCRYPTION_KEY").is_none());
        let err = e.finish().expect_err("both set");
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(
            err.to_string()
                .contains("ENCRYPTION_KEY and ENCRYPTION_KEY_FILE are both set")
        );

        let e = env(&[("ENCRYPTION_KEY_FILE", "/nonexistent/key")]);
        assert!(e.secret("ENCRYPTION_KEY").is_none());
        let err = e.finish().expect_err("unreadable file");
        assert!(
            err.to_string()
                .starts_with("invalid configuration: ENCRYPTION_KEY_FILE names a file that cannot be read")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let e = env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")]);
        let s = e.secret("DATABASE_URL").expect("set");
        assert!(!format!("{s:?}").contains("hunter2"));
        let shown = format!("{e:?}");
        assert!(shown.contains("DATABASE_URL"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn enumerations_and_booleans_reject_other_words() {
        let e = env(&[("APP_ENV", "staging"), ("MIGRATE_ON_START", "maybe")]);
        assert_eq!(Environment::from_env(&e), Environment::Production);
        assert!(!e.bool_or("MIGRATE_ON_START", false));
        let err = e.finish().expect_err("two problems");
        assert!(
            err.to_string()
                .contains("APP_ENV must be one of development|test|production, got \"staging\"")
        );
        assert!(
            err.to_string()
                .contains("MIGRATE_ON_START must be true or false, got \"maybe\"")
        );
    }
}
