//! The layering rule of auth-service, checked on the source text:
//!
//! - `grpc/` (the protocol) calls the use cases and reads domain records: it names no `store` and
//!   no diesel;
//! - `service/` (the use cases) calls the store, the rules and Redis: it names no diesel crate (its
//!   errors are `StoreError`, its transactions come through `store::Transaction`) and no protocol;
//! - `store/` (the only place with SQL) takes and returns `domain` types: it names no other module
//!   of the crate, so it applies no rule;
//! - the rule modules and `domain` do no I/O: they name no store, use case, protocol or diesel.

use std::path::Path;

/// Every non-comment line of the `.rs` files under `src/<dir>` (or the file `src/<dir>`).
fn code_lines(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = vec![root.clone()];
    if root.is_dir() {
        files = std::fs::read_dir(&root)
            .expect("source folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
    }
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file");
        // The tests at the bottom of a file may build what they need.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            lines.push((file.display().to_string(), line.to_owned()));
        }
    }
    lines
}

fn assert_never(dir: &str, forbidden: &[&str]) {
    for (file, line) in code_lines(dir) {
        for word in forbidden {
            assert!(!line.contains(word), "{file} names {word}: {line}");
        }
    }
}

#[test]
fn grpc_calls_use_cases_not_the_store() {
    assert_never("grpc", &["crate::store", "store::", "diesel"]);
}

#[test]
fn use_cases_name_no_diesel_and_no_protocol() {
    assert_never("service", &["diesel", "tonic", "proto::", "crate::grpc"]);
}

#[test]
fn the_store_knows_only_domain_types() {
    for (file, line) in code_lines("store") {
        if let Some(i) = line.find("crate::") {
            assert!(line[i..].starts_with("crate::domain"), "{file}: {line}");
        }
    }
}

#[test]
fn rules_and_domain_do_no_io() {
    for module in [
        "domain.rs",
        "account.rs",
        "password.rs",
        "tokens.rs",
        "keys.rs",
        "mfa.rs",
        "sealed.rs",
    ] {
        let forbidden = [
            "crate::store",
            "crate::service",
            "crate::grpc",
            "crate::revocation",
            "diesel",
            "tonic",
            "redis",
        ];
        assert_never(module, &forbidden);
    }
}
