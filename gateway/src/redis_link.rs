//! The gateway's way to Redis: one multiplexed connection per HTTP worker. Concurrent requests
//! share it (their commands are pipelined on one socket), and no request pays for a health check
//! (a pool pings every connection it hands out, doubling the round trips of a request). The
//! connection is made on first use and made again after it fails, at most once per
//! `RECONNECT_EVERY`, so a Redis outage costs each request nothing but the fallback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use secrecy::ExposeSecret as _;

/// How often a link that is down tries to connect again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

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
    pub fn new(url: &secrecy::SecretString) -> anyhow::Result<Self> {
        Ok(Self::with_client(redis::Client::open(url.expose_secret())?))
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

    /// Reports the outcome of a command: a broken connection is dropped, to be made again.
    pub async fn check<T>(&self, result: redis::RedisResult<T>) -> Option<T> {
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
}
