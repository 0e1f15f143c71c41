//! Each use-case error as a gRPC status, through service-kit's one table of error codes
//! (`ErrorCode`): one `From` per error enum (and one for the `Common` failures they nest), with the
//! client's messages. Causes go to the log, never to the client.

use service_kit::errors::{ErrorCode, status, status_retry_after};
use tonic::Status;

use crate::domain::Invalid;
use crate::service::{
    AuditError, CallerError, Common, DeviceError, EmailError, MfaError, ProfileError, ReauthError, SessionError,
    ThrottleError,
};
use service_kit::store_error::StoreError;

/// A refused input: the sentence for the client, and the field in the status metadata.
pub fn invalid(i: Invalid) -> Status {
    service_kit::grpc::invalid_field(i.field, i.issue)
}

fn unavailable(cause: anyhow::Error) -> Status {
    tracing::warn!(error = format!("{cause:#}"), "dependency unavailable");
    status(ErrorCode::Unavailable, "Temporarily unavailable; retry shortly.")
}

pub(crate) fn unexpected(cause: anyhow::Error) -> Status {
    tracing::error!(error = format!("{cause:#}"), "unexpected error");
    status(ErrorCode::Internal, "internal error")
}

/// A database failure no use case acts on: service-kit's one mapping (unavailable is worth a
/// retry; a conflict here is one no use case expected, since the e-mail one is `EmailTaken`).
fn store(e: StoreError) -> Status {
    e.into_status()
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
            ThrottleError::Unexpected(cause) => unexpected(cause),
        }
    }
}

/// The field a missing re-authentication names.
const REAUTH_MISSING: Invalid = Invalid {
    field: "password",
    issue: "is required to confirm it is you (or totp_code, when two-step verification is on)",
};

fn wrong_code() -> Status {
    status(ErrorCode::MfaRequired, "The code is not valid; try the current one.")
}

impl From<ReauthError> for Status {
    fn from(e: ReauthError) -> Self {
        match e {
            ReauthError::Missing => invalid(REAUTH_MISSING),
            ReauthError::InvalidCredentials => invalid_credentials(),
            ReauthError::WrongCode => wrong_code(),
            ReauthError::Throttled(e) => e.into(),
            ReauthError::Store(e) => store(e),
            ReauthError::Unexpected(cause) => unexpected(cause),
        }
    }
}

/// The failures the caller-facing use cases share read the same from each of them.
impl From<Common> for Status {
    fn from(e: Common) -> Self {
        match e {
            Common::Reauth(e) => e.into(),
            Common::Caller(e) => e.into(),
            Common::Store(e) => store(e),
            Common::Unexpected(cause) => unexpected(cause),
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
            MfaError::WrongCode => wrong_code(),
            MfaError::Locked { retry_after } => locked(retry_after),
            MfaError::Common(e) => e.into(),
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
            SessionError::Common(e) => e.into(),
        }
    }
}

impl From<ProfileError> for Status {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::Invalid(i) => invalid(i),
            ProfileError::Common(e) => e.into(),
        }
    }
}

impl From<DeviceError> for Status {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotFound => status(ErrorCode::NotFound, "No such resource."),
            DeviceError::Common(e) => e.into(),
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

#[cfg(test)]
mod tests {
    use service_kit::errors::{ERROR_CODE_METADATA, RETRY_AFTER_METADATA};
    use service_kit::grpc::FIELD_METADATA;
    use tonic::Code;

    use super::*;

    /// The status's gRPC code, `x-error-code`, message and `x-retry-after`.
    fn parts(s: Status) -> (Code, String, String, Option<String>) {
        let meta = |name: &str| s.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (
            s.code(),
            meta(ERROR_CODE_METADATA).unwrap_or_default(),
            s.message().to_owned(),
            meta(RETRY_AFTER_METADATA),
        )
    }

    fn expect(s: impl Into<Status>, code: Code, error_code: &str, message: &str, retry_after: Option<&str>) {
        assert_eq!(
            parts(s.into()),
            (
                code,
                error_code.to_owned(),
                message.to_owned(),
                retry_after.map(str::to_owned)
            )
        );
    }

    const UNAVAILABLE: (Code, &str, &str) = (
        Code::Unavailable,
        "UNAVAILABLE",
        "Temporarily unavailable; retry shortly.",
    );
    const INTERNAL: (Code, &str, &str) = (Code::Internal, "INTERNAL", "internal error");

    fn bad_code() -> Invalid {
        Invalid {
            field: "code",
            issue: "must be 6 digits",
        }
    }

