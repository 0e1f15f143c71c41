//! The keys that sign access tokens, and their public halves as a JWKS document (RFC 7517,
//! RFC 8037 for Ed25519). Pure rules: parsing and derivation, no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// One public key as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// RFC 7638 thumbprint of the key, so the same key always has the same id.
    pub kid: String,
    /// Base64url of the 32-byte Ed25519 public key.
    pub x: String,
}

/// The configured signing keys; the first signs new tokens, the others only verify (rotation).
pub struct SigningKeys {
    keys: Vec<(PublicJwk, SigningKey)>,
    /// PKCS#8 DER of the current key, for jsonwebtoken.
    current: jsonwebtoken::EncodingKey,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("holds no PKCS#8 private key (expected -----BEGIN PRIVATE KEY----- blocks)")]
    Empty,
    #[error("holds a key that is not a valid PKCS#8 Ed25519 key (key {0})")]
    NotEd25519(usize),
    #[error("holds the same key twice (key {0})")]
    Duplicate(usize),
}

impl SigningKeys {
    /// Parses one or more PEM `PRIVATE KEY` blocks (Ed25519, PKCS#8), current key first.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<(PublicJwk, SigningKey)> = Vec::new();
        let mut current = None;
        for (index, der) in PrivatePkcs8KeyDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let der = der.map_err(|_| KeyError::NotEd25519(index + 1))?;
            let key =
                SigningKey::from_pkcs8_der(der.secret_pkcs8_der()).map_err(|_| KeyError::NotEd25519(index + 1))?;
            let jwk = public_jwk(&key);
            if current.is_none() {
                current = Some(jsonwebtoken::EncodingKey::from_ed_der(der.secret_pkcs8_der()));
            }
            if keys.iter().any(|(k, _)| k.kid == jwk.kid) {
                return Err(KeyError::Duplicate(index + 1));
            }
            keys.push((jwk, key));
        }
        match current {
            Some(current) => Ok(Self { keys, current }),
            None => Err(KeyError::Empty),
        }
    }

    /// The key id and key that sign new tokens.
    pub fn current(&self) -> (&str, &jsonwebtoken::EncodingKey) {
        // `from_pem` refuses an empty list, so there is always a first key.
        (
            self.keys.first().map(|(jwk, _)| jwk.kid.as_str()).unwrap_or_default(),
            &self.current,
        )
    }

    /// Every public key, current first.
    pub fn jwks(&self) -> impl Iterator<Item = &PublicJwk> {
        self.keys.iter().map(|(jwk, _)| jwk)
    }
}

fn public_jwk(key: &SigningKey) -> PublicJwk {
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    PublicJwk { kid, x }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 appendix A.1 private key, wrapped in PKCS#8 by `openssl pkey`.
    const RFC8037_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

    #[test]
    fn rfc8037_key_has_the_published_public_half_and_thumbprint() {
        let keys = SigningKeys::from_pem(RFC8037_PEM).expect("valid key");
        let jwk = keys.jwks().next().expect("one key");
        // RFC 8037 A.2 and A.3.
        assert_eq!(jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(jwk.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn rejects_empty_garbage_and_duplicates() {
        assert_eq!(SigningKeys::from_pem("").err(), Some(KeyError::Empty));
        assert_eq!(
            SigningKeys::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").err(),
            Some(KeyError::NotEd25519(1))
        );
        let twice = format!("{RFC8037_PEM}{RFC8037_PEM}");
        assert_eq!(SigningKeys::from_pem(&twice).err(), Some(KeyError::Duplicate(2)));
    }
}
