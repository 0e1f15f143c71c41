//! The Redis keys that revoke access tokens, shared by auth-service (writes) and the gateway
//! (reads), so the two cannot drift apart. Every key starts with `REDIS_KEY_PREFIX`, so several
//! deployments (or parallel tests) can share one Redis without seeing each other's keys.

use crate::config::Env;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `REDIS_KEY_PREFIX`: up to 64 of `A-Z a-z 0-9 : _ -` (default none).
    pub fn from_env(env: &Env) -> Self {
        let prefix = env.optional_string("REDIS_KEY_PREFIX").unwrap_or_default();
        let ok = prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
        if !ok {
            env.problem("REDIS_KEY_PREFIX", "must be at most 64 characters of A-Z a-z 0-9 : _ -");
        }
        Self { prefix }
    }

    /// Present (until the token's expiry) when the token with this `jti` was revoked (logout).
    pub fn jti(&self, jti: &str) -> String {
        self.key(&["revoked:jti:", jti])
    }

    /// Present (until the longest access-token lifetime has passed) when the session with this id
    /// has ended: logout, logout-all, password change or reset, device removal, refresh reuse.
    pub fn session(&self, sid: &str) -> String {
        self.key(&["revoked:sid:", sid])
    }

    /// Unix milliseconds: tokens of this user issued before it are revoked (logout-all, password
    /// change, account deletion). The name says the unit: the whole seconds kept before under
    /// `revoked:nbf:` would read as a time in 1970.
    pub fn not_before(&self, user_id: &str) -> String {
        self.key(&["revoked:nbf_ms:", user_id])
    }

    /// Present when this Redis holds every revocation in force: auth-service sets it after copying
    /// them from PostgreSQL. A Redis restarted without persistence, or flushed, has lost both the
    /// revocations and this key, so the gateway asks auth-service until it is back. Named for the
    /// key layout it vouches for (`v2`: "not before" in milliseconds under `revoked:nbf_ms:`), so
    /// that during a rolling upgrade a new gateway never trusts a Redis that only an older
    /// auth-service filled.
    pub fn complete(&self) -> String {
        self.key(&["revoked:complete:v2"])
    }

    /// Held by the auth-service replica copying revocations into Redis (its random nonce), so
    /// that a copy interrupted by another wipe never sets [`Self::complete`].
    pub fn seeding(&self) -> String {
        self.key(&["revoked:seeding"])
    }

    /// Any other key of the platform, under the same prefix.
    pub fn other(&self, name: &str) -> String {
        self.key(&[name])
    }

    /// The prefix and `parts`, one after the other: one allocation of the exact size (the gateway
    /// makes several keys per request, where `format!` costs several times as much).
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        key.push_str(&self.prefix);
        for part in parts {
            key.push_str(part);
        }
        key
    }
}

/// Whether a token issued at `issued_at_ms` falls before a stored "not before" (both Unix
/// milliseconds; see [`crate::auth::AccessClaims::issued_at_ms`]).
pub fn revoked_by_not_before(issued_at_ms: u64, not_before_ms: Option<u64>) -> bool {
    not_before_ms.is_some_and(|nbf| issued_at_ms < nbf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix_and_bad_prefixes_are_named() {
        let k = RedisKeys::new("t1:");
        assert_eq!(k.jti("a"), "t1:revoked:jti:a");
        assert_eq!(k.session("s"), "t1:revoked:sid:s");
        assert_eq!(k.complete(), "t1:revoked:complete:v2");
        assert_eq!(k.not_before("u"), "t1:revoked:nbf_ms:u");
        assert_eq!(k.seeding(), "t1:revoked:seeding");
        assert_eq!(k.other("x:y"), "t1:x:y");
        assert_eq!(k.key(&["gcra:api:", "user:", "u"]), "t1:gcra:api:user:u");
        assert_eq!(RedisKeys::default().key(&["a", "", "b"]), "ab");
        assert!(revoked_by_not_before(10_999, Some(11_000)));
        assert!(!revoked_by_not_before(11_000, Some(11_000)));
        assert!(!revoked_by_not_before(11_000, None));
        let env = Env::from_map([("REDIS_KEY_PREFIX", "a b")]);
        RedisKeys::from_env(&env);
        assert!(
            env.finish()
                .expect_err("space")
                .to_string()
                .contains("REDIS_KEY_PREFIX")
        );
    }
}
