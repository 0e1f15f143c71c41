//! What the e2e tests need: a fresh database with the per-service roles and migrations applied,
//! fresh secrets, and the gateway with the services a test asks for on free ports, against the
//! PostgreSQL and Redis that `cargo xtask test` started (`TEST_PG_URL`, `TEST_REDIS_URL`).
//! Every platform speaks mTLS between the gateway and the services (certificates from the
//! checkout's internal CA, issued once per platform) and reaches our PostgreSQL with
//! `sslmode=verify-full`.
//!
//! `TestPlatform::builder("tag").gateway_env(..).auth_env(..).services(..).start()`. cargo-nextest
//! runs every test in a process of its own, so a platform kept in a static would be started again
//! by every test; tests that only touch accounts of their own therefore share a platform by being
//! checks of one test, run in turn (e2e `auth::shared_account_checks`, `edge::shared_edge_checks`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use crate::platform::Service;
use crate::platform::{Platform, PlatformSpec, Ports, StartOptions, bin_dir};
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
    /// Where reports-service keeps its files when no `FILE_STORE_URL` is given.
    pub fn reports_files_dir(&self) -> PathBuf {
        crate::platform::data_dir(&self.secrets, "reports-service").join("files")
    }

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

/// Runs `SERVICE migrate` for each service, as an operator's Job would: the runtime role's
/// `DATABASE_URL` and the owner's `DATABASE_MIGRATION_URL`.
pub fn migrate(dbs: &[ServiceDb]) -> anyhow::Result<Vec<String>> {
    migrate_with(&bin_dir(), dbs)
}

/// [`migrate`] with the binaries in `bins` (`cargo xtask up --release`: the release ones, whose
/// migrations are the code's).
pub fn migrate_with(bins: &std::path::Path, dbs: &[ServiceDb]) -> anyhow::Result<Vec<String>> {
    let mut outputs = Vec::new();
    for db in dbs {
        let binary = bins.join(format!("{}-service", db.service));
        let mut command = Command::new(&binary);
        command.arg("migrate").env_clear();
        if let Some(ca) = &db.tls_ca {
            command.env("DATABASE_TLS_CA_FILE", ca);
        }
        let out = command
            .env("DATABASE_URL", db.service_url())
            .env("DATABASE_MIGRATION_URL", db.migration_url())
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

/// What a test asks of its platform. The gateway always runs; auth-service unless
/// [`Builder::services`] leaves it out; reports-service and analytics-service only when asked,
/// since most tests never reach them (their ports stay closed: the gateway reports them down in
/// `/ready` and answers their routes 503).
#[must_use]
pub struct Builder {
    tag: String,
    gateway_env: Vec<(String, String)>,
    auth_env: Vec<(String, String)>,
    services: Vec<Service>,
    service_env: Vec<(Service, String, String)>,
}

impl TestPlatform {
    /// A platform for one test; `tag` names its database (and so its Redis prefix).
    pub fn builder(tag: &str) -> Builder {
        Builder {
            tag: tag.to_owned(),
            gateway_env: Vec::new(),
            auth_env: Vec::new(),
            services: vec![Service::Auth],
            service_env: Vec::new(),
        }
    }
}

impl Builder {
    /// Variables for the gateway, after the relaxed test limits (so these win).
    pub fn gateway_env(mut self, env: &[(&str, &str)]) -> Self {
        self.gateway_env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Variables for auth-service.
    pub fn auth_env(mut self, env: &[(&str, &str)]) -> Self {
        self.auth_env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Variables for `service` (reports-service or analytics-service; auth-service has
    /// [`Builder::auth_env`]).
    pub fn service_env(mut self, service: Service, env: &[(&str, &str)]) -> Self {
        self.service_env
            .extend(env.iter().map(|(k, v)| (service, (*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Variables for reports-service (e.g. `FILE_STORE_URL` at a [`crate::moto::Moto`]: see
    /// `Moto::file_store_env`).
    pub fn reports_env(mut self, env: &[(String, String)]) -> Self {
        self.service_env
            .extend(env.iter().map(|(k, v)| (Service::Reports, k.clone(), v.clone())));
        self
    }

    /// The services started besides the gateway (default: auth-service alone).
    pub fn services(mut self, services: &[Service]) -> Self {
        self.services = services.to_vec();
        self
    }

    /// Every service: for tests that wait on the gateway's `/ready` saying `ready`.
    pub fn all_services(self) -> Self {
        self.services(&Service::ALL)
    }

    /// Starts the platform and waits until it is ready.
    pub async fn start(self) -> anyhow::Result<TestPlatform> {
        let redis_url = env_var("TEST_REDIS_URL")?;
        self.start_on(redis_url).await
    }

    /// The same, with the gateway and auth-service on a Redis of the test's own (to freeze,
    /// kill or restart); the `OwnRedis` starts it again.
    pub async fn start_on_own_redis(self) -> anyhow::Result<(OwnRedis, crate::devstack::Redis, TestPlatform)> {
        let own = OwnRedis::new(&self.tag)?;
        let redis = own.start()?;
        let platform = self.start_on(redis.url()).await?;
        Ok((own, redis, platform))
    }

    /// The same on a Redis of the test's own that speaks TLS only (`rediss://`, a certificate
    /// from the internal CA; the processes get `REDIS_TLS_CA_FILE`).
    pub async fn start_on_own_tls_redis(self) -> anyhow::Result<(OwnRedis, crate::devstack::Redis, TestPlatform)> {
        let own = OwnRedis::new(&self.tag)?;
        let redis = own.start_tls()?;
        let platform = self.start_on(redis.url()).await?;
        Ok((own, redis, platform))
    }

    async fn start_on(self, redis_url: String) -> anyhow::Result<TestPlatform> {
        let (database, admin_url, databases) = fresh_databases(&self.tag).await?;
        let started: Vec<ServiceDb> = databases
            .iter()
            .filter(|db| self.services.iter().any(|s| s.short_name() == db.service))
            .cloned()
            .collect();
        migrate(&started)?;
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
        let pairs = |own: &[(String, String)]| -> Vec<(String, String)> {
            own.iter()
                .cloned()
                .chain([("REDIS_KEY_PREFIX".to_owned(), redis_prefix.clone())])
                .collect()
        };
        let gateway_env: Vec<(String, String)> = relaxed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(pairs(&self.gateway_env))
            .collect();
        let auth_env = pairs(&self.auth_env);
        let (gateway_env, auth_env) = (borrowed(&gateway_env), borrowed(&auth_env));
        let options = StartOptions {
            services: self.services.clone(),
            person_env: None,
            service_env: self.service_env.clone(),
        };
        // A port picked free can still be taken by a parallel test before our process binds it;
        // such a start fails fast (the process exits), and another set of ports is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let spec = PlatformSpec {
                bin_dir: &bins,
                secrets: &secrets,
                databases: &databases,
                redis_url: &redis_url,
                ports: Ports::free()?,
                app_env: "test",
                log_format: "json",
                gateway_env: &gateway_env,
                auth_env: &auth_env,
            };
            let mut platform = Platform::start_with(&spec, &options)?;
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
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
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

    /// Starts (or starts again) the server, TLS only.
    pub fn start_tls(&self) -> anyhow::Result<crate::devstack::Redis> {
        crate::devstack::Redis::start_with(&self.dir, self.port, false, true)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
