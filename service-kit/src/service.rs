//! The life of a service binary: `serve` and `migrate` subcommands with `--help`, configuration
//! parsed once (a bad value stops the process with one line), telemetry, the database pool and its
//! readiness watcher, the admin port, and the gRPC server, all stopped together on SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use diesel_migrations::EmbeddedMigrations;
use prometheus::{IntGauge, Registry};
use serde_json::json;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::admin::{AdminServer, Readiness, ReadyReport};
use crate::config::{CommonConfig, Env};
use crate::db::{self, DatabaseConfig, Pool};
use crate::grpc::{GrpcServer, ServerSecurity};
use crate::metrics::GrpcMetrics;
use crate::shutdown::Shutdown;

/// What a service binary tells the shared runner about itself.
pub trait Service: 'static {
    /// Binary name, also the `service` field of every log line (e.g. `auth-service`).
    const NAME: &'static str;
    const ABOUT: &'static str;
    /// The PostgreSQL schema the service owns; migrations create everything in it.
    const SCHEMA: &'static str;
    const DEFAULT_GRPC_PORT: u16;
    const DEFAULT_ADMIN_PORT: u16;
    const MIGRATIONS: EmbeddedMigrations;
    /// Fully qualified gRPC service names whose health follows the database.
    const GRPC_SERVICES: &'static [&'static str];
    /// Encoded descriptor set served by gRPC reflection.
    const FILE_DESCRIPTOR_SET: &'static [u8];
    /// The service's own settings, beyond the shared ones.
    type Config: Send + 'static;
    /// `Some(producer)` when the service publishes domain events through `{SCHEMA}.outbox`
    /// (`service_kit::outbox`): `serve` runs the relay to analytics-service, and the binary gets
    /// the operator command `outbox-retry-dead`. The name is the envelopes' `producer`.
    const OUTBOX_PRODUCER: Option<&'static str> = None;
    /// The longest one call may run (the server's deadline; a caller's `grpc-timeout` may only
    /// shorten it). A minute, longer for a service that takes file uploads from phones.
    const MAX_CALL: std::time::Duration = std::time::Duration::from_secs(60);

    /// Parses the service's own settings; `common` tells the environment (production refuses
    /// development shortcuts).
    fn config(env: &Env, common: &CommonConfig) -> Option<Self::Config>;

    /// Operator commands beside `serve` and `migrate` (e.g. `grant-role`).
    fn extra_commands() -> Vec<clap::Command> {
        Vec::new()
    }

    /// Runs one of [`Service::extra_commands`] against the service's database.
    fn run_extra(command: OperatorCommand) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        async move { anyhow::bail!("unknown command {}", command.name) }
    }
    fn routes(config: Self::Config, pool: Pool, registry: &Registry) -> anyhow::Result<Routes>;
}

/// An operator command of [`Service::extra_commands`], as the command line gave it, with what it
/// runs against.
pub struct OperatorCommand {
    /// The subcommand's name (e.g. `grant-role`).
    pub name: String,
    pub args: clap::ArgMatches,
    /// The service's own database.
    pub pool: Pool,
    /// The process environment, for settings only some commands need.
    pub env: Env,
}

/// What the command line asked for.
enum Command {
    Serve,
    Migrate,
    Healthcheck,
    Extra(String, clap::ArgMatches),
}

fn command_line<S: Service>() -> Command {
    let matches = clap::Command::new(S::NAME)
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help("Configuration comes from environment variables; see README.md.")
        .subcommand(
            clap::Command::new("serve")
                .about("Serve gRPC and the admin port (/metrics, /health, /ready) until SIGTERM or Ctrl-C"),
        )
        .subcommand(
            clap::Command::new("migrate").about("Apply pending database migrations, print what was applied, and exit"),
        )
        .subcommand(healthcheck_command())
        .subcommands(S::extra_commands())
        .subcommands(S::OUTBOX_PRODUCER.map(|_| crate::outbox::retry_dead_command()))
        .get_matches();
    match matches.subcommand() {
        Some(("serve", _)) => Command::Serve,
        Some(("migrate", _)) => Command::Migrate,
        Some(("healthcheck", _)) => Command::Healthcheck,
        Some((name, args)) => Command::Extra(name.to_owned(), args.clone()),
        // `subcommand_required` makes clap exit with usage before this.
        None => Command::Serve,
    }
}

