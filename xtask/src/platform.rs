//! The four platform processes, started from built binaries with the environment an operator
//! would give them, stopped gracefully (SIGTERM) or killed, and restarted with the same settings.
//! Tests start them on a cleared environment; `cargo xtask up` passes the person's own variables
//! on, except the ones it decides itself ([`merge_person_env`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::provision::ServiceDb;
use crate::secrets::DevSecrets;

/// Ports of every listener.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub gateway_admin: u16,
    pub auth: u16,
    pub auth_admin: u16,
    pub reports: u16,
    pub reports_admin: u16,
    pub analytics: u16,
    pub analytics_admin: u16,
}

impl Ports {
    /// The documented defaults (`cargo xtask up`).
    pub const DEFAULT: Ports = Ports {
        gateway: 8443,
        gateway_admin: 9090,
        auth: 50051,
        auth_admin: 9091,
        reports: 50052,
        reports_admin: 9092,
        analytics: 50053,
        analytics_admin: 9093,
    };

    /// Free ports from the kernel (tests).
    pub fn free() -> std::io::Result<Ports> {
        let p = crate::free_port;
        Ok(Ports {
            gateway: p()?,
            gateway_admin: p()?,
            auth: p()?,
            auth_admin: p()?,
            reports: p()?,
            reports_admin: p()?,
            analytics: p()?,
            analytics_admin: p()?,
        })
    }
}

/// One process and the way to start it again.
pub struct Process {
    pub name: &'static str,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    child: Option<Child>,
}

impl Process {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k == "TERM"))
            .envs(&self.env)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sets `name` for the next start (a test changes a setting, then restarts the process).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    /// Leaves `name` out of the next start.
    pub fn unset_env(&mut self, name: &str) {
        self.env.remove(name);
    }

    /// Runs the binary once with `args` (an operator command) on the process's environment;
    /// answers whether it succeeded and what it wrote.
    pub fn run_command(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let out = Command::new(&self.binary)
            .args(args)
            .env_clear()
            .envs(&self.env)
            .output()
            .with_context(|| format!("running {} {}", self.name, args.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Sends SIGTERM and waits up to `grace` before SIGKILL. Returns whether it exited on its own.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        // A process a test froze (SIGSTOP) acts on SIGTERM only once it runs again.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// Kills at once (a crash, as far as everyone else can tell).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn has_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the platform needs from its surroundings.
pub struct PlatformSpec<'a> {
    pub bin_dir: &'a Path,
    pub secrets: &'a DevSecrets,
    pub databases: &'a [ServiceDb],
    pub redis_url: &'a str,
    pub ports: Ports,
    pub app_env: &'a str,
    pub log_format: &'a str,
    /// Extra variables for the gateway (tests tune timeouts).
    pub gateway_env: &'a [(&'a str, &'a str)],
    /// Extra variables for auth-service (tests point CAPTCHA at a local fake).
    pub auth_env: &'a [(&'a str, &'a str)],
}

pub struct Platform {
    pub gateway: Process,
    pub auth: Process,
    pub reports: Process,
    pub analytics: Process,
    pub ports: Ports,
    services: Vec<Service>,
    /// The person's variables passed on (names), under `cargo xtask up`.
    pub passed_on: Vec<String>,
}

/// The services besides the gateway (which always runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Reports,
    Analytics,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Auth, Service::Reports, Service::Analytics];

    /// Its name in the gateway's `/ready` checks and in `provision::SERVICES`.
    pub fn short_name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Reports => "reports",
            Service::Analytics => "analytics",
        }
    }
}

/// What [`Platform::start_with`] does beyond the [`PlatformSpec`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The services started besides the gateway; the others' ports stay closed, so the gateway
    /// reports them down and their routes answer 503.
    pub services: Vec<Service>,
    /// The person's environment (`cargo xtask up`), passed on under the variables the platform
    /// decides; `None` for tests, which start on a cleared environment.
    pub person_env: Option<BTreeMap<String, String>>,
    /// Variables for one service, set last (tests tune a service: `OUTBOX_MAX_ATTEMPTS`, …).
    pub service_env: Vec<(Service, String, String)>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            services: Service::ALL.to_vec(),
            person_env: None,
            service_env: Vec::new(),
        }
    }
}

/// Settings the platform gives every process that a person may override with their own value
/// under `cargo xtask up` (everything else the platform sets, it decides).
pub const PERSON_MAY_OVERRIDE: [&str; 4] = [
    "LOG_LEVEL",
    "LOG_FORMAT",
    "DATABASE_CHECK_INTERVAL_MS",
    "ALLOWED_ORIGINS",
];

