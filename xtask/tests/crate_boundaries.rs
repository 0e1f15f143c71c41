//! The crate boundaries of ARCHITECTURE.md, read from each member's manifest: only the gateway
//! serves HTTP and it reaches no database; services never depend on each other or on the gateway;
//! service-kit and proto know no binary. A dependency that crosses one of these lines fails here,
//! before it can grow into an import.

use std::collections::BTreeSet;
use std::path::Path;

const SERVICES: &[&str] = &["auth-service", "reports-service", "analytics-service"];
/// Crates that talk to PostgreSQL: only services (and service-kit, which they share) may name them.
const DATABASE: &[&str] = &[
    "diesel",
    "diesel-async",
    "diesel_migrations",
    "tokio-postgres",
    "deadpool",
];
/// Crates that serve the public HTTP API: only the gateway may name them.
const HTTP_SERVER: &[&str] = &["actix-web", "actix-http", "actix-cors", "actix-tls"];

/// The names in `[dependencies]` of a member (dev-dependencies may reach across: tests drive
/// the whole platform).
fn dependencies(member: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace");
    let text = std::fs::read_to_string(root.join(member).join("Cargo.toml")).expect("read the manifest");
    let manifest: toml::Table = text.parse().expect("a valid manifest");
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

fn crossing(member: &str, forbidden: &[&str]) -> Vec<String> {
    dependencies(member)
        .into_iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect()
}

#[test]
fn the_reader_sees_the_dependencies_it_checks() {
    // Guards the test itself: a manifest read as empty would make every rule below pass.
    let gateway = dependencies("gateway");
    assert!(gateway.contains("actix-web") && gateway.contains("service-kit") && gateway.contains("proto"));
    let auth = dependencies("auth-service");
    assert!(auth.contains("diesel") && auth.contains("service-kit"));
}

#[test]
fn the_gateway_reaches_no_database_and_no_service_crate() {
    assert_eq!(crossing("gateway", DATABASE), Vec::<String>::new());
    assert_eq!(crossing("gateway", SERVICES), Vec::<String>::new());
}

#[test]
fn services_serve_no_http_and_import_neither_each_other_nor_the_gateway() {
    for service in SERVICES {
        assert_eq!(crossing(service, HTTP_SERVER), Vec::<String>::new(), "{service}");
        let others: Vec<&str> = SERVICES
            .iter()
            .copied()
            .filter(|s| s != service)
            .chain(["gateway", "xtask"])
            .collect();
        assert_eq!(crossing(service, &others), Vec::<String>::new(), "{service}");
    }
}

#[test]
fn shared_crates_know_no_binary() {
    let binaries: Vec<&str> = SERVICES.iter().copied().chain(["gateway", "xtask", "e2e"]).collect();
    for shared in ["service-kit", "proto"] {
        assert_eq!(crossing(shared, &binaries), Vec::<String>::new(), "{shared}");
        assert_eq!(crossing(shared, HTTP_SERVER), Vec::<String>::new(), "{shared}");
    }
}
