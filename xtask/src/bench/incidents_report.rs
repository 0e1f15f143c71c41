//! The incident-report section of the benchmark's Markdown (issue 18): creates against pgbench,
//! the list and nearby alerts at 1 000 and 1 000 000 reports, and the memory of 20 concurrent
//! 10 MiB uploads. No measuring here, so the wording and arithmetic can be tested alone.

use std::fmt::Write as _;

use super::ROUNDS;
use super::incidents::{
    CREATE_CONNECTIONS, CreateRun, Creates, FLAT_RATE, Flatness, Incidents, LARGE, OWN_REPORTS, SMALL, Size,
};
use super::incidents_sql::{NEARBY_POINT, NEARBY_RADIUS_M};
use super::oha::Run;
use super::uploads::{
    CLIENTS, FILE_BYTES, GROWTH_TARGET_MIB, IDLE_SAMPLES, PROCESSES, SAMPLE_EVERY, UploadRun, Uploads, WARM_UP_BYTES,
};

/// The creates' target: end to end at least half of what PostgreSQL alone reaches.
const CREATE_TARGET: f64 = 0.5;
/// The list's and nearby's target: p99 at a million reports at most 1.5 times that at a thousand.
const FLAT_TARGET: f64 = 1.5;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// The median of `values` (NaN last), and their range.
fn median_range(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(|a, b| {
        let key = |x: &f64| if x.is_nan() { f64::INFINITY } else { *x };
        key(a).total_cmp(&key(b))
    });
    let low = sorted.first().copied().unwrap_or(f64::NAN);
    let high = sorted.iter().rev().find(|x| !x.is_nan()).copied().unwrap_or(f64::NAN);
    (sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN), low, high)
}

/// The p99 of the round with the median p99 (NaN last), and "1.20 / 3.40 (3.00–3.90)": that
/// round's p50 and p99, and the range of the p99s.
fn rounds_text(rounds: &[Run]) -> (f64, String) {
    let (_, low, high) = median_range(&rounds.iter().map(|r| r.latency.p99).collect::<Vec<_>>());
    let key = |r: &&Run| {
        if r.latency.p99.is_nan() {
            f64::INFINITY
        } else {
            r.latency.p99
        }
    };
    let mut order: Vec<&Run> = rounds.iter().collect();
    order.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let Some(median) = order.get(order.len() / 2) else {
        return (f64::NAN, "n/a".to_owned());
    };
    let (p50, p99) = (median.latency.p50, median.latency.p99);
    (p99, format!("{p50:.2} / {p99:.2} ({low:.2}–{high:.2})"))
}

impl Incidents {
    pub(super) fn render(&self, report: &mut String) {
        let _ = writeln!(report, "\n## Incident reports (issue 18)");
        match &self.creates {
            Ok(creates) => creates.render(report),
            Err(why) => {
                let _ = writeln!(report, "\nCreates against pgbench were not measured: {why}.");
            }
        }
        match &self.flat {
            Ok(flat) => flat.render(report),
            Err(why) => {
                let _ = writeln!(report, "\nThe list and nearby alerts were not measured: {why}.");
            }
        }
    }
}

/// The report of `cargo xtask bench --only uploads`: the header, then the uploads' section.
pub(super) fn uploads_alone(
    taken: &str,
    cores: usize,
    placement: &str,
    host_load: (&str, &str),
    uploads: &Result<Uploads, String>,
) -> String {
    let mut report = format!(
        "# Benchmark report {taken}: uploads only\n\nMachine: {cores} cores; `cargo xtask bench --only uploads`; release build; {placement}.\n\nHost load average (1, 5, 15 min): {} when the benchmark began, {} when it ended.\n\n## Incident reports (issue 18)\n",
        host_load.0, host_load.1
    );
    render_uploads(uploads, &mut report);
    report
}