/// reports-service's `ENCRYPTION_KEYS_FILE`: one master key (`dev`), the development
/// `encryption_key`, written next to it once.
fn reports_keyring(secrets: &DevSecrets) -> anyhow::Result<String> {
    let path = secrets.path("encryption_keys");
    if !path.exists() {
        let key = secrets.read("encryption_key")?;
        crate::secrets::write_secret(&path, &format!("dev:{}", key.trim()))?;
    }
    Ok(path.to_string_lossy().into_owned())
}

/// `GRPC_TLS_*` of `process`: its certificate and key from the development secrets, and the CA.
fn grpc_tls_env(secrets: &DevSecrets, process: &str) -> [(String, String); 3] {
    [
        ("GRPC_TLS_CERT_FILE".to_owned(), secrets.grpc(process, "crt")),
        ("GRPC_TLS_KEY_FILE".to_owned(), secrets.grpc(process, "key")),
        ("GRPC_TLS_CA_FILE".to_owned(), secrets.grpc("ca", "crt")),
    ]
}

/// Where `service` keeps its files (attachments under `files/`): beside the secrets directory
/// (`target/devstack/data/<service>` for `cargo xtask up`), or inside a test's own directory.
pub fn data_dir(secrets: &DevSecrets, service: &str) -> PathBuf {
    match (secrets.dir.file_name(), secrets.dir.parent()) {
        (Some(name), Some(parent)) if name == "secrets" => parent.join("data").join(service),
        _ => secrets.dir.join("data").join(service),
    }
}

/// `REDIS_TLS_CA_FILE` when Redis is one of ours over TLS (its certificate is from the internal CA).
fn redis_tls_env(spec: &PlatformSpec<'_>) -> Option<(String, String)> {
    spec.redis_url
        .starts_with("rediss://")
        .then(|| ("REDIS_TLS_CA_FILE".to_owned(), spec.secrets.grpc("ca", "crt")))
}

fn base_env(spec: &PlatformSpec<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("APP_ENV".to_owned(), spec.app_env.to_owned()),
        ("LOG_FORMAT".to_owned(), spec.log_format.to_owned()),
        ("LOG_LEVEL".to_owned(), "info".to_owned()),
        ("ADMIN_HOST".to_owned(), "127.0.0.1".to_owned()),
    ])
}

/// Whether `name` is one of `decided`, or the other spelling of one (`X` and `X_FILE` name the
/// same setting, and a service refuses both at once).
fn is_decided(name: &str, decided: &BTreeSet<String>) -> bool {
    decided.contains(name)
        || decided.contains(&format!("{name}_FILE"))
        || name.strip_suffix("_FILE").is_some_and(|n| decided.contains(n))
}

/// The person's variables that go on to the processes: all but those the platform decides
/// (`decided`, each with its `_FILE` twin). Names only are ever shown; values stay here.
pub fn merge_person_env(person: &BTreeMap<String, String>, decided: &BTreeSet<String>) -> BTreeMap<String, String> {
    person
        .iter()
        .filter(|(k, _)| !is_decided(k, decided))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The one line `cargo xtask up` prints: which of the person's variables it passed on, by name.
/// Those every shell and cargo set are counted, not listed.
pub fn passed_on_line<'a>(passed: impl IntoIterator<Item = &'a str>) -> String {
    let ambient = |k: &str| {
        // Set by cargo and rustup around `cargo xtask`, or by every shell.
        const NAMES: [&str; 18] = [
            "PATH",
            "HOME",
            "TERM",
            "SHELL",
            "USER",
            "LOGNAME",
            "PWD",
            "OLDPWD",
            "SHLVL",
            "LANG",
            "HOSTNAME",
            "TMPDIR",
            "DISPLAY",
            "COLORTERM",
            "LS_COLORS",
            "LD_LIBRARY_PATH",
            "RUST_RECURSION_COUNT",
            "_",
        ];
        const PREFIXES: [&str; 6] = ["CARGO", "RUSTUP_", "LC_", "SSH_", "XDG_", "__CF"];
        NAMES.contains(&k) || PREFIXES.iter().any(|p| k.starts_with(p))
    };
    let (shell, own): (Vec<&str>, Vec<&str>) = passed.into_iter().partition(|k| ambient(k));
    let listed = if own.is_empty() {
        "none of yours".to_owned()
    } else {
        own.join(", ")
    };
    format!(
        "xtask: passed on from your environment: {listed} (and {} set by the shell or cargo)",
        shell.len()
    )
}

