//! Secrets auth-service keeps at rest (TOTP seeds) are sealed with AES-256-GCM. The master key
//! (`ENCRYPTION_KEY`, 32 bytes in base64) is never used as a key itself: HKDF-SHA256 splits it into
//! one key for sealing and one per HMAC purpose (e-mail hashes of the login counters), so one
//! secret to rotate covers them and no key serves two algorithms.
//!
//! Values sealed before the split (format version 1, sealed under the master key itself) still
//! open; new values are version 2. The recovery-code pepper of codes handed out before they were
//! hashed with argon2id stays the old HMAC derivation (`legacy_derive`), or those codes would stop
//! working.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// Format version of a sealed value (first byte): 1 sealed under the master key (before the HKDF
/// split, read only), 2 under the HKDF-derived sealing key.
const LEGACY_VERSION: u8 = 1;
const VERSION: u8 = 2;
const NONCE_LEN: usize = 12;
/// HKDF `info` of the sealing key.
const SEALING_INFO: &str = "auth-service/seal/aes-256-gcm/v2";

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    legacy_cipher: Aes256Gcm,
    hkdf: Hkdf<Sha256>,
    master: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("must be 32 bytes encoded in base64 (generate one with `openssl rand -base64 32`)")]
    BadKey,
    #[error("sealed value is corrupt or was sealed under another key")]
    Corrupt,
}