/// The report of `cargo xtask bench --only incidents`: the header, then the incident section
/// (the uploads' follows, by [`render_uploads`]).
pub(super) fn incidents_alone(
    taken: &str,
    cores: usize,
    seconds: u64,
    placement: &str,
    host_load: (&str, &str),
    incidents: &Incidents,
) -> String {
    let mut report = format!(
        "# Benchmark report {taken}: incident reports only\n\nMachine: {cores} cores; `cargo xtask bench --only incidents --seconds {seconds}`; release build; {placement}.\n\nHost load average (1, 5, 15 min): {} when the benchmark began, {} when it ended.\n",
        host_load.0, host_load.1
    );
    incidents.render(&mut report);
    report
}

/// The uploads' section, or why it has no figures: the last of the report, after
/// [`Incidents::render`]'s.
pub(super) fn render_uploads(uploads: &Result<Uploads, String>, report: &mut String) {
    match uploads {
        Ok(uploads) => uploads.render(report),
        Err(why) => {
            let _ = writeln!(
                report,
                "\n### {CLIENTS} concurrent 10 MiB uploads\n\nNot measured: {why} (target: the resident memory of the gateway plus reports-service grows by at most {GROWTH_TARGET_MIB} MiB over idle)."
            );
        }
    }
}

impl Uploads {
    fn render(&self, report: &mut String) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            report,
            "\n### {CLIENTS} concurrent 10 MiB uploads\n\n`POST /v1/reports/{{id}}/attachments` through the protected gateway: {CLIENTS} users with a report each, and as many clients sending at once a 10 MiB PDF each ({FILE_BYTES} bytes, just under `MAX_FILE_SIZE`: the `%PDF-1.` magic, comment lines of filler, a trailer) as a raw `application/pdf` body with `Content-Length`, each over its own HTTP/1.1 connection over TLS; reports-service stores them encrypted in its local file store. {ROUNDS} runs on the same reports; before each, the {} are restarted (an allocator keeps what a run freed: the next run would start from that) and warmed up by every client uploading a {} KiB PDF (connections, TLS, the gRPC channel, the database pool, the users' data keys). Their resident memory (VmRSS) is read every {} ms: idle is the largest sum of {IDLE_SAMPLES} readings after the warm-up, peak the largest sum while the uploads ran; the target is judged on growth over that idle, and growth over the processes as restarted (before the warm-up) is shown beside it.\n",
            PROCESSES.join(" and "),
            WARM_UP_BYTES / 1024,
            SAMPLE_EVERY.as_millis()
        );
        let _ = writeln!(
            report,
            "| run | restarted MiB | idle MiB | peak MiB | growth MiB | over restarted MiB | {} idle → peak MiB | {} idle → peak MiB | seconds (MiB/s) | answered 201 |",
            PROCESSES[0], PROCESSES[1]
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|---|");
        let sent_mib = f64::from(CLIENTS) * FILE_BYTES as f64 / (1024.0 * 1024.0);
        for (n, run) in self.runs.iter().enumerate() {
            let m = &run.memory;
            let _ = writeln!(
                report,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} → {:.1} | {:.1} → {:.1} | {:.1} ({:.0}) | {} / {CLIENTS} |",
                n + 1,
                mib(run.restarted),
                mib(m.idle),
                mib(m.peak),
                m.growth_mib(),
                run.cold_growth_mib(),
                mib(m.idle_each[0]),
                mib(m.peak_each[0]),
                mib(m.idle_each[1]),
                mib(m.peak_each[1]),
                run.seconds,
                sent_mib / run.seconds,
                run.created
            );
        }
        let growths: Vec<f64> = self.runs.iter().map(|r| r.memory.growth_mib()).collect();
        let (growth, low, high) = median_range(&growths);
        let colds: Vec<f64> = self.runs.iter().map(UploadRun::cold_growth_mib).collect();
        let (cold, cold_low, cold_high) = median_range(&colds);
        let failed: Vec<String> = self
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.created < CLIENTS)
            .map(|(n, r)| {
                let first = r.failures.first().map_or("no answer", String::as_str);
                format!(
                    "run {}: {} of {CLIENTS} failed, the first with {first}",
                    n + 1,
                    CLIENTS - r.created
                )
            })
            .collect();
        let verdict = if self.runs.is_empty() {
            "not met: no run".to_owned()
        } else if !failed.is_empty() {
            format!("not met: not every upload answered 201 ({})", failed.join("; "))
        } else {
            met(growth <= GROWTH_TARGET_MIB).to_owned()
        };
        let _ = writeln!(
            report,
            "\nGrowth over idle: {growth:.1} MiB, the median of {} runs ({low:.1}–{high:.1}); target ≤ {GROWTH_TARGET_MIB} MiB: {verdict}. Over the processes as restarted, before the warm-up: {cold:.1} MiB ({cold_low:.1}–{cold_high:.1}).",
            self.runs.len()
        );
    }
}

