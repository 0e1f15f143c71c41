//! PostgreSQL and Redis for development and tests: use the configured ones when reachable, or
//! start our own throwaway servers on free loopback ports (installing the binaries when missing).
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` account.
//! Our PostgreSQL always offers TLS (a certificate from the internal CA, [`crate::certs`]); a
//! Redis of a test's own may speak TLS only.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Finds a program on PATH, in the system directories an unprivileged PATH often lacks (Debian
/// puts nginx in /usr/sbin), or (for PostgreSQL) in Debian's versioned directory.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    for dir in std::env::split_paths(&path).chain(system) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.components()
            .rev()
            .nth(2)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs a Debian package as root (or through passwordless sudo), or says how.
pub fn install_package(package: &str, program: &str) -> anyhow::Result<()> {
    if cfg!(target_os = "macos") {
        bail!(
            "{program} is not installed: run `brew install {}` and try again",
            match package {
                "postgresql" => "postgresql@15",
                "redis-server" => "redis",
                other => other,
            }
        );
    }
    let apt = find_program("apt-get").context(format!(
        "{program} is not installed and apt-get is not available: install {package}"
    ))?;
    let sudo = if is_root() {
        None
    } else {
        Some(find_program("sudo").context(format!(
            "{program} is not installed: run `sudo apt-get install -y {package}`"
        ))?)
    };
    eprintln!("xtask: {program} not found; installing the {package} package");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = match &sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("-n").arg(&apt);
                c
            }
            None => Command::new(&apt),
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null());
        let status = cmd.status().context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed; install {package} by hand", args.join(" "));
        }
        Ok(())
    };
    run(&["update", "-q"])?;
    run(&["install", "-y", "-q", "--no-install-recommends", package])?;
    Ok(())
}

pub fn program_or_install(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = find_program(name) {
        return Ok(p);
    }
    install_package(package, name)?;
    find_program(name).with_context(|| format!("{name} is still missing after installing {package}"))
}

/// This process's own empty directory under target/devstack, `{purpose}-{pid}`: the throwaway
/// servers and secrets of one `cargo xtask test` or `bench` live there.
pub fn fresh_dir(purpose: &str) -> std::io::Result<PathBuf> {
    let dir = crate::workspace_root()
        .join("target")
        .join("devstack")
        .join(format!("{purpose}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether something accepts TCP connections on `host:port` right now.
pub fn reachable(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs as _;
    let Ok(mut addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// The unprivileged account PostgreSQL runs as when we are root.
fn postgres_account() -> anyhow::Result<nix::unistd::User> {
    if let Some(user) = nix::unistd::User::from_name("postgres")? {
        return Ok(user);
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "postgres",
        ])
        .status()
        .context("creating the postgres account (useradd)")?;
    if !status.success() {
        bail!("could not create the unprivileged `postgres` account PostgreSQL needs when run as root");
    }
    nix::unistd::User::from_name("postgres")?.context("the postgres account is missing after useradd")
}

/// Whether every ancestor of `dir` lets other users through (needed for the postgres account).
fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().skip(1).all(|a| {
        fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// The name of our PostgreSQL's certificate (and of its files in the data directory): a server
/// that shows it in `ssl_cert_file` is ours, so the internal CA verifies it.
pub const PG_CERT_NAME: &str = "platform-internal-postgres";

/// A PostgreSQL cluster we started; stopped on drop.
pub struct Postgres {
    pub port: u16,
    pub superuser_password: String,
    data_dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<nix::unistd::User>,
}

impl Postgres {
    /// The superuser's URL for `database`.
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.superuser_password, self.port
        )
    }

    /// The postmaster's process id, from its pid file (every backend is its child).
    pub fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts (initialising on first use) a cluster in `data_dir` on `port`.
    pub fn start(data_dir: &Path, port: u16, superuser_password: &str) -> anyhow::Result<Self> {
        let initdb = program_or_install("initdb", "postgresql")?;
        let pg_ctl = find_program("pg_ctl").context("pg_ctl is missing next to initdb")?;
        let run_as = if is_root() { Some(postgres_account()?) } else { None };
        let mut data_dir = data_dir.to_path_buf();
        if run_as.is_some() && !traversable_by_others(&data_dir) {
            // The postgres account cannot reach a directory under a private home; keep the cluster
            // where it can, named after this checkout so it is still reused.
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data_dir.hash(&mut h);
            data_dir = PathBuf::from(format!("/var/tmp/devstack-pg-{:016x}", h.finish()));
        }
        let fresh = !data_dir.join("PG_VERSION").exists();
        if fresh {
            fs::create_dir_all(&data_dir)?;
            let pwfile = data_dir.with_extension("pwfile");
            fs::write(&pwfile, superuser_password)?;
            if let Some(user) = &run_as {
                for p in [&data_dir, &pwfile] {
                    std::os::unix::fs::chown(p.as_path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
                }
            }
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
            let out = as_user(Command::new(&initdb), run_as.as_ref())
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output()
                .context("running initdb")?;
            let _ = fs::remove_file(&pwfile);
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        // TLS offered to every client, with a certificate the services verify (sslmode=verify-full).
        let issued = crate::certs::InternalCa::shared()?.issue(PG_CERT_NAME, &data_dir)?;
        if let Some(user) = &run_as {
            for p in [&issued.cert, &issued.key] {
                std::os::unix::fs::chown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            }
        }
        let log = data_dir.join("server.log");
        let out = as_user(Command::new(&pg_ctl), run_as.as_ref())
            .arg("-D")
            .arg(&data_dir)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=300 -c fsync=off \
                 -c ssl=on -c ssl_cert_file={PG_CERT_NAME}.crt -c ssl_key_file={PG_CERT_NAME}.key"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            bail!(
                "PostgreSQL did not start on port {port}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(Self {
            port,
            superuser_password: superuser_password.to_owned(),
            data_dir,
            pg_ctl,
            run_as,
        })
    }

    pub fn stop(&self) {
        let _ = as_user(Command::new(&self.pg_ctl), self.run_as.as_ref())
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the server and deletes its data (tests).
    pub fn destroy(self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_user(mut cmd: Command, user: Option<&nix::unistd::User>) -> Command {
    if let Some(user) = user {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).current_dir("/");
    }
    cmd
}

/// A Redis server we started; stopped on drop.
pub struct Redis {
    pub port: u16,
    /// Whether it speaks TLS only (`rediss://`).
    pub tls: bool,
    child: Child,
}

