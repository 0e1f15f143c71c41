//! Keeps Redis holding every revocation in force. The gateway reads revocations from Redis, but
//! PostgreSQL is where they are kept: a Redis restarted without persistence, or flushed, has
//! forgotten them, and a revoked token would work again until it expires. So Redis vouches for
//! its revocations only while it holds the marker key ([`RedisKeys::complete`]); without it the
//! gateway asks auth-service. This task checks for the marker every `REVOCATION_SYNC_SECONDS`
//! and, when it is missing, copies every revocation in force from PostgreSQL and then sets it.
//!
//! A copy also runs, marker or not, at the first chance after start, after a revocation could not
//! be written to Redis, and every [`FULL_COPY_EVERY`]: a write retried in memory is lost if this
//! process stops before Redis returns, and a Redis that kept its data would not lack the marker.
//!
//! A copy sets the marker only if Redis was not emptied again meanwhile: the copying replica
//! first writes a nonce under [`RedisKeys::seeding`] and sets the marker in one script only while
//! its nonce is still there. Several replicas may copy at once; every write is idempotent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use deadpool_redis::redis;
use prometheus::{IntCounterVec, Opts, Registry};
use service_kit::db::Pool;
use service_kit::revocation::RedisKeys;
use uuid::Uuid;

use crate::store;

/// Sets the marker only while this copy's nonce still holds the seeding key.
const FINISH: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Copies run at least this often, marker or not.
pub const FULL_COPY_EVERY: Duration = Duration::from_secs(600);

/// How many SETs go in one pipeline.
const BATCH: usize = 500;

pub struct RevocationSync {
    pub pool: Pool,
    pub redis: deadpool_redis::Pool,
    pub keys: RedisKeys,
    /// How long after a session ends its access tokens can still be presented.
    pub session_ttl: Duration,
    pub every: Duration,
    /// Set by a revocation that could not be written to Redis: the next round copies everything.
    pub missed_write: Arc<AtomicBool>,
    copies: IntCounterVec,
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
        let copies = IntCounterVec::new(
            Opts::new(
                "revocation_copies_total",
                "Copies of the revocations in force from PostgreSQL into a Redis that had lost them, by result (done, failed)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(copies.clone()))?;
        Ok(Self {
            pool,
            redis,
            keys,
            session_ttl,
            every,
            missed_write: Arc::new(AtomicBool::new(false)),
            copies,
        })
    }

    /// Checks for the marker forever (the task ends with the process).
    pub async fn run(self) {
        self.warn_about_eviction().await;
        let mut failing = false;
        // Nothing copied yet: the first round copies whatever the marker says.
        let mut last_full: Option<Instant> = None;
        loop {
            let force = self.missed_write.swap(false, Ordering::Relaxed)
                || last_full.is_none_or(|at| at.elapsed() >= FULL_COPY_EVERY);
            match self.ensure(force).await {
                Ok(None) => failing = false,
                Ok(Some((keys, marker_was_there))) => {
                    failing = false;
                    last_full = Some(Instant::now());
                    self.copies.with_label_values(&["done"]).inc();
                    if marker_was_there {
                        tracing::debug!(keys, "revocations in force copied into Redis again");
                    } else {
                        tracing::info!(
                            keys,
                            "copied the revocations in force from PostgreSQL into Redis, which lacked them (a new Redis, or one restarted without persistence, or flushed)"
                        );
                    }
                }
                Err(e) => {
                    if force {
                        self.missed_write.store(true, Ordering::Relaxed);
                    }
                    self.copies.with_label_values(&["failed"]).inc();
                    // Redis or PostgreSQL down is already reported elsewhere; say it once.
                    if !failing {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot check or copy the revocations into Redis; the gateway asks auth-service meanwhile"
                        );
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// An eviction policy could drop revocations (they expire) and keep the marker (it does not).
    /// Managed Redis often refuses CONFIG; then nothing can be told.
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

    /// None when Redis holds the marker and `force` is false; else copies and returns how many
    /// keys were written and whether the marker was there.
    pub async fn ensure(&self, force: bool) -> anyhow::Result<Option<(usize, bool)>> {
        let mut redis = self.redis.get().await?;
        let present: bool = redis::cmd("EXISTS")
            .arg(self.keys.complete())
            .query_async(&mut redis)
            .await?;
        if present && !force {
            return Ok(None);
        }
        let nonce = Uuid::new_v4().to_string();
        // Long enough for any copy; a replica that dies mid-copy blocks nobody after it.
        redis::cmd("SET")
            .arg(self.keys.seeding())
            .arg(&nonce)
            .arg("EX")
            .arg(600)
            .query_async::<()>(&mut redis)
            .await?;
        let now = Utc::now();
        let session_ttl = chrono::Duration::from_std(self.session_ttl)?;
        let in_force = {
            let mut conn = self.pool.get().await?;
            store::revocations_in_force(&mut conn, now - session_ttl).await?
        };
        let left = |until: chrono::DateTime<Utc>| (until - now).num_seconds().max(1);
        let mut writes: Vec<(String, String, i64)> = Vec::new();
        for (jti, expires_at) in &in_force.tokens {
            writes.push((self.keys.jti(&jti.to_string()), "1".into(), left(*expires_at)));
        }
        for (sid, ended_at) in &in_force.sessions {
            writes.push((
                self.keys.session(&sid.to_string()),
                "1".into(),
                left(*ended_at + session_ttl),
            ));
        }
        for (user, not_before) in &in_force.not_before {
            writes.push((
                self.keys.not_before(&user.to_string()),
                not_before.timestamp().to_string(),
                left(*not_before + session_ttl),
            ));
        }
        for batch in writes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (key, value, ttl) in batch {
                pipe.cmd("SET").arg(key).arg(value).arg("EX").arg(*ttl).ignore();
            }
            pipe.query_async::<()>(&mut redis).await?;
        }
        // Rare, so plain EVAL rather than a cached script.
        let done: i64 = redis::cmd("EVAL")
            .arg(FINISH)
            .arg(2)
            .arg(self.keys.seeding())
            .arg(self.keys.complete())
            .arg(&nonce)
            .query_async(&mut redis)
            .await?;
        anyhow::ensure!(
            done == 1,
            "Redis was emptied again (or another replica took over) while copying; trying again"
        );
        Ok(Some((writes.len(), present)))
    }
}
