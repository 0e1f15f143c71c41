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
    /// `DATABASE_URL` (or `DATABASE_URL_FILE`): this service's runtime login role (owns nothing)
    /// and database, as the driver reads it (`sslmode=verify-*` become `require`; `tls` does the
    /// checks).
    pub url: SecretString,
    /// From `sslmode` and `DATABASE_TLS_CA_FILE` (PEM, the CA the server's certificate chains to).
    pub tls: DbTls,
    /// `DATABASE_MIGRATION_URL` (or `_FILE`): the schema owner's login, used only to run
    /// migrations (`migrate`, `MIGRATE_ON_START`); read like `DATABASE_URL`, with the same CA
    /// file. `None`: migrations use `DATABASE_URL` (one role for both; production should not).
    pub migration: Option<Login>,
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

/// A URL as the driver reads it and the TLS settings it connects with.
#[derive(Debug, Clone)]
pub struct Login {
    pub url: SecretString,
    pub tls: DbTls,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Option<Self> {
        let ca_file = env
            .optional_string("DATABASE_TLS_CA_FILE")
            .map(std::path::PathBuf::from);
        let url = env.secret("DATABASE_URL");
        let runtime = url
            .as_ref()
            .and_then(|u| login(env, "DATABASE_URL", u, ca_file.as_ref()));
        let migration = env
            .optional_secret("DATABASE_MIGRATION_URL")
            .and_then(|u| login(env, "DATABASE_MIGRATION_URL", &u, ca_file.as_ref()));
        let max_connections = env.int_in("DATABASE_MAX_CONNECTIONS", 10usize, 1, 1000);
        let timeout = env.millis_in("DATABASE_TIMEOUT_MS", 3000, 100, 60_000);
        let migrate_on_start = env.bool_or("MIGRATE_ON_START", false);
        let check_interval = env.millis_in("DATABASE_CHECK_INTERVAL_MS", 1000, 100, 60_000);
        url?;
        let Login { url, tls } = runtime?;
        Some(Self {
            url,
            tls,
            migration,
            max_connections,
            timeout,
            migrate_on_start,
            check_interval,
        })
    }

    /// The login migrations run with: the owner's, else the runtime one.
    pub fn migration_login(&self) -> Login {
        self.migration.clone().unwrap_or_else(|| Login {
            url: self.url.clone(),
            tls: self.tls.clone(),
        })
    }
}

