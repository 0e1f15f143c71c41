//! The one error type every service's `store/` returns: what a use case can act on (a unique
//! constraint refused the write; the database is unreachable) and everything else, with its cause
//! kept for the log. Each service's use cases turn `Conflict` into their own domain error by
//! constraint name, so no diesel type travels above `store/`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;

use crate::errors::{self, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; `constraint` is its name in the migration.
    #[error("unique constraint {constraint} refused the write")]
    Conflict { constraint: String },
    /// No connection could be had, or it closed under the query: worth a retry later.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl StoreError {
    /// Whether this is a refusal by the unique constraint named `constraint`.
    pub fn is_conflict_on(&self, constraint: &str) -> bool {
        matches!(self, Self::Conflict { constraint: c } if c == constraint)
    }

    /// The status a gRPC handler answers when the use case has nothing more specific to say:
    /// the cause goes to the log, never to the client. A conflict that reaches here is one no use
    /// case expected (those that expect one turn it into their own error by constraint name): a
    /// bug, so internal. An outage is logged per request at `warn`; the database watcher logs the
    /// outage itself once, at `error`.
    pub fn into_status(self) -> tonic::Status {
        match self {
            Self::Conflict { constraint } => {
                tracing::error!(
                    constraint,
                    "unique constraint refused a write that no use case expected"
                );
                errors::status(ErrorCode::Internal, "internal error")
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable");
                errors::status(ErrorCode::Unavailable, "Temporarily unavailable; retry shortly.")
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected database error");
                errors::status(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        Self::Unavailable(anyhow::Error::new(e).context("getting a database connection"))
    }
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name().is_some() =>
            {
                Self::Conflict {
                    constraint: info.constraint_name().unwrap_or_default().to_owned(),
                }
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                Self::Unavailable(anyhow::Error::new(e).context("database connection closed"))
            }
            _ => Self::Unexpected(anyhow::Error::new(e).context("database query")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_is_unavailable_and_other_failures_are_unexpected() {
        let closed = DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, Box::new("closed".to_owned()));
        assert!(matches!(StoreError::from(closed), StoreError::Unavailable(_)));
        let other = StoreError::from(DieselError::NotFound);
        assert!(matches!(other, StoreError::Unexpected(_)));
        assert!(!other.is_conflict_on("users_email_live_key"));
    }

    #[test]
    fn statuses_carry_the_table_code_and_no_cause() {
        let s = StoreError::Unexpected(anyhow::anyhow!("relation \"secret_table\" does not exist")).into_status();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("secret_table"));
        let s = StoreError::Unavailable(anyhow::anyhow!("host db-7.internal")).into_status();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(!s.message().contains("db-7"));
        let s = StoreError::Conflict {
            constraint: "users_email_live_key".into(),
        }
        .into_status();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("users_email"));
    }
}
