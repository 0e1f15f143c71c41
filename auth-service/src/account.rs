//! The password policy for new passwords: 12..=128 characters, not a common password (the shipped
//! list), not one with decoration. Pure rules, no I/O.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::domain::{Invalid, invalid};

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// Checks a new password against the policy. The password itself never leaves this function.
pub fn check_new_password(password: &str) -> Result<(), Invalid> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password(&"x".repeat(129)).is_err());
        assert_eq!(
            check_new_password("password1234").map_err(|e| e.issue),
            Err("is too common; choose a less predictable password")
        );
        assert!(check_new_password("PASSWORD1234!").is_err());
        assert!(check_new_password("aaaaaaaaaaaaaaa").is_err());
        assert!(check_new_password("1234567890123").is_err());
        assert!(check_new_password("correct horse battery staple").is_ok());
        assert!(check_new_password("Tr4in-Lamp-Orbit").is_ok());
    }
}
