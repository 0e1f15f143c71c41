//! The one table of error codes the platform shows its clients: each code has its gRPC status
//! code (service side) and its HTTP status (gateway side), kept here so the two never disagree.
//! A service attaches the code as `x-error-code` metadata; the gateway renders it as is. The
//! gateway's own codes (a body that is not JSON, a method the route lacks, ...) are in the same
//! table, so every code a client can see is listed here once.

use tonic::metadata::MetadataValue;

pub const ERROR_CODE_METADATA: &str = "x-error-code";
pub const RETRY_AFTER_METADATA: &str = "x-retry-after";

/// Declares `ErrorCode` and its table from one list, so a variant cannot exist without its row
/// (name, gRPC code, HTTP status) nor be missing from `ALL`.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($name:literal, $grpc:ident, $http:literal),)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for parsing and for the round-trip test.
            pub const ALL: &[ErrorCode] = &[$(Self::$variant,)*];

            /// The table: the code's name, its gRPC status code and its HTTP status.
            fn row(self) -> (&'static str, tonic::Code, u16) {
                match self {
                    $(Self::$variant => ($name, tonic::Code::$grpc, $http),)*
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed => ("VALIDATION_FAILED", InvalidArgument, 400),
    Unauthenticated => ("UNAUTHENTICATED", Unauthenticated, 401),
    TokenExpired => ("TOKEN_EXPIRED", Unauthenticated, 401),
    TokenRevoked => ("TOKEN_REVOKED", Unauthenticated, 401),
    TokenReused => ("TOKEN_REUSED", Unauthenticated, 401),
    InvalidCredentials => ("INVALID_CREDENTIALS", Unauthenticated, 401),
    MfaRequired => ("MFA_REQUIRED", Unauthenticated, 401),
    CaptchaRequired => ("CAPTCHA_REQUIRED", FailedPrecondition, 400),
    CaptchaFailed => ("CAPTCHA_FAILED", FailedPrecondition, 400),
    Forbidden => ("FORBIDDEN", PermissionDenied, 403),
    NotFound => ("NOT_FOUND", NotFound, 404),
    Conflict => ("CONFLICT", AlreadyExists, 409),
    /// An `Idempotency-Key` used before with another request (API.md, "Conventions").
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", FailedPrecondition, 422),
    /// The first request under this `Idempotency-Key` is still running: retry shortly.
    RequestInProgress => ("REQUEST_IN_PROGRESS", Aborted, 409),
    AccountLocked => ("ACCOUNT_LOCKED", FailedPrecondition, 423),
    RateLimitExceeded => ("RATE_LIMIT_EXCEEDED", ResourceExhausted, 429),
    Unavailable => ("UNAVAILABLE", Unavailable, 503),
    Internal => ("INTERNAL", Internal, 500),
    // Answered by the gateway itself, before or around a service call.
    /// The body is not JSON.
    MalformedJson => ("MALFORMED_JSON", InvalidArgument, 400),
    /// Not HTTP, or a request no other code describes.
    BadRequest => ("BAD_REQUEST", InvalidArgument, 400),
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", OutOfRange, 413),
    UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", InvalidArgument, 415),
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", Unimplemented, 405),
    /// The request (headers or body) did not arrive in time.
    RequestTimeout => ("REQUEST_TIMEOUT", DeadlineExceeded, 408),
    HeadersTooLarge => ("HEADERS_TOO_LARGE", OutOfRange, 431),
    /// A maintenance window is in force (with `Retry-After` and the window's message).
    Maintenance => ("MAINTENANCE", Unavailable, 503),
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    pub fn grpc_code(self) -> tonic::Code {
        self.row().1
    }

    pub fn http_status(self) -> u16 {
        self.row().2
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl From<crate::auth::TokenError> for ErrorCode {
    fn from(e: crate::auth::TokenError) -> Self {
        use crate::auth::TokenError as T;
        match e {
            T::Missing | T::Invalid => Self::Unauthenticated,
            T::Expired => Self::TokenExpired,
            T::Revoked => Self::TokenRevoked,
            T::KeysUnavailable => Self::Unavailable,
        }
    }
}

/// A status carrying `code`; `message` must be fit for the client.
pub fn status(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::new(code.grpc_code(), message.into());
    status
        .metadata_mut()
        .insert(ERROR_CODE_METADATA, MetadataValue::from_static(code.as_str()));
    status
}

/// The same, with a `Retry-After` in seconds.
pub fn status_retry_after(code: ErrorCode, message: impl Into<String>, seconds: u64) -> tonic::Status {
    let mut status = status(code, message);
    if let Ok(v) = MetadataValue::try_from(seconds.to_string()) {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, v);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_the_table() {
        let mut names = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(names.insert(name), "{name} is in the table twice");
            assert_eq!(ErrorCode::parse(name), Some(code));
            assert_eq!(
                status(code, "x").code(),
                code.grpc_code(),
                "{name}: the status carries the table's gRPC code"
            );
            let http = code.http_status();
            assert!((400..600).contains(&http), "{name}: {http} is not an error status");
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
        let s = status_retry_after(ErrorCode::AccountLocked, "locked", 900);
        assert_eq!(
            s.metadata().get(ERROR_CODE_METADATA).and_then(|v| v.to_str().ok()),
            Some("ACCOUNT_LOCKED")
        );
        assert_eq!(
            s.metadata().get(RETRY_AFTER_METADATA).and_then(|v| v.to_str().ok()),
            Some("900")
        );
    }
}
