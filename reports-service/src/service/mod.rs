//! The use cases of reports-service, one module per use case: each takes domain values, applies
//! the rules, calls the store and answers domain values. No protobuf, no diesel.
//!
//! A use case that can fail only in the store answers service-kit's `StoreError`; one with refusals
//! of its own gets an enum of them beside it, with `Store(#[from] StoreError)`.
//!
//! Every transaction starts with `store::enter_scope`: the reporter's id and role `user` for a
//! reporter's calls, role `moderator` for the moderators' calls, `alerts` for nearby alerts, and
//! `reports-service` for work across users (key rotation, the purge of idempotency keys).

pub mod attachments;
pub mod keys;
mod moderation;
mod nearby_alerts;
mod reports;
mod rotation;

use std::time::Duration;

use prometheus::{IntCounterVec, Registry};
use service_kit::db::Pool;
use service_kit::store_error::StoreError;

pub use self::keys::{DataKeys, KeyError};
pub use self::reports::{Created, ReportError};
pub use self::rotation::rotate_master_key;
use crate::domain::{CATEGORIES, Status};
use crate::store::{self, Transactions as _};

/// How often lapsed idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The counters of reports' lives.
#[derive(Clone)]
pub struct ReportMetrics {
    created: IntCounterVec,
    status_changes: IntCounterVec,
}

impl ReportMetrics {
    /// Registers `reports_created_total{category}` (every category at 0 from the start) and
    /// `report_status_changes_total{to}`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let created = service_kit::metrics::counter_vec(
            registry,
            "reports_created_total",
            "Reports filed, by category",
            &["category"],
        )?;
        for category in CATEGORIES {
            created.with_label_values(&[*category]);
        }
        let status_changes = service_kit::metrics::counter_vec(
            registry,
            "report_status_changes_total",
            "Moderators' status moves, by the status moved to",
            &["to"],
        )?;
        for status in Status::ALL {
            if status != Status::Submitted {
                status_changes.with_label_values(&[status.as_str()]);
            }
        }
        Ok(Self {
            created,
            status_changes,
        })
    }
}

/// What the gRPC handlers call: the use cases over the service's database.
#[derive(Clone)]
pub struct Reports {
    pool: Pool,
    keys: DataKeys,
    metrics: ReportMetrics,
}

impl Reports {
    pub fn new(pool: Pool, keys: DataKeys, metrics: ReportMetrics) -> Self {
        Self { pool, keys, metrics }
    }

    /// Purges lapsed idempotency keys every ten minutes, for as long as the process runs.
    pub fn spawn_purge(&self) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PURGE_EVERY);
            loop {
                ticker.tick().await;
                match purge_idempotency_keys(&pool).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "purged lapsed idempotency keys"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "purging idempotency keys failed"),
                }
            }
        });
    }
}

async fn purge_idempotency_keys(pool: &Pool) -> Result<usize, StoreError> {
    let mut conn = store::connection(pool).await?;
    conn.transaction::<_, StoreError, _>(async move |conn| {
        store::enter_scope(conn, "", "reports-service").await?;
        store::idempotency::purge(conn).await
    })
    .await
}