    /// Store failures read the same from every use case, and say nothing of their cause.
    fn expect_store_failures<E: From<StoreError> + Into<Status>>() {
        let down = E::from(StoreError::Unavailable(anyhow::anyhow!("host db-7.internal")));
        let s: Status = down.into();
        assert!(!s.message().contains("db-7"));
        expect(s, UNAVAILABLE.0, UNAVAILABLE.1, UNAVAILABLE.2, None);
        let conflict = E::from(StoreError::Conflict {
            constraint: "users_email_live_key".into(),
        });
        expect(conflict, INTERNAL.0, INTERNAL.1, INTERNAL.2, None);
        let bug = E::from(StoreError::Unexpected(anyhow::anyhow!(
            "relation \"secret\" does not exist"
        )));
        expect(bug, INTERNAL.0, INTERNAL.1, INTERNAL.2, None);
    }

    #[test]
    fn invalid_input_names_its_field() {
        let s: Status = SessionError::Invalid(bad_code()).into();
        assert_eq!(
            s.metadata().get(FIELD_METADATA).and_then(|v| v.to_str().ok()),
            Some("code")
        );
        expect(s, Code::InvalidArgument, "VALIDATION_FAILED", "must be 6 digits", None);
    }

    #[test]
    fn caller_errors() {
        let unauthenticated = CallerError::Unauthenticated;
        expect(
            unauthenticated,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
            "Authentication is required.",
            None,
        );
        let revoked = CallerError::Revoked;
        expect(
            revoked,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
            "This session has ended; log in again.",
            None,
        );
        expect_store_failures::<CallerError>();
    }

    #[test]
    fn throttle_errors_carry_retry_after() {
        let locked = "Too many failed attempts; the account is locked for a while.";
        let e = ThrottleError::Locked { retry_after: 900 };
        expect(e, Code::FailedPrecondition, "ACCOUNT_LOCKED", locked, Some("900"));
        let e = ThrottleError::TooManyFailures { retry_after: 42 };
        let message = "Too many failed logins from this network; wait and try again.";
        expect(e, Code::ResourceExhausted, "RATE_LIMIT_EXCEEDED", message, Some("42"));
        let e = ThrottleError::CaptchaRequired;
        expect(
            e,
            Code::FailedPrecondition,
            "CAPTCHA_REQUIRED",
            "Solve the CAPTCHA and send its token.",
            None,
        );
        let e = ThrottleError::CaptchaFailed;
        expect(
            e,
            Code::FailedPrecondition,
            "CAPTCHA_FAILED",
            "The CAPTCHA was not solved; try again.",
            None,
        );
        let e = ThrottleError::CaptchaUnavailable(anyhow::anyhow!("siteverify at 10.0.0.9 timed out"));
        expect(e, UNAVAILABLE.0, UNAVAILABLE.1, UNAVAILABLE.2, None);
        expect_store_failures::<ThrottleError>();
    }

    #[test]
    fn mfa_errors() {
        let conflict = |e: MfaError, message: &str| expect(e, Code::AlreadyExists, "CONFLICT", message, None);
        conflict(MfaError::AlreadyOn, "MFA is already on; turn it off first.");
        conflict(MfaError::AlreadyConfirmed, "MFA is already on.");
        conflict(MfaError::NotStarted, "Start the enrollment first.");
        conflict(MfaError::NotOn, "MFA is not on.");
        let required = "A code from your authenticator app (or a recovery code) is required.";
        expect(
            MfaError::Required,
            Code::Unauthenticated,
            "MFA_REQUIRED",
            required,
            None,
        );
        let wrong = "The code is not valid; try the current one.";
        expect(MfaError::WrongCode, Code::Unauthenticated, "MFA_REQUIRED", wrong, None);
        let locked = "Too many failed attempts; the account is locked for a while.";
        let e = MfaError::Locked { retry_after: 7 };
        expect(e, Code::FailedPrecondition, "ACCOUNT_LOCKED", locked, Some("7"));
        let e = MfaError::Invalid(bad_code());
        expect(e, Code::InvalidArgument, "VALIDATION_FAILED", "must be 6 digits", None);
        let e = MfaError::from(CallerError::Revoked);
        expect(
            e,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
            "This session has ended; log in again.",
            None,
        );
        let e = MfaError::from(anyhow::anyhow!("opening the TOTP seed: tag mismatch"));
        expect(e, INTERNAL.0, INTERNAL.1, INTERNAL.2, None);
        expect_store_failures::<MfaError>();
    }