/// Settings every service shares.
pub struct ServiceSettings {
    pub common: CommonConfig,
    pub database: DatabaseConfig,
    /// `GRPC_HOST` (default 0.0.0.0 in production, loopback elsewhere) and `GRPC_PORT`.
    pub grpc_addr: SocketAddr,
    /// Read for `serve` only (`migrate` and operator commands speak no gRPC).
    pub grpc_security: Option<ServerSecurity>,
    /// The outbox relay's settings, for `serve` of a service that publishes events.
    pub outbox: Option<crate::outbox::RelayConfig>,
}

impl ServiceSettings {
    pub fn from_env<S: Service>(env: &Env, common: CommonConfig, serving: bool) -> Option<Self> {
        let default_host = default_grpc_host(common.environment);
        let grpc_addr = env.listen_addr_or("GRPC_HOST", "GRPC_PORT", default_host, S::DEFAULT_GRPC_PORT);
        let database = DatabaseConfig::from_env(env);
        let (grpc_security, outbox) = if serving {
            let tls = crate::grpc_tls::GrpcTls::from_env(env, common.environment);
            let allowed_clients = crate::grpc_tls::allowed_clients(env);
            let tls = tls?;
            let outbox = S::OUTBOX_PRODUCER.map(|_| crate::outbox::RelayConfig::from_env(env, &tls));
            (Some(ServerSecurity { tls, allowed_clients }), outbox)
        } else {
            (None, None)
        };
        Some(Self {
            common,
            database: database?,
            grpc_addr,
            grpc_security,
            outbox,
        })
    }
}

/// Where gRPC listens unless `GRPC_HOST` says: every interface in production (behind the
/// cluster's network policy), loopback elsewhere, so a laptop's services are not on the LAN.
pub fn default_grpc_host(environment: crate::config::Environment) -> std::net::IpAddr {
    if environment == crate::config::Environment::Production {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::LOCALHOST.into()
    }
}

/// The `main` of every service binary.
pub fn main<S: Service>() -> ExitCode {
    let command = command_line::<S>();
    let env = Env::from_process();
    let common = CommonConfig::from_env(&env, S::NAME, S::DEFAULT_ADMIN_PORT);
    if let Command::Healthcheck = command {
        return healthcheck(S::NAME, env, common.admin_addr);
    }
    let own = match command {
        Command::Serve => S::config(&env, &common),
        Command::Migrate | Command::Healthcheck | Command::Extra(..) => None,
    };
    let settings = ServiceSettings::from_env::<S>(&env, common, matches!(command, Command::Serve));
    if let Err(e) = env.finish() {
        eprintln!("{}: {e}", S::NAME);
        return ExitCode::from(2);
    }
    let Some(settings) = settings else {
        // finish() reported why; unreachable in practice.
        return ExitCode::from(2);
    };
    crate::telemetry::init(S::NAME, settings.common.environment, &settings.common.log);
    let runtime = match settings.common.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Migrate => migrate::<S>(&settings.database).await,
            Command::Extra(name, args) if name == crate::outbox::RETRY_DEAD_COMMAND => {
                let pool = db::build_pool(&settings.database)?;
                crate::outbox::retry_dead(&pool, S::SCHEMA, &args).await.map(|_| ())
            }
            Command::Healthcheck => Ok(()),
            Command::Extra(name, args) => {
                let pool = db::build_pool(&settings.database)?;
                S::run_extra(OperatorCommand {
                    name,
                    args,
                    pool,
                    env: Env::from_process(),
                })
                .await
            }
            Command::Serve => {
                let own = own.ok_or_else(|| anyhow::anyhow!("service configuration missing"))?;
                serve::<S>(settings, own, Shutdown::on_signals()).await
            }
        }
    });
    // The last batch of spans, when they are exported (bounded; nothing to do otherwise).
    crate::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<RoleRefused>() => {
            tracing::error!(error = format!("{e:#}"), "{} refuses to serve", S::NAME);
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{} stopped with an error", S::NAME);
            ExitCode::FAILURE
        }
    }
}

