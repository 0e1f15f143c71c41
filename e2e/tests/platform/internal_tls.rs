//! Inside traffic over TLS: mTLS between the gateway and the services (a caller without a
//! certificate, or with one naming no allowed caller, is refused; only the gateway may say the
//! client's address), gRPC reflection telling the truth, PostgreSQL and Redis over TLS.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use proto::auth::v1::auth_service_client::AuthServiceClient;
use proto::auth::v1::{Device, RegisterRequest};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use xtask::testkit::{Service, TestPlatform};

use crate::{admin_get, client, eventually};

/// A channel to a service on `port`, trusting the internal CA, presenting `as_process`'s
/// certificate (from the platform's secrets) or none.
pub(crate) async fn channel(tp: &TestPlatform, port: u16, as_process: Option<&str>) -> Result<Channel, String> {
    let read = |path: String| std::fs::read(path).expect("certificate file");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(tp.secrets.grpc("ca", "crt"))))
        .domain_name("localhost");
    if let Some(process) = as_process {
        tls = tls.identity(Identity::from_pem(
            read(tp.secrets.grpc(process, "crt")),
            read(tp.secrets.grpc(process, "key")),
        ));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))
}

/// One event of `producer` delivered to analytics-service with `process`'s certificate.
async fn deliver_as(
    tp: &TestPlatform,
    process: &str,
    producer: &str,
    ids: &[uuid::Uuid],
) -> Result<proto::events::v1::DeliverResponse, tonic::Status> {
    use proto::events::v1::event_sink_client::EventSinkClient;
    use proto::events::v1::{DeliverRequest, Envelope};
    let to_analytics = channel(tp, tp.platform.ports.analytics, Some(process))
        .await
        .expect("handshake with a CA certificate");
    let mut occurred_at = proto::events::v1::Envelope::default().occurred_at.unwrap_or_default();
    occurred_at.seconds = chrono::Utc::now().timestamp();
    let events = ids
        .iter()
        .map(|id| Envelope {
            event_id: id.to_string(),
            producer: producer.to_owned(),
            event_type: "report.submitted".to_owned(),
            occurred_at: Some(occurred_at),
            traceparent: String::new(),
            payload: format!(r#"{{"category":"other","report_id":"{id}"}}"#).into_bytes(),
        })
        .collect();
    EventSinkClient::new(to_analytics)
        .deliver(DeliverRequest { events })
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) fn registration(email: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.to_owned(),
        password: "correct horse battery staple".to_owned(),
        first_name: "Ada".to_owned(),
        last_name: "Lovelace".to_owned(),
        income_tier: String::new(),
        captcha_token: String::new(),
        device: Some(Device {
            device_id: format!("{email}-phone"),
            platform: "ios".to_owned(),
            model: "iPhone 15".to_owned(),
            os_version: "18.1".to_owned(),
        }),
    }
}

/// `Register` called straight at auth-service as `as_process`, claiming the client's address is
/// `claimed_ip`.
async fn register_directly(
    tp: &TestPlatform,
    as_process: Option<&str>,
    email: &str,
    claimed_ip: &str,
) -> Result<(), tonic::Status> {
    let channel = channel(tp, tp.platform.ports.auth, as_process)
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut request = tonic::Request::new(registration(email));
    request
        .metadata_mut()
        .insert("x-client-ip", claimed_ip.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-user-agent", "forged-agent/1.0".parse().expect("ascii"));
    AuthServiceClient::new(channel).register(request).await.map(|_| ())
}

/// How many audit log rows carry `ip` (read as PostgreSQL's superuser).
async fn audited_with_ip(tp: &TestPlatform, ip: &str) -> i64 {
    let admin = xtask::provision::connect(&tp.admin_url).await.expect("admin");
    admin
        .query_one("SELECT count(*) FROM auth.audit_logs WHERE ip = $1", &[&ip])
        .await
        .expect("count")
        .get(0)
}

macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(futures_util::stream::iter(vec![request]))
            .await
            .expect("reflection call")
            .into_inner();
        let answer = answers.message().await.expect("an answer").expect("one message");
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<BTreeSet<String>>()
            }
            other => panic!("not a service list: {other:?}"),
        }
    }};
}

