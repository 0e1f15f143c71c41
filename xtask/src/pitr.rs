//! Point-in-time recovery for the e2e drill (e2e `pitr`): a PostgreSQL of the test's own that
//! archives its WAL with exactly the settings docker-compose.yml gives the compose PostgreSQL
//! (its `-c` flags, read from there), the compose mounts mapped to the test's directories, and
//! the deploy/scripts run as the account PostgreSQL runs as.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::devstack::Postgres;

/// The compose PostgreSQL's server settings (`-c name=value` of its `command`) and mounts
/// (`source:target[:mode]` of its `volumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposePostgres {
    pub settings: Vec<(String, String)>,
    pub mounts: Vec<(String, String)>,
}

/// Reads service `postgres` of docker-compose.yml.
pub fn compose_postgres(compose: &str) -> anyhow::Result<ComposePostgres> {
    let doc: serde_yaml::Value = serde_yaml::from_str(compose).context("parsing docker-compose.yml")?;
    let svc = doc
        .get("services")
        .and_then(|s| s.get("postgres"))
        .context("docker-compose.yml has no service postgres")?;
    let command: Vec<&str> = svc
        .get("command")
        .and_then(|c| c.as_sequence())
        .context("service postgres has no command list")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let mut settings = Vec::new();
    let mut args = command.iter().skip(1);
    while let Some(arg) = args.next() {
        let setting = match *arg {
            "-c" => args.next().copied().context("-c without a setting")?,
            other => other.strip_prefix("-c").context("an argument other than -c")?,
        };
        let (name, value) = setting
            .split_once('=')
            .with_context(|| format!("-c {setting} has no ="))?;
        settings.push((name.to_owned(), value.to_owned()));
    }
    let mounts = svc
        .get("volumes")
        .and_then(|v| v.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter_map(|m| {
            let mut parts = m.splitn(3, ':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect();
    Ok(ComposePostgres { settings, mounts })
}

impl ComposePostgres {
    /// `path` inside the container as the test sees it: a bind mount (`./x`) is that file of the
    /// checkout, a named volume is `volumes/NAME` (made, and given to the postgres account).
    pub fn host_path(&self, path: &str, volumes: &Path) -> anyhow::Result<PathBuf> {
        let mut mounts: Vec<&(String, String)> = self.mounts.iter().collect();
        mounts.sort_by_key(|(_, target)| std::cmp::Reverse(target.len()));
        for (source, target) in mounts {
            let Some(rest) = path.strip_prefix(target.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                continue;
            }
            let base = match source.strip_prefix("./") {
                Some(file) => crate::workspace_root().join(file),
                None => {
                    let dir = volumes.join(source);
                    owned_by_postgres(&dir)?;
                    dir
                }
            };
            return Ok(PathBuf::from(format!("{}{rest}", base.display())));
        }
        bail!("{path} is on no mount of the compose postgres service")
    }

    /// The settings with every container path (a word starting with `/`) mapped by
    /// [`ComposePostgres::host_path`].
    pub fn host_settings(&self, volumes: &Path) -> anyhow::Result<Vec<(String, String)>> {
        self.settings
            .iter()
            .map(|(name, value)| {
                let words: anyhow::Result<Vec<String>> = value
                    .split(' ')
                    .map(|w| match w.starts_with('/') {
                        true => Ok(self.host_path(w, volumes)?.display().to_string()),
                        false => Ok(w.to_owned()),
                    })
                    .collect();
                Ok((name.clone(), words?.join(" ")))
            })
            .collect()
    }
}

/// Makes `dir` (and its parents) and, as root, gives it to the postgres account.
pub fn owned_by_postgres(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(user) = postgres_account()? {
        std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    Ok(())
}

/// The account PostgreSQL runs as when we are root ([`Postgres::start`] made it); none otherwise.
fn postgres_account() -> anyhow::Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    nix::unistd::User::from_name("postgres")?
        .context("no postgres account: start a Postgres first")
        .map(Some)
}

/// `sh deploy/scripts/{script}` as the account PostgreSQL runs as, with the PostgreSQL programs
/// first on PATH (Debian keeps them in a versioned directory).
pub fn script_as_postgres(script: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new("sh");
    cmd.arg(crate::workspace_root().join("deploy/scripts").join(script));
    let pg_bin = crate::devstack::find_program("pg_verifybackup").context("pg_verifybackup is not installed")?;
    let mut dirs = vec![pg_bin.parent().context("pg_verifybackup's directory")?.to_path_buf()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    cmd.env("PATH", std::env::join_paths(dirs)?);
    if let Some(user) = postgres_account()? {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).current_dir("/");
    }
    Ok(cmd)
}

/// Starts a cluster in `data_dir` (as [`Postgres::start`] does) with the compose PostgreSQL's
/// settings: set with ALTER SYSTEM (so a base backup carries them, as the compose command line
/// gives them to a restored cluster too), then the server restarted, since `archive_mode` and
/// `wal_level` take effect only at start.
pub async fn start_archiving(
    compose: &ComposePostgres,
    volumes: &Path,
    data_dir: &Path,
    port: u16,
    password: &str,
) -> anyhow::Result<Postgres> {
    let settings = compose.host_settings(volumes)?;
    let pg = Postgres::start(data_dir, port, password)?;
    {
        let admin = crate::provision::connect(&pg.admin_url("postgres")).await?;
        for (name, value) in &settings {
            anyhow::ensure!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "setting name {name}"
            );
            admin
                .batch_execute(&format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''")))
                .await
                .with_context(|| format!("ALTER SYSTEM SET {name}"))?;
        }
    }
    pg.stop();
    drop(pg);
    let pg = Postgres::start(data_dir, port, password)?;
    let admin = crate::provision::connect(&pg.admin_url("postgres")).await?;
    for (name, value) in &settings {
        let row = admin
            .query_one("SELECT setting FROM pg_settings WHERE name = $1", &[name])
            .await?;
        let now: String = row.get(0);
        anyhow::ensure!(&now == value, "{name} is {now:?} after the restart, not {value:?}");
    }
    Ok(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_postgres_archives_its_wal() {
        let compose = std::fs::read_to_string(crate::workspace_root().join("docker-compose.yml")).expect("compose");
        let pg = compose_postgres(&compose).expect("service postgres");
        let get = |name: &str| pg.settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("wal_level"), Some("replica"));
        assert_eq!(get("archive_mode"), Some("on"));
        assert!(get("archive_timeout").is_some_and(|t| t.parse::<u32>().is_ok_and(|s| s > 0 && s <= 300)));
        let command = get("archive_command").expect("archive_command");
        assert!(command.contains("%p") && command.contains("%f"), "{command}");
        let volumes = std::env::temp_dir().join(format!("pitr-unit-{}", std::process::id()));
        let mapped = pg.host_settings(&volumes).expect("every path is on a mount");
        let (_, command) = mapped
            .iter()
            .find(|(n, _)| n == "archive_command")
            .expect("archive_command");
        let script = command.split(' ').next().expect("program");
        assert!(
            script.ends_with("deploy/scripts/archive-wal.sh") && Path::new(script).is_file(),
            "{command}"
        );
        assert!(command.contains(&volumes.display().to_string()), "{command}");
        let _ = std::fs::remove_dir_all(&volumes);
    }

    #[test]
    fn paths_map_to_the_longest_mount() {
        let pg = ComposePostgres {
            settings: vec![("x".into(), "/a/b/c %f /a/bc".into())],
            mounts: vec![("vol".into(), "/a".into()), ("./deploy".into(), "/a/b".into())],
        };
        let volumes = std::env::temp_dir().join(format!("pitr-unit2-{}", std::process::id()));
        let mapped = pg.host_settings(&volumes).expect("mapped");
        let root = crate::workspace_root();
        assert_eq!(
            mapped[0].1,
            format!(
                "{}/c %f {}/bc",
                root.join("deploy").display(),
                volumes.join("vol").display()
            )
        );
        let _ = std::fs::remove_dir_all(&volumes);
        assert!(pg.host_path("/elsewhere", &volumes).is_err());
    }
}
