//! The benchmark's Markdown report, rendered from what was measured: the scenario table, the
//! protected / unprotected ratio, CPU per request, the comparison with nginx, the host's floor and
//! the in-process figures. No measuring here, so the wording and arithmetic can be tested alone.

use std::fmt::Write as _;

use super::ROUNDS;
use super::incidents::Incidents;
use super::measure::{Measured, Row};
use super::oha::{Run, WARM_UP_SECONDS};
use super::scenarios::{FAILED_LOGIN_RATE, HEALTH, LOGIN, ME_CHECKS_OFF, ME_PROTECTED, NGINX_LIMITED, NGINX_STATIC};

/// Everything the report says.
pub(super) struct Report {
    /// When the benchmark ran, as the report's file is named: `2026-11-29T10-24-21Z`.
    pub(super) taken: String,
    /// CPUs of the whole benchmark.
    pub(super) cores: usize,
    /// `--seconds`.
    pub(super) seconds: u64,
    /// `--load-cpus`, as a CPU list, when given.
    pub(super) load_cpus: Option<String>,
    /// Where the load generator and the stack ran, in words.
    pub(super) placement: String,
    pub(super) rows: Vec<Row>,
    /// The rate of `/health`'s rounds and a run at it against a trivial plain-HTTP handler.
    pub(super) floor: Option<(u32, Run)>,
    /// Failed logins at a low fixed rate, per case.
    pub(super) timing: Vec<(String, Run)>,
    /// Why nginx was not measured, when it was not.
    pub(super) reference_missing: Option<String>,
    /// CPUs of the stack, on which the hash rate was measured.
    pub(super) stack_cpus: usize,
    /// argon2id hashes per second on those CPUs.
    pub(super) hashes: f64,
    /// µs to verify a token the first time, and again (cache).
    pub(super) verify: (f64, f64),
    /// The incident-report rows (issue 18).
    pub(super) incidents: Incidents,
    /// The host's load average (1, 5, 15 min) when the benchmark began and when it ended: the
    /// machine may be shared.
    pub(super) host_load: (String, String),
}

impl Report {
    fn row(&self, name: &str) -> Option<&Measured> {
        self.rows.iter().find(|r| r.name == name).map(|r| &r.measured)
    }

    pub(super) fn render(&self) -> String {
        let mut report = String::new();
        self.header(&mut report);
        self.table(&mut report);
        self.edge(&mut report);
        self.nginx(&mut report);
        self.in_process(&mut report);
        self.incidents.render(&mut report);
        report
    }

    fn header(&self, report: &mut String) {
        let _ = writeln!(report, "# Benchmark report {}\n", self.taken);
        let _ = writeln!(
            report,
            "Machine: {} cores; `cargo xtask bench --seconds {}{}`; release build; {}.\n",
            self.cores,
            self.seconds,
            self.load_cpus
                .as_ref()
                .map_or_else(String::new, |l| format!(" --load-cpus {l}")),
            self.placement
        );
        let _ = writeln!(
            report,
            "Host load average (1, 5, 15 min): {} when the benchmark began, {} when it ended.\n",
            self.host_load.0, self.host_load.1
        );
    }

    fn table(&self, report: &mut String) {
        let _ = writeln!(
            report,
            "| scenario | max req/s | ok | 5xx+errors | 429 | at half rate (req/s) | p50 ms | p90 ms | p99 ms | max ms | p99/p50: median of {ROUNDS} rounds (range) | inside the gateway p50 / p99 ms | oha's CPUs busy (max / half) | oha behind schedule (windows) | CPU s / peak RSS (all runs of the row's group, in which rows taking turns idle while the others run; Redis and PostgreSQL serve the whole group; PostgreSQL with all its backends, nginx with its workers) |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for Row {
            name,
            measured: m,
            inside,
            cpu,
            ..
        } in &self.rows
        {
            let inside = inside.map_or_else(|| "n/a".to_owned(), |(p50, p99)| format!("{p50:.2} / {p99:.2}"));
            let median = m.median();
            let behind = median
                .steady
                .as_ref()
                .map_or_else(|| "n/a".to_owned(), |s| format!("{} of {}", s.late_windows, s.windows));
            let (ok, errors, limited) = m.counts();
            let _ = writeln!(
                report,
                "| {name} | {:.0} | {ok} | {errors} | {limited} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {inside} | {:.2} / {:.2} | {behind} | {cpu} |",
                m.max().rps,
                m.half,
                median.latency.p50,
                median.latency.p90,
                median.latency.p99,
                median.latency.max,
                m.ratio_text(),
                m.max().generator_cpus,
                median.generator_cpus
            );
        }
    }

