//! Operator commands: `grant-role`, `revoke-role` and `import-users` (accounts from the old Node
//! system, with their bcrypt hashes). They run against the service's own database with the same
//! configuration as `serve`, e.g. as a Kubernetes Job or `kubectl exec`.

use std::io::{BufRead as _, Write as _};

use anyhow::{Context as _, bail};
use clap::{Arg, Command};
use serde::Deserialize;
use service_kit::db::Pool;
use service_kit::service::OperatorCommand;

use crate::domain::{Actor, Email, NewUser, PersonName};
use crate::revocation::{revocation_pipe, write_pipe};
use crate::store::{self, StoreError, Transaction as _};

const ROLES: [&str; 2] = ["moderator", "admin"];

pub fn commands() -> Vec<Command> {
    let email = Arg::new("email")
        .long("email")
        .required(true)
        .help("The account's e-mail address");
    let role = Arg::new("role")
        .long("role")
        .required(true)
        .value_parser(ROLES)
        .help("The role");
    vec![
        Command::new("grant-role").about("Give an account the moderator or admin role").arg(email.clone()).arg(role.clone()),
        Command::new("revoke-role")
            .about("Take a role away; the account's sessions end so no token keeps the old role")
            .arg(email)
            .arg(role),
        Command::new("import-users")
            .about("Import accounts from the old Node system (JSON lines with bcrypt hashes); existing e-mails are skipped")
            .arg(Arg::new("file").required(true).help("FILE.jsonl: {email, password_hash, first_name, last_name, income_tier?, email_verified?} per line")),
    ]
}

/// Where revocations go: `REDIS_URL`, `REDIS_TLS_CA_FILE` and the key prefix.
type RedisTarget = (
    secrecy::SecretString,
    Option<std::path::PathBuf>,
    service_kit::revocation::RedisKeys,
);

pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand { name, args, pool, env } = command;
    let arg = |n: &str| args.get_one::<String>(n).cloned().unwrap_or_default();
    let redis_url = env.optional_secret("REDIS_URL");
    let redis_ca = service_kit::redis::tls_ca_file(&env);
    let keys = service_kit::revocation::RedisKeys::from_env(&env);
    drop(env);
    match name.as_str() {
        "grant-role" => change_role(&pool, &arg("email"), &arg("role"), true, None).await,
        "revoke-role" => {
            change_role(
                &pool,
                &arg("email"),
                &arg("role"),
                false,
                redis_url.map(|u| (u, redis_ca, keys)),
            )
            .await
        }
        "import-users" => import(&pool, &arg("file")).await,
        other => bail!("unknown command {other}"),
    }
}

fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn change_role(
    pool: &Pool,
    email: &str,
    role: &str,
    grant: bool,
    redis: Option<RedisTarget>,
) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {}", e.issue))?;
    let role = role.to_owned();
    let mut conn = pool.get().await.context("connecting to the database")?;
    let user = store::user_by_email(&mut conn, email.as_str())
        .await?
        .with_context(|| format!("no account with e-mail {}", email.as_str()))?;
    if user.roles.contains(&role) == grant {
        say(&format!(
            "{} already {} {role}; nothing changed",
            email.as_str(),
            if grant { "has" } else { "lacks" }
        ));
        return Ok(());
    }
    let mut roles = user.roles.clone();
    if grant {
        roles.push(role.clone());
    } else {
        roles.retain(|r| r != &role);
    }
    let user_id = user.id;
    let (action, event) = if grant {
        ("user.role_grant", "role_granted")
    } else {
        ("user.role_revoke", "role_revoked")
    };
    let ended = conn
        .transaction::<_, StoreError, _>(async move |conn| {
            store::set_roles(conn, user_id, &roles).await?;
            let details = serde_json::json!({"role": role, "granted": grant, "by": "operator"});
            store::security_event(conn, Some(user_id), "role_changed", "high", None, details).await?;
            store::audit(
                conn,
                &Actor::default(),
                action,
                "user",
                Some(user_id.to_string()),
                &["roles"],
            )
            .await?;
            // A revoked role must not live on in tokens issued before.
            if grant {
                Ok(Vec::new())
            } else {
                store::revoke_sessions(conn, user_id, None, None, "role_revoked").await
            }
        })
        .await?;
    tracing::warn!(user_id = %user_id, event_type = "role_changed", action = event, "role changed by an operator");
    if !ended.is_empty() {
        revoke_sessions_in_redis(redis, &ended).await?;
    }
    say(&format!(
        "{}: {event}; {} session(s) ended",
        email.as_str(),
        ended.len()
    ));
    Ok(())
}