impl Redis {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `port`; `dir` keeps its snapshot when `persist`.
    pub fn start(dir: &Path, port: u16, persist: bool) -> anyhow::Result<Self> {
        Self::start_with(dir, port, persist, false)
    }

    /// The same, speaking TLS only when `tls` (`--tls-port` and `--port 0`; Debian's redis-server
    /// is built with TLS), with a certificate from the internal CA.
    pub fn start_with(dir: &Path, port: u16, persist: bool, tls: bool) -> anyhow::Result<Self> {
        let bin = program_or_install("redis-server", "redis-server")?;
        fs::create_dir_all(dir)?;
        let mut cmd = Command::new(bin);
        if tls {
            let ca = crate::certs::InternalCa::shared()?;
            let issued = ca.issue("redis", dir)?;
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&issued.cert)
                .arg("--tls-key-file")
                .arg(&issued.key)
                .arg("--tls-ca-cert-file")
                .arg(ca.cert_path())
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--protected-mode", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if persist {
            cmd.args(["--save", "60 1"]);
        } else {
            cmd.args(["--save", ""]);
        }
        let child = cmd.spawn().context("starting redis-server")?;
        let mut redis = Self { port, tls, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !redis.pings() {
            if let Some(status) = redis.child.try_wait()? {
                bail!("redis-server exited at start ({status}); is port {port} taken?");
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// PING in the clear; over TLS, that the port accepts connections (Redis opens it once
    /// ready to serve).
    fn pings(&self) -> bool {
        if self.tls {
            reachable("127.0.0.1", self.port)
        } else {
            redis_ping("127.0.0.1", self.port)
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Whether a Redis server answers PING (RESP, no client library needed).
pub fn redis_ping(host: &str, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Asks a server we started to stop (SIGTERM) and waits until it has.
pub fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    // A process a test froze (SIGSTOP) and left frozen by failing would never act on SIGTERM,
    // and the wait below would hang the test run instead of reporting the failure.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    let _ = child.wait();
}

/// `cargo` from the environment cargo gave us, without the variables `cargo run` set for xtask
/// itself (its package's name, version and folder). Build scripts such as ring's rerun when those
/// change (`rerun-if-env-changed`), so a build inside `cargo xtask` saw other values than one from
/// the shell and each rebuilt ring and everything above it after the other.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsStr::new("cargo").to_owned()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Whether `name` is one of the variables cargo sets for the program it runs (not a setting of
/// the user's, such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
        )
}

/// Runs `cmd` with the terminal's output and fails unless it succeeds; `what` names it in errors.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

/// Runs `cmd` and hands back its standard output, or fails with its standard error.
pub fn output(cmd: &mut Command, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// Where `cargo install` puts programs: `$CARGO_HOME/bin`, by default `~/.cargo/bin`.
fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home).join("bin"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cargo")
            .join("bin"),
    }
}

/// A developer tool published as a crate (the load generator, the test runner): the one on PATH
/// or in cargo's bin directory, else `cargo install --locked` of `version`. One version, so that
/// every machine measures and tests with the same tool.
pub fn cargo_program_or_install(program: &str, krate: &str, version: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = find_program(program) {
        return Ok(p);
    }
    let installed = cargo_bin_dir().join(program);
    if installed.is_file() {
        return Ok(installed);
    }
    let install = format!("cargo install {krate} --locked --version {version}");
    eprintln!("xtask: {program} not found; installing it ({install})");
    run(
        cargo().args(["install", krate, "--locked", "--version", version]),
        &install,
    )?;
    anyhow::ensure!(installed.is_file(), "{install} did not leave {}", installed.display());
    Ok(installed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_cargo_keeps_the_user_s_settings_and_drops_what_cargo_run_set_for_xtask() {
        for set in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "OUT_DIR",
        ] {
            assert!(super::set_by_cargo_run(set), "{set}");
        }
        for kept in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!super::set_by_cargo_run(kept), "{kept}");
        }
    }
}
