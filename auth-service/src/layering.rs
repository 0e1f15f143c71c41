//! The layering rule of auth-service, checked on the source text:
//!
//! - `grpc/` (the protocol) calls the use cases and reads domain records: it names no `store` and
//!   no diesel;
//! - `service/` (the use cases) calls the store, the rules and Redis: it names no diesel crate (its
//!   errors are `StoreError`, its transactions come through `store::Transaction`) and no protocol;
//! - `store/` (the only place with SQL) takes and returns `domain` types: it names no other module
//!   of the crate, so it applies no rule;
//! - the rule modules and `domain` do no I/O: they name no store, use case, protocol or diesel;
//! - every query lives in `store/`: no other file, entry points (`main`, `admin`) and background
//!   tasks (`revocation/`) included, builds one;
//! - the third-party clients (`captcha`, `mailer`) know neither the store nor the protocol.

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

/// Every `.rs` file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
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

#[test]
fn every_query_lives_in_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    files_under(&src, &mut files);
    let outside: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).expect("under src").display().to_string())
        .filter(|f| !f.starts_with("store/") && f != "layering.rs")
        .collect();
    // Guards the walk itself: entry points and background tasks are among the files read.
    for expected in ["main.rs", "admin.rs", "revocation/sync.rs", "service/sessions.rs"] {
        assert!(outside.iter().any(|f| f == expected), "{expected} not read");
    }
    for file in &outside {
        assert_never(file, &["diesel::", "diesel_async", "RunQueryDsl", "sql_query"]);
    }
}

#[test]
fn third_party_clients_know_neither_store_nor_protocol() {
    for module in ["captcha.rs", "mailer.rs"] {
        assert_never(
            module,
            &["crate::store", "crate::grpc", "crate::service", "diesel", "tonic"],
        );
    }
}
