//! Queries over schema `reports`. Only this module knows diesel and SQL.

pub mod schema;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::db::Pool;

use crate::alerts::{AlertRow, NearbyQuery, VISIBLE_STATUSES};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(anyhow::Error::new(e).context("getting a database connection"))
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = schema::reports, check_for_backend(diesel::pg::Pg))]
struct AlertCells {
    category: String,
    severity: String,
    occurred_at: DateTime<Utc>,
    cell_lat: Option<i32>,
    cell_lng: Option<i32>,
}

/// Moderated, live reports whose grid cell falls in the query's box, newest first.
pub async fn nearby_alerts(
    pool: &Pool,
    query: &NearbyQuery,
    since: DateTime<Utc>,
) -> Result<Vec<AlertRow>, StoreError> {
    use schema::reports::dsl as r;
    let mut conn = pool.get().await?;
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = query.cell_box();
    let rows: Vec<AlertCells> = r::reports
        .filter(r::deleted_at.is_null())
        .filter(r::status.eq_any(VISIBLE_STATUSES))
        .filter(r::cell_lat.between(lat_lo, lat_hi))
        .filter(r::cell_lng.between(lng_lo, lng_hi))
        .filter(r::occurred_at.ge(since))
        .order(r::occurred_at.desc())
        .limit(i64::from(query.limit()))
        .select(AlertCells::as_select())
        .load(&mut conn)
        .await
        .map_err(|e| anyhow::Error::new(e).context("loading nearby alerts"))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(AlertRow {
                category: row.category,
                severity: row.severity,
                occurred_at: row.occurred_at,
                cell_lat: row.cell_lat?,
                cell_lng: row.cell_lng?,
            })
        })
        .collect())
}
