//! Request bodies that are files: a raw body with its `Content-Type`, or the first file part of a
//! `multipart/form-data` body, streamed in chunks with the size limit applied as they arrive.
//! Nothing here holds a whole file: each chunk goes on as it comes, and the service's pace
//! (a bounded channel into the gRPC stream) decides how fast the body is read.

use actix_web::HttpRequest;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, ContentDisposition};
use bytes::Bytes;
use futures_util::stream::{LocalBoxStream, StreamExt as _};
use service_kit::errors::ErrorCode;

use crate::error::ApiError;

/// `MAX_FILE_SIZE` of reports-service by default: refused here already, before a byte moves on.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// Whether `path` takes a file body (the edge's JSON body limit does not apply to it).
pub fn is_upload_path(method: &actix_web::http::Method, path: &str) -> bool {
    method == actix_web::http::Method::POST
        && path
            .strip_prefix("/v1/reports/")
            .and_then(|rest| rest.strip_suffix("/attachments"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// One file on its way in.
pub struct Upload {
    /// The client's type for the file (the part's or the body's `Content-Type`, no parameters).
    pub declared_type: String,
    /// The file name the client gave (checked by the service: no path), or "".
    pub file_name: String,
    /// The body's `Content-Length` for a raw body, else 0 (a multipart body's length is not the
    /// file's).
    pub declared_size: u64,
    /// The file's bytes, at most `limit` of them: past it the stream ends with 413.
    pub bytes: LocalBoxStream<'static, Result<Bytes, ApiError>>,
}

pub fn too_large(limit: u64) -> ApiError {
    let mut e = ApiError::coded(
        ErrorCode::PayloadTooLarge,
        format!("The file is larger than the {limit} bytes an attachment may have."),
    );
    e.details.push(crate::error::FieldIssue {
        field: "file".to_owned(),
        issue: format!("must be at most {limit} bytes"),
    });
    e
}

fn payload_error(e: &PayloadError) -> ApiError {
    if crate::body::is_read_timeout(e) {
        return ApiError::body_timeout();
    }
    match e {
        PayloadError::Incomplete(_) => ApiError::validation(
            "Content-Length",
            "does not match the body: it ended before the declared length",
        ),
        PayloadError::Overflow => too_large(DEFAULT_MAX_FILE_SIZE),
        _ => ApiError::coded(ErrorCode::BadRequest, "The request body could not be read."),
    }
}

fn multipart_error(e: &actix_multipart::MultipartError) -> ApiError {
    match e {
        actix_multipart::MultipartError::Payload(p) => payload_error(p),
        _ => ApiError::validation("body", "is not well-formed multipart/form-data"),
    }
}

/// `Content-Type` without its parameters, lower-cased.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Stops `bytes` with 413 once more than `limit` bytes went through.
fn limited(
    bytes: LocalBoxStream<'static, Result<Bytes, ApiError>>,
    limit: u64,
) -> LocalBoxStream<'static, Result<Bytes, ApiError>> {
    futures_util::stream::unfold(Some((bytes, 0u64)), move |state| async move {
        let (mut bytes, seen) = state?;
        match bytes.next().await? {
            Ok(chunk) => {
                let seen = seen + chunk.len() as u64;
                if seen > limit {
                    return Some((Err(too_large(limit)), None));
                }
                Some((Ok(chunk), Some((bytes, seen))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed_local()
}

/// The file of this request: the first part with a file name of a multipart body, or the body.
pub async fn from_request(req: &HttpRequest, payload: actix_web::web::Payload, limit: u64) -> Result<Upload, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::coded(
                ErrorCode::UnsupportedMediaType,
                "Send the file's Content-Type (image/jpeg, image/png, image/gif or application/pdf), or multipart/form-data.",
            )
        })?;
    if media_type(&content_type) == "multipart/form-data" {
        return multipart(req, payload, limit).await;
    }
    let declared_size = match req.headers().get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::validation("Content-Length", "must be a number of bytes"))?,
    };
    if declared_size > limit {
        return Err(too_large(limit));
    }
    // A raw body may name its file in `Content-Disposition` (as a download would).
    let file_name = req
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| ContentDisposition::from_raw(v).ok())
        .and_then(|cd| cd.get_filename().map(str::to_owned))
        .unwrap_or_default();
    let bytes = payload.map(|chunk| chunk.map_err(|e| payload_error(&e))).boxed_local();
    Ok(Upload {
        declared_type: media_type(&content_type),
        file_name,
        declared_size,
        bytes: limited(bytes, limit),
    })
}

async fn multipart(req: &HttpRequest, payload: actix_web::web::Payload, limit: u64) -> Result<Upload, ApiError> {
    // Fused: the multipart reader polls its source again after the end, which the edge's
    // deadline wrapper (an unfold) does not allow.
    let mut parts = actix_multipart::Multipart::new(req.headers(), payload.fuse());
    while let Some(part) = parts.next().await {
        let mut part = part.map_err(|e| multipart_error(&e))?;
        let file_name = part
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_owned);
        let Some(file_name) = file_name else {
            // A form field, not a file: read past it (bounded: at most the limit in all).
            let mut skipped = 0u64;
            while let Some(chunk) = part.next().await {
                skipped += chunk.map_err(|e| multipart_error(&e))?.len() as u64;
                if skipped > limit {
                    return Err(too_large(limit));
                }
            }
            continue;
        };
        let declared_type = part
            .content_type()
            .map(|m| m.essence_str().to_owned())
            .unwrap_or_default();
        // The rest of the body (later parts) is left unread: only the first file counts. The
        // parts reader stays alive with the part, whose bytes come through it.
        let bytes = futures_util::stream::unfold(Some((parts, part)), |state| async move {
            let (parts, mut part) = state?;
            match part.next().await? {
                Ok(chunk) => Some((Ok(chunk), Some((parts, part)))),
                Err(e) => Some((Err(multipart_error(&e)), None)),
            }
        })
        .boxed_local();
        return Ok(Upload {
            declared_type,
            file_name,
            declared_size: 0,
            bytes: limited(bytes, limit),
        });
    }
    Err(ApiError::validation(
        "file",
        "a multipart body must have a part with a file name",
    ))
}

#[cfg(test)]
mod tests {
    use actix_web::FromRequest as _;
    use actix_web::test::TestRequest;

    use super::*;

    async fn read(request: TestRequest, limit: u64) -> Result<(Upload, Vec<u8>), ApiError> {
        let (req, payload) = request.to_http_parts();
        // As the edge hands it on: behind the body's deadline.
        let mut payload = crate::body::with_read_deadline(payload, std::time::Duration::from_secs(5));
        let payload = actix_web::web::Payload::from_request(&req, &mut payload)
            .await
            .expect("payload");
        let mut upload = from_request(&req, payload, limit).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = upload.bytes.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok((upload, bytes))
    }

    #[test]
    fn only_the_attachments_collection_is_an_upload() {
        let post = actix_web::http::Method::POST;
        assert!(is_upload_path(&post, "/v1/reports/abc/attachments"));
        assert!(!is_upload_path(
            &actix_web::http::Method::GET,
            "/v1/reports/abc/attachments"
        ));
        for path in [
            "/v1/reports",
            "/v1/reports//attachments",
            "/v1/reports/a/b/attachments",
            "/v1/reports/a/attachments/x",
        ] {
            assert!(!is_upload_path(&post, path), "{path}");
        }
    }

    #[actix_web::test]
    async fn a_raw_body_is_the_file_with_its_type_and_length() {
        let request = TestRequest::post()
            .insert_header(("content-type", "image/PNG; charset=binary"))
            .insert_header(("content-disposition", "attachment; filename=\"photo.png\""))
            .set_payload(&b"\x89PNG bytes"[..]);
        let (upload, bytes) = read(request, 100).await.expect("read");
        assert_eq!(upload.declared_type, "image/png");
        assert_eq!(upload.file_name, "photo.png");
        assert_eq!(upload.declared_size, 10);
        assert_eq!(bytes, b"\x89PNG bytes");
    }

    #[actix_web::test]
    async fn a_body_over_the_limit_is_413_naming_the_file() {
        let request = TestRequest::post()
            .insert_header(("content-type", "image/png"))
            .set_payload(vec![0u8; 101]);
        let e = read(request, 100).await.err().expect("refused");
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        assert_eq!(e.details[0].field, "file");
        let e = read(TestRequest::post().set_payload(&b"x"[..]), 100)
            .await
            .err()
            .expect("no type");
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
    }

    #[actix_web::test]
    async fn the_first_file_part_of_a_multipart_body_is_the_file() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../x.gif\"\r\n\
                    Content-Type: image/gif\r\n\r\nGIF89a...\r\n--XyZ--\r\n";
        let request = TestRequest::post()
            .insert_header(("content-type", "multipart/form-data; boundary=XyZ"))
            .set_payload(body);
        let (upload, bytes) = read(request, 100).await.expect("read");
        assert_eq!(upload.declared_type, "image/gif");
        assert_eq!(
            upload.file_name, "../x.gif",
            "passed on as sent: the service refuses it"
        );
        assert_eq!(upload.declared_size, 0);
        assert_eq!(bytes, b"GIF89a...");
        let no_file = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ--\r\n";
        let request = TestRequest::post()
            .insert_header(("content-type", "multipart/form-data; boundary=XyZ"))
            .set_payload(no_file);
        let e = read(request, 100).await.err().expect("no file");
        assert_eq!(e.details[0].field, "file");
    }
}
