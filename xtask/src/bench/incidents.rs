//! The incident-report rows of issue 18, measured on the protected replica: the own-report list
//! and nearby alerts with 1 000 000 reports in the table (seeded with SQL) against a second
//! replica whose own database holds 1 000, the two sizes' rounds taking turns,
//! and end-to-end creates beside pgbench running the same three inserts on the same PostgreSQL at
//! the same concurrency. (The memory of 20 concurrent uploads is measured in `uploads`.)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::ROUNDS;
use super::incidents_sql::{self, NEARBY_POINT, NEARBY_RADIUS_M, PGBENCH_SCRIPT, PGBENCH_SERVICE_SCRIPT};
use super::oha::{Generator, Run, WARM_UP_SECONDS};
use super::placement::{Placement, on_cpus};
use super::procfs::{family_cpu, usage};
use super::stack::{self, Stack};
use crate::devstack;

/// Connections of the creates and clients of pgbench.
pub(super) const CREATE_CONNECTIONS: u32 = 8;
/// Reports the measured reporter files through the API before the table is seeded.
pub(super) const OWN_REPORTS: u32 = 200;
/// The table's sizes compared.
pub(super) const SMALL: u32 = 1_000;
pub(super) const LARGE: u32 = 1_000_000;
/// The fixed rate of the list and nearby rounds: low enough that neither size queues, so the p99
/// is of the request, not of a backlog.
pub(super) const FLAT_RATE: u32 = 25;
const FLAT_CONNECTIONS: u32 = 4;
/// Runs of each query under EXPLAIN ANALYZE.
const PLAN_RUNS: usize = 30;

const LISTER: &str = "bench-lister@example.org";
const CREATOR: &str = "bench-creator@example.org";
/// How long a run may wait for the outbox to be delivered before the benchmark gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// Everything the incident rows measured; a part that failed says why.
pub(super) struct Incidents {
    pub(super) flat: Result<Flatness, String>,
    pub(super) creates: Result<Creates, String>,
}

