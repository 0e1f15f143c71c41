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

/// Read from the projection `public_alerts` (migration `…000013`: live reports in a public
/// status, kept by triggers on `reports`), cell by cell from its index alone, in two passes:
/// each cell's newest two give a time that at least `limit` reports reach (the `limit`-th newest
/// of those, or the window's start when there are fewer), since the true `limit`-th newest can
/// only be as new or newer; then each cell's newest from that time on (at most `limit`), merged
/// newest first. In a busy city the second pass reads a few rows per cell where one pass of
/// "each cell's newest `limit`" read twenty (bench: 0.89 → 0.58 ms at a million reports), and
/// no pass reads a cell's older reports however many the table holds. One range scan over the
/// whole box would read every public report of the window in it; reading `reports` itself would
/// pass every row through its row-level security, which needs the heap row.
async fn alert_rows(conn: &mut Conn, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    use diesel::sql_types::{Array, Int4, Int8, Text, Timestamptz};
    let ((lat_lo, lat_hi), (lng_lo, lng_hi)) = (filter.cells.lat, filter.cells.lng);
    let statuses: Vec<&str> = filter.statuses.to_vec();
    let limit = i64::from(filter.limit.max(1));
    let rows: Vec<AlertCells> = service_kit::statement::statement(
        "WITH cells AS MATERIALIZED ( \
             SELECT la.cell_lat, ln.cell_lng FROM generate_series($1::int, $2::int) AS la(cell_lat) \
             CROSS JOIN generate_series($3::int, $4::int) AS ln(cell_lng)), \
         cutoff AS (SELECT coalesce(( \
             SELECT t.occurred_at FROM cells c CROSS JOIN LATERAL ( \
                 SELECT r.occurred_at FROM reports.public_alerts r \
                 WHERE r.cell_lat = c.cell_lat AND r.cell_lng = c.cell_lng AND r.status = ANY($5) \
                   AND r.occurred_at >= $6 \
                 ORDER BY r.occurred_at DESC LIMIT 2) AS t \
             ORDER BY t.occurred_at DESC OFFSET $7 LIMIT 1), $8) AS since) \
         SELECT a.category, a.severity, a.occurred_at, a.cell_lat, a.cell_lng \
         FROM cells c CROSS JOIN cutoff CROSS JOIN LATERAL ( \
             SELECT r.category, r.severity, r.occurred_at, r.cell_lat, r.cell_lng FROM reports.public_alerts r \
             WHERE r.cell_lat = c.cell_lat AND r.cell_lng = c.cell_lng AND r.status = ANY($9) \
               AND r.occurred_at >= cutoff.since \
             ORDER BY r.occurred_at DESC LIMIT $10) AS a \
         ORDER BY a.occurred_at DESC LIMIT $11",
    )
    .bind::<Int4, _>(lat_lo)
    .bind::<Int4, _>(lat_hi)
    .bind::<Int4, _>(lng_lo)
    .bind::<Int4, _>(lng_hi)
    .bind::<Array<Text>, _>(statuses.clone())
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
