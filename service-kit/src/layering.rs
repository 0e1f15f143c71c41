//! The layering rule of ARCHITECTURE.md ("Inside a service"), checked on a service's source text
//! so that a new module cannot bend it unnoticed: which of the crate's modules each layer names,
//! and which outside crates it must not. Every file under `src/` is read, so a new use case, rule
//! module or query is checked without a line in the test. Comment lines are left out (docs may
//! name the other layers). A service's test calls [`assert_arrows_point_one_way`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn code(source: &str) -> String {
    source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The modules of this crate that `source` names: `crate::m`, and each `m` of `crate::{m, …}`.
fn crate_modules(source: &str) -> BTreeSet<String> {
    let code = code(source);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest).to_owned());
            continue;
        };
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if c.is_whitespace() => {}
                _ if item_start => {
                    found.insert(ident(&group[i..]).to_owned());
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    found
}

/// Whether `source` has `word` as a whole identifier outside comments (`store`, not `store_error`).
fn names(source: &str, word: &str) -> bool {
    code(source)
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

fn set(modules: &[&str]) -> BTreeSet<String> {
    modules.iter().map(|m| (*m).to_owned()).collect()
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(src: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((path.strip_prefix(src).expect("under src").to_owned(), text));
        }
    }
}

/// Panics naming the first file under `src` (a service crate's `src/`) that names a module or a
/// crate its layer may not: `grpc.rs` or `grpc/` decode and call `service`; `domain.rs` stands
/// alone; `service/` calls `store` and the rule modules (every other top-level file); `store/`
/// answers `domain` records; rule modules take and give `domain` values.
pub fn assert_arrows_point_one_way(src: &Path) {
    let mut files = Vec::new();
    sources(src, src, &mut files);
    let top_level = |f: &str| files.iter().any(|(p, _)| p == Path::new(f));
    assert!(
        (top_level("grpc.rs") || top_level("grpc/mod.rs")) && top_level("domain.rs") && top_level("service/mod.rs"),
        "{} lacks a layer",
        src.display()
    );
    // Pure rule modules: every top-level module that is not one of the layers.
    let rules: BTreeSet<String> = files
        .iter()
        .filter(|(p, _)| p.components().count() == 1)
        .filter_map(|(p, _)| p.file_stem()?.to_str().map(str::to_owned))
        .filter(|m| !["main", "grpc", "domain", "layering"].contains(&m.as_str()))
        .collect();
    for (path, source) in &files {
        let used = crate_modules(source);
        let first = path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let (allowed, banned): (BTreeSet<String>, &[&str]) = match first {
            "main.rs" | "layering.rs" => continue,
            // Handlers decode into domain values and call use cases: never the store, never a rule.
            "grpc.rs" | "grpc" => (set(&["domain", "service", "grpc"]), &["diesel"]),
            // Domain values stand alone.
            "domain.rs" => (set(&[]), &["diesel", "proto", "tonic"]),
            // Use cases apply the rules and call the store.
            "service" => {
                let mut allowed = set(&["domain", "store", "service"]);
                allowed.extend(rules.iter().cloned());
                (allowed, &["diesel", "proto", "tonic"])
            }
            // The store answers domain records and applies no rule.
            "store" => (set(&["domain", "store"]), &["proto", "tonic"]),
            // Rules take and give domain values.
            _ => (set(&["domain"]), &["diesel", "proto", "tonic"]),
        };
        let stray: Vec<_> = used.difference(&allowed).collect();
        assert!(stray.is_empty(), "{} names {stray:?}", path.display());
        for word in banned {
            assert!(!names(source, word), "{} names {word}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_every_import_form() {
        let source = "use crate::{alerts, domain::{A, B}};\n// crate::store\nlet x = crate::service::f();";
        assert_eq!(crate_modules(source), set(&["alerts", "domain", "service"]));
        assert!(names("use service_kit::store_error::StoreError;", "store_error"));
        assert!(!names("use service_kit::store_error::StoreError;", "store"));
    }

    #[test]
    fn a_store_call_from_a_handler_is_caught() {
        let dir = std::env::temp_dir().join(format!("layering-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (file, text) in [
            ("main.rs", "mod grpc;"),
            ("domain.rs", ""),
            ("service/mod.rs", "use crate::store;"),
            ("store/mod.rs", "use crate::domain::X;"),
            ("grpc.rs", "use crate::store::insert;"),
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write");
        }
        let caught = std::panic::catch_unwind(|| assert_arrows_point_one_way(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(caught.is_err(), "grpc.rs naming the store passed");
    }
}