impl Platform {
    /// Starts the three services, then the gateway. Does not wait: see [`Platform::wait_ready`].
    pub fn start(spec: &PlatformSpec<'_>) -> anyhow::Result<Self> {
        Self::start_with(spec, &StartOptions::default())
    }

    /// Starts the chosen services, then the gateway, on the environment `options` says.
    pub fn start_with(spec: &PlatformSpec<'_>, options: &StartOptions) -> anyhow::Result<Self> {
        let db = |service: &str| -> anyhow::Result<&ServiceDb> {
            spec.databases
                .iter()
                .find(|d| d.service == service)
                .with_context(|| format!("no database for {service}"))
        };
        let service = |name: &'static str, grpc: u16, admin: u16, database: &ServiceDb, extra: &[(&str, String)]| {
            let mut env = base_env(spec);
            env.insert("GRPC_HOST".into(), "127.0.0.1".into());
            env.insert("GRPC_PORT".into(), grpc.to_string());
            env.insert("METRICS_PORT".into(), admin.to_string());
            // Serving uses the runtime role; the owner's URL is there for MIGRATE_ON_START.
            env.insert("DATABASE_URL".into(), database.service_url());
            env.insert("DATABASE_MIGRATION_URL".into(), database.migration_url());
            if let Some(ca) = &database.tls_ca {
                env.insert("DATABASE_TLS_CA_FILE".into(), ca.to_string_lossy().into_owned());
            }
            env.insert("DATABASE_CHECK_INTERVAL_MS".into(), "250".into());
            // mTLS: its own certificate, the internal CA, and the gateway as its only caller.
            env.extend(grpc_tls_env(spec.secrets, name));
            env.insert("GRPC_ALLOWED_CLIENTS".into(), "gateway".into());
            for (k, v) in extra {
                env.insert((*k).to_owned(), v.clone());
            }
            Process {
                name,
                binary: spec.bin_dir.join(name),
                env,
                child: None,
            }
        };
        let p = spec.ports;
        let secret = |name: &str| spec.secrets.path(name).to_string_lossy().into_owned();
        let mut auth = service(
            "auth-service",
            p.auth,
            p.auth_admin,
            db("auth")?,
            &[
                ("JWT_SIGNING_KEYS_FILE", secret("jwt_signing_keys.pem")),
                ("DEVICE_ID_SALT_FILE", secret("device_id_salt")),
                ("ENCRYPTION_KEY_FILE", secret("encryption_key")),
                ("REFRESH_TOKEN_SECRET_FILE", secret("refresh_token_secret")),
                ("REDIS_URL", spec.redis_url.to_owned()),
            ],
        );
        auth.env.extend(redis_tls_env(spec));
        // reports-service verifies tokens with auth-service's keys (GetJwks), over mTLS.
        auth.env
            .insert("GRPC_ALLOWED_CLIENTS".into(), "gateway,reports-service".into());
        for (k, v) in spec.auth_env {
            auth.env.insert((*k).to_owned(), (*v).to_owned());
        }
        // reports-service's outbox relay delivers to analytics-service (events.v1), which admits it.
        // reports-service keeps attachments under its data directory.
        let data_dir = data_dir(spec.secrets, "reports-service");
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let mut reports = service(
            "reports-service",
            p.reports,
            p.reports_admin,
            db("reports")?,
            &[
                ("ENCRYPTION_KEYS_FILE", reports_keyring(spec.secrets)?),
                ("AUTH_SERVICE_URL", format!("https://127.0.0.1:{}", p.auth)),
                ("ANALYTICS_SERVICE_URL", format!("https://127.0.0.1:{}", p.analytics)),
                ("DATA_DIR", data_dir.to_string_lossy().into_owned()),
            ],
        );
        let mut analytics = service(
            "analytics-service",
            p.analytics,
            p.analytics_admin,
            db("analytics")?,
            &[("GRPC_ALLOWED_CLIENTS", "gateway,reports-service".to_owned())],
        );
        for (s, k, v) in &options.service_env {
            let process = match s {
                Service::Auth => &mut auth,
                Service::Reports => &mut reports,
                Service::Analytics => &mut analytics,
            };
            process.env.insert(k.clone(), v.clone());
        }

