//! Measuring a group of scenarios: full-speed runs and half-rate rounds, the scenarios taking
//! turns, and what they cost the processes under load (CPU, memory, the gateway's own latency,
//! Redis's rate-limit decisions).

use super::ROUNDS;
use super::oha::{Generator, Run};
use super::procfs::{family_cpu, family_peak_rss, usage};
use super::scenarios::HEALTH;
use crate::nginx::Nginx;
use crate::platform::Platform;

/// Something to load: a scenario's row name, what it loads, a URL, oha's arguments for it, and its
/// connections.
pub(super) struct Target<'a> {
    pub(super) name: String,
    pub(super) load: Load<'a>,
    pub(super) url: String,
    pub(super) args: Vec<String>,
    pub(super) connections: u32,
}

/// A target's runs: [`ROUNDS`] at full speed, then as many at half the median of those.
pub(super) struct Measured {
    pub(super) maxes: Vec<Run>,
    pub(super) half: u32,
    pub(super) rounds: Vec<Run>,
}

impl Measured {
    fn ratio(run: &Run) -> f64 {
        run.latency.p99 / run.latency.p50
    }

    /// The round with the median p99/p50 (NaN, from a round without figures, sorts last).
    pub(super) fn median(&self) -> &Run {
        let key = |r: &Run| Some(Self::ratio(r)).filter(|x| !x.is_nan()).unwrap_or(f64::INFINITY);
        let mut order: Vec<&Run> = self.rounds.iter().collect();
        order.sort_by(|a, b| key(a).total_cmp(&key(b)));
        order[order.len() / 2]
    }

    /// "4.8 (4.0–6.8)": the median round's p99/p50 and the range of all rounds.
    pub(super) fn ratio_text(&self) -> String {
        let ratios = self.rounds.iter().map(Self::ratio);
        let low = ratios.clone().fold(f64::INFINITY, f64::min);
        let high = ratios.fold(f64::NEG_INFINITY, f64::max);
        format!("{:.1} ({low:.1}–{high:.1})", Self::ratio(self.median()))
    }

    /// The full-speed run with the median rate.
    pub(super) fn max(&self) -> &Run {
        let mut order: Vec<&Run> = self.maxes.iter().collect();
        order.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        order[order.len() / 2]
    }

    /// Requests answered 2xx, 5xx or failed, and 429, over all runs.
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        self.maxes
            .iter()
            .chain(&self.rounds)
            .fold((0, 0, 0), |(ok, errors, limited), r| {
                (ok + r.ok, errors + r.errors, limited + r.limited)
            })
    }
}

/// One scenario of the report.
pub(super) struct Row {
    pub(super) name: String,
    pub(super) measured: Measured,
    /// The gateway's own p50 / p99 (ms) over the half-rate rounds, when it has them.
    pub(super) inside: Option<(f64, f64)>,
    /// CPU / memory per process.
    pub(super) cpu: String,
    pub(super) edge: Option<EdgeCost>,
}

/// What the edge cost per request over all runs of a scenario (ours only).
pub(super) struct EdgeCost {
    /// The gateway's CPU µs per request answered.
    pub(super) gateway_us: f64,
    /// Redis's CPU µs per rate-limit decision (Redis serves the whole group: its CPU is shared
    /// among the group's decisions), when there were decisions.
    pub(super) redis_us: Option<f64>,
    /// Decisions per script call.
    pub(super) per_call: Option<f64>,
}

/// The processes every scenario of ours shares: Redis, and PostgreSQL's postmaster (its backends
/// are its children).
#[derive(Clone, Copy)]
pub(super) struct Shared {
    pub(super) redis: u32,
    pub(super) postmaster: Option<u32>,
}

/// [`ROUNDS`] of each target at full speed, the targets taking turns within each round, so that
/// a quiet or a noisy spell of the host falls on all of them alike.
fn full_speed(generator: &Generator, targets: &[Target]) -> anyhow::Result<Vec<Vec<Run>>> {
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (t, r) in targets.iter().zip(runs.iter_mut()) {
            r.push(generator.run(&t.url, &t.args, t.connections, None, None)?);
        }
    }
    Ok(runs)
}

/// [`ROUNDS`] at half of each target's median full speed, the targets taking turns again.
fn rounds(generator: &Generator, targets: &[Target], maxes: Vec<Vec<Run>>) -> anyhow::Result<Vec<Measured>> {
    let mut measured: Vec<Measured> = maxes
        .into_iter()
        .map(|maxes| {
            let mut m = Measured {
                maxes,
                half: 0,
                rounds: Vec::new(),
            };
            m.half = ((m.max().rps / 2.0).floor() as u32).max(1);
            m
        })
        .collect();
    for _ in 0..ROUNDS {
        for (t, m) in targets.iter().zip(measured.iter_mut()) {
            m.rounds
                .push(generator.run(&t.url, &t.args, t.connections, Some(m.half), None)?);
        }
    }
    Ok(measured)
}

