//! The stack under load: the release binaries twice, with the edge checks on and off, sharing one
//! PostgreSQL and one Redis like two replicas, and nginx as the reference gateway; each replica
//! with a session of its own for the protected routes. The incident rows add a third replica, like
//! the protected one but with reports-service on a database of its own (a table of another size).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::measure::Shared;
use super::placement::{Placement, cpus_of};
use crate::devstack::{self, Postgres, Redis};
use crate::nginx::Nginx;
use crate::platform::{Platform, PlatformSpec, Ports, Service, StartOptions};
use crate::provision::{self, SERVICES, ServiceDb};
use crate::secrets::DevSecrets;

/// The password of every account the benchmark registers.
pub(super) const PASSWORD: &str = "correct horse battery staple";
/// The account each replica registers for its session.
pub(super) const PROTECTED_ACCOUNT: &str = "bench-protected@example.org";
const CHECKS_OFF_ACCOUNT: &str = "bench-unprotected@example.org";
/// The account the second-table replica registers (it shares auth-service's database).
const SECOND_TABLE_ACCOUNT: &str = "bench-second-table@example.org";
/// The database of the second-table replica's reports-service.
const SECOND_TABLE_DATABASE: &str = "bench_second";

/// Policies are evaluated on every request but set high enough never to refuse: the cost of the
/// check is measured, not the refusals. A million per second, however long the runs: a million
/// per minute ran out after 20 s of /health at full speed and refused the next scenario.
const GATEWAY_ENV: [(&str, &str); 10] = [
    ("LOG_LEVEL", "warn"),
    ("RATE_LIMIT_MAX_REQUESTS", "1000000"),
    ("RATE_LIMIT_WINDOW", "1"),
    ("RATE_LIMIT_BURST", "1000000"),
    ("AUTH_RATE_LIMIT_MAX_REQUESTS", "1000000"),
    ("AUTH_RATE_LIMIT_WINDOW", "1"),
    ("AUTH_RATE_LIMIT_BURST", "1000000"),
    ("GLOBAL_RATE_LIMIT_MAX_REQUESTS", "1000000"),
    ("GLOBAL_RATE_LIMIT_WINDOW", "1"),
    ("GLOBAL_RATE_LIMIT_BURST", "1000000"),
];
/// The replica with the edge checks off, added to [`GATEWAY_ENV`].
const CHECKS_OFF_ENV: [(&str, &str); 2] = [("RATE_LIMIT_ENABLED", "false"), ("GATEWAY_VERIFY_TOKENS", "false")];

/// One platform of ours, its gateway's URL and a session's access token.
pub(super) struct Replica {
    pub(super) platform: Platform,
    pub(super) base: String,
    pub(super) token: String,
}

/// Everything the benchmark started. Dropped early (an error), it stops its processes; the
/// directory stays for a look.
pub(super) struct Stack {
    pub(super) protected: Replica,
    pub(super) checks_off: Replica,
    /// nginx, or why it could not start: without it the report still has our figures, and says
    /// why it lacks nginx's.
    pub(super) nginx: Result<Nginx, String>,
    pub(super) backing: Backing,
}

/// What outlives the gateways: PostgreSQL, Redis, the secrets and the directory they live in.
pub(super) struct Backing {
    redis: Redis,
    pg: Postgres,
    secrets: DevSecrets,
    /// Every service's roles and URLs in database `bench`.
    dbs: Vec<ServiceDb>,
    dir: PathBuf,
    bins: PathBuf,
}

impl Backing {
    /// The directory of this run's files.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate every gateway serves.
    pub(super) fn ca(&self) -> PathBuf {
        self.secrets.path("tls.crt")
    }

    /// The cluster's superuser in database `bench`: the seeding of `reports.reports` passes its
    /// row-level security, which the table forces on its owner too.
    pub(super) fn superuser_url(&self) -> String {
        self.pg.admin_url("bench")
    }