    #[test]
    fn session_errors() {
        let taken = "An account with this e-mail already exists.";
        expect(SessionError::EmailTaken, Code::AlreadyExists, "CONFLICT", taken, None);
        let wrong = "E-mail or password is wrong.";
        expect(
            SessionError::InvalidCredentials,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
            wrong,
            None,
        );
        let reused = "This refresh token was already used; the session has ended.";
        expect(
            SessionError::TokenReused,
            Code::Unauthenticated,
            "TOKEN_REUSED",
            reused,
            None,
        );
        let expired = "This session has expired; log in again.";
        expect(
            SessionError::Expired,
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
            expired,
            None,
        );
        let e = SessionError::Throttled(ThrottleError::Locked { retry_after: 60 });
        let locked = "Too many failed attempts; the account is locked for a while.";
        expect(e, Code::FailedPrecondition, "ACCOUNT_LOCKED", locked, Some("60"));
        let e = SessionError::SecondFactor(MfaError::Locked { retry_after: 61 });
        expect(e, Code::FailedPrecondition, "ACCOUNT_LOCKED", locked, Some("61"));
        let required = "A code from your authenticator app (or a recovery code) is required.";
        let e = SessionError::SecondFactor(MfaError::Required);
        expect(e, Code::Unauthenticated, "MFA_REQUIRED", required, None);
        let e = SessionError::from(CallerError::Unauthenticated);
        expect(
            e,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
            "Authentication is required.",
            None,
        );
        let e = SessionError::from(anyhow::anyhow!("signing: bad key"));
        expect(e, INTERNAL.0, INTERNAL.1, INTERNAL.2, None);
        expect_store_failures::<SessionError>();
    }

    #[test]
    fn profile_device_email_and_audit_errors() {
        let wrong = "E-mail or password is wrong.";
        expect(
            ProfileError::from(ReauthError::InvalidCredentials),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
            wrong,
            None,
        );
        let e = ProfileError::from(CallerError::Revoked);
        expect(
            e,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
            "This session has ended; log in again.",
            None,
        );
        let e = ProfileError::from(anyhow::anyhow!("argon2 pool closed"));
        expect(e, INTERNAL.0, INTERNAL.1, INTERNAL.2, None);
        expect_store_failures::<ProfileError>();

        expect(
            DeviceError::NotFound,
            Code::NotFound,
            "NOT_FOUND",
            "No such resource.",
            None,
        );
        let e = DeviceError::from(CallerError::Unauthenticated);
        expect(
            e,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
            "Authentication is required.",
            None,
        );
        expect_store_failures::<DeviceError>();

        let token = Invalid {
            field: "token",
            issue: "is invalid, expired or already used",
        };
        let e = EmailError::Invalid(token);
        expect(
            e,
            Code::InvalidArgument,
            "VALIDATION_FAILED",
            "is invalid, expired or already used",
            None,
        );
        expect(
            EmailError::Unexpected(anyhow::anyhow!("x")),
            INTERNAL.0,
            INTERNAL.1,
            INTERNAL.2,
            None,
        );
        expect_store_failures::<EmailError>();

        expect(
            AuditError::Forbidden,
            Code::PermissionDenied,
            "FORBIDDEN",
            "This needs the admin role.",
            None,
        );
        let e = AuditError::Caller(CallerError::Revoked);
        expect(
            e,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
            "This session has ended; log in again.",
            None,
        );
        expect_store_failures::<AuditError>();
    }

    #[test]
    fn reauthentication_errors_name_what_to_send_and_count_like_logins() {
        let (code, error_code, message, _) = parts(ReauthError::Missing.into());
        assert_eq!(
            (code, error_code.as_str()),
            (Code::InvalidArgument, "VALIDATION_FAILED")
        );
        assert!(message.contains("is required to confirm it is you"), "{message}");
        // Every use case that re-authenticates answers the same.
        for s in [
            Status::from(DeviceError::from(ReauthError::InvalidCredentials)),
            Status::from(MfaError::from(ReauthError::InvalidCredentials)),
            Status::from(SessionError::from(ReauthError::InvalidCredentials)),
            Status::from(ProfileError::from(ReauthError::InvalidCredentials)),
        ] {
            assert_eq!(
                parts(s),
                (
                    Code::Unauthenticated,
                    "INVALID_CREDENTIALS".to_owned(),
                    "E-mail or password is wrong.".to_owned(),
                    None
                )
            );
        }
        expect(
            ReauthError::WrongCode,
            Code::Unauthenticated,
            "MFA_REQUIRED",
            "The code is not valid; try the current one.",
            None,
        );
        expect(
            ReauthError::Throttled(ThrottleError::Locked { retry_after: 60 }),
            Code::FailedPrecondition,
            "ACCOUNT_LOCKED",
            "Too many failed attempts; the account is locked for a while.",
            Some("60"),
        );
    }
}
