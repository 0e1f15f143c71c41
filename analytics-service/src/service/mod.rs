//! The use cases of analytics-service: each takes domain values, calls the store and answers
//! domain values. No protobuf, no diesel.

use std::collections::HashSet;

use prometheus::{IntCounter, IntCounterVec, Registry};
use service_kit::db::Pool;
use service_kit::store_error::StoreError;

use crate::domain::{IncomingEvent, Ingested};
use crate::store;

/// What the gRPC handlers call: event ingestion over the service's database.
#[derive(Clone)]
pub struct Events {
    pool: Pool,
    received: IntCounterVec,
    duplicates: IntCounter,
}

impl Events {
    pub fn new(pool: Pool, registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            pool,
            received: service_kit::metrics::counter_vec(
                registry,
                "events_received_total",
                "Valid events delivered to the sink, new or repeated",
                &["producer", "event_type"],
            )?,
            duplicates: service_kit::metrics::register(
                registry,
                IntCounter::new(
                    "events_duplicate_total",
                    "Events delivered again after they were stored (ignored)",
                )?,
            )?,
        })
    }

    /// Stores each event unless its id was stored before (delivery is at least once): all of the
    /// batch or, on an error, none of it.
    pub async fn ingest(&self, events: Vec<IncomingEvent>) -> Result<Ingested, StoreError> {
        let stored: HashSet<uuid::Uuid> = store::insert_new(&self.pool, &events).await?.into_iter().collect();
        for e in &events {
            self.received
                .with_label_values(&[e.producer.as_str(), e.event_type.as_str()])
                .inc();
        }
        let accepted = u32::try_from(stored.len()).unwrap_or(u32::MAX);
        let duplicates = u32::try_from(events.len()).unwrap_or(u32::MAX).saturating_sub(accepted);
        self.duplicates.inc_by(u64::from(duplicates));
        Ok(Ingested { accepted, duplicates })
    }
}