        let mut env = base_env(spec);
        for (k, v) in [
            ("HOST", "127.0.0.1".to_owned()),
            ("PORT", p.gateway.to_string()),
            ("METRICS_PORT", p.gateway_admin.to_string()),
            (
                "TLS_CERT_FILE",
                spec.secrets.path("tls.crt").to_string_lossy().into_owned(),
            ),
            (
                "TLS_KEY_FILE",
                spec.secrets.path("tls.key").to_string_lossy().into_owned(),
            ),
            ("AUTH_SERVICE_URL", format!("https://127.0.0.1:{}", p.auth)),
            ("REPORTS_SERVICE_URL", format!("https://127.0.0.1:{}", p.reports)),
            ("ANALYTICS_SERVICE_URL", format!("https://127.0.0.1:{}", p.analytics)),
            ("REDIS_URL", spec.redis_url.to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        env.extend(grpc_tls_env(spec.secrets, "gateway"));
        env.extend(redis_tls_env(spec));
        for (k, v) in spec.gateway_env {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut gateway = Process {
            name: "gateway",
            binary: spec.bin_dir.join("gateway"),
            env,
            child: None,
        };
        let mut passed_on = Vec::new();
        if let Some(person) = &options.person_env {
            eprintln!(
                "xtask: gRPC between the gateway and the services is mTLS: internal CA and one certificate per process in {}",
                spec.secrets.path("grpc").display()
            );
            let decided: BTreeSet<String> = [&auth, &reports, &analytics, &gateway]
                .iter()
                .flat_map(|p| p.env.keys().cloned())
                .filter(|k| !PERSON_MAY_OVERRIDE.contains(&k.as_str()))
                .collect();
            let passed = merge_person_env(person, &decided);
            passed_on = passed.keys().cloned().collect();
            for process in [&mut auth, &mut reports, &mut analytics, &mut gateway] {
                process.env.extend(passed.clone());
            }
        }
        let started = |s: Service| options.services.contains(&s);
        let chosen = [
            (started(Service::Auth), &mut auth),
            (started(Service::Reports), &mut reports),
            (started(Service::Analytics), &mut analytics),
            (true, &mut gateway),
        ];
        for process in chosen.into_iter().filter_map(|(on, p)| on.then_some(p)) {
            if !process.binary.is_file() {
                bail!(
                    "{} is not built ({}): run `cargo build --workspace --bins`",
                    process.name,
                    process.binary.display()
                );
            }
            process.spawn()?;
        }
        Ok(Self {
            gateway,
            auth,
            reports,
            analytics,
            ports: p,
            services: options.services.clone(),
            passed_on,
        })
    }

    /// Whether `service` was started (it may have been killed since).
    pub fn runs(&self, service: Service) -> bool {
        self.services.contains(&service)
    }

    /// The services not started, by their names in `/ready`.
    fn absent(&self) -> Vec<&'static str> {
        Service::ALL
            .into_iter()
            .filter(|s| !self.runs(*s))
            .map(Service::short_name)
            .collect()
    }

    /// Waits until the gateway's admin `/ready` says every dependency that was started is up.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            for p in [
                &mut self.gateway,
                &mut self.auth,
                &mut self.reports,
                &mut self.analytics,
            ] {
                if let Some(status) = p.has_exited() {
                    bail!("{} exited during start-up ({status}); its log is above", p.name);
                }
            }
            if let Some((200, body)) = http_get(self.ports.gateway_admin, "/ready")
                && ready_enough(&body, &self.absent())
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let last = http_get(self.ports.gateway_admin, "/ready")
                    .map(|(s, b)| format!("{s} {b}"))
                    .unwrap_or_else(|| "no answer".into());
                bail!(
                    "the platform was not ready within {} s (gateway /ready: {last})",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Another gateway replica with the same settings on other ports (replicas share Redis).
    pub fn extra_gateway(&self, public: u16, admin: u16) -> anyhow::Result<Process> {
        let mut env = self.gateway.env.clone();
        env.insert("PORT".to_owned(), public.to_string());
        env.insert("METRICS_PORT".to_owned(), admin.to_string());
        let mut replica = Process {
            name: "gateway",
            binary: self.gateway.binary.clone(),
            env,
            child: None,
        };
        replica.spawn()?;
        Ok(replica)
    }

    /// Another replica of `service` with the same settings (same database) on other ports.
    pub fn extra_replica(&self, service: Service, grpc: u16, admin: u16) -> anyhow::Result<Process> {
        let of = match service {
            Service::Auth => &self.auth,
            Service::Reports => &self.reports,
            Service::Analytics => &self.analytics,
        };
        let mut env = of.env.clone();
        env.insert("GRPC_PORT".to_owned(), grpc.to_string());
        env.insert("METRICS_PORT".to_owned(), admin.to_string());
        let mut replica = Process {
            name: of.name,
            binary: of.binary.clone(),
            env,
            child: None,
        };
        replica.spawn()?;
        Ok(replica)
    }

    /// Stops the gateway first (it drains), then the services.
    pub fn stop(&mut self) -> bool {
        let mut clean = self.gateway.stop(Duration::from_secs(35));
        for p in [&mut self.auth, &mut self.reports, &mut self.analytics] {
            clean &= p.stop(Duration::from_secs(15));
        }
        clean
    }
}

/// Whether a gateway `/ready` body says ready, or degraded only by the `absent` services.
fn ready_enough(body: &str, absent: &[&str]) -> bool {
    let Ok(report) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let Some(checks) = report["checks"].as_object() else {
        return false;
    };
    matches!(report["status"].as_str(), Some("ready" | "degraded"))
        && checks
            .iter()
            .all(|(name, up)| up.as_bool() == Some(true) || absent.contains(&name.as_str()))
}

/// A plain-HTTP GET on loopback (admin ports), without a client library: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of one series (`name` or `name{labels}`, written as exposed) in a Prometheus text
/// exposition.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Where cargo put the binaries of this profile (next to the running test or xtask binary).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Tests run from target/<profile>/deps.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{merge_person_env, metric_value, passed_on_line, ready_enough};