#[tokio::test]
async fn services_admit_only_allowed_callers_and_believe_only_the_gateway() {
    // auth-service admits reports-service too here, to show that an allowed caller that is not
    // the gateway still cannot say what the client's address is.
    let tp = TestPlatform::builder("itls")
        .all_services()
        .auth_env(&[("GRPC_ALLOWED_CLIENTS", "gateway,reports-service")])
        .start()
        .await
        .expect("platform");

    // No client certificate: the handshake (or the first call) fails; nothing is registered.
    let refused = register_directly(&tp, None, "nocert@example.org", "203.0.113.1").await;
    assert!(refused.is_err(), "a caller without a certificate was served");

    // A certificate from the internal CA that names no allowed caller.
    let refused = register_directly(&tp, Some("analytics-service"), "notallowed@example.org", "203.0.113.2")
        .await
        .expect_err("a caller not in GRPC_ALLOWED_CLIENTS was served");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // reports-service is allowed, but its x-client-ip is dropped; the gateway's is kept.
    register_directly(&tp, Some("reports-service"), "allowed@example.org", "203.0.113.3")
        .await
        .expect("an allowed caller is served");
    assert_eq!(
        audited_with_ip(&tp, "203.0.113.3").await,
        0,
        "x-client-ip believed from reports-service"
    );
    register_directly(&tp, Some("gateway"), "gateway@example.org", "203.0.113.4")
        .await
        .expect("the gateway is served");
    assert!(
        audited_with_ip(&tp, "203.0.113.4").await > 0,
        "the gateway's x-client-ip was lost"
    );

    // A service's own caller list: reports-service admits the gateway only.
    let to_reports = channel(&tp, tp.platform.ports.reports, Some("auth-service"))
        .await
        .expect("handshake with a CA certificate");
    let mut health = tonic_health::pb::health_client::HealthClient::new(to_reports);
    let refused = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("auth-service may not call reports-service");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // analytics-service stores each service's own events only: an allowed caller may not pass
    // events off as another service's, and the gateway may deliver none.
    let [a, b, c] = [(); 3].map(|()| uuid::Uuid::new_v4());
    for (process, producer) in [("gateway", "reports"), ("reports-service", "auth")] {
        let refused = deliver_as(&tp, process, producer, &[a])
            .await
            .expect_err("a delivery naming another producer was stored");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{process}: {refused:?}");
    }
    // Each event id is stored once: twice in one batch, or again in a later one (a relay's retry).
    let stored = deliver_as(&tp, "reports-service", "reports", &[a, b, a])
        .await
        .expect("reports-service delivers its own events");
    assert_eq!((stored.accepted, stored.duplicates), (2, 1));
    let again = deliver_as(&tp, "reports-service", "reports", &[a, c])
        .await
        .expect("a retry");
    assert_eq!((again.accepted, again.duplicates), (1, 1));
    let rows = crate::outbox::database(&tp, "analytics")
        .await
        .query(
            "SELECT event_id::text, source, name, properties->>'report_id' \
             FROM analytics.ingested_events WHERE event_id::text = ANY($1) ORDER BY event_id",
            &[&[a, b, c].map(|id| id.to_string()).to_vec()],
        )
        .await
        .expect("stored events");
    let mut want = [a, b, c];
    want.sort();
    let got: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|id| {
            (
                id.to_string(),
                "reports".to_owned(),
                "report.submitted".to_owned(),
                id.to_string(),
            )
        })
        .collect();
    assert_eq!(got, want, "each id once, with its own fields");

    // Reflection lists exactly what each service serves, on v1 and on v1alpha.
    let infrastructure = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let p = tp.platform.ports;
    for (port, own) in [
        (p.auth, vec!["auth.v1.AuthService"]),
        (p.reports, vec!["reports.v1.ReportsService"]),
        (p.analytics, vec!["events.v1.EventSink"]),
    ] {
        let expected: BTreeSet<String> = own.iter().chain(&infrastructure).map(|s| (*s).to_owned()).collect();
        let to_service = channel(&tp, port, Some("gateway")).await.expect("channel");
        assert_eq!(list_services!(v1, to_service.clone()), expected, "v1 on :{port}");
        assert_eq!(list_services!(v1alpha, to_service), expected, "v1alpha on :{port}");
    }

    // Every service reaches PostgreSQL with sslmode=verify-full, over TLS only.
    let admin = xtask::provision::connect(&tp.admin_url).await.expect("admin");
    for db in &tp.databases {
        assert!(
            db.service_url().ends_with("?sslmode=verify-full"),
            "{} connects without verify-full",
            db.service
        );
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.usename = $1",
                &[&db.role],
            )
            .await
            .expect("pg_stat_ssl");
        let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
        assert!(tls > 0, "{} has no TLS connection", db.service);
        assert_eq!(plain, 0, "{} has a connection in the clear", db.service);
    }
}