async fn migrate<S: Service>(database: &DatabaseConfig) -> anyhow::Result<()> {
    let applied = db::run_migrations(database, S::SCHEMA, S::MIGRATIONS).await?;
    if applied.is_empty() {
        tracing::info!("database schema is up to date; nothing applied");
    } else {
        tracing::info!(applied = ?applied, "applied {} migration(s)", applied.len());
    }
    Ok(())
}

/// Serves until `shutdown`; the database may be down at start (the process waits, unready).
pub async fn serve<S: Service>(settings: ServiceSettings, own: S::Config, shutdown: Shutdown) -> anyhow::Result<()> {
    if settings.database.migrate_on_start {
        migrate::<S>(&settings.database).await?;
    }
    let registry = crate::metrics::process_registry()?;
    let grpc_metrics = GrpcMetrics::register(&registry)?;
    let db_up = crate::metrics::register(
        &registry,
        IntGauge::new("database_up", "1 while the database answers readiness pings")?,
    )?;

    let pool = db::build_pool(&settings.database)?;
    crate::metrics::register_pool(&registry, "postgres", {
        let pool = pool.clone();
        move || {
            let s = pool.status();
            crate::metrics::PoolStatus::of_deadpool(s.max_size, s.size, s.available, s.waiting)
        }
    })?;
    if let Some(crate::grpc_tls::GrpcTls::Mutual(files)) = settings.grpc_security.as_ref().map(|s| &s.tls) {
        crate::metrics::register_certificate_expiry(&registry, vec![("grpc", files.cert_file.clone())])?;
    }
    let db_ready = db::watch_database(pool.clone(), &settings.database, db_up);
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(follow_database::<S>(
        db_ready.clone(),
        reporter.clone(),
        shutdown.clone(),
    ));

    let readiness: Readiness = {
        let db_ready = db_ready.clone();
        std::sync::Arc::new(move || {
            let up = *db_ready.borrow();
            Box::pin(async move {
                ReadyReport {
                    ready: up,
                    body: json!({"status": if up { "ready" } else { "not_ready" }, "checks": {"database": up}}),
                }
            })
        })
    };
    let admin = AdminServer::bind(settings.common.admin_addr, registry.clone(), readiness).await?;
    let grpc = GrpcServer::bind(settings.grpc_addr).await?;
    tracing::info!(
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        environment = settings.common.environment.as_str(),
        "{} listening", S::NAME
    );
    let role_check = check_runtime_role(pool.clone(), db_ready, S::SCHEMA, settings.common.environment);
    let relay = match (S::OUTBOX_PRODUCER, settings.outbox) {
        (Some(producer), Some(config)) => {
            let metrics = crate::outbox::RelayMetrics::register(&registry)?;
            let relay = crate::outbox::Relay::new(S::SCHEMA, producer, config, settings.database.clone(), metrics);
            Some(tokio::spawn(relay.run(shutdown.clone())))
        }
        _ => None,
    };
    let routes = S::routes(own, pool, &registry)?;
    let admin_task = tokio::spawn(admin.run(shutdown.clone()));
    let serving = grpc.run(
        routes,
        S::GRPC_SERVICES,
        health,
        S::FILE_DESCRIPTOR_SET,
        settings
            .grpc_security
            .ok_or_else(|| anyhow::anyhow!("gRPC settings are read for serve"))?,
        grpc_metrics,
        S::MAX_CALL,
        shutdown,
    );
    tokio::select! {
        served = serving => served?,
        Err(refused) = role_check => return Err(refused.into()),
    }
    admin_task.await??;
    if let Some(relay) = relay {
        relay.await??;
    }
    tracing::info!("{} stopped", S::NAME);
    Ok(())
}

/// `DATABASE_URL`'s role can do more than read and write rows (it owns the schema, or bypasses
/// row-level security): refused in production.
#[derive(Debug, thiserror::Error)]
#[error(
    "DATABASE_URL's role {}; serve with the service's runtime role, which owns nothing, and give \
     the owner's URL to migrations only (DATABASE_MIGRATION_URL; README, \"Production database\")",
    findings.join(", ")
)]
pub struct RoleRefused {
    pub findings: Vec<String>,
}

