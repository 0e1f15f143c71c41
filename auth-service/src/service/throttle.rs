//! What slows a password guess down, counted per (account, client address) so that an attacker
//! locks out only their own address: a CAPTCHA after a few failures of the pair, then a lock of
//! the pair (doubling with each lock, up to a day) that the right password with a solved CAPTCHA
//! still passes (a soft lock); across addresses, a CAPTCHA (never a lock) for an account with
//! many failures (guessing spread over many addresses); across accounts, a CAPTCHA (or, with no
//! CAPTCHA provider, a wait) for an address with many failures (credential stuffing), counted in
//! Redis. E-mails with no
//! account are counted alike, under the same keyed hash, so a locked account and an unknown one
//! answer the same. Every attempt is counted before the password is checked and given back when
//! it is refused unjudged, so concurrent guesses cannot all be judged against one snapshot.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;

use super::Auth;
use crate::captcha::CaptchaError;
use crate::domain::{Actor, User, UserId};
use crate::password::Verdict;
use crate::store::{self, Conn, Reserved, StoreError, Transaction as _};

/// Why a password is not even checked.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Repeated failures for this account from this address.
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
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What checking a password (after its attempt was admitted) found.
pub(super) enum PasswordCheck {
    Right {
        rehash: bool,
    },
    /// Wrong, or no such account; `locked` is the lock's remaining seconds when the pair is
    /// (now) locked.
    Wrong {
        locked: Option<u64>,
    },
}

/// Failed logins of a pair after which a CAPTCHA is required (before the lock at
/// `LOGIN_MAX_ATTEMPTS`): escalation goes CAPTCHA first, then lock.
const CAPTCHA_AFTER_FAILURES: i32 = 3;

/// The counter row of an account across all its addresses (no address key looks like this).
const ACCOUNT_WIDE: &str = "*";

/// A solved CAPTCHA passes a pair's lock only while the pair has been locked fewer times than
/// this. Each wrong password a CAPTCHA let through locks the pair again, longer; so a
/// CAPTCHA-solving service gets a couple of guesses per lock, not one per CAPTCHA, and then waits
/// like anyone else (the owner elsewhere is not concerned: the lock binds this address only).
const CAPTCHA_PASSES_LOCKS_BELOW: i32 = 3;

/// Failed logins of an account from all addresses together after which every attempt needs a
/// CAPTCHA: a spread-out guess costs a CAPTCHA each, while the owner is never locked out by it.
const ACCOUNT_CAPTCHA_AFTER_FAILURES: i32 = 10;

/// A login counter untouched this long (and not locked) is deleted; a lock lasts a day at most,
/// so no escalation outlives it by more than this.
const IDLE_COUNTER_HOURS: i64 = 24;

/// How often idle login counters are looked for.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How long Redis may take to count or tell an address's failures before the login goes on
/// without (the per-pair lock still holds).
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// DECR that deletes the key at zero: a count taken back after its window expired must not
/// leave a negative count (or a key without expiry) behind.
const UNCOUNT_SCRIPT: &str =
    "local n = redis.call('DECR', KEYS[1]) if n <= 0 then redis.call('DEL', KEYS[1]) end return n";

/// HKDF label of the key that hashes e-mails into counter keys.
pub(super) const SUBJECT_KEY_LABEL: &str = "auth/login-throttle/v1";

/// Whole seconds until `until`, at least one: the `Retry-After` of a lock.
pub(super) fn retry_after(until: DateTime<Utc>) -> u64 {
    (until - Utc::now()).num_seconds().max(1) as u64
}

/// `base` doubled for each earlier lock, capped at 24 hours.
pub fn lock_duration(base: Duration, earlier_locks: i32) -> Duration {
    let factor = 1u32 << earlier_locks.clamp(0, 16);
    base.saturating_mul(factor).min(Duration::from_secs(24 * 3600))
}

/// When a lock of `duration` from now ends.
pub(super) fn lock_end(duration: Duration) -> DateTime<Utc> {
    Utc::now() + TimeDelta::from_std(duration).unwrap_or(TimeDelta::hours(24))
}

