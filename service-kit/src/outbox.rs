//! The transactional outbox: a service records each domain event in its own `outbox` table in the
//! transaction of the write that caused it ([`enqueue`]), and a relay delivers the table's rows to
//! their receivers afterwards, at least once (receivers de-duplicate by `event_id`). A delivered
//! event's row is deleted (the receiver keeps the event); a dead one stays until it is queued
//! again. So the table holds only what is still owed, and a delivery is a delete, not an update
//! that writes a new version of the row and two index entries.
//!
//! Every service that publishes events has, in its own schema, the table as
//! `reports-service/migrations/2026-12-07-000003_outbox`, `…000016_outbox_owed_index` and
//! `…000017_outbox_delete_delivered` leave it (a new service: one migration with the table and
//! index as they stand), and declares itself a publisher (`Service::OUTBOX_PRODUCER`): `serve`
//! then runs the [`Relay`] and the binary gets the operator command `outbox-retry-dead`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use prometheus::{IntCounter, IntGauge, Registry};
use proto::events::v1::event_sink_client::EventSinkClient;
use proto::events::v1::{DeliverRequest, Envelope};
use secrecy::ExposeSecret as _;
use tonic::transport::Channel;

use crate::config::Env;
use crate::db::{self, DatabaseConfig, Pool};
use crate::grpc_tls::GrpcTls;
use crate::metrics::register;
use crate::shutdown::Shutdown;
use crate::statement::statement;

/// One domain event, as the write that causes it records it.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Unique per event: the receiver's idempotency key.
    pub event_id: uuid::Uuid,
    /// Dotted type, e.g. `report.submitted`.
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    /// W3C traceparent of the request that caused the event ("" when none).
    pub traceparent: String,
    /// The event's fields. Never personal data a receiver must not see.
    pub payload: serde_json::Value,
}

/// Records `event` in `{schema}.outbox`; call it inside the transaction of the write it describes,
/// so the event exists exactly when the write does. The connection is shared, so the event can be
/// pipelined with the write's other statements.
pub async fn enqueue(
    mut conn: &AsyncPgConnection,
    schema: &'static str,
    event: &OutboxEvent,
) -> diesel::QueryResult<()> {
    // `schema` is a compile-time identifier of the service, never input.
    statement(&format!(
        "INSERT INTO {schema}.outbox (event_id, event_type, occurred_at, traceparent, payload) \
         VALUES ($1, $2, $3, $4, $5)"
    ))
    .bind::<SqlUuid, _>(event.event_id)
    .bind::<Text, _>(event.event_type)
    .bind::<Timestamptz, _>(event.occurred_at)
    .bind::<Text, _>(&event.traceparent)
    .bind::<Jsonb, _>(&event.payload)
    .execute(&mut conn)
    .await
    .map(|_| ())
}

/// The variable naming where events go (analytics-service's `events.v1.EventSink`); the gateway
/// reads the same name.
pub const SINK_URL_VAR: &str = "ANALYTICS_SERVICE_URL";
/// The operator command that puts dead events back in line (`SERVICE outbox-retry-dead`).
pub const RETRY_DEAD_COMMAND: &str = "outbox-retry-dead";
/// The most events one `Deliver` call carries (the contract's limit).
pub const MAX_BATCH: usize = 500;
/// `last_error` is cut to this many characters: enough to act on, never a whole response.
const MAX_ERROR_CHARS: usize = 200;

/// How long a failed event waits before its next attempt: exponential from `base`, capped at
/// `max`, with "equal jitter" (half the step fixed, half random) so that events failed together
/// do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `attempts`-th failed attempt (1 = the first), for `jitter` in `[0, 1)`:
    /// the step `min(max, base · 2^(attempts-1))`, of which the first half always and the second
    /// half times `jitter`.
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        let step = self
            .base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What the relay of one service needs, from the environment.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `ANALYTICS_SERVICE_URL`: where `events.v1.EventSink` listens.
    pub sink_url: String,
    /// This process's gRPC certificate, presented to the sink (or plain gRPC in development).
    pub tls: GrpcTls,
    /// `OUTBOX_MAX_ATTEMPTS` (20): failed attempts after which an event is dead.
    pub max_attempts: u32,
    /// `OUTBOX_POLL_INTERVAL_MS` (250): how often an idle relay looks for new events.
    pub poll_interval: Duration,
    /// `OUTBOX_BATCH_SIZE` (100, at most 500): events per `Deliver` call.
    pub batch_size: usize,
    /// `OUTBOX_BACKOFF_BASE_MS` (1000) and `OUTBOX_BACKOFF_MAX_MS` (300000).
    pub backoff: Backoff,
    /// `OUTBOX_DELIVERY_TIMEOUT_MS` (10000): deadline of one `Deliver` call.
    pub delivery_timeout: Duration,
}

