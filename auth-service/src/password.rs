//! Password hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1 by default), PHC strings.
//! Hashing runs on the blocking pool, a bounded number at a time, so a burst of logins cannot
//! exhaust memory or starve the async workers. An unknown account is verified against a dummy
//! hash, so it costs the same time as a wrong password.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// `ARGON2_MEMORY_KIB` (default 19456).
    pub memory_kib: u32,
    /// `ARGON2_ITERATIONS` (default 2).
    pub iterations: u32,
    /// `ARGON2_PARALLELISM` (default 1).
    pub parallelism: u32,
}

impl HashParams {
    pub fn from_env(env: &service_kit::config::Env) -> Self {
        Self {
            memory_kib: env.int_in("ARGON2_MEMORY_KIB", 19_456, 8 * 1024, 1024 * 1024),
            iterations: env.int_in("ARGON2_ITERATIONS", 2, 1, 10),
            parallelism: env.int_in("ARGON2_PARALLELISM", 1, 1, 16),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; `rehash` when the stored hash uses other parameters (or another algorithm).
    Match {
        rehash: bool,
    },
    Mismatch,
}

#[derive(Clone)]
pub struct Passwords {
    argon: Arc<Argon2<'static>>,
    dummy: Arc<String>,
    permits: Arc<Semaphore>,
}

impl Passwords {
    pub fn new(params: HashParams) -> anyhow::Result<Self> {
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon
            .hash_password(uuid::Uuid::new_v4().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("computing the dummy hash: {e}"))?
            .to_string();
        let parallel = std::thread::available_parallelism().map(usize::from).unwrap_or(2) * 2;
        Ok(Self {
            argon: Arc::new(argon),
            dummy: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(parallel)),
        })
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon = self.argon.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing: {e}"))
        })
        .await
        .context("hashing task")?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no account (same cost).
    pub async fn verify(&self, password: &SecretString, stored: Option<String>) -> anyhow::Result<Verdict> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon = self.argon.clone();
        let dummy = self.dummy.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            let real = stored.is_some();
            let phc = stored.unwrap_or_else(|| dummy.to_string());
            // Accounts imported from the old Node system keep their bcrypt hash until their next
            // successful login, which re-hashes to argon2id.
            if phc.starts_with("$2a$") || phc.starts_with("$2b$") || phc.starts_with("$2y$") {
                let ok = bcrypt::verify(password.expose_secret(), &phc).unwrap_or(false);
                return Ok(if ok {
                    Verdict::Match { rehash: true }
                } else {
                    Verdict::Mismatch
                });
            }
            let parsed =
                PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash is not a PHC string: {e}"))?;
            let ok = argon
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            if !(ok && real) {
                return Ok(Verdict::Mismatch);
            }
            let current = argon.params();
            let same = parsed.algorithm.as_str() == "argon2id"
                && Params::try_from(&parsed).is_ok_and(|p| {
                    p.m_cost() == current.m_cost() && p.t_cost() == current.t_cost() && p.p_cost() == current.p_cost()
                });
            Ok(Verdict::Match { rehash: !same })
        })
        .await
        .context("verifying task")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Passwords {
        Passwords::new(HashParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        })
        .expect("params")
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = small();
        let pw = SecretString::from("correct horse battery staple");
        let phc = p.hash(&pw).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert_eq!(
            p.verify(&pw, Some(phc.clone())).await.expect("verify"),
            Verdict::Match { rehash: false }
        );
        assert_eq!(
            p.verify(&SecretString::from("wrong"), Some(phc.clone()))
                .await
                .expect("verify"),
            Verdict::Mismatch
        );
        // No account: always a mismatch, even for the dummy's own (unknowable) password.
        assert_eq!(p.verify(&pw, None).await.expect("verify"), Verdict::Mismatch);
        // A bcrypt hash from the old system verifies and asks for a rehash.
        let old = bcrypt::hash("correct horse battery staple", 4).expect("bcrypt");
        assert_eq!(
            p.verify(&pw, Some(old.clone())).await.expect("verify"),
            Verdict::Match { rehash: true }
        );
        assert_eq!(
            p.verify(&SecretString::from("nope"), Some(old)).await.expect("verify"),
            Verdict::Mismatch
        );
        // Other parameters: still verifies, asks for a rehash.
        let stronger = Passwords::new(HashParams {
            memory_kib: 9 * 1024,
            iterations: 1,
            parallelism: 1,
        })
        .expect("params");
        assert_eq!(
            stronger.verify(&pw, Some(phc)).await.expect("verify"),
            Verdict::Match { rehash: true }
        );
    }
}
