//! reports-service: incident reports with attachments, budgets and expenses, encrypted at rest.
//! Wiring only. A call goes `grpc` (decode into `domain` values) → `service` (the use case) →
//! `store` (diesel), with the pure rules of `alerts` applied by the use case.

mod alerts;
mod attachments;
mod domain;
mod events;
mod grpc;
mod moderation;
mod service;
mod store;

use std::process::ExitCode;
use std::sync::Arc;

use service_kit::config::Env;
use service_kit::db::Pool;
use service_kit::envelope::Keyring;
use service_kit::service::OperatorCommand;
use tonic::service::Routes;

use crate::service::attachments::{AttachmentMetrics, Attachments, AttachmentsConfig};

struct ReportsService;

/// reports-service's own settings (README, "Configuration").
struct Config {
    /// `ENCRYPTION_KEYS`: the master keyring that wraps every user's data key.
    keyring: Keyring,
    /// `AUTH_SERVICE_URL` and the token settings: every call's token is verified here too.
    auth: grpc::auth::AuthSettings,
    /// The attachments' limits and file store (`MAX_FILE_SIZE`, `FILE_STORE_URL`, …).
    attachments: AttachmentsConfig,
}

impl service_kit::service::Service for ReportsService {
    service_kit::service_identity!(schema: reports, ports: (50052, 9092), grpc: ["reports.v1.ReportsService"]);
    const ABOUT: &'static str = "Incident reports and budgets (gRPC reports.v1, schema `reports`)";
    // Report events go to analytics-service through `reports.outbox` (service_kit::outbox).
    const OUTBOX_PRODUCER: Option<&'static str> = Some("reports");
    // An upload of MAX_FILE_SIZE from a phone on a slow network (the gateway's UPLOAD_TIMEOUT_MS
    // is the real bound; this one only has to be longer).
    const MAX_CALL: std::time::Duration = std::time::Duration::from_secs(3600);
    type Config = Config;

    fn config(env: &Env, common: &service_kit::config::CommonConfig) -> Option<Config> {
        let keyring = Keyring::from_env(env);
        let auth = grpc::auth::AuthSettings::from_env(env, common);
        let attachments = AttachmentsConfig::from_env(env);
        Some(Config {
            keyring: keyring?,
            auth: auth?,
            attachments: attachments?,
        })
    }

    fn extra_commands() -> Vec<clap::Command> {
        vec![
            clap::Command::new("rotate-master-key").about(
                "Re-wrap every data key under the first key of ENCRYPTION_KEYS, batch by batch (safe to run again)",
            ),
        ]
    }

    async fn run_extra(command: OperatorCommand) -> anyhow::Result<()> {
        let keyring = Keyring::from_env(&command.env);
        command.env.finish()?;
        let keyring = keyring.ok_or_else(|| anyhow::anyhow!("ENCRYPTION_KEYS is missing"))?;
        let current = keyring.current_id().to_owned();
        let keys = service::DataKeys::new(Arc::new(keyring));
        let rewrapped = service::rotate_master_key(&command.pool, &keys).await?;
        tracing::info!(
            rewrapped,
            current,
            "every data key is wrapped under the current master key"
        );
        Ok(())
    }

    fn routes(config: Config, pool: Pool, registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let keys = service::DataKeys::new(Arc::new(config.keyring));
        let verifier = config.auth.verifier()?;
        let files = config.attachments.file_store.open()?;
        let attachments = Attachments::new(
            pool.clone(),
            keys.clone(),
            files,
            config.attachments,
            AttachmentMetrics::register(registry)?,
        );
        let reports = service::Reports::new(pool, keys, service::ReportMetrics::register(registry)?);
        reports.spawn_purge();
        let reports = grpc::ReportsGrpc::new(reports, attachments, verifier);
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
