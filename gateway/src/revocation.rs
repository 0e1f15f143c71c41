//! Is this verified access token still good? Redis answers (the token's jti, its session and the
//! user's "not before"), usually in the rate limiter's round trip. When Redis cannot answer, the
//! gateway asks auth-service, which keeps the same facts in PostgreSQL, and caches the answer
//! briefly: revocation never fails open. Each such fallback is counted in
//! `revocation_fallback_total{result}`.
//!
//! What it produces is a [`Verdict`]: from the rate limiter's lookup ([`RevocationCheck::verdict`],
//! no I/O), and, where that left the answer open, by asking ([`RevocationCheck::check`]) on the
//! routes that take `Authenticated`.
//!
//! Redis only vouches for revocations while it holds auth-service's marker key
//! ([`RedisKeys::complete`]): a Redis restarted without persistence, or flushed, forgot the
//! revocations along with the marker, so until auth-service has copied them back from PostgreSQL
//! the gateway asks auth-service, as when Redis is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Registry};
use proto::auth::v1::CheckTokenRequest;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use service_kit::auth::AccessClaims;
use service_kit::revocation::{RedisKeys, revoked_by_not_before};
use tonic::transport::Channel;

use crate::error::ApiError;
use crate::redis_link::{OutageLog, RedisLink};

/// Past this many cached answers, expired ones are dropped (and all of them if none expired).
const CACHE_PRUNE_AT: usize = 100_000;

/// What Redis said about one token.
#[derive(Debug, Clone, Copy)]
pub struct RedisAnswer {
    /// The token or its session was revoked.
    pub revoked: bool,
    /// The user's "not before", if any.
    pub not_before: Option<u64>,
    /// Redis holds every revocation in force (the marker key is present); when false the other
    /// fields prove nothing.
    pub complete: bool,
}

/// The keys read for one token, in this order: its jti, its session, its user's "not before", and
/// the marker saying Redis holds every revocation.
pub fn keys_for(keys: &RedisKeys, claims: &AccessClaims) -> [String; 4] {
    [
        keys.jti(&claims.jti),
        keys.session(&claims.sid),
        keys.not_before(&claims.sub),
        keys.complete(),
    ]
}

impl RedisAnswer {
    pub fn revokes(&self, claims: &AccessClaims) -> bool {
        self.revoked || revoked_by_not_before(claims.issued_at_ms(), self.not_before)
    }
}

/// What the rate limiter's Redis round trip said about a token.
#[derive(Debug, Clone, Copy)]
pub enum RedisLookup {
    Answered(RedisAnswer),
    /// Redis did not answer (down, slow, or a malformed answer).
    Failed,
    /// The limiter has no Redis.
    NotAsked,
}

/// Whether a verified token is revoked, as far as is known when the request's `Caller` is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Redis, holding every revocation in force, has none for this token.
    Stands,
    /// The token, its session, or every token of its user issued before a time, is revoked.
    Revoked,
    /// Not known yet: [`RevocationCheck::check`] asks, on the routes that need the answer.
    Ask(Source),
}

/// Where an unknown verdict is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis, and auth-service when Redis cannot answer (nobody has asked Redis yet).
    RedisFirst,
    /// auth-service only: Redis just failed, or cannot vouch (no marker), for this request.
    AuthService,
}

/// One per HTTP worker (its own Redis link and channel); the cache and counters are shared.
#[derive(Clone)]
pub struct RevocationCheck {
    redis: Option<RedisLink>,
    auth: Channel,
    shared: Arc<Shared>,
}

struct Shared {
    keys: RedisKeys,
    redis_timeout: Duration,
    /// Answers of auth-service by jti: until when they hold, and whether the token is revoked.
    cache: Mutex<HashMap<String, (Instant, bool)>>,
    cache_ttl: Duration,
    fallbacks: IntCounterVec,
    /// Redis was last seen without the marker key (logged once per change).
    incomplete: AtomicBool,
    /// Lookups Redis could not answer.
    outage: OutageLog,
    /// Checks neither Redis nor auth-service could answer.
    unknown: OutageLog,
}

