//! `POST /v1/reports/{id}/attachments` (a file, streamed to reports-service) and
//! `GET /v1/reports/{id}/attachments/{attachment_id}` (its bytes, streamed back).

use std::cell::RefCell;
use std::pin::pin;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::Either;
use proto::reports::v1::download_attachment_response::Part as DownloadPart;
use proto::reports::v1::upload_attachment_request::Part as UploadPart;
use proto::reports::v1::{AttachmentInfo, DownloadAttachmentRequest, UploadAttachmentHeader, UploadAttachmentRequest};
use serde::Serialize;

use super::call::{Call, ReportsCall};
use crate::auth::Authenticated;
use crate::error::{ApiError, FieldIssue};
use crate::state::AppState;
use crate::upload::{self, Upload};
use proto::reports::v1::reports_service_client::ReportsServiceClient;

/// Messages in flight between the HTTP body and the gRPC stream: the body is read only as fast as
/// reports-service takes it. With [`MESSAGE_BYTES`], what one upload holds here stays small (the
/// bench's 20 concurrent 10 MiB uploads: 4 × 128 KiB messages grew the gateway by 2-3.5 MiB per
/// upload; 1 × 32 KiB by about 1.5).
const IN_FLIGHT: usize = 1;
/// The most file bytes in one gRPC message: actix hands the body over in chunks of up to 128 KiB.
const MESSAGE_BYTES: usize = 32 * 1024;

/// How far the body got before the service answered.
enum Step<A> {
    /// The service answered while the body was still coming (a refusal).
    Answered(A),
    /// The whole body went into the stream.
    Sent,
    /// The body failed (too large, cut off, too slow).
    Failed(ApiError),
}

/// A file's bytes, as they are.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documents the bodies; the handlers stream them
pub struct FileBytes(Vec<u8>);

/// A multipart upload: the part `file`, with a file name and its own `Content-Type` (image/jpeg,
/// image/png, image/gif or application/pdf). The server takes the first part that has a file
/// name and reads past plain fields before it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the request body; the handler streams the parts
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A stored file.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttachmentBody {
    pub id: String,
    /// image/jpeg | image/png | image/gif | application/pdf, as judged from the bytes.
    pub content_type: String,
    /// Bytes as stored: images lose their metadata (EXIF, XMP, comments), so this can be less
    /// than what was sent.
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored bytes (what a download returns).
    pub sha256: String,
}

impl From<AttachmentInfo> for AttachmentBody {
    fn from(a: AttachmentInfo) -> Self {
        Self {
            id: a.id,
            content_type: a.content_type,
            size: a.size,
            sha256: a.sha256,
        }
    }
}

/// `Idempotency-Key` as sent (checked by the service), or "".
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(String::new()),
        Some(v) => v
            .to_str()
            .map(str::to_owned)
            .map_err(|_| ApiError::validation("Idempotency-Key", "must be 1 to 255 visible ASCII characters")),
    }
}

/// A refusal from the service, with the field it names in `details` whatever the code (413 and
/// 415 name the field too).
fn with_field(e: ApiError, field: Option<String>, message: &str) -> ApiError {
    match field {
        Some(field) if e.details.is_empty() && e.code != service_kit::errors::ErrorCode::Internal => ApiError {
            details: vec![FieldIssue {
                field,
                issue: message.to_owned(),
            }],
            ..e
        },
        _ => e,
    }
}

