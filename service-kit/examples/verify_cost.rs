//! The cost of verifying one access token, for `cargo xtask bench`, which runs it in release:
//! `cargo run --release -p service-kit --example verify_cost`. Prints two numbers, microseconds per
//! token: the first verification of a token (signature and claims) and a repeat (the cache).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use service_kit::auth::{ACCESS_TOKEN_TYPE, AccessClaims, KeySource, PublicKey, TokenError, Verifier, VerifierConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let now = jsonwebtoken::get_current_timestamp();
    let claims = AccessClaims {
        iss: "https://auth.platform.local".into(),
        aud: "platform-api".into(),
        sub: "00000000-0000-0000-0000-000000000001".into(),
        exp: now + 3600,
        iat: now,
        nbf: now,
        iat_ms: now * 1000,
        jti: "00000000-0000-0000-0000-000000000002".into(),
        sid: "00000000-0000-0000-0000-000000000003".into(),
        did: "bench".into(),
        roles: vec!["user".into()],
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("bench".into());
    header.typ = Some(ACCESS_TOKEN_TYPE.into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes())?,
    )?;
    let keys = vec![PublicKey { kid: "bench".into(), x }];
    let source: KeySource = Arc::new(move || {
        let keys = keys.clone();
        Box::pin(async move { Ok(keys) })
    });
    let verifier = Verifier::new(
        VerifierConfig {
            issuer: claims.iss.clone(),
            audience: claims.aud.clone(),
            leeway: Duration::from_secs(30),
            refetch_interval: Duration::from_secs(5),
            refresh_interval: service_kit::auth::DEFAULT_REFRESH_INTERVAL,
        },
        source,
    );
    verifier
        .verify(&token)
        .await
        .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
    let first = per_token(|| verifier.verify_uncached(&token)).await?;
    let repeat = per_token(|| verifier.verify(&token)).await?;
    // The report is this program's output (read by `cargo xtask bench`).
    use std::io::Write as _;
    writeln!(std::io::stdout(), "{first:.2} {repeat:.2}")?;
    Ok(())
}

/// Microseconds per call of `verify`, over enough calls to even out the timer.
async fn per_token<T, F>(mut verify: impl FnMut() -> F) -> anyhow::Result<f64>
where
    F: Future<Output = Result<T, TokenError>>,
{
    const N: u32 = 20_000;
    let started = Instant::now();
    for _ in 0..N {
        verify().await.map_err(|e| anyhow::anyhow!("verify: {e}"))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(N))
}
