//! What the e2e tests need: a fresh database with the per-service roles and migrations applied,
//! fresh secrets, and the four processes on free ports, against the PostgreSQL and Redis that
//! `cargo xtask test` started (`TEST_PG_URL`, `TEST_REDIS_URL`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::platform::{Platform, PlatformSpec, Ports, bin_dir};
use crate::provision::{self, SERVICES, ServiceDb};
use crate::secrets::DevSecrets;

pub struct TestPlatform {
    pub platform: Platform,
    pub secrets: DevSecrets,
    pub databases: Vec<ServiceDb>,
    pub database: String,
    pub admin_url: String,
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` of this platform's processes.
    pub redis_prefix: String,
    dir: PathBuf,
}

impl TestPlatform {
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.platform.ports.gateway)
    }

    /// The self-signed certificate the gateway serves (PEM), for the client's trust store.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.secrets.path("tls.crt")).unwrap_or_default()
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        self.platform.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env_var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run the tests with `cargo xtask test`, which starts PostgreSQL and Redis for them")
    })
}

/// A database of its own with the three services' roles and schemas, migrated.
pub async fn fresh_databases(tag: &str) -> anyhow::Result<(String, String, Vec<ServiceDb>)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin_url = env_var("TEST_PG_URL")?;
    let name = format!(
        "t{}_{}_{}",
        tag,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let admin = provision::connect(&admin_url).await?;
    provision::create_database(&admin, &name).await?;
    let (host, port) = host_port(&admin_url)?;
    let db_admin_url = replace_database(&admin_url, &name);
    let mut dbs = Vec::new();
    for service in SERVICES {
        let password = crate::secrets::random_token();
        dbs.push(
            provision::provision_service(
                &db_admin_url,
                &host,
                port,
                &name,
                &format!("{name}_"),
                service,
                &password,
            )
            .await?,
        );
    }
    Ok((name, db_admin_url, dbs))
}

/// Runs `SERVICE migrate` for each service, as an operator's Job would.
pub fn migrate(dbs: &[ServiceDb]) -> anyhow::Result<Vec<String>> {
    let mut outputs = Vec::new();
    for db in dbs {
        let binary = bin_dir().join(format!("{}-service", db.service));
        let out = Command::new(&binary)
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("LOG_FORMAT", "json")
            .env("APP_ENV", "test")
            .output()
            .with_context(|| format!("running {} migrate", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{} migrate failed: {text}", db.service);
        }
        outputs.push(text);
    }
    Ok(outputs)
}

/// Starts the whole platform for one test and waits until it is ready.
pub async fn start(tag: &str, gateway_env: &[(&str, &str)]) -> anyhow::Result<TestPlatform> {
    start_with(tag, gateway_env, &[]).await
}

/// The same, with extra variables for auth-service.
pub async fn start_with(
    tag: &str,
    gateway_env: &[(&str, &str)],
    auth_env: &[(&str, &str)],
) -> anyhow::Result<TestPlatform> {
    let redis_url = env_var("TEST_REDIS_URL")?;
    let (database, admin_url, databases) = fresh_databases(tag).await?;
    migrate(&databases)?;
    let dir = crate::workspace_root()
        .join("target")
        .join("devstack")
        .join("tests")
        .join(&database);
    let secrets = DevSecrets::load_or_create(&dir)?;
    let bins = bin_dir();
    // Keys of this platform live under their own prefix in the shared test Redis.
    let redis_prefix = format!("{database}:");
    // Tests log in many times a second; limits are relaxed unless a test sets its own (later
    // entries win).
    let relaxed = [
        ("AUTH_RATE_LIMIT_MAX_REQUESTS", "100000"),
        ("AUTH_RATE_LIMIT_BURST", "100000"),
        ("RATE_LIMIT_MAX_REQUESTS", "100000"),
        ("RATE_LIMIT_BURST", "100000"),
    ];
    let gateway_env: Vec<(&str, &str)> = relaxed
        .into_iter()
        .chain(gateway_env.iter().copied())
        .chain([("REDIS_KEY_PREFIX", redis_prefix.as_str())])
        .collect();
    let auth_env: Vec<(&str, &str)> = auth_env
        .iter()
        .copied()
        .chain([("REDIS_KEY_PREFIX", redis_prefix.as_str())])
        .collect();
    // A port picked free can still be taken by a parallel test before our process binds it;
    // such a start fails fast (the process exits), and another set of ports is tried.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut platform = Platform::start(&PlatformSpec {
            bin_dir: &bins,
            secrets: &secrets,
            databases: &databases,
            redis_url: &redis_url,
            ports: Ports::free()?,
            app_env: "test",
            log_format: "json",
            gateway_env: &gateway_env,
            auth_env: &auth_env,
        })?;
        match platform.wait_ready(Duration::from_secs(60)) {
            Ok(_) => {
                return Ok(TestPlatform {
                    platform,
                    secrets,
                    databases,
                    database,
                    admin_url,
                    redis_url,
                    redis_prefix,
                    dir,
                });
            }
            Err(e) if attempt < 3 && e.to_string().contains("exited during start-up") => {
                platform.stop();
            }
            Err(e) => return Err(e),
        }
    }
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let after_at = url.rsplit_once('@').map_or(url, |(_, h)| h);
    let hostport = after_at.split('/').next().unwrap_or_default();
    let (host, port) = hostport.rsplit_once(':').context("TEST_PG_URL needs host:port")?;
    Ok((host.to_owned(), port.parse().context("TEST_PG_URL port")?))
}

fn replace_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => url.to_owned(),
    }
}

/// A Redis of one test's own, so that the test can kill it (drop it) and start it again on the
/// same port and directory without touching the shared one.
pub struct OwnRedis {
    pub dir: PathBuf,
    pub port: u16,
}

impl OwnRedis {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let dir = crate::workspace_root()
            .join("target")
            .join("devstack")
            .join(format!("redis-{tag}-{}", std::process::id()));
        Ok(Self {
            dir,
            port: crate::free_port()?,
        })
    }

    /// Starts (or starts again) the server.
    pub fn start(&self) -> anyhow::Result<crate::devstack::Redis> {
        crate::devstack::Redis::start(&self.dir, self.port, false)
    }
}

/// A platform whose gateway and auth-service use a Redis of their own (for a test to freeze,
/// kill or restart), with `gateway_env` and `auth_env` added. The `OwnRedis` starts it again.
pub async fn start_on_own_redis(
    tag: &str,
    gateway_env: &[(&str, &str)],
    auth_env: &[(&str, &str)],
) -> anyhow::Result<(OwnRedis, crate::devstack::Redis, TestPlatform)> {
    let own = OwnRedis::new(tag)?;
    let redis = own.start()?;
    let url = redis.url();
    let mut gateway: Vec<(&str, &str)> = vec![("REDIS_URL", url.as_str())];
    gateway.extend_from_slice(gateway_env);
    let mut auth: Vec<(&str, &str)> = vec![("REDIS_URL", url.as_str())];
    auth.extend_from_slice(auth_env);
    let platform = start_with(tag, &gateway, &auth).await?;
    Ok((own, redis, platform))
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