    #[test]
    fn ready_means_every_started_dependency_answers() {
        let body = |auth: bool, reports: bool, redis: bool| {
            let status = if auth && reports && redis { "ready" } else { "degraded" };
            format!(
                r#"{{"status":"{status}","checks":{{"auth":{auth},"reports":{reports},"analytics":{reports},"redis":{redis}}}}}"#
            )
        };
        assert!(ready_enough(&body(true, true, true), &[]));
        assert!(!ready_enough(&body(true, false, true), &[]), "reports down");
        assert!(ready_enough(&body(true, false, true), &["reports", "analytics"]));
        assert!(
            !ready_enough(&body(true, false, false), &["reports", "analytics"]),
            "Redis is always needed"
        );
        assert!(!ready_enough(&body(false, false, true), &["reports", "analytics"]));
        assert!(!ready_enough(r#"{"status":"draining"}"#, &[]));
        assert!(!ready_enough("not json", &[]));
    }

    #[test]
    fn the_platforms_variables_win_and_the_persons_others_pass_on_by_name_only() {
        let person: BTreeMap<String, String> = [
            ("LOG_LEVEL", "debug"),
            ("RATE_LIMIT_MAX_REQUESTS", "100000"),
            ("PORT", "18443"),
            ("DATABASE_URL", "postgres://admin:pg-admin-secret@db/postgres"),
            ("JWT_SIGNING_KEYS", "-----BEGIN PRIVATE KEY----- key-secret"),
            ("REDIS_URL_FILE", "/run/secrets/redis"),
            ("SMTP_PASSWORD", "hunter2"),
            ("PATH", "/usr/bin"),
            ("CARGO_PKG_NAME", "platform-package"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let decided: BTreeSet<String> = ["PORT", "DATABASE_URL", "JWT_SIGNING_KEYS_FILE", "REDIS_URL"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let passed = merge_person_env(&person, &decided);
        let names: Vec<&str> = passed.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "CARGO_PKG_NAME",
                "LOG_LEVEL",
                "PATH",
                "RATE_LIMIT_MAX_REQUESTS",
                "SMTP_PASSWORD"
            ],
            "decided names and their _FILE twins stay the platform's"
        );
        assert_eq!(passed["LOG_LEVEL"], "debug");
        let line = passed_on_line(passed.keys().map(String::as_str));
        assert_eq!(
            line,
            "xtask: passed on from your environment: LOG_LEVEL, RATE_LIMIT_MAX_REQUESTS, SMTP_PASSWORD (and 2 set by the shell or cargo)"
        );
        for value in person.values() {
            assert!(!line.contains(value.as_str()), "a value was printed: {line}");
        }
        assert_eq!(
            passed_on_line([]),
            "xtask: passed on from your environment: none of yours (and 0 set by the shell or cargo)"
        );
    }

    #[test]
    fn a_series_is_read_by_its_exact_name_and_labels() {
        let text = "# HELP x_sum a histogram\nx_sum 12.5\nx_sum_total 9\nx_count 4\nv_total{policy=\"api\"} 3\nv_total{policy=\"auth\"} 7\n";
        assert_eq!(metric_value(text, "x_sum"), Some(12.5));
        assert_eq!(
            metric_value(text, "x_sum_total"),
            Some(9.0),
            "not the longer name's prefix"
        );
        assert_eq!(metric_value(text, "x_count"), Some(4.0));
        assert_eq!(metric_value(text, "v_total{policy=\"auth\"}"), Some(7.0));
        assert_eq!(
            metric_value(text, "v_total"),
            None,
            "a labelled series needs its labels"
        );
        assert_eq!(metric_value(text, "missing"), None);
    }
}
