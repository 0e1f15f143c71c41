//! Each use-case error as a gRPC status, through service-kit's one table of error codes
//! (`ErrorCode`): one `From` per error enum, with the client's messages. Causes go to the log,
//! never to the client.

use service_kit::errors::{ErrorCode, status, status_retry_after};
use tonic::Status;

use crate::domain::Invalid;
use crate::service::{
    AuditError, CallerError, DeviceError, EmailError, MfaError, ProfileError, SessionError, ThrottleError,
};
use crate::store::StoreError;

/// A refused input: the sentence for the client, and the field in the status metadata.
pub fn invalid(i: Invalid) -> Status {
    let mut s = status(ErrorCode::ValidationFailed, i.issue);
    s.metadata_mut().insert(
        service_kit::grpc::FIELD_METADATA,
        tonic::metadata::MetadataValue::from_static(i.field),
    );
    s
}

fn unavailable(cause: anyhow::Error) -> Status {
    tracing::warn!(error = format!("{cause:#}"), "dependency unavailable");
    status(ErrorCode::Unavailable, "Temporarily unavailable; retry shortly.")
}

fn unexpected(cause: anyhow::Error) -> Status {
    tracing::error!(error = format!("{cause:#}"), "unexpected error");
    status(ErrorCode::Internal, "internal error")
}

/// A database failure no use case acts on: unavailable (worth a retry), or internal. A conflict
/// here is one no use case expected (the e-mail one is `EmailTaken`).
fn store(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(cause) => unavailable(cause),
        e @ StoreError::Conflict { .. } => unexpected(e.into()),
        StoreError::Unexpected(cause) => unexpected(cause),
    }
}

fn invalid_credentials() -> Status {
    status(ErrorCode::InvalidCredentials, "E-mail or password is wrong.")
}

fn locked(retry_after: u64) -> Status {
    status_retry_after(
        ErrorCode::AccountLocked,
        "Too many failed attempts; the account is locked for a while.",
        retry_after,
    )
}

impl From<CallerError> for Status {
    fn from(e: CallerError) -> Self {
        match e {
            CallerError::Unauthenticated => status(ErrorCode::Unauthenticated, "Authentication is required."),
            CallerError::Revoked => status(ErrorCode::TokenRevoked, "This session has ended; log in again."),
            CallerError::Store(e) => store(e),
        }
    }
}

impl From<ThrottleError> for Status {
    fn from(e: ThrottleError) -> Self {
        match e {
            ThrottleError::Locked { retry_after } => locked(retry_after),
            ThrottleError::TooManyFailures { retry_after } => status_retry_after(
                ErrorCode::RateLimitExceeded,
                "Too many failed logins from this network; wait and try again.",
                retry_after,
            ),
            ThrottleError::CaptchaRequired => {
                status(ErrorCode::CaptchaRequired, "Solve the CAPTCHA and send its token.")
            }
            ThrottleError::CaptchaFailed => status(ErrorCode::CaptchaFailed, "The CAPTCHA was not solved; try again."),
            ThrottleError::CaptchaUnavailable(cause) => unavailable(cause),
            ThrottleError::Store(e) => store(e),
        }
    }
}

impl From<MfaError> for Status {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Invalid(i) => invalid(i),
            MfaError::AlreadyOn => status(ErrorCode::Conflict, "MFA is already on; turn it off first."),
            MfaError::AlreadyConfirmed => status(ErrorCode::Conflict, "MFA is already on."),
            MfaError::NotStarted => status(ErrorCode::Conflict, "Start the enrollment first."),
            MfaError::NotOn => status(ErrorCode::Conflict, "MFA is not on."),
            MfaError::Required => status(
                ErrorCode::MfaRequired,
                "A code from your authenticator app (or a recovery code) is required.",
            ),
            MfaError::WrongCode => status(ErrorCode::MfaRequired, "The code is not valid; try the current one."),
            MfaError::Locked { retry_after } => locked(retry_after),
            MfaError::Caller(e) => e.into(),
            MfaError::Store(e) => store(e),
            MfaError::Unexpected(cause) => unexpected(cause),
        }
    }
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Invalid(i) => invalid(i),
            SessionError::EmailTaken => status(ErrorCode::Conflict, "An account with this e-mail already exists."),
            SessionError::InvalidCredentials => invalid_credentials(),
            SessionError::Throttled(e) => e.into(),
            SessionError::SecondFactor(e) => e.into(),
            SessionError::TokenReused => status(
                ErrorCode::TokenReused,
                "This refresh token was already used; the session has ended.",
            ),
            SessionError::Expired => status(ErrorCode::TokenExpired, "This session has expired; log in again."),
            SessionError::Caller(e) => e.into(),
            SessionError::Store(e) => store(e),
            SessionError::Unexpected(cause) => unexpected(cause),
        }
    }
}

impl From<ProfileError> for Status {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::Invalid(i) => invalid(i),
            ProfileError::InvalidCredentials => invalid_credentials(),
            ProfileError::Caller(e) => e.into(),
            ProfileError::Store(e) => store(e),
            ProfileError::Unexpected(cause) => unexpected(cause),
        }
    }
}

impl From<DeviceError> for Status {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotFound => status(ErrorCode::NotFound, "No such resource."),
            DeviceError::Caller(e) => e.into(),
            DeviceError::Store(e) => store(e),
        }
    }
}

impl From<EmailError> for Status {
    fn from(e: EmailError) -> Self {
        match e {
            EmailError::Invalid(i) => invalid(i),
            EmailError::Store(e) => store(e),
            EmailError::Unexpected(cause) => unexpected(cause),
        }
    }
}

impl From<AuditError> for Status {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Invalid(i) => invalid(i),
            AuditError::Forbidden => status(ErrorCode::Forbidden, "This needs the admin role."),
            AuditError::Caller(e) => e.into(),
            AuditError::Store(e) => store(e),
        }
    }
}
