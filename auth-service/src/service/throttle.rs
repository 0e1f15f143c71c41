//! What slows a login down, in the order it escalates: a CAPTCHA after a few failures of an
//! account, then a lock of that account (doubling with each lock, up to a day); across accounts,
//! a CAPTCHA (or, with no CAPTCHA provider, a wait) for an address with many failures (credential
//! stuffing), counted in Redis.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis;

use super::Auth;
use crate::captcha::CaptchaError;
use crate::domain::{Actor, User, UserId};
use crate::store::{self, Conn, StoreError, Transaction as _};

/// Why a login (or a registration) is not even tried.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// The account is locked after repeated failures.
    #[error("account locked")]
    Locked { retry_after: u64 },
    /// Too many failures from this address, and no CAPTCHA to offer instead.
    #[error("too many failed logins from this address")]
    TooManyFailures { retry_after: u64 },
    #[error("captcha required")]
    CaptchaRequired,
    #[error("captcha failed")]
    CaptchaFailed,
    /// The CAPTCHA provider did not give a usable answer.
    #[error("CAPTCHA provider unavailable")]
    CaptchaUnavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failed logins of an account after which a CAPTCHA is required (before the lock at
/// `LOGIN_MAX_ATTEMPTS`): escalation goes CAPTCHA first, then lock.
const CAPTCHA_AFTER_FAILURES: i32 = 3;

/// How long Redis may take to count or tell an address's failures before the login goes on
/// without (the per-account lock still holds).
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Whole seconds until `until`, at least one: the `Retry-After` of a lock.
pub(super) fn retry_after(until: DateTime<Utc>) -> u64 {
    (until - Utc::now()).num_seconds().max(1) as u64
}

/// `base` doubled for each earlier lock, capped at 24 hours.
pub fn lock_duration(base: Duration, earlier_locks: i32) -> Duration {
    let factor = 1u32 << earlier_locks.clamp(0, 16);
    base.saturating_mul(factor).min(Duration::from_secs(24 * 3600))
}

impl Auth {
    /// Before a password is checked: a locked account waits; an address with many failures solves
    /// a CAPTCHA (or waits, with no CAPTCHA provider); an account with a few failures solves one.
    pub(super) async fn admit_login(
        &self,
        user: Option<&User>,
        captcha_token: &str,
        actor: &Actor,
    ) -> Result<(), ThrottleError> {
        if let Some(until) = user.and_then(|u| u.login.locked_until).filter(|t| *t > Utc::now()) {
            return Err(ThrottleError::Locked {
                retry_after: retry_after(until),
            });
        }
        let ip_failures = self.ip_failures(actor.ip.as_deref()).await;
        if ip_failures.is_some_and(|(n, _)| n >= self.policy.ip_max_failures) {
            if !self.captcha.is_disabled() {
                self.check_captcha(captcha_token, actor, user.map(|u| u.id)).await?;
            } else {
                let retry_after = ip_failures.map_or(60, |(_, ttl)| ttl.max(1));
                tracing::warn!(
                    client_ip = actor.ip.as_deref(),
                    "login refused: too many failures from this address"
                );
                return Err(ThrottleError::TooManyFailures { retry_after });
            }
        } else if let Some(u) = user.filter(|u| u.login.attempts >= CAPTCHA_AFTER_FAILURES) {
            self.check_captcha(captcha_token, actor, Some(u.id)).await?;
        }
        Ok(())
    }

    /// After a wrong password: counts it for the account (a security event; the account locks at
    /// `LOGIN_MAX_ATTEMPTS`) and for the address. Returns the lock's remaining seconds when this
    /// failure locked the account.
    pub(super) async fn count_failed_login(
        &self,
        conn: &mut Conn,
        user: Option<&User>,
        actor: &Actor,
    ) -> Result<Option<u64>, StoreError> {
        let locked = match user {
            Some(user) => self.fail(conn, user, actor).await?,
            None => {
                // Recorded too, in a transaction of its own: operators see attempts on
                // addresses that have no account, and the answer takes as long as for a
                // wrong password (the benchmark measures the two).
                let ip = actor.ip.clone();
                conn.transaction::<_, StoreError, _>(async move |conn| {
                    let details = serde_json::json!({"account": "unknown"});
                    self.events
                        .record(conn, None, "login_failed", "low", ip.as_deref(), details)
                        .await
                })
                .await?;
                None
            }
        };
        tracing::info!(known_account = user.is_some(), "login failed");
        self.count_ip_failure(actor.ip.as_deref()).await;
        Ok(locked)
    }

    /// Verifies a CAPTCHA token when a provider is configured; a failure is a security event.
    pub(super) async fn check_captcha(
        &self,
        token: &str,
        actor: &Actor,
        user: Option<UserId>,
    ) -> Result<(), ThrottleError> {
        match self.captcha.verify(token, actor.ip.as_deref()).await {
            Ok(()) => Ok(()),
            Err(CaptchaError::Missing) => Err(ThrottleError::CaptchaRequired),
            Err(CaptchaError::Rejected) => {
                let mut conn = self.conn().await?;
                let details = serde_json::json!({});
                self.events
                    .record(&mut conn, user, "captcha_failed", "low", actor.ip.as_deref(), details)
                    .await?;
                tracing::warn!(event_type = "captcha_failed", "CAPTCHA rejected");
                Err(ThrottleError::CaptchaFailed)
            }
            Err(CaptchaError::Unavailable(e)) => {
                Err(ThrottleError::CaptchaUnavailable(e.context("verifying the CAPTCHA")))
            }
        }
    }

    /// Counts a failed password; returns the lock's remaining seconds when this failure locked it.
    async fn fail(&self, conn: &mut Conn, user: &User, actor: &Actor) -> Result<Option<u64>, StoreError> {
        let attempts = user.login.attempts + 1;
        let lock =
            (attempts >= self.policy.max_attempts).then(|| lock_duration(self.policy.lockout, user.login.lock_count));
        let until = lock.map(|d| Utc::now() + TimeDelta::from_std(d).unwrap_or(TimeDelta::hours(24)));
        let user_id = user.id;
        let ip = actor.ip.clone();
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::record_failure(conn, user_id, until).await?;
            let details = serde_json::json!({"attempt": attempts});
            self.events
                .record(conn, Some(user_id), "login_failed", "low", ip.as_deref(), details)
                .await?;
            if let Some(until) = until {
                let details = serde_json::json!({"until": until.to_rfc3339()});
                self.events
                    .record(conn, Some(user_id), "account_locked", "high", ip.as_deref(), details)
                    .await?;
            }
            Ok(())
        })
        .await?;
        if let Some(d) = lock {
            tracing::warn!(user_id = %user.id, event_type = "account_locked", lock_seconds = d.as_secs(), "account locked after repeated failures");
        }
        Ok(lock.map(|d| d.as_secs()))
    }

    fn ip_failure_key(&self, ip: &str) -> String {
        self.redis_keys.other(&format!("auth:login-failures:ip:{ip}"))
    }

    /// Failed logins from this address in the current window, and the window's remaining seconds.
    /// Redis down means "unknown": the per-account lockout still holds.
    async fn ip_failures(&self, ip: Option<&str>) -> Option<(u64, u64)> {
        let ip = ip?;
        let read = async {
            let mut conn = self.redis.get().await.ok()?;
            let (n, ttl): (Option<u64>, i64) = redis::pipe()
                .get(self.ip_failure_key(ip))
                .ttl(self.ip_failure_key(ip))
                .query_async(&mut conn)
                .await
                .ok()?;
            Some((n.unwrap_or(0), ttl.max(0) as u64))
        };
        tokio::time::timeout(REDIS_TIMEOUT, read).await.ok().flatten()
    }

    async fn count_ip_failure(&self, ip: Option<&str>) {
        let Some(ip) = ip else { return };
        let window = self.policy.lockout.as_secs().max(1);
        let write = async {
            let mut conn = self.redis.get().await.ok()?;
            // INCR, then set the expiry only when the key is new: a steady trickle cannot keep
            // the window open for ever.
            redis::pipe()
                .incr(self.ip_failure_key(ip), 1)
                .cmd("EXPIRE")
                .arg(self.ip_failure_key(ip))
                .arg(window)
                .arg("NX")
                .query_async::<(u64, i64)>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(REDIS_TIMEOUT, write)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!("could not count a failed login per address (Redis unavailable)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_doubles_up_to_a_day() {
        let base = Duration::from_secs(900);
        assert_eq!(lock_duration(base, 0), Duration::from_secs(900));
        assert_eq!(lock_duration(base, 1), Duration::from_secs(1800));
        assert_eq!(lock_duration(base, 3), Duration::from_secs(7200));
        assert_eq!(lock_duration(base, 7), Duration::from_secs(86_400));
        assert_eq!(lock_duration(base, 1000), Duration::from_secs(86_400));
    }
}
