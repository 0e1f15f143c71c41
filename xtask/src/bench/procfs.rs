//! CPU time and memory of the processes under load, from /proc.

/// Fields of `/proc/<pid>/stat` after the command name (state is index 0, ppid 1, utime 11, stime
/// 12, cutime 13, cstime 14).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn ticks(fields: &[String], indices: &[usize]) -> f64 {
    indices
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / 100.0
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process, from /proc.
pub(super) fn usage(pid: u32) -> (f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status_field_kib(&status, "VmHWM:").unwrap_or(0);
    (ticks(&stat_fields(pid), &[11, 12]), hwm)
}

/// Resident memory (KiB) of a process now: `VmRSS` of `/proc/<pid>/status`; `None` once it is
/// gone.
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:   123456 kB`).
fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pids of a process's running children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_fields(child).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// CPU seconds of a process and of its children, running or ended: PostgreSQL's work is done by
/// one backend process per connection, nginx's by its workers.
pub(super) fn family_cpu(pid: u32) -> f64 {
    let running: f64 = children(pid)
        .into_iter()
        .map(|c| ticks(&stat_fields(c), &[11, 12]))
        .sum();
    ticks(&stat_fields(pid), &[11, 12, 13, 14]) + running
}

/// Peak RSS (KiB) of a process and its running children, added up.
pub(super) fn family_peak_rss(pid: u32) -> u64 {
    usage(pid).1 + children(pid).into_iter().map(|c| usage(c).1).sum::<u64>()
}

/// The host's load average over 1, 5 and 15 minutes, as /proc/loadavg gives it.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tgateway\nVmHWM:\t  204800 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(super::status_field_kib(status, "VmRSS:"), Some(51_200));
        assert_eq!(super::status_field_kib(status, "VmHWM:"), Some(204_800));
        assert_eq!(super::status_field_kib(status, "VmSwap:"), None);
        assert_eq!(super::rss_kib(std::process::id()).map(|kib| kib > 0), Some(true));
    }
}