impl Creates {
    fn render(&self, report: &mut String) {
        let ours: Vec<f64> = self.ours.iter().map(|r| r.rps).collect();
        let keyed: Vec<f64> = self.keyed.iter().map(|r| r.rps).collect();
        let (rate, _, _) = median_range(&ours);
        let (tps, _, _) = median_range(&self.pgbench);
        let ratio = rate / tps;
        let _ = writeln!(
            report,
            "\n### Create report, end to end against pgbench\n\n`POST /v1/reports` through the protected gateway (a session's token, a body with a location; {CREATE_CONNECTIONS} connections of HTTP/1.1 over TLS, each sending its next request when the last is answered) against `pgbench` on the same PostgreSQL running a create's three inserts (report, audit row, outbox event) in one transaction scoped as the service scopes it, as reports-service's runtime role over TLS with prepared statements (`pgbench --no-vacuum --protocol=prepared -c {CREATE_CONNECTIONS} -j {CREATE_CONNECTIONS} -T <seconds>`). The target compares a create that does those three inserts: no `Idempotency-Key` (oha, as every other row; the service still reads the reporter's data key and seals title, description and location). Beside it, for the phone's retry-safe way, the same with a fresh `Idempotency-Key` on every request (the benchmark's own client, since oha sends one set of headers; the first second left out): the key's advisory lock, lookup and sealed stored response on top. {ROUNDS} rounds of the three, taking turns, on a table of {} reports.\n",
            self.rows_before
        );
        let _ = writeln!(
            report,
            "| | per second (median) | runs | p50 / p99 ms | answered / not 201 |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|");
        create_row(report, "`POST /v1/reports`, end to end", &self.ours);
        create_row(report, "the same, with `Idempotency-Key`", &self.keyed);
        let _ = writeln!(
            report,
            "| pgbench, the three inserts | {tps:.0} | {} | n/a | n/a |",
            runs(&self.pgbench)
        );
        let (service_tps, _, _) = median_range(&self.pgbench_service);
        if !self.pgbench_service.is_empty() {
            let _ = writeln!(
                report,
                "| pgbench, the service's own two statements | {service_tps:.0} | {} | n/a | n/a |",
                runs(&self.pgbench_service)
            );
        }
        let (keyed_rate, _, _) = median_range(&keyed);
        let _ = writeln!(
            report,
            "\nEnd to end / pgbench: {ratio:.2}× (target ≥ {CREATE_TARGET}×: {}); with `Idempotency-Key`: {:.2}×.",
            met(ratio >= CREATE_TARGET),
            keyed_rate / tps
        );
        if !self.pgbench_service.is_empty() {
            let _ = writeln!(
                report,
                "\nreports-service writes a create without a key in two statements and no transaction block (the scope and the data key; then the report, its audit row and its event in one statement); the target's reference is pgbench running the three inserts in one transaction, as the issue defines it. Against pgbench running the service's own two statements: {:.2}×.",
                rate / service_tps
            );
        }
        let per_create: Vec<String> = self
            .cpu_per_create
            .iter()
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect();
        let _ = writeln!(
            report,
            "\nCPU µs per create without a key, over all runs: {}; PostgreSQL per pgbench transaction: {:.0}.",
            per_create.join(", "),
            self.postgres_per_transaction
        );
        let owed: Vec<String> = self.owed_after.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            report,
            "\nBefore each run the benchmark waits until reports-service's outbox owes no event (the relay has delivered what the runs before wrote, pgbench's inserts included), so that no run pays for delivering another's events: {:.1} s in all. Events still owed when each run of ours ended (delivered after it, outside its time): {}.",
            self.drain_seconds,
            owed.join(", ")
        );
    }
}

