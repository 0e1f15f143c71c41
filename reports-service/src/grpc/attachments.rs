//! Attachments over gRPC: the upload stream (a header, then chunks) and the download stream.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use proto::reports::v1::download_attachment_response::Part as DownloadPart;
use proto::reports::v1::upload_attachment_request::Part as UploadPart;
use proto::reports::v1::{
    Attachment, AttachmentInfo, DownloadAttachmentRequest, DownloadAttachmentResponse, UploadAttachmentRequest,
};
use service_kit::auth::Verifier;
use service_kit::errors::{ErrorCode, status};
use service_kit::grpc::{FIELD_METADATA, invalid_field};
use service_kit::proto_time::some_timestamp;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::service::attachments::{AttachmentRecord, Attachments, DownloadError, Refusal, UploadError, UploadHeader};

/// The download's message stream: `info`, then the bytes.
pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadAttachmentResponse, Status>> + Send + 'static>>;

/// An id from the path: one that is not a uuid names nothing.
fn id(text: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text).map_err(|_| status(ErrorCode::NotFound, "No such resource."))
}

fn info(record: &AttachmentRecord) -> AttachmentInfo {
    AttachmentInfo {
        id: record.id.to_string(),
        content_type: record.content_type.clone(),
        size: record.size.unsigned_abs(),
        sha256: record.sha256.clone(),
        created_at: some_timestamp(record.created_at),
    }
}

/// A refusal about `field`, with the table's `code`.
fn about(code: ErrorCode, field: &'static str, message: String) -> Status {
    let mut s = status(code, message);
    s.metadata_mut()
        .insert(FIELD_METADATA, MetadataValue::from_static(field));
    s
}

fn refused(r: &Refusal) -> Status {
    let message = r.to_string();
    match r {
        Refusal::Empty | Refusal::Malformed { .. } => invalid_field("file", &message),
        Refusal::FileName => invalid_field("file_name", &message),
        Refusal::SizeMismatch => invalid_field("Content-Length", &message),
        Refusal::TooLarge { .. } => about(ErrorCode::PayloadTooLarge, "file", message),
        Refusal::TypeNotAllowed { .. } | Refusal::TypeMismatch { .. } => {
            about(ErrorCode::UnsupportedMediaType, "Content-Type", message)
        }
        Refusal::Polyglot(_) => about(ErrorCode::UnsupportedMediaType, "file", message),
    }
}

fn upload_status(e: UploadError) -> Status {
    match e {
        UploadError::Refused(r) => refused(&r),
        UploadError::NotFound => status(ErrorCode::NotFound, "No such resource."),
        UploadError::IdempotencyKeyReused => status(
            ErrorCode::IdempotencyKeyReused,
            "This Idempotency-Key was used with another file; use a new key for a new upload.",
        ),
        UploadError::RequestInProgress => service_kit::errors::status_retry_after(
            ErrorCode::RequestInProgress,
            "An upload with this Idempotency-Key is still being stored; retry shortly.",
            1,
        ),
        UploadError::TooMany { max } => status(
            ErrorCode::Conflict,
            format!("This report already has {max} attachments, the most it may have."),
        ),
        UploadError::Protocol(what) => invalid_field("body", what),
        UploadError::Interrupted => status(ErrorCode::BadRequest, "The upload broke off."),
        UploadError::Store(e) => e.into_status(),
        UploadError::Unexpected(e) => {
            tracing::error!(error = format!("{e:#}"), "upload failed");
            status(ErrorCode::Internal, "internal error")
        }
    }
}

fn download_status(e: DownloadError) -> Status {
    match e {
        DownloadError::NotFound => status(ErrorCode::NotFound, "No such resource."),
        DownloadError::Store(e) => e.into_status(),
        DownloadError::Unexpected(e) => {
            tracing::error!(error = format!("{e:#}"), "download failed");
            status(ErrorCode::Internal, "internal error")
        }
    }
}

