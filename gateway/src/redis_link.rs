//! The gateway's way to Redis: one multiplexed connection per HTTP worker. Concurrent requests
//! share it (their commands are pipelined on one socket), and no request pays for a health check
//! (a pool pings every connection it hands out, doubling the round trips of a request). The
//! connection is made on first use and made again after it fails, at most once per
//! `RECONNECT_EVERY`, so a Redis outage costs each request nothing but the fallback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// How often a link that is down tries to connect again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why Redis did not answer a command.
#[derive(Debug, Clone)]
pub enum Miss {
    Unreachable,
    TimedOut,
    /// Redis answered with an error (out of memory, a read-only replica, a broken connection).
    Failed(String),
    /// An answer of the wrong shape (a script of another gateway version under the same name).
    Malformed(usize),
    /// A rate-limit script ran past its deadline while the gateway still waited, twice in a row:
    /// Redis's clock keeps jumping against the gateway's.
    ClockMoving,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable => f.write_str("Redis is unreachable"),
            Self::TimedOut => f.write_str("Redis did not answer within RATE_LIMIT_REDIS_TIMEOUT_MS"),
            Self::Failed(e) => write!(f, "Redis refused the command: {e}"),
            Self::Malformed(n) => write!(f, "Redis answered {n} values, not the expected count"),
            Self::ClockMoving => f.write_str("Redis's clock keeps jumping against this host's (check NTP on both)"),
        }
    }
}

#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    shared: Arc<Shared>,
}

struct Shared {
    state: tokio::sync::Mutex<State>,
    /// Woken when a connection attempt ends.
    settled: tokio::sync::Notify,
}

enum State {
    Up(MultiplexedConnection),
    /// An attempt is running in its own task: a caller that gives up waiting (its Redis timeout
    /// is short) does not cancel it, so a connection that takes longer than one request's patience
    /// is still made.
    Connecting,
    /// Not connected; the last attempt (if any) failed at this instant.
    Down(Option<Instant>),
}

impl RedisLink {
    /// A link that connects on first use (the gateway starts while Redis is down).
    #[cfg(test)]
    pub fn new(url: &secrecy::SecretString) -> anyhow::Result<Self> {
        Self::with_ca(url, None)
    }

    /// A link that connects on first use; a `rediss://` server is verified against `ca_file`
    /// (`REDIS_TLS_CA_FILE`).
    pub fn with_ca(url: &secrecy::SecretString, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Ok(Self::with_client(service_kit::redis::client(url, ca_file)?))
    }

    fn with_client(client: redis::Client) -> Self {
        Self {
            client,
            shared: Arc::new(Shared {
                state: tokio::sync::Mutex::new(State::Down(None)),
                settled: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Another link to the same server with its own connection (one per worker).
    pub fn fresh(&self) -> Self {
        Self::with_client(self.client.clone())
    }

    /// The connection, connecting if needed; `None` while Redis is unreachable.
    pub async fn connection(&self) -> Option<MultiplexedConnection> {
        loop {
            // Registered before the state is read, so the end of an attempt cannot be missed.
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut state = self.shared.state.lock().await;
                match &*state {
                    State::Up(conn) => return Some(conn.clone()),
                    State::Connecting => {}
                    State::Down(Some(at)) if at.elapsed() < RECONNECT_EVERY => return None,
                    State::Down(previous) => {
                        let first = previous.is_none();
                        *state = State::Connecting;
                        tokio::spawn(Self::connect(self.client.clone(), self.shared.clone(), first));
                    }
                }
            }
            settled.await;
        }
    }

    async fn connect(client: redis::Client, shared: Arc<Shared>, first: bool) {
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
        let outcome = client.get_multiplexed_async_connection_with_config(&config).await;
        let mut state = shared.state.lock().await;
        *state = match outcome {
            Ok(conn) => {
                if !first {
                    tracing::info!("Redis reachable again");
                }
                State::Up(conn)
            }
            Err(e) => {
                if first {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying on demand");
                }
                State::Down(Some(Instant::now()))
            }
        };
        drop(state);
        shared.settled.notify_waiters();
    }

    /// One command, made by `command` on the connection, bounded by `timeout`. A broken connection
    /// is dropped, to be made again.
    pub async fn query<T, F, Fut>(&self, timeout: Duration, command: F) -> Result<T, Miss>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let call = async {
            let conn = self.connection().await.ok_or(Miss::Unreachable)?;
            let result = command(conn).await;
            let error = result.as_ref().err().map(ToString::to_string);
            self.check(result)
                .await
                .ok_or_else(|| Miss::Failed(error.unwrap_or_default()))
        };
        tokio::time::timeout(timeout, call).await.unwrap_or(Err(Miss::TimedOut))
    }

    /// Reports the outcome of a command: a broken connection is dropped, to be made again.
    async fn check<T>(&self, result: redis::RedisResult<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    tracing::warn!(error = %e, "Redis connection lost");
                    let mut state = self.shared.state.lock().await;
                    // An attempt already under way (another request saw the failure) is left alone.
                    if matches!(*state, State::Up(_)) {
                        *state = State::Down(Some(Instant::now()));
                    }
                }
                None
            }
        }
    }
}