/// The key a client address is counted under: an IPv4 address as is (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address as its /64 (what one customer gets, so rotating
/// through it buys nothing), anything else as given (cut to 64 characters), "" for none.
pub fn address_key(ip: Option<&str>) -> String {
    let Some(ip) = ip.map(str::trim).filter(|s| !s.is_empty()) else {
        return String::new();
    };
    match ip.parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Err(_) => ip.chars().take(64).collect(),
    }
}

/// A password presented for an account name.
pub(super) struct PasswordGuess<'a> {
    /// As typed: counted under its normalised form whether or not an account has it.
    pub email: &'a str,
    /// The account with that e-mail, if any.
    pub account: Option<&'a User>,
    pub password: &'a SecretString,
    /// Empty when none was sent.
    pub captcha_token: &'a str,
}

/// An attempt admitted to have its password checked.
pub(super) struct Attempt {
    subject: Vec<u8>,
    address: String,
    /// `counted` is false while the pair is locked: a soft-lock attempt.
    reserved: Reserved,
    /// This attempt's number across all addresses (0: not counted there).
    across: i32,
    /// Counted in Redis for the address.
    ip_counted: bool,
}

impl Attempt {
    /// The pair's lock, when this attempt passes one with a solved CAPTCHA.
    fn soft_lock(&self) -> Option<DateTime<Utc>> {
        self.reserved.locked_until.filter(|_| !self.reserved.counted)
    }
}

