//! Keeps Redis holding every revocation in force. PostgreSQL is where revocations are kept; the
//! gateway reads them from Redis, and trusts Redis only while it holds the marker key
//! ([`RedisKeys::complete`]), otherwise it asks auth-service. This task, every
//! `REVOCATION_SYNC_SECONDS` on every replica:
//!
//! - copies into Redis the revocations committed since its last round (with a margin for
//!   transactions still open then), so a revocation whose own Redis write failed lands within one
//!   round, whichever replica made it;
//! - renews the marker, which expires after [`lease`]: if no replica can reach both PostgreSQL
//!   and Redis for that long, the gateway stops trusting Redis;
//! - copies every revocation in force when Redis cannot be trusted to hold the past: the marker
//!   is missing (a new Redis, one restarted without persistence, or flushed) or names another
//!   server (the marker's value is the Redis `run_id`: a Redis restored from a snapshot or a
//!   promoted replica has another one, and may lack recent revocations). A marker naming another
//!   server is deleted first, so the gateway asks auth-service while the copy runs;
//! - withdraws the marker when Redis refuses a write (as does a failed write of a revocation).
//!
//! A full copy sets the marker only if Redis was not emptied again meanwhile: the copying replica
//! first writes a nonce under [`RedisKeys::seeding`] and sets the marker in one script only while
//! its nonce is still there. Every write is idempotent, so replicas may run at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use prometheus::{IntCounterVec, Opts, Registry};
use service_kit::db::Pool;
use service_kit::revocation::RedisKeys;
use uuid::Uuid;

use super::redis::{KEY_MARGIN, withdraw_marker};
use crate::domain::Revocations;
use crate::store;

/// Sets the marker (value: the server's run_id, with the lease) only while this copy's nonce
/// still holds the seeding key.
const FINISH_FULL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Renews the marker only while it still names this server.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Revocations committed this long before a round's start are copied again by the next round: a
/// transaction that wrote its revocation time and committed after the round read is not missed
/// (auth-service's transactions take milliseconds; this covers one held up by locks).
const MARGIN: Duration = Duration::from_secs(300);

/// Runs one of the guarded scripts above (rare, so plain EVAL); true when it took effect.
async fn guarded(
    redis: &mut deadpool_redis::Connection,
    script: &str,
    keys: &[String],
    args: &[String],
) -> redis::RedisResult<bool> {
    let applied: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query_async(redis)
        .await?;
    Ok(applied == 1)
}

/// A round taking longer than this (or two sync intervals) is abandoned.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// How many SETs go in one pipeline.
const BATCH: usize = 500;

/// How long the marker holds without a renewal: six rounds, so that a replica restarting or a
/// short database hiccup does not send every request to auth-service, while a Redis that no
/// replica can write to stops being trusted soon.
pub fn lease(every: Duration) -> Duration {
    every * 6
}

/// What a round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Copied the revocations of the last moments and renewed the marker.
    Renewed { keys: usize },
    /// Copied every revocation in force and set the marker; `why` Redis could not be trusted.
    Full { keys: usize, why: &'static str },
    /// Another replica is copying everything; its copy sets the marker.
    Yielded,
}

pub struct RevocationSync {
    pool: Pool,
    redis: deadpool_redis::Pool,
    keys: RedisKeys,
    /// How long after a session ends its access tokens can still be presented.
    session_ttl: Duration,
    every: Duration,
    /// PostgreSQL's clock at the start of the last round that renewed or set the marker.
    last: Option<DateTime<Utc>>,
    rounds: IntCounterVec,
}

