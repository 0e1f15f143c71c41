//! How many people use the platform: `active_users{window="1d|7d|30d"}`, the distinct users whose
//! session was created or refreshed within the window (phones refresh their access token every
//! few minutes while open), counted from `sessions` every `ACTIVE_USERS_REFRESH_SECONDS` (60) for
//! the business dashboard.

use std::time::Duration;

use service_kit::db::Pool;

use crate::store;

/// The gauge's windows, in the order of `domain::ActiveUsers`' fields.
const WINDOWS: [&str; 3] = ["1d", "7d", "30d"];

/// Keeps `active_users` up to date.
pub struct Activity {
    pool: Pool,
    gauge: prometheus::IntGaugeVec,
}

impl Activity {
    /// Registers `active_users` with every window at 0 until the first count.
    pub fn register(pool: Pool, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let gauge = service_kit::metrics::register(
            registry,
            prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "active_users",
                    "Distinct users whose session was created or refreshed within the window",
                ),
                &["window"],
            )?,
        )?;
        for window in WINDOWS {
            gauge.with_label_values(&[window]).set(0);
        }
        Ok(Self { pool, gauge })
    }

    /// Counts now, then every `every` (one pass over the month's sessions); a failed count keeps
    /// the last values and says why.
    pub async fn run(self, every: Duration) {
        let mut every = tokio::time::interval(every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.count().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not count active users; active_users keeps its last values"
                );
            }
        }
    }

    async fn count(&self) -> Result<(), store::StoreError> {
        let mut conn = self.pool.get().await?;
        let active = store::active_users(&mut conn).await?;
        for (window, n) in WINDOWS.into_iter().zip([active.day, active.week, active.month]) {
            self.gauge.with_label_values(&[window]).set(n);
        }
        Ok(())
    }
}
