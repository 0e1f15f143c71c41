//! The attachments' row of issue 18: [`CLIENTS`] clients upload a 10 MiB PDF each, all at once,
//! through the protected gateway, while the resident memory of the gateway and reports-service is
//! sampled every [`SAMPLE_EVERY`]; how far it grows over idle says whether the bodies are streamed
//! or held whole somewhere on the way. Both processes are restarted and warmed up before each run,
//! so that every run starts from the same idle.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use super::ROUNDS;
use super::incidents::{http_client, report_body};
use super::placement::{Placement, on_cpus};
use super::procfs::rss_kib;
use super::stack::{self, Stack};
use crate::platform::Platform;

/// Uploads at once, each by its own user to its own report over its own connection.
pub(super) const CLIENTS: u32 = 20;
/// The file's size: just under `MAX_FILE_SIZE` (10 MiB), the "10 MiB" the issue means.
pub(super) const FILE_BYTES: usize = 10 * 1024 * 1024 - 1024;
const _: () = assert!(FILE_BYTES < 10 * 1024 * 1024, "under MAX_FILE_SIZE, which is taken");
/// How often both processes' VmRSS is read while the uploads run.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Samples before the uploads (half a second); idle is the largest of their sums.
pub(super) const IDLE_SAMPLES: usize = 25;
/// The target: the two processes together grow by at most this much over idle.
pub(super) const GROWTH_TARGET_MIB: f64 = 64.0;
/// The warm-up's file, sent by every client after each restart: small, so that it exercises the
/// path (connections, TLS, the gRPC channel, the database pool, the users' data keys) but leaves
/// no body-sized memory behind.
pub(super) const WARM_UP_BYTES: usize = 16 * 1024;
/// An upload that has not been answered by then failed.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// The processes whose memory is measured, in the order of [`Kib`].
pub(super) const PROCESSES: [&str; 2] = ["gateway", "reports-service"];
/// One reading of both processes' VmRSS (KiB), in the order of [`PROCESSES`].
pub(super) type Kib = [u64; 2];

/// The [`ROUNDS`] runs of the uploads, on the same users and reports.
pub(super) struct Uploads {
    pub(super) runs: Vec<UploadRun>,
}

/// One run: [`CLIENTS`] uploads at once.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct UploadRun {
    /// Both processes' VmRSS (KiB, summed) just after their restart, before the warm-up.
    pub(super) restarted: u64,
    pub(super) memory: Memory,
    /// From the first request sent to the last answer.
    pub(super) seconds: f64,
    /// Uploads answered 201.
    pub(super) created: u32,
    /// Why each other upload failed: its status and the start of its body, or the transport's error.
    pub(super) failures: Vec<String>,
}

impl UploadRun {
    /// Peak over the processes as restarted, before the warm-up (MiB): what the run cost a cold
    /// gateway and reports-service, connections and first-use allocations included.
    pub(super) fn cold_growth_mib(&self) -> f64 {
        (self.memory.peak as f64 - self.restarted as f64) / 1024.0
    }
}

/// What the samples of one run say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Memory {
    /// The largest sum of both processes among the idle samples, and that sample.
    pub(super) idle: u64,
    pub(super) idle_each: Kib,
    /// The largest sum while the uploads ran, and each process's own largest reading.
    pub(super) peak: u64,
    pub(super) peak_each: Kib,
    /// Readings taken while the uploads ran.
    pub(super) samples: usize,
}

impl Memory {
    /// Idle and peak from the samples before the uploads and those while they ran.
    pub(super) fn of(idle: &[Kib], during: &[Kib]) -> Self {
        let sum = |k: &Kib| k.iter().sum::<u64>();
        let idle_each = idle.iter().copied().max_by_key(sum).unwrap_or_default();
        let peak_each = [0, 1].map(|i| during.iter().map(|k| k[i]).max().unwrap_or(0));
        Self {
            idle: sum(&idle_each),
            idle_each,
            peak: during.iter().map(sum).max().unwrap_or(0),
            peak_each,
            samples: during.len(),
        }
    }

    /// Peak over idle, in MiB; negative when the processes gave memory back.
    pub(super) fn growth_mib(&self) -> f64 {
        (self.peak as f64 - self.idle as f64) / 1024.0
    }
}

