//! Two login roles and one schema per service: an owner that runs migrations and a runtime role
//! that owns nothing, each service's with rights on its own schema only. The SQL is
//! `deploy/postgres/provision.sql`, the same file docker-compose's PostgreSQL init script runs
//! with psql (see README, "Production database").

use anyhow::Context as _;
use tokio_postgres::NoTls;

pub const SERVICES: [&str; 3] = ["auth", "reports", "analytics"];

/// The provisioning SQL, with psql variables (`:'name'`) for its inputs.
pub const PROVISION_SQL: &str = include_str!("../../deploy/postgres/provision.sql");

/// The variables [`PROVISION_SQL`] reads, as `psql -v name=value` sets them.
pub const PROVISION_VARIABLES: [&str; 4] = ["service", "role_prefix", "owner_password", "runtime_password"];

/// A service's two connection URLs.
#[derive(Debug, Clone)]
pub struct ServiceDb {
    pub service: &'static str,
    /// The runtime role (owns nothing; the service serves with it).
    pub role: String,
    /// The runtime role's URL as a plain client (tokio-postgres, psql) takes it.
    pub url: String,
    /// The schema owner's role (migrations only).
    pub owner_role: String,
    /// The owner's URL as a plain client takes it.
    pub owner_url: String,
    /// `DATABASE_TLS_CA_FILE` for [`ServiceDb::service_url`]: the internal CA's certificate, when
    /// the server is our own TLS PostgreSQL.
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ServiceDb {
    /// The service's `DATABASE_URL` (the runtime role): with `sslmode=verify-full` when
    /// [`ServiceDb::tls_ca`] is set.
    pub fn service_url(&self) -> String {
        self.with_tls(&self.url)
    }

    /// The service's `DATABASE_MIGRATION_URL` (the owner), with the same TLS settings.
    pub fn migration_url(&self) -> String {
        self.with_tls(&self.owner_url)
    }

    fn with_tls(&self, url: &str) -> String {
        match &self.tls_ca {
            Some(_) => format!("{url}?sslmode=verify-full"),
            None => url.to_owned(),
        }
    }
}

/// [`PROVISION_SQL`] with each `:'name'` replaced by `value` as a quoted literal, as psql does;
/// every variable of [`PROVISION_VARIABLES`] must be given, and no other.
pub fn render(values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut sql = PROVISION_SQL.to_owned();
    for name in PROVISION_VARIABLES {
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .with_context(|| format!("provisioning needs the variable {name}"))?;
        anyhow::ensure!(!value.contains('\0'), "{name} holds a NUL byte");
        sql = sql.replace(&format!(":'{name}'"), &format!("'{}'", value.replace('\'', "''")));
    }
    if let Some((name, _)) = values.iter().find(|(n, _)| !PROVISION_VARIABLES.contains(n)) {
        anyhow::bail!("provisioning has no variable {name}");
    }
    anyhow::ensure!(
        !sql.contains(":'") && !sql.contains(":\""),
        "deploy/postgres/provision.sql uses a psql variable xtask does not set"
    );
    Ok(sql)
}

/// The internal CA's certificate when the server offers TLS with the certificate
/// [`crate::devstack::Postgres`] gives it (a server of someone else's is used as it is).
async fn our_tls(client: &tokio_postgres::Client) -> anyhow::Result<Option<std::path::PathBuf>> {
    let ssl: String = client.query_one("SHOW ssl", &[]).await?.get(0);
    let cert: String = client.query_one("SHOW ssl_cert_file", &[]).await?.get(0);
    if ssl == "on" && cert.contains(crate::devstack::PG_CERT_NAME) {
        Ok(Some(crate::certs::InternalCa::shared()?.cert_path()))
    } else {
        Ok(None)
    }
}

/// Connects as the cluster's superuser.
pub async fn connect(admin_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .context("connecting to PostgreSQL as its superuser")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates `database` if missing.
pub async fn create_database(admin: &tokio_postgres::Client, database: &str) -> anyhow::Result<()> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .with_context(|| format!("creating database {database}"))?;
    }
    Ok(())
}

/// Runs [`PROVISION_SQL`] for `service` in `database` (through `admin_url_of_db`, a superuser's
/// URL of that database): roles `{role_prefix}{service}_owner` and `{role_prefix}{service}`
/// (the runtime role, with `password`), schema `{service}` owned by the owner. A database
/// provisioned before the split keeps its role as the runtime role; what it owned moves to the
/// owner. The owner gets a fresh random password on every call: xtask runs the migrations right
/// after, and nothing else logs in as the owner.
pub async fn provision_service(
    admin_url_of_db: &str,
    host: &str,
    port: u16,
    database: &str,
    role_prefix: &str,
    service: &'static str,
    password: &str,
) -> anyhow::Result<ServiceDb> {
    let owner_password = crate::secrets::random_token();
    let sql = render(&[
        ("service", service),
        ("role_prefix", role_prefix),
        ("owner_password", &owner_password),
        ("runtime_password", password),
    ])?;
    let client = connect(admin_url_of_db).await?;
    let messages = client
        .simple_query(&sql)
        .await
        .with_context(|| format!("provisioning roles and schema for {service}"))?;
    let (owner_role, role) = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((row.get("owner_role")?.to_owned(), row.get("runtime_role")?.to_owned()))
            }
            _ => None,
        })
        .context("provision.sql named no roles")?;
    let tls_ca = our_tls(&client).await?;
    let url = |role: &str, password: &str| format!("postgres://{role}:{password}@{host}:{port}/{database}");
    Ok(ServiceDb {
        service,
        url: url(&role, password),
        owner_url: url(&owner_role, &owner_password),
        role,
        owner_role,
        tls_ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_becomes_a_quoted_literal() {
        let sql = render(&[
            ("service", "auth"),
            ("role_prefix", "svc_"),
            ("owner_password", "o'wner"),
            ("runtime_password", ""),
        ])
        .expect("render");
        assert!(sql.contains("SET LOCAL provision.service = 'auth';"), "{sql}");
        assert!(sql.contains("SET LOCAL provision.owner_password = 'o''wner';"), "{sql}");
        assert!(sql.contains("SET LOCAL provision.runtime_password = '';"), "{sql}");
        assert!(!sql.contains(":'"));
    }

    #[test]
    fn a_missing_or_unknown_variable_is_refused() {
        let err = render(&[("service", "auth")]).expect_err("incomplete");
        assert!(err.to_string().contains("role_prefix"), "{err}");
        let err = render(&[
            ("service", "auth"),
            ("role_prefix", ""),
            ("owner_password", ""),
            ("runtime_password", ""),
            ("schema", "x"),
        ])
        .expect_err("unknown");
        assert!(err.to_string().contains("schema"), "{err}");
    }
}