/// Login through the gateway with Redis reached over `rediss://` by the gateway and auth-service.
#[tokio::test]
async fn the_platform_works_over_tls_to_redis_and_postgresql() {
    let (_own, redis, tp) = TestPlatform::builder("itlsr")
        .services(&[Service::Auth])
        .start_on_own_tls_redis()
        .await
        .expect("platform");
    assert!(redis.url().starts_with("rediss://"));
    let (status, ready) = admin_get(tp.platform.ports.gateway_admin, "/ready").expect("ready");
    assert_eq!(
        (status, ready["checks"]["redis"].as_bool()),
        (200, Some(true)),
        "{ready}"
    );
    // auth-service reached it too: its revocation marker is there (read over TLS, trusting the
    // internal CA only).
    let ca = std::fs::read(tp.secrets.grpc("ca", "crt")).expect("CA");
    let tls_client = redis::Client::build_with_tls(
        redis.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .expect("rediss client");
    let conn = tls_client
        .get_multiplexed_async_connection()
        .await
        .expect("a TLS connection to Redis");
    let marker = format!("{}revoked:complete:v2", tp.redis_prefix);
    eventually(
        "auth-service's revocation marker in the TLS Redis",
        Duration::from_secs(15),
        || {
            let (mut conn, marker) = (conn.clone(), marker.clone());
            async move {
                let n: i64 = redis::cmd("EXISTS").arg(&marker).query_async(&mut conn).await.ok()?;
                (n == 1).then_some(())
            }
        },
    )
    .await;

    let http = client(&tp);
    let base = tp.base_url();
    let mut body = json!({
        "email": "tls@example.org",
        "password": "correct horse battery staple",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "device": {"device_id": "phone-1", "platform": "ios"}
    });
    let res = http
        .post(format!("{base}/v1/auth/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert_eq!(res.status().as_u16(), 201);
    body.as_object_mut().expect("object").remove("first_name");
    body.as_object_mut().expect("object").remove("last_name");
    let res = http
        .post(format!("{base}/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .expect("login");
    assert_eq!(res.status().as_u16(), 200);
    let session: serde_json::Value = res.json().await.expect("json");
    let access = session["tokens"]["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    // Logout writes the revocation to Redis (auth-service) and the gateway reads it back.
    let res = http
        .post(format!("{base}/v1/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({}))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status().as_u16(), 204);
    let res = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("me");
    assert_eq!(res.status().as_u16(), 401, "a revoked token was accepted");
}

/// Plain gRPC is a development shortcut: production (the default) and test refuse it at start.
#[test]
fn plain_grpc_is_refused_outside_development() {
    for (binary, app_env) in [
        ("reports-service", None),
        ("gateway", None),
        ("analytics-service", Some("test")),
    ] {
        let mut command = Command::new(xtask::platform::bin_dir().join(binary));
        command
            .arg("serve")
            .env_clear()
            .env("GRPC_INSECURE", "true")
            .env("DATABASE_URL", "postgres://u:p@127.0.0.1:1/x")
            .env("ALLOW_PLAIN_HTTP", "true");
        if let Some(app_env) = app_env {
            command.env("APP_ENV", app_env);
        }
        let out = command.output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{binary}: {stderr}");
        let expected = format!(
            "GRPC_INSECURE is refused when APP_ENV={}",
            app_env.unwrap_or("production")
        );
        assert!(stderr.contains(&expected), "{binary}: {stderr}");
    }
}
