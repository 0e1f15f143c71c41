//! `service_identity!`: the constants of [`crate::service::Service`] that every service binary
//! spells the same way, from the few that tell the services apart.
//!
//! A service is named after the schema it owns (`auth` → `auth-service`), embeds the migrations in
//! `migrations/` next to its `Cargo.toml`, and serves the workspace's one descriptor set
//! (`proto::FILE_DESCRIPTOR_SET`) for reflection; only its schema, default ports and gRPC service
//! names differ. The binary's crate must depend on `diesel_migrations` and `proto` (the expansion
//! names them, and `embed_migrations!` reads the binary's own `CARGO_MANIFEST_DIR`).

/// Inside `impl service_kit::service::Service for X { … }`: `NAME`, `SCHEMA`, the default ports
/// (`ports: (gRPC, admin)`), `MIGRATIONS`, `GRPC_SERVICES` (`grpc: [...]`, the services whose health
/// follows the database) and `FILE_DESCRIPTOR_SET`. `ABOUT`, `Config` and the functions
/// stay the binary's own.
///
/// ```ignore
/// impl service_kit::service::Service for AuthService {
///     service_kit::service_identity!(schema: auth, ports: (50051, 9091), grpc: ["auth.v1.AuthService"]);
///     const ABOUT: &'static str = "…";
///     // …
/// }
/// ```
#[macro_export]
macro_rules! service_identity {
    (schema: $schema:ident, ports: ($grpc:literal, $admin:literal), grpc: [$($service:literal),+ $(,)?] $(,)?) => {
        const NAME: &'static str = concat!(stringify!($schema), "-service");
        const SCHEMA: &'static str = stringify!($schema);
        const DEFAULT_GRPC_PORT: u16 = $grpc;
        const DEFAULT_ADMIN_PORT: u16 = $admin;
        const MIGRATIONS: ::diesel_migrations::EmbeddedMigrations = ::diesel_migrations::embed_migrations!("migrations");
        const GRPC_SERVICES: &'static [&'static str] = &[$($service),+];
        const FILE_DESCRIPTOR_SET: &'static [u8] = ::proto::FILE_DESCRIPTOR_SET;
    };
}
