//! Attachments end to end: files go in through the gateway (raw or multipart), come back
//! stripped of their metadata with the same pixels, are stored encrypted (on disk and in an
//! S3-compatible server), and every bad upload is a 4xx naming the field with nothing stored.

use std::io::{Read as _, Write as _};
use std::path::Path;

use futures_util::StreamExt as _;
use img_parts::{Bytes, ImageEXIF as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use xtask::testkit::{Service, TestPlatform};

use crate::{client, error_code, keys, metric};

const PASSWORD: &str = "correct horse battery staple";
const GPS: &[u8] = b"MM\x00\x2a\x00\x00\x00\x08GPSLatitude 52.5200 GPSLongitude 13.4050";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const MIB: usize = 1024 * 1024;

struct Api {
    http: reqwest::Client,
    base: String,
}

/// A registered user: their access token.
struct User {
    token: String,
}

impl Api {
    fn new(tp: &TestPlatform) -> Self {
        Self {
            http: client(tp),
            base: tp.base_url(),
        }
    }

    async fn register(&self, email: &str) -> User {
        let body = json!({
            "email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace",
            "device": {"device_id": "phone-1", "platform": "ios"}
        });
        let res = self
            .http
            .post(format!("{}/v1/auth/register", self.base))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(res.status().as_u16(), 201, "register {email}");
        let v: Value = res.json().await.expect("json");
        User {
            token: v["tokens"]["access_token"].as_str().expect("token").to_owned(),
        }
    }

    async fn login(&self, email: &str) -> String {
        let body = json!({"email": email, "password": PASSWORD, "device": {"device_id": "phone-1", "platform": "ios"}});
        let res = self
            .http
            .post(format!("{}/v1/auth/login", self.base))
            .json(&body)
            .send()
            .await
            .expect("login");
        assert_eq!(res.status().as_u16(), 200, "login {email}");
        let v: Value = res.json().await.expect("json");
        v["tokens"]["access_token"].as_str().expect("token").to_owned()
    }

    /// `POST /v1/reports/{report}/attachments` with `body` as it is and these headers.
    async fn upload(
        &self,
        token: &str,
        report: &str,
        headers: &[(&str, &str)],
        body: reqwest::Body,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/v1/reports/{report}/attachments", self.base))
            .bearer_auth(token)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("upload")
    }

    async fn upload_raw(&self, token: &str, report: &str, content_type: &str, bytes: &[u8]) -> reqwest::Response {
        self.upload(token, report, &[("content-type", content_type)], bytes.to_vec().into())
            .await
    }

    /// The file as the one file part of a multipart body (after a plain form field).
    async fn upload_multipart(
        &self,
        token: &str,
        report: &str,
        file_name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        let mut body = b"--b0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nfrom my phone\r\n".to_vec();
        body.extend_from_slice(
            format!(
                "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n--b0undary--\r\n");
        self.upload(
            token,
            report,
            &[("content-type", "multipart/form-data; boundary=b0undary")],
            body.into(),
        )
        .await
    }

    async fn download(&self, token: &str, report: &str, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/reports/{report}/attachments/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("download")
    }
}

/// A report of `user`'s, filed through `POST /v1/reports` as the app does.
async fn new_report(tp: &TestPlatform, user: &User) -> String {
    let body = json!({
        "category": "theft", "title": "Bike taken from the rack", "description": "Cut the lock.",
        "occurred_at": (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "location": {"lat": 52.52, "lng": 13.405},
    });
    let res = client(tp)
        .post(format!("{}/v1/reports", tp.base_url()))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .expect("file a report");
    assert_eq!(res.status().as_u16(), 201, "file a report");
    let v: Value = res.json().await.expect("json");
    v["id"].as_str().expect("report id").to_owned()
}

async fn admin(tp: &TestPlatform) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(&tp.admin_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    db
}

async fn attachment_rows(tp: &TestPlatform) -> i64 {
    admin(tp)
        .await
        .query_one("SELECT count(*) FROM reports.attachments", &[])
        .await
        .expect("count")
        .get(0)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut bytes, format)
        .expect("encode");
    bytes.into_inner()
}

fn jpeg_with_gps() -> Vec<u8> {
    let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(encoded(image::ImageFormat::Jpeg).into()).expect("jpeg");
    jpeg.set_exif(Some(Bytes::from_static(GPS)));
    jpeg.encoder().bytes().to_vec()
}

fn pixels(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes).expect("decodes").to_rgba8().into_raw()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A 201 answer: its exact members, and the stored file's id.
async fn stored(res: reqwest::Response, content_type: &str) -> Value {
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.text().await);
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = res.json().await.expect("json");
    assert_eq!(keys(&body), ["content_type", "id", "sha256", "size"], "{body}");
    assert_eq!(body["content_type"], content_type);
    let id = body["id"].as_str().expect("id");
    assert!(location.is_some_and(|l| l.ends_with(id)));
    body
}

/// Downloads and checks the headers; the bytes.
async fn fetched(api: &Api, token: &str, report: &str, body: &Value) -> Vec<u8> {
    let res = api.download(token, report, body["id"].as_str().expect("id")).await;
    assert_eq!(res.status().as_u16(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), body["content_type"].as_str().expect("type"));
    assert!(
        header("content-disposition").starts_with("attachment"),
        "{}",
        header("content-disposition")
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("content-length"), body["size"].to_string());
    let bytes = res.bytes().await.expect("bytes").to_vec();
    assert_eq!(hex_sha256(&bytes), body["sha256"].as_str().expect("sha"));
    bytes
}

/// `bytes` as a body without a length (chunked, 64 KiB at a time).
fn chunked(bytes: &[u8]) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// A refusal: its status, code and the field it names.
async fn refused(res: reqwest::Response, status: u16, code: &str, field: &str) {
    let body_status = res.status().as_u16();
    let body: Value = res.json().await.expect("error JSON");
    assert_eq!(body_status, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], field, "{body}");
}