    /// The cluster's superuser in the second-table replica's database (see
    /// [`Stack::second_table_replica`]).
    pub(super) fn second_table_superuser_url(&self) -> String {
        self.pg.admin_url(SECOND_TABLE_DATABASE)
    }

    /// reports-service's roles and URLs.
    pub(super) fn reports_db(&self) -> anyhow::Result<&ServiceDb> {
        self.dbs
            .iter()
            .find(|db| db.service == "reports")
            .context("no reports database")
    }

    pub(super) fn shared(&self) -> Shared {
        Shared {
            redis: self.redis.pid(),
            postmaster: self.pg.postmaster_pid(),
        }
    }

    /// Stops PostgreSQL and Redis and deletes their data.
    pub(super) fn destroy(self) {
        drop(self.redis);
        self.pg.destroy();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stack {
    /// PostgreSQL and Redis with the services' databases migrated, nginx on the stack's CPUs (this
    /// thread's), and both replicas ready with a session each.
    pub(super) async fn start(placement: &Placement) -> anyhow::Result<Self> {
        let dir = devstack::fresh_dir("bench")?;
        let secrets = DevSecrets::load_or_create(&dir.join("secrets"))?;
        let pg = Postgres::start(
            &dir.join("postgres"),
            crate::free_port()?,
            &crate::secrets::random_token(),
        )?;
        let redis = Redis::start(&dir.join("redis"), crate::free_port()?, false)?;
        let bins = crate::workspace_root().join("target").join("release");
        let dbs = databases(&pg, &bins, "bench", "bench_", &SERVICES).await?;
        let nginx = Nginx::start(
            &dir.join("nginx"),
            crate::free_port()?,
            &secrets.path("tls.crt"),
            &secrets.path("tls.key"),
            cpus_of(&placement.stack).len(),
        )
        .inspect_err(|e| eprintln!("xtask: the nginx reference will not be measured: {e:#}"))
        .map_err(|e| format!("{e:#}"));
        let backing = Backing {
            redis,
            pg,
            secrets,
            dbs,
            dir,
            bins,
        };
        let threads = service_threads(cpus_of(&placement.stack).len());
        // Both replicas at once, so that their runs take turns and meet the same spells of the host.
        let protected = Replica::start(&backing, &backing.dbs, PROTECTED_ACCOUNT, &[], threads).await?;
        let checks_off = Replica::start(&backing, &backing.dbs, CHECKS_OFF_ACCOUNT, &CHECKS_OFF_ENV, threads).await?;
        Ok(Self {
            protected,
            checks_off,
            nginx,
            backing,
        })
    }

    /// A replica configured as the protected one, ready, whose reports-service serves a database
    /// of its own (`bench_second`, provisioned and migrated here; the other services share
    /// `bench`): the list and nearby rows hold their small table there and the large one in
    /// `bench`, so that the two sizes' rounds can take turns and meet the same spells of the host.
    /// The caller stops it.
    pub(super) async fn second_table_replica(&self, placement: &Placement) -> anyhow::Result<Replica> {
        let backing = &self.backing;
        let reports = databases(
            &backing.pg,
            &backing.bins,
            SECOND_TABLE_DATABASE,
            "bench_second_",
            &["reports"],
        )
        .await?;
        let dbs: Vec<ServiceDb> = backing
            .dbs
            .iter()
            .filter(|db| db.service != "reports")
            .cloned()
            .chain(reports)
            .collect();
        let threads = service_threads(cpus_of(&placement.stack).len());
        Replica::start(backing, &dbs, SECOND_TABLE_ACCOUNT, &[], threads).await
    }

    /// Stops both replicas and nginx; hands back what is left, and why nginx was not measured
    /// when it was not.
    pub(super) fn stop_gateways(self) -> (Backing, Option<String>) {
        let Self {
            mut protected,
            mut checks_off,
            nginx,
            backing,
        } = self;
        protected.platform.stop();
        checks_off.platform.stop();
        let reference_missing = nginx.err();
        (backing, reference_missing)
    }
}

/// `database` with the roles (named with `role_prefix`) and schema of each of `services`,
/// migrated by the release binaries in `bins`.
async fn databases(
    pg: &Postgres,
    bins: &Path,
    database: &str,
    role_prefix: &str,
    services: &[&'static str],
) -> anyhow::Result<Vec<ServiceDb>> {
    let admin = provision::connect(&pg.admin_url("postgres")).await?;
    provision::create_database(&admin, database).await?;
    let mut dbs = Vec::new();
    for service in services {
        let url = pg.admin_url(database);
        dbs.push(
            provision::provision_service(
                &url,
                "127.0.0.1",
                pg.port,
                database,
                role_prefix,
                service,
                &crate::secrets::random_token(),
            )
            .await?,
        );
    }
    for db in &dbs {
        devstack::output(
            Command::new(bins.join(format!("{}-service", db.service)))
                .arg("migrate")
                .env_clear()
                .env("DATABASE_URL", &db.url)
                .env("DATABASE_MIGRATION_URL", &db.owner_url)
                .env("LOG_FORMAT", "json"),
            &format!("migrate {}", db.service),
        )?;
    }
    Ok(dbs)
}

impl Replica {
    /// The platform from the release binaries on `dbs`, with [`GATEWAY_ENV`] and `extra`, ready,
    /// and a session of `account`.
    async fn start(
        backing: &Backing,
        dbs: &[ServiceDb],
        account: &str,
        extra: &[(&str, &str)],
        service_threads: usize,
    ) -> anyhow::Result<Self> {
        let gateway_env: Vec<(&str, &str)> = GATEWAY_ENV.iter().chain(extra).copied().collect();
        let options = StartOptions {
            service_env: Service::ALL
                .iter()
                .map(|s| (*s, "WORKER_THREADS".to_owned(), service_threads.to_string()))
                .collect(),
            ..StartOptions::default()
        };
        let mut platform = Platform::start_with(
            &PlatformSpec {
                bin_dir: &backing.bins,
                secrets: &backing.secrets,
                databases: dbs,
                redis_url: &backing.redis.url(),
                ports: Ports::free()?,
                app_env: "test",
                log_format: "json",
                gateway_env: &gateway_env,
                auth_env: &[
                    ("LOG_LEVEL", "warn"),
                    ("LOGIN_MAX_ATTEMPTS", "100"),
                    ("LOGIN_IP_MAX_FAILURES", "100000"),
                ],
            },
            &options,
        )?;
        platform.wait_ready(Duration::from_secs(60))?;
        let base = format!("https://localhost:{}", platform.ports.gateway);
        let token = session(&base, &backing.ca(), account).await?;
        Ok(Self { platform, base, token })
    }
}

/// `WORKER_THREADS` of each gRPC service on `stack_cpus` CPUs: a quarter of them, at least one.
/// The gateway, PostgreSQL and a service or two are busy at once on every request; a runtime
/// with a thread per CPU in each wakes threads that then wait for a CPU (on 2 shared cores,
/// one thread took reports-service's CPU per create from 236 to 178 µs).
pub(super) fn service_threads(stack_cpus: usize) -> usize {
    stack_cpus.div_ceil(4).max(1)
}

/// Registers `email` and hands back its access token.
pub(super) async fn session(base: &str, ca: &Path, email: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .build()?;
    let body = json!({"email": email, "password": PASSWORD, "first_name": "Bench", "last_name": "Mark", "device": {"device_id": "bench", "platform": "ios"}});
    let res = http.post(format!("{base}/v1/auth/register")).json(&body).send().await?;
    anyhow::ensure!(
        res.status().as_u16() == 201,
        "register for the benchmark: {}",
        res.status()
    );
    let v: Value = res.json().await?;
    v["tokens"]["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access token")
}
