//! Issuing tokens: EdDSA access JWTs (`typ: at+jwt`, `kid`), and opaque 256-bit refresh tokens
//! stored only as SHA-256 hashes. A rotated refresh token is derived from the one it replaces
//! (HMAC with a server secret), so a phone that lost the answer and retries within the grace
//! period gets the very same new token back instead of a fork that would look like reuse.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::auth::{ACCESS_TOKEN_TYPE, AccessClaims};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::SigningKeys;

#[derive(Clone)]
pub struct TokenIssuer {
    keys: Arc<SigningKeys>,
    issuer: String,
    audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    refresh_secret: SecretString,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl TokenIssuer {
    pub fn new(
        keys: Arc<SigningKeys>,
        issuer: String,
        audience: String,
        access_ttl: Duration,
        refresh_ttl: Duration,
        refresh_secret: SecretString,
    ) -> Self {
        Self {
            keys,
            issuer,
            audience,
            access_ttl,
            refresh_ttl,
            refresh_secret,
        }
    }

    /// A signed access token for this session.
    pub fn access(&self, user: Uuid, session: Uuid, device: &str, roles: &[String]) -> anyhow::Result<String> {
        let (kid, key) = self.keys.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let now_ms = now_millis();
        let now = now_ms / 1000;
        let jti = Uuid::new_v4();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            exp: now + self.access_ttl.as_secs(),
            iat: now,
            nbf: now,
            iat_ms: now_ms,
            jti: jti.to_string(),
            sid: session.to_string(),
            did: device.to_owned(),
            roles: roles.to_vec(),
        };
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| anyhow::anyhow!("signing: {e}"))
    }

    /// A fresh random refresh token (a new session).
    pub fn new_refresh() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token that replaces `current` in `session`: deterministic, unguessable without the secret.
    pub fn next_refresh(&self, session: Uuid, current: &str) -> String {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.refresh_secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(session.as_bytes());
        mac.update(current.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// What is stored for a refresh token.
pub fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(
            Arc::new(SigningKeys::from_pem(PEM).expect("key")),
            "iss".into(),
            "aud".into(),
            Duration::from_secs(3600),
            Duration::from_secs(86400),
            SecretString::from("s3cret"),
        )
    }

    #[test]
    fn rotation_is_deterministic_per_session_and_secret() {
        let i = issuer();
        let s = Uuid::new_v4();
        let r0 = TokenIssuer::new_refresh();
        assert_eq!(URL_SAFE_NO_PAD.decode(&r0).expect("b64").len(), 32);
        let r1 = i.next_refresh(s, &r0);
        assert_eq!(r1, i.next_refresh(s, &r0));
        assert_ne!(r1, i.next_refresh(Uuid::new_v4(), &r0));
        assert_ne!(r1, r0);
        assert_eq!(refresh_hash(&r1).len(), 32);
    }

    #[test]
    fn access_token_header_and_claims() {
        let i = issuer();
        let t = i
            .access(Uuid::new_v4(), Uuid::new_v4(), "dev-1", &["user".to_owned()])
            .expect("sign");
        let header = jsonwebtoken::decode_header(&t).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(
            header.kid.as_deref(),
            Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
        );
    }
}