    /// What the edge checks cost: throughput with and without them, and CPU per request.
    fn edge(&self, report: &mut String) {
        if let (Some(p), Some(o)) = (self.row(ME_PROTECTED), self.row(ME_CHECKS_OFF)) {
            // One decimal: a whole percent rounded 84.7% up to a target of 85% it does not meet.
            let share = 100.0 * p.max().rps / o.max().rps;
            let _ = writeln!(
                report,
                "\nProtected / unprotected throughput: {share:.1}% (target ≥ 85%: {}; medians of {ROUNDS} full-speed runs each, taking turns).",
                if share >= 85.0 { "met" } else { "not met" }
            );
        }
        let costs: Vec<String> = self
            .rows
            .iter()
            .filter_map(|Row { name, edge, .. }| {
                let edge = edge.as_ref()?;
                let redis = match (edge.redis_us, edge.per_call) {
                    (Some(redis), Some(per_call)) => {
                        format!(
                            "; Redis {redis:.1} µs per rate-limit decision, {per_call:.2} decisions per script call"
                        )
                    }
                    _ => String::new(),
                };
                Some(format!("- {name}: gateway {:.0} µs{redis}", edge.gateway_us))
            })
            .collect();
        if !costs.is_empty() {
            let _ = writeln!(
                report,
                "\nCPU per request, over all runs of each scenario (the gateway's CPU over the requests answered; Redis's over the rate-limit decisions of the scenario's group, which `rate_limit_redis_batch_size` also counts per script call; Redis also serves auth-service, whose login counters are most of it in the login row):\n\n{}",
                costs.join("\n")
            );
        }
        let warm_up: usize = self
            .rows
            .iter()
            .flat_map(|r| &r.measured.rounds)
            .filter_map(|run| run.steady.as_ref())
            .map(|s| s.warm_up)
            .sum();
        let _ = writeln!(
            report,
            "\nLatencies at half rate are of the steady state: each run's first {WARM_UP_SECONDS} s ({warm_up} requests in all runs) is left out as warm-up, while oha opens its connections (a TLS handshake each) and its schedule runs on; wrk2 likewise leaves out its calibration. Each scenario runs {ROUNDS} times at full speed (its row shows the median) and {ROUNDS} rounds at half that rate (its row shows the round with the median p99/p50); the scenarios of a group (our `/health` with nginx's, `/v1/me` protected with edge checks off) take turns within each round, so that a quiet or a noisy spell of the host falls on all of them alike. \"oha behind schedule\" counts the windows (100 ms, or 20 requests' worth at low rates) in which oha started fewer than 90% of the requests due: it pauses now and then by itself (for tens of milliseconds when its store of results doubles), and the requests due meanwhile go out late and together, so their latency is partly the generator's. A pause that holds up only its reading of responses is not counted there, but still lengthens those requests."
        );
    }