/// Adds a file to one of the caller's own reports. The body is the file itself with its
/// `Content-Type`, or `multipart/form-data` whose first part with a file name is the file. The
/// type is judged from the content (jpeg, png, gif, pdf) and must match the declared one (a part
/// without its own type, or `application/octet-stream`, declares none: the content decides);
/// images are stored without their metadata (EXIF and GPS, XMP, IPTC, comments), pixels
/// untouched; a PDF is stored as it is, with its document properties (an author's name among
/// them: apps should say so before an anonymous reporter attaches one); everything is encrypted
/// at rest. `Idempotency-Key` makes a retry safe: the same key
/// with the same file answers the first upload and stores nothing new; with another file it is
/// 422 `IDEMPOTENCY_KEY_REUSED`, and while the first is being stored 409 `REQUEST_IN_PROGRESS`.
#[utoipa::path(post, path = "/v1/reports/{id}/attachments", tag = "reports", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The report's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1..255 visible ASCII characters: a retry with the same key answers the first response"),
    ),
    request_body(description = "The file (at most MAX_FILE_SIZE, 10 MiB by default)", content(
        (FileBytes = "image/jpeg"), (FileBytes = "image/png"), (FileBytes = "image/gif"), (FileBytes = "application/pdf"),
        (UploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Stored", body = AttachmentBody),
        (status = 400, description = "VALIDATION_FAILED naming `file` (empty, or not a well-formed file of its type), `file_name` (a path in the file name), `Content-Length` (not the body's length) or `Idempotency-Key`", body = crate::error::ErrorBody),
        (status = 404, description = "No such report of yours", body = crate::error::ErrorBody),
        (status = 409, description = "CONFLICT: the report has MAX_ATTACHMENTS_PER_REPORT (10) files already; REQUEST_IN_PROGRESS: an upload under the same Idempotency-Key is being stored (with Retry-After)", body = crate::error::ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the Idempotency-Key came with another file", body = crate::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE naming `file`: over MAX_FILE_SIZE; nothing is stored", body = crate::error::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE naming `Content-Type` (not an allowed type, or not what the content is) or `file` (also another kind of file, such as a PDF that is a ZIP, or data after an image's end)", body = crate::error::ErrorBody),
    ))]
pub async fn upload(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    // Uploads take minutes on a slow network: their own channel, with UPLOAD_TIMEOUT_MS.
    let channel = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.upstreams.reports_uploads.clone())
        .ok_or_else(ApiError::internal)?;
    let reports_service = Call::new("reports", ReportsServiceClient::new(channel), req.clone());
    let report_id = path.into_inner();
    let key = idempotency_key(&req)?;
    let Upload {
        declared_type,
        file_name,
        declared_size,
        mut bytes,
    } = upload::from_request(&req, payload, upload::DEFAULT_MAX_FILE_SIZE).await?;
    let header = UploadAttachmentRequest {
        part: Some(UploadPart::Header(UploadAttachmentHeader {
            report_id: report_id.clone(),
            idempotency_key: key,
            declared_content_type: declared_type,
            file_name,
            declared_size,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadAttachmentRequest>(IN_FLIGHT);
    let messages = futures_util::stream::once(async move { header })
        .chain(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        }));
    // The field a refusal names (for 413 and 415 too, which the one mapping leaves without details).
    let field: RefCell<Option<String>> = RefCell::new(None);
    let mut call = pin!(reports_service.by(&caller).send(messages, async |c, m| {
        let answer = c.upload_attachment(m).await;
        if let Err(status) = &answer {
            *field.borrow_mut() = status
                .metadata()
                .get(service_kit::grpc::FIELD_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        answer
    }));
    // Read the body into the stream until it ends, fails, or the service answers first (a
    // refusal after the first bytes: then the rest is not worth reading).
    let step = {
        let pump = pin!(async {
            'body: while let Some(chunk) = bytes.next().await {
                for piece in chunk?.chunks(MESSAGE_BYTES) {
                    let message = UploadAttachmentRequest {
                        part: Some(UploadPart::Chunk(piece.to_vec())),
                    };
                    if tx.send(message).await.is_err() {
                        break 'body; // the call ended: its answer says why
                    }
                }
            }
            Ok::<(), ApiError>(())
        });
        match futures_util::future::select(call.as_mut(), pump).await {
            Either::Left((answered, _)) => Step::Answered(answered),
            Either::Right((Ok(()), _)) => Step::Sent,
            Either::Right((Err(e), _)) => Step::Failed(e),
        }
    };
    let answer = match step {
        Step::Answered(answered) => answered,
        Step::Sent => {
            drop(tx);
            call.await
        }
        Step::Failed(e) => {
            // Tell the service the upload is void (a second header is refused, and what it
            // wrote is thrown away), wait for it to say so, then answer the body's error.
            let poison = UploadAttachmentRequest {
                part: Some(UploadPart::Header(UploadAttachmentHeader::default())),
            };
            let void = async {
                let _ = tx.send(poison).await;
            };
            let _ = futures_util::future::join(call.as_mut(), void).await;
            return Err(e);
        }
    };
    let info = answer
        .map_err(|e| {
            let message = e.message.clone();
            with_field(e, field.borrow_mut().take(), &message)
        })?
        .info
        .ok_or_else(ApiError::internal)?;
    let location = format!("/v1/reports/{report_id}/attachments/{}", info.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(AttachmentBody::from(info)))
}

/// The bytes of a file of one of the caller's reports (a moderator's: of any report), streamed
/// and decrypted, with `Content-Disposition: attachment` so that no browser renders it in place.
#[utoipa::path(get, path = "/v1/reports/{id}/attachments/{attachment_id}", tag = "reports", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The report's id"),
        ("attachment_id" = String, Path, description = "The attachment's id"),
    ),
    responses(
        (status = 200, description = "The file's bytes with its Content-Type, Content-Length, \
            Content-Disposition: attachment and X-Content-Type-Options: nosniff",
            content((FileBytes = "image/jpeg"), (FileBytes = "image/png"), (FileBytes = "image/gif"), (FileBytes = "application/pdf"))),
        (status = 404, description = "No such attachment on a report of yours", body = crate::error::ErrorBody),
    ))]
pub async fn download(
    path: web::Path<(String, String)>,
    caller: Authenticated,
    reports_service: ReportsCall,
) -> Result<HttpResponse, ApiError> {
    let (report_id, attachment_id) = path.into_inner();
    let message = DownloadAttachmentRequest {
        report_id,
        attachment_id,
    };
    let mut parts = reports_service
        .by(&caller)
        .send(message, async |c, m| c.download_attachment(m).await)
        .await?;
    let info = match parts.message().await {
        Ok(Some(proto::reports::v1::DownloadAttachmentResponse {
            part: Some(DownloadPart::Info(info)),
        })) => info,
        Ok(_) => return Err(ApiError::internal()),
        Err(status) => return Err(ApiError::from_status("reports", &status)),
    };
    let extension = match info.content_type.as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        _ => "pdf",
    };
    // A failure after the first byte cannot change the status any more: the stream ends with an
    // error and the connection is cut, so the client sees a body shorter than Content-Length.
    let bytes = futures_util::stream::unfold(Some(parts), |parts| async move {
        let mut parts = parts?;
        match parts.message().await {
            Ok(Some(proto::reports::v1::DownloadAttachmentResponse {
                part: Some(DownloadPart::Chunk(chunk)),
            })) => Some((Ok(Bytes::from(chunk)), Some(parts))),
            Ok(None) => None,
            Ok(Some(_)) => Some((Err(std::io::Error::other("unexpected message in a download")), None)),
            Err(status) => {
                tracing::warn!(grpc_code = ?status.code(), "download broke off");
                Some((Err(std::io::Error::other("download broke off")), None))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, info.content_type.clone()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.{extension}\"", info.id),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .body(actix_web::body::SizedStream::new(info.size, bytes)))
}
