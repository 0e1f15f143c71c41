//! Password hashing: argon2id with OWASP parameters (m=19 MiB, t=2, p=1 by default), PHC strings.
//! Hashing runs on the blocking pool, a bounded number at a time, so a burst of logins cannot
//! exhaust memory or starve the async workers. An unknown account is verified against a dummy
//! hash, so it costs the same time as a wrong password.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
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
    scratch: Arc<Scratch>,
}

/// Work memory for argon2, kept and reused: at most one buffer per permit, so memory under a
/// login storm stays at permits × m instead of growing with the allocator's per-thread arenas
/// (the benchmark saw 775 MiB before this).
#[derive(Default)]
struct Scratch(std::sync::Mutex<Vec<Vec<argon2::Block>>>);

impl Scratch {
    fn run<R>(&self, blocks: usize, f: impl FnOnce(&mut [argon2::Block]) -> R) -> R {
        let pooled = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut buf = pooled
            .filter(|b| b.len() == blocks)
            .unwrap_or_else(|| vec![argon2::Block::default(); blocks]);
        let result = f(&mut buf);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(buf);
        result
    }
}

/// A PHC string for `password` with the configured parameters, computed in reused memory.
fn hash_phc(argon: &Argon2<'_>, scratch: &Scratch, password: &[u8]) -> anyhow::Result<String> {
    let e = |e: argon2::password_hash::Error| anyhow::anyhow!("hashing: {e}");
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(e)?;
    let mut out = [0u8; 32];
    scratch
        .run(argon.params().block_count(), |mem| {
            argon.hash_password_into_with_memory(password, salt_bytes, &mut out, mem)
        })
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(argon.params()).map_err(e)?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(e)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches an argon2 PHC hash, computed in reused memory; the comparison of
/// the outputs is constant-time (`Output`'s equality).
fn verify_phc(scratch: &Scratch, password: &[u8], parsed: &PasswordHash<'_>) -> anyhow::Result<bool> {
    let e = |e: argon2::password_hash::Error| anyhow::anyhow!("stored hash: {e}");
    let params = Params::try_from(parsed).map_err(e)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(e)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| anyhow::anyhow!("stored hash version: {e}"))?,
        None => Version::V0x13,
    };
    let expected = parsed
        .hash
        .ok_or_else(|| anyhow::anyhow!("stored hash has no output"))?;
    let salt = parsed.salt.ok_or_else(|| anyhow::anyhow!("stored hash has no salt"))?;
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(e)?;
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    scratch
        .run(params.block_count(), |mem| {
            argon.hash_password_into_with_memory(password, salt_bytes, &mut out, mem)
        })
        .map_err(|e| anyhow::anyhow!("verifying: {e}"))?;
    Ok(argon2::password_hash::Output::new(&out).map_err(e)? == expected)
}

impl Passwords {
    pub fn new(params: HashParams) -> anyhow::Result<Self> {
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        // Its own scratch, dropped at once: an idle process keeps no 19 MiB buffer around.
        let dummy = hash_phc(&argon, &Scratch::default(), uuid::Uuid::new_v4().as_bytes())?;
        // One hash per CPU (the cgroup's quota, where there is one). More only share the CPUs and
        // the cache: on 2 cores, 4 at once gave 107–118 hashes/s against 2 at once's 124–131
        // (m = 19 MiB each), and took twice the work memory.
        let parallel = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self {
            argon: Arc::new(argon),
            dummy: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(parallel)),
            scratch: Arc::new(Scratch::default()),
        })
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon = self.argon.clone();
        let password = password.clone();
        let scratch = self.scratch.clone();
        tokio::task::spawn_blocking(move || hash_phc(&argon, &scratch, password.expose_secret().as_bytes()))
            .await
            .context("hashing task")?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no account (same cost).
    pub async fn verify(&self, password: &SecretString, stored: Option<String>) -> anyhow::Result<Verdict> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let argon = self.argon.clone();
        let dummy = self.dummy.clone();
        let password = password.clone();
        let scratch = self.scratch.clone();
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
            let ok = verify_phc(&scratch, password.expose_secret().as_bytes(), &parsed)?;
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
        // A standard PHC string: the reference verifier of the argon2 crate accepts it.
        use argon2::password_hash::PasswordVerifier as _;
        let parsed = PasswordHash::new(&phc).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery staple", &parsed)
                .is_ok()
        );
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
