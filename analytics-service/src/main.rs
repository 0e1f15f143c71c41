//! analytics-service: event ingestion, rollups, forecasts, peer comparison and insights.
//! Wiring only. Its RPCs arrive with the analytics issue; until then it serves health and
//! reflection over its migrated schema, so deployments and readiness can be wired end to end.

use std::process::ExitCode;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use service_kit::config::Env;
use service_kit::db::Pool;
use tonic::service::Routes;

struct AnalyticsService;

impl service_kit::service::Service for AnalyticsService {
    const NAME: &'static str = "analytics-service";
    const ABOUT: &'static str =
        "Spending analytics, forecasts, peer comparison and usage events (gRPC analytics.v1, schema `analytics`)";
    const SCHEMA: &'static str = "analytics";
    const DEFAULT_GRPC_PORT: u16 = 50053;
    const DEFAULT_ADMIN_PORT: u16 = 9093;
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
    const GRPC_SERVICES: &'static [&'static str] = &[];
    const FILE_DESCRIPTOR_SET: &'static [u8] = proto::FILE_DESCRIPTOR_SET;
    type Config = ();

    fn config(_env: &Env, _common: &service_kit::config::CommonConfig) -> Option<()> {
        Some(())
    }

    fn routes(_config: (), _pool: Pool, _registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        Ok(Routes::default())
    }
}

fn main() -> ExitCode {
    service_kit::service::main::<AnalyticsService>()
}