/// A PDF of exactly `size` bytes as reports-service takes it: the `%PDF-1.` magic, comment lines
/// of filler (no byte of a ZIP signature, which would make it a polyglot), and a trailer.
pub(super) fn pdf(size: usize) -> Vec<u8> {
    const HEAD: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    const TAIL: &[u8] = b"trailer\n<< /Root 1 0 R >>\n%%EOF\n";
    const LINE: &[u8] = b"% filler of the upload benchmark: comment lines a reader skips .........\n";
    let mut file = Vec::with_capacity(size);
    file.extend_from_slice(HEAD);
    let filler = size.saturating_sub(HEAD.len() + TAIL.len());
    file.extend(LINE.iter().copied().cycle().take(filler.saturating_sub(1)));
    if filler > 0 {
        file.push(b'\n');
    }
    file.extend_from_slice(TAIL);
    file
}

/// The uploads' row, or why it could not be measured.
pub(super) async fn measure(stack: &mut Stack, placement: &Placement) -> Result<Uploads, String> {
    runs(stack, placement)
        .await
        .inspect_err(|e| eprintln!("xtask: the upload rows failed: {e:#}"))
        .map_err(|e| format!("{e:#}"))
}

/// Seeds [`CLIENTS`] users with a report each, then runs the uploads [`ROUNDS`] times, each on
/// a gateway and reports-service restarted and warmed up: memory an allocator kept from the run
/// before is not what the next run's uploads cost.
async fn runs(stack: &mut Stack, placement: &Placement) -> anyhow::Result<Uploads> {
    let ca = stack.backing.ca();
    let base = stack.protected.base.clone();
    let owners = seed(&base, &ca).await?;
    // One file for every client: a `&'static` body is shared by reference, so the client holds
    // 10 MiB once however many uploads send it.
    let file: &'static [u8] = Box::leak(pdf(FILE_BYTES).into_boxed_slice());
    let small: &'static [u8] = Box::leak(pdf(WARM_UP_BYTES).into_boxed_slice());
    let load = placement.load.as_ref().unwrap_or(&placement.all);
    let send = |file: &'static [u8]| {
        on_cpus(load, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(upload_all(&ca, &base, &owners, file))
        })
    };
    let mut runs = Vec::new();
    for run in 1..=ROUNDS {
        let pids = restart(&mut stack.protected.platform)?;
        let restarted = reading(pids).iter().sum();
        let (_, statuses) = send(small)?;
        let (warmed, failures) = tally(statuses);
        anyhow::ensure!(warmed == CLIENTS, "the warm-up's uploads: {failures:?}");
        let idle = idle_samples(pids);
        let sampler = Sampler::start(pids);
        let answered = send(file);
        let during = sampler.finish();
        let (seconds, statuses) = answered?;
        let (created, failures) = tally(statuses);
        let measured = UploadRun {
            restarted,
            memory: Memory::of(&idle, &during),
            seconds,
            created,
            failures,
        };
        eprintln!(
            "xtask: {CLIENTS} uploads, run {run}: {created} answered 201 in {seconds:.1} s; memory grew {:.1} MiB over idle",
            measured.memory.growth_mib()
        );
        runs.push(measured);
    }
    Ok(Uploads { runs })
}

/// Stops the gateway and reports-service and starts them again, ready; their pids.
fn restart(platform: &mut Platform) -> anyhow::Result<[u32; 2]> {
    platform.gateway.stop(Duration::from_secs(35));
    platform.reports.stop(Duration::from_secs(15));
    platform.reports.restart()?;
    platform.gateway.restart()?;
    platform.wait_ready(Duration::from_secs(60))?;
    let pid = |pid: Option<u32>, name: &str| pid.with_context(|| format!("{name} is not running"));
    Ok([
        pid(platform.gateway.pid(), PROCESSES[0])?,
        pid(platform.reports.pid(), PROCESSES[1])?,
    ])
}

/// Each user's access token and the id of their report.
async fn seed(base: &str, ca: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let http = http_client(ca, 1)?;
    let mut owners = Vec::new();
    for i in 0..CLIENTS {
        let token = stack::session(base, ca, &format!("bench-uploader-{i}@example.org")).await?;
        let res = http
            .post(format!("{base}/v1/reports"))
            .bearer_auth(&token)
            .json(&report_body())
            .send()
            .await?;
        anyhow::ensure!(res.status().as_u16() == 201, "an uploader's report: {}", res.status());
        let report: Value = res.json().await?;
        let id = report["id"].as_str().context("a report without an id")?.to_owned();
        owners.push((token, id));
    }
    Ok(owners)
}

fn reading(pids: [u32; 2]) -> Kib {
    pids.map(|pid| rss_kib(pid).unwrap_or(0))
}