/// Reads the URL in variable `name` with the shared `DATABASE_TLS_CA_FILE`; problems go to `env`.
fn login(env: &Env, name: &str, url: &SecretString, ca_file: Option<&std::path::PathBuf>) -> Option<Login> {
    let u = url.expose_secret();
    if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
        // Never echo the value: it holds a password.
        env.problem(name, "must be a postgres:// URL");
    }
    match SslMode::from_url(u) {
        None => {
            env.problem(
                name,
                "has an unknown sslmode (disable|prefer|require|verify-ca|verify-full)",
            );
            None
        }
        Some((SslMode::Plain | SslMode::Prefer, _)) if ca_file.is_some() => {
            env.problem(
                "DATABASE_TLS_CA_FILE",
                format!(
                    "is set but {name}'s sslmode checks no certificate: add sslmode=verify-full \
                     (disable, allow and prefer never use a CA file)"
                ),
            );
            None
        }
        Some((mode, rewritten)) => match DbTls::new(mode, ca_file) {
            Ok(tls) => Some(Login {
                url: SecretString::from(rewritten),
                tls,
            }),
            Err(e) => {
                env.problem("DATABASE_TLS_CA_FILE", format!("{e:#}"));
                None
            }
        },
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

/// Applies every pending migration as the schema's owner ([`DatabaseConfig::migration_login`]),
/// holding an advisory lock so that replicas started together with `MIGRATE_ON_START` take
/// turns. Returns the versions applied.
pub async fn run_migrations(
    database: &DatabaseConfig,
    schema: &'static str,
    migrations: EmbeddedMigrations,
) -> anyhow::Result<Vec<String>> {
    let login = database.migration_login();
    let mut conn = establish(login.url.expose_secret(), &login.tls)
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
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    let mut conn = harness.into_inner();
    // The owner's default privileges gave the runtime role writes on diesel's bookkeeping table
    // too; it reads it, never writes it (a forged row would make the next migrate skip one).
    diesel::sql_query(KEEP_BOOKKEEPING_OWN)
        .execute(&mut conn)
        .await
        .context("keeping the migration bookkeeping the owner's")?;
    Ok(applied)
}

/// Revokes writes on `__diesel_schema_migrations` from everyone but its owner (when the
/// migrating login owns it: with one role for both, there is no one else).
const KEEP_BOOKKEEPING_OWN: &str = "DO $$
DECLARE grantee_name name;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT g.rolname
        FROM pg_class c, aclexplode(c.relacl) a, pg_roles g
        WHERE c.oid = to_regclass('__diesel_schema_migrations') AND g.oid = a.grantee
          AND a.grantee <> c.relowner AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE')
          AND pg_has_role(current_user, c.relowner, 'USAGE')
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON __diesel_schema_migrations FROM %I', grantee_name);
    END LOOP;
END $$";

/// What the runtime login can do beyond reading and writing rows, by [`runtime_role_findings`].
#[derive(Debug, diesel::QueryableByName)]
struct RoleRights {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    superuser: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    bypass_rls: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    acts_as_schema_owner: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    owns_objects: bool,
}

impl RoleRights {
    /// One sentence per right the runtime login should not have.
    fn findings(&self, schema: &str) -> Vec<String> {
        let mut findings = Vec::new();
        if self.superuser {
            findings.push("is a superuser".to_owned());
        }
        if self.bypass_rls {
            findings.push("can bypass row-level security (BYPASSRLS)".to_owned());
        }
        if self.acts_as_schema_owner {
            findings.push(format!("owns schema {schema} (or is a member of its owner)"));
        }
        if self.owns_objects {
            findings.push(format!("owns objects in schema {schema}"));
        }
        findings
    }
}

/// What is wrong with `DATABASE_URL`'s role for serving: empty when it owns nothing in `schema`,
/// is no member of the owner, and neither is a superuser nor bypasses row-level security (each
/// of which turns the policies of every table off for it).
pub async fn runtime_role_findings(conn: &mut AsyncPgConnection, schema: &str) -> anyhow::Result<Vec<String>> {
    let rights: RoleRights = diesel::sql_query(
        "SELECT r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls,
                COALESCE(pg_has_role(current_user, n.nspowner, 'MEMBER'), false) AS acts_as_schema_owner,
                EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
                        AND pg_has_role(current_user, c.relowner, 'MEMBER')) AS owns_objects
         FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = $1
         WHERE r.rolname = current_user",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .get_result(conn)
    .await
    .context("reading the rights of DATABASE_URL's role")?;
    Ok(rights.findings(schema))
}

/// Whether the database answered `SELECT 1` within the timeout.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let check = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        crate::statement::statement("SELECT 1")
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
    crate::statement::statement("SELECT set_config('app.current_user_id', $1, true), set_config('app.role', $2, true)")
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

    #[test]
    fn migrations_use_the_owners_url_else_the_runtime_one() {
        let e = Env::from_map([
            ("DATABASE_URL", "postgres://svc_auth:r@db:5432/app"),
            ("DATABASE_MIGRATION_URL", "postgres://svc_auth_owner:o@db:5432/app"),
        ]);
        let config = DatabaseConfig::from_env(&e).expect("config");
        assert!(e.finish().is_ok());
        assert!(config.url.expose_secret().contains("svc_auth:"));
        assert!(config.migration_login().url.expose_secret().contains("svc_auth_owner:"));

        let e = Env::from_map([("DATABASE_URL", "postgres://svc_auth:r@db:5432/app")]);
        let config = DatabaseConfig::from_env(&e).expect("config");
        assert!(config.migration.is_none());
        assert!(config.migration_login().url.expose_secret().contains("svc_auth:"));
    }

    #[test]
    fn the_migration_url_is_checked_like_the_runtime_one_without_echoing_it() {
        let e = Env::from_map([
            ("DATABASE_URL", "postgres://u:p@db:5432/app?sslmode=verify-full"),
            ("DATABASE_MIGRATION_URL", "mysql://owner:hunter2@db/app"),
        ]);
        DatabaseConfig::from_env(&e);
        let err = e.finish().expect_err("a bad migration URL").to_string();
        assert!(
            err.contains("DATABASE_MIGRATION_URL must be a postgres:// URL"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        // The same CA file for both: a migration URL that would ignore it is refused too.
        let e = Env::from_map([
            ("DATABASE_URL", "postgres://u:p@db:5432/app?sslmode=verify-full"),
            ("DATABASE_MIGRATION_URL", "postgres://o:p@db:5432/app?sslmode=disable"),
            ("DATABASE_TLS_CA_FILE", "/etc/hosts"),
        ]);
        DatabaseConfig::from_env(&e);
        let err = e.finish().expect_err("a migration URL in the clear").to_string();
        assert!(
            err.contains("DATABASE_MIGRATION_URL's sslmode checks no certificate"),
            "{err}"
        );
    }

    #[test]
    fn every_right_beyond_rows_is_named() {
        let rights = |superuser, bypass_rls, acts_as_schema_owner, owns_objects| RoleRights {
            superuser,
            bypass_rls,
            acts_as_schema_owner,
            owns_objects,
        };
        assert!(rights(false, false, false, false).findings("auth").is_empty());
        assert_eq!(
            rights(true, true, true, true).findings("auth"),
            [
                "is a superuser",
                "can bypass row-level security (BYPASSRLS)",
                "owns schema auth (or is a member of its owner)",
                "owns objects in schema auth",
            ]
        );
    }
}