impl Sealer {
    /// The key in base64, standard or URL-safe alphabet, padded or not (`openssl rand -base64 32`
    /// and most secret generators give one of these).
    pub fn from_base64(key: &SecretString) -> Result<Self, SealError> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let text = key.expose_secret().trim();
        let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(SealError::BadKey)?;
        let master: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        let legacy_cipher = Aes256Gcm::new_from_slice(&master).map_err(|_| SealError::BadKey)?;
        // No salt: the master key is already uniformly random (RFC 5869 §3.1).
        let hkdf = Hkdf::<Sha256>::new(None, &master);
        let mut sealing = [0u8; 32];
        hkdf.expand(SEALING_INFO.as_bytes(), &mut sealing)
            .map_err(|_| SealError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&sealing).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            cipher,
            legacy_cipher,
            hkdf,
            master,
        })
    }

    /// `VERSION || nonce || ciphertext+tag`; `context` (e.g. the user id) is authenticated, so a
    /// value copied onto another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = aes_gcm::aead::Payload {
            msg: plaintext,
            aad: context,
        };
        // Encryption only fails for plaintexts beyond AES-GCM's 64 GiB limit.
        let ct = self
            .cipher
            .encrypt(&nonce, payload)
            .expect("a TOTP seed is far below the AES-GCM size limit");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a value of either format version.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 {
            return Err(SealError::Corrupt);
        }
        let cipher = match sealed[0] {
            VERSION => &self.cipher,
            LEGACY_VERSION => &self.legacy_cipher,
            _ => return Err(SealError::Corrupt),
        };
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let payload = aes_gcm::aead::Payload {
            msg: &sealed[1 + NONCE_LEN..],
            aad: context,
        };
        cipher.decrypt(nonce, payload).map_err(|_| SealError::Corrupt)
    }

    /// Whether `sealed` was sealed before the HKDF split (under the master key itself): worth
    /// sealing again once it has been opened.
    pub fn is_legacy(sealed: &[u8]) -> bool {
        sealed.first() == Some(&LEGACY_VERSION)
    }

    /// A 32-byte key for another purpose (`label` names it), split from the master key by HKDF.
    pub fn derive(&self, label: &str) -> Vec<u8> {
        let mut key = vec![0u8; 32];
        self.hkdf
            .expand(label.as_bytes(), &mut key)
            .expect("32 bytes is far below HKDF-SHA256's 8160-byte limit");
        key
    }

    /// The derivation used before the HKDF split (HMAC of the label under the master key): only
    /// for the pepper of recovery codes stored before they were hashed with argon2id.
    pub fn legacy_derive(&self, label: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.master).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::from_base64(&SecretString::from(STANDARD.encode([byte; 32]))).expect("key")
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let s = sealer(7);
        let sealed = s.seal(b"seed", b"user-1");
        assert_ne!(&sealed[1 + NONCE_LEN..], b"seed");
        assert_eq!(s.open(&sealed, b"user-1").as_deref(), Ok(&b"seed"[..]));
        assert_eq!(
            s.open(&sealed, b"user-2"),
            Err(SealError::Corrupt),
            "moved to another row"
        );
        assert_eq!(
            sealer(8).open(&sealed, b"user-1"),
            Err(SealError::Corrupt),
            "another key"
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(s.open(&flipped, b"user-1"), Err(SealError::Corrupt));
        assert_eq!(s.open(&[], b"user-1"), Err(SealError::Corrupt));
        assert_ne!(s.seal(b"seed", b"user-1"), sealed, "nonces differ");
    }

    /// A value sealed the way the service sealed before the HKDF split: version 1, AES-256-GCM
    /// under the master key itself.
    fn sealed_v1(master: [u8; 32], plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&master).expect("key");
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = aes_gcm::aead::Payload {
            msg: plaintext,
            aad: context,
        };
        let mut out = vec![LEGACY_VERSION];
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&cipher.encrypt(&nonce, payload).expect("encrypt"));
        out
    }

    #[test]
    fn seeds_sealed_before_the_split_still_open_and_new_ones_use_the_derived_key() {
        let s = sealer(7);
        let old = sealed_v1([7; 32], b"old seed", b"user-1");
        assert!(Sealer::is_legacy(&old));
        assert_eq!(s.open(&old, b"user-1").as_deref(), Ok(&b"old seed"[..]));
        assert_eq!(s.open(&old, b"user-2"), Err(SealError::Corrupt));
        let new = s.seal(b"new seed", b"user-1");
        assert_eq!(new[0], VERSION);
        assert!(!Sealer::is_legacy(&new));
        // Not sealed under the master key: relabelled as version 1 it does not open.
        let mut relabelled = new.clone();
        relabelled[0] = LEGACY_VERSION;
        assert_eq!(s.open(&relabelled, b"user-1"), Err(SealError::Corrupt));
        let mut unknown = new;
        unknown[0] = 9;
        assert_eq!(s.open(&unknown, b"user-1"), Err(SealError::Corrupt));
    }

    /// The values e2e `database::totp_seeds_and_recovery_codes_from_before_the_key_split_still_work`
    /// writes into the database (made with Python's `cryptography`, independent of this code).
    #[test]
    fn the_legacy_test_vectors_open() {
        let s = sealer(0x42);
        let user = uuid::Uuid::parse_str("00000000-0000-4000-8000-000000000017").expect("uuid");
        let blob =
            hex("01000102030405060708090a0b34eca2e9841ac533a4367521e2e96e0d05a5f75ac0f39948289bd4759492a0baa929fb02");
        assert_eq!(
            s.open(&blob, user.as_bytes()).as_deref(),
            Ok(&b"12345678901234567890"[..])
        );
        let pepper = s.legacy_derive("auth/recovery-codes/v1");
        assert_eq!(
            crate::mfa::recovery_code_hash(&pepper, "ABCDE-FGHJK"),
            hex("17ff97a79f1e37142511628807adc9ec39f1ed32d5fe5708786fc809f0e5e52e")
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn derived_keys_differ_from_the_master_key_and_from_each_other() {
        let s = sealer(7);
        let hmac_key = s.derive("auth/login-throttle/v1");
        assert_eq!(hmac_key.len(), 32);
        assert_ne!(hmac_key, vec![7u8; 32]);
        assert_ne!(hmac_key, s.derive(SEALING_INFO), "the HMAC key is not the sealing key");
        assert_ne!(s.derive("a"), s.legacy_derive("a"));
        // The legacy derivation is the one the recovery codes of before were peppered with.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).expect("key");
        mac.update(b"auth/recovery-codes/v1");
        assert_eq!(
            s.legacy_derive("auth/recovery-codes/v1"),
            mac.finalize().into_bytes().to_vec()
        );
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(Sealer::from_base64(&SecretString::from("not base64!")).is_err());
        assert!(Sealer::from_base64(&SecretString::from(STANDARD.encode([1u8; 16]))).is_err());
        // The URL-safe alphabet without padding names the same key.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let url_safe =
            Sealer::from_base64(&SecretString::from(URL_SAFE_NO_PAD.encode([0xfbu8; 32]))).expect("url-safe");
        assert_eq!(url_safe.derive("a"), sealer(0xfb).derive("a"));
        assert_ne!(sealer(1).derive("a"), sealer(1).derive("b"));
        assert_eq!(sealer(1).derive("a"), sealer(1).derive("a"));
    }
}
