//! The rules of multi-factor authentication: TOTP (RFC 6238) enrollment and verification with
//! replay protection, and single-use recovery codes. Pure rules, no I/O: the caller stores the
//! secret, the last used time step and the recovery code hashes.

use hmac::{Hmac, Mac};
use rand::{Rng as _, RngCore as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, Builder, Totp, TotpError};

/// 160 bits, the length RFC 4226 §4 recommends (the output size of SHA-1, the HMAC used).
const SECRET_BYTES: usize = 20;
/// SHA-1, 6 digits and 30 s are the only parameters every authenticator app honours; some accept
/// other values in the URI and silently use these instead, so the codes would never match.
const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// One step back absorbs the time spent typing and a phone clock a little behind (RFC 6238 §5.2
/// recommends at most one). No step forward: a code the app will only show later is not accepted,
/// which halves the codes an attacker can be right with at any moment.
const SKEW_BACK_STEPS: u64 = 1;

/// Recovery code characters: no 0/O, 1/I/L, which are confused when read aloud or copied from
/// paper. 31 symbols, so 10 of them carry 10 × log2(31) ≈ 49.5 bits.
const RECOVERY_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const RECOVERY_LEN: usize = 10;
const RECOVERY_CODES: usize = 10;

/// Why a TOTP code was refused. The messages are fit for the client; none says which step or
/// how close the code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MfaError {
    #[error("the code must be 6 digits")]
    Malformed,
    #[error("the code is not valid")]
    Invalid,
    #[error("the code has already been used")]
    Replayed,
}

/// What the user needs to add the account to an authenticator app: the secret to type in, and
/// the URI to show as a QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_uri: String,
}

/// A new TOTP secret from the thread-local CSPRNG.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// The parameters shared by enrollment and verification, so the two cannot drift apart.
fn builder(secret: &[u8]) -> Builder {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_skew(SKEW_BACK_STEPS as u16)
        .with_secret(secret)
}

/// The enrollment data for `secret`, labelled `issuer:account_email` in the app.
pub fn enrollment(secret: &[u8], account_email: &str, issuer: &str) -> anyhow::Result<Enrollment> {
    let totp = builder(secret)
        .with_account_name(account_email)
        .with_issuer(Some(issuer))
        .build()
        .map_err(describe)?;
    let otpauth_uri = totp.to_url().map_err(describe)?;
    Ok(Enrollment {
        secret_base32: totp.secret().to_base32(),
        otpauth_uri,
    })
}

/// An error without the values it carries: the account name is an e-mail address, which does not
/// belong in logs.
fn describe(e: TotpError) -> anyhow::Error {
    match e {
        TotpError::InvalidAccountName { .. } => {
            anyhow::anyhow!("the account name contains ':', which an otpauth label cannot carry")
        }
        TotpError::InvalidIssuer { .. } => {
            anyhow::anyhow!("the issuer contains ':', which an otpauth label cannot carry")
        }
        TotpError::AccountNameNotSet => anyhow::anyhow!("the account name is empty"),
        other => anyhow::anyhow!("TOTP parameters: {other}"),
    }
}

/// Checks `code` against the current step of `now_unix` and the one before and returns the matched time step
/// (`unix / 30`), which the caller stores as the new `last_used_step`. A step at or before
/// `last_used_step` is refused, so a code works once, and an observed code cannot be replayed
/// within its validity window (RFC 6238 §5.2).
pub fn verify(secret: &[u8], code: &str, now_unix: u64, last_used_step: Option<i64>) -> Result<i64, MfaError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MfaError::Malformed);
    }
    // The secret was checked at enrollment; one that no longer builds (too short, corrupted)
    // refuses every code rather than accepting predictable ones.
    let totp = builder(secret).build().map_err(|_| MfaError::Invalid)?;
    let now = now_unix / STEP_SECS;
    let mut matched = None;
    // Every step in the window is computed and compared, without stopping at the first match.
    // The highest matching step is kept: were a code to match two steps (a 1 in 10^6
    // coincidence), storing the later one keeps it from being accepted a second time.
    for step in now.saturating_sub(SKEW_BACK_STEPS)..=now {
        if let Some(expected) = code_at(&totp, step)
            && bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(MfaError::Invalid)?;
    let step = i64::try_from(step).expect("a step is at most u64::MAX / 30 + 1, far below i64::MAX");
    if last_used_step.is_some_and(|last| step <= last) {
        return Err(MfaError::Replayed);
    }
    Ok(step)
}

/// The code of time step `step`; `None` for a step whose start does not fit in a u64 (the far
/// future only a bogus clock reaches).
fn code_at(totp: &Totp, step: u64) -> Option<String> {
    let start = step.checked_mul(STEP_SECS)?;
    Some(totp.generate(start).to_string())
}