impl RevocationSync {
    pub fn new(
        pool: Pool,
        redis: deadpool_redis::Pool,
        keys: RedisKeys,
        session_ttl: Duration,
        every: Duration,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let rounds = service_kit::metrics::register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "revocation_sync_total",
                    "Rounds copying revocations from PostgreSQL into Redis, by result (renewed, full, yielded, failed)",
                ),
                &["result"],
            )?,
        )?;
        Ok(Self {
            pool,
            redis,
            keys,
            session_ttl,
            every,
            last: None,
            rounds,
        })
    }

    /// Runs rounds forever (the task ends with the process).
    pub async fn run(mut self) {
        let _ = tokio::time::timeout(ROUND_TIMEOUT, self.warn_about_eviction()).await;
        let mut failing = false;
        // A round that hangs (a Redis or database that stops answering mid-call) is abandoned, so
        // the next one starts over from a fresh connection.
        let limit = ROUND_TIMEOUT.max(self.every * 2);
        loop {
            let result = match tokio::time::timeout(limit, self.round()).await {
                Ok(result) => result,
                Err(_) => {
                    self.last = None;
                    Err(anyhow::anyhow!(
                        "a round took longer than {limit:?}; copying everything next round"
                    ))
                }
            };
            let label = match &result {
                Ok(Round::Renewed { .. }) => "renewed",
                Ok(Round::Full { .. }) => "full",
                Ok(Round::Yielded) => "yielded",
                Err(_) => "failed",
            };
            self.rounds.with_label_values(&[label]).inc();
            match result {
                Ok(Round::Full { keys, why }) => tracing::info!(
                    keys,
                    why,
                    "copied every revocation in force from PostgreSQL into Redis and set the revocation marker"
                ),
                Ok(_) => {}
                // Redis or PostgreSQL down is reported elsewhere too; say it once per outage.
                Err(e) if !failing => tracing::warn!(
                    error = format!("{e:#}"),
                    lease_s = lease(self.every).as_secs(),
                    "cannot copy revocations into Redis; once the revocation marker's lease runs out the gateway asks auth-service"
                ),
                Err(_) => {}
            }
            failing = label == "failed";
            tokio::time::sleep(self.every).await;
        }
    }

    /// An eviction policy could drop revocations (they expire) and keep the marker. Managed Redis
    /// often refuses CONFIG; then nothing can be told.
    async fn warn_about_eviction(&self) {
        let Ok(mut redis) = self.redis.get().await else { return };
        let config: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory*")
            .query_async(&mut redis)
            .await;
        let Ok(config) = config else { return };
        let get = |name: &str| {
            config
                .chunks(2)
                .find(|kv| kv[0] == name)
                .and_then(|kv| kv.get(1))
                .cloned()
        };
        let (limit, policy) = (get("maxmemory"), get("maxmemory-policy"));
        if limit.as_deref().is_some_and(|m| m != "0") && policy.as_deref().is_some_and(|p| p != "noeviction") {
            tracing::warn!(
                maxmemory = limit,
                maxmemory_policy = policy,
                "Redis may evict keys when full, revocations among them: set maxmemory-policy noeviction"
            );
        }
    }

    /// One round: recent revocations and a renewal, or everything and a new marker.
    pub async fn round(&mut self) -> anyhow::Result<Round> {
        let mut redis = self.redis.get().await?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis).await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| anyhow::anyhow!("Redis INFO server has no run_id"))?;
        let marker: Option<String> = redis::cmd("GET")
            .arg(self.keys.complete())
            .query_async(&mut redis)
            .await?;
        let mut conn = self.pool.get().await?;
        let now = store::database_now(&mut conn).await?;
        let session_ttl = chrono::Duration::from_std(self.session_ttl)?;
        let lease = lease(self.every).as_secs();

        if marker.as_deref() == Some(run_id.as_str())
            && let Some(last) = self.last
        {
            let recent = store::revocations_since(&mut conn, last - chrono::Duration::from_std(MARGIN)?).await?;
            drop(conn);
            let keys = self.write(&mut redis, &recent, now, session_ttl).await?;
            let renewed = guarded(&mut redis, RENEW, &[self.keys.complete()], &[run_id, lease.to_string()]).await?;
            if !renewed {
                self.last = None;
                anyhow::bail!("Redis lost the revocation marker during the round; copying everything next round");
            }
            self.last = Some(now);
            return Ok(Round::Renewed { keys });
        }

        let why = match marker {
            None => "Redis has no revocation marker (a new Redis, or restarted without persistence, or flushed)",
            Some(ref m) if *m != run_id => {
                // Restored from a snapshot, or a promoted replica: recent revocations may be
                // missing, so the gateway must stop trusting it before the copy.
                redis::cmd("DEL")
                    .arg(self.keys.complete())
                    .query_async::<()>(&mut redis)
                    .await?;
                "the revocation marker names another Redis server (restored from a snapshot, or a failover)"
            }
            Some(_) => "this process has not copied anything yet",
        };
        let nonce = Uuid::new_v4().to_string();
        // Long enough for any copy; a replica that dies mid-copy blocks nobody after it.
        redis::cmd("SET")
            .arg(self.keys.seeding())
            .arg(&nonce)
            .arg("EX")
            .arg(600)
            .query_async::<()>(&mut redis)
            .await?;
        let all = store::revocations_since(&mut conn, now - session_ttl).await?;
        drop(conn);
        let keys = self.write(&mut redis, &all, now, session_ttl).await?;
        let guard_keys = [self.keys.seeding(), self.keys.complete()];
        let done = guarded(
            &mut redis,
            FINISH_FULL,
            &guard_keys,
            &[nonce, run_id, lease.to_string()],
        )
        .await?;
        if !done {
            // Another replica started a copy after ours (its copy sets the marker), or Redis was
            // emptied again (the next round starts over).
            return Ok(Round::Yielded);
        }
        self.last = Some(now);
        Ok(Round::Full { keys, why })
    }

    /// Writes each revocation with the time it still matters; returns how many keys.
    async fn write(
        &self,
        redis: &mut deadpool_redis::Connection,
        found: &Revocations,
        now: DateTime<Utc>,
        session_ttl: chrono::Duration,
    ) -> anyhow::Result<usize> {
        let left = |until: DateTime<Utc>| (until - now).num_seconds().max(1);
        let margin = chrono::Duration::from_std(KEY_MARGIN)?;
        let mut writes: Vec<(String, String, i64)> = Vec::new();
        for (jti, expires_at) in &found.tokens {
            writes.push((self.keys.jti(&jti.to_string()), "1".into(), left(*expires_at + margin)));
        }
        for (sid, ended_at) in &found.sessions {
            writes.push((
                self.keys.session(&sid.to_string()),
                "1".into(),
                left(*ended_at + session_ttl),
            ));
        }
        for (user, not_before) in &found.not_before {
            writes.push((
                self.keys.not_before(&user.to_string()),
                not_before.timestamp_millis().to_string(),
                left(*not_before + session_ttl),
            ));
        }
        for batch in writes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (key, value, ttl) in batch {
                pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(*ttl).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(redis).await {
                // Redis answers but refuses writes (out of memory, a read-only replica): it must
                // not go on vouching for revocations it lacks.
                withdraw_marker(redis, &self.keys).await;
                return Err(e.into());
            }
        }
        Ok(writes.len())
    }
}
