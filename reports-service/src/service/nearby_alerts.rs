//! Use case: the recent moderated incidents near a point, as a stranger may see them.

use chrono::Utc;
use service_kit::store_error::StoreError;

use super::Reports;
use crate::alerts;
use crate::domain::{Alert, NearbyQuery};
use crate::store;

impl Reports {
    /// Newest first, at most the query's limit.
    pub async fn nearby_alerts(&self, query: &NearbyQuery) -> Result<Vec<Alert>, StoreError> {
        let filter = alerts::filter(query, Utc::now());
        let records = store::alerts_matching(&self.pool, &filter).await?;
        Ok(records.into_iter().map(alerts::coarsen).collect())
    }
}
