//! The outbox relay: reports-service's domain events reach analytics-service exactly once, also
//! across an outage of analytics-service (issue 18); an event analytics refuses goes dead without
//! holding back the others; one replica relays at a time and another takes over.

use std::time::Duration;

use xtask::testkit::{Service, TestPlatform};

use crate::{admin_get, eventually, metric};

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A client on `service`'s own database role.
pub(crate) async fn database(tp: &TestPlatform, service: &str) -> tokio_postgres::Client {
    let db = tp.databases.iter().find(|d| d.service == service).expect("service db");
    connect(&db.url).await
}

/// reports-service and analytics-service, with `reports_env` for reports-service.
async fn platform(tag: &str, reports_env: &[(&str, &str)]) -> TestPlatform {
    TestPlatform::builder(tag)
        .services(&[Service::Reports, Service::Analytics])
        .service_env(Service::Reports, reports_env)
        .start()
        .await
        .expect("platform")
}

/// Files `n` reports through the gateway as `token`'s user (as a phone does) and answers the ids
/// of the `report.submitted` events their transactions wrote.
async fn file_reports(tp: &TestPlatform, token: &str, n: usize) -> Vec<String> {
    let http = crate::client(tp);
    let mut reports = Vec::new();
    for i in 0..n {
        let body = serde_json::json!({
            "category": "theft", "title": format!("Bike {i} taken"), "description": "From the rack.",
            "occurred_at": (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339(),
        });
        let res = http
            .post(format!("{}/v1/reports", tp.base_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("file a report");
        assert_eq!(res.status().as_u16(), 201, "file a report");
        let v: serde_json::Value = res.json().await.expect("json");
        reports.push(v["id"].as_str().expect("id").to_owned());
    }
    let rows = database(tp, "reports")
        .await
        .query(
            "SELECT event_id::text FROM reports.outbox WHERE event_type = 'report.submitted' \
             AND payload->>'report_id' = ANY($1) ORDER BY id",
            &[&reports],
        )
        .await
        .expect("the reports' events");
    assert_eq!(
        rows.len(),
        n,
        "one report.submitted event per report, in its transaction"
    );
    rows.iter().map(|r| r.get(0)).collect()
}

/// Writes `n` report events and answers their event ids. Today they are written into
/// `reports.outbox` as `service_kit::outbox::enqueue` writes them, one transaction each; once
/// reports are created through the API, this becomes `n` REST creates, with the event ids read
/// back from `reports.outbox`.
async fn create_events(tp: &TestPlatform, n: usize) -> Vec<String> {
    let reports = database(tp, "reports").await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let payload = serde_json::json!({
            "report_id": uuid::Uuid::new_v4().to_string(),
            "category": "pothole",
            "severity": "low",
            "status": "submitted",
        });
        enqueue(&reports, &[(&id, "report.submitted", &payload)]).await;
        ids.push(id);
    }
    ids
}

/// Waits until the replica on `admin` has counted `n` deliveries: analytics stores an event before
/// it answers, and the relay counts it only after that answer, so an event can be seen arriving
/// a moment before the counter moves.
async fn delivered_at_least(admin: u16, n: u64, what: &str) {
    eventually(what, Duration::from_secs(10), || async move {
        (metric(admin, "outbox_delivered_total") >= n).then_some(())
    })
    .await;
}

/// Inserts `events` (id, type, payload) into `reports.outbox` in one statement, so the relay
/// finds them in one batch.
async fn enqueue(reports: &tokio_postgres::Client, events: &[(&str, &str, &serde_json::Value)]) {
    let ids: Vec<String> = events.iter().map(|e| e.0.to_owned()).collect();
    let types: Vec<String> = events.iter().map(|e| e.1.to_owned()).collect();
    let payloads: Vec<String> = events.iter().map(|e| e.2.to_string()).collect();
    reports
        .execute(
            "INSERT INTO reports.outbox (event_id, event_type, occurred_at, traceparent, payload) \
             SELECT id::uuid, t, now(), '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', p::jsonb \
             FROM unnest($1::text[], $2::text[], $3::text[]) AS e(id, t, p)",
            &[&ids, &types, &payloads],
        )
        .await
        .expect("enqueue");
}

/// How many of `ids` analytics-service has stored.
async fn arrived(analytics: &tokio_postgres::Client, ids: &[String]) -> i64 {
    analytics
        .query_one(
            "SELECT count(*) FROM analytics.ingested_events WHERE event_id::text = ANY($1)",
            &[&ids],
        )
        .await
        .expect("count")
        .get(0)
}

async fn wait_arrived(analytics: &tokio_postgres::Client, ids: &[String], what: &str) {
    let want = ids.len() as i64;
    eventually(what, Duration::from_secs(30), || async move {
        (arrived(analytics, ids).await == want).then_some(())
    })
    .await;
}

/// (dead, pending) rows of `reports.outbox`: a delivered event has no row left.
async fn outbox_state(reports: &tokio_postgres::Client) -> (i64, i64) {
    let row = reports
        .query_one(
            "SELECT count(*) FILTER (WHERE dead_at IS NOT NULL), count(*) FILTER (WHERE dead_at IS NULL) \
             FROM reports.outbox",
            &[],
        )
        .await
        .expect("outbox");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_arrives_exactly_once_across_an_analytics_outage() {
    // Retries come back within a second once analytics-service is up again.
    let mut tp = TestPlatform::builder("outbox")
        .services(&[Service::Auth, Service::Reports, Service::Analytics])
        .service_env(
            Service::Reports,
            &[("OUTBOX_BACKOFF_BASE_MS", "100"), ("OUTBOX_BACKOFF_MAX_MS", "1000")],
        )
        .start()
        .await
        .expect("platform");
    let token = crate::rate_limit::registered(&crate::client(&tp), &tp.base_url(), "outbox@example.org").await;
    let admin = tp.platform.ports.reports_admin;
    let analytics = database(&tp, "analytics").await;
    let reports = database(&tp, "reports").await;
    let (_, text) = xtask::platform::http_get(admin, "/metrics").expect("metrics");
    for series in [
        "outbox_pending 0",
        "outbox_delivered_total 0",
        "outbox_dead_total 0",
        "outbox_delivery_failures_total 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} missing at start:\n{text}");
    }

    let before = create_events(&tp, 5).await;
    wait_arrived(&analytics, &before, "the first events to arrive").await;

    // Reports filed while analytics-service is down: their events wait, then arrive once.
    tp.platform.analytics.kill();
    let during = file_reports(&tp, &token, 10).await;
    eventually(
        "the relay to fail against the stopped analytics-service",
        Duration::from_secs(20),
        || async move { (metric(admin, "outbox_delivery_failures_total") >= 10).then_some(()) },
    )
    .await;
    assert_eq!(arrived(&analytics, &during).await, 0);
    assert_eq!(outbox_state(&reports).await, (0, 10), "waiting, none dead");

    tp.platform.analytics.restart().expect("restart analytics-service");
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    wait_arrived(&analytics, &all, "every event after the outage").await;

    // Exactly once: the ids are the table's primary key, and nothing else arrived.
    let total: i64 = analytics
        .query_one("SELECT count(*) FROM analytics.ingested_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(total, 15);
    assert_eq!(outbox_state(&reports).await, (0, 0), "every event delivered, none dead");
    eventually("outbox_pending back to 0", Duration::from_secs(10), || async move {
        (metric(admin, "outbox_pending") == 0).then_some(())
    })
    .await;
    assert_eq!(metric(admin, "outbox_dead_total"), 0);
    delivered_at_least(admin, 15, "the outage's events counted").await;
    assert_eq!(metric(admin, "outbox_relay_leader"), 1);

    // The envelope arrived whole: producer, type, payload, traceparent.
    let row = analytics
        .query_one(
            "SELECT source, name, properties->>'category', traceparent, user_id IS NULL \
             FROM analytics.ingested_events WHERE event_id::text = $1",
            &[&before[0]],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "reports");
    assert_eq!(row.get::<_, String>(1), "report.submitted");
    assert_eq!(row.get::<_, String>(2), "pothole");
    assert_eq!(
        row.get::<_, String>(3),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(row.get::<_, bool>(4), "no user id travels with a report event");
    let filed = analytics
        .query_one(
            "SELECT name, properties->>'category', user_id IS NULL, properties ? 'title' \
             FROM analytics.ingested_events WHERE event_id::text = $1",
            &[&during[0]],
        )
        .await
        .expect("a filed report's event");
    assert_eq!(filed.get::<_, String>(0), "report.submitted");
    assert_eq!(filed.get::<_, String>(1), "theft");
    assert!(filed.get::<_, bool>(2), "no reporter travels with a report event");
    assert!(!filed.get::<_, bool>(3), "no text travels with a report event");

    // SIGTERM stops the relay with the rest of the process.
    assert!(
        tp.platform.reports.stop(Duration::from_secs(10)),
        "reports-service did not exit cleanly on SIGTERM"
    );
}

/// Runs a reports-service operator command against the test platform's database.
fn reports_operator(tp: &TestPlatform, args: &[&str]) -> (bool, String) {
    let db = tp
        .databases
        .iter()
        .find(|d| d.service == "reports")
        .expect("reports db");
    let mut command = std::process::Command::new(xtask::platform::bin_dir().join("reports-service"));
    command
        .args(args)
        .env_clear()
        .env("DATABASE_URL", db.service_url())
        .env("APP_ENV", "test")
        .env("LOG_FORMAT", "json");
    if let Some(ca) = &db.tls_ca {
        command.env("DATABASE_TLS_CA_FILE", ca);
    }
    let out = command.output().expect("reports-service runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_analytics_refuses_goes_dead_and_the_others_still_flow() {
    let tp = platform(
        "poison",
        &[
            ("OUTBOX_MAX_ATTEMPTS", "3"),
            ("OUTBOX_BACKOFF_BASE_MS", "50"),
            ("OUTBOX_BACKOFF_MAX_MS", "200"),
        ],
    )
    .await;
    let admin = tp.platform.ports.reports_admin;
    let analytics = database(&tp, "analytics").await;
    let reports = database(&tp, "reports").await;

    // One batch: a good event, one whose payload is not a JSON object (the sink refuses it as
    // INVALID_ARGUMENT), another good one.
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let good = serde_json::json!({"status": "submitted"});
    let poison = serde_json::json!(["not", "an", "object"]);
    enqueue(
        &reports,
        &[
            (&ids[0], "report.submitted", &good),
            (&ids[1], "report.submitted", &poison),
            (&ids[2], "report.deleted", &good),
        ],
    )
    .await;
    let good_ids = [ids[0].clone(), ids[2].clone()];
    wait_arrived(&analytics, &good_ids, "the good events around the poison").await;
    eventually("the refused event to go dead", Duration::from_secs(20), || async move {
        (metric(admin, "outbox_dead_total") == 1).then_some(())
    })
    .await;
    let row = reports
        .query_one(
            "SELECT attempts, last_error, dead_at IS NOT NULL FROM reports.outbox WHERE event_id::text = $1",
            &[&ids[1]],
        )
        .await
        .expect("poison row");
    assert_eq!(row.get::<_, i32>(0), 3, "dead after OUTBOX_MAX_ATTEMPTS");
    let last_error: String = row.get(1);
    assert!(
        last_error.starts_with("InvalidArgument") && last_error.contains("payload"),
        "{last_error}"
    );
    assert!(row.get::<_, bool>(2));
    assert_eq!(arrived(&analytics, &ids[1..2]).await, 0);
    assert_eq!(
        outbox_state(&reports).await,
        (1, 0),
        "the dead event stays, the delivered ones are gone"
    );
    eventually("outbox_pending back to 0", Duration::from_secs(10), || async move {
        (metric(admin, "outbox_pending") == 0).then_some(())
    })
    .await;

    // Later events still flow past the dead one.
    let later = create_events(&tp, 3).await;
    wait_arrived(&analytics, &later, "events after the dead one").await;

    // The operator queues it again: it is tried afresh (attempts from zero) and, still refused,
    // dies again.
    let (ok, out) = reports_operator(&tp, &["outbox-retry-dead", "--event-id", &ids[1]]);
    assert!(ok, "{out}");
    assert!(out.contains("queued 1 dead event(s)"), "{out}");
    eventually(
        "the retried event to die again",
        Duration::from_secs(20),
        || async move { (metric(admin, "outbox_dead_total") == 2).then_some(()) },
    )
    .await;
    let attempts: i32 = reports
        .query_one(
            "SELECT attempts FROM reports.outbox WHERE event_id::text = $1",
            &[&ids[1]],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(attempts, 3, "attempts counted from zero again");
    let (ok, out) = reports_operator(
        &tp,
        &["outbox-retry-dead", "--event-id", &uuid::Uuid::new_v4().to_string()],
    );
    assert!(ok && out.contains("queued 0 dead event(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_relays_and_another_takes_over_when_it_dies() {
    let mut tp = platform("relaylock", &[]).await;
    let analytics = database(&tp, "analytics").await;
    let first_admin = tp.platform.ports.reports_admin;
    let (grpc, second_admin) = (xtask::free_port().expect("port"), xtask::free_port().expect("port"));
    let _second = tp
        .platform
        .extra_replica(Service::Reports, grpc, second_admin)
        .expect("second replica");
    eventually(
        "the second replica to be ready",
        Duration::from_secs(30),
        || async move { admin_get(second_admin, "/ready").filter(|(s, _)| *s == 200) },
    )
    .await;

    // The first replica holds the lock; the second stands by (and still reports the backlog).
    eventually("the first replica to relay", Duration::from_secs(10), || async move {
        (metric(first_admin, "outbox_relay_leader") == 1).then_some(())
    })
    .await;
    let events = create_events(&tp, 5).await;
    wait_arrived(&analytics, &events, "events through the first replica").await;
    assert_eq!(metric(second_admin, "outbox_relay_leader"), 0);
    assert_eq!(
        metric(second_admin, "outbox_delivered_total"),
        0,
        "only the holder delivers"
    );
    delivered_at_least(first_admin, 5, "the first replica's deliveries counted").await;

    // The holder dies: its session ends, the lock with it, and the standby takes over.
    tp.platform.reports.kill();
    let events = create_events(&tp, 5).await;
    wait_arrived(&analytics, &events, "events through the second replica").await;
    assert_eq!(metric(second_admin, "outbox_relay_leader"), 1);
    delivered_at_least(second_admin, 5, "the second replica's deliveries counted").await;

    // The lock's connection is cut under the relay: it connects again, takes the lock again, and
    // goes on.
    let admin_db = connect(&tp.admin_url).await;
    let cut: i64 = admin_db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = 7262 AND objsubid = 2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(cut, 1, "one session holds the relay lock");
    let events = create_events(&tp, 5).await;
    wait_arrived(&analytics, &events, "events after the lock connection was cut").await;
    assert_eq!(metric(second_admin, "outbox_relay_leader"), 1);
}