impl RelayConfig {
    /// Reads the relay's settings; every problem is recorded on `env`, naming the variable.
    pub fn from_env(env: &Env, tls: &GrpcTls) -> Self {
        let base = env.millis_in("OUTBOX_BACKOFF_BASE_MS", 1000, 10, 3_600_000);
        let max = env.millis_in("OUTBOX_BACKOFF_MAX_MS", 300_000, 10, 86_400_000);
        if max < base {
            env.problem("OUTBOX_BACKOFF_MAX_MS", "must not be below OUTBOX_BACKOFF_BASE_MS");
        }
        Self {
            sink_url: crate::grpc_tls::service_url(env, SINK_URL_VAR, tls, 50053),
            tls: tls.clone(),
            max_attempts: env.int_in("OUTBOX_MAX_ATTEMPTS", 20, 1, 1000),
            poll_interval: env.millis_in("OUTBOX_POLL_INTERVAL_MS", 250, 10, 60_000),
            batch_size: env.int_in("OUTBOX_BATCH_SIZE", 100, 1, MAX_BATCH),
            backoff: Backoff {
                base,
                max: max.max(base),
            },
            delivery_timeout: env.millis_in("OUTBOX_DELIVERY_TIMEOUT_MS", 10_000, 100, 120_000),
        }
    }
}

/// The relay's metrics, registered when the service starts (so every series exists from then).
#[derive(Clone)]
pub struct RelayMetrics {
    pending: IntGauge,
    leader: IntGauge,
    delivered: IntCounter,
    dead: IntCounter,
    failures: IntCounter,
}

impl RelayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let reg = |name: &str, help: &str| register(registry, IntCounter::new(name, help)?);
        Ok(Self {
            pending: register(
                registry,
                IntGauge::new("outbox_pending", "Events in the outbox not yet delivered nor dead")?,
            )?,
            leader: register(
                registry,
                IntGauge::new("outbox_relay_leader", "1 while this replica runs the outbox relay")?,
            )?,
            delivered: reg("outbox_delivered_total", "Events the sink accepted (new or duplicate)")?,
            dead: reg(
                "outbox_dead_total",
                "Events given up after OUTBOX_MAX_ATTEMPTS failed attempts",
            )?,
            failures: reg(
                "outbox_delivery_failures_total",
                "Failed delivery attempts, one per event per attempt",
            )?,
        })
    }
}

/// Delivers `{schema}.outbox` to the sink: one runner per service at a time, chosen by a
/// PostgreSQL advisory lock held by a connection of its own (the other replicas stand by and take
/// over when that connection ends). Every query of the runner goes over that connection, so a
/// runner whose lock is gone can read or mark nothing.
pub struct Relay {
    schema: &'static str,
    producer: &'static str,
    config: RelayConfig,
    database: DatabaseConfig,
    metrics: RelayMetrics,
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = SqlUuid)]
    event_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Timestamptz)]
    occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    traceparent: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(QueryableByName)]
struct Failed {
    #[diesel(sql_type = SqlUuid)]
    event_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Bool)]
    dead: bool,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

/// Why a pass of the relay stopped early.
enum Stop {
    Shutdown,
    /// The lock connection failed (why): stand by and take the lock again.
    Database(String),
}

