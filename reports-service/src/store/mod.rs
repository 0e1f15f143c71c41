//! Queries over schema `reports`: the only module that knows diesel and SQL. It takes the
//! questions and answers the records of `domain`, never its rows, and applies no rule of its own.

pub mod attachments;
pub mod audit;
pub mod data_keys;
pub mod events;
pub mod idempotency;
pub mod reports;
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

/// `conn.transaction(..)` for the use cases, which name no diesel.
pub use diesel_async::AsyncConnection as Transactions;
pub use service_kit::db::PooledConnection;

/// Names who the transaction acts for (`service_kit::db::enter_scope`), for row-level security:
/// call it first in every transaction.
pub async fn enter_scope(conn: &mut Conn, user: &str, role: &str) -> Result<(), StoreError> {
    Ok(service_kit::db::enter_scope(conn, user, role).await?)
}

/// A pooled connection.
pub async fn connection(pool: &Pool) -> Result<PooledConnection<Conn>, StoreError> {
    Ok(pool.get().await?)
}

/// A use case's error inside a transaction: the database's, or the use case's own refusal. Both
/// roll the transaction back.
#[derive(Debug)]
pub enum Abort<E> {
    Store(StoreError),
    Refused(E),
}

impl<E> From<diesel::result::Error> for Abort<E> {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}

impl<E> From<StoreError> for Abort<E> {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl<E: From<StoreError>> Abort<E> {
    pub fn into_inner(self) -> E {
        match self {
            Self::Store(e) => e.into(),
            Self::Refused(e) => e,
        }
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

/// Live reports that match `filter` (status, grid cell, time), newest first. Runs in the scope
/// of role `alerts`, whose policy shows only live reports with a public status.
pub async fn alerts_matching(pool: &Pool, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use diesel_async::AsyncConnection as _;
    let mut conn = pool.get().await?;
    let filter = filter.clone();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        enter_scope(conn, "", "alerts").await?;
        alert_rows(conn, &filter).await
    })
    .await
}

async fn alert_rows(conn: &mut Conn, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use schema::reports::dsl as r;
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
        .load(conn)
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