impl RevocationCheck {
    pub fn new(
        redis: Option<RedisLink>,
        keys: RedisKeys,
        redis_timeout: Duration,
        auth: Channel,
        cache_ttl: Duration,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        if cache_ttl > MAX_VALID_HOLD {
            tracing::warn!(
                configured_s = cache_ttl.as_secs(),
                used_s = MAX_VALID_HOLD.as_secs(),
                "REVOCATION_CACHE_SECONDS is above the longest a \"valid\" answer may be held; using the maximum"
            );
        }
        let fallbacks = service_kit::metrics::counter_vec_from_zero(
            registry,
            "revocation_fallback_total",
            "Revocation checks answered without Redis, by result (revoked, valid, cached, unavailable)",
            &["result"],
            &[&["revoked"], &["valid"], &["cached"], &["unavailable"]],
        )?;
        Ok(Self {
            redis,
            auth,
            shared: Arc::new(Shared {
                keys,
                redis_timeout,
                cache: Mutex::new(HashMap::new()),
                cache_ttl,
                fallbacks,
                incomplete: AtomicBool::new(false),
                outage: OutageLog::default(),
                unknown: OutageLog::default(),
            }),
        })
    }

    /// The same check using one worker's Redis link and channel.
    pub fn for_worker(&self, redis: Option<RedisLink>, auth: Channel) -> Self {
        Self {
            redis,
            auth,
            shared: self.shared.clone(),
        }
    }

    /// The verdict of the rate limiter's round trip: Redis vouches only while it holds the marker.
    pub fn verdict(&self, claims: &AccessClaims, lookup: RedisLookup) -> Verdict {
        match lookup {
            RedisLookup::Answered(answer) => {
                self.note_complete(answer.complete);
                match answer {
                    // Redis answered but lacks the marker: it cannot vouch, auth-service decides.
                    RedisAnswer { complete: false, .. } => Verdict::Ask(Source::AuthService),
                    answer if answer.revokes(claims) => Verdict::Revoked,
                    _ => Verdict::Stands,
                }
            }
            RedisLookup::Failed => Verdict::Ask(Source::AuthService),
            RedisLookup::NotAsked => Verdict::Ask(Source::RedisFirst),
        }
    }

    /// Ok when the token stands; 401 `TOKEN_REVOKED` when it was revoked; 503 when neither Redis
    /// nor auth-service can tell.
    pub async fn check(&self, claims: &AccessClaims, bearer: &str, source: Source) -> Result<(), ApiError> {
        if source == Source::RedisFirst
            && let Some(answer) = self.ask_redis(claims).await
        {
            return if answer.revokes(claims) { Err(revoked()) } else { Ok(()) };
        }
        if self.ask_auth_service(claims, bearer).await? {
            Err(revoked())
        } else {
            Ok(())
        }
    }

    /// Records whether Redis holds the marker; logs when that changes.
    fn note_complete(&self, complete: bool) {
        // Read first: every authenticated request passes here, and a write would bounce the
        // cache line between workers.
        if self.shared.incomplete.load(Ordering::Relaxed) == complete
            && self.shared.incomplete.swap(!complete, Ordering::Relaxed) == complete
        {
            if complete {
                tracing::info!("Redis holds every revocation again; revocations are read from Redis");
            } else {
                tracing::warn!(
                    marker = self.shared.keys.complete(),
                    "Redis lacks the revocation marker (new, restarted without persistence, flushed, \
                     restored from a snapshot, or refusing writes): asking auth-service until it \
                     has copied the revocations back from PostgreSQL"
                );
            }
        }
    }

    /// One MGET of the jti, session, not-before and marker keys, bounded by the Redis timeout.
    /// None when Redis cannot answer or cannot vouch for the answer (no marker).
    async fn ask_redis(&self, claims: &AccessClaims) -> Option<RedisAnswer> {
        let link = self.redis.as_ref()?;
        let keys = keys_for(&self.shared.keys, claims);
        let lookup = link
            .query(self.shared.redis_timeout, |mut conn| async move {
                redis::pipe()
                    .cmd("MGET")
                    .arg(&keys)
                    .cmd("INFO")
                    .arg("server")
                    .query_async::<((Option<String>, Option<String>, Option<u64>, Option<String>), String)>(&mut conn)
                    .await
            })
            .await;
        let answer = match lookup {
            Ok(((jti, sid, nbf, marker), info)) => RedisAnswer {
                revoked: jti.is_some() || sid.is_some(),
                not_before: nbf,
                complete: marker_names(marker.as_deref(), &info),
            },
            Err(miss) => {
                if self.shared.outage.warn_now() {
                    tracing::warn!(
                        cause = %miss,
                        "revocation lookups in Redis fail; asking auth-service (counted in revocation_fallback_total)"
                    );
                }
                return None;
            }
        };
        if self.shared.outage.recovered() {
            tracing::info!("Redis answers revocation lookups again");
        }
        self.note_complete(answer.complete);
        answer.complete.then_some(answer)
    }

