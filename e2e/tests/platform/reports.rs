//! Incident reports through the gateway (issue 18): filing, reading, changing and withdrawing
//! one's own reports; bad input refused with the field named and nothing stored; other users'
//! reports not found; row-level security under a query that filters by nobody; idempotent
//! creates; audit rows and outbox events beside each write; moderation and anonymity; sealed
//! columns that are not the plaintext, do not open in another row and die with their data key;
//! master-key rotation.

use std::time::Duration;

use serde_json::{Value, json};
use xtask::testkit::{Service, TestPlatform};

use crate::{client, error_code, eventually, keys};

const PASSWORD: &str = "correct horse battery staple";

/// The members of a report in every answer that carries one.
const REPORT_KEYS: [&str; 13] = [
    "anonymous",
    "attachments",
    "category",
    "created_at",
    "description",
    "id",
    "location",
    "occurred_at",
    "public_note",
    "severity",
    "status",
    "title",
    "updated_at",
];

struct Api {
    http: reqwest::Client,
    base: String,
}

/// A signed-in user: their id and access token.
struct User {
    id: String,
    token: String,
}

impl Api {
    fn new(tp: &TestPlatform) -> Self {
        Self {
            http: client(tp),
            base: tp.base_url(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn register(&self, email: &str) -> User {
        let body = json!({
            "email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace",
            "device": {"device_id": "phone-1", "platform": "ios"},
        });
        let res = self
            .http
            .post(self.url("/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(res.status().as_u16(), 201, "register {email}");
        let v: Value = res.json().await.expect("json");
        User {
            id: v["user"]["id"].as_str().expect("id").to_owned(),
            token: v["tokens"]["access_token"].as_str().expect("token").to_owned(),
        }
    }

    async fn login(&self, email: &str) -> String {
        let body = json!({"email": email, "password": PASSWORD, "device": {"device_id": "phone-1", "platform": "ios"}});
        let res = self
            .http
            .post(self.url("/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .expect("login");
        assert_eq!(res.status().as_u16(), 200, "login {email}");
        let v: Value = res.json().await.expect("json");
        v["tokens"]["access_token"].as_str().expect("token").to_owned()
    }

    async fn create(&self, user: &User, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/v1/reports"))
            .bearer_auth(&user.token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.expect("create")
    }

    /// Files `body` and answers the report.
    async fn file(&self, user: &User, body: &Value) -> Value {
        let res = self.create(user, body, None).await;
        assert_eq!(res.status().as_u16(), 201, "create");
        res.json().await.expect("json")
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get")
    }

    async fn patch(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("patch")
    }

    async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("delete")
    }

    async fn post(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("post")
    }

    /// The ids of the caller's reports, every page.
    async fn my_ids(&self, token: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/reports?limit=2&cursor={c}"),
                None => "/v1/reports?limit=2".to_owned(),
            };
            let res = self.get(token, &path).await;
            assert_eq!(res.status().as_u16(), 200, "list");
            let page: Value = res.json().await.expect("json");
            for r in page["items"].as_array().expect("items") {
                ids.push(r["id"].as_str().expect("id").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return ids,
            }
        }
    }
}

/// RFC 3339 (UTC, whole seconds) of now moved by `offset` seconds.
fn rfc3339(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let t = now + offset;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn report(title: &str) -> Value {
    json!({
        "category": "theft",
        "title": title,
        "description": format!("{title}: a bicycle was taken from the rack"),
        "severity": "high",
        "occurred_at": rfc3339(-2 * HOUR),
        "location": {"lat": 52.5200, "lng": 13.4050, "address": "Alexanderplatz 1, Berlin"},
    })
}

async fn platform(tag: &str) -> TestPlatform {
    TestPlatform::builder(tag)
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform")
}

/// The superuser's connection to the platform's database (bypasses row-level security).
async fn admin_db(tp: &TestPlatform) -> tokio_postgres::Client {
    connect(&tp.admin_url).await
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("db");
    tokio::spawn(conn);
    db
}

fn reports_db_url(tp: &TestPlatform) -> String {
    tp.databases
        .iter()
        .find(|d| d.service == "reports")
        .expect("reports db")
        .url
        .clone()
}

async fn count(db: &tokio_postgres::Client, sql: &str, id: &str) -> i64 {
    db.query_one(sql, &[&id]).await.expect(sql).get(0)
}

/// The checks below share one platform, each with accounts of its own, run in turn.
#[tokio::test(flavor = "multi_thread")]
async fn shared_report_checks() {
    let tp = platform("reports").await;
    let api = Api::new(&tp);
    file_read_change_and_withdraw(&tp, &api).await;
    bad_input_is_refused_naming_the_field_and_nothing_is_stored(&api).await;
    other_users_reports_are_not_found_and_row_level_security_holds(&tp, &api).await;
    creates_are_idempotent(&tp, &api).await;
    moderation_moves_forward_and_keeps_anonymous_reporters_hidden(&tp, &api).await;
    alerts_follow_moderation_and_withdrawal_and_show_no_reporter(&tp, &api).await;
    nearby_alerts_are_the_newest_across_every_cell(&tp, &api).await;
    sealed_columns_are_not_plaintext_and_do_not_open_elsewhere(&tp, &api).await;
}

async fn file_read_change_and_withdraw(tp: &TestPlatform, api: &Api) {
    let ada = api.register("reporter.ada@example.org").await;
    let admin_port = tp.platform.ports.reports_admin;
    let (_, metrics) = xtask::platform::http_get(admin_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("reports_created_total{category=\"cyber\"} 0"),
        "every category is counted from 0"
    );
    let before = crate::metric(admin_port, "reports_created_total{category=\"theft\"}");

    let created = api.file(&ada, &report("Stolen bicycle")).await;
    assert_eq!(keys(&created), REPORT_KEYS);
    assert_eq!(created["status"], "submitted");
    assert_eq!(created["severity"], "high");
    assert_eq!(created["anonymous"], false);
    assert_eq!(created["attachments"], json!([]));
    assert_eq!(created["public_note"], Value::Null);
    assert_eq!(created["location"]["address"], "Alexanderplatz 1, Berlin");
    assert_eq!(
        crate::metric(admin_port, "reports_created_total{category=\"theft\"}"),
        before + 1
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/reports/{id}");

    let res = api.get(&ada.token, &path).await;
    assert_eq!(res.status().as_u16(), 200);
    let read: Value = res.json().await.expect("json");
    assert_eq!(read, created, "a read answers what the create answered");

    // Two more, then pages of two, newest first.
    let second = api.file(&ada, &report("Broken window")).await;
    let mut third_body = report("Graffiti");
    third_body["category"] = json!("vandalism");
    third_body.as_object_mut().expect("object").remove("location");
    third_body.as_object_mut().expect("object").remove("severity");
    let third = api.file(&ada, &third_body).await;
    assert_eq!(third["severity"], "medium", "the default severity");
    assert_eq!(third["location"], Value::Null);
    // Ada has a data key by now, so these two took the one-statement path (report, audit row and
    // event in one statement, no transaction block): each reads back as it was answered, with its
    // audit row and its event.
    let written = admin_db(tp).await;
    for filed in [&second, &third] {
        let filed_id = filed["id"].as_str().expect("id");
        let res = api.get(&ada.token, &format!("/v1/reports/{filed_id}")).await;
        let read: Value = res.json().await.expect("json");
        assert_eq!(&read, filed, "a read answers what the create answered");
        let audit = written
            .query(
                "SELECT actor_id::text, changed_fields::text FROM reports.audit_logs \
                 WHERE resource_id = $1 AND action = 'report.create'",
                &[&filed_id],
            )
            .await
            .expect("audit");
        assert_eq!(audit.len(), 1, "one audit row");
        assert_eq!(audit[0].get::<_, Option<String>>(0).as_deref(), Some(ada.id.as_str()));
        assert_eq!(
            audit[0].get::<_, String>(1),
            "{category,title,description,severity,occurred_at,location,anonymous}"
        );
        let events = written
            .query(
                "SELECT payload->>'status', payload->>'category' FROM reports.outbox \
                 WHERE event_type = 'report.submitted' AND payload->>'report_id' = $1",
                &[&filed_id],
            )
            .await
            .expect("outbox");
        assert_eq!(events.len(), 1, "one event");
        assert_eq!(events[0].get::<_, String>(0), "submitted");
        assert_eq!(Some(events[0].get::<_, String>(1).as_str()), filed["category"].as_str());
    }
    assert_eq!(
        api.my_ids(&ada.token).await,
        [third["id"].clone(), second["id"].clone(), created["id"].clone()]
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect::<Vec<_>>()
    );
    let res = api.get(&ada.token, "/v1/reports?status=under_review").await;
    let none: Value = res.json().await.expect("json");
    assert_eq!(none["items"], json!([]));
    let code = error_code(api.get(&ada.token, "/v1/reports?status=open").await, 400).await;
    assert_eq!(code, "VALIDATION_FAILED");
    let code = error_code(api.get(&ada.token, "/v1/reports?cursor=forged").await, 400).await;
    assert_eq!(code, "VALIDATION_FAILED");

    // A change while submitted; `location: null` removes the location.
    let res = api
        .patch(
            &ada.token,
            &path,
            &json!({"title": "Stolen blue bicycle", "location": null}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let changed: Value = res.json().await.expect("json");
    assert_eq!(changed["title"], "Stolen blue bicycle");
    assert_eq!(changed["location"], Value::Null);
    assert_eq!(changed["description"], created["description"]);

    // Audit rows and events, in the database (superuser: past row-level security).
    let db = admin_db(tp).await;
    let audit: Vec<(String, String, Option<String>)> = db
        .query(
            "SELECT action, changed_fields::text, actor_id::text FROM reports.audit_logs \
             WHERE resource_id = $1 ORDER BY created_at",
            &[&id],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].0, "report.create");
    assert_eq!(
        (audit[1].0.as_str(), audit[1].1.as_str()),
        ("report.update", "{title,location}")
    );
    assert_eq!(audit[1].2.as_deref(), Some(ada.id.as_str()));

    // Withdrawn: gone from reads and lists, with its audit row and event.
    let res = api.delete(&ada.token, &path).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(error_code(api.get(&ada.token, &path).await, 404).await, "NOT_FOUND");
    assert_eq!(api.my_ids(&ada.token).await.len(), 2);
    let events: Vec<(String, String)> = db
        .query(
            "SELECT event_type, payload::text FROM reports.outbox WHERE payload->>'report_id' = $1 ORDER BY id",
            &[&id],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["report.submitted", "report.deleted"]);
    for (_, payload) in &events {
        assert!(
            !payload.contains(&ada.id) && !payload.contains("bicycle") && !payload.contains("Alexanderplatz"),
            "an event carries the reporter or the text: {payload}"
        );
        let p: Value = serde_json::from_str(payload).expect("payload");
        assert!(
            p["occurred_hour"].as_str().is_some_and(|h| h.ends_with(":00:00+00:00")),
            "{p}"
        );
    }
    let deleted: i64 = db
        .query_one(
            "SELECT count(*) FROM reports.audit_logs WHERE resource_id = $1 AND action = 'report.delete'",
            &[&id],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(deleted, 1);
}

async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored(api: &Api) {
    let bob = api.register("reporter.bob@example.org").await;
    let with = |field: &str, value: Value| {
        let mut body = report("Bad input");
        body[field] = value;
        body
    };
    let mut unknown = report("Bad input");
    unknown["reporter_name"] = json!("Bob");
    let cases: Vec<(Value, &str)> = vec![
        (unknown, "reporter_name"),
        (with("category", json!("burglary")), "category"),
        (with("severity", json!("urgent")), "severity"),
        (with("title", json!("t".repeat(201))), "title"),
        (with("title", json!("   ")), "title"),
        (with("description", json!("d".repeat(10_001))), "description"),
        (with("occurred_at", json!(rfc3339(600))), "occurred_at"),
        (with("occurred_at", json!(rfc3339(-400 * DAY))), "occurred_at"),
        (with("occurred_at", json!("yesterday")), "occurred_at"),
        (with("location", json!({"lat": 91.0, "lng": 0.0})), "location.lat"),
        (with("location", json!({"lat": 0.0, "lng": -180.5})), "location.lng"),
        (
            with("location", json!({"lat": 0.0, "lng": 0.0, "address": "a".repeat(501)})),
            "location.address",
        ),
        (with("location", json!({"lat": 0.0, "lng": 0.0, "floor": 3})), "floor"),
    ];
    for (body, field) in cases {
        let res = api.create(&bob, &body, None).await;
        assert_eq!(res.status().as_u16(), 400, "{field}");
        let e: Value = res.json().await.expect("json");
        assert_eq!(e["error"]["code"], "VALIDATION_FAILED", "{field}: {e}");
        let named = e["error"]["details"][0]["field"].as_str() == Some(field)
            || e["error"]["message"].as_str().is_some_and(|m| m.contains(field));
        assert!(named, "{field} is not named: {e}");
    }
    assert!(api.my_ids(&bob.token).await.is_empty(), "nothing was stored");
}

async fn other_users_reports_are_not_found_and_row_level_security_holds(tp: &TestPlatform, api: &Api) {
    let carol = api.register("reporter.carol@example.org").await;
    let dave = api.register("reporter.dave@example.org").await;
    let carols = api.file(&carol, &report("Carol's report")).await;
    api.file(&dave, &report("Dave's report")).await;
    let path = format!("/v1/reports/{}", carols["id"].as_str().expect("id"));
    assert_eq!(error_code(api.get(&dave.token, &path).await, 404).await, "NOT_FOUND");
    let res = api.patch(&dave.token, &path, &json!({"title": "mine now"})).await;
    assert_eq!(error_code(res, 404).await, "NOT_FOUND");
    assert_eq!(error_code(api.delete(&dave.token, &path).await, 404).await, "NOT_FOUND");
    assert_eq!(
        error_code(api.get(&dave.token, "/v1/reports/not-a-uuid").await, 404).await,
        "NOT_FOUND"
    );
    let res = api.get(&carol.token, &path).await;
    let still: Value = res.json().await.expect("json");
    assert_eq!(still["title"], "Carol's report", "untouched by Dave");

    // Row-level security: through the service's own role, a query that names no user sees only
    // the scoped user's rows, and nothing at all without a scope.
    let db = connect(&reports_db_url(tp)).await;
    let owners = |rows: Vec<tokio_postgres::Row>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };
    let unscoped = db
        .query("SELECT user_id::text FROM reports.reports", &[])
        .await
        .expect("select");
    assert!(unscoped.is_empty(), "no scope, no rows");
    db.batch_execute("BEGIN").await.expect("begin");
    db.execute(
        "SELECT set_config('app.current_user_id', $1, true), set_config('app.role', 'user', true)",
        &[&carol.id],
    )
    .await
    .expect("scope");
    let seen = owners(
        db.query("SELECT user_id::text FROM reports.reports", &[])
            .await
            .expect("select"),
    );
    assert!(!seen.is_empty() && seen.iter().all(|u| *u == carol.id), "{seen:?}");
    let updated = db
        .execute(
            "UPDATE reports.reports SET severity = 'low' WHERE user_id = $1::text::uuid",
            &[&dave.id],
        )
        .await
        .expect("update");
    assert_eq!(updated, 0, "another user's rows cannot be changed either");
    db.batch_execute("ROLLBACK").await.expect("rollback");

    // A create's first statement (as `store::data_keys::enter_scope_with_key` sends it) scopes
    // the rest of its transaction the same way, and reads that user's key alone.
    db.batch_execute("BEGIN").await.expect("begin");
    let keys = db
        .query(
            "WITH scope AS MATERIALIZED ( \
                 SELECT set_config('app.current_user_id', $1::text::uuid::text, true) AS user_id, \
                     set_config('app.role', 'user', true) AS role) \
             SELECT k.key_id FROM scope CROSS JOIN LATERAL ( \
                 SELECT d.key_id, d.wrapped FROM reports.data_keys AS d \
                 WHERE d.user_id = scope.user_id::uuid OFFSET 0) AS k",
            &[&dave.id],
        )
        .await
        .expect("scope with key");
    assert_eq!(keys.len(), 1, "Dave's one key");
    let seen = owners(
        db.query("SELECT user_id::text FROM reports.reports", &[])
            .await
            .expect("select"),
    );
    assert!(!seen.is_empty() && seen.iter().all(|u| *u == dave.id), "{seen:?}");
    let all_keys = db
        .query("SELECT user_id::text FROM reports.data_keys", &[])
        .await
        .expect("keys");
    assert_eq!(owners(all_keys), std::slice::from_ref(&dave.id), "no other user's key");
    db.batch_execute("ROLLBACK").await.expect("rollback");
}

async fn creates_are_idempotent(tp: &TestPlatform, api: &Api) {
    let erin = api.register("reporter.erin@example.org").await;
    let body = report("Idempotent report");
    let first = api.create(&erin, &body, Some("retry-1")).await;
    assert_eq!(first.status().as_u16(), 201);
    let first = first.bytes().await.expect("bytes");
    let again = api.create(&erin, &body, Some("retry-1")).await;
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.bytes().await.expect("bytes"), first, "the same bytes");
    assert_eq!(api.my_ids(&erin.token).await.len(), 1, "one report");

    let res = api.create(&erin, &report("Another report"), Some("retry-1")).await;
    assert_eq!(error_code(res, 422).await, "IDEMPOTENCY_KEY_REUSED");
    for bad in ["has space", &"k".repeat(256)] {
        let res = api.create(&erin, &body, Some(bad)).await;
        assert_eq!(res.status().as_u16(), 400);
        let e: Value = res.json().await.expect("json");
        assert_eq!(e["error"]["details"][0]["field"], "Idempotency-Key", "{e}");
    }
    // While another transaction holds the key's lock (the first request still running), a retry
    // is 409 REQUEST_IN_PROGRESS; once it is gone, the key works. The lock id is computed as
    // service_kit::idempotency::lock_id computes it.
    let holder = admin_db(tp).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT pg_advisory_xact_lock(('x' || substr(encode(sha256('service-kit/idempotency/lock/v1'::bytea \
             || uuid_send($1::text::uuid) || convert_to($2::text, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint)",
            &[&erin.id, &"held-key"],
        )
        .await
        .expect("lock");
    let res = api.create(&erin, &report("Held"), Some("held-key")).await;
    assert_eq!(error_code(res, 409).await, "REQUEST_IN_PROGRESS");
    holder.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(
        api.create(&erin, &report("Held"), Some("held-key"))
            .await
            .status()
            .as_u16(),
        201
    );
    assert_eq!(api.my_ids(&erin.token).await.len(), 2);

    // Another user's same key is their own.
    let frank = api.register("reporter.frank@example.org").await;
    assert_eq!(api.create(&frank, &body, Some("retry-1")).await.status().as_u16(), 201);
    assert_eq!(api.my_ids(&erin.token).await.len(), 2);

    // The stored response is sealed: the title is not in the table in clear.
    let db = admin_db(tp).await;
    let stored: Vec<u8> = db
        .query_one(
            "SELECT response FROM reports.idempotency_keys WHERE user_id = $1::text::uuid AND key = 'retry-1'",
            &[&erin.id],
        )
        .await
        .expect("key")
        .get(0);
    assert!(!contains(&stored, b"Idempotent report"));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn moderation_moves_forward_and_keeps_anonymous_reporters_hidden(tp: &TestPlatform, api: &Api) {
    let gina = api.register("reporter.gina@example.org").await;
    let mut anonymous = report("Followed home");
    anonymous["category"] = json!("stalking");
    anonymous["anonymous"] = json!(true);
    let filed = api.file(&gina, &anonymous).await;
    let id = filed["id"].as_str().expect("id").to_owned();
    let status_path = format!("/v1/admin/reports/{id}/status");
    // Her second takes the one-statement path (she has a data key by now): its audit row names
    // no one either.
    let again = api.file(&gina, &anonymous).await;
    let again_id = again["id"].as_str().expect("id");
    let db = admin_db(tp).await;
    let audit = db
        .query(
            "SELECT actor_id::text, ip, user_agent FROM reports.audit_logs WHERE resource_id = $1",
            &[&again_id],
        )
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1, "one audit row");
    let who: (Option<String>, Option<String>, Option<String>) = (audit[0].get(0), audit[0].get(1), audit[0].get(2));
    assert_eq!(who, (None, None, None), "an anonymous report's audit row names no one");
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM reports.outbox WHERE payload->>'report_id' = $1",
            &[&again_id],
        )
        .await
        .expect("event")
        .get(0);
    assert_eq!(events, 1, "its event, with the report");

    let code = error_code(api.get(&gina.token, "/v1/admin/reports").await, 403).await;
    assert_eq!(code, "FORBIDDEN");
    let res = api
        .post(&gina.token, &status_path, &json!({"status": "under_review"}))
        .await;
    assert_eq!(error_code(res, 403).await, "FORBIDDEN");

    api.register("moderator.hal@example.org").await;
    let (ok, out) = crate::operator(
        tp,
        &[
            "grant-role",
            "--email",
            "moderator.hal@example.org",
            "--role",
            "moderator",
        ],
    );
    assert!(ok, "{out}");
    let hal = api.login("moderator.hal@example.org").await;

    // The queue: submitted reports, oldest first; the anonymous one without its reporter.
    let res = api.get(&hal, "/v1/admin/reports?limit=100").await;
    assert_eq!(res.status().as_u16(), 200);
    let queue: Value = res.json().await.expect("json");
    let entry = queue["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["report"]["id"] == json!(id))
        .expect("in the queue")
        .clone();
    assert_eq!(entry["reporter_id"], Value::Null);
    assert_eq!(entry["report"]["title"], "Followed home");
    assert!(!entry.to_string().contains(&gina.id), "the reporter leaks: {entry}");

    let res = api.post(&hal, &status_path, &json!({"status": "resolved"})).await;
    assert_eq!(error_code(res, 409).await, "CONFLICT", "review comes first");
    let res = api
        .post(
            &hal,
            &status_path,
            &json!({"status": "under_review", "note": "called the reporter's area patrol", "public_note": "We are looking into it."}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let moved: Value = res.json().await.expect("json");
    assert_eq!(moved["report"]["status"], "under_review");
    assert_eq!(moved["notes"][0]["note"], "called the reporter's area patrol");
    assert_eq!(moved["notes"][0]["from_status"], "submitted");
    assert_eq!(moved["reporter_id"], Value::Null);
    let changes = crate::metric(
        tp.platform.ports.reports_admin,
        "report_status_changes_total{to=\"under_review\"}",
    );
    assert!(changes >= 1);

    // The reporter sees the status and the public note, never the moderators' note; and can no
    // longer change the report.
    let res = api.get(&gina.token, &format!("/v1/reports/{id}")).await;
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["status"], "under_review");
    assert_eq!(seen["public_note"], "We are looking into it.");
    assert!(!seen.to_string().contains("area patrol"));
    let res = api
        .patch(&gina.token, &format!("/v1/reports/{id}"), &json!({"title": "x"}))
        .await;
    assert_eq!(error_code(res, 409).await, "CONFLICT");

    // Now public: nearby alerts show its category, coarsely.
    let res = api
        .http
        .get(api.url("/v1/alerts/nearby?lat=52.52&lng=13.405&radius_m=5000"))
        .send()
        .await
        .expect("alerts");
    let alerts: Value = res.json().await.expect("json");
    assert!(
        alerts["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["category"] == "stalking"),
        "{alerts}"
    );

    // Audited with the moderator's id; the reporter's own actions on an anonymous report carry
    // no actor; the event carries no reporter.
    let db = admin_db(tp).await;
    let actors: Vec<(String, Option<String>)> = db
        .query(
            "SELECT action, actor_id::text FROM reports.audit_logs WHERE resource_id = $1 ORDER BY created_at",
            &[&id],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(actors[0], ("report.create".to_owned(), None));
    assert_eq!(actors[1].0, "report.status_change");
    assert!(actors[1].1.is_some());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM reports.outbox WHERE payload->>'report_id' = $1 AND event_type = 'report.status_changed'",
            &id
        )
        .await,
        1
    );
    let note: Vec<u8> = db
        .query_one(
            "SELECT note_ct FROM reports.moderation_notes WHERE report_id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("note")
        .get(0);
    assert!(!contains(&note, b"area patrol"), "the moderators' note is sealed");
}

/// The categories nearby alerts show around `(lat, lng)`, as a stranger asks (no token).
async fn alert_categories(api: &Api, lat: f64, lng: f64) -> Vec<String> {
    let res = api
        .http
        .get(api.url(&format!("/v1/alerts/nearby?lat={lat}&lng={lng}&radius_m=2000")))
        .send()
        .await
        .expect("alerts");
    assert_eq!(res.status().as_u16(), 200);
    let alerts: Value = res.json().await.expect("json");
    alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["category"].as_str().expect("category").to_owned())
        .collect()
}

/// Nearby alerts read a projection of public reports that triggers keep (migration 000013): a
/// report shows once a moderator accepts it and goes when dismissed or withdrawn; the runtime
/// role reads the projection, which names no reporter, and cannot write it; the alerts scope
/// reads nothing of `reports` itself.
async fn alerts_follow_moderation_and_withdrawal_and_show_no_reporter(tp: &TestPlatform, api: &Api) {
    // Far from every other report of this file, so these two are the only alerts around.
    let (lat, lng) = (-33.8688, 151.2093);
    let quinn = api.register("reporter.quinn@example.org").await;
    let filed = |category: &str| {
        let mut body = report("Seen in Sydney");
        body["category"] = json!(category);
        body["location"] = json!({"lat": lat, "lng": lng});
        body
    };
    let vandalism = api.file(&quinn, &filed("vandalism")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cyber = api.file(&quinn, &filed("cyber")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        alert_categories(api, lat, lng).await.is_empty(),
        "submitted is not public"
    );

    let hal = api.login("moderator.hal@example.org").await;
    for id in [&vandalism, &cyber] {
        let res = api
            .post(
                &hal,
                &format!("/v1/admin/reports/{id}/status"),
                &json!({"status": "under_review"}),
            )
            .await;
        assert_eq!(res.status().as_u16(), 200);
    }
    let mut seen = alert_categories(api, lat, lng).await;
    seen.sort();
    assert_eq!(seen, ["cyber", "vandalism"]);

    // The runtime role, in the alerts scope: the projection without a reporter, nothing of
    // `reports`, and no write to the projection by hand.
    let db = connect(&reports_db_url(tp)).await;
    db.batch_execute("BEGIN").await.expect("begin");
    db.execute("SELECT set_config('app.role', 'alerts', true)", &[])
        .await
        .expect("scope");
    let reports: i64 = db
        .query_one("SELECT count(*) FROM reports.reports", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(reports, 0, "the alerts scope reads no report");
    let columns: Vec<String> = db
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'reports' AND table_name = 'public_alerts' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "report_id",
            "status",
            "category",
            "severity",
            "occurred_at",
            "cell_lat",
            "cell_lng"
        ]
    );
    refused_by_row_level_security(
        &db,
        "INSERT INTO reports.public_alerts SELECT gen_random_uuid(), status, 'other', severity, \
         occurred_at, cell_lat, cell_lng FROM reports.public_alerts LIMIT 1",
    )
    .await;
    db.batch_execute("ROLLBACK").await.expect("rollback");
    // Nor the per-cell summary the query starts from.
    refused_by_row_level_security(
        &db,
        "INSERT INTO reports.alert_cells (cell_lat, cell_lng, newest) VALUES (0, 0, now())",
    )
    .await;

    // The summary follows the projection: the cell's row holds its two alerts' times.
    let admin = admin_db(tp).await;
    let cell = admin
        .query_one(
            "SELECT cell_lat, cell_lng FROM reports.reports WHERE id = $1::text::uuid",
            &[&cyber],
        )
        .await
        .expect("the cell");
    let (cell_lat, cell_lng): (i32, i32) = (cell.get(0), cell.get(1));
    assert_eq!(
        alert_cell(&admin, cell_lat, cell_lng)
            .await
            .map(|(_, second)| second.is_some()),
        Some(true)
    );
    assert_eq!(alert_cells_out_of_step(&admin).await, 0);

    // Dismissed by a moderator, withdrawn by its reporter: gone from the alerts either way.
    let res = api
        .post(
            &hal,
            &format!("/v1/admin/reports/{vandalism}/status"),
            &json!({"status": "dismissed"}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(alert_categories(api, lat, lng).await, ["cyber"]);
    assert_eq!(
        alert_cell(&admin, cell_lat, cell_lng)
            .await
            .map(|(_, second)| second.is_some()),
        Some(false)
    );
    let res = api.delete(&quinn.token, &format!("/v1/reports/{cyber}")).await;
    assert_eq!(res.status().as_u16(), 204);
    assert!(alert_categories(api, lat, lng).await.is_empty());
    assert_eq!(
        alert_cell(&admin, cell_lat, cell_lng).await,
        None,
        "a cell without alerts has no row"
    );
    assert_eq!(alert_cells_out_of_step(&admin).await, 0);
}

/// `sql`, a write the runtime role `db` has no policy for: refused by row-level security.
async fn refused_by_row_level_security(db: &tokio_postgres::Client, sql: &str) {
    let forged = db
        .execute(sql, &[])
        .await
        .expect_err("the runtime role wrote past its policies");
    let refusal = forged.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(refusal.contains("row-level security policy"), "{sql}: {forged:?}");
}

/// A cell's row in `alert_cells`: its newest alert's time and the one before, as text.
async fn alert_cell(admin: &tokio_postgres::Client, lat: i32, lng: i32) -> Option<(String, Option<String>)> {
    admin
        .query_opt(
            "SELECT newest::text, second::text FROM reports.alert_cells WHERE cell_lat = $1 AND cell_lng = $2",
            &[&lat, &lng],
        )
        .await
        .expect("alert_cells")
        .map(|row| (row.get(0), row.get(1)))
}

/// Cells whose row in `alert_cells` is not the times of their newest two rows of
/// `public_alerts`, either way (a row too many, one missing, other times). One statement, so one
/// snapshot: the triggers change both tables in the same transaction.
async fn alert_cells_out_of_step(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "WITH truth AS (SELECT c.cell_lat, c.cell_lng, t.times[1] AS newest, t.times[2] AS second \
               FROM (SELECT DISTINCT cell_lat, cell_lng FROM reports.public_alerts) AS c \
               CROSS JOIN LATERAL (SELECT array_agg(p.occurred_at ORDER BY p.occurred_at DESC) AS times \
                 FROM (SELECT occurred_at FROM reports.public_alerts a \
                       WHERE a.cell_lat = c.cell_lat AND a.cell_lng = c.cell_lng \
                       ORDER BY a.occurred_at DESC LIMIT 2) AS p) AS t), \
             kept AS (SELECT cell_lat, cell_lng, newest, second FROM reports.alert_cells) \
             SELECT (SELECT count(*) FROM (SELECT * FROM truth EXCEPT SELECT * FROM kept) AS a) \
                  + (SELECT count(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM truth) AS b)",
            &[],
        )
        .await
        .expect("alert_cells against public_alerts")
        .get(0)
}

/// The nearby query reads each cell's newest two, takes a time from them, then each cell's
/// newest from that time on: the answer must still be the newest reports of the whole box. 12
/// cells of 3 public reports each, all at distinct hours (cell k: k+1, k+13 and k+25 hours ago):
/// the newest 20 are the hours 1 to 20, from every cell's first and eight cells' second.
async fn nearby_alerts_are_the_newest_across_every_cell(tp: &TestPlatform, api: &Api) {
    let db = admin_db(tp).await;
    db.batch_execute(
        "INSERT INTO reports.reports (id, user_id, category, severity, status, title_ct, description_ct, \
         cell_lat, cell_lng, anonymous, occurred_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'other', 'low', 'under_review', '\\x00', '\\x00', \
                1000 + k / 4, 1000 + k % 4, false, \
                date_trunc('hour', now()) - (k + 1 + 12 * n) * interval '1 hour' + interval '1 minute' \
         FROM generate_series(0, 11) AS k, generate_series(0, 2) AS n",
    )
    .await
    .expect("seed");
    // The middle of the 3 × 4 cells around (10.01, 10.015): every cell is within 5 km.
    let res = api
        .http
        .get(api.url("/v1/alerts/nearby?lat=10.01&lng=10.015&radius_m=5000"))
        .send()
        .await
        .expect("alerts");
    assert_eq!(res.status().as_u16(), 200);
    let alerts: Value = res.json().await.expect("json");
    let now_hour = db
        .query_one("SELECT extract(epoch FROM date_trunc('hour', now()))::bigint", &[])
        .await
        .expect("now")
        .get::<_, i64>(0);
    let mut hours_ago: Vec<i64> = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            let at = a["occurred_at"].as_str().expect("occurred_at");
            let at = chrono::DateTime::parse_from_rfc3339(at).expect("rfc3339").timestamp();
            (now_hour - at) / 3600
        })
        .collect();
    let newest_first = hours_ago.windows(2).all(|w| w[0] <= w[1]);
    hours_ago.sort_unstable();
    assert_eq!(hours_ago, (1..=20).collect::<Vec<i64>>(), "{alerts}");
    assert!(newest_first, "{alerts}");

    // Fewer than 20 times in the cells' summary (one busy cell of 25, hours 2 to 26 ago, beside
    // one of a single report an hour ago): the query falls back to the window's start and must
    // still read the busy cell's newest 19.
    db.batch_execute(
        "INSERT INTO reports.reports (id, user_id, category, severity, status, title_ct, description_ct, \
         cell_lat, cell_lng, anonymous, occurred_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'other', 'low', 'resolved', '\\x00', '\\x00', \
                2000, 2000 + (h = 1)::int, false, \
                date_trunc('hour', now()) - h * interval '1 hour' + interval '1 minute' \
         FROM generate_series(1, 26) AS h",
    )
    .await
    .expect("seed");
    let alerts = api
        .http
        .get(api.url("/v1/alerts/nearby?lat=20.0&lng=20.005&radius_m=5000"))
        .send()
        .await
        .expect("alerts")
        .json::<Value>()
        .await
        .expect("json");
    let hours_ago: Vec<i64> = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            let at = a["occurred_at"].as_str().expect("occurred_at");
            (now_hour - chrono::DateTime::parse_from_rfc3339(at).expect("rfc3339").timestamp()) / 3600
        })
        .collect();
    assert_eq!(hours_ago, (1..=20).collect::<Vec<i64>>(), "newest first: {alerts}");
    assert_eq!(alert_cells_out_of_step(&db).await, 0);
}

async fn sealed_columns_are_not_plaintext_and_do_not_open_elsewhere(tp: &TestPlatform, api: &Api) {
    let ivy = api.register("reporter.ivy@example.org").await;
    let one = api.file(&ivy, &report("Plaintext canary one")).await;
    let two = api.file(&ivy, &report("Plaintext canary two")).await;
    let (one, two) = (
        one["id"].as_str().expect("id").to_owned(),
        two["id"].as_str().expect("id").to_owned(),
    );
    let db = admin_db(tp).await;
    let row = db
        .query_one(
            "SELECT title_ct, description_ct, location_ct FROM reports.reports WHERE id = $1::text::uuid",
            &[&one],
        )
        .await
        .expect("row");
    for (column, needle) in [
        (0, &b"Plaintext canary one"[..]),
        (1, &b"a bicycle"[..]),
        (2, &b"Alexanderplatz"[..]),
    ] {
        let bytes: Vec<u8> = row.get(column);
        assert!(!contains(&bytes, needle), "column {column} holds the plaintext");
    }

    // Report two's title ciphertext copied onto report one: it does not open there.
    db.execute(
        "UPDATE reports.reports SET title_ct = (SELECT title_ct FROM reports.reports WHERE id = $2::text::uuid) \
         WHERE id = $1::text::uuid",
        &[&one, &two],
    )
    .await
    .expect("copy");
    let res = api.get(&ivy.token, &format!("/v1/reports/{one}")).await;
    assert_eq!(error_code(res, 500).await, "INTERNAL");
    let res = api.get(&ivy.token, &format!("/v1/reports/{two}")).await;
    assert_eq!(res.status().as_u16(), 200, "the other row still reads");

    // The user's data key deleted: nothing of theirs reads any more (an error, never garbage).
    db.execute(
        "DELETE FROM reports.data_keys WHERE user_id = $1::text::uuid",
        &[&ivy.id],
    )
    .await
    .expect("erase");
    let res = api.get(&ivy.token, &format!("/v1/reports/{two}")).await;
    assert_eq!(error_code(res, 500).await, "INTERNAL");
    let res = api.get(&ivy.token, "/v1/reports").await;
    assert_eq!(error_code(res, 500).await, "INTERNAL");

    // An erased reporter does not stop moderation: the queue leaves their reports out.
    let hal = api.login("moderator.hal@example.org").await;
    let res = api.get(&hal, "/v1/admin/reports?limit=100").await;
    assert_eq!(res.status().as_u16(), 200);
    let queue: Value = res.json().await.expect("json");
    let listed: Vec<&str> = queue["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["report"]["id"].as_str())
        .collect();
    assert!(!listed.is_empty() && !listed.contains(&two.as_str()), "{listed:?}");
}

/// Keys under the old master key (`dev`) keep reading while the new one (`k2`) is first; after
/// `rotate-master-key` (run twice: it is safe to repeat) the old key can go and everything reads.
#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_master_key_keeps_every_report_readable() {
    let mut tp = platform("rotation").await;
    let api = Api::new(&tp);
    let mut ids = Vec::new();
    let mut users = Vec::new();
    for n in 0..3 {
        let user = api.register(&format!("rotation.{n}@example.org")).await;
        let r = api.file(&user, &report(&format!("Before rotation {n}"))).await;
        ids.push((users.len(), r["id"].as_str().expect("id").to_owned()));
        users.push(user);
    }
    // A key older than 24 h, and a fresh one: the purge (at start, then every 10 minutes) drops
    // the first only.
    let fresh = api.create(&users[0], &report("Kept key"), Some("fresh-key")).await;
    assert_eq!(fresh.status().as_u16(), 201);
    ids.push((
        0,
        fresh.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned(),
    ));
    let db = admin_db(&tp).await;
    db.execute(
        "INSERT INTO reports.idempotency_keys (user_id, key, request_hash, response, created_at) \
         VALUES ($1::text::uuid, 'lapsed-key', '\\x00', '\\x00', now() - interval '25 hours')",
        &[&users[0].id],
    )
    .await
    .expect("a lapsed key");
    let old = tp.secrets.read("encryption_key").expect("old key");
    let new = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let reports = &mut tp.platform.reports;
    reports.unset_env("ENCRYPTION_KEYS_FILE");
    reports.set_env("ENCRYPTION_KEYS", &format!("k2:{new},dev:{}", old.trim()));
    reports.restart().expect("restart");
    let readable = async |api: &Api, users: &[User], ids: &[(usize, String)]| {
        for (user, id) in ids {
            let path = format!("/v1/reports/{id}");
            let token = users[*user].token.clone();
            eventually("the report reads", Duration::from_secs(30), || {
                let (path, token) = (path.clone(), token.clone());
                async move {
                    let res = api.get(&token, &path).await;
                    (res.status().as_u16() == 200).then_some(())
                }
            })
            .await;
        }
    };
    readable(&api, &users, &ids).await;
    let keys_left = async || -> Vec<String> {
        db.query("SELECT key FROM reports.idempotency_keys ORDER BY key", &[])
            .await
            .expect("keys")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    eventually("the lapsed key is purged", Duration::from_secs(30), || async {
        (keys_left().await == ["fresh-key"]).then_some(())
    })
    .await;
    // A new user's key is wrapped under k2 at once.
    let late = api.register("rotation.late@example.org").await;
    let r = api.file(&late, &report("During rotation")).await;
    ids.push((users.len(), r["id"].as_str().expect("id").to_owned()));
    users.push(late);

    for _ in 0..2 {
        let (ok, out) = tp.platform.reports.run_command(&["rotate-master-key"]).expect("runs");
        assert!(ok, "{out}");
    }
    let ids_of_keys: Vec<String> = db
        .query("SELECT DISTINCT key_id FROM reports.data_keys", &[])
        .await
        .expect("keys")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids_of_keys, ["k2"]);

    let reports = &mut tp.platform.reports;
    reports.set_env("ENCRYPTION_KEYS", &format!("k2:{new}"));
    reports.restart().expect("restart");
    readable(&api, &users, &ids).await;
}
