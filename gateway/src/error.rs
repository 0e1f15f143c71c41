//! The API's one error shape, and the one table that maps gRPC status codes to HTTP.
//!
//! `{"success": false, "error": {"code", "message", "request_id", "details"?}}` for every failure
//! of every layer. Messages are fixed sentences chosen here; nothing from an upstream error, a
//! database, or a panic reaches the client.

use std::cell::RefCell;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use service_kit::errors::ErrorCode;

tokio::task_local! {
    /// The current request's id, set by the edge middleware for the whole request.
    pub static REQUEST_ID: RefCell<String>;
}

/// The request id of the request being served, or "" outside one.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.borrow().clone()).unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldIssue {
    pub field: String,
    pub issue: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code of `service_kit::errors`, which also gives the HTTP status.
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<FieldIssue>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u32>,
    /// Set when the error leaves the edge without a response (panic, timeout): actix renders it
    /// outside the request's scope.
    pub request_id: Option<String>,
}

/// The body of every error response (for the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// SCREAMING_SNAKE error code, stable for clients to branch on.
    pub code: String,
    /// A human sentence; not for parsing.
    pub message: String,
    /// The `X-Request-Id` of the failed request, to quote to support.
    pub request_id: String,
    /// Present only when specific fields are at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldIssue>>,
}

impl ApiError {
    /// An error of the platform's table (`service_kit::errors`), with a message for the client.
    pub fn coded(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            request_id: None,
        }
    }

    pub fn with_request_id(self, request_id: String) -> Self {
        Self {
            request_id: Some(request_id),
            ..self
        }
    }

    /// The HTTP status of the error's code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn not_found() -> Self {
        Self::coded(ErrorCode::NotFound, "No such resource.")
    }

    pub fn method_not_allowed() -> Self {
        Self::coded(
            ErrorCode::MethodNotAllowed,
            "This method is not allowed on this resource.",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::coded(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than the {limit} bytes this route accepts."),
        )
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::coded(ErrorCode::MalformedJson, message)
    }

    pub fn validation(field: &str, issue: &str) -> Self {
        Self {
            details: vec![FieldIssue {
                field: field.to_owned(),
                issue: issue.to_owned(),
            }],
            ..Self::coded(ErrorCode::ValidationFailed, format!("{field} {issue}"))
        }
    }

    pub fn unavailable(what: &str) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::coded(
                ErrorCode::Unavailable,
                format!("The {what} is temporarily unavailable; retry shortly."),
            )
        }
    }

    pub fn timeout() -> Self {
        Self {
            retry_after: Some(5),
            ..Self::coded(ErrorCode::Unavailable, "The request took too long; retry shortly.")
        }
    }

    /// The client did not send its body within `BODY_READ_TIMEOUT_MS` (the connection is closed).
    pub fn body_timeout() -> Self {
        Self::coded(ErrorCode::RequestTimeout, "The request body did not arrive in time.")
    }

    pub fn internal() -> Self {
        Self::coded(ErrorCode::Internal, "Something went wrong on our side.")
    }

    /// Maps a service's answer to the API. `service` names the upstream in messages and logs.
    /// This is the one place where gRPC codes become HTTP statuses.
    pub fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        use tonic::Code;
        // No answer from the service at all (connection refused, lost mid-call, deadline): the
        // call may or may not have happened there, and a retry is the client's way out. Never
        // 500: tonic reports a connection dropped under a call as `Unknown` "transport error" or
        // as an h2 reset (`Internal`, `Cancelled`).
        if let Some(cause) = transport_failure(status) {
            tracing::warn!(upstream = service, cause, grpc_code = ?status.code(), grpc_message = status.message(), "upstream unavailable");
            return Self::unavailable(&format!("{service} service"));
        }
        // A service that names its error code has chosen a message fit for the client.
        let coded = status
            .metadata()
            .get(service_kit::errors::ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse);
        if let Some(code) = coded {
            use ErrorCode as E;
            match code {
                E::ValidationFailed => {}
                E::Unavailable => {
                    // The same line whether the service said so itself (its database is down) or
                    // could not be reached: an operator greps one message for an upstream outage.
                    tracing::warn!(upstream = service, grpc_code = ?status.code(), grpc_message = status.message(), "upstream unavailable");
                    return Self::unavailable(&format!("{service} service"));
                }
                E::Internal => {
                    tracing::error!(upstream = service, grpc_message = status.message(), "upstream failed");
                    return Self::internal();
                }
                _ => {
                    let retry_after = status
                        .metadata()
                        .get(service_kit::errors::RETRY_AFTER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u32>().ok());
                    return Self {
                        retry_after,
                        ..Self::coded(code, status.message())
                    };
                }
            }
        }
        match status.code() {
            Code::InvalidArgument => {
                let field = status
                    .metadata()
                    .get(service_kit::grpc::FIELD_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("request");
                Self::validation(field, status.message())
            }
            Code::NotFound => Self::not_found(),
            Code::AlreadyExists | Code::Aborted => {
                Self::coded(ErrorCode::Conflict, "The resource changed or already exists.")
            }
            Code::Unauthenticated => Self::coded(ErrorCode::Unauthenticated, "Authentication is required."),
            Code::PermissionDenied => Self::coded(ErrorCode::Forbidden, "You may not do this."),
            Code::ResourceExhausted => Self {
                retry_after: Some(60),
                ..Self::coded(ErrorCode::RateLimitExceeded, "Too many requests; slow down.")
            },
            Code::FailedPrecondition => {
                Self::coded(ErrorCode::Conflict, "The resource is not in a state that allows this.")
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(upstream = service, grpc_code = ?status.code(), grpc_message = status.message(), "upstream unavailable");
                Self::unavailable(&format!("{service} service"))
            }
            other => {
                tracing::error!(upstream = service, grpc_code = ?other, grpc_message = status.message(), "upstream failed");
                Self::internal()
            }
        }
    }
}

