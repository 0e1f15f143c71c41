//! The load generator: oha, its runs, and the steady state read from its record of each request.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::placement::{Placement, on_cpus};
use crate::devstack;

/// The load generator's version, installed when missing: its flags, its JSON report and the
/// table of its record of each request (`--db-url`) are what [`Generator::run`] reads.
const VERSION: &str = "1.16.0";

/// oha, installed with `cargo install oha --locked --version` [`VERSION`] when missing.
pub(super) fn install() -> anyhow::Result<std::path::PathBuf> {
    devstack::cargo_program_or_install("oha", "oha", VERSION)
}

/// Latency percentiles and maximum, in ms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

pub(super) struct Run {
    pub(super) rps: f64,
    /// At a fixed rate, of the steady state only (see [`Steady`]); at full speed, of the whole
    /// run as oha computed them.
    pub(super) latency: Latency,
    pub(super) errors: u64,
    pub(super) limited: u64,
    pub(super) ok: u64,
    /// CPUs the load generator kept busy (1.0 = one CPU all the time). Near the number of CPUs it
    /// has, the figures are the generator's limit, not the stack's.
    pub(super) generator_cpus: f64,
    /// At a fixed rate: what was left out as warm-up, and how often oha fell behind its schedule.
    pub(super) steady: Option<Steady>,
}

/// CPU seconds of this process's finished children (the load generator, run one at a time).
fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(u.user_time()) + seconds(u.system_time())
    })
}

/// Requests due in a run's first second are its warm-up, left out of the fixed-rate percentiles:
/// oha opens its connections (a TLS handshake each) while its schedule runs on, so those requests
/// wait for a connection, not for the server. Left in, the first 50 ms of a run alone were 0.6%
/// of its requests at up to 60 ms: a p99 of the generator's start. wrk2 likewise leaves out its
/// calibration period.
pub(super) const WARM_UP_SECONDS: f64 = 1.0;

/// A fixed-rate run's steady state, from oha's record of every successful request.
#[derive(Debug)]
pub(super) struct Steady {
    pub(super) latency: Latency,
    /// Requests left out as warm-up.
    pub(super) warm_up: usize,
    /// Windows of the schedule in which oha started fewer than 90% of the requests due, and all
    /// windows. oha stops for tens of milliseconds now and then (its own pauses: growing its store
    /// of results, at 2^k requests); requests due meanwhile go out late, in a burst, and their
    /// latency is the generator's as much as the server's.
    pub(super) late_windows: usize,
    pub(super) windows: usize,
}

/// The steady state of a run at `rate` per second lasting `seconds`, from `(due, took)` pairs in
/// seconds: when each request was due by the schedule (since the run began) and how long it took
/// from then.
pub(super) fn steady_state(records: &[(f64, f64)], rate: f64, seconds: f64) -> Option<Steady> {
    let mut took: Vec<f64> = records
        .iter()
        .filter(|(due, _)| *due >= WARM_UP_SECONDS)
        .map(|(_, t)| t * 1000.0)
        .collect();
    if took.is_empty() {
        return None;
    }
    took.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least q of the requests at or below it.
    let rank = |q: f64| took[((q * took.len() as f64).ceil() as usize).clamp(1, took.len()) - 1];
    // Windows long enough to expect 20 requests each (and at least 100 ms), so that the spacing of
    // a slow schedule does not read as falling behind.
    let width = (20.0 / rate).max(0.1);
    let windows = ((seconds - WARM_UP_SECONDS) / width).floor().max(0.0) as usize;
    let mut counts = vec![0usize; windows];
    for (due, _) in records {
        let slot = ((due - WARM_UP_SECONDS) / width).floor();
        if slot >= 0.0 && (slot as usize) < windows {
            counts[slot as usize] += 1;
        }
    }
    let expected = rate * width;
    Some(Steady {
        latency: Latency {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: took[took.len() - 1],
        },
        warm_up: records.len() - took.len(),
        late_windows: counts.iter().filter(|&&n| (n as f64) < 0.9 * expected).count(),
        windows,
    })
}

/// The load generator, and where its runs go.
pub(super) struct Generator<'a> {
    pub(super) placement: &'a Placement,
    pub(super) oha: std::path::PathBuf,
    /// sqlite3, to read oha's record of each request (`--db-url`).
    pub(super) sqlite: std::path::PathBuf,
    /// Where oha writes that record; replaced by each run.
    pub(super) records: std::path::PathBuf,
    pub(super) ca: std::path::PathBuf,
    pub(super) seconds: u64,
}

