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
        // The scope of `enter_scope`, and custom plans only: planned once for any box and limit
        // (the generic plan PostgreSQL may switch a prepared statement to after five runs), the
        // query takes 42 ms at a million reports instead of 0.6.
        service_kit::statement::statement(
            "SELECT set_config('app.current_user_id', '', true), set_config('app.role', 'alerts', true), \
             set_config('plan_cache_mode', 'force_custom_plan', true)",
        )
        .execute(conn)
        .await?;
        alert_rows(conn, &filter).await
    })
    .await
}

/// Read in two steps. The box's cells come from `alert_cells` (migration `…000015`: per cell with
/// a public alert, the times of its newest two, kept by triggers on `public_alerts`), one range
/// scan of a table as large as the map in use; their times give a time that at least `limit`
/// reports reach (the `limit`-th newest of them, or the window's start when there are fewer),
/// since the true `limit`-th newest can only be as new or newer. Then the cells whose newest is
/// that recent (at most `limit` of them) are read from the projection `public_alerts` (migration
/// `…000013`: live reports in a public status, kept by triggers on `reports`), each from that
/// time on from its index alone, merged newest first. No step reads a cell's older reports, and
/// at most `limit` index descents are made however many reports the table holds (pgbench at 25
/// transactions a second, CPU caches cold between them, the scope and this query: 1.10 ms at a
/// thousand reports and 1.07 at a million, where reading every cell's newest two from the index
/// took 1.15 and 1.98). The summary's times are of every row of the
/// projection, which holds exactly the statuses strangers may see (`filter.statuses`). One
/// range scan over the box of the projection would read every public report of the window in
/// it; reading `reports` itself would pass every row through its row-level security, which
/// needs the heap row.
async fn alert_rows(conn: &mut Conn, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use diesel::sql_types::{Array, Int4, Int8, Text, Timestamptz};
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = (filter.cells.lat, filter.cells.lng);
    let statuses: Vec<&str> = filter.statuses.to_vec();
    let limit = i64::from(filter.limit.max(1));
    let rows: Vec<AlertCells> = service_kit::statement::statement(
        "WITH cells AS MATERIALIZED ( \
             SELECT c.cell_lat, c.cell_lng, c.newest, c.second FROM reports.alert_cells c \
             WHERE c.cell_lat BETWEEN $1::int AND $2::int AND c.cell_lng BETWEEN $3::int AND $4::int \
               AND c.newest >= $5::timestamptz), \
         cutoff AS (SELECT coalesce(( \
             SELECT t.at FROM ( \
                 SELECT newest AS at FROM cells \
                 UNION ALL SELECT second FROM cells WHERE second >= $6::timestamptz) AS t \
             ORDER BY t.at DESC OFFSET $7 LIMIT 1), $8::timestamptz) AS since) \
         SELECT a.category, a.severity, a.occurred_at, a.cell_lat, a.cell_lng \
         FROM cells c CROSS JOIN cutoff CROSS JOIN LATERAL ( \
             SELECT r.category, r.severity, r.occurred_at, r.cell_lat, r.cell_lng FROM reports.public_alerts r \
             WHERE r.cell_lat = c.cell_lat AND r.cell_lng = c.cell_lng AND r.status = ANY($9) \
               AND r.occurred_at >= cutoff.since \
             ORDER BY r.occurred_at DESC LIMIT $10) AS a \
         WHERE c.newest >= cutoff.since \
         ORDER BY a.occurred_at DESC LIMIT $11",
    )
    .bind::<Int4, _>(lat_lo)
    .bind::<Int4, _>(lat_hi)
    .bind::<Int4, _>(lng_lo)
    .bind::<Int4, _>(lng_hi)
    .bind::<Timestamptz, _>(filter.since)
    .bind::<Timestamptz, _>(filter.since)
    .bind::<Int8, _>(limit - 1)
    .bind::<Timestamptz, _>(filter.since)
    .bind::<Array<Text>, _>(statuses)
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