/// Ten fresh recovery codes, `XXXXX-XXXXX`, all different. They are shown to the user once;
/// only their hashes are kept.
pub fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    let mut codes: Vec<String> = Vec::with_capacity(RECOVERY_CODES);
    while codes.len() < RECOVERY_CODES {
        let mut code = String::with_capacity(RECOVERY_LEN + 1);
        for i in 0..RECOVERY_LEN {
            if i == RECOVERY_LEN / 2 {
                code.push('-');
            }
            code.push(char::from(
                RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())],
            ));
        }
        // A repeat is all but impossible (2^-49 per pair), but two equal codes would share one
        // stored hash and one would silently stop working after the other is used.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// Upper case, with dashes and whitespace removed: how a code is typed does not matter.
fn canonical(input: &str) -> String {
    input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The canonical form of a typed recovery code (`"abcde fghjk"` → `"ABCDEFGHJK"`), or `None`
/// when it cannot be one of ours: lets the caller refuse garbage before any lookup.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let code = canonical(input);
    (code.len() == RECOVERY_LEN && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))).then_some(code)
}

/// What was stored for a recovery code before they were hashed with argon2id (the caller does
/// that now, ASVS 6.5.2): HMAC-SHA256 of its canonical form keyed with the server pepper. Kept to
/// spend the codes handed out before. Anything that does not normalize still hashes, to a value no
/// stored code has.
pub fn recovery_code_hash(pepper: &[u8], code: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper).expect("HMAC takes any key length");
    mac.update(canonical(code).as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6238 appendix B SHA-1 seed.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 appendix B, SHA-1: (T, 8-digit TOTP). Dynamic truncation yields a 31-bit number
    /// reduced mod 10^digits, so the 6-digit code is the 8-digit one mod 10^6: its last 6 digits.
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    /// `ABCDEFGHJK` → `ABCDE-FGHJK`, as `new_recovery_codes` shows them.
    fn display_form(normalized: &str) -> String {
        let (head, tail) = normalized.split_at(RECOVERY_LEN / 2);
        format!("{head}-{tail}")
    }

    fn six(eight: &str) -> &str {
        &eight[2..]
    }

    fn step(t: u64) -> i64 {
        i64::try_from(t / STEP_SECS).expect("test times are small")
    }

    #[test]
    fn rfc6238_sha1_vectors_as_six_digits() {
        for (t, eight) in RFC_VECTORS {
            assert_eq!(verify(RFC_SECRET, six(eight), t, None), Ok(step(t)), "T={t}");
        }
        assert_eq!(six("94287082"), "287082");
    }

    #[test]
    fn the_current_step_and_one_back_are_accepted_not_forward() {
        let (t, eight) = RFC_VECTORS[1];
        let code = six(eight);
        // Typed a little late: the code of the step before is still good.
        assert_eq!(verify(RFC_SECRET, code, t + 30, None), Ok(step(t)));
        // A code of the next step (the phone ahead, or a guess at a later code) is refused.
        for now in [t - 30, t - 60, t + 60] {
            assert_eq!(verify(RFC_SECRET, code, now, None), Err(MfaError::Invalid), "now={now}");
        }
    }

    #[test]
    fn first_step_has_no_underflow() {
        let totp = builder(RFC_SECRET).build().expect("totp");
        let first = code_at(&totp, 0).expect("code");
        assert_eq!(verify(RFC_SECRET, &first, 0, None), Ok(0));
    }

    #[test]
    fn wrong_code_is_invalid() {
        let (t, eight) = RFC_VECTORS[0];
        let wrong = if six(eight) == "000000" { "111111" } else { "000000" };
        assert_eq!(verify(RFC_SECRET, wrong, t, None), Err(MfaError::Invalid));
        assert_eq!(verify(&new_secret(), six(eight), t, None), Err(MfaError::Invalid));
    }

    #[test]
    fn replay_refused_next_step_accepted() {
        let (t, eight) = RFC_VECTORS[2];
        let code = six(eight);
        let used = verify(RFC_SECRET, code, t, None).expect("first use");
        assert_eq!(used, step(t));
        // The same code again, at once and a step later (still inside the window).
        assert_eq!(verify(RFC_SECRET, code, t, Some(used)), Err(MfaError::Replayed));
        assert_eq!(verify(RFC_SECRET, code, t + 30, Some(used)), Err(MfaError::Replayed));
        // A code of an earlier step than the last one used.
        assert_eq!(verify(RFC_SECRET, code, t, Some(used + 1)), Err(MfaError::Replayed));
        // The next step's code, generated the way an app would, once that step has come.
        let next = totp_rs::Totp::from_url(enrollment(RFC_SECRET, "a@b.c", "Test").expect("enroll").otpauth_uri)
            .expect("uri")
            .generate(t + 30)
            .to_string();
        assert_eq!(verify(RFC_SECRET, &next, t, Some(used)), Err(MfaError::Invalid));
        assert_eq!(verify(RFC_SECRET, &next, t + 30, Some(used)), Ok(used + 1));
    }

    #[test]
    fn malformed_codes() {
        let (t, eight) = RFC_VECTORS[0];
        for bad in [
            "12345",
            "1234567",
            "12a456",
            "",
            "      ",
            "+12345",
            "28 7082",
            "２８７０８２",
        ] {
            assert_eq!(verify(RFC_SECRET, bad, t, None), Err(MfaError::Malformed), "{bad:?}");
        }
        // Surrounding whitespace is what copy and paste adds; it is not part of the code.
        assert_eq!(verify(RFC_SECRET, &format!(" {}\n", six(eight)), t, None), Ok(step(t)));
    }

    #[test]
    fn unusable_secret_refuses_everything() {
        let (t, eight) = RFC_VECTORS[0];
        assert_eq!(verify(&[], six(eight), t, None), Err(MfaError::Invalid));
        assert_eq!(verify(&RFC_SECRET[..15], six(eight), t, None), Err(MfaError::Invalid));
    }

    #[test]
    fn enrollment_uri() {
        let secret = new_secret();
        assert_eq!(secret.len(), 20);
        assert_ne!(secret, new_secret());
        let e = enrollment(&secret, "ada@example.org", "Safe Streets").expect("enroll");
        assert!(e.otpauth_uri.starts_with("otpauth://totp/"), "{}", e.otpauth_uri);
        assert!(e.otpauth_uri.contains("issuer=Safe%20Streets"), "{}", e.otpauth_uri);
        assert!(e.otpauth_uri.contains("ada%40example.org"), "{}", e.otpauth_uri);
        assert!(
            e.otpauth_uri.contains(&format!("secret={}", e.secret_base32)),
            "{}",
            e.otpauth_uri
        );
        assert_eq!(e.secret_base32.len(), 32);
        assert_eq!(
            totp_rs::Secret::try_from_base32(&e.secret_base32)
                .expect("base32")
                .as_bytes(),
            &secret[..]
        );
        // What an app reads from the URI produces codes that verify accepts.
        let app = totp_rs::Totp::from_url(&e.otpauth_uri).expect("parse");
        assert_eq!((app.algorithm(), app.digits(), app.step()), (Algorithm::SHA1, 6, 30));
        let now = 1_700_000_000;
        assert_eq!(
            verify(&secret, &app.generate(now).to_string(), now, None),
            Ok(step(now))
        );
    }

    #[test]
    fn enrollment_refusals() {
        let secret = new_secret();
        let err = enrollment(&secret, "a:b@example.org", "Issuer").expect_err("colon");
        assert!(!err.to_string().contains("example.org"), "{err}");
        assert!(enrollment(&secret, "a@example.org", "Iss:uer").is_err());
        assert!(enrollment(&secret, "", "Issuer").is_err());
        assert!(enrollment(&secret[..15], "a@example.org", "Issuer").is_err());
    }

    #[test]
    fn recovery_codes_format() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        let mut distinct = codes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 11, "{code}");
            assert_eq!(code.as_bytes()[5], b'-', "{code}");
            assert!(
                code.bytes()
                    .enumerate()
                    .all(|(i, b)| i == 5 || RECOVERY_ALPHABET.contains(&b)),
                "{code}"
            );
            assert!(!code.contains(['0', 'O', '1', 'I', 'L']), "{code}");
        }
    }

    #[test]
    fn recovery_code_normalization() {
        assert_eq!(normalize_recovery_code("abcde fghjk"), Some("ABCDEFGHJK".to_owned()));
        assert_eq!(normalize_recovery_code(" ABCDE-FGHJK\n"), Some("ABCDEFGHJK".to_owned()));
        assert_eq!(
            normalize_recovery_code("a-b-c-d-e-f-g-h-j-k"),
            Some("ABCDEFGHJK".to_owned())
        );
        for bad in [
            "",
            "ABCDE-FGHJ",
            "ABCDE-FGHJKM",
            "ABCDE-FGHJ0",
            "ABCDE-FGHJI",
            "ABCDE-FGHJL",
            "ABCDE_FGHJK",
        ] {
            assert_eq!(normalize_recovery_code(bad), None, "{bad:?}");
        }
        // Non-ASCII that upper-cases to several letters must not sneak in.
        assert_eq!(normalize_recovery_code("ABCDE-FGHßK"), None);
        for code in new_recovery_codes() {
            let typed = code.to_lowercase().replace('-', " ");
            let normalized = normalize_recovery_code(&typed).expect("round trip");
            assert_eq!(display_form(&normalized), code);
        }
    }

    #[test]
    fn recovery_code_hashes() {
        let pepper = b"pepper-one";
        let h = recovery_code_hash(pepper, "ABCDE-FGHJK");
        assert_eq!(h.len(), 32);
        assert_eq!(h, recovery_code_hash(pepper, "abcde fghjk"));
        assert_eq!(h, recovery_code_hash(pepper, "ABCDEFGHJK"));
        assert_ne!(h, recovery_code_hash(b"pepper-two", "ABCDE-FGHJK"));
        assert_ne!(h, recovery_code_hash(pepper, "ABCDE-FGHJM"));
    }
}
