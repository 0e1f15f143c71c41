//! Auth routes (auth-service), one module per area: sessions, the profile, passwords, devices,
//! MFA, and the admin's audit log. Each body type sits with its bounds (`body::Bounded`); the
//! shared answer types and bounds are here.

pub mod admin;
pub mod devices;
pub mod mfa;
pub mod password;
pub mod profile;
pub mod session;

use chrono::{DateTime, Utc};
use proto::auth::v1 as pb;
use serde::Serialize;

use crate::routes::{non_empty, time};

pub use self::admin::*;
pub use self::devices::*;
pub use self::mfa::*;
pub use self::password::*;
pub use self::profile::*;
pub use self::session::*;

// Outer bounds at the edge: no string of a body reaches a service at any length. The services
// apply the precise rules (e.g. passwords of 12..128 characters) with their own messages.
const EMAIL: usize = 320;
const PASSWORD: usize = 1024;
const NAME: usize = 200;
const TOKEN: usize = 1024;
const CAPTCHA: usize = 8192;
const CODE: usize = 64;
/// `device_id`, wherever it is sent.
const DEVICE_ID: usize = 256;
const INCOME_TIER: usize = 32;

/// A first or last name, for the document only (bodies carry a string): as auth-service takes
/// it (`domain::PersonName`), 1..=100 characters, no control characters, not only white space.
pub struct PersonName;

impl utoipa::PartialSchema for PersonName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // Control characters are written as themselves: schemathesis (Python) cannot use `\u`
        // escapes in a pattern.
        const NOT_CONTROL: &str = "[^\u{0}-\u{1f}\u{7f}-\u{9f}]";
        const NOT_BLANK: &str = "[^\\s\u{0}-\u{1f}\u{7f}-\u{9f}]";
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(100))
            .pattern(Some(format!("^{NOT_CONTROL}*{NOT_BLANK}{NOT_CONTROL}*$")))
            .description(Some("1..=100 characters, not only white space, no control characters"))
            .into()
    }
}

impl utoipa::ToSchema for PersonName {}

/// An account's income tier, for the document only: bodies carry it as a string, which
/// auth-service checks against the same list (`domain::INCOME_TIERS`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum IncomeTier {
    Low,
    LowerMiddle,
    Middle,
    UpperMiddle,
    High,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensBody {
    pub access_token: String,
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
    pub income_tier: Option<String>,
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
}

pub(super) fn tokens(t: Option<pb::Tokens>) -> TokensBody {
    let t = t.unwrap_or_default();
    TokensBody {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: "Bearer",
        expires_in: t.expires_in,
    }
}

pub(super) fn user(u: Option<pb::User>) -> UserBody {
    let u = u.unwrap_or_default();
    UserBody {
        id: u.id,
        email: u.email,
        email_verified: u.email_verified,
        first_name: u.first_name,
        last_name: u.last_name,
        income_tier: non_empty(u.income_tier),
        roles: u.roles,
        mfa_enabled: u.mfa_enabled,
        created_at: time(u.created_at.as_ref()),
    }
}