/// An HTTP/1.1 upload by hand, whose `Content-Length` says `declared` while `body` is sent (and
/// then the sending side is closed): what no HTTP client would send. The answer's status line.
fn lying_upload(tp: &TestPlatform, token: &str, report: &str, declared: usize, body: &[u8]) -> String {
    let mut tls = crate::edge::raw_tls(tp);
    let head = format!(
        "POST /v1/reports/{report}/attachments HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: image/png\r\nContent-Length: {declared}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).expect("head");
    tls.write_all(body).expect("body");
    tls.flush().expect("flush");
    if declared > body.len() {
        tls.conn.send_close_notify();
        tls.flush().expect("close notify");
        let _ = tls.sock.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = vec![0u8; 4096];
    let n = tls.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One platform (local file store) for every check that touches only its own users and reports.
#[tokio::test]
async fn shared_attachment_checks() {
    let tp = TestPlatform::builder("attachments")
        .services(&[Service::Auth, Service::Reports])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let ada = api.register("ada@example.org").await;
    let bob = api.register("bob@example.org").await;
    let report = new_report(&tp, &ada).await;
    let files = tp.reports_files_dir();
    let reports_admin = tp.platform.ports.reports_admin;

    // Every reason is counted from the start, at 0.
    let (_, exposition) = xtask::platform::http_get(reports_admin, "/metrics").expect("metrics");
    for reason in [
        "empty",
        "too_large",
        "type_mismatch",
        "polyglot",
        "file_name",
        "too_many",
    ] {
        assert!(
            exposition.contains(&format!("attachment_rejected_total{{reason=\"{reason}\"}} 0")),
            "{reason} missing: {exposition}"
        );
    }

    // A JPEG with GPS in its EXIF comes back without it, pixel for pixel.
    let original = jpeg_with_gps();
    let jpeg = stored(
        api.upload_raw(&ada.token, &report, "image/jpeg", &original).await,
        "image/jpeg",
    )
    .await;
    let back = fetched(&api, &ada.token, &report, &jpeg).await;
    let oracle = img_parts::jpeg::Jpeg::from_bytes(back.clone().into()).expect("a JPEG");
    assert_eq!(oracle.exif(), None, "EXIF left");
    assert!(!contains(&back, b"GPS"));
    assert_eq!(pixels(&back), pixels(&original), "same pixels");
    assert!(jpeg["size"].as_u64().expect("size") < original.len() as u64);

    // PNG (multipart), GIF and PDF come back as they went (nothing to strip in these).
    for (content_type, bytes) in [
        ("image/png", encoded(image::ImageFormat::Png)),
        ("image/gif", encoded(image::ImageFormat::Gif)),
        ("application/pdf", PDF.to_vec()),
    ] {
        let res = if content_type == "image/png" {
            api.upload_multipart(&ada.token, &report, "photo.png", content_type, &bytes)
                .await
        } else {
            api.upload_raw(&ada.token, &report, content_type, &bytes).await
        };
        let body = stored(res, content_type).await;
        assert_eq!(fetched(&api, &ada.token, &report, &body).await, bytes, "{content_type}");
    }

    // On disk: four objects named by uuid, none of them the plaintext, nothing half-written.
    let on_disk = files_in(&files);
    assert_eq!(on_disk.len(), 4, "{on_disk:?}");
    for name in &on_disk {
        assert!(uuid::Uuid::parse_str(name).is_ok(), "{name}");
        let sealed = std::fs::read(files.join(name)).expect("object");
        for plain in [&b"%PDF"[..], b"GIF89a", b"\x89PNG", b"JFIF"] {
            assert!(!contains(&sealed, plain), "{name} holds plaintext");
        }
    }
    let rows = attachment_rows(&tp).await;
    assert_eq!(rows, 4);

    // Bad input: a 4xx naming the field, and nothing stored.
    let polyglot = [PDF, b"PK\x03\x04\x14\x00\x00\x00 an archive rides along PK\x05\x06"].concat();
    let png = encoded(image::ImageFormat::Png);
    let trailing = [png.as_slice(), b"PK\x03\x04 zip"].concat();
    let big = [PDF, &vec![b' '; 11 * MIB][..]].concat();
    // (declared type, body, status, code, the field named)
    let raw_cases: [(&str, &[u8], u16, &str, &str); 6] = [
        ("image/png", b"", 400, "VALIDATION_FAILED", "file"),
        ("application/pdf", &polyglot, 415, "UNSUPPORTED_MEDIA_TYPE", "file"),
        ("image/jpeg", &png, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"),
        ("text/plain", b"hello", 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"),
        ("image/png", &trailing, 415, "UNSUPPORTED_MEDIA_TYPE", "file"),
        // 11 MiB, refused by its Content-Length before a byte is read.
        ("application/pdf", &big, 413, "PAYLOAD_TOO_LARGE", "file"),
    ];
    for (content_type, body, status, code, field) in raw_cases {
        let res = api.upload_raw(&ada.token, &report, content_type, body).await;
        refused(res, status, code, field).await;
    }
    for name in ["../../etc/passwd.png", "/tmp/x.png", "dir\\\\x.png"] {
        refused(
            api.upload_multipart(&ada.token, &report, name, "image/png", &png).await,
            400,
            "VALIDATION_FAILED",
            "file_name",
        )
        .await;
    }
    let raw_with_path = api
        .upload(
            &ada.token,
            &report,
            &[
                ("content-type", "image/png"),
                ("content-disposition", "attachment; filename=\"../x.png\""),
            ],
            png.clone().into(),
        )
        .await;
    refused(raw_with_path, 400, "VALIDATION_FAILED", "file_name").await;
    // 11 MiB without a length (chunked): refused while streaming.
    let streamed = chunked(&big);
    refused(
        api.upload(&ada.token, &report, &[("content-type", "application/pdf")], streamed)
            .await,
        413,
        "PAYLOAD_TOO_LARGE",
        "file",
    )
    .await;
    // Content-Length lying: more than is sent (the body ends early), or less (the file is cut).
    let status = lying_upload(&tp, &ada.token, &report, png.len() + 100, &png);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let status = lying_upload(&tp, &ada.token, &report, png.len() / 2, &png);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");

    assert_eq!(attachment_rows(&tp).await, rows, "a refused upload stored a row");
    assert_eq!(
        files_in(&files),
        on_disk,
        "a refused upload left a file (or a partial one)"
    );
    assert!(metric(reports_admin, "attachment_rejected_total{reason=\"polyglot\"}") >= 2);
    assert!(metric(reports_admin, "attachment_rejected_total{reason=\"empty\"}") >= 1);
    assert!(metric(reports_admin, "attachment_bytes_total") > 0);

    // Another user's report and attachment ids are 404, like ids that never existed.
    let jpeg_id = jpeg["id"].as_str().expect("id");
    let nobody = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        error_code(api.upload_raw(&bob.token, &report, "application/pdf", PDF).await, 404).await,
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(api.download(&bob.token, &report, jpeg_id).await, 404).await,
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(api.download(&ada.token, &nobody, jpeg_id).await, 404).await,
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(api.download(&ada.token, &report, &nobody).await, 404).await,
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(
            api.upload_raw(&ada.token, "not-a-uuid", "application/pdf", PDF).await,
            404
        )
        .await,
        "NOT_FOUND"
    );
    let bobs = new_report(&tp, &bob).await;
    assert_eq!(
        error_code(api.download(&bob.token, &bobs, jpeg_id).await, 404).await,
        "NOT_FOUND"
    );

    // A moderator reads any report's files.
    api.register("mod@example.org").await;
    let (ok, out) = crate::operator(
        &tp,
        &["grant-role", "--email", "mod@example.org", "--role", "moderator"],
    );
    assert!(ok, "{out}");
    let moderator = api.login("mod@example.org").await;
    assert_eq!(fetched(&api, &moderator, &report, &jpeg).await, back);

    // At most MAX_ATTACHMENTS_PER_REPORT (10) files per report: the 11th is 409.
    let full = new_report(&tp, &bob).await;
    for _ in 0..10 {
        stored(
            api.upload_raw(&bob.token, &full, "application/pdf", PDF).await,
            "application/pdf",
        )
        .await;
    }
    assert_eq!(
        error_code(api.upload_raw(&bob.token, &full, "application/pdf", PDF).await, 409).await,
        "CONFLICT"
    );
    assert_eq!(
        metric(reports_admin, "attachment_rejected_total{reason=\"too_many\"}"),
        1
    );

    // A retried upload under one Idempotency-Key (a phone that lost the answer) stores one file
    // and answers the first response byte for byte; another file under that key is 422.
    let retried = new_report(&tp, &ada).await;
    let keyed = [
        ("content-type", "application/pdf"),
        ("idempotency-key", "upload-once-1"),
    ];
    let first = api.upload(&ada.token, &retried, &keyed, PDF.to_vec().into()).await;
    assert_eq!(first.status().as_u16(), 201);
    let first = first.bytes().await.expect("first body");
    let objects = files_in(&files).len();
    let again = api.upload(&ada.token, &retried, &keyed, PDF.to_vec().into()).await;
    assert_eq!(again.status().as_u16(), 201, "a replay is the first answer");
    assert_eq!(again.bytes().await.expect("replayed body"), first);
    assert_eq!(files_in(&files).len(), objects, "the retry's object is not kept");
    let rows: i64 = admin(&tp)
        .await
        .query_one(
            "SELECT count(*) FROM reports.attachments WHERE report_id = $1::text::uuid",
            &[&retried],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
    let png = encoded(image::ImageFormat::Png);
    let other = [("content-type", "image/png"), ("idempotency-key", "upload-once-1")];
    assert_eq!(
        error_code(api.upload(&ada.token, &retried, &other, png.into()).await, 422).await,
        "IDEMPOTENCY_KEY_REUSED"
    );
}

/// With `FILE_STORE_URL=s3://…` the files go to an S3-compatible server (moto), sealed; a
/// refused upload leaves no object and no open multipart upload there.
#[tokio::test]
async fn attachments_in_s3_are_sealed_and_refusals_leave_nothing() {
    let moto = xtask::moto::Moto::start("attachments").expect("moto");
    let tp = TestPlatform::builder("attachments_s3")
        .services(&[Service::Auth, Service::Reports])
        .reports_env(&moto.file_store_env("reports"))
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let ada = api.register("ada@example.org").await;
    let report = new_report(&tp, &ada).await;

    let original = jpeg_with_gps();
    let jpeg = stored(
        api.upload_raw(&ada.token, &report, "image/jpeg", &original).await,
        "image/jpeg",
    )
    .await;
    let pdf = stored(
        api.upload_raw(&ada.token, &report, "application/pdf", PDF).await,
        "application/pdf",
    )
    .await;
    let back = fetched(&api, &ada.token, &report, &jpeg).await;
    assert_eq!(pixels(&back), pixels(&original));
    assert_eq!(fetched(&api, &ada.token, &report, &pdf).await, PDF);

    let big = [PDF, &vec![b' '; 11 * MIB][..]].concat();
    let streamed = chunked(&big);
    refused(
        api.upload(&ada.token, &report, &[("content-type", "application/pdf")], streamed)
            .await,
        413,
        "PAYLOAD_TOO_LARGE",
        "file",
    )
    .await;
    let polyglot = [PDF, b"PK\x03\x04 archive"].concat();
    refused(
        api.upload_raw(&ada.token, &report, "application/pdf", &polyglot).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "file",
    )
    .await;

    // Exactly the two stored files, named by uuid under the prefix, none of them plaintext.
    let keys = moto.keys("reports/").expect("keys");
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        let name = key.strip_prefix("reports/").expect("under the prefix");
        assert!(uuid::Uuid::parse_str(name).is_ok(), "{key}");
        let sealed = moto.object(key).expect("object");
        assert!(
            !contains(&sealed, b"%PDF") && !contains(&sealed, b"JFIF"),
            "{key} holds plaintext"
        );
    }
    // The refused uploads' multipart uploads were aborted (in the background: poll).
    crate::eventually(
        "aborted multipart uploads",
        std::time::Duration::from_secs(10),
        || async { (moto.open_uploads().ok()? == 0).then_some(()) },
    )
    .await;
}

/// A body sent in `pieces` with `pause` between them: a phone on a slow network.
fn slowly(bytes: &[u8], pieces: usize, pause: std::time::Duration) -> reqwest::Body {
    let size = bytes.len().div_ceil(pieces);
    let chunks: Vec<Vec<u8>> = bytes.chunks(size).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| async move {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, std::io::Error>(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

/// An upload has `UPLOAD_TIMEOUT_MS`, not the seconds every other request has: a file that takes
/// longer than the request, body and gRPC deadlines is stored, and one slower than the upload
/// deadline is cut with 408.
#[tokio::test]
async fn a_slow_upload_has_its_own_deadline() {
    let tp = TestPlatform::builder("slow_upload")
        .services(&[Service::Auth, Service::Reports])
        .gateway_env(&[
            ("GRPC_REQUEST_TIMEOUT_MS", "500"),
            ("REQUEST_TIMEOUT_MS", "1500"),
            ("BODY_READ_TIMEOUT_MS", "1000"),
            ("UPLOAD_TIMEOUT_MS", "5000"),
        ])
        .start()
        .await
        .expect("platform");
    let api = Api::new(&tp);
    let ada = api.register("slow@example.org").await;
    let report = new_report(&tp, &ada).await;
    let pause = std::time::Duration::from_millis(700);
    let pdf = [PDF, &[b' '; 2048][..]].concat();
    // The PDF in `pieces` pieces, `pause` apart.
    let slow_pdf = |pieces: usize| {
        api.upload(
            &ada.token,
            &report,
            &[("content-type", "application/pdf")],
            slowly(&pdf, pieces, pause),
        )
    };
    let res = slow_pdf(4).await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "a 2 s upload under 1 s body and 1.5 s request deadlines"
    );
    // A JSON body as slow is cut at BODY_READ_TIMEOUT_MS: only uploads have the long deadline.
    let stalled = api
        .http
        .post(format!("{}/v1/reports", api.base))
        .bearer_auth(&ada.token)
        .header("content-type", "application/json")
        .body(slowly(
            br#"{"category":"theft","title":"x","description":"y"}"#,
            4,
            pause,
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(stalled.status().as_u16(), 408);
    let too_slow = slow_pdf(9).await;
    assert_eq!(
        too_slow.status().as_u16(),
        408,
        "a 5.6 s upload over a 5 s upload deadline"
    );
    assert_eq!(attachment_rows(&tp).await, 1, "only the upload that finished is stored");
}
