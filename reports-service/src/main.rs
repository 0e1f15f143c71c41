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

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::config::Env;
use service_kit::db::Pool;
use tonic::service::Routes;

struct ReportsService;

impl service_kit::service::Service for ReportsService {
    const NAME: &'static str = "reports-service";
    const ABOUT: &'static str = "Incident reports and budgets (gRPC reports.v1, schema `reports`)";
    const SCHEMA: &'static str = "reports";
    const DEFAULT_GRPC_PORT: u16 = 50052;
    const DEFAULT_ADMIN_PORT: u16 = 9092;
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
    const GRPC_SERVICES: &'static [&'static str] = &["reports.v1.ReportsService"];
    const FILE_DESCRIPTOR_SET: &'static [u8] = proto::FILE_DESCRIPTOR_SET;
    type Config = ();
    // Report events go to analytics-service through `reports.outbox` (service_kit::outbox).
    const OUTBOX_PRODUCER: Option<&'static str> = Some("reports");

    fn config(_env: &Env, _common: &service_kit::config::CommonConfig) -> Option<()> {
        Some(())
    }

    fn routes(_config: (), pool: Pool, _registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let reports = grpc::ReportsGrpc::new(service::Reports::new(pool), service::attachments::Attachments);
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