/// [`IDLE_SAMPLES`] readings, [`SAMPLE_EVERY`] apart.
fn idle_samples(pids: [u32; 2]) -> Vec<Kib> {
    (0..IDLE_SAMPLES)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(SAMPLE_EVERY);
            }
            reading(pids)
        })
        .collect()
}

/// Reads both processes' VmRSS every [`SAMPLE_EVERY`] on a thread of its own, so that the
/// clients' work never delays a reading.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Kib>>,
}

impl Sampler {
    fn start(pids: [u32; 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                samples.push(reading(pids));
                next += SAMPLE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            // The last reading, once every answer is in.
            samples.push(reading(pids));
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<Kib> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Every owner uploads `file` to their report at once; the seconds until the last answer, and
/// each upload's status (or why it had none) with the start of its body.
async fn upload_all(
    ca: &Path,
    base: &str,
    owners: &[(String, String)],
    file: &'static [u8],
) -> anyhow::Result<(f64, Vec<Result<(u16, String), String>>)> {
    let http = http_client(ca, CLIENTS)?;
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (token, report) in owners {
        let request = http
            .post(format!("{base}/v1/reports/{report}/attachments"))
            .bearer_auth(token)
            .header("Content-Type", "application/pdf")
            .timeout(UPLOAD_TIMEOUT)
            // A body of known length: reqwest sends `Content-Length`, and the bytes from `file`.
            .body(reqwest::Body::from(file));
        clients.spawn(async move {
            let res = request.send().await.map_err(|e| format!("{e}"))?;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            Ok((status, text))
        });
    }
    let statuses = clients.join_all().await;
    Ok((started.elapsed().as_secs_f64(), statuses))
}

/// The 201s, and why each other upload failed.
pub(super) fn tally(statuses: Vec<Result<(u16, String), String>>) -> (u32, Vec<String>) {
    let mut created = 0;
    let mut failures = Vec::new();
    for status in statuses {
        match status {
            Ok((201, _)) => created += 1,
            Ok((status, body)) => failures.push(format!("{status} {}", body.chars().take(160).collect::<String>())),
            Err(transport) => failures.push(transport),
        }
    }
    (created, failures)
}

#[cfg(test)]
mod tests {
    use super::{Memory, pdf, tally};

    #[test]
    fn growth_is_the_largest_sum_during_over_the_largest_sum_idle() {
        // Idle: the second sample's sum (30 720 KiB) is the largest, though not each process's.
        let idle = [[20_480, 8_192], [10_240, 20_480], [4_096, 4_096]];
        let during = [[30_720, 20_480], [81_920, 10_240], [40_960, 40_960]];
        let memory = Memory::of(&idle, &during);
        assert_eq!(memory.idle, 30_720);
        assert_eq!(memory.idle_each, [10_240, 20_480]);
        assert_eq!(memory.peak, 92_160);
        assert_eq!(memory.peak_each, [81_920, 40_960]);
        assert_eq!(memory.samples, 3);
        assert!((memory.growth_mib() - 60.0).abs() < 1e-9);
        let run = super::UploadRun {
            restarted: 20_480,
            memory,
            seconds: 1.0,
            created: 20,
            failures: Vec::new(),
        };
        assert!((run.cold_growth_mib() - 70.0).abs() < 1e-9, "92 160 − 20 480 KiB");
        let shrank = Memory::of(&[[2048, 0]], &[[1024, 0]]);
        assert!((shrank.growth_mib() + 1.0).abs() < 1e-9, "a drop is shown, not hidden");
    }

    #[test]
    fn the_file_is_a_pdf_of_the_size_asked_without_a_zip_signature() {
        for size in [super::FILE_BYTES, 4096, 200] {
            let file = pdf(size);
            assert_eq!(file.len(), size);
            assert!(file.starts_with(b"%PDF-1."));
            assert!(file.ends_with(b"%%EOF\n"));
            assert!(!file.windows(2).any(|w| w == b"PK"), "no ZIP signature can start");
        }
    }

    #[test]
    fn every_answer_but_201_is_a_failure_with_its_reason() {
        let (created, failures) = tally(vec![
            Ok((201, "{}".to_owned())),
            Ok((413, "{\"code\":\"PAYLOAD_TOO_LARGE\"}".to_owned())),
            Err("connection reset".to_owned()),
            Ok((201, "{}".to_owned())),
        ]);
        assert_eq!(created, 2);
        assert_eq!(
            failures,
            vec![
                "413 {\"code\":\"PAYLOAD_TOO_LARGE\"}".to_owned(),
                "connection reset".to_owned()
            ]
        );
    }
}