    /// Our `/health` beside nginx's, and the host's floor.
    fn nginx(&self, report: &mut String) {
        let nginx_row = |what: &str| {
            self.rows
                .iter()
                .find(|r| r.name.starts_with("nginx") && r.name.ends_with(what))
                .map(|r| &r.measured)
        };
        match (
            self.row(HEALTH),
            nginx_row(NGINX_STATIC),
            nginx_row(NGINX_LIMITED),
            &self.reference_missing,
        ) {
            (Some(ours), Some(plain), Some(limited), _) => {
                let _ = writeln!(
                    report,
                    "\nSide by side with nginx (same CPUs, certificate and load generator; taking turns at full speed and at half rate):\n\n- `GET /health`: ours {:.0} req/s, {:.0}% of nginx's {:.0} (nginx answers from its configuration; ours also passes the global per-IP rate limit in Redis).\n- Rate limiting: nginx behind `limit_req` keeps {:.0}% of its static throughput (its counters live in its own memory, not shared between instances as ours are).\n- p99/p50 at half rate (target < 4), median (range) of {ROUNDS} rounds: ours {} on `/health`, nginx {} static and {} behind `limit_req`.",
                    ours.max().rps,
                    100.0 * ours.max().rps / plain.max().rps,
                    plain.max().rps,
                    100.0 * limited.max().rps / plain.max().rps,
                    ours.ratio_text(),
                    plain.ratio_text(),
                    limited.ratio_text(),
                );
            }
            (_, _, _, Some(why)) => {
                let _ = writeln!(report, "\nThe nginx reference was not measured: {why}.");
            }
            _ => {}
        }

        if let Some((rate, run)) = &self.floor {
            let _ = writeln!(
                report,
                "\nFloor of this host: the same load at {rate} req/s against a trivial plain-HTTP handler (the gateway's admin `/health`: no TLS, no Redis): p50 {:.2} ms, p99 {:.2} ms (p99/p50 {:.1}): the tail this host and load generator add to any path at this rate (oha kept {:.2} CPUs busy).",
                run.latency.p50,
                run.latency.p99,
                run.latency.p99 / run.latency.p50,
                run.generator_cpus
            );
        }
    }