    /// auth-service's answer from PostgreSQL, cached: a revoked token until it expires (it can
    /// never come back), a valid one for `REVOCATION_CACHE_SECONDS` up to [`MAX_VALID_HOLD`].
    async fn ask_auth_service(&self, claims: &AccessClaims, bearer: &str) -> Result<bool, ApiError> {
        let now = Instant::now();
        if let Some((until, revoked)) = self.lock().get(&claims.jti).copied()
            && until > now
        {
            self.shared.fallbacks.with_label_values(&["cached"]).inc();
            return Ok(revoked);
        }
        let request = crate::upstream::request(CheckTokenRequest {}, Some(&format!("Bearer {bearer}")));
        let answer = AuthServiceClient::new(self.auth.clone()).check_token(request).await;
        let revoked = match answer {
            Ok(response) => response.into_inner().revoked,
            // auth-service refused the token itself (e.g. signed by a key it no longer has): the
            // caller's problem, not an outage.
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(ApiError::from_status("auth", &status));
            }
            Err(status) => {
                self.shared.fallbacks.with_label_values(&["unavailable"]).inc();
                // Once when it starts and at most every 30 s while it lasts: each such request
                // is answered 503 and counted, so a line per request would only flood the log.
                if self.shared.unknown.warn_now() {
                    tracing::error!(
                        grpc_code = ?status.code(),
                        grpc_message = status.message(),
                        "revocation unknown: Redis and auth-service both failed to answer; authenticated requests get 503 (counted in revocation_fallback_total{{result=\"unavailable\"}})"
                    );
                }
                return Err(ApiError::unavailable("authentication service"));
            }
        };
        if self.shared.unknown.recovered() {
            tracing::info!("auth-service answers revocation checks again");
        }
        self.shared
            .fallbacks
            .with_label_values(&[if revoked { "revoked" } else { "valid" }])
            .inc();
        let hold = hold(revoked, claims.exp, unix_now(), self.shared.cache_ttl);
        if !hold.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= CACHE_PRUNE_AT {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= CACHE_PRUNE_AT {
                    cache.clear();
                }
            }
            cache.insert(claims.jti.clone(), (now + hold, revoked));
        }
        Ok(revoked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, bool)>> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the marker names the server whose `INFO server` is `info` (its value is the `run_id`
/// of the Redis auth-service copied the revocations into; the limiter's script checks the same).
fn marker_names(marker: Option<&str>, info: &str) -> bool {
    marker.is_some_and(|m| Some(m) == run_id_of(info))
}

/// The `run_id` line of an `INFO server` answer.
pub(crate) fn run_id_of(info: &str) -> Option<&str> {
    info.lines().find_map(|l| l.strip_prefix("run_id:")).map(str::trim)
}

/// The longest auth-service's "valid" answer is held: a token revoked meanwhile (while Redis
/// cannot tell) is refused within this. A "revoked" one is held until the token expires.
pub const MAX_VALID_HOLD: Duration = Duration::from_secs(2);

/// How long an answer of auth-service is cached: a revoked token until it expires (it can never
/// come back), a valid one for `ttl` but never more than [`MAX_VALID_HOLD`].
fn hold(revoked: bool, exp: u64, now_unix: u64, ttl: Duration) -> Duration {
    if revoked {
        Duration::from_secs(exp.saturating_sub(now_unix).max(1))
    } else {
        ttl.min(MAX_VALID_HOLD)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn revoked() -> ApiError {
    ApiError::coded(
        service_kit::errors::ErrorCode::TokenRevoked,
        "The access token has been revoked; log in again.",
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// Claims of a token issued at 1000.
    pub(crate) fn claims() -> AccessClaims {
        AccessClaims {
            iss: "auth".to_owned(),
            aud: "api".to_owned(),
            sub: "user".to_owned(),
            exp: u64::MAX,
            iat: 1000,
            nbf: 1000,
            iat_ms: 1_000_000,
            jti: "jti".to_owned(),
            sid: "sid".to_owned(),
            did: "phone-1".to_owned(),
            roles: Vec::new(),
        }
    }

    /// A check without Redis whose auth-service is not there (nothing listens on port 1).
    pub(crate) fn nobody_answers() -> RevocationCheck {
        let dead = tonic::transport::Endpoint::from_static("http://127.0.0.1:1")
            .connect_timeout(Duration::from_millis(200))
            .connect_lazy();
        RevocationCheck::new(
            None,
            RedisKeys::default(),
            Duration::from_millis(50),
            dead,
            Duration::from_secs(5),
            &Registry::new(),
        )
        .expect("metrics")
    }

    #[test]
    fn only_revoked_answers_are_held_long() {
        let ttl = Duration::from_secs(60);
        assert_eq!(hold(false, 5000, 1000, ttl), MAX_VALID_HOLD);
        assert_eq!(hold(false, 5000, 1000, Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(hold(false, 5000, 1000, Duration::ZERO), Duration::ZERO);
        assert_eq!(hold(true, 5000, 1000, ttl), Duration::from_secs(4000));
        assert_eq!(hold(true, 5000, 9000, ttl), Duration::from_secs(1));
    }

    #[test]
    fn the_marker_vouches_only_when_it_names_this_server() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nrun_id:daa0d5782c804bd8cc8dc2d88af6b8138e18cfdf\r\ntcp_port:6379\r\n";
        assert!(marker_names(Some("daa0d5782c804bd8cc8dc2d88af6b8138e18cfdf"), info));
        assert!(!marker_names(Some("0000000000000000000000000000000000000000"), info));
        assert!(!marker_names(None, info));
        assert!(!marker_names(Some(""), "# Server\r\n"));
    }

    /// The `run_id` of the Redis server `conn` talks to.
    pub(crate) async fn server_run_id(conn: &mut redis::aio::MultiplexedConnection) -> String {
        let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.expect("INFO");
        run_id_of(&info).expect("run_id").to_owned()
    }

    /// The lookup made without the limiter (one `MGET` and `INFO server` in a pipeline) against
    /// the test Redis that `cargo xtask test` starts: the marker vouches only with this server's
    /// `run_id` as its value.
    #[tokio::test]
    async fn the_fallback_lookup_checks_the_marker_names_this_server() {
        let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL: run the tests with `cargo xtask test`");
        let link = RedisLink::new(&url.into()).expect("url");
        let keys = RedisKeys::new(&format!("test:{}:", uuid::Uuid::new_v4()));
        let check = RevocationCheck::new(
            Some(link.clone()),
            keys.clone(),
            Duration::from_secs(5),
            nobody_answers().auth,
            Duration::from_secs(1),
            &Registry::new(),
        )
        .expect("metrics");
        let mut conn = link.connection().await.expect("connected");
        let run_id = server_run_id(&mut conn).await;
        for (marker, vouches) in [
            (run_id.as_str(), true),
            ("0000000000000000000000000000000000000000", false),
        ] {
            let _: () = redis::cmd("SET")
                .arg(keys.complete())
                .arg(marker)
                .query_async(&mut conn)
                .await
                .expect("SET");
            assert_eq!(check.ask_redis(&claims()).await.is_some(), vouches, "{marker}");
        }
        let _: () = redis::cmd("DEL")
            .arg(keys.complete())
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }

    #[tokio::test]
    async fn redis_vouches_only_with_the_marker() {
        let check = nobody_answers();
        let answer = |revoked, not_before, complete| {
            RedisLookup::Answered(RedisAnswer {
                revoked,
                not_before,
                complete,
            })
        };
        let cases = [
            (answer(false, None, true), Verdict::Stands),
            // "Not before" is in milliseconds; the token was issued at 1 000 000 ms.
            (answer(false, Some(999_999), true), Verdict::Stands),
            (answer(false, Some(1_000_000), true), Verdict::Stands),
            (answer(true, None, true), Verdict::Revoked),
            // Later in the same second as the token: the token came first, so it is revoked.
            (answer(false, Some(1_000_001), true), Verdict::Revoked),
            (answer(true, None, false), Verdict::Ask(Source::AuthService)),
            (answer(false, None, false), Verdict::Ask(Source::AuthService)),
            (RedisLookup::Failed, Verdict::Ask(Source::AuthService)),
            (RedisLookup::NotAsked, Verdict::Ask(Source::RedisFirst)),
        ];
        for (lookup, verdict) in cases {
            assert_eq!(check.verdict(&claims(), lookup), verdict, "{lookup:?}");
        }
    }
}
