//! PostgreSQL: the pool every service queries through (over TLS when `sslmode` asks, see
//! [`crate::pg_tls`]), embedded migrations, and a watcher that turns the process unready (and its
//! gRPC health NOT_SERVING) while the database is unreachable.

use std::time::Duration;

use anyhow::Context as _;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection as _, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::config::Env;
use crate::pg_tls::{DbTls, SslMode};

pub use diesel_async::pooled_connection::deadpool::Object as PooledConnection;
pub type Pool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL` (or `DATABASE_URL_FILE`): this service's own login role and database, as
    /// the driver reads it (`sslmode=verify-*` become `require`; `tls` does the checks).
    pub url: SecretString,
    /// From `sslmode` and `DATABASE_TLS_CA_FILE` (PEM, the CA the server's certificate chains to).
    pub tls: DbTls,
    /// `DATABASE_MAX_CONNECTIONS`, 1..=1000 (default 10).
    pub max_connections: usize,
    /// `DATABASE_TIMEOUT_MS`: how long to wait for a connection from the pool or a new one to open.
    pub timeout: Duration,
    /// `MIGRATE_ON_START`: run pending migrations before serving (default false; production runs
    /// `SERVICE migrate` as a Job instead).
    pub migrate_on_start: bool,
    /// `DATABASE_CHECK_INTERVAL_MS`: how often readiness pings the database.
    pub check_interval: Duration,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Option<Self> {
        let url = env.secret("DATABASE_URL");
        let ca_file = env
            .optional_string("DATABASE_TLS_CA_FILE")
            .map(std::path::PathBuf::from);
        let mut tls = DbTls::Plain;
        let mut driver_url = None;
        if let Some(url) = &url {
            let u = url.expose_secret();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                // Never echo the value: it holds a password.
                env.problem("DATABASE_URL", "must be a postgres:// URL");
            }
            match SslMode::from_url(u) {
                None => env.problem(
                    "DATABASE_URL",
                    "has an unknown sslmode (disable|prefer|require|verify-ca|verify-full)",
                ),
                Some((SslMode::Plain | SslMode::Prefer, _)) if ca_file.is_some() => env.problem(
                    "DATABASE_TLS_CA_FILE",
                    "is set but DATABASE_URL's sslmode checks no certificate: add sslmode=verify-full \
                     (disable, allow and prefer never use a CA file)",
                ),
                Some((mode, rewritten)) => {
                    match DbTls::new(mode, ca_file.as_ref()) {
                        Ok(t) => tls = t,
                        Err(e) => env.problem("DATABASE_TLS_CA_FILE", format!("{e:#}")),
                    }
                    driver_url = Some(SecretString::from(rewritten));
                }
            }
        }
        let max_connections = env.int_in("DATABASE_MAX_CONNECTIONS", 10usize, 1, 1000);
        let timeout = env.millis_in("DATABASE_TIMEOUT_MS", 3000, 100, 60_000);
        let migrate_on_start = env.bool_or("MIGRATE_ON_START", false);
        let check_interval = env.millis_in("DATABASE_CHECK_INTERVAL_MS", 1000, 100, 60_000);
        url?;
        Some(Self {
            url: driver_url?,
            tls,
            max_connections,
            timeout,
            migrate_on_start,
            check_interval,
        })
    }
}

/// Builds the pool; no connection is opened until first use, so a process starts (unready) while
/// its database is down and becomes ready when the database appears.
pub fn build_pool(config: &DatabaseConfig) -> anyhow::Result<Pool> {
    let mut manager_config = ManagerConfig::default();
    // No test query before each checkout (`Verified` doubles the round trips of every use case).
    // Stale connections are kept out instead by `watch_database`: it drops connections idle for
    // `MAX_IDLE`, and every idle one when the database comes back after an outage.
    manager_config.recycling_method = RecyclingMethod::Fast;
    let tls = config.tls.clone();
    manager_config.custom_setup = Box::new(move |url| {
        let tls = tls.clone();
        let url = url.to_owned();
        Box::pin(async move { establish(&url, &tls).await })
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(config.url.expose_secret(), manager_config);
    Pool::builder(manager)
        .max_size(config.max_connections)
        // The most recently used connection first: at moderate load a few warm PostgreSQL
        // backends serve every query (fewer processes to wake), and the rest stay idle long
        // enough for `watch_database` to close them.
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
        .build()
        .context("building the database pool")
}

/// One connection, over TLS when `tls` says.
pub async fn establish(url: &str, tls: &DbTls) -> diesel::ConnectionResult<AsyncPgConnection> {
    let bad = |e: tokio_postgres::Error| diesel::ConnectionError::BadConnection(e.to_string());
    match tls {
        DbTls::Plain => AsyncPgConnection::establish(url).await,
        DbTls::Rustls(make) => {
            let (client, connection) = tokio_postgres::connect(url, make.clone()).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        }
    }
}

/// Applies every pending migration, holding an advisory lock so that replicas started together
/// with `MIGRATE_ON_START` take turns. Returns the versions applied.
pub async fn run_migrations(
    database: &DatabaseConfig,
    schema: &'static str,
    migrations: EmbeddedMigrations,
) -> anyhow::Result<Vec<String>> {
    let mut conn = establish(database.url.expose_secret(), &database.tls)
        .await
        .context("connecting to the database to migrate")?;
    // Session-level lock, released when this connection closes.
    diesel::sql_query("SELECT pg_advisory_lock(7262051771)")
        .execute(&mut conn)
        .await
        .context("taking the migration lock")?;
    // Diesel's own bookkeeping table lands in the service's schema too, never in `public`.
    // `schema` is a compile-time identifier of the service, not input.
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("selecting schema {schema} (does it exist and belong to this role?)"))?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(migrations)
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(applied.into_iter().map(|v| v.to_string()).collect())
}

/// Whether the database answered `SELECT 1` within the timeout.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let check = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Pooled connections unused for this long are closed (a firewall or the server may have dropped
/// them meanwhile).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Pings the database every `interval`; the receiver holds whether it is reachable. Transitions are
/// logged once (with the cause), not on every failed ping.
pub fn watch_database(pool: Pool, config: &DatabaseConfig, up_gauge: prometheus::IntGauge) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (interval, timeout) = (config.check_interval, config.timeout);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            ticker.tick().await;
            let result = ping(&pool, timeout).await;
            let up = result.is_ok();
            up_gauge.set(i64::from(up));
            let changed = *tx.borrow() != up;
            if changed || first {
                match &result {
                    Ok(()) => tracing::info!("database reachable; ready"),
                    Err(cause) => {
                        tracing::error!(cause = %cause, "database unreachable; not ready until it answers")
                    }
                }
            }
            if changed && up && !first {
                let dropped = pool.retain(|_, _| false).removed.len();
                tracing::info!(dropped, "dropped pooled connections made before the outage");
            }
            pool.retain(|_, metrics| metrics.last_used() < MAX_IDLE);
            first = false;
            tx.send_if_modified(|current| std::mem::replace(current, up) != up);
            if tx.is_closed() {
                return; // nobody listens: the process is stopping
            }
        }
    });
    rx
}

/// Names who the current transaction acts for, as the row-level security policies of every
/// service's tables read it: `app.current_user_id` (a user id, or empty when the transaction acts
/// for no user) and `app.role` (`user`, `moderator`, `admin`, or a service's own name for work
/// that spans users, such as a key rotation or a relay). Both are `SET LOCAL`: they end with the
/// transaction, so a pooled connection never carries one caller's scope into the next.
///
/// Call it first inside `conn.transaction(..)`; outside a transaction it has no lasting effect.
pub async fn enter_scope(conn: &mut AsyncPgConnection, user_id: &str, role: &str) -> diesel::QueryResult<()> {
    use diesel::sql_types::Text;
    diesel::sql_query("SELECT set_config('app.current_user_id', $1, true), set_config('app.role', $2, true)")
        .bind::<Text, _>(user_id)
        .bind::<Text, _>(role)
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_with_a_plain_url_is_refused_not_ignored() {
        let e = Env::from_map([
            ("DATABASE_URL", "postgres://u:p@db:5432/app"),
            ("DATABASE_TLS_CA_FILE", "/etc/hosts"),
        ]);
        DatabaseConfig::from_env(&e);
        let err = e.finish().expect_err("a CA file the plain connection would never use");
        assert!(err.to_string().contains("DATABASE_TLS_CA_FILE"), "{err}");
        let e = Env::from_map([("DATABASE_URL", "postgres://u:p@db:5432/app")]);
        assert!(DatabaseConfig::from_env(&e).is_some());
        assert!(e.finish().is_ok());
    }
}