    /// Password hashing against the login rate, failed-login timing, token verification.
    fn in_process(&self, report: &mut String) {
        let (stack_cpus, hashes) = (self.stack_cpus, self.hashes);
        let login = self.row(LOGIN).map_or(0.0, |m| m.max().rps);
        let _ = writeln!(
            report,
            "\nargon2id (m=19456 KiB, t=2, p=1) on the stack's CPUs ({stack_cpus}): {hashes:.1} hashes/s; logins: {login:.1}/s; login overhead beyond the hash: {:.0}% (target < 20%).",
            100.0 * (hashes - login).max(0.0) / hashes.max(f64::MIN_POSITIVE)
        );
        let _ = writeln!(
            report,
            "\nFailed logins at {FAILED_LOGIN_RATE}/s (status 401 for all, same body):\n"
        );
        let _ = writeln!(report, "| case | p50 ms | p90 ms | p99 ms |");
        let _ = writeln!(report, "|---|---|---|---|");
        for (what, run) in &self.timing {
            let _ = writeln!(
                report,
                "| {what} | {:.2} | {:.2} | {:.2} |",
                run.latency.p50, run.latency.p90, run.latency.p99
            );
        }
        let (first, cached) = self.verify;
        let _ = writeln!(
            report,
            "\nToken verification, release build (`cargo run --release -p service-kit --example verify_cost`): {first:.1} µs for a token seen the first time (signature + claims; target < 50 µs), {cached:.2} µs for a token verified before (cache)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::incidents::Incidents;
    use super::super::measure::tests::run;
    use super::super::measure::{EdgeCost, Measured, Row};
    use super::super::oha::Run;
    use super::Report;

    /// A row whose three full-speed runs have the median rate `rps`, and whose half-rate rounds
    /// have p99/p50 ratios 3, 5 and 9.
    fn row(name: &str, rps: f64, edge: Option<EdgeCost>) -> Row {
        let at = |rps| Run {
            rps,
            ..run(1.0, 2.0, 100)
        };
        Row {
            name: name.to_owned(),
            measured: Measured {
                maxes: vec![at(rps * 1.1), at(rps), at(rps * 0.9)],
                half: (rps / 2.0) as u32,
                rounds: vec![run(1.0, 9.0, 10), run(2.0, 6.0, 10), run(1.0, 5.0, 10)],
            },
            inside: Some((0.25, 1.5)),
            cpu: "gateway 1.2s/30 MiB".to_owned(),
            edge,
        }
    }

    fn report(nginx: Option<&str>) -> Report {
        let mut rows = vec![row(
            "GET /health",
            10_000.0,
            Some(EdgeCost {
                gateway_us: 45.6,
                redis_us: Some(3.25),
                per_call: Some(12.5),
            }),
        )];
        if nginx.is_none() {
            rows.push(row("nginx/1.22.1: GET /health (static)", 40_000.0, None));
            rows.push(row("nginx/1.22.1: GET /health behind limit_req per IP", 30_000.0, None));
        }
        rows.push(row("GET /v1/me (protected)", 847.0, None));
        rows.push(row("GET /v1/me (edge checks off)", 1000.0, None));
        rows.push(row("POST /v1/auth/login", 30.0, None));
        Report {
            taken: "2026-12-06T11-00-00Z".to_owned(),
            cores: 4,
            seconds: 10,
            load_cpus: Some("0".to_owned()),
            placement: "load from oha on CPU 0".to_owned(),
            rows,
            floor: Some((5000, run(0.5, 1.0, 100))),
            timing: vec![("unknown e-mail".to_owned(), run(2.5, 4.0, 40))],
            reference_missing: nginx.map(str::to_owned),
            stack_cpus: 3,
            hashes: 40.0,
            verify: (31.25, 0.456),
            incidents: Incidents {
                creates: Err("not run".to_owned()),
                flat: Err("not run".to_owned()),
            },
            host_load: ("1.00 0.50 0.25".to_owned(), "2.00 1.00 0.50".to_owned()),
        }
    }

    #[test]
    fn the_report_computes_its_ratios_from_the_median_runs() {
        let text = report(None).render();
        let lines: Vec<&str> = text.lines().collect();
        let has = |line: &str| assert!(lines.contains(&line), "{line:?} missing from\n{text}");
        has("# Benchmark report 2026-12-06T11-00-00Z");
        has("Machine: 4 cores; `cargo xtask bench --seconds 10 --load-cpus 0`; release build; load from oha on CPU 0.");
        // The median full-speed rate, the round with the median p99/p50 (5), all 6 runs counted.
        has(
            "| GET /v1/me (protected) | 847 | 330 | 6 | 0 | 423 | 1.00 | 1.00 | 5.00 | 5.00 | 5.0 (3.0–9.0) | 0.25 / 1.50 | 0.50 / 0.50 | n/a | gateway 1.2s/30 MiB |",
        );
        // 847 / 1000 is 84.7%: one decimal, so a figure just under the target is not rounded up to it.
        has(
            "Protected / unprotected throughput: 84.7% (target ≥ 85%: not met; medians of 3 full-speed runs each, taking turns).",
        );
        has("- GET /health: gateway 46 µs; Redis 3.2 µs per rate-limit decision, 12.50 decisions per script call");
        has(
            "- `GET /health`: ours 10000 req/s, 25% of nginx's 40000 (nginx answers from its configuration; ours also passes the global per-IP rate limit in Redis).",
        );
        has(
            "- Rate limiting: nginx behind `limit_req` keeps 75% of its static throughput (its counters live in its own memory, not shared between instances as ours are).",
        );
        has(
            "- p99/p50 at half rate (target < 4), median (range) of 3 rounds: ours 5.0 (3.0–9.0) on `/health`, nginx 5.0 (3.0–9.0) static and 5.0 (3.0–9.0) behind `limit_req`.",
        );
        assert!(
            text.contains("Floor of this host: the same load at 5000 req/s against a trivial plain-HTTP handler (the gateway's admin `/health`: no TLS, no Redis): p50 0.50 ms, p99 1.00 ms (p99/p50 2.0)"),
            "{text}"
        );
        // 40 hashes/s against 30 logins/s: a quarter of the hash rate is lost to the rest of a login.
        has(
            "argon2id (m=19456 KiB, t=2, p=1) on the stack's CPUs (3): 40.0 hashes/s; logins: 30.0/s; login overhead beyond the hash: 25% (target < 20%).",
        );
        has("Host load average (1, 5, 15 min): 1.00 0.50 0.25 when the benchmark began, 2.00 1.00 0.50 when it ended.");
        has("Failed logins at 10/s (status 401 for all, same body):");
        has("| unknown e-mail | 2.50 | 2.50 | 4.00 |");
        assert!(text.contains(": 31.2 µs for a token seen the first time"), "{text}");
        assert!(!text.contains("was not measured"), "{text}");
    }

    #[test]
    fn without_nginx_the_report_says_why() {
        let text = report(Some("nginx exited (status 1)")).render();
        assert!(
            text.lines()
                .any(|l| l == "The nginx reference was not measured: nginx exited (status 1)."),
            "{text}"
        );
        assert!(!text.contains("Side by side with nginx"), "{text}");
        assert!(
            text.contains("Protected / unprotected throughput: 84.7%"),
            "our figures stay: {text}"
        );
    }
}
