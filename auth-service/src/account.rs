//! The password policy for new passwords: 12..=128 characters, not a common password (the shipped
//! list), not one with decoration, not one containing the user's name or e-mail local part. Pure
//! rules, no I/O.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::domain::{Invalid, invalid};

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// Parts of a user's identity shorter than this are not looked for in a password: "Al" or "li"
/// occur in too many good passphrases.
const MIN_PERSONAL_PART: usize = 3;

/// What a password must not contain: the e-mail's local part and the names, whole and split at
/// the separators people use (`ada.lovelace+news` → `ada.lovelace+news`, `ada`, `lovelace`,
/// `news`), lower-cased, each of at least [`MIN_PERSONAL_PART`] characters.
pub fn personal_parts(email: &str, first_name: &str, last_name: &str) -> Vec<String> {
    let local = email.trim().split('@').next().unwrap_or_default();
    let mut parts = Vec::new();
    for whole in [local, first_name.trim(), last_name.trim()] {
        parts.push(whole.to_lowercase());
        parts.extend(
            whole
                .split(|c: char| c.is_whitespace() || matches!(c, '.' | '_' | '-' | '+' | '\''))
                .map(str::to_lowercase),
        );
    }
    parts.retain(|p| p.chars().count() >= MIN_PERSONAL_PART);
    parts.sort_unstable();
    parts.dedup();
    parts
}

/// Checks a new password against the policy; `personal` is what [`personal_parts`] gives for the
/// account. The password itself never leaves this function.
pub fn check_new_password(password: &str, personal: &[String]) -> Result<(), Invalid> {
    let chars = password.chars().count();
    if !(12..=128).contains(&chars) {
        return Err(invalid("password", "must be 12 to 128 characters"));
    }
    let lower = password.to_lowercase();
    // "password1234!" is "password" with decoration: strip trailing digits and symbols too.
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let mut distinct = lower.chars().collect::<Vec<_>>();
    distinct.sort_unstable();
    distinct.dedup();
    // A common password of 8+ characters with something appended ("1234567890123").
    let common_prefix = lower
        .char_indices()
        .map(|(i, c)| &lower[..i + c.len_utf8()])
        .any(|prefix| prefix.len() >= 8 && prefix.len() * 2 >= lower.len() && COMMON.contains(prefix));
    if COMMON.contains(lower.as_str())
        || (stem.len() >= 4 && COMMON.contains(stem))
        || common_prefix
        || distinct.len() < 4
    {
        return Err(invalid("password", "is too common; choose a less predictable password"));
    }
    if personal.iter().any(|part| lower.contains(part.as_str())) {
        return Err(invalid(
            "password",
            "must not contain your name or the name part of your e-mail address",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        let none: &[String] = &[];
        assert!(check_new_password("short", none).is_err());
        assert!(check_new_password(&"x".repeat(129), none).is_err());
        assert_eq!(
            check_new_password("password1234", none).map_err(|e| e.issue),
            Err("is too common; choose a less predictable password")
        );
        assert!(check_new_password("PASSWORD1234!", none).is_err());
        assert!(check_new_password("aaaaaaaaaaaaaaa", none).is_err());
        assert!(check_new_password("1234567890123", none).is_err());
        assert!(check_new_password("correct horse battery staple", none).is_ok());
        assert!(check_new_password("Tr4in-Lamp-Orbit", none).is_ok());
    }

    #[test]
    fn passwords_with_the_users_names_or_email_are_refused() {
        let ada = personal_parts("Ada.Lovelace+news@example.org", "Ada", "King-Noel");
        assert_eq!(
            ada,
            [
                "ada",
                "ada.lovelace+news",
                "king",
                "king-noel",
                "lovelace",
                "news",
                "noel"
            ]
        );
        for bad in [
            "my name is LOVELACE really",
            "correct ada horse battery",
            "kingdom of staples",
            "Ada.Lovelace+news forever",
        ] {
            assert_eq!(
                check_new_password(bad, &ada).map_err(|e| e.issue),
                Err("must not contain your name or the name part of your e-mail address"),
                "{bad}"
            );
        }
        assert!(check_new_password("correct horse battery staple", &ada).is_ok());
        // Parts under three characters are ignored: "Al" and "Li" are in many good passphrases.
        let al = personal_parts("al@example.org", "Al", "Li");
        assert!(al.is_empty(), "{al:?}");
        assert!(check_new_password("almost a lively passphrase", &al).is_ok());
    }
}
