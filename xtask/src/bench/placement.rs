//! Which CPUs the benchmark's parts run on: the load generator apart from the stack, or all
//! together.

use anyhow::{Context as _, bail};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::devstack;

/// Where the benchmark runs. With `--load-cpus`, the load generator has those CPUs and everything
/// else (PostgreSQL, Redis, the services) the others, so neither takes the other's time slices and
/// the tail measured is the stack's own rather than the scheduler's.
pub struct Placement {
    pub(super) all: CpuSet,
    pub(super) load: Option<CpuSet>,
    pub(super) stack: CpuSet,
    pub(super) described: String,
}

pub(super) fn cpus_of(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

pub(super) fn list(cpus: &[usize]) -> String {
    cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// A CPU list as `taskset` and cgroups write it: `0`, `0,2`, `1-3`.
fn parse_cpu_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .with_context(|| format!("CPU list {text:?}: {part:?} is not a CPU number or range"))
        };
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last) = (number(first)?, number(last)?);
        anyhow::ensure!(first <= last, "CPU list {text:?}: range {part:?} runs backwards");
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The services' runtime threads on `stack_cpus`, as the report says them.
fn threads_described(stack_cpus: usize) -> String {
    format!(
        "each gRPC service with `WORKER_THREADS={}`",
        super::stack::service_threads(stack_cpus)
    )
}

impl Placement {
    /// Splits the CPUs this process may use. Call it before any other thread starts: threads and
    /// processes inherit the CPUs of the thread that starts them.
    pub fn new(load_cpus: Option<&str>) -> anyhow::Result<Self> {
        let all = sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPUs")?;
        let usable = cpus_of(&all);
        let Some(text) = load_cpus else {
            return Ok(Self {
                stack: all,
                all,
                load: None,
                described: format!(
                    "load from oha on the same {} CPUs as the stack; {}",
                    usable.len(),
                    threads_described(usable.len())
                ),
            });
        };
        let wanted = parse_cpu_list(text)?;
        if let Some(cpu) = wanted.iter().find(|c| !usable.contains(c)) {
            bail!(
                "--load-cpus {text}: CPU {cpu} is not one this process may use ({})",
                list(&usable)
            );
        }
        let rest: Vec<usize> = usable.iter().copied().filter(|c| !wanted.contains(c)).collect();
        anyhow::ensure!(
            !wanted.is_empty() && !rest.is_empty(),
            "--load-cpus {text}: both the load generator and the stack need at least one CPU of {}",
            list(&usable)
        );
        let set = |cpus: &[usize]| -> anyhow::Result<CpuSet> {
            let mut set = CpuSet::new();
            for &c in cpus {
                set.set(c).with_context(|| format!("CPU {c}"))?;
            }
            Ok(set)
        };
        Ok(Self {
            all,
            load: Some(set(&wanted)?),
            stack: set(&rest)?,
            described: format!(
                "load from oha on CPU {}, everything else (PostgreSQL, Redis, the services) on CPU {}; {}",
                list(&wanted),
                list(&rest),
                threads_described(rest.len())
            ),
        })
    }

    /// Builds the release binaries on every CPU, then keeps the calling thread (and so every
    /// thread and process it starts afterwards) on the stack's CPUs.
    pub fn build_and_pin(&self) -> anyhow::Result<()> {
        eprintln!("xtask: building release binaries (cargo build --release --workspace --bins)");
        devstack::run(
            devstack::cargo().args(["build", "--release", "--workspace", "--bins"]),
            "the release build",
        )?;
        sched_setaffinity(Pid::from_raw(0), &self.stack).context("keeping the stack on its CPUs")
    }
}

/// Runs `f` on a thread of its own on `cpus`; whatever it starts runs there too.
pub(super) fn on_cpus<T: Send>(cpus: &CpuSet, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            sched_setaffinity(Pid::from_raw(0), cpus).context("moving a thread to its CPUs")?;
            f()
        });
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists_read_as_taskset_writes_them() {
        assert_eq!(super::parse_cpu_list("0").expect("one CPU"), vec![0]);
        assert_eq!(super::parse_cpu_list("3, 0-1,1").expect("mixed"), vec![0, 1, 3]);
        for bad in ["", "a", "2-1", "0-", "-1", "0,,1"] {
            assert!(super::parse_cpu_list(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
