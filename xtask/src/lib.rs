//! The development stack shared by `cargo xtask up`, `cargo xtask test` and the e2e tests:
//! a throwaway PostgreSQL cluster and Redis server, development secrets, per-service roles and
//! schemas, and the four platform processes.

pub mod bench;
pub mod certs;
pub mod deploy_checks;
pub mod devstack;
pub mod fake_smtp;
pub mod moto;
pub mod nginx;
pub mod otlp;
pub mod pitr;
pub mod platform;
pub mod provision;
pub mod schemathesis;
pub mod secrets;
pub mod testkit;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// A free TCP port on loopback, below the kernel's ephemeral range (32768 and up on Linux), so
/// that outgoing connections of parallel tests cannot take it between our check and the bind.
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng as _;
    for _ in 0..200 {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