/// Log lines for an outage of Redis as one of its users sees it (rate-limit decisions, revocation
/// lookups): a warning naming the cause when it starts, again at most every [`OutageLog::EVERY`]
/// while it goes on (metrics count every request), and one line when Redis answers again. A frozen
/// or full Redis fails no request, so without these an operator would see only latency and a
/// counter; with a line per request, a flood.
#[derive(Default)]
pub struct OutageLog {
    /// Unix ms from which the next warning may be written; 0 while Redis answers.
    next_warning_ms: AtomicU64,
}

impl OutageLog {
    pub const EVERY: Duration = Duration::from_secs(30);

    /// Whether a failure now is to be logged (the first of an outage, or the first after a quiet
    /// [`Self::EVERY`]); true for one caller only, however many race.
    pub fn warn_now(&self) -> bool {
        self.warn_at(unix_ms())
    }

    fn warn_at(&self, now_ms: u64) -> bool {
        let next = self.next_warning_ms.load(Ordering::Relaxed);
        let after = now_ms.saturating_add(Self::EVERY.as_millis() as u64);
        now_ms >= next
            && self
                .next_warning_ms
                .compare_exchange(next, after, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Redis answered: true once, at the end of an outage. Otherwise one relaxed load, so that
    /// the requests Redis answers do not contend for a shared cache line.
    pub fn recovered(&self) -> bool {
        self.next_warning_ms.load(Ordering::Relaxed) != 0 && self.next_warning_ms.swap(0, Ordering::Relaxed) != 0
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test Redis that `cargo xtask test` starts.
    fn test_redis() -> RedisLink {
        let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL: run the tests with `cargo xtask test`");
        RedisLink::new(&url.into()).expect("url")
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_connection() {
        let link = test_redis();
        // A caller with no patience at all: polled once, then dropped before the connection is made.
        use futures_util::FutureExt as _;
        assert!(link.connection().now_or_never().is_none(), "gave up");
        assert!(matches!(*link.shared.state.lock().await, State::Connecting));
        // The attempt it started goes on by itself and leaves the link up.
        link.shared.settled.notified().await;
        assert!(matches!(*link.shared.state.lock().await, State::Up(_)));
        let mut conn = link.connection().await.expect("connected");
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("ping");
        assert_eq!(pong, "PONG");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_tried_again_only_after_a_pause() {
        // Nothing listens on port 1.
        let link = RedisLink::new(&"redis://127.0.0.1:1".into()).expect("url");
        assert!(link.connection().await.is_none());
        let failed_at = match *link.shared.state.lock().await {
            State::Down(Some(at)) => at,
            _ => panic!("the failure is recorded"),
        };
        // Within the pause, callers get `None` without a new attempt.
        assert!(link.connection().await.is_none());
        assert!(matches!(*link.shared.state.lock().await, State::Down(Some(at)) if at == failed_at));
    }

    #[test]
    fn an_outage_is_logged_when_it_starts_then_at_most_every_thirty_seconds() {
        let log = OutageLog::default();
        let every = OutageLog::EVERY.as_millis() as u64;
        let t0 = 1_000_000;
        assert!(!log.recovered(), "nothing to recover from before an outage");
        assert!(log.warn_at(t0), "the first failure is logged");
        assert!(!log.warn_at(t0 + 1), "the next ones are not");
        assert!(!log.warn_at(t0 + every - 1));
        assert!(log.warn_at(t0 + every), "a reminder after the quiet period");
        assert!(!log.warn_at(t0 + every + 1));
        assert!(log.recovered(), "the first answer ends the outage");
        assert!(!log.recovered(), "and only once");
        assert!(log.warn_at(t0 + every + 2), "the next outage is logged at once");
    }
}