/// A group's rows: its targets at full speed and in rounds at half rate, taking turns, with the
/// CPU, memory and gateway figures taken around those runs.
pub(super) fn group(generator: &Generator, shared: Shared, group: &[Target]) -> anyhow::Result<Vec<Row>> {
    let before: Vec<Usage> = group.iter().map(|t| t.load.usage()).collect();
    let shared_before = (usage(shared.redis).0, shared.postmaster.map_or(0.0, family_cpu));
    let batches_before: Vec<_> = group.iter().map(|t| t.load.batches()).collect();
    let max = full_speed(generator, group)?;
    let hist_before: Vec<_> = group.iter().map(|t| t.load.histogram(&t.url)).collect();
    let measured = rounds(generator, group, max)?;
    let redis_cpu = usage(shared.redis).0 - shared_before.0;
    let shared_cpu = format!(
        "redis {redis_cpu:.1}s, postgres {:.1}s",
        shared.postmaster.map_or(0.0, family_cpu) - shared_before.1
    );
    let batches: Vec<Option<(f64, f64)>> = group
        .iter()
        .zip(&batches_before)
        .map(|(t, before)| {
            let ((sum, count), (sum0, count0)) = (t.load.batches()?, (*before)?);
            Some((sum - sum0, count - count0))
        })
        .collect();
    let decisions: f64 = batches.iter().flatten().map(|b| b.0).sum();
    let mut rows = Vec::new();
    for (((t, m), (before, hist)), batches) in group
        .iter()
        .zip(measured)
        .zip(before.into_iter().zip(hist_before))
        .zip(batches)
    {
        let inside = gateway_percentiles(&hist, &t.load.histogram(&t.url));
        let now = t.load.usage();
        let gateway_cpu = now.cpu_since(&before, "gateway");
        let mut cpu = now.since(&before);
        if matches!(t.load, Load::Stack(_)) {
            cpu = format!("{cpu}, {shared_cpu}");
        }
        eprintln!("xtask: {}: {:.0} req/s max", t.name, m.max().rps);
        let (ok, errors, limited) = m.counts();
        let answered = (ok + errors + limited).max(1) as f64;
        let edge = gateway_cpu.zip(batches).map(|(cpu, (sum, count))| EdgeCost {
            gateway_us: 1e6 * cpu / answered,
            redis_us: (sum > 0.0).then(|| 1e6 * redis_cpu / decisions),
            per_call: (count > 0.0).then(|| sum / count),
        });
        rows.push(Row {
            name: t.name.clone(),
            measured: m,
            inside,
            cpu,
            edge,
        });
    }
    Ok(rows)
}

/// The host's own floor at the rate of our `/health`'s rounds, when `group` has that scenario: a
/// trivial plain-HTTP handler (the gateway's admin /health: no TLS, no Redis), so the report shows
/// how much of the tail this machine adds to any path.
pub(super) fn floor(generator: &Generator, group: &[Target], rows: &[Row]) -> anyhow::Result<Option<(u32, Run)>> {
    for (t, row) in group.iter().zip(rows) {
        if t.name == HEALTH
            && let Load::Stack(platform) = t.load
        {
            let admin = format!("http://127.0.0.1:{}/health", platform.ports.gateway_admin);
            let half = row.measured.half;
            return Ok(Some((half, generator.run(&admin, &[], 64, Some(half), None)?)));
        }
    }
    Ok(None)
}

