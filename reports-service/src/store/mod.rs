//! Queries over schema `reports`: the only module that knows diesel and SQL. It takes the
//! questions and answers the records of `domain`, never its rows, and applies no rule of its own.

pub mod attachments;
pub mod data_keys;
pub mod schema;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::db::Pool;
use service_kit::store_error::StoreError;

use crate::domain::{AlertFilter, AlertRecord, Cell};

/// The connection every query runs on: a pooled one, or the one of a use case's transaction
/// (`conn.transaction(async |conn| ..)`: a write, its audit row and its events commit together).
pub type Conn = diesel_async::AsyncPgConnection;

#[derive(Queryable, Selectable)]
#[diesel(table_name = schema::reports, check_for_backend(diesel::pg::Pg))]
struct AlertCells {
    category: String,
    severity: String,
    occurred_at: DateTime<Utc>,
    cell_lat: Option<i32>,
    cell_lng: Option<i32>,
}

/// Live reports that match `filter` (status, grid cell, time), newest first.
pub async fn alerts_matching(pool: &Pool, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use schema::reports::dsl as r;
    let mut conn = pool.get().await?;
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = (filter.cells.lat, filter.cells.lng);
    let rows: Vec<AlertCells> = r::reports
        .filter(r::deleted_at.is_null())
        .filter(r::status.eq_any(filter.statuses))
        .filter(r::cell_lat.between(lat_lo, lat_hi))
        .filter(r::cell_lng.between(lng_lo, lng_hi))
        .filter(r::occurred_at.ge(filter.since))
        .order(r::occurred_at.desc())
        .limit(i64::from(filter.limit))
        .select(AlertCells::as_select())
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(AlertRecord {
                category: row.category,
                severity: row.severity,
                occurred_at: row.occurred_at,
                cell: Cell {
                    lat: row.cell_lat?,
                    lng: row.cell_lng?,
                },
            })
        })
        .collect())
}