/// `POST /v1/reports` and pgbench, [`ROUNDS`] runs each, taking turns.
pub(super) struct Creates {
    /// Creates as the issue compares them with pgbench's three inserts: no `Idempotency-Key`
    /// (oha, like every other row).
    pub(super) ours: Vec<CreateRun>,
    /// The same with a fresh `Idempotency-Key` on each (the benchmark's own client, since oha
    /// sends one set of headers): the lock, lookup and stored response on top.
    pub(super) keyed: Vec<CreateRun>,
    /// pgbench's transactions per second, per run.
    pub(super) pgbench: Vec<f64>,
    /// pgbench running the service's own two statements of a create, per run.
    pub(super) pgbench_service: Vec<f64>,
    /// Rows in `reports.reports` when the creates began.
    pub(super) rows_before: i64,
    /// CPU µs per create answered 201, per process (oha as the client), over all runs of ours.
    pub(super) cpu_per_create: Vec<(&'static str, f64)>,
    /// PostgreSQL's CPU µs per pgbench transaction, over all its runs.
    pub(super) postgres_per_transaction: f64,
    /// Events the outbox still owed when each run of ours ended (delivered after it).
    pub(super) owed_after: Vec<i64>,
    /// Seconds waited in all, before the runs, for the outbox to owe nothing.
    pub(super) drain_seconds: f64,
}

/// One run of creates at [`CREATE_CONNECTIONS`].
#[derive(Debug, Clone, Copy)]
pub(super) struct CreateRun {
    /// 201s per second of the steady state.
    pub(super) rps: f64,
    pub(super) created: u64,
    /// Anything but a 201, transport errors included.
    pub(super) failed: u64,
    pub(super) p50: f64,
    pub(super) p99: f64,
}

/// The list and nearby rounds at both sizes, and the nearby query alone in PostgreSQL.
pub(super) struct Flatness {
    pub(super) small: Size,
    pub(super) large: Size,
    /// Seconds the seeding of the large table took (insert, then VACUUM ANALYZE).
    pub(super) seeding_seconds: f64,
    pub(super) plans: Vec<Plan>,
}

/// Rounds at one size of the table.
pub(super) struct Size {
    pub(super) rows: i64,
    /// The gateway in front of this table.
    pub(super) base: String,
    pub(super) list: Vec<Run>,
    pub(super) nearby: Vec<Run>,
    /// Alerts one nearby request answered.
    pub(super) alerts: usize,
}

/// A form of the nearby query: its median execution time in PostgreSQL at each size (ms).
pub(super) struct Plan {
    pub(super) name: &'static str,
    pub(super) small_ms: f64,
    pub(super) large_ms: f64,
}

pub(super) const PLAN_SERVED: &str =
    "as served: the box's cells from `alert_cells` give a time, then the cells that recent from the index";
pub(super) const PLAN_TWO_PASS: &str =
    "two passes over the index, each cell's newest two giving the time (the form before migration 000015)";
pub(super) const PLAN_ONE_PASS: &str =
    "one pass over the index: each cell's newest 20 (the form before the two passes)";
pub(super) const PLAN_RANGE: &str = "one range scan over the box of `public_alerts` (the form before migration 000012)";

/// The list and nearby rounds at both sizes, then the creates on the large table.
pub(super) async fn measure(generator: &Generator<'_>, stack: &Stack, placement: &Placement) -> Incidents {
    let flat = flatness(generator, stack, placement)
        .await
        .inspect_err(|e| eprintln!("xtask: the list and nearby rows failed: {e:#}"))
        .map_err(|e| format!("{e:#}"));
    let creates = creates(generator, stack, placement)
        .await
        .inspect_err(|e| eprintln!("xtask: the create rows failed: {e:#}"))
        .map_err(|e| format!("{e:#}"));
    Incidents { flat, creates }
}

/// A report as the app files it, in the seeded region.
pub(super) fn report_body() -> Value {
    let occurred = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    json!({
        "category": "theft",
        "title": "Bicycle taken from the rack",
        "description": "Someone cut the lock of my bicycle outside the station between 8 and 9 in the morning.",
        "severity": "medium",
        "occurred_at": occurred.to_rfc3339(),
        "location": {"lat": 52.52, "lng": 13.405, "address": "Alexanderplatz 1, Berlin"},
    })
}

pub(super) fn http_client(ca: &Path, connections: u32) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .http1_only()
        .pool_max_idle_per_host(connections as usize)
        .build()?)
}

/// Files `body` with a fresh `Idempotency-Key`; the status.
async fn create(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> reqwest::Result<u16> {
    let key = format!("bench-{:032x}", rand::random::<u128>());
    let res = http
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await?;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    Ok(status)
}

/// Events written to the outbox and not yet delivered (nor dead).
async fn outbox_owed(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM reports.outbox WHERE dead_at IS NULL", &[])
        .await?
        .get(0))
}

/// Waits until the relay has delivered every event the runs before wrote (pgbench's inserts
/// write events too), so that no run pays for delivering another's; the seconds waited.
async fn outbox_drained(db: &tokio_postgres::Client) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let owed = outbox_owed(db).await?;
        if owed == 0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            start.elapsed() < DRAIN_LIMIT,
            "the outbox still owes {owed} events after {} s: is reports-service's relay delivering (its log, outbox_pending)?",
            DRAIN_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn table_rows(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db.query_one("SELECT count(*) FROM reports.reports", &[]).await?.get(0))
}