impl Auth {
    /// The counter key of an account name: HMAC-SHA256 of the normalised e-mail (trimmed, lower
    /// case), whether or not an account has it.
    pub(super) fn login_subject(&self, email: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.subject_key).expect("HMAC takes any key length");
        mac.update(email.trim().to_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Checks a password for the account named `guess.email` (`guess.account`: that account; a
    /// name with none costs the same time), counting the attempt for (account, address) first.
    pub(super) async fn check_password(
        &self,
        conn: &mut Conn,
        guess: PasswordGuess<'_>,
        actor: &Actor,
    ) -> Result<PasswordCheck, ThrottleError> {
        let PasswordGuess {
            email,
            account,
            password,
            captcha_token,
        } = guess;
        let user = account.map(|u| u.id);
        let stored = account.map(|u| u.password_hash.clone());
        let attempt = self.reserve(conn, email, user, captcha_token, actor).await?;
        let verdict = match self.passwords.verify(password, stored).await {
            Ok(v) => v,
            Err(e) => {
                self.release(conn, &attempt).await;
                return Err(e.into());
            }
        };
        match verdict {
            Verdict::Match { rehash } if user.is_some() => {
                self.succeeded(conn, &attempt).await?;
                Ok(PasswordCheck::Right { rehash })
            }
            _ => Ok(PasswordCheck::Wrong {
                locked: self.failed(conn, &attempt, user, actor).await?,
            }),
        }
    }

    /// Counts the attempt (address in Redis, pair in PostgreSQL), then decides whether its
    /// password may be checked; a refused attempt is given back.
    async fn reserve(
        &self,
        conn: &mut Conn,
        email: &str,
        user: Option<UserId>,
        captcha_token: &str,
        actor: &Actor,
    ) -> Result<Attempt, ThrottleError> {
        let subject = self.login_subject(email);
        let address = address_key(actor.ip.as_deref());
        let ip = self.count_ip_attempt(&address).await;
        let reserved = match store::reserve_login_attempt(conn, &subject, &address).await {
            Ok(r) => r,
            Err(e) => {
                if ip.is_some() {
                    self.uncount_ip_attempt(&address).await;
                }
                return Err(e.into());
            }
        };
        let mut attempt = Attempt {
            subject,
            address,
            reserved,
            across: 0,
            ip_counted: ip.is_some(),
        };
        match store::reserve_login_attempt(conn, &attempt.subject, ACCOUNT_WIDE).await {
            Ok(across) => attempt.across = across.attempt,
            Err(e) => {
                self.release(conn, &attempt).await;
                return Err(e.into());
            }
        }
        match self.admit(&attempt, ip, captcha_token, actor, user).await {
            Ok(()) => Ok(attempt),
            Err(e) => {
                self.release(conn, &attempt).await;
                Err(e)
            }
        }
    }

    /// A locked pair passes only with a solved CAPTCHA; an attempt beyond `LOGIN_MAX_ATTEMPTS`
    /// (others are being judged) waits; an address with many failures, or a pair with a few,
    /// solves a CAPTCHA.
    async fn admit(
        &self,
        attempt: &Attempt,
        ip: Option<(u64, u64)>,
        captcha_token: &str,
        actor: &Actor,
        user: Option<UserId>,
    ) -> Result<(), ThrottleError> {
        let r = attempt.reserved;
        if let Some(until) = attempt.soft_lock() {
            if self.captcha.is_disabled() || captcha_token.is_empty() || r.lock_count >= CAPTCHA_PASSES_LOCKS_BELOW {
                return Err(ThrottleError::Locked {
                    retry_after: retry_after(until),
                });
            }
            return self.check_captcha(captcha_token, actor, user).await;
        }
        if r.attempt > self.policy.max_attempts {
            // The attempt that reached the limit is being judged and locks the pair if wrong.
            return Err(ThrottleError::Locked {
                retry_after: lock_duration(self.policy.lockout, r.lock_count).as_secs(),
            });
        }
        if let Some((_, ttl)) = ip.filter(|(n, _)| *n > self.policy.ip_max_failures) {
            if self.captcha.is_disabled() {
                tracing::warn!(
                    client_ip = actor.ip.as_deref(),
                    "login refused: too many failures from this address"
                );
                return Err(ThrottleError::TooManyFailures {
                    retry_after: ttl.max(1),
                });
            }
            self.check_captcha(captcha_token, actor, user).await?;
        } else if r.attempt > CAPTCHA_AFTER_FAILURES || attempt.across > ACCOUNT_CAPTCHA_AFTER_FAILURES {
            self.check_captcha(captcha_token, actor, user).await?;
        }
        Ok(())
    }

    /// Gives back an attempt refused before its password was checked (best effort: a failure
    /// leaves it counted, erring on the safe side).
    async fn release(&self, conn: &mut Conn, attempt: &Attempt) {
        if attempt.reserved.counted
            && let Err(e) = store::release_login_attempt(conn, &attempt.subject, &attempt.address).await
        {
            tracing::warn!(error = format!("{e:#}"), "could not give back a login attempt");
        }
        if attempt.across > 0
            && let Err(e) = store::release_login_attempt(conn, &attempt.subject, ACCOUNT_WIDE).await
        {
            tracing::warn!(error = format!("{e:#}"), "could not give back a login attempt");
        }
        if attempt.ip_counted {
            self.uncount_ip_attempt(&attempt.address).await;
        }
    }

    /// The right password: the pair and the account-wide count start over (a soft lock ends),
    /// and the address's count takes this attempt back.
    async fn succeeded(&self, conn: &mut Conn, attempt: &Attempt) -> Result<(), StoreError> {
        store::clear_login_attempts(conn, &attempt.subject, &attempt.address).await?;
        store::clear_login_attempts(conn, &attempt.subject, ACCOUNT_WIDE).await?;
        if attempt.ip_counted {
            self.uncount_ip_attempt(&attempt.address).await;
        }
        Ok(())
    }

    /// A wrong password (or no such account): a security event; the attempt that reaches
    /// `LOGIN_MAX_ATTEMPTS` locks the pair, and so does a wrong one that a CAPTCHA let through a
    /// lock (again, longer). Returns the lock's remaining seconds.
    async fn failed(
        &self,
        conn: &mut Conn,
        attempt: &Attempt,
        user: Option<UserId>,
        actor: &Actor,
    ) -> Result<Option<u64>, StoreError> {
        let soft = attempt.soft_lock();
        let lock = (soft.is_some() || attempt.reserved.attempt >= self.policy.max_attempts)
            .then(|| lock_duration(self.policy.lockout, attempt.reserved.lock_count));
        let until = lock.map(lock_end);
        let ip = actor.ip.clone();
        let n = attempt.reserved.attempt;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            if let Some(until) = until {
                store::lock_login(conn, &attempt.subject, &attempt.address, until).await?;
            }
            // Operators see attempts on addresses that have no account too.
            let details = match user {
                Some(_) => serde_json::json!({"attempt": n}),
                None => serde_json::json!({"account": "unknown"}),
            };
            self.events
                .record(conn, user, "login_failed", "low", ip.as_deref(), details)
                .await?;
            if let Some(until) = until {
                let details = serde_json::json!({"until": until.to_rfc3339(), "known_account": user.is_some()});
                self.events
                    .record(conn, user, "account_locked", "high", ip.as_deref(), details)
                    .await?;
            }
            Ok(())
        })
        .await?;
        tracing::info!(known_account = user.is_some(), "login failed");
        if let Some(d) = lock {
            tracing::warn!(user_id = ?user, event_type = "account_locked", lock_seconds = d.as_secs(), "account locked for this address after repeated failures");
        }
        Ok(lock.map(|d| d.as_secs()))
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

    /// Deletes idle login counters every hour, for ever (spawned once at start).
    pub async fn purge_idle_login_counters(self) {
        let mut every = tokio::time::interval(PURGE_EVERY);
        loop {
            every.tick().await;
            let purged = match self.conn().await {
                Ok(mut conn) => store::purge_idle_login_attempts(&mut conn, TimeDelta::hours(IDLE_COUNTER_HOURS)).await,
                Err(e) => Err(e),
            };
            match purged {
                Ok(n) => tracing::debug!(purged = n, "idle login counters deleted"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "could not delete idle login counters"),
            }
        }
    }

    fn ip_failure_key(&self, address: &str) -> String {
        self.redis_keys.other(&format!("auth:login-failures:ip:{address}"))
    }

    /// Counts an attempt from `address` first (INCR, then the window's expiry when the key is
    /// new) and returns the count and the window's remaining seconds. Redis down means "unknown":
    /// the per-pair lock still holds.
    async fn count_ip_attempt(&self, address: &str) -> Option<(u64, u64)> {
        if address.is_empty() {
            return None;
        }
        let key = self.ip_failure_key(address);
        let window = self.policy.lockout.as_secs().max(1);
        let write = async {
            let mut conn = self.redis.get().await.ok()?;
            // EXPIRE NX: a steady trickle cannot keep the window open for ever.
            let (n, _, ttl): (u64, i64, i64) = redis::pipe()
                .incr(&key, 1)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(window)
                .arg("NX")
                .ttl(&key)
                .query_async(&mut conn)
                .await
                .ok()?;
            Some((n, ttl.max(0) as u64))
        };
        let counted = tokio::time::timeout(REDIS_TIMEOUT, write).await.ok().flatten();
        if counted.is_none() {
            tracing::warn!("could not count a login attempt per address (Redis unavailable)");
        }
        counted
    }

    /// Takes back an attempt counted for `address` (a success, or a refusal before the check).
    async fn uncount_ip_attempt(&self, address: &str) {
        let key = self.ip_failure_key(address);
        let write = async {
            let mut conn = self.redis.get().await.ok()?;
            redis::cmd("EVAL")
                .arg(UNCOUNT_SCRIPT)
                .arg(1)
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(REDIS_TIMEOUT, write)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!("could not take back a login attempt per address (Redis unavailable)");
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

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(address_key(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            address_key(Some("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(address_key(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(address_key(Some("2001:db8:1:3::1")), "2001:db8:1:2::/64");
        assert_eq!(address_key(Some("::1")), "::/64");
        assert_eq!(address_key(None), "");
        assert_eq!(address_key(Some("  ")), "");
        assert_eq!(address_key(Some(&"x".repeat(100))).len(), 64);
    }
}