impl From<diesel::result::Error> for Stop {
    fn from(e: diesel::result::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// How long a replica waits before asking for the lock again, or after losing its connection.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How often the pending gauge is refreshed (a count over the pending index).
const GAUGE_EVERY: Duration = Duration::from_secs(1);

impl Relay {
    pub fn new(
        schema: &'static str,
        producer: &'static str,
        config: RelayConfig,
        database: DatabaseConfig,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            schema,
            producer,
            config,
            database,
            metrics,
        }
    }

    /// Runs until `shutdown`: stands by for the lock, then delivers while it holds it.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let channel = crate::grpc_tls::client_channel(
            &self.config.tls,
            &self.config.sink_url,
            Duration::from_secs(2),
            self.config.delivery_timeout,
        )?;
        let mut sink = EventSinkClient::new(channel);
        let mut last_problem: Option<String> = None;
        while !shutdown.is_triggered() {
            let stop = match self.connect(&shutdown).await {
                Ok(mut conn) => {
                    last_problem = None;
                    match self.hold_and_deliver(&mut conn, &mut sink, &shutdown).await {
                        Ok(never) => match never {},
                        Err(stop) => stop,
                    }
                }
                Err(stop) => stop,
            };
            self.metrics.leader.set(0);
            match stop {
                Stop::Shutdown => break,
                Stop::Database(problem) => {
                    // Logged once per kind of problem, not every second of an outage.
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::warn!(error = %problem, "outbox relay: database connection lost; retrying");
                        last_problem = Some(problem);
                    }
                }
            }
            if sleep_or_stop(STANDBY_RETRY, &shutdown).await {
                break;
            }
        }
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// The relay's own connection (not the pool's: it holds the lock for as long as it lives).
    async fn connect(&self, shutdown: &Shutdown) -> Result<AsyncPgConnection, Stop> {
        let connect = db::establish(self.database.url.expose_secret(), &self.database.tls);
        tokio::select! {
            conn = tokio::time::timeout(self.database.timeout, connect) => match conn {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Stop::Database(e.to_string())),
                Err(_) => Err(Stop::Database("no connection within DATABASE_TIMEOUT_MS".to_owned())),
            },
            () = shutdown.clone().wait() => Err(Stop::Shutdown),
        }
    }

    /// Waits for the lock on `conn` (counting the backlog meanwhile), then delivers until the
    /// connection fails or shutdown.
    async fn hold_and_deliver(
        &self,
        conn: &mut AsyncPgConnection,
        sink: &mut EventSinkClient<Channel>,
        shutdown: &Shutdown,
    ) -> Result<std::convert::Infallible, Stop> {
        // The two-key form: its key space is apart from the migration lock's single key.
        let take = format!(
            "SELECT pg_try_advisory_lock(7262, hashtext('{}.outbox')) AS value",
            self.schema
        );
        loop {
            let taken: Flag = diesel::sql_query(&take).get_result(conn).await?;
            if taken.value {
                break;
            }
            self.refresh_pending(conn).await?;
            if sleep_or_stop(STANDBY_RETRY, shutdown).await {
                return Err(Stop::Shutdown);
            }
        }
        self.metrics.leader.set(1);
        tracing::info!(schema = self.schema, "outbox relay: this replica delivers the outbox");
        let due_again = |last: Option<Instant>, every: Duration| last.is_none_or(|t| t.elapsed() >= every);
        let mut counted = None;
        loop {
            let batch = self.due(conn).await?;
            let full = batch.len() == self.config.batch_size;
            if !batch.is_empty() {
                self.deliver(conn, sink, batch, shutdown).await?;
            }
            if due_again(counted, GAUGE_EVERY) {
                self.refresh_pending(conn).await?;
                counted = Some(Instant::now());
            }
            // A full batch means more are waiting: go on at once.
            if !full && sleep_or_stop(self.config.poll_interval, shutdown).await {
                return Err(Stop::Shutdown);
            }
            if shutdown.is_triggered() {
                return Err(Stop::Shutdown);
            }
        }
    }

    async fn refresh_pending(&self, conn: &mut AsyncPgConnection) -> Result<(), Stop> {
        let count: Count = statement(&format!(
            "SELECT count(*) AS value FROM {}.outbox WHERE dead_at IS NULL",
            self.schema
        ))
        .get_result(conn)
        .await?;
        self.metrics.pending.set(count.value);
        Ok(())
    }

    /// Pending events whose time has come, in the order they are due (written order at first).
    async fn due(&self, conn: &mut AsyncPgConnection) -> Result<Vec<Pending>, Stop> {
        Ok(statement(&format!(
            "SELECT id, event_id, event_type, occurred_at, traceparent, payload, attempts \
             FROM {}.outbox WHERE dead_at IS NULL AND next_attempt_at <= now() \
             ORDER BY next_attempt_at, id LIMIT $1",
            self.schema
        ))
        .bind::<BigInt, _>(self.config.batch_size as i64)
        .load(conn)
        .await?)
    }

    /// One `Deliver` of the batch; when the sink refuses it as invalid, each event alone, so one
    /// bad event does not hold back the others.
    async fn deliver(
        &self,
        conn: &mut AsyncPgConnection,
        sink: &mut EventSinkClient<Channel>,
        batch: Vec<Pending>,
        shutdown: &Shutdown,
    ) -> Result<(), Stop> {
        match self.send(sink, &batch, shutdown).await? {
            Ok(()) => self.delete_delivered(conn, &batch).await,
            Err(status) if status.code() == tonic::Code::InvalidArgument && batch.len() > 1 => {
                for event in batch {
                    let one = [event];
                    match self.send(sink, &one, shutdown).await? {
                        Ok(()) => self.delete_delivered(conn, &one).await?,
                        Err(status) => self.mark_failed(conn, &one, &status).await?,
                    }
                }
                Ok(())
            }
            Err(status) => self.mark_failed(conn, &batch, &status).await,
        }
    }

    /// The call, abandoned on shutdown (the events stay pending; the sink de-duplicates a repeat).
    async fn send(
        &self,
        sink: &mut EventSinkClient<Channel>,
        batch: &[Pending],
        shutdown: &Shutdown,
    ) -> Result<Result<(), tonic::Status>, Stop> {
        let events = batch
            .iter()
            .map(|p| Envelope {
                event_id: p.event_id.to_string(),
                producer: self.producer.to_owned(),
                event_type: p.event_type.clone(),
                occurred_at: crate::proto_time::some_timestamp(p.occurred_at),
                traceparent: p.traceparent.clone(),
                payload: serde_json::to_vec(&p.payload).unwrap_or_default(),
            })
            .collect();
        let mut request = tonic::Request::new(DeliverRequest { events });
        request.set_timeout(self.config.delivery_timeout);
        tokio::select! {
            answer = sink.deliver(request) => Ok(answer.map(|response| {
                let r = response.into_inner();
                if (r.accepted + r.duplicates) as usize != batch.len() {
                    tracing::warn!(
                        sent = batch.len(), accepted = r.accepted, duplicates = r.duplicates,
                        "outbox relay: the sink's counts do not add up to the batch"
                    );
                }
            })),
            () = shutdown.clone().wait() => Err(Stop::Shutdown),
        }
    }

    async fn delete_delivered(&self, conn: &mut AsyncPgConnection, batch: &[Pending]) -> Result<(), Stop> {
        let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
        statement(&format!("DELETE FROM {}.outbox WHERE id = ANY($1)", self.schema))
            .bind::<Array<BigInt>, _>(&ids)
            .execute(conn)
            .await?;
        self.metrics.delivered.inc_by(ids.len() as u64);
        Ok(())
    }

    /// One more failed attempt for each event: its next try after the backoff, or dead once it
    /// has failed `max_attempts` times.
    async fn mark_failed(
        &self,
        conn: &mut AsyncPgConnection,
        batch: &[Pending],
        status: &tonic::Status,
    ) -> Result<(), Stop> {
        let error = short_error(status);
        let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
        let delays: Vec<i64> = batch
            .iter()
            .map(|p| {
                let attempts = u32::try_from(p.attempts).unwrap_or(0).saturating_add(1);
                let delay = self.config.backoff.delay(attempts, rand::random::<f64>());
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
            })
            .collect();
        let failed: Vec<Failed> = diesel::sql_query(format!(
            "UPDATE {schema}.outbox o SET attempts = o.attempts + 1, last_error = $3, \
               next_attempt_at = now() + f.delay_ms * interval '1 millisecond', \
               dead_at = CASE WHEN o.attempts + 1 >= $4 THEN now() END \
             FROM unnest($1::bigint[], $2::bigint[]) AS f(id, delay_ms) \
             WHERE o.id = f.id AND o.dead_at IS NULL \
             RETURNING o.event_id, o.event_type, o.attempts, o.dead_at IS NOT NULL AS dead",
            schema = self.schema
        ))
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<BigInt>, _>(&delays)
        .bind::<Text, _>(&error)
        .bind::<Integer, _>(i32::try_from(self.config.max_attempts).unwrap_or(i32::MAX))
        .load(conn)
        .await?;
        self.metrics.failures.inc_by(failed.len() as u64);
        let mut retried = 0;
        for f in &failed {
            if f.dead {
                self.metrics.dead.inc();
                tracing::error!(
                    event_id = %f.event_id,
                    event_type = %f.event_type,
                    attempts = f.attempts,
                    last_error = %error,
                    "outbox relay: event is dead after its last attempt; `{RETRY_DEAD_COMMAND}` queues it again"
                );
            } else {
                retried += 1;
            }
        }
        if retried > 0 {
            tracing::warn!(events = retried, error = %error, "outbox relay: delivery failed; will retry");
        }
        Ok(())
    }
}

