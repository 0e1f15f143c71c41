//! Rate-limit decisions of one gateway worker, gathered and sent to Redis as one script call
//! ([`gcra::SCRIPT_DECIDE`](super::gcra::SCRIPT_DECIDE)). Redis is single-threaded and shared by
//! every gateway replica, and a script call and its `MGET` cost it about as much as the
//! decision's own work: paid once per batch, the same Redis decides for more traffic.
//!
//! The decisions that arrive while a worker's call is out wait for it to be answered, then go
//! together. A lone request goes out at once (a batch of one), so a quiet gateway adds no delay,
//! and a busy one sends batches as large as its traffic fills in one Redis round trip. A call out
//! for longer than [`PATIENCE`] (Redis slow or frozen) no longer holds the next batch back.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::redis_link::{Miss, RedisLink};

/// The most decisions in one script call: Redis runs a batch without serving anyone else, so a
/// batch is kept well under a millisecond of its time.
pub const MAX_BATCH: usize = 128;

/// How long a call may be out before the next batch goes without waiting for its answer: a slow
/// Redis (tens of milliseconds a call) then still gets each decision within a few milliseconds of
/// its request, and each request keeps nearly all of `RATE_LIMIT_REDIS_TIMEOUT_MS` for its call.
const PATIENCE: Duration = Duration::from_millis(2);

/// One request's decision: its keys and arguments, laid out as the script reads them.
pub struct Decision {
    pub keys: Vec<String>,
    pub args: Vec<u64>,
}

struct Job {
    decision: Decision,
    /// When its caller stops waiting (and decides without Redis).
    until: Instant,
    reply: oneshot::Sender<Result<Vec<i64>, Miss>>,
}

/// A worker's queue of decisions, and the task that sends them (started on first use, on the
/// runtime of its caller: the worker's).
pub struct Batcher {
    link: RedisLink,
    script: Arc<redis::Script>,
    sizes: Histogram,
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl Batcher {
    pub fn new(link: RedisLink, script: Arc<redis::Script>, sizes: Histogram) -> Self {
        Self {
            link,
            script,
            sizes,
            queue: OnceLock::new(),
        }
    }

    /// Redis's answer to one decision (the script's array for it), or why there is none within
    /// `timeout`.
    pub async fn decide(&self, decision: Decision, timeout: Duration) -> Result<Vec<i64>, Miss> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            decision,
            until: Instant::now() + timeout,
            reply,
        };
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(
                self.link.clone(),
                self.script.clone(),
                self.sizes.clone(),
                jobs,
            ));
            queue
        });
        queue
            .send(job)
            .map_err(|_| Miss::Failed("the worker's batching task has stopped".to_owned()))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Miss::Failed("the worker's batching task dropped a decision".to_owned())),
            Err(_) => Err(Miss::TimedOut),
        }
    }
}

/// Sends what is queued as one call when no call is out, or when the last one sent has been out
/// for [`PATIENCE`]; hands each caller its part of the answer. Ends when the batcher is dropped.
async fn send_batches(
    link: RedisLink,
    script: Arc<redis::Script>,
    sizes: Histogram,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let mut out = FuturesUnordered::new();
    let mut last_sent = Instant::now();
    loop {
        let may_send = out.is_empty() || last_sent.elapsed() >= PATIENCE;
        let mut jobs = Vec::new();
        tokio::select! {
            Some(()) = out.next(), if !out.is_empty() => continue,
            received = queue.recv_many(&mut jobs, MAX_BATCH), if may_send => {
                if received == 0 {
                    break;
                }
            }
            () = tokio::time::sleep_until((last_sent + PATIENCE).into()), if !may_send => continue,
        }
        // A caller that stopped waiting has been decided without Redis: its decision must not
        // spend a second time.
        let now = Instant::now();
        jobs.retain(|job| !job.reply.is_closed() && job.until > now);
        if jobs.is_empty() {
            continue;
        }
        sizes.observe(jobs.len() as f64);
        last_sent = now;
        out.push(send(link.clone(), script.clone(), jobs));
    }
    // The calls still out are answered (or time out) before the task ends.
    while out.next().await.is_some() {}
}

/// One batch: one script call, its answer handed out.
async fn send(link: RedisLink, script: Arc<redis::Script>, mut jobs: Vec<Job>) {
    let now = Instant::now();
    let until = jobs.iter().map(|job| job.until).max().unwrap_or(now);
    let mut invocation = script.prepare_invoke();
    invocation.arg(jobs.len());
    for job in &jobs {
        for key in &job.decision.keys {
            invocation.key(key);
        }
        for arg in &job.decision.args {
            invocation.arg(*arg);
        }
    }
    let invocation = &invocation;
    let answer = link
        .query(until.saturating_duration_since(now), |mut conn| async move {
            invocation.invoke_async::<Vec<Vec<i64>>>(&mut conn).await
        })
        .await;
    match answer {
        Ok(answers) if answers.len() == jobs.len() => {
            for (job, answer) in jobs.drain(..).zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Miss::Malformed(answers.len())));
            }
        }
        Err(miss) => {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(miss.clone()));
            }
        }
    }
}
