//! Secrets auth-service keeps at rest (TOTP seeds) are sealed with AES-256-GCM under the master key
//! (`ENCRYPTION_KEY`, 32 bytes in base64). Keys for other purposes (the recovery-code pepper) are
//! derived from it by HMAC with a label, so one secret to rotate covers them.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// Format version of a sealed value (first byte), so the format can change.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
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
        let cipher = Aes256Gcm::new_from_slice(&master).map_err(|_| SealError::BadKey)?;
        Ok(Self { cipher, master })
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

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Corrupt);
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let payload = aes_gcm::aead::Payload {
            msg: &sealed[1 + NONCE_LEN..],
            aad: context,
        };
        self.cipher.decrypt(nonce, payload).map_err(|_| SealError::Corrupt)
    }

    /// A key for another purpose, derived from the master key.
    pub fn derive(&self, label: &str) -> Vec<u8> {
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
