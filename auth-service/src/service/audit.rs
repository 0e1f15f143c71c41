//! The audit log for administrators: pages of who changed what, newest first, with an opaque
//! keyset cursor.

use chrono::{DateTime, Utc};
use service_kit::auth::AccessClaims;
use uuid::Uuid;

use super::{Auth, CallerError};
use crate::domain::{AuditEntry, AuditFilter, Invalid, UserId};
use crate::store::{self, StoreError};

/// What reading the audit log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller is not an administrator (in the token and in the account as it is now).
    #[error("forbidden")]
    Forbidden,
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Filters of the audit-log list, as the caller sent them.
pub struct AuditQuery {
    pub user_id: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: u32,
    pub cursor: String,
}

impl AuditQuery {
    /// The filter of the page, and its size.
    fn filter(&self) -> Result<AuditFilter, Invalid> {
        let limit = match self.limit {
            0 => 20,
            n @ 1..=100 => i64::from(n),
            _ => {
                return Err(Invalid {
                    field: "limit",
                    issue: "must be between 1 and 100",
                });
            }
        };
        let actor = match self.user_id.as_str() {
            "" => None,
            id => Some(UserId(Uuid::parse_str(id).map_err(|_| Invalid {
                field: "user_id",
                issue: "must be a UUID",
            })?)),
        };
        let after = match self.cursor.as_str() {
            "" => None,
            c => Some(decode_cursor(c).ok_or(Invalid {
                field: "cursor",
                issue: "is not a cursor from this list",
            })?),
        };
        Ok(AuditFilter {
            actor,
            from: self.from,
            to: self.to,
            after,
            limit,
        })
    }
}

impl Auth {
    /// A page of the audit log for an administrator, and the cursor of the next page. The role is
    /// checked against the account as it is now, not only the token's claim, so a revoked role
    /// stops working at once.
    pub async fn audit_logs(
        &self,
        claims: &AccessClaims,
        query: AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<String>), AuditError> {
        let (user, _, mut conn) = self.caller_account(claims).await?;
        if !claims.has_role("admin") || !user.roles.iter().any(|r| r == "admin") {
            return Err(AuditError::Forbidden);
        }
        let mut filter = query.filter()?;
        let limit = filter.limit;
        // One more than asked tells whether there is a next page.
        filter.limit += 1;
        let mut rows = store::audit_page(&mut conn, &filter).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| encode_cursor(r.created_at, r.id))
        } else {
            None
        };
        Ok((rows, next))
    }
}

/// Opaque keyset position: base64url of "micros:uuid".
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor(""), None);
    }
}
