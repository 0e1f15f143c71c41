//! analytics-service: event ingestion, rollups, forecasts, peer comparison and insights.
//! Wiring only. A call goes `grpc` (decode into `domain` values) → `service` (the use case) →
//! `store` (diesel). Today it serves `events.v1.EventSink`: the services' outbox relays deliver
//! their domain events here, stored once by event id.

mod domain;
mod grpc;
mod service;
mod store;

use std::process::ExitCode;

use service_kit::config::Env;
use service_kit::db::Pool;
use tonic::service::Routes;

struct AnalyticsService;

impl service_kit::service::Service for AnalyticsService {
    service_kit::service_identity!(schema: analytics, ports: (50053, 9093), grpc: ["events.v1.EventSink"]);
    const ABOUT: &'static str = "Spending analytics, forecasts, peer comparison and usage events (gRPC analytics.v1, events.v1, schema `analytics`)";
    type Config = ();

    fn config(_env: &Env, _common: &service_kit::config::CommonConfig) -> Option<()> {
        Some(())
    }

    fn routes(_config: (), pool: Pool, registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let events = service::Events::new(pool, registry)?;
        Ok(Routes::new(proto::events::v1::event_sink_server::EventSinkServer::new(
            grpc::EventSinkGrpc::new(events),
        )))
    }
}

fn main() -> ExitCode {
    service_kit::service::main::<AnalyticsService>()
}

#[cfg(test)]
mod layering;
