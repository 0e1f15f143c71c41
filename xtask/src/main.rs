//! `cargo xtask up` runs the platform; `cargo xtask test` runs every test against real PostgreSQL
//! and Redis. See README.md.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use xtask::devstack::{self, Postgres, Redis};
use xtask::platform::{Platform, PlatformSpec, Ports};
use xtask::provision::{self, SERVICES};
use xtask::secrets::DevSecrets;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer and CI entry points")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and run the whole platform in the foreground (PostgreSQL and Redis included unless
    /// DATABASE_URL / REDIS_URL point at reachable servers). Ctrl-C stops everything.
    Up {
        /// Build and run optimised binaries (`cargo build --release`; slower to build, what
        /// a local load test or profile wants) instead of the debug ones.
        #[arg(long)]
        release: bool,
    },
    /// Benchmark release binaries under load (oha), beside nginx as the reference gateway, and
    /// print a Markdown report (also written under bench/results/). Installs oha (cargo), nginx
    /// and sqlite3 (Debian's packages) when missing.
    Bench {
        /// Seconds per load run (each scenario runs three times at full speed, then three
        /// rounds at half that rate: about 40 runs in all).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// CPUs for the load generator alone (e.g. `0` or `0-3`); PostgreSQL, Redis and the
        /// services get the others. Without it everything shares every CPU, and the scheduler's
        /// time slices show up in the tail latencies.
        #[arg(long, value_name = "CPU_LIST")]
        load_cpus: Option<String>,
        /// Run one part alone on the same stack: `uploads` (20 concurrent 10 MiB uploads, the
        /// memory of the gateway and reports-service over idle; about a minute after the build,
        /// `--seconds` unused), or `incidents` (issue 18's rows: list and nearby alerts at 1 000
        /// and 1 000 000 reports, creates against pgbench, and the uploads; about 10 minutes).
        #[arg(long, value_enum, value_name = "PART")]
        only: Option<xtask::bench::Only>,
    },
    /// Run every test of the workspace against throwaway PostgreSQL and Redis.
    Test {
        /// Arguments passed to `cargo nextest run` (or `cargo test`), e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any other thread starts: the benchmark's threads and processes inherit their CPUs.
    let placement = match &cli.command {
        Cmd::Bench { load_cpus, .. } => {
            match xtask::bench::Placement::new(load_cpus.as_deref()).and_then(|p| p.build_and_pin().map(|()| p)) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("xtask: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xtask: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Cmd::Up { release } => runtime.block_on(up(release)),
        Cmd::Test { args } => runtime.block_on(test(args)),
        Cmd::Bench { seconds, only, .. } => runtime.block_on(async {
            let placement = placement.context("placement is set for bench")?;
            let report = xtask::bench::run(seconds, &placement, only).await?;
            use std::io::Write as _;
            writeln!(std::io::stdout(), "{report}")?;
            Ok(ExitCode::SUCCESS)
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the platform's binaries; the folder they are in.
fn build_binaries(release: bool) -> anyhow::Result<std::path::PathBuf> {
    let mut args = vec!["build", "--workspace", "--bins"];
    if release {
        args.push("--release");
    }
    eprintln!("xtask: building the platform (cargo {})", args.join(" "));
    devstack::run(devstack::cargo().args(&args), "cargo build")?;
    let profile = if release { "release" } else { "debug" };
    Ok(xtask::workspace_root().join("target").join(profile))
}

/// A port kept in a file so the next run reuses it (and the URLs stay the same).
fn sticky_port(file: &std::path::Path) -> anyhow::Result<u16> {
    if let Some(port) = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        && !devstack::reachable("127.0.0.1", port)
    {
        return Ok(port);
    }
    let port = xtask::free_port()?;
    std::fs::write(file, port.to_string())?;
    Ok(port)
}

fn configured(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn url_reachable(url: &str) -> bool {
    let after = url.rsplit_once('@').map_or(url, |(_, h)| h);
    let after = after.split_once("://").map_or(after, |(_, h)| h);
    let hostport = after.split('/').next().unwrap_or_default();
    match hostport
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
    {
        Some((host, port)) => devstack::reachable(host, port),
        None => false,
    }
}

async fn up(release: bool) -> anyhow::Result<ExitCode> {
    let root = xtask::workspace_root();
    let stack_dir = root.join("target").join("devstack");
    std::fs::create_dir_all(&stack_dir)?;
    let secrets = DevSecrets::load_or_create(&stack_dir.join("secrets"))?;
    let bins = build_binaries(release)?;
    let started = Instant::now();

    // PostgreSQL: the configured one (must allow creating roles), or our own.
    let mut own_pg = None;
    let admin_url = match configured("DATABASE_URL").filter(|u| url_reachable(u)) {
        Some(url) => {
            eprintln!("xtask: using PostgreSQL from DATABASE_URL");
            url
        }
        None => {
            let port = sticky_port(&stack_dir.join("postgres.port"))?;
            let pg = Postgres::start(
                &stack_dir.join("postgres"),
                port,
                secrets.read("pg_superuser_password")?.trim(),
            )?;
            eprintln!("xtask: PostgreSQL on 127.0.0.1:{port} (data in target/devstack/postgres)");
            let url = pg.admin_url("postgres");
            own_pg = Some(pg);
            url
        }
    };
    let mut own_redis = None;
    let redis_url = match configured("REDIS_URL").filter(|u| url_reachable(u)) {
        Some(url) => url,
        None => {
            let port = sticky_port(&stack_dir.join("redis.port"))?;
            let redis = Redis::start(&stack_dir.join("redis"), port, true)?;
            eprintln!("xtask: Redis on 127.0.0.1:{port}");
            let url = redis.url();
            own_redis = Some(redis);
            url
        }
    };

    let database = "platform";
    let admin = provision::connect(&admin_url).await?;
    provision::create_database(&admin, database).await?;
    let db_admin_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => admin_url.clone(),
    };
    let (host, port) = {
        let after = db_admin_url.rsplit_once('@').map_or(db_admin_url.as_str(), |(_, h)| h);
        let hp = after.split('/').next().unwrap_or_default();
        let (h, p) = hp.rsplit_once(':').context("DATABASE_URL needs host:port")?;
        (h.to_owned(), p.parse::<u16>()?)
    };
    let mut databases = Vec::new();
    for service in SERVICES {
        let password = secrets.read(&format!("{service}_db_password"))?;
        databases.push(
            provision::provision_service(&db_admin_url, &host, port, database, "svc_", service, password.trim())
                .await?,
        );
    }
    xtask::testkit::migrate_with(&bins, &databases)?;

    // The person's own variables go on to every process (`LOG_LEVEL=debug cargo xtask up`), under
    // the ones `up` decides: ports, addresses, databases, Redis, secrets and APP_ENV.
    let options = xtask::platform::StartOptions {
        person_env: Some(std::env::vars().collect()),
        ..xtask::platform::StartOptions::default()
    };
    let mut platform = Platform::start_with(
        &PlatformSpec {
            bin_dir: &bins,
            secrets: &secrets,
            databases: &databases,
            redis_url: &redis_url,
            ports: Ports::DEFAULT,
            app_env: "development",
            log_format: "pretty",
            gateway_env: &[("ALLOWED_ORIGINS", "http://localhost:3000")],
            auth_env: &[],
        },
        &options,
    )?;
    eprintln!(
        "{}",
        xtask::platform::passed_on_line(platform.passed_on.iter().map(String::as_str))
    );
    let waited = platform.wait_ready(Duration::from_secs(60));
    if let Err(e) = waited {
        platform.stop();
        return Err(e);
    }
    let p = Ports::DEFAULT;
    eprintln!(
        "\nxtask: ready in {:.1} s (from start of PostgreSQL to gateway /ready)\n\
         \n  gateway   https://localhost:{}  (self-signed: target/devstack/secrets/tls.crt)\
         \n  metrics   http://127.0.0.1:{}/metrics  (services: :{} :{} :{})\
         \n  try       curl --cacert target/devstack/secrets/tls.crt https://localhost:{}/ready\
         \n\n  Ctrl-C stops everything.\n",
        started.elapsed().as_secs_f64(),
        p.gateway,
        p.gateway_admin,
        p.auth_admin,
        p.reports_admin,
        p.analytics_admin,
        p.gateway,
    );
    wait_for_stop().await;
    eprintln!("xtask: stopping the platform");
    let clean = platform.stop();
    drop(own_redis);
    drop(own_pg);
    eprintln!(
        "xtask: stopped{}",
        if clean { "" } else { " (some process had to be killed)" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn test(args: Vec<String>) -> anyhow::Result<ExitCode> {
    // The operators' files, with the real tools: on the whole suite (CI), or when asked for.
    if args.is_empty() || std::env::var_os("DEPLOY_CHECKS").is_some_and(|v| v == "1") {
        xtask::deploy_checks::run().context("checking deploy/ and docker-compose.yml")?;
    }
    let stack_dir = devstack::fresh_dir("test")?;
    build_binaries(false)?;
    let nextest = match devstack::cargo_program_or_install("cargo-nextest", "cargo-nextest", NEXTEST_VERSION) {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "xtask: cargo-nextest could not be installed ({e:#}); running the tests with cargo test instead, without nextest's profiles and test groups"
            );
            false
        }
    };
    let ci = on_ci(std::env::var("CI").ok().as_deref());

    let password = xtask::secrets::random_token();
    let pg = Postgres::start(&stack_dir.join("postgres"), xtask::free_port()?, &password)?;
    let redis = Redis::start(&stack_dir.join("redis"), xtask::free_port()?, false)?;
    eprintln!("xtask: test PostgreSQL on :{}, Redis on :{}", pg.port, redis.port);

    let status = devstack::cargo()
        .args(runner_args(nextest, ci, &args))
        .env("TEST_PG_URL", pg.admin_url("postgres"))
        .env("TEST_REDIS_URL", redis.url())
        .status()
        .context("running the test runner")?;
    drop(redis);
    pg.destroy();
    let _ = std::fs::remove_dir_all(&stack_dir);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The test runner's version, installed when missing, so that every machine (CI's first of all)
/// runs the suite with the same runner and the same reading of `.config/nextest.toml`.
const NEXTEST_VERSION: &str = "0.9.143";

/// Whether `CI` says we run on CI (`true`, as CI services set it, or `1`).
fn on_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// cargo's arguments for the whole suite: nextest, with its `ci` profile on CI (JUnit output,
/// slow-test timeouts; unless the user names a profile), or `cargo test` without it; then the
/// user's arguments.
fn runner_args(nextest: bool, ci: bool, user: &[String]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if nextest {
        args.extend(["nextest".into(), "run".into()]);
        let profile_given = user
            .iter()
            .any(|a| a == "--profile" || a == "-P" || a.starts_with("--profile="));
        if ci && !profile_given {
            args.extend(["--profile".into(), "ci".into()]);
        }
    } else {
        args.push("test".into());
    }
    args.extend(["--workspace".into(), "--no-fail-fast".into()]);
    args.extend(user.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::{on_ci, runner_args};

    fn args(nextest: bool, ci: bool, user: &[&str]) -> String {
        let user: Vec<String> = user.iter().map(|a| (*a).to_owned()).collect();
        runner_args(nextest, ci, &user).join(" ")
    }

    #[test]
    fn ci_runs_nextest_with_its_ci_profile() {
        assert_eq!(
            args(true, true, &["-E", "test(/login/)"]),
            "nextest run --profile ci --workspace --no-fail-fast -E test(/login/)"
        );
        assert_eq!(args(true, false, &[]), "nextest run --workspace --no-fail-fast");
        assert_eq!(
            args(true, true, &["--profile", "default"]),
            "nextest run --workspace --no-fail-fast --profile default",
            "a profile the user names wins"
        );
    }

    #[test]
    fn without_nextest_cargo_test_runs_the_same_suite() {
        assert_eq!(args(false, true, &["login"]), "test --workspace --no-fail-fast login");
        assert_eq!(args(false, false, &[]), "test --workspace --no-fail-fast");
    }

    #[test]
    fn ci_is_read_as_ci_services_set_it() {
        assert!(on_ci(Some("true")));
        assert!(on_ci(Some("TRUE")));
        assert!(on_ci(Some("1")));
        assert!(!on_ci(Some("false")));
        assert!(!on_ci(Some("")));
        assert!(!on_ci(None));
    }
}
