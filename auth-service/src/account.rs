//! Account input that is valid by construction: e-mail, names, income tier, device, and the
//! password policy (12..=128 characters, not a common password). Pure rules, no I/O.

use std::collections::HashSet;
use std::sync::LazyLock;

/// Why an input was refused: the field and a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub issue: &'static str,
}

fn invalid(field: &'static str, issue: &'static str) -> Invalid {
    Invalid { field, issue }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// An e-mail address: trimmed, at most 254 bytes, one `@`, a dot in the domain, no spaces or
/// control characters. Compared case-insensitively (the database index is on `lower(email)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let e = raw.trim();
        let bad = || invalid("email", "must be a valid e-mail address");
        if e.is_empty() || e.len() > 254 || has_control(e) || e.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (local, domain) = e.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain.contains('.') {
            return Err(bad());
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(bad());
        }
        Ok(Self(e.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: trimmed, 1..=100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, Invalid> {
        let n = raw.trim();
        if n.is_empty() || n.chars().count() > 100 || has_control(n) {
            return Err(invalid(field, "must be 1 to 100 characters without control characters"));
        }
        Ok(Self(n.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const INCOME_TIERS: [&str; 5] = ["low", "lower_middle", "middle", "upper_middle", "high"];

/// `None` for an empty string (not given).
pub fn income_tier(raw: &str) -> Result<Option<&'static str>, Invalid> {
    if raw.is_empty() {
        return Ok(None);
    }
    INCOME_TIERS
        .iter()
        .find(|t| **t == raw)
        .copied()
        .map(Some)
        .ok_or_else(|| {
            invalid(
                "income_tier",
                "must be one of low, lower_middle, middle, upper_middle, high",
            )
        })
}

/// The device a login comes from, as the app reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub platform: &'static str,
    pub model: Option<String>,
    pub os_version: Option<String>,
}

impl Device {
    pub fn parse(device_id: &str, platform: &str, model: &str, os_version: &str) -> Result<Self, Invalid> {
        let id = device_id.trim();
        if id.is_empty() || id.len() > 128 || has_control(id) {
            return Err(invalid("device.device_id", "must be 1 to 128 characters"));
        }
        let platform = ["ios", "android", "web"]
            .into_iter()
            .find(|p| *p == platform)
            .ok_or_else(|| invalid("device.platform", "must be one of ios, android, web"))?;
        let optional = |v: &str, max: usize, field: &'static str| -> Result<Option<String>, Invalid> {
            let v = v.trim();
            if v.is_empty() {
                Ok(None)
            } else if v.chars().count() > max || has_control(v) {
                Err(invalid(field, "is too long or has control characters"))
            } else {
                Ok(Some(v.to_owned()))
            }
        };
        Ok(Self {
            device_id: id.to_owned(),
            platform,
            model: optional(model, 100, "device.model")?,
            os_version: optional(os_version, 50, "device.os_version")?,
        })
    }
}

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
    fn emails() {
        assert_eq!(
            Email::parse("  Ada@Example.org ").map(|e| e.0),
            Ok("Ada@Example.org".to_owned())
        );
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@@b.c",
            "a b@c.d",
            "a@.b",
            "a@b..c",
            "a@b.c.",
            "x'; DROP TABLE users;--@x.y",
        ] {
            // The last one has a space; SQL in e-mails is harmless anyway (bound parameters).
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(10_000))).is_err());
        assert!(Email::parse("o'brien+tag@example.org").is_ok());
    }

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

    #[test]
    fn names_tiers_devices() {
        assert!(PersonName::parse("  Ada ", "first_name").is_ok());
        assert_eq!(
            PersonName::parse("", "first_name").map_err(|e| e.field),
            Err("first_name")
        );
        assert!(PersonName::parse("a\u{0}b", "last_name").is_err());
        assert_eq!(income_tier(""), Ok(None));
        assert_eq!(income_tier("middle"), Ok(Some("middle")));
        assert!(income_tier("rich").is_err());
        assert!(Device::parse("dev-1", "ios", "", "").is_ok());
        assert_eq!(
            Device::parse("dev-1", "symbian", "", "").map_err(|e| e.field),
            Err("device.platform")
        );
        assert!(Device::parse("", "ios", "", "").is_err());
    }
}