/// Seeds the table up to `rows` reports, then vacuums and analyses it as autovacuum would have.
async fn seed_to(db: &tokio_postgres::Client, rows: u32) -> anyhow::Result<()> {
    let missing = i64::from(rows) - table_rows(db).await?;
    if missing > 0 {
        db.batch_execute(&incidents_sql::seed(u32::try_from(missing)?))
            .await
            .context("seeding reports.reports")?;
    }
    // Then a checkpoint: the seeding left hundreds of MiB of dirty pages, which the checkpointer
    // would otherwise write out while the large table's rounds run, slowing every query of
    // them (the own-report list's p99 grew by 2 ms with it) for a reason that is not the size.
    // Two calls: several statements in one are one transaction, where VACUUM cannot run.
    db.batch_execute("VACUUM ANALYZE reports.reports, reports.public_alerts, reports.alert_cells")
        .await
        .context("VACUUM ANALYZE after seeding")?;
    db.batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT after seeding")?;
    // And the kernel's copy: the benchmark's cluster runs with `fsync=off`, so the checkpoint
    // left the seeding's gigabyte or more of WAL and table in the page cache, dirty, which the
    // kernel writes out over the next half minute or so, in the large table's rounds. `sync`
    // returns once it is on disk.
    tokio::task::spawn_blocking(|| devstack::run(&mut Command::new("sync"), "sync after seeding"))
        .await
        .context("sync after seeding")?
}

/// The list and nearby rows: the small table in the second-table replica's database, the large
/// one in `bench`, each replica reading its own; the rounds of the two sizes take turns.
async fn flatness(generator: &Generator<'_>, stack: &Stack, placement: &Placement) -> anyhow::Result<Flatness> {
    let mut second = stack.second_table_replica(placement).await?;
    let flat = flatness_on(generator, stack, &second.base).await;
    second.platform.stop();
    flat
}

async fn flatness_on(generator: &Generator<'_>, stack: &Stack, small_base: &str) -> anyhow::Result<Flatness> {
    let ca = stack.backing.ca();
    let large_base = &stack.protected.base;
    let http = http_client(&ca, 1)?;
    // One account (auth-service's database is shared), with its own reports in each table.
    let token = stack::session(large_base, &ca, LISTER).await?;
    let body = report_body();
    for base in [small_base, large_base.as_str()] {
        let url = format!("{base}/v1/reports");
        for _ in 0..OWN_REPORTS {
            let status = create(&http, &url, &token, &body).await?;
            anyhow::ensure!(status == 201, "a report of the measured reporter: {status}");
        }
    }
    let small_db = crate::provision::connect(&stack.backing.second_table_superuser_url()).await?;
    let large_db = crate::provision::connect(&stack.backing.superuser_url()).await?;

    seed_to(&small_db, SMALL).await?;
    let started = Instant::now();
    seed_to(&large_db, LARGE).await?;
    let seeding_seconds = started.elapsed().as_secs_f64();

    let mut small = Size::checked(&small_db, &http, small_base, &token).await?;
    let mut large = Size::checked(&large_db, &http, large_base, &token).await?;
    // Each round runs both sizes back to back, the one that goes first changing every round, so
    // a slow spell of the host (neighbours, its memory reclaim paging out what sat idle) falls on
    // both rather than on whichever size ran then.
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [&mut small, &mut large]
        } else {
            [&mut large, &mut small]
        };
        let [first, then] = order;
        first.round(generator, &token, Request::List)?;
        then.round(generator, &token, Request::List)?;
        then.round(generator, &token, Request::Nearby)?;
        first.round(generator, &token, Request::Nearby)?;
    }
    let plans = plans(&small_db, &large_db).await?;
    Ok(Flatness {
        small,
        large,
        seeding_seconds,
        plans,
    })
}

#[derive(Clone, Copy)]
enum Request {
    List,
    Nearby,
}