/// Checks `DATABASE_URL`'s role once the database first answers: what it may do beyond reading
/// and writing rows is refused in production and a warning elsewhere (where one role for both
/// is allowed for convenience). Resolves `Ok` once checked and allowed; until the check could
/// be asked, it asks again.
async fn check_runtime_role(
    pool: Pool,
    mut db_ready: tokio::sync::watch::Receiver<bool>,
    schema: &'static str,
    environment: crate::config::Environment,
) -> Result<(), RoleRefused> {
    loop {
        if db_ready.wait_for(|up| *up).await.is_err() {
            return std::future::pending().await;
        }
        let findings = match pool.get().await {
            Ok(mut conn) => db::runtime_role_findings(&mut conn, schema).await,
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        match findings {
            Ok(findings) if findings.is_empty() => {
                tracing::info!("DATABASE_URL's role reads and writes rows only");
                return Ok(());
            }
            Ok(findings) if environment == crate::config::Environment::Production => {
                return Err(RoleRefused { findings });
            }
            Ok(findings) => {
                tracing::warn!(
                    findings = findings.join(", "),
                    "DATABASE_URL's role can do more than read and write rows; production refuses this \
                     (use the runtime role, and DATABASE_MIGRATION_URL for migrations)"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot check DATABASE_URL's role yet; trying again"
                );
                // Asked again in a second (the loop first waits for the database to answer).
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Mirrors database reachability into gRPC health, and turns NOT_SERVING first thing on shutdown
/// so callers stop routing here before the listener closes.
async fn follow_database<S: Service>(
    mut db_ready: tokio::sync::watch::Receiver<bool>,
    reporter: tonic_health::server::HealthReporter,
    shutdown: Shutdown,
) {
    let set = |up: bool| {
        let reporter = reporter.clone();
        async move {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            for name in S::GRPC_SERVICES {
                reporter.set_service_status(*name, status).await;
            }
        }
    };
    let up = *db_ready.borrow();
    set(up).await;
    loop {
        tokio::select! {
            changed = db_ready.changed() => {
                if changed.is_err() { return; }
                let up = *db_ready.borrow_and_update();
                set(up).await;
            }
            () = shutdown.clone().wait() => {
                set(false).await;
                return;
            }
        }
    }
}

/// The `healthcheck` subcommand: a container's `HEALTHCHECK` runs the binary itself (the image
/// has no shell and no curl).
pub fn healthcheck_command() -> clap::Command {
    clap::Command::new("healthcheck").about(
        "GET /health on this process's admin port (ADMIN_HOST, METRICS_PORT); exit 0 when it answers 200, 1 otherwise",
    )
}

/// Runs `healthcheck`: one plain HTTP/1.0 GET of `/health` on the admin port (an unspecified
/// `ADMIN_HOST` is reached on loopback), 2 s at most. Exit 0 on 200, 1 otherwise, 2 on bad
/// configuration.
pub fn healthcheck(name: &str, env: Env, admin_addr: SocketAddr) -> ExitCode {
    use std::io::{Read as _, Write as _};
    if let Err(e) = env.finish() {
        eprintln!("{name}: {e}");
        return ExitCode::from(2);
    }
    let mut addr = admin_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = Vec::new();
        stream.take(64).read_to_end(&mut head)?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    })();
    match answer {
        Ok(head) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!(
                "{name}: /health on {addr} answered {:?}",
                head.lines().next().unwrap_or_default()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: /health on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;

    #[test]
    fn grpc_listens_on_loopback_outside_production() {
        assert!(default_grpc_host(Environment::Development).is_loopback());
        assert!(default_grpc_host(Environment::Test).is_loopback());
        assert!(default_grpc_host(Environment::Production).is_unspecified());
        let env = Env::from_map([("GRPC_HOST", "10.0.0.7")]);
        let addr = env.listen_addr_or(
            "GRPC_HOST",
            "GRPC_PORT",
            default_grpc_host(Environment::Development),
            50051,
        );
        assert_eq!(addr.to_string(), "10.0.0.7:50051", "GRPC_HOST wins");
    }
}