/// A failed call as `last_error`: the gRPC code and the start of its message (the sink's answers
/// name a field, never a value; transport errors name the address).
fn short_error(status: &tonic::Status) -> String {
    let text = format!("{:?}: {}", status.code(), status.message());
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_stop(d: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => shutdown.is_triggered(),
        () = shutdown.clone().wait() => true,
    }
}

/// The operator command that puts dead events back in line, all or those named by `--event-id`.
pub fn retry_dead_command() -> clap::Command {
    clap::Command::new(RETRY_DEAD_COMMAND)
        .about("Queue dead outbox events for delivery again (all, or those given by --event-id), attempts from zero")
        .arg(
            clap::Arg::new("event-id")
                .long("event-id")
                .value_name("UUID")
                .action(clap::ArgAction::Append)
                .value_parser(clap::value_parser!(uuid::Uuid)),
        )
}

/// Runs [`retry_dead_command`]: dead events become pending with their attempts from zero.
/// Returns how many were queued again.
pub async fn retry_dead(pool: &Pool, schema: &'static str, args: &clap::ArgMatches) -> anyhow::Result<usize> {
    let only: Vec<uuid::Uuid> = args
        .get_many::<uuid::Uuid>("event-id")
        .map(|ids| ids.copied().collect())
        .unwrap_or_default();
    let mut conn = pool.get().await?;
    let requeued = diesel::sql_query(format!(
        "UPDATE {schema}.outbox SET dead_at = NULL, attempts = 0, next_attempt_at = now(), last_error = NULL \
         WHERE dead_at IS NOT NULL AND (cardinality($1) = 0 OR event_id = ANY($1))"
    ))
    .bind::<Array<SqlUuid>, _>(&only)
    .execute(&mut conn)
    .await?;
    let _ = writeln!(std::io::stdout(), "queued {requeued} dead event(s) for delivery again");
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_from_the_base_with_half_of_each_step_jittered_and_stops_at_the_cap() {
        let b = Backoff {
            base: ms(1000),
            max: ms(300_000),
        };
        // Without jitter: half the step; with the most jitter: (almost) the whole step.
        let steps = [
            1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000,
        ];
        for (i, step) in steps.iter().enumerate() {
            let attempts = u32::try_from(i + 1).expect("small");
            assert_eq!(b.delay(attempts, 0.0), ms(step / 2), "attempt {attempts}");
            assert_eq!(b.delay(attempts, 1.0), ms(*step), "attempt {attempts}");
            let mid = b.delay(attempts, 0.5);
            assert!(mid > ms(step / 2) && mid < ms(*step), "attempt {attempts}: {mid:?}");
        }
        // Never past the cap, never an overflow, however many attempts.
        for attempts in [0, 20, 31, 32, 33, 64, 1000, u32::MAX] {
            assert!(b.delay(attempts, 0.999) <= ms(300_000), "attempt {attempts}");
            assert!(b.delay(attempts, 0.0) >= ms(500), "attempt {attempts}");
        }
        // Jitter outside [0, 1) is clamped.
        assert_eq!(b.delay(1, -3.0), ms(500));
        assert_eq!(b.delay(1, 7.0), ms(1000));
    }

    #[test]
    fn the_relay_settings_have_defaults_and_bounds() {
        let env = Env::from_map([("GRPC_INSECURE", "true")]);
        let c = RelayConfig::from_env(&env, &GrpcTls::Insecure);
        assert!(env.finish().is_ok());
        assert_eq!(c.sink_url, "http://127.0.0.1:50053");
        assert_eq!((c.max_attempts, c.batch_size), (20, 100));
        assert_eq!(c.poll_interval, ms(250));
        assert_eq!(
            c.backoff,
            Backoff {
                base: ms(1000),
                max: ms(300_000)
            }
        );

        let env = Env::from_map([
            ("OUTBOX_BATCH_SIZE", "501"),
            ("OUTBOX_MAX_ATTEMPTS", "0"),
            ("OUTBOX_BACKOFF_BASE_MS", "5000"),
            ("OUTBOX_BACKOFF_MAX_MS", "1000"),
            (SINK_URL_VAR, "https://analytics:50053"),
        ]);
        let _ = RelayConfig::from_env(&env, &GrpcTls::Insecure);
        let err = env.finish().err().map(|e| e.to_string()).unwrap_or_default();
        for name in [
            "OUTBOX_BATCH_SIZE",
            "OUTBOX_MAX_ATTEMPTS",
            "OUTBOX_BACKOFF_MAX_MS",
            SINK_URL_VAR,
        ] {
            assert!(err.contains(name), "{name} not named in {err}");
        }
    }

    #[test]
    fn last_error_is_short() {
        let long = tonic::Status::unavailable("x".repeat(5000));
        let text = short_error(&long);
        assert_eq!(text.chars().count(), MAX_ERROR_CHARS);
        assert!(text.starts_with("Unavailable: x"), "{text}");
    }
}
