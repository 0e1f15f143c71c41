//! Writing revocations into Redis: the keys of one revocation, written right after its commit, and
//! the withdrawal of the marker when a write fails. A failed write never fails the call: PostgreSQL
//! already holds the revocation and the sync copies it within a round.

use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis;
use service_kit::auth::AccessClaims;
use service_kit::revocation::RedisKeys;

use crate::domain::SessionId;

/// A revocation key outlives the tokens it revokes by this much: a verifier accepts a token up to
/// `JWT_LEEWAY_SECONDS` (at most 300) after its expiry, and clocks differ by up to a minute.
pub const KEY_MARGIN: Duration = Duration::from_secs(360);

const REDIS_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes the revocations of the use cases into Redis; cheap to clone.
#[derive(Clone)]
pub struct RevocationWriter {
    redis: deadpool_redis::Pool,
    keys: RedisKeys,
    /// How long a session's access tokens can be presented after it ends.
    session_ttl: Duration,
}

impl RevocationWriter {
    pub fn new(redis: deadpool_redis::Pool, keys: RedisKeys, access_ttl: Duration) -> Self {
        Self {
            redis,
            keys,
            session_ttl: access_ttl + KEY_MARGIN,
        }
    }

    /// Revokes an access token (its jti) and whole sessions in Redis. Revocation must reach Redis:
    /// the gateway reads it on every request. PostgreSQL already holds it, so when Redis cannot be
    /// written this still returns; the revocation sync copies it.
    pub async fn revoke(&self, token: Option<&AccessClaims>, sessions: &[SessionId]) {
        if token.is_none() && sessions.is_empty() {
            return;
        }
        let jti = token.map(|claims| {
            let ttl = claims.exp.saturating_sub(Utc::now().timestamp().max(0) as u64) + KEY_MARGIN.as_secs();
            (claims.jti.as_str(), ttl)
        });
        // Keys live as long as any access token of these sessions can be accepted.
        let pipe = revocation_pipe(&self.keys, jti, sessions, self.session_ttl.as_secs());
        // PostgreSQL already holds the revocation, so a failed write does not fail the call: the
        // next round of the revocation sync (any replica, within REVOCATION_SYNC_SECONDS) copies
        // it, and while Redis cannot be read the gateway asks auth-service. The write runs in its
        // own task, so a call cancelled after its commit (client gone, deadline) still makes it.
        let (pool, keys) = (self.redis.clone(), self.keys.clone());
        let write = tokio::spawn(async move {
            let error = match tokio::time::timeout(REDIS_WRITE_TIMEOUT, write_pipe(&pool, &pipe)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("Redis did not answer within {REDIS_WRITE_TIMEOUT:?}"),
            };
            tracing::warn!(
                error,
                "revocation stored in PostgreSQL but not in Redis; the next revocation sync round copies it"
            );
            // A Redis that still answers reads must not vouch for revocations it lacks meanwhile.
            tokio::spawn(async move {
                if let Ok(Ok(mut conn)) = tokio::time::timeout(REDIS_WRITE_TIMEOUT, pool.get()).await {
                    withdraw_marker(&mut conn, &keys).await;
                }
            });
        });
        // The answer waits for the write (the next request must see it), not for the withdrawal.
        let _ = write.await;
    }
}

/// The SETs of one revocation: an access token's jti with its own lifetime, and sessions with
/// `session_ttl` seconds.
pub fn revocation_pipe(
    keys: &RedisKeys,
    jti: Option<(&str, u64)>,
    sessions: &[SessionId],
    session_ttl: u64,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    if let Some((jti, ttl)) = jti {
        pipe.cmd("SET").arg(keys.jti(jti)).arg(1).arg("EX").arg(ttl).ignore();
    }
    for sid in sessions {
        pipe.cmd("SET")
            .arg(keys.session(&sid.to_string()))
            .arg(1)
            .arg("EX")
            .arg(session_ttl)
            .ignore();
    }
    pipe
}

/// Runs a pipeline on a connection of `pool`.
pub async fn write_pipe(pool: &deadpool_redis::Pool, pipe: &redis::Pipeline) -> anyhow::Result<()> {
    let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("redis pool: {e}"))?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Deletes the marker, best effort: called when a revocation could not be written, so that a Redis
/// still answering reads stops being trusted at once rather than when the lease runs out. The
/// seeding nonce goes too, so a full copy already in flight (which may have read PostgreSQL
/// before this revocation) cannot set the marker again.
pub async fn withdraw_marker(redis: &mut deadpool_redis::Connection, keys: &RedisKeys) {
    let mut del = redis::cmd("DEL");
    del.arg(keys.complete()).arg(keys.seeding());
    match tokio::time::timeout(Duration::from_secs(2), del.query_async::<()>(redis)).await {
        Ok(Ok(())) => {
            tracing::warn!("revocation marker withdrawn: the gateway asks auth-service until the next full copy")
        }
        _ => tracing::warn!("revocation marker could not be withdrawn; it lapses when its lease runs out"),
    }
}
