//! reports-service: incident reports with attachments, budgets and expenses, encrypted at rest.
//! Wiring only. A call goes `grpc` (decode into `domain` values) → `service` (the use case) →
//! `store` (diesel), with the pure rules of `alerts` applied by the use case.

mod alerts;
mod attachments;
mod domain;
mod grpc;
mod service;
mod store;

use std::process::ExitCode;
use std::sync::Arc;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::auth::{Verifier, VerifierConfig};
use service_kit::config::Env;
use service_kit::db::Pool;
use service_kit::envelope::Keyring;
use service_kit::grpc_tls::GrpcTls;
use tonic::service::Routes;

use crate::service::attachments::{AttachmentMetrics, Attachments, AttachmentsConfig};

struct ReportsService;

/// reports-service's own settings: the master keyring, the attachments' limits and file store,
/// and where access tokens are verified (auth-service's JWKS).
struct Config {
    keyring: Keyring,
    attachments: AttachmentsConfig,
    auth_url: String,
    grpc_tls: GrpcTls,
    verifier: VerifierConfig,
}

impl service_kit::service::Service for ReportsService {
    const NAME: &'static str = "reports-service";
    const ABOUT: &'static str = "Incident reports and budgets (gRPC reports.v1, schema `reports`)";
    const SCHEMA: &'static str = "reports";
    const DEFAULT_GRPC_PORT: u16 = 50052;
    const DEFAULT_ADMIN_PORT: u16 = 9092;
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
    const GRPC_SERVICES: &'static [&'static str] = &["reports.v1.ReportsService"];
    const FILE_DESCRIPTOR_SET: &'static [u8] = proto::FILE_DESCRIPTOR_SET;
    type Config = Config;

    fn config(env: &Env, common: &service_kit::config::CommonConfig) -> Option<Config> {
        let keyring = Keyring::from_env(env);
        let attachments = AttachmentsConfig::from_env(env);
        let auth_url = env.string("AUTH_SERVICE_URL");
        let grpc_tls = GrpcTls::from_env(env, common.environment);
        Some(Config {
            keyring: keyring?,
            attachments: attachments?,
            auth_url: auth_url?,
            grpc_tls: grpc_tls?,
            verifier: VerifierConfig::from_env(env),
        })
    }

    fn routes(config: Config, pool: Pool, registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let mut auth = tonic::transport::Endpoint::from_shared(config.auth_url)?;
        if let Some(tls) = config.grpc_tls.client_config() {
            auth = auth.tls_config(tls)?;
        }
        let verifier = Verifier::new(config.verifier, service_kit::auth::jwks_over_grpc(auth.connect_lazy()));
        let keys = service::keys::DataKeys::new(Arc::new(config.keyring));
        let files = config.attachments.file_store.open()?;
        let metrics = AttachmentMetrics::register(registry)?;
        let attachments =
            Attachments::new(pool.clone(), keys, files, config.attachments, metrics).with_verifier(verifier);
        let reports = grpc::ReportsGrpc::new(service::Reports::new(pool), attachments);
        Ok(Routes::new(
            proto::reports::v1::reports_service_server::ReportsServiceServer::new(reports),
        ))
    }
}

fn main() -> ExitCode {
    service_kit::service::main::<ReportsService>()
}

#[cfg(test)]
mod layering;
