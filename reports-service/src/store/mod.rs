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

#[derive(QueryableByName)]
#[diesel(table_name = schema::public_alerts, check_for_backend(diesel::pg::Pg))]
struct AlertCells {
    category: String,
    severity: String,
    occurred_at: DateTime<Utc>,
    cell_lat: i32,
    cell_lng: i32,
}

/// Live reports that match `filter` (status, grid cell, time), newest first. Runs in the scope
/// of role `alerts`, which reads the public projection only (no policy of `reports` admits it).
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

/// Each cell of the box is read on its own, newest first and at most `limit` rows, from the
/// projection `public_alerts` (migration `…000013`: live reports in a public status, kept by
/// triggers on `reports`), answered from its index alone; the cells' rows are then merged newest
/// first. One range scan over the whole box would read every public report of the window in it
/// (tens of thousands in a city) to keep twenty; reading `reports` itself would pass every row
/// through its row-level security, which needs the heap row.
async fn alert_rows(conn: &mut Conn, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use diesel::sql_types::{Array, Int4, Int8, Text, Timestamptz};
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = (filter.cells.lat, filter.cells.lng);
    let statuses: Vec<&str> = filter.statuses.to_vec();
    let limit = i64::from(filter.limit);
    let rows: Vec<AlertCells> = service_kit::statement::statement(
        "SELECT a.category, a.severity, a.occurred_at, a.cell_lat, a.cell_lng \
         FROM generate_series($1::int, $2::int) AS la(cell_lat) \
         CROSS JOIN generate_series($3::int, $4::int) AS ln(cell_lng) \
         CROSS JOIN LATERAL ( \
             SELECT r.category, r.severity, r.occurred_at, r.cell_lat, r.cell_lng FROM reports.public_alerts r \
             WHERE r.cell_lat = la.cell_lat AND r.cell_lng = ln.cell_lng AND r.status = ANY($5) \
               AND r.occurred_at >= $6 \
             ORDER BY r.occurred_at DESC LIMIT $7) AS a \
         ORDER BY a.occurred_at DESC LIMIT $8",
    )
    .bind::<Int4, _>(lat_lo)
    .bind::<Int4, _>(lat_hi)
    .bind::<Int4, _>(lng_lo)
    .bind::<Int4, _>(lng_hi)
    .bind::<Array<Text>, _>(statuses)
    .bind::<Timestamptz, _>(filter.since)
    .bind::<Int8, _>(limit)
    .bind::<Int8, _>(limit)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AlertRecord {
            category: row.category,
            severity: row.severity,
            occurred_at: row.occurred_at,
            cell: Cell {
                lat: row.cell_lat,
                lng: row.cell_lng,
            },
        })
        .collect())
}
