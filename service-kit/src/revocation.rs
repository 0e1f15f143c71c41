//! The Redis keys that revoke access tokens, shared by auth-service (writes) and the gateway
//! (reads), so the two cannot drift apart.

/// Present (until the token's expiry) when the token with this `jti` was revoked (logout).
pub fn jti_key(jti: &str) -> String {
    format!("revoked:jti:{jti}")
}

/// Present (until the longest access-token lifetime has passed) when the session with this id has
/// ended: logout, logout-all, password change, device removal, refresh-token reuse.
pub fn session_key(sid: &str) -> String {
    format!("revoked:sid:{sid}")
}

/// Unix seconds: tokens of this user issued before it are revoked (logout-all, password change).
pub fn not_before_key(user_id: &str) -> String {
    format!("revoked:nbf:{user_id}")
}

/// Whether claims issued at `iat` fall before a stored "not before".
pub fn revoked_by_not_before(iat: u64, not_before: Option<u64>) -> bool {
    not_before.is_some_and(|nbf| iat < nbf)
}