/// `Idempotency-Key`: absent, or 1..=255 visible ASCII characters.
fn idempotency_key(key: String) -> Result<String, Status> {
    let fine = key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if fine {
        Ok(key)
    } else {
        Err(invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

pub async fn upload(
    attachments: &Attachments,
    verifier: &Verifier,
    request: Request<tonic::Streaming<UploadAttachmentRequest>>,
) -> Result<Response<Attachment>, Status> {
    let caller = super::auth::caller(verifier, &request).await?;
    let mut messages = request.into_inner();
    let Some(UploadPart::Header(header)) = messages.message().await?.and_then(|m| m.part) else {
        return Err(invalid_field("header", "the first message must be the upload's header"));
    };
    let header = UploadHeader {
        report_id: id(&header.report_id)?,
        idempotency_key: idempotency_key(header.idempotency_key)?,
        declared_type: header.declared_content_type,
        file_name: header.file_name,
        declared_size: header.declared_size,
    };
    let chunks = messages.map(|m| match m {
        Ok(UploadAttachmentRequest {
            part: Some(UploadPart::Chunk(bytes)),
        }) => Ok(Bytes::from(bytes)),
        Ok(_) => Err(UploadError::Protocol("every message after the header is a chunk")),
        Err(_) => Err(UploadError::Interrupted),
    });
    let record = attachments
        .upload(caller, header, chunks)
        .await
        .map_err(upload_status)?;
    Ok(Response::new(Attachment {
        info: Some(info(&record)),
    }))
}

pub async fn download(
    attachments: &Attachments,
    verifier: &Verifier,
    request: Request<DownloadAttachmentRequest>,
) -> Result<Response<DownloadStream>, Status> {
    let caller = super::auth::caller(verifier, &request).await?;
    let r = request.into_inner();
    let (record, bytes) = attachments
        .download(caller, id(&r.report_id)?, id(&r.attachment_id)?)
        .await
        .map_err(download_status)?;
    let first = DownloadAttachmentResponse {
        part: Some(DownloadPart::Info(info(&record))),
    };
    let chunks = bytes.map(|chunk| match chunk {
        Ok(bytes) => Ok(DownloadAttachmentResponse {
            part: Some(DownloadPart::Chunk(bytes.into())),
        }),
        Err(e) => Err(download_status(e)),
    });
    Ok(Response::new(
        futures_util::stream::once(async move { Ok(first) })
            .chain(chunks)
            .boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use service_kit::errors::ERROR_CODE_METADATA;

    use super::*;

    #[test]
    fn each_refusal_has_its_code_and_names_its_field() {
        let cases = [
            (Refusal::Empty, "VALIDATION_FAILED", "file"),
            (Refusal::TooLarge { limit: 10 }, "PAYLOAD_TOO_LARGE", "file"),
            (Refusal::SizeMismatch, "VALIDATION_FAILED", "Content-Length"),
            (
                Refusal::TypeNotAllowed {
                    allowed: "image/png".into(),
                },
                "UNSUPPORTED_MEDIA_TYPE",
                "Content-Type",
            ),
            (
                Refusal::TypeMismatch {
                    declared: "image/jpeg".into(),
                    sniffed: "image/png",
                },
                "UNSUPPORTED_MEDIA_TYPE",
                "Content-Type",
            ),
            (Refusal::Polyglot("zip"), "UNSUPPORTED_MEDIA_TYPE", "file"),
            (
                Refusal::Malformed {
                    kind: "PNG",
                    why: "bad signature",
                },
                "VALIDATION_FAILED",
                "file",
            ),
            (Refusal::FileName, "VALIDATION_FAILED", "file_name"),
        ];
        for (refusal, code, field) in cases {
            let s = upload_status(UploadError::Refused(refusal.clone()));
            let meta = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
            assert_eq!(meta(ERROR_CODE_METADATA).as_deref(), Some(code), "{refusal:?}");
            assert_eq!(meta(FIELD_METADATA).as_deref(), Some(field), "{refusal:?}");
        }
        let s = upload_status(UploadError::TooMany { max: 10 });
        assert_eq!(s.code(), tonic::Code::AlreadyExists, "409 CONFLICT");
        assert_eq!(upload_status(UploadError::NotFound).code(), tonic::Code::NotFound);
    }
}