async fn revoke_sessions_in_redis(
    redis: Option<RedisTarget>,
    sessions: &[crate::domain::SessionId],
) -> anyhow::Result<()> {
    let (url, ca, keys) = redis.context("REDIS_URL is needed to cut off the account's current tokens")?;
    let pool = service_kit::redis::pool(&url, ca.as_deref())?;
    // Longest access-token lifetime allowed by configuration (JWT_EXPIRATION ≤ 1 day).
    let pipe = revocation_pipe(&keys, None, sessions, 86_460);
    write_pipe(&pool, &pipe).await.context("writing revocations to Redis")?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedUser {
    email: String,
    password_hash: String,
    first_name: String,
    last_name: String,
    #[serde(default)]
    income_tier: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

async fn import(pool: &Pool, path: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let (mut imported, mut existing, mut invalid) = (0usize, 0usize, 0usize);
    let mut conn = pool.get().await.context("connecting to the database")?;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = match parse_record(&line) {
            Ok(r) => r,
            Err(why) => {
                // Never print the line: it holds a password hash.
                say(&format!("line {}: skipped, {why}", n + 1));
                invalid += 1;
                continue;
            }
        };
        let result = conn
            .transaction::<_, StoreError, _>(async |conn| {
                let new = NewUser {
                    email: &record.0,
                    password_hash: &record.1,
                    first_name: &record.2,
                    last_name: &record.3,
                    income_tier: record.4,
                };
                let user = store::insert_user(conn, new).await?;
                if record.5 {
                    store::mark_email_verified(conn, user.id).await?;
                }
                store::audit(
                    conn,
                    &Actor::default(),
                    "user.import",
                    "user",
                    Some(user.id.to_string()),
                    &["email"],
                )
                .await?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => imported += 1,
            Err(e) if e.is_conflict_on(store::EMAIL_TAKEN) => existing += 1,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("importing line {}", n + 1))),
        }
    }
    say(&format!(
        "imported {imported}, already present {existing}, invalid {invalid}"
    ));
    tracing::info!(imported, existing, invalid, "users imported");
    Ok(())
}

type Record = (Email, String, PersonName, PersonName, Option<&'static str>, bool);

fn parse_record(line: &str) -> Result<Record, String> {
    let u: ImportedUser =
        serde_json::from_str(line).map_err(|e| format!("not a valid record ({})", e.classify_name()))?;
    let email = Email::parse(&u.email).map_err(|_| "invalid e-mail".to_owned())?;
    let hash_ok = ["$2a$", "$2b$", "$2y$", "$argon2id$"]
        .iter()
        .any(|p| u.password_hash.starts_with(p))
        && u.password_hash.len() <= 256;
    if !hash_ok {
        return Err("password_hash is neither bcrypt nor argon2id".to_owned());
    }
    let first = PersonName::parse(&u.first_name, "first_name").map_err(|e| format!("first_name {}", e.issue))?;
    let last = PersonName::parse(&u.last_name, "last_name").map_err(|e| format!("last_name {}", e.issue))?;
    let tier = crate::domain::income_tier(u.income_tier.as_deref().unwrap_or(""))
        .map_err(|e| format!("income_tier {}", e.issue))?;
    Ok((email, u.password_hash, first, last, tier, u.email_verified))
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "missing or unknown field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_record;

    #[test]
    fn records_are_validated_without_echoing_hashes() {
        let ok = r#"{"email":"a@example.org","password_hash":"$2b$12$abcdefghijklmnopqrstuv","first_name":"A","last_name":"B"}"#;
        assert!(parse_record(ok).is_ok());
        let md5 = r#"{"email":"a@example.org","password_hash":"5f4dcc3b5aa765d61d8327deb882cf99","first_name":"A","last_name":"B"}"#;
        let err = parse_record(md5).expect_err("not bcrypt");
        assert!(!err.contains("5f4dcc"), "{err}");
        assert!(parse_record(r#"{"email":"a@example.org"}"#).is_err());
        assert!(parse_record(r#"{"email":"x","password_hash":"$2b$1","first_name":"A","last_name":"B"}"#).is_err());
        let extra = r#"{"email":"a@example.org","password_hash":"$2b$12$x","first_name":"A","last_name":"B","roles":["admin"]}"#;
        assert!(parse_record(extra).is_err(), "a record cannot bring its own roles");
    }
}
