//! The one table of error codes the platform shows its clients: each code has its gRPC status
//! code (service side) and its HTTP status (gateway side), kept here so the two never disagree.
//! A service attaches the code as `x-error-code` metadata; the gateway renders it as is.

use tonic::metadata::MetadataValue;

pub const ERROR_CODE_METADATA: &str = "x-error-code";
pub const RETRY_AFTER_METADATA: &str = "x-retry-after";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

const TABLE: &[(ErrorCode, &str, tonic::Code, u16)] = &[
    (
        ErrorCode::ValidationFailed,
        "VALIDATION_FAILED",
        tonic::Code::InvalidArgument,
        400,
    ),
    (
        ErrorCode::Unauthenticated,
        "UNAUTHENTICATED",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::TokenExpired,
        "TOKEN_EXPIRED",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::TokenRevoked,
        "TOKEN_REVOKED",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::TokenReused,
        "TOKEN_REUSED",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::InvalidCredentials,
        "INVALID_CREDENTIALS",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::MfaRequired,
        "MFA_REQUIRED",
        tonic::Code::Unauthenticated,
        401,
    ),
    (
        ErrorCode::CaptchaRequired,
        "CAPTCHA_REQUIRED",
        tonic::Code::FailedPrecondition,
        400,
    ),
    (
        ErrorCode::CaptchaFailed,
        "CAPTCHA_FAILED",
        tonic::Code::FailedPrecondition,
        400,
    ),
    (ErrorCode::Forbidden, "FORBIDDEN", tonic::Code::PermissionDenied, 403),
    (ErrorCode::NotFound, "NOT_FOUND", tonic::Code::NotFound, 404),
    (ErrorCode::Conflict, "CONFLICT", tonic::Code::AlreadyExists, 409),
    (
        ErrorCode::AccountLocked,
        "ACCOUNT_LOCKED",
        tonic::Code::FailedPrecondition,
        423,
    ),
    (
        ErrorCode::RateLimitExceeded,
        "RATE_LIMIT_EXCEEDED",
        tonic::Code::ResourceExhausted,
        429,
    ),
    (ErrorCode::Unavailable, "UNAVAILABLE", tonic::Code::Unavailable, 503),
    (ErrorCode::Internal, "INTERNAL", tonic::Code::Internal, 500),
];

impl ErrorCode {
    fn row(self) -> &'static (ErrorCode, &'static str, tonic::Code, u16) {
        // Every variant has exactly one row (checked by a test).
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[TABLE.len() - 1])
    }

    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    pub fn grpc_code(self) -> tonic::Code {
        self.row().2
    }

    pub fn http_status(self) -> u16 {
        self.row().3
    }

    pub fn parse(code: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == code).map(|r| r.0)
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
        for (code, name, grpc, http) in TABLE {
            assert_eq!(code.as_str(), *name);
            assert_eq!(code.grpc_code(), *grpc);
            assert_eq!(code.http_status(), *http);
            assert_eq!(ErrorCode::parse(name), Some(*code));
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
