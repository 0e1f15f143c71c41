//! Strict query strings: unknown and repeated parameters are refused (parameter pollution), and
//! every value is parsed with an error that names the parameter.

use std::collections::HashMap;
use std::str::FromStr;

use crate::error::ApiError;

pub struct StrictQuery {
    values: HashMap<String, String>,
}

impl StrictQuery {
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::validation("query", "is not a valid query string"))?;
        let mut values = HashMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::validation(&truncate(&name), "is not a known parameter"));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::validation(&name, "is given more than once"));
            }
        }
        Ok(Self { values })
    }

    pub fn required<T: FromStr>(&self, name: &str, expected: &str) -> Result<T, ApiError> {
        self.optional(name, expected)?
            .ok_or_else(|| ApiError::validation(name, "is required"))
    }

    pub fn optional<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|_| ApiError::validation(name, &format!("must be {expected}"))),
        }
    }
}

/// Parameter names are echoed back in errors; an attacker's 10 kB name is not.
fn truncate(name: &str) -> String {
    name.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_unknown_parameters_are_refused() {
        let e = StrictQuery::parse("lat=1&lat=2", &["lat"]).err().expect("duplicate");
        assert_eq!(e.details[0].field, "lat");
        assert_eq!(e.details[0].issue, "is given more than once");
        let e = StrictQuery::parse(&format!("{}=1", "z".repeat(1000)), &["lat"])
            .err()
            .expect("unknown");
        assert_eq!(e.details[0].field.len(), 40);
    }

    #[test]
    fn values_are_typed() {
        let q = StrictQuery::parse("lat=52.5&radius_m=abc", &["lat", "radius_m", "limit"]).expect("parses");
        assert_eq!(q.required::<f64>("lat", "a number").ok(), Some(52.5));
        let e = q.required::<u32>("radius_m", "an integer").expect_err("not a number");
        assert_eq!(e.code, service_kit::errors::ErrorCode::ValidationFailed);
        assert_eq!(e.message, "radius_m must be an integer");
        assert!(q.optional::<u32>("limit", "an integer").expect("absent").is_none());
        assert_eq!(
            q.required::<u32>("limit", "x").err().map(|e| e.message),
            Some("limit is required".to_owned())
        );
    }
}