/// What a target loads, for its CPU, memory and (ours) the gateway's own latency histogram.
pub(super) enum Load<'a> {
    Stack(&'a Platform),
    Nginx(&'a Nginx),
}

/// CPU seconds and peak RSS (KiB) per process.
struct Usage(Vec<(&'static str, f64, u64)>);

impl Usage {
    /// CPU seconds of the process named `name` since `before`.
    fn cpu_since(&self, before: &Usage, name: &str) -> Option<f64> {
        let cpu = |u: &Usage| u.0.iter().find(|(n, _, _)| *n == name).map(|(_, cpu, _)| *cpu);
        Some(cpu(self)? - cpu(before)?)
    }

    /// "gateway 1.2s/30 MiB, auth …": CPU since `before`, peak memory so far.
    fn since(&self, before: &Usage) -> String {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((name, cpu, rss), (_, was, _))| format!("{name} {:.1}s/{} MiB", cpu - was, rss / 1024))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Load<'_> {
    fn usage(&self) -> Usage {
        match self {
            Load::Stack(p) => Usage(
                [
                    ("gateway", p.gateway.pid()),
                    ("auth", p.auth.pid()),
                    ("reports", p.reports.pid()),
                    ("analytics", p.analytics.pid()),
                ]
                .into_iter()
                .map(|(name, pid)| {
                    let (cpu, rss) = usage(pid.unwrap_or(0));
                    (name, cpu, rss)
                })
                .collect(),
            ),
            Load::Nginx(n) => Usage(vec![(
                "nginx (both nginx rows)",
                family_cpu(n.pid()),
                family_peak_rss(n.pid()),
            )]),
        }
    }

    /// The gateway's rate-limit decisions sent to Redis so far and the script calls that carried
    /// them (`rate_limit_redis_batch_size`); nothing for nginx.
    fn batches(&self) -> Option<(f64, f64)> {
        match self {
            Load::Stack(p) => {
                let (_, text) = crate::platform::http_get(p.ports.gateway_admin, "/metrics")?;
                let metric = |series| crate::platform::metric_value(&text, series).unwrap_or(0.0);
                Some((
                    metric("rate_limit_redis_batch_size_sum"),
                    metric("rate_limit_redis_batch_size_count"),
                ))
            }
            Load::Nginx(_) => None,
        }
    }

    /// The gateway's histogram of the route `url` names; nothing for nginx.
    fn histogram(&self, url: &str) -> Vec<(f64, f64)> {
        match self {
            Load::Stack(p) => {
                let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
                let route = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
                gateway_histogram(p.ports.gateway_admin, route)
            }
            Load::Nginx(_) => Vec::new(),
        }
    }
}

/// The gateway's cumulative `http_request_duration_seconds` buckets of one route: (upper bound in
/// seconds, count), `+Inf` as infinity.
fn gateway_histogram(admin_port: u16, route: &str) -> Vec<(f64, f64)> {
    let Some((_, text)) = crate::platform::http_get(admin_port, "/metrics") else {
        return Vec::new();
    };
    let label = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_bucket{") && l.contains(&label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            let count = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// p50 and p99 in milliseconds of the requests between two snapshots of a histogram, by linear
/// interpolation within buckets: the time inside the gateway, from request headers read to
/// response ready (so without the time a request waits to be read, or its response to be sent).
fn gateway_percentiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<(f64, f64)> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let quantile = |q: f64| {
        let target = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, n) in &delta {
            if *n >= target {
                if le.is_infinite() {
                    return lower * 1000.0;
                }
                let share = if *n > below {
                    (target - below) / (n - below)
                } else {
                    0.0
                };
                return (lower + (le - lower) * share) * 1000.0;
            }
            (lower, below) = (*le, *n);
        }
        lower * 1000.0
    };
    Some((quantile(0.5), quantile(0.99)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::oha::{Latency, Run};

    /// A run with these figures (p90 = p50, max = p99), one error, no 429.
    pub(in super::super) fn run(p50: f64, p99: f64, ok: u64) -> Run {
        Run {
            rps: 0.0,
            latency: Latency {
                p50,
                p90: p50,
                p99,
                max: p99,
            },
            errors: 1,
            limited: 0,
            ok,
            generator_cpus: 0.5,
            steady: None,
        }
    }

    #[test]
    fn the_median_round_and_the_range_are_reported() {
        let m = super::Measured {
            maxes: vec![run(1.0, 2.0, 100)],
            half: 50,
            rounds: vec![run(1.0, 9.0, 10), run(2.0, 6.0, 10), run(1.0, 5.0, 10)],
        };
        assert_eq!(m.median().latency.p99, 5.0, "ratios 9, 3 and 5: the median is 5");
        assert_eq!(m.ratio_text(), "5.0 (3.0–9.0)");
        assert_eq!(m.counts(), (130, 4, 0));
        let rates = super::Measured {
            maxes: [300.0, 100.0, 200.0]
                .map(|rps| Run {
                    rps,
                    ..run(1.0, 2.0, 1)
                })
                .into(),
            half: 0,
            rounds: Vec::new(),
        };
        assert_eq!(rates.max().rps, 200.0, "the full-speed run with the median rate");
        let without = super::Measured {
            rounds: vec![run(f64::NAN, f64::NAN, 0), run(1.0, 3.0, 10), run(1.0, 4.0, 10)],
            ..m
        };
        assert_eq!(without.median().latency.p99, 4.0, "a round without figures sorts last");
    }

    #[test]
    fn percentiles_of_the_requests_between_two_snapshots() {
        let before = [(0.001, 10.0), (0.002, 10.0), (0.004, 10.0), (f64::INFINITY, 10.0)];
        // 100 new requests: 50 under 1 ms, 49 in 1..2 ms, 1 in 2..4 ms.
        let after = [(0.001, 60.0), (0.002, 109.0), (0.004, 110.0), (f64::INFINITY, 110.0)];
        let (p50, p99) = super::gateway_percentiles(&before, &after).expect("requests");
        assert!((p50 - 1.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 2.0).abs() < 1e-9, "{p99}");
        assert!(
            super::gateway_percentiles(&after, &after).is_none(),
            "no requests, no figures"
        );
    }
}
