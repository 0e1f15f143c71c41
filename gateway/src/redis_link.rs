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
    state: Arc<tokio::sync::Mutex<State>>,
}

enum State {
    Up(MultiplexedConnection),
    /// Not connected; the last attempt (if any) failed at this instant.
    Down(Option<Instant>),
}

impl RedisLink {
    /// A link that connects on first use (the gateway starts while Redis is down).
    pub fn new(url: &secrecy::SecretString) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url.expose_secret())?,
            state: Arc::new(tokio::sync::Mutex::new(State::Down(None))),
        })
    }

    /// Another link to the same server with its own connection (one per worker).
    pub fn fresh(&self) -> Self {
        Self {
            client: self.client.clone(),
            state: Arc::new(tokio::sync::Mutex::new(State::Down(None))),
        }
    }

    /// The connection, connecting if needed; `None` while Redis is unreachable.
    pub async fn connection(&self) -> Option<MultiplexedConnection> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Up(conn) => return Some(conn.clone()),
            State::Down(Some(at)) if at.elapsed() < RECONNECT_EVERY => return None,
            State::Down(_) => {}
        }
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
        match self.client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(conn) => {
                if matches!(*state, State::Down(Some(_))) {
                    tracing::info!("Redis reachable again");
                }
                *state = State::Up(conn.clone());
                Some(conn)
            }
            Err(e) => {
                if matches!(*state, State::Down(None) | State::Up(_)) {
                    tracing::warn!(error = %e, "cannot connect to Redis; retrying on demand");
                }
                *state = State::Down(Some(Instant::now()));
                None
            }
        }
    }

    /// Reports the outcome of a command: a broken connection is dropped, to be made again.
    pub async fn check<T>(&self, result: redis::RedisResult<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    tracing::warn!(error = %e, "Redis connection lost");
                    *self.state.lock().await = State::Down(Some(Instant::now()));
                }
                None
            }
        }
    }
}
