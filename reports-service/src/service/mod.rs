//! The use cases of reports-service, one module per use case: each takes domain values, applies
//! the rules, calls the store and answers domain values. No protobuf, no diesel.
//!
//! A use case that can fail only in the store answers service-kit's `StoreError`; one with refusals
//! of its own gets an enum of them beside it, with `Store(#[from] StoreError)`.

pub mod attachments;
pub mod keys;
mod nearby_alerts;

use service_kit::db::Pool;

/// What the gRPC handlers call: the use cases over the service's database.
#[derive(Clone)]
pub struct Reports {
    pool: Pool,
}

impl Reports {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}
