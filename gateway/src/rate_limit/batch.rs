//! Rate-limit decisions of one gateway worker, gathered and sent to Redis as one script call
//! ([`gcra::SCRIPT_DECIDE`](super::gcra::SCRIPT_DECIDE)). Redis is single-threaded and shared by
//! every gateway replica, and a script call and its `MGET` cost it about as much as the
//! decision's own work: paid once per batch, the same Redis decides for more traffic.
//!
//! The decisions that arrive while a worker's call is out wait for it to be answered, then go
//! together, with those of the requests the worker is reading at that moment (one turn of its
//! scheduler). A lone request goes out after that one turn (a batch of one), so a quiet gateway
//! adds next to no delay, and a busy one sends batches as large as its traffic fills in one Redis
//! round trip. A call out for longer than [`PATIENCE`] (Redis slow or frozen) no longer holds the
//! next batch back.

use std::collections::HashMap;
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

/// One request's decision, as the script reads it.
pub struct Decision {
    /// Per bucket: its key, emission µs and capacity µs.
    pub buckets: Vec<(String, u64, u64)>,
    /// The token's jti, session, not-before and marker keys, when its revocation state is asked.
    pub revocation: Option<[String; 4]>,
    /// The address's refusal counter, and its window in seconds.
    pub refusals: (String, u64),
}

impl Decision {
    /// The numbers the script answers for this decision.
    pub fn answer_len(&self) -> usize {
        self.buckets.len() + if self.revocation.is_some() { 2 } else { 0 } + 2
    }
}

struct Job {
    decision: Arc<Decision>,
    /// Redis's time (µs) after which the decision must change nothing; 0 for none.
    deadline_us: u64,
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

    /// Redis's answer to one decision (the script's numbers for it), or why there is none within
    /// `timeout`. Past `deadline_us` (Redis's clock; 0 for none) Redis changes nothing for it.
    pub async fn decide(&self, decision: Arc<Decision>, deadline_us: u64, timeout: Duration) -> Result<Vec<i64>, Miss> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            decision,
            deadline_us,
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
        // The requests the worker is reading right now join this batch: its other ready tasks
        // and the sockets that became readable meanwhile run first (tokio wakes a yielding task
        // only once it has nothing else to do and has polled for I/O). An idle worker loses one
        // turn of its scheduler; a busy one sends fewer, larger calls, each of which costs Redis
        // and the worker a round of system calls however little it carries.
        tokio::task::yield_now().await;
        while jobs.len() < MAX_BATCH
            && let Ok(job) = queue.try_recv()
        {
            jobs.push(job);
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
    let (keys, numbers) = encode(jobs.iter().map(|job| (&*job.decision, job.deadline_us)));
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(key);
    }
    invocation.arg(numbers);
    let invocation = &invocation;
    let answer = link
        .query(until.saturating_duration_since(now), |mut conn| async move {
            invocation.invoke_async::<Vec<u8>>(&mut conn).await
        })
        .await
        .map(|packed| decode(&packed));
    let expected: usize = jobs.iter().map(|job| job.decision.answer_len()).sum();
    match answer {
        Ok(Some(answer)) if answer.len() == expected => {
            let mut rest = &answer[..];
            for job in jobs.drain(..) {
                let (own, after) = rest.split_at(job.decision.answer_len());
                rest = after;
                let _ = job.reply.send(Ok(own.to_vec()));
            }
        }
        Ok(answer) => {
            let got = answer.map_or(0, |a| a.len());
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Miss::Malformed(got)));
            }
        }
        Err(miss) => {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(miss.clone()));
            }
        }
    }
}

/// A batch as the script takes it: its distinct keys, and its numbers as little-endian 64-bit
/// integers with keys given by their position in KEYS (from 1, as Lua counts).
fn encode<'a>(decisions: impl ExactSizeIterator<Item = (&'a Decision, u64)>) -> (Vec<&'a str>, Vec<u8>) {
    // At most 7 keys a decision: 2 buckets, the refusal counter, 4 revocation keys.
    let mut keys: Vec<&str> = Vec::with_capacity(decisions.len() * 7);
    let mut index: HashMap<&str, u64> = HashMap::with_capacity(decisions.len() * 7);
    let mut key = |k: &'a str| -> u64 {
        *index.entry(k).or_insert_with(|| {
            keys.push(k);
            keys.len() as u64
        })
    };
    // A request has at most two buckets (its route's and the global one): 5 + 3 * 2 + 4 numbers
    // a decision, and 2 + 2 + 2 in its answer, so a full batch (MAX_BATCH) is at most about 2000
    // values on Lua's stack at once (limit 8000).
    let mut numbers: Vec<u8> = Vec::with_capacity(8 * (1 + decisions.len() * 15));
    let mut put = |n: u64| numbers.extend_from_slice(&n.to_le_bytes());
    put(decisions.len() as u64);
    for (d, deadline_us) in decisions {
        put(deadline_us);
        put(d.buckets.len() as u64);
        put(u64::from(d.revocation.is_some()));
        put(key(&d.refusals.0));
        put(d.refusals.1);
        for (bucket, emission, capacity) in &d.buckets {
            put(key(bucket));
            put(*emission);
            put(*capacity);
        }
        for k in d.revocation.iter().flatten() {
            put(key(k));
        }
    }
    (keys, numbers)
}

/// The script's answer: little-endian 64-bit integers packed in one string (`None`: not whole
/// integers, so not this script's).
fn decode(packed: &[u8]) -> Option<Vec<i64>> {
    let numbers = packed.chunks_exact(8);
    numbers.remainder().is_empty().then(|| {
        numbers
            .map(|n| i64::from_le_bytes(n.try_into().unwrap_or_default()))
            .collect()
    })
}