impl Generator<'_> {
    /// One oha run of `seconds` (the configured duration when None); `rate` None means as fast
    /// as `connections` allow.
    pub(super) fn run(
        &self,
        url: &str,
        args: &[String],
        connections: u32,
        rate: Option<u32>,
        seconds: Option<u64>,
    ) -> anyhow::Result<Run> {
        let seconds = seconds.unwrap_or(self.seconds);
        let mut cmd = Command::new(&self.oha);
        cmd.args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{seconds}s"),
            "-c",
            &connections.to_string(),
        ])
        .arg("--cacert")
        .arg(&self.ca)
        .args(args);
        if let Some(q) = rate {
            let _ = std::fs::remove_file(&self.records);
            cmd.args(["-q", &q.to_string(), "--latency-correction", "--db-url"])
                .arg(&self.records);
        }
        cmd.arg(url);
        let (cpu_before, started) = (children_cpu_seconds(), Instant::now());
        let placement = self.placement;
        let out = on_cpus(placement.load.as_ref().unwrap_or(&placement.all), || {
            devstack::output(&mut cmd, "oha")
        })?;
        let generator_cpus = (children_cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
        let v: Value = serde_json::from_slice(&out).context("oha's JSON report")?;
        let ms = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
        let codes = v["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
        let count = |f: &dyn Fn(u16) -> bool| -> u64 {
            codes
                .iter()
                .filter(|(k, _)| k.parse::<u16>().is_ok_and(f))
                .map(|(_, n)| n.as_u64().unwrap_or(0))
                .sum()
        };
        // Requests still in flight when the run's time is up are cut off by oha, not failed by us.
        let transport: u64 = v["errorDistribution"]
            .as_object()
            .map(|e| {
                e.iter()
                    .filter(|(k, _)| !k.contains("deadline"))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let steady = match rate {
            Some(q) => steady_state(&self.read_records()?, f64::from(q), seconds as f64),
            None => None,
        };
        let whole = Latency {
            p50: ms("p50"),
            p90: ms("p90"),
            p99: ms("p99"),
            max: v["summary"]["slowest"].as_f64().unwrap_or(f64::NAN) * 1000.0,
        };
        Ok(Run {
            rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
            latency: steady.as_ref().map_or(whole, |s| s.latency),
            errors: count(&|c| c >= 500) + transport,
            limited: count(&|c| c == 429),
            ok: count(&|c| (200..300).contains(&c)),
            generator_cpus,
            steady,
        })
    }

    /// oha's record of the last run: (due, took) in seconds per successful request.
    fn read_records(&self) -> anyhow::Result<Vec<(f64, f64)>> {
        let out = devstack::output(
            Command::new(&self.sqlite)
                .args(["-batch", "-noheader", "-separator", " "])
                .arg(&self.records)
                .arg("SELECT coalesce(start_latency_correction, start), duration FROM oha"),
            "sqlite3 on oha's records",
        )?;
        String::from_utf8_lossy(&out)
            .lines()
            .map(|line| {
                let mut fields = line.split(' ').map(str::parse::<f64>);
                match (fields.next(), fields.next()) {
                    (Some(Ok(due)), Some(Ok(took))) => Ok((due, took)),
                    _ => bail!("oha's records: unexpected line {line:?}"),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    /// Due every `1/rate` s from 0 to `seconds`, each taking `took` s.
    fn schedule(rate: f64, seconds: f64, took: f64) -> Vec<(f64, f64)> {
        (0..(rate * seconds) as usize)
            .map(|i| (i as f64 / rate, took))
            .collect()
    }

    #[test]
    fn the_warm_up_is_left_out_of_the_percentiles() {
        // 1000/s for 5 s at 1 ms, but the first second's requests took 60 ms.
        let mut records = schedule(1000.0, 5.0, 0.001);
        for r in records.iter_mut().filter(|r| r.0 < 1.0) {
            r.1 = 0.060;
        }
        // And 1% of the steady state (40 of 4000) took 9 ms: the p99 must see them, the p50 not.
        for r in records.iter_mut().skip(1000).step_by(100) {
            r.1 = 0.009;
        }
        let s = super::steady_state(&records, 1000.0, 5.0).expect("requests");
        assert_eq!(s.warm_up, 1000);
        assert!((s.latency.p50 - 1.0).abs() < 1e-9, "{s:?}");
        assert!(
            (s.latency.p99 - 1.0).abs() < 1e-9,
            "exactly 1% slower: the p99 is the last fast one {s:?}"
        );
        assert!((s.latency.max - 9.0).abs() < 1e-9, "{s:?}");
        records[1001].1 = 0.009;
        let s = super::steady_state(&records, 1000.0, 5.0).expect("requests");
        assert!(
            (s.latency.p99 - 9.0).abs() < 1e-9,
            "one more slow request tips the p99 {s:?}"
        );
        assert!(
            super::steady_state(&records[..1000], 1000.0, 5.0).is_none(),
            "warm-up only"
        );
    }

    #[test]
    fn windows_in_which_the_generator_paused_are_counted() {
        // 1000/s for 3 s; oha pauses from 1.45 s to 1.50 s and sends those 50 at 1.50 s.
        let mut records: Vec<(f64, f64)> = schedule(1000.0, 3.0, 0.001)
            .into_iter()
            .map(|(due, took)| {
                if (1.45..1.5).contains(&due) {
                    (1.5, took)
                } else {
                    (due, took)
                }
            })
            .collect();
        let s = super::steady_state(&records, 1000.0, 3.0).expect("requests");
        assert_eq!((s.late_windows, s.windows), (1, 20), "{s:?}");
        // Without the pause, none; a slow schedule (10/s over 4 s: one 2 s window) is not late.
        records = schedule(1000.0, 3.0, 0.001);
        assert_eq!(
            super::steady_state(&records, 1000.0, 3.0)
                .expect("requests")
                .late_windows,
            0
        );
        let slow = super::steady_state(&schedule(10.0, 4.0, 0.02), 10.0, 4.0).expect("requests");
        assert_eq!((slow.late_windows, slow.windows), (0, 1), "{slow:?}");
    }
}