fn runs(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

/// One line of the creates' table: the median rate, each run's, median p50 / p99, the counts.
fn create_row(report: &mut String, name: &str, runs_of: &[CreateRun]) {
    let rates: Vec<f64> = runs_of.iter().map(|r| r.rps).collect();
    let (rate, _, _) = median_range(&rates);
    let (p50, _, _) = median_range(&runs_of.iter().map(|r| r.p50).collect::<Vec<_>>());
    let (p99, _, _) = median_range(&runs_of.iter().map(|r| r.p99).collect::<Vec<_>>());
    let (created, failed) = runs_of
        .iter()
        .fold((0, 0), |(c, f), r: &CreateRun| (c + r.created, f + r.failed));
    let _ = writeln!(
        report,
        "| {name} | {rate:.0} | {} | {p50:.2} / {p99:.2} | {created} / {failed} |",
        runs(&rates)
    );
}

impl Flatness {
    fn render(&self, report: &mut String) {
        let (lat, lng) = NEARBY_POINT;
        let _ = writeln!(
            report,
            "\n### Own-report list and nearby alerts, {SMALL} reports against {LARGE}\n\nBoth tables exist at once, so that the two sizes' rounds take turns: the large one in database `bench` behind the protected replica, the small one in a database of its own behind a second replica configured the same (its reports-service alone on the other database; the other services, Redis and PostgreSQL shared). In each, the measured reporter filed {OWN_REPORTS} reports through the API; the rest of the table is seeded with SQL: reports of 50 000 users spread over a 40 × 60 km region, occurred within the 30-day alert window, two thirds `under_review` or `resolved`, 2% withdrawn, sealed columns of random bytes (seeding the large table, VACUUM ANALYZE, CHECKPOINT and `sync` took {:.0} s: the rounds start with nothing left to write). Each request at a fixed {FLAT_RATE} req/s with latency correction (oha, steady state), {ROUNDS} rounds, each running both sizes back to back, the first alternating (a slow spell of the host falls on both sizes); p50 / p99 ms of the round with the median p99, and the range of the p99s.\n",
            self.seeding_seconds
        );
        let _ = writeln!(
            report,
            "| request | at {} reports | at {} reports | p99 ratio (target ≤ {FLAT_TARGET}×) |",
            self.small.rows, self.large.rows
        );
        let _ = writeln!(report, "|---|---|---|---|");
        let row = |report: &mut String, name: &str, pick: fn(&Size) -> &[Run], note: (String, String)| {
            let (small, small_text) = rounds_text(pick(&self.small));
            let (large, large_text) = rounds_text(pick(&self.large));
            let ratio = large / small;
            let _ = writeln!(
                report,
                "| {name} | {small_text}{} | {large_text}{} | {ratio:.2}× ({}) |",
                note.0,
                note.1,
                met(ratio <= FLAT_TARGET)
            );
        };
        row(
            report,
            "`GET /v1/reports?limit=20` (the reporter's first page, decrypted)",
            |s| &s.list,
            (String::new(), String::new()),
        );
        row(
            report,
            &format!("`GET /v1/alerts/nearby?lat={lat}&lng={lng}&radius_m={NEARBY_RADIUS_M}`"),
            |s| &s.nearby,
            (
                format!("; {} alerts", self.small.alerts),
                format!("; {} alerts", self.large.alerts),
            ),
        );
        if !self.plans.is_empty() {
            let _ = writeln!(
                report,
                "\nThe nearby query alone in PostgreSQL, on the projection `public_alerts` (EXPLAIN ANALYZE as the superuser; median execution time of 30 runs, the two tables taking turns). As served, the box's rows of the per-cell summary `alert_cells` (each cell's newest two times) give a time at least 20 reports reach, then the cells whose newest is that recent (at most 20) are read from that time on and merged; the two-pass form took each cell's newest two from the index instead (a descent per cell of the box); the one-pass form reads each cell's newest 20; the range scan reads every public report of the window in the box and sorts them. All read the projection's index alone (`INCLUDE (status, category, severity)`):\n"
            );
            let _ = writeln!(
                report,
                "| form of the query | ms at {} | ms at {} | ratio |",
                self.small.rows, self.large.rows
            );
            let _ = writeln!(report, "|---|---|---|---|");
            for plan in &self.plans {
                let _ = writeln!(
                    report,
                    "| {} | {:.3} | {:.3} | {:.1}× |",
                    plan.name,
                    plan.small_ms,
                    plan.large_ms,
                    plan.large_ms / plan.small_ms
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::incidents::{CreateRun, Creates, Flatness, Incidents, Plan, Size};
    use super::super::measure::tests::run;
    use super::super::uploads::{Memory, UploadRun, Uploads};

    /// A run whose two processes sat at `idle` MiB each and peaked at `peak` MiB each.
    fn upload_run(idle: [u64; 2], peak: [u64; 2], created: u32, failures: &[&str]) -> UploadRun {
        let kib = |mib: [u64; 2]| mib.map(|m| m * 1024);
        UploadRun {
            restarted: 30 * 1024,
            memory: Memory::of(&[kib(idle)], &[kib(idle), kib(peak)]),
            seconds: 4.0,
            created,
            failures: failures.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn size(rows: i64, list_p99: [f64; 3], nearby_p99: [f64; 3], alerts: usize) -> Size {
        Size {
            rows,
            base: "https://localhost:1".to_owned(),
            list: list_p99.iter().map(|p99| run(1.0, *p99, 100)).collect(),
            nearby: nearby_p99.iter().map(|p99| run(1.0, *p99, 100)).collect(),
            alerts,
        }
    }

    #[test]
    fn the_section_computes_its_ratios_from_the_medians() {
        let create = |rps| CreateRun {
            rps,
            created: 1000,
            failed: 1,
            p50: 10.0,
            p99: 30.0,
        };
        let incidents = Incidents {
            creates: Ok(Creates {
                ours: vec![create(300.0), create(500.0), create(400.0)],
                keyed: vec![create(200.0), create(250.0), create(300.0)],
                pgbench: vec![900.0, 1000.0, 1100.0],
                pgbench_service: vec![1600.0, 2000.0, 1800.0],
                rows_before: 1_000_001,
                cpu_per_create: vec![("gateway", 210.4), ("PostgreSQL", 330.0)],
                postgres_per_transaction: 120.0,
                owed_after: vec![120, 0, 35],
                drain_seconds: 4.25,
            }),
            flat: Ok(Flatness {
                small: size(1000, [3.0, 2.0, 4.0], [2.0, 2.0, 2.0], 20),
                large: size(1_000_000, [4.0, 4.5, 3.0], [90.0, 100.0, 80.0], 20),
                seeding_seconds: 42.0,
                plans: vec![Plan {
                    name: "as served",
                    small_ms: 0.2,
                    large_ms: 170.0,
                }],
            }),
        };
        let uploads = Ok(Uploads {
            runs: vec![
                upload_run([20, 40], [50, 70], 20, &[]),
                upload_run([30, 50], [40, 60], 20, &[]),
                upload_run([30, 50], [70, 90], 20, &[]),
            ],
        });
        let mut text = String::new();
        incidents.render(&mut text);
        super::render_uploads(&uploads, &mut text);
        let has = |part: &str| assert!(text.contains(part), "{part:?} missing from\n{text}");
        has("| `POST /v1/reports`, end to end | 400 | 300, 500, 400 | 10.00 / 30.00 | 3000 / 3 |");
        has("| pgbench, the three inserts | 1000 | 900, 1000, 1100 | n/a | n/a |");
        has("| the same, with `Idempotency-Key` | 250 | 200, 250, 300 | 10.00 / 30.00 | 3000 / 3 |");
        has("End to end / pgbench: 0.40× (target ≥ 0.5×: not met); with `Idempotency-Key`: 0.25×.");
        has("| pgbench, the service's own two statements | 1800 | 1600, 2000, 1800 | n/a | n/a |");
        has("Against pgbench running the service's own two statements: 0.22×.");
        has("on a table of 1000001 reports");
        has(
            "CPU µs per create without a key, over all runs: gateway 210, PostgreSQL 330; PostgreSQL per pgbench transaction: 120.",
        );
        has(
            "so that no run pays for delivering another's events: 4.2 s in all. Events still owed when each run of ours ended (delivered after it, outside its time): 120, 0, 35.",
        );
        // Median p99 3 of (2, 3, 4) against 4 of (3, 4, 4.5): 1.33, met.
        has("| 1.00 / 3.00 (2.00–4.00) | 1.00 / 4.00 (3.00–4.50) | 1.33× (met) |");
        has("| 1.00 / 2.00 (2.00–2.00); 20 alerts | 1.00 / 90.00 (80.00–100.00); 20 alerts | 45.00× (not met) |");
        has("| as served | 0.200 | 170.000 | 850.0× |");
        has("took 42 s");
        has("### 20 concurrent 10 MiB uploads");
        has("(10484736 bytes, just under `MAX_FILE_SIZE`");
        has(
            "| run | restarted MiB | idle MiB | peak MiB | growth MiB | over restarted MiB | gateway idle → peak MiB | reports-service idle → peak MiB | seconds (MiB/s) | answered 201 |",
        );
        // 20 uploads of 10 MiB − 1 KiB in 4 s: 50 MiB/s.
        has("| 1 | 30.0 | 60.0 | 120.0 | 60.0 | 90.0 | 20.0 → 50.0 | 40.0 → 70.0 | 4.0 (50) | 20 / 20 |");
        has("| 2 | 30.0 | 80.0 | 100.0 | 20.0 | 70.0 | 30.0 → 40.0 | 50.0 → 60.0 |");
        // Growths 60, 20 and 80: the median is 60, under the target.
        // Over the restarted 30 MiB: 90, 70 and 130.
        has(
            "Growth over idle: 60.0 MiB, the median of 3 runs (20.0–80.0); target ≤ 64 MiB: met. Over the processes as restarted, before the warm-up: 90.0 MiB (70.0–130.0).",
        );
        assert!(!text.contains("Not measured"), "{text}");
    }

    #[test]
    fn a_part_that_failed_says_why() {
        let incidents = Incidents {
            creates: Err("pgbench is missing".to_owned()),
            flat: Err("seeding reports.reports: timeout".to_owned()),
        };
        let mut text = String::new();
        incidents.render(&mut text);
        super::render_uploads(&Err("an uploader's report: 503".to_owned()), &mut text);
        assert!(
            text.contains("Creates against pgbench were not measured: pgbench is missing."),
            "{text}"
        );
        assert!(
            text.contains("The list and nearby alerts were not measured: seeding reports.reports: timeout."),
            "{text}"
        );
        assert!(
            text.contains("### 20 concurrent 10 MiB uploads\n\nNot measured: an uploader's report: 503 (target: the resident memory of the gateway plus reports-service grows by at most 64 MiB over idle)."),
            "{text}"
        );
    }

    #[test]
    fn uploads_that_failed_are_not_met_whatever_the_memory() {
        let uploads = Ok(Uploads {
            runs: vec![
                upload_run([20, 40], [21, 41], 20, &[]),
                upload_run(
                    [20, 40],
                    [21, 41],
                    17,
                    &["413 {\"code\":\"PAYLOAD_TOO_LARGE\"}", "connection reset"],
                ),
                upload_run([20, 40], [21, 41], 20, &[]),
            ],
        });
        let mut text = String::new();
        super::render_uploads(&uploads, &mut text);
        assert!(
            text.contains("Growth over idle: 2.0 MiB, the median of 3 runs (2.0–2.0); target ≤ 64 MiB: not met: not every upload answered 201 (run 2: 3 of 20 failed, the first with 413 {\"code\":\"PAYLOAD_TOO_LARGE\"})."),
            "{text}"
        );
        assert!(text.contains("| 2 | 30.0 | 60.0 | 62.0 | 2.0 |"), "{text}");
    }
}