impl Size {
    /// The size behind the gateway at `base`, with a check that both requests answer as measured:
    /// the reporter's first page is full, and how many alerts one nearby request gives.
    async fn checked(
        db: &tokio_postgres::Client,
        http: &reqwest::Client,
        base: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        let answer: Value = http
            .get(nearby_url(base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let alerts = answer["items"].as_array().map_or(0, Vec::len);
        let page: Value = http
            .get(list_url(base))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            page["items"].as_array().map_or(0, Vec::len) == 20,
            "the measured reporter's first page at {base}: {page}"
        );
        Ok(Self {
            rows: table_rows(db).await?,
            base: base.to_owned(),
            list: Vec::new(),
            nearby: Vec::new(),
            alerts,
        })
    }

    /// One round of `request` at [`FLAT_RATE`].
    fn round(&mut self, generator: &Generator<'_>, token: &str, request: Request) -> anyhow::Result<()> {
        match request {
            Request::List => {
                let with_token = ["-H".to_owned(), format!("Authorization: Bearer {token}")];
                let run = generator.run(
                    &list_url(&self.base),
                    &with_token,
                    FLAT_CONNECTIONS,
                    Some(FLAT_RATE),
                    None,
                )?;
                self.list.push(run);
            }
            Request::Nearby => {
                let run = generator.run(&nearby_url(&self.base), &[], FLAT_CONNECTIONS, Some(FLAT_RATE), None)?;
                self.nearby.push(run);
            }
        }
        Ok(())
    }
}

fn list_url(base: &str) -> String {
    format!("{base}/v1/reports?limit=20")
}

fn nearby_url(base: &str) -> String {
    let (lat, lng) = NEARBY_POINT;
    format!("{base}/v1/alerts/nearby?lat={lat}&lng={lng}&radius_m={NEARBY_RADIUS_M}")
}

/// Median execution times (ms) of `sql` under EXPLAIN ANALYZE in the small and the large table,
/// over [`PLAN_RUNS`] runs each, taking turns.
async fn execution_ms(
    small: &tokio_postgres::Client,
    large: &tokio_postgres::Client,
    sql: &str,
) -> anyhow::Result<(f64, f64)> {
    let mut times = (Vec::with_capacity(PLAN_RUNS), Vec::with_capacity(PLAN_RUNS));
    for _ in 0..PLAN_RUNS {
        times.0.push(explained_ms(small, sql).await?);
        times.1.push(explained_ms(large, sql).await?);
    }
    Ok((median(times.0), median(times.1)))
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The execution time (ms) EXPLAIN ANALYZE gives for one run of `sql`.
async fn explained_ms(db: &tokio_postgres::Client, sql: &str) -> anyhow::Result<f64> {
    let rows = db
        .simple_query(&format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}"))
        .await
        .with_context(|| format!("EXPLAIN ANALYZE {sql}"))?;
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .find_map(|line| line.trim().strip_prefix("Execution Time: "))
        .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
        .context("EXPLAIN ANALYZE gave no execution time")
}

/// The nearby query as reports-service sends it (cell by cell from the covering index), and the
/// forms it replaced, on the schema as migrated, in both tables.
async fn plans(small: &tokio_postgres::Client, large: &tokio_postgres::Client) -> anyhow::Result<Vec<Plan>> {
    let mut plans = Vec::new();
    for (name, sql) in [
        (PLAN_SERVED, incidents_sql::nearby_served()),
        (PLAN_TWO_PASS, incidents_sql::nearby_two_pass()),
        (PLAN_ONE_PASS, incidents_sql::nearby_per_cell()),
        (PLAN_RANGE, incidents_sql::nearby_range_scan()),
    ] {
        let (small_ms, large_ms) = execution_ms(small, large, &sql).await?;
        plans.push(Plan {
            name,
            small_ms,
            large_ms,
        });
    }
    Ok(plans)
}

async fn creates(generator: &Generator<'_>, stack: &Stack, placement: &Placement) -> anyhow::Result<Creates> {
    let ca = stack.backing.ca();
    let base = &stack.protected.base;
    let token = stack::session(base, &ca, CREATOR).await?;
    let url = format!("{base}/v1/reports");
    let body = report_body();
    // The first create makes the reporter's data key: not what is measured.
    let status = create(&http_client(&ca, 1)?, &url, &token, &body).await?;
    anyhow::ensure!(status == 201, "the creator's first report: {status}");
    let db = crate::provision::connect(&stack.backing.superuser_url()).await?;
    let rows_before = table_rows(&db).await?;

    let script = stack.backing.dir().join("pgbench-create.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)?;
    let service_script = stack.backing.dir().join("pgbench-service-create.sql");
    std::fs::write(&service_script, PGBENCH_SERVICE_SCRIPT)?;
    let pgbench = devstack::find_program("pgbench").context("pgbench (PostgreSQL's client tools) is missing")?;
    let target = format!("{}?sslmode=require", stack.backing.reports_db()?.url);
    let load = placement.load.as_ref().unwrap_or(&placement.all);
    let with_body = [
        "-m".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        format!("Authorization: Bearer {token}"),
        "-H".to_owned(),
        "Content-Type: application/json".to_owned(),
        "-d".to_owned(),
        body.to_string(),
    ];
    let mut measured = Creates {
        ours: Vec::new(),
        keyed: Vec::new(),
        pgbench: Vec::new(),
        pgbench_service: Vec::new(),
        rows_before,
        cpu_per_create: Vec::new(),
        postgres_per_transaction: 0.0,
        owed_after: Vec::new(),
        drain_seconds: 0.0,
    };
    let mut ours_cpu: Vec<(&'static str, f64)> = cpu_now(stack).into_iter().map(|(n, _)| (n, 0.0)).collect();
    let mut pgbench_cpu = 0.0;
    let mut client_cpu = 0.0;
    for _ in 0..ROUNDS {
        measured.drain_seconds += outbox_drained(&db).await?;
        let before = cpu_now(stack);
        let run = generator.run(&url, &with_body, CREATE_CONNECTIONS, None, None)?;
        for ((_, total), ((_, after), (_, was))) in ours_cpu.iter_mut().zip(cpu_now(stack).into_iter().zip(before)) {
            *total += after - was;
        }
        measured.owed_after.push(outbox_owed(&db).await?);
        client_cpu += run.generator_cpus * generator.seconds as f64;
        eprintln!("xtask: POST /v1/reports: {:.0} creates/s", run.rps);
        measured.ours.push(CreateRun {
            rps: run.rps,
            created: run.ok,
            failed: run.errors + run.limited,
            p50: run.latency.p50,
            p99: run.latency.p99,
        });
        measured.drain_seconds += outbox_drained(&db).await?;
        let keyed = on_cpus(load, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(create_run(&ca, &url, &token, &body, generator.seconds))
        })?;
        eprintln!(
            "xtask: POST /v1/reports with Idempotency-Key: {:.0} creates/s",
            keyed.rps
        );
        measured.keyed.push(keyed);
        measured.drain_seconds += outbox_drained(&db).await?;
        let before = postgres_cpu(stack);
        let tps = on_cpus(load, || pgbench_run(&pgbench, &script, &target, generator.seconds))?;
        pgbench_cpu += postgres_cpu(stack) - before;
        eprintln!("xtask: pgbench, the same inserts: {tps:.0} tps");
        measured.pgbench.push(tps);
        measured.drain_seconds += outbox_drained(&db).await?;
        let tps = on_cpus(load, || {
            pgbench_run(&pgbench, &service_script, &target, generator.seconds)
        })?;
        eprintln!("xtask: pgbench, the service's two statements: {tps:.0} tps");
        measured.pgbench_service.push(tps);
    }
    // Over every create of the runs (the warm-up second's too), and every pgbench transaction.
    let seconds = generator.seconds as f64;
    let creates: f64 = measured.ours.iter().map(|r| r.rps * seconds).sum();
    let transactions: f64 = measured.pgbench.iter().map(|tps| tps * seconds).sum();
    ours_cpu.push(("the client (oha)", client_cpu));
    measured.cpu_per_create = ours_cpu
        .into_iter()
        .map(|(name, cpu)| (name, 1e6 * cpu / creates.max(1.0)))
        .collect();
    measured.postgres_per_transaction = 1e6 * pgbench_cpu / transactions.max(1.0);
    Ok(measured)
}

/// CPU seconds of PostgreSQL with all its backends.
fn postgres_cpu(stack: &Stack) -> f64 {
    stack.backing.shared().postmaster.map_or(0.0, family_cpu)
}

/// CPU seconds so far of each process a create goes through.
fn cpu_now(stack: &Stack) -> Vec<(&'static str, f64)> {
    let p = &stack.protected.platform;
    let cpu = |pid: Option<u32>| usage(pid.unwrap_or(0)).0;
    vec![
        ("gateway", cpu(p.gateway.pid())),
        ("auth-service", cpu(p.auth.pid())),
        ("reports-service", cpu(p.reports.pid())),
        ("analytics-service", cpu(p.analytics.pid())),
        ("PostgreSQL", postgres_cpu(stack)),
        // The gateway's rate limits and revocation checks.
        ("Redis", cpu(Some(stack.backing.shared().redis))),
    ]
}

/// [`CREATE_CONNECTIONS`] clients filing reports back to back for `seconds`; the first second's
/// answers are left out, as oha's warm-up is.
async fn create_run(ca: &Path, url: &str, token: &str, body: &Value, seconds: u64) -> anyhow::Result<CreateRun> {
    let http = http_client(ca, CREATE_CONNECTIONS)?;
    let started = Instant::now();
    let steady = started + Duration::from_secs_f64(WARM_UP_SECONDS);
    let end = started + Duration::from_secs(seconds);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CREATE_CONNECTIONS {
        let (http, url, token, body) = (http.clone(), url.to_owned(), token.to_owned(), body.clone());
        clients.spawn(async move {
            let (mut took, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let sent = Instant::now();
                let status = create(&http, &url, &token, &body).await;
                let done = Instant::now();
                if done < steady || done > end {
                    continue;
                }
                match status {
                    Ok(201) => took.push((done - sent).as_secs_f64() * 1000.0),
                    _ => failed += 1,
                }
            }
            (took, failed)
        });
    }
    let (mut took, mut failed) = (Vec::new(), 0);
    for (t, f) in clients.join_all().await {
        took.extend(t);
        failed += f;
    }
    took.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        took.get(((q * took.len() as f64).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(CreateRun {
        rps: took.len() as f64 / (seconds as f64 - WARM_UP_SECONDS),
        created: took.len() as u64,
        failed,
        p50: rank(0.5),
        p99: rank(0.99),
    })
}

/// pgbench's transactions per second running [`PGBENCH_SCRIPT`] for `seconds` at
/// [`CREATE_CONNECTIONS`] clients (one thread each), prepared statements as diesel's.
fn pgbench_run(pgbench: &Path, script: &Path, target: &str, seconds: u64) -> anyhow::Result<f64> {
    let n = CREATE_CONNECTIONS.to_string();
    let out = devstack::output(
        Command::new(pgbench)
            .args(["--no-vacuum", "--protocol=prepared", "-c", &n, "-j", &n, "-T"])
            .arg(seconds.to_string())
            .arg("-f")
            .arg(script)
            .arg(target),
        "pgbench",
    )?;
    let text = String::from_utf8_lossy(&out);
    pgbench_tps(&text).with_context(|| format!("pgbench printed no tps: {text}"))
}

/// The rate in pgbench's summary: `tps = 1234.5 (without initial connection time)`.
pub(super) fn pgbench_tps(summary: &str) -> Option<f64> {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgbench_s_rate_is_read_from_its_summary() {
        let summary = "number of failed transactions: 0 (0.000%)\nlatency average = 0.441 ms\ninitial connection time = 7.301 ms\ntps = 9068.177086 (without initial connection time)\n";
        assert_eq!(super::pgbench_tps(summary), Some(9068.177086));
        assert_eq!(super::pgbench_tps("pgbench: error: connection failed"), None);
    }
}
