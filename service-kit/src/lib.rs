//! What every binary of the platform shares: configuration, telemetry, the admin server, the gRPC
//! server bootstrap, the database pool and migrations. Never domain logic.

pub mod admin;
pub mod auth;
pub mod config;
pub mod db;
pub mod envelope;
pub mod envelope_stream;
pub mod errors;
pub mod file_store;
pub mod grpc;
pub mod grpc_tls;
pub mod idempotency;
pub mod layering;
pub mod metrics;
pub mod outbox;
pub mod pg_tls;
pub mod proto_time;
pub mod redis;
pub mod revocation;
pub mod service;
pub mod service_identity;
pub mod shutdown;
pub mod statement;
pub mod store_error;
pub mod telemetry;