/// Why a call got no answer, when the status was made on our side of the connection rather than
/// sent by the service: tonic then keeps the transport's error as the status's source (a status
/// the service sent is decoded from its trailers and has none). `None` for the service's answers.
pub fn transport_failure(status: &tonic::Status) -> Option<&'static str> {
    use std::error::Error as _;
    use tonic::Code;
    status.source()?;
    Some(match status.code() {
        Code::Unavailable => "unreachable",
        Code::DeadlineExceeded => "deadline",
        Code::Cancelled if status.message().contains("Timeout expired") => "deadline",
        _ => "connection_lost",
    })
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.http_status(), self.code.as_str())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                request_id: self.request_id.clone().unwrap_or_else(current_request_id),
                details: (!self.details.is_empty()).then(|| self.details.clone()),
            },
        };
        let mut response = HttpResponse::build(self.status());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        ));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        let mut response = response.body(serde_json::to_vec(&body).unwrap_or_default());
        if let Some(id) = &self.request_id {
            crate::edge::harden(response.headers_mut(), id);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_the_contract() {
        let cases = [
            (
                tonic::Status::unavailable("connection refused"),
                503,
                ErrorCode::Unavailable,
            ),
            (tonic::Status::deadline_exceeded("slow"), 503, ErrorCode::Unavailable),
            (tonic::Status::cancelled("Timeout expired"), 503, ErrorCode::Unavailable),
            (tonic::Status::not_found("row 7"), 404, ErrorCode::NotFound),
            (tonic::Status::permission_denied("x"), 403, ErrorCode::Forbidden),
            (tonic::Status::unauthenticated("x"), 401, ErrorCode::Unauthenticated),
            (
                tonic::Status::internal("SELECT secret FROM db at 10.0.0.5"),
                500,
                ErrorCode::Internal,
            ),
        ];
        for (status, http, code) in cases {
            let e = ApiError::from_status("reports", &status);
            assert_eq!((e.status().as_u16(), e.code), (http, code), "{status:?}");
            assert!(
                !e.message.contains("10.0.0.5") && !e.message.contains("row 7"),
                "upstream detail leaked: {}",
                e.message
            );
        }
    }

    /// A status tonic made on the client's side, with the transport's error as its source: a
    /// foreign error gives `Unknown` (its "transport error"), an h2 reset or a hyper cancellation
    /// found in the chain gives its own code.
    fn local(code: tonic::Code, message: &str) -> tonic::Status {
        if code == tonic::Code::Unknown {
            return tonic::Status::from_error(Box::new(std::io::Error::other(message.to_owned())));
        }
        tonic::Status::from_error(Box::new(Wrapped(tonic::Status::new(code, message))))
    }

    #[derive(Debug)]
    struct Wrapped(tonic::Status);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connection_lost_mid_call_is_unavailable_not_internal() {
        for (code, cause) in [
            (tonic::Code::Unknown, "connection_lost"),
            (tonic::Code::Internal, "connection_lost"),
            (tonic::Code::Cancelled, "connection_lost"),
            (tonic::Code::Unavailable, "unreachable"),
        ] {
            let status = local(code, "h2 protocol error: broken pipe");
            assert_eq!(status.code(), code);
            assert_eq!(transport_failure(&status), Some(cause), "{status:?}");
            let e = ApiError::from_status("auth", &status);
            assert_eq!(
                (e.status().as_u16(), e.code),
                (503, ErrorCode::Unavailable),
                "{status:?}"
            );
            assert_eq!(e.retry_after, Some(5));
        }
        // The same codes sent by the service itself keep their meaning.
        for (status, http) in [
            (tonic::Status::unknown("transport error"), 500),
            (tonic::Status::internal("boom"), 500),
        ] {
            assert_eq!(transport_failure(&status), None);
            assert_eq!(ApiError::from_status("auth", &status).status().as_u16(), http);
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = service_kit::grpc::invalid_field("radius_m", "radius_m must be between 1 and 5000");
        let e = ApiError::from_status("reports", &status);
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert_eq!(
            e.details,
            vec![FieldIssue {
                field: "radius_m".into(),
                issue: "radius_m must be between 1 and 5000".into()
            }]
        );
    }

    #[test]
    fn idempotency_refusals_keep_their_codes_and_statuses() {
        let reused = service_kit::errors::status(ErrorCode::IdempotencyKeyReused, "Use a new key.");
        let e = ApiError::from_status("reports", &reused);
        assert_eq!((e.status().as_u16(), e.code), (422, ErrorCode::IdempotencyKeyReused));
        let running = service_kit::errors::status_retry_after(ErrorCode::RequestInProgress, "Still running.", 1);
        let e = ApiError::from_status("reports", &running);
        assert_eq!((e.status().as_u16(), e.code), (409, ErrorCode::RequestInProgress));
        assert_eq!(e.retry_after, Some(1));
    }
}
