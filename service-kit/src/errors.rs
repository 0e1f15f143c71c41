//! The one table of error codes the platform shows its clients: each code has its gRPC status
//! code (service side) and its HTTP status (gateway side), kept here so the two never disagree.
//! A service attaches the code as `x-error-code` metadata; the gateway renders it as is. The
//! gateway's own codes (a body that is not JSON, a method the route lacks, ...) are in the same
//! table, so every code a client can see is listed here once.

use tonic::metadata::MetadataValue;

pub const ERROR_CODE_METADATA: &str = "x-error-code";
pub const RETRY_AFTER_METADATA: &str = "x-retry-after";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ValidationFailed,
    Unauthenticated,
    TokenExpired,
    TokenRevoked,
    TokenReused,
    InvalidCredentials,
    MfaRequired,
    CaptchaRequired,
    CaptchaFailed,
    Forbidden,
    NotFound,
    Conflict,
    AccountLocked,
    RateLimitExceeded,
    Unavailable,
    Internal,
    // Answered by the gateway itself, before or around a service call.
    /// The body is not JSON.
    MalformedJson,
    /// Not HTTP, or a request no other code describes.
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    /// The request (headers or body) did not arrive in time.
    RequestTimeout,
    HeadersTooLarge,
    /// A feature switched off by configuration.
    FeatureDisabled,
    /// A scheduled maintenance window.
    Maintenance,
}

impl ErrorCode {
    /// Every code, for parsing and for the round-trip test.
    pub const ALL: [ErrorCode; 25] = [
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::TokenExpired,
        Self::TokenRevoked,
        Self::TokenReused,
        Self::InvalidCredentials,
        Self::MfaRequired,
        Self::CaptchaRequired,
        Self::CaptchaFailed,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::AccountLocked,
        Self::RateLimitExceeded,
        Self::Unavailable,
        Self::Internal,
        Self::MalformedJson,
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::HeadersTooLarge,
        Self::FeatureDisabled,
        Self::Maintenance,
    ];

    /// The table: the code's name, its gRPC status code and its HTTP status. No wildcard arm, so
    /// a new variant does not compile until it has its row.
    fn row(self) -> (&'static str, tonic::Code, u16) {
        use tonic::Code as G;
        match self {
            Self::ValidationFailed => ("VALIDATION_FAILED", G::InvalidArgument, 400),
            Self::Unauthenticated => ("UNAUTHENTICATED", G::Unauthenticated, 401),
            Self::TokenExpired => ("TOKEN_EXPIRED", G::Unauthenticated, 401),
            Self::TokenRevoked => ("TOKEN_REVOKED", G::Unauthenticated, 401),
            Self::TokenReused => ("TOKEN_REUSED", G::Unauthenticated, 401),
            Self::InvalidCredentials => ("INVALID_CREDENTIALS", G::Unauthenticated, 401),
            Self::MfaRequired => ("MFA_REQUIRED", G::Unauthenticated, 401),
            Self::CaptchaRequired => ("CAPTCHA_REQUIRED", G::FailedPrecondition, 400),
            Self::CaptchaFailed => ("CAPTCHA_FAILED", G::FailedPrecondition, 400),
            Self::Forbidden => ("FORBIDDEN", G::PermissionDenied, 403),
            Self::NotFound => ("NOT_FOUND", G::NotFound, 404),
            Self::Conflict => ("CONFLICT", G::AlreadyExists, 409),
            Self::AccountLocked => ("ACCOUNT_LOCKED", G::FailedPrecondition, 423),
            Self::RateLimitExceeded => ("RATE_LIMIT_EXCEEDED", G::ResourceExhausted, 429),
            Self::Unavailable => ("UNAVAILABLE", G::Unavailable, 503),
            Self::Internal => ("INTERNAL", G::Internal, 500),
            Self::MalformedJson => ("MALFORMED_JSON", G::InvalidArgument, 400),
            Self::BadRequest => ("BAD_REQUEST", G::InvalidArgument, 400),
            Self::PayloadTooLarge => ("PAYLOAD_TOO_LARGE", G::OutOfRange, 413),
            Self::UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", G::InvalidArgument, 415),
            Self::MethodNotAllowed => ("METHOD_NOT_ALLOWED", G::Unimplemented, 405),
            Self::RequestTimeout => ("REQUEST_TIMEOUT", G::DeadlineExceeded, 408),
            Self::HeadersTooLarge => ("HEADERS_TOO_LARGE", G::OutOfRange, 431),
            Self::FeatureDisabled => ("FEATURE_DISABLED", G::Unimplemented, 404),
            Self::Maintenance => ("MAINTENANCE", G::Unavailable, 503),
        }
    }

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
        Self::ALL.into_iter().find(|c| c.as_str() == code)
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
        for code in ErrorCode::ALL {
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
