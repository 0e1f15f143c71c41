//! The values and records auth-service works with, shared by the use cases (`service/`), the
//! store (`store/`) and the gRPC layer: ids (`UserId`, `SessionId`), validated input (valid by
//! construction: e-mail, names, income tier, device), who acts, and the records the store hands
//! back (user, session, known device, audit entry, revocations). No I/O and no protocol or diesel
//! types.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why an input was refused: the field and a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {issue}")]
pub struct Invalid {
    pub field: &'static str,
    pub issue: &'static str,
}

pub(crate) fn invalid(field: &'static str, issue: &'static str) -> Invalid {
    Invalid { field, issue }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// An e-mail address: trimmed, at most 254 bytes, one `@`, a dot in the domain, no spaces or
/// control characters. Compared case-insensitively (the database index is on `lower(email)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let e = raw.trim();
        let bad = || invalid("email", "must be a valid e-mail address");
        if e.is_empty() || e.len() > 254 || has_control(e) || e.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (local, domain) = e.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain.contains('.') {
            return Err(bad());
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(bad());
        }
        Ok(Self(e.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: trimmed, 1..=100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, Invalid> {
        let n = raw.trim();
        if n.is_empty() || n.chars().count() > 100 || has_control(n) {
            return Err(invalid(field, "must be 1 to 100 characters without control characters"));
        }
        Ok(Self(n.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const INCOME_TIERS: [&str; 5] = ["low", "lower_middle", "middle", "upper_middle", "high"];

/// `None` for an empty string (not given).
pub fn income_tier(raw: &str) -> Result<Option<&'static str>, Invalid> {
    if raw.is_empty() {
        return Ok(None);
    }
    INCOME_TIERS
        .iter()
        .find(|t| **t == raw)
        .copied()
        .map(Some)
        .ok_or_else(|| {
            invalid(
                "income_tier",
                "must be one of low, lower_middle, middle, upper_middle, high",
            )
        })
}

/// The device a login comes from, as the app reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub platform: &'static str,
    pub model: Option<String>,
    pub os_version: Option<String>,
}

impl Device {
    pub fn parse(device_id: &str, platform: &str, model: &str, os_version: &str) -> Result<Self, Invalid> {
        let id = device_id.trim();
        // Characters, as the column's CHECK (char_length) and the API document count them.
        if id.is_empty() || id.chars().count() > 128 || has_control(id) {
            return Err(invalid("device.device_id", "must be 1 to 128 characters"));
        }
        let platform = ["ios", "android", "web"]
            .into_iter()
            .find(|p| *p == platform)
            .ok_or_else(|| invalid("device.platform", "must be one of ios, android, web"))?;
        let optional = |v: &str, max: usize, field: &'static str| -> Result<Option<String>, Invalid> {
            let v = v.trim();
            if v.is_empty() {
                Ok(None)
            } else if v.chars().count() > max || has_control(v) {
                Err(invalid(field, "is too long or has control characters"))
            } else {
                Ok(Some(v.to_owned()))
            }
        };
        Ok(Self {
            device_id: id.to_owned(),
            platform,
            model: optional(model, 100, "device.model")?,
            os_version: optional(os_version, 50, "device.os_version")?,
        })
    }
}

/// An account's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

/// A session's id: the `sid` of its access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub Uuid);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who did something, for audit rows and security events.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// The same caller, now known as `user` (after a login, or a token that names them).
    pub fn acting_as(self, user: UserId) -> Self {
        Self {
            user_id: Some(user),
            ..self
        }
    }
}

/// An account as the use cases see it.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
    pub income_tier: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The PHC string (argon2id, or bcrypt for accounts imported from the old system).
    pub password_hash: String,
    pub mfa: MfaState,
}

/// The second factor: a TOTP seed (sealed). Its failure count and lock are reserved atomically
/// in the store (`reserve_mfa_attempt`), never judged from a copy read earlier.
#[derive(Debug, Clone)]
pub struct MfaState {
    pub enabled: bool,
    pub secret: Option<Vec<u8>>,
    /// A seed waiting for its first code to confirm the enrollment.
    pub pending_secret: Option<Vec<u8>>,
    pub last_step: Option<i64>,
}

/// A new account, from validated values.
pub struct NewUser<'a> {
    pub email: &'a Email,
    pub password_hash: &'a str,
    pub first_name: &'a PersonName,
    pub last_name: &'a PersonName,
    pub income_tier: Option<&'static str>,
}

/// A session: one refresh token chain on one device.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub device_id: String,
    /// Hash of the current refresh token.
    pub refresh_hash: Vec<u8>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A device an account has logged in from.
#[derive(Debug, Clone)]
pub struct KnownDevice {
    pub device_id: String,
    pub platform: String,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub risk_score: i16,
    pub trusted: bool,
}

/// One entry of the audit log: who (the [`Actor`], as written) did what to which resource, naming
/// the fields it changed (never their values), and when.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor: Actor,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<String>,
    pub changed_fields: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Which audit entries a page holds: newest first, after the keyset position `after`
/// (created_at, id).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<UserId>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The revocations made after some time (in PostgreSQL's clock): blacklisted tokens expiring after
/// it, sessions ended since then and not-before times after it (a deleted account counts as "not
/// before its deletion"). From now − the longest access-token lifetime, that is every revocation
/// in force.
#[derive(Debug, Default)]
pub struct Revocations {
    /// (jti, expires at)
    pub tokens: Vec<(Uuid, DateTime<Utc>)>,
    /// (session id, ended at)
    pub sessions: Vec<(Uuid, DateTime<Utc>)>,
    /// (user id, not before)
    pub not_before: Vec<(Uuid, DateTime<Utc>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse("  Ada@Example.org ").map(|e| e.0),
            Ok("Ada@Example.org".to_owned())
        );
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@@b.c",
            "a b@c.d",
            "a@.b",
            "a@b..c",
            "a@b.c.",
            "x'; DROP TABLE users;--@x.y",
        ] {
            // The last one has a space; SQL in e-mails is harmless anyway (bound parameters).
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(10_000))).is_err());
        assert!(Email::parse("o'brien+tag@example.org").is_ok());
    }

    #[test]
    fn names_tiers_devices() {
        assert!(PersonName::parse("  Ada ", "first_name").is_ok());
        assert_eq!(
            PersonName::parse("", "first_name").map_err(|e| e.field),
            Err("first_name")
        );
        assert!(PersonName::parse("a\u{0}b", "last_name").is_err());
        assert_eq!(income_tier(""), Ok(None));
        assert_eq!(income_tier("middle"), Ok(Some("middle")));
        assert!(income_tier("rich").is_err());
        assert!(Device::parse("dev-1", "ios", "", "").is_ok());
        assert_eq!(
            Device::parse("dev-1", "symbian", "", "").map_err(|e| e.field),
            Err("device.platform")
        );
        assert!(Device::parse("", "ios", "", "").is_err());
    }
}

/// How many people used the platform lately: distinct users with a session created or refreshed
/// within the last day, 7 days and 30 days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveUsers {
    pub day: i64,
    pub week: i64,
    pub month: i64,
}
