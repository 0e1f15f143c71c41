//! Queries over schema `auth`, one module per group of tables. Only this module knows diesel and
//! SQL: it takes and returns the domain types of `crate::domain` (its rows stay private here) and
//! fails with service-kit's `StoreError`. It applies no rules; every mutation a use case makes runs
//! in the use case's transaction together with its audit row.

mod audit;
mod devices;
mod email_tokens;
mod mfa;
mod schema;
mod sessions;
mod throttle;
mod users;

pub use audit::{audit, audit_page, security_event};
pub use devices::{delete_device, device_count, devices, insert_device, touch_device};
pub use email_tokens::{
    email_token_owner, insert_email_token, last_email_token_locked, mark_email_verified, spend_email_token,
};
pub use mfa::{
    claim_totp_step, disable_mfa, enable_mfa, reseal_mfa_secret, set_pending_mfa, spend_recovery_code,
    unused_recovery_codes, use_legacy_recovery_code,
};
pub use service_kit::store_error::StoreError;
pub use sessions::{
    active_users, blacklist, database_now, insert_session, revocations_since, revoke_session, revoke_sessions, rotate,
    session, session_by_current, session_by_previous, session_by_spent, token_revoked,
};
pub use throttle::{
    Reserved, clear_all_login_attempts, clear_login_attempts, clear_mfa_attempts, lock_login, lock_mfa,
    mfa_locked_until, purge_idle_login_attempts, release_login_attempt, release_mfa_attempt, reserve_login_attempt,
    reserve_mfa_attempt,
};
pub use users::{
    EMAIL_TAKEN, insert_user, live_session_user, record_success, set_password, set_roles, set_tokens_not_before,
    update_profile, user_by_email, user_by_id,
};

/// The connection every query runs on: a pooled one, or the one of a caller's transaction.
pub type Conn = diesel_async::AsyncPgConnection;

/// `conn.transaction(async |conn| ..)`: a use case's writes and their audit row commit together.
/// The use cases name it through here (`use crate::store::Transaction as _`), with `StoreError`
/// as the error, so no diesel type reaches them.
pub use diesel_async::AsyncConnection as Transaction;
