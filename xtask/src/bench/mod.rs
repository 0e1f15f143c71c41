//! `cargo xtask bench`: release binaries, the whole stack, and a load generator (oha, installed
//! with `cargo install` at one version when missing) at a fixed rate with latency correction.
//! Prints a Markdown report (also written under bench/results/): per scenario requests/s at full
//! speed (median of three runs), then p50/p90/p99/max latency of the steady state in three rounds
//! at half that rate, errors and 429s, CPU seconds and peak RSS of each process; scenarios that are
//! compared take turns (our `/health` with nginx's as the reference gateway, protected `/v1/me`
//! with the edge checks off); then in-process figures for password hashing and token verification;
//! then the incident-report rows (creates against pgbench, the own-report list and nearby alerts at
//! a thousand and a million reports, and the memory of 20 concurrent 10 MiB uploads).
//! `--only uploads` runs the uploads' row alone on the same stack; `--only incidents` all of
//! issue 18's rows (list, nearby alerts, creates, uploads).
//!
//! [`run`] only orders the steps: `stack` starts what is loaded, `scenarios` says what to load,
//! `measure` runs and measures a group of scenarios, `in_process` times hashing and token
//! verification, `incidents` measures the incident-report rows (`incidents_sql` holds their SQL,
//! `uploads` measures the uploads' memory), and `report` renders the Markdown (`incidents_report`
//! its incident-report section).

mod in_process;
mod incidents;
mod incidents_report;
mod incidents_sql;
mod measure;
mod oha;
mod placement;
mod procfs;
mod report;
mod scenarios;
mod stack;
mod uploads;

use oha::Generator;
pub use placement::Placement;
use placement::{cpus_of, list, on_cpus};
use report::Report;
use scenarios::{FAILED_LOGIN_RATE, FAILED_LOGIN_SECONDS, FAILED_LOGINS, GROUPS};
use stack::Stack;

use crate::devstack;

/// Runs at half rate per scenario. The host's tail changes by a factor of several from one run to
/// the next, so one run tells little: the report gives the median round and the range.
const ROUNDS: usize = 3;

/// A part of the benchmark run alone (`--only`), on the same stack as in the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// 20 concurrent 10 MiB uploads: the memory of the gateway and reports-service (issue 18).
    Uploads,
    /// The incident-report rows (issue 18): the own-report list and nearby alerts at 1 000 and
    /// 1 000 000 reports, creates against pgbench, then the uploads.
    Incidents,
}

/// The benchmark itself, or the part `only` names; `placement.build_and_pin()` must have run first.
pub async fn run(seconds: u64, placement: &Placement, only: Option<Only>) -> anyhow::Result<String> {
    let taken = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ").to_string();
    let load_before = procfs::load_average();
    if let Some(Only::Uploads) = only {
        let mut stack = Stack::start(placement).await?;
        let uploads = uploads::measure(&mut stack, placement).await;
        let (backing, _) = stack.stop_gateways();
        let text = incidents_report::uploads_alone(
            &taken,
            cpus_of(&placement.all).len(),
            &placement.described,
            (&load_before, &procfs::load_average()),
            &uploads,
        );
        backing.destroy();
        return save(&taken, text);
    }
    let oha = on_cpus(&placement.all, oha::install)?;
    let sqlite = devstack::program_or_install("sqlite3", "sqlite3")?;
    let mut stack = Stack::start(placement).await?;
    let generator = Generator {
        placement,
        oha,
        sqlite,
        records: stack.backing.dir().join("oha-records.sqlite"),
        ca: stack.backing.ca(),
        seconds,
    };
    if let Some(Only::Incidents) = only {
        let uploads = uploads::measure(&mut stack, placement).await;
        let incidents = incidents::measure(&generator, &stack, placement).await;
        let (backing, _) = stack.stop_gateways();
        let mut text = incidents_report::incidents_alone(
            &taken,
            cpus_of(&placement.all).len(),
            seconds,
            &placement.described,
            (&load_before, &procfs::load_average()),
            &incidents,
        );
        incidents_report::render_uploads(&uploads, &mut text);
        backing.destroy();
        return save(&taken, text);
    }

    let mut rows = Vec::new();
    let mut floor = None;
    for group in GROUPS {
        let targets = scenarios::targets(group, &stack);
        let measured = measure::group(&generator, stack.backing.shared(), &targets)?;
        if floor.is_none() {
            floor = measure::floor(&generator, &targets, &measured)?;
        }
        rows.extend(measured);
    }
    let mut timing = Vec::new();
    for target in scenarios::targets(FAILED_LOGINS, &stack) {
        let run = generator.run(
            &target.url,
            &target.args,
            target.connections,
            Some(FAILED_LOGIN_RATE),
            Some(FAILED_LOGIN_SECONDS),
        )?;
        timing.push((target.name, run));
    }
    // On a stack that has served the scenarios but before the million reports are seeded.
    let uploads = uploads::measure(&mut stack, placement).await;
    // Last of the runs: it seeds a million reports, which would weigh on PostgreSQL's cache.
    let incidents = incidents::measure(&generator, &stack, placement).await;
    let (backing, reference_missing) = stack.stop_gateways();

    // On the CPUs auth-service had, so that the hash rate is what its logins could reach.
    let stack_cpus = cpus_of(&placement.stack).len();
    let hashes = on_cpus(&placement.stack, || Ok(in_process::argon2_rate(stack_cpus)))?;
    let verify = on_cpus(&placement.all, in_process::verify_cost)?;
    let report = Report {
        taken,
        cores: cpus_of(&placement.all).len(),
        seconds,
        load_cpus: placement.load.as_ref().map(|l| list(&cpus_of(l))),
        placement: placement.described.clone(),
        rows,
        floor,
        timing,
        reference_missing,
        stack_cpus,
        hashes,
        verify,
        incidents,
        host_load: (load_before, procfs::load_average()),
    };
    let mut text = report.render();
    incidents_report::render_uploads(&uploads, &mut text);

    backing.destroy();
    save(&report.taken, text)
}

/// Writes the report under bench/results/ and hands it back.
fn save(taken: &str, text: String) -> anyhow::Result<String> {
    let results = crate::workspace_root().join("bench").join("results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join(format!("{taken}.md")), &text)?;
    Ok(text)
}
