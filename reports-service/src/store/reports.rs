//! `reports` and `moderation_notes`: a reporter's reports and the moderators' status moves.
//! Every query runs in a transaction scoped by `enter_scope`; none filters by `user_id` for
//! safety (row-level security does), only the owner's list does so to use its index.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::Conn;
use super::schema::{moderation_notes, reports};
use crate::domain::{
    AuditEntry, Cell, Cursor, DomainEvent, Filed, ListQuery, NewReport, Page, ReportUpdate, Status, StoredNote,
    StoredReport,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = reports, check_for_backend(diesel::pg::Pg))]
struct ReportRow {
    id: Uuid,
    user_id: Uuid,
    category: String,
    severity: String,
    status: String,
    title_ct: Vec<u8>,
    description_ct: Vec<u8>,
    location_ct: Option<Vec<u8>>,
    public_note_ct: Option<Vec<u8>>,
    cell_lat: Option<i32>,
    cell_lng: Option<i32>,
    anonymous: bool,
    occurred_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ReportRow> for StoredReport {
    fn from(r: ReportRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            category: r.category,
            severity: r.severity,
            status: r.status,
            title_ct: r.title_ct,
            description_ct: r.description_ct,
            location_ct: r.location_ct,
            public_note_ct: r.public_note_ct,
            cell: r.cell_lat.zip(r.cell_lng).map(|(lat, lng)| Cell { lat, lng }),
            anonymous: r.anonymous,
            occurred_at: r.occurred_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(QueryableByName)]
struct FiledRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    updated_at: DateTime<Utc>,
}

/// Files `report` (status `submitted`) with its `audit` row and `event` in one statement, atomic
/// as every statement is: outside a transaction block one round trip where `BEGIN`, the scope,
/// the writes and `COMMIT` took four; inside one, a keyed create's. The scope (what `enter_scope`
/// sets, role `user`) comes first by data flow: the report's row is made from the scope's row, so
/// row-level security checks the new row with the scope already set; the audit row and the event
/// are made from the stored report, so they exist exactly when it does. Outside a transaction the
/// settings end with the statement. The outbox columns are `service_kit::outbox::enqueue`'s.
pub async fn file(
    conn: &mut Conn,
    report: &NewReport,
    audit: &AuditEntry,
    event: DomainEvent,
) -> Result<Filed, StoreError> {
    use diesel::sql_types::{Array, Bool, Bytea, Int4, Jsonb, Nullable, Text, Timestamptz};
    let event = super::events::outbox_event(event);
    let row: FiledRow = service_kit::statement::statement(
        "WITH scope AS MATERIALIZED ( \
             SELECT set_config('app.current_user_id', $1, true) AS user_id, set_config('app.role', 'user', true) AS role), \
         report AS ( \
             INSERT INTO reports.reports (id, user_id, category, severity, title_ct, description_ct, location_ct, \
                 cell_lat, cell_lng, anonymous, occurred_at) \
             SELECT $2, scope.user_id::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM scope \
             RETURNING status, created_at, updated_at), \
         audit AS ( \
             INSERT INTO reports.audit_logs (actor_id, action, resource, resource_id, ip, user_agent, changed_fields) \
             SELECT $12, $13, $14, $15, $16, $17, $18 FROM report), \
         event AS ( \
             INSERT INTO reports.outbox (event_id, event_type, occurred_at, traceparent, payload) \
             SELECT $19, $20, $21, $22, $23 FROM report) \
         SELECT status, created_at, updated_at FROM report",
    )
    .bind::<Text, _>(report.user_id.to_string())
    .bind::<diesel::sql_types::Uuid, _>(report.id)
    .bind::<Text, _>(report.category)
    .bind::<Text, _>(report.severity)
    .bind::<Bytea, _>(report.title_ct.as_slice())
    .bind::<Bytea, _>(report.description_ct.as_slice())
    .bind::<Nullable<Bytea>, _>(report.location_ct.as_deref())
    .bind::<Nullable<Int4>, _>(report.cell.map(|c| c.lat))
    .bind::<Nullable<Int4>, _>(report.cell.map(|c| c.lng))
    .bind::<Bool, _>(report.anonymous)
    .bind::<Timestamptz, _>(report.occurred_at)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(audit.actor_id)
    .bind::<Text, _>(audit.action)
    .bind::<Text, _>(audit.resource)
    .bind::<Nullable<Text>, _>(audit.resource_id.as_deref())
    .bind::<Nullable<Text>, _>(audit.ip.as_deref())
    .bind::<Nullable<Text>, _>(audit.user_agent.as_deref())
    .bind::<Array<Text>, _>(audit.changed_fields.clone())
    .bind::<diesel::sql_types::Uuid, _>(event.event_id)
    .bind::<Text, _>(event.event_type)
    .bind::<Timestamptz, _>(event.occurred_at)
    .bind::<Text, _>(event.traceparent)
    .bind::<Jsonb, _>(event.payload)
    .get_result(conn)
    .await?;
    Ok(Filed {
        status: row.status,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The live report `id`, if the transaction's scope may see it; `lock` holds it until commit.
pub async fn find(conn: &mut Conn, id: Uuid, lock: bool) -> Result<Option<StoredReport>, StoreError> {
    let query = reports::table
        .find(id)
        .filter(reports::deleted_at.is_null())
        .select(ReportRow::as_select());
    let row = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    Ok(row.map(Into::into))
}

/// A page of `user`'s live reports, newest first.
pub async fn list_own(conn: &mut Conn, user: Uuid, q: &ListQuery) -> Result<Page<StoredReport>, StoreError> {
    let mut query = reports::table
        .filter(reports::user_id.eq(user))
        .filter(reports::deleted_at.is_null())
        .order((reports::created_at.desc(), reports::id.desc()))
        .limit(i64::from(q.limit) + 1)
        .select(ReportRow::as_select())
        .into_boxed();
    if let Some(status) = q.status {
        query = query.filter(reports::status.eq(status.as_str()));
    }
    if let Some(Cursor { created_at, id }) = q.after {
        query = query.filter(
            reports::created_at
                .lt(created_at)
                .or(reports::created_at.eq(created_at).and(reports::id.lt(id))),
        );
    }
    page(query.load(conn).await?, q.limit)
}

/// A page of the moderation queue of `status`, oldest first.
pub async fn queue(conn: &mut Conn, status: Status, q: &ListQuery) -> Result<Page<StoredReport>, StoreError> {
    let mut query = reports::table
        .filter(reports::status.eq(status.as_str()))
        .filter(reports::deleted_at.is_null())
        .order((reports::created_at.asc(), reports::id.asc()))
        .limit(i64::from(q.limit) + 1)
        .select(ReportRow::as_select())
        .into_boxed();
    if let Some(Cursor { created_at, id }) = q.after {
        query = query.filter(
            reports::created_at
                .gt(created_at)
                .or(reports::created_at.eq(created_at).and(reports::id.gt(id))),
        );
    }
    page(query.load(conn).await?, q.limit)
}

fn page(mut rows: Vec<ReportRow>, limit: u32) -> Result<Page<StoredReport>, StoreError> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| Cursor {
            created_at: r.created_at,
            id: r.id,
        })
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(Into::into).collect(),
        next,
    })
}

/// Writes the set fields of `update` to report `id` and answers it as stored.
pub async fn update(conn: &mut Conn, id: Uuid, update: &ReportUpdate) -> Result<StoredReport, StoreError> {
    #[derive(AsChangeset)]
    #[diesel(table_name = reports)]
    struct Changes<'a> {
        category: Option<&'a str>,
        severity: Option<&'a str>,
        occurred_at: Option<DateTime<Utc>>,
        title_ct: Option<&'a [u8]>,
        description_ct: Option<&'a [u8]>,
        location_ct: Option<Option<&'a [u8]>>,
        cell_lat: Option<Option<i32>>,
        cell_lng: Option<Option<i32>>,
        updated_at: DateTime<Utc>,
    }
    let location = update.location.as_ref();
    let changes = Changes {
        category: update.category,
        severity: update.severity,
        occurred_at: update.occurred_at,
        title_ct: update.title_ct.as_deref(),
        description_ct: update.description_ct.as_deref(),
        location_ct: location.map(|l| l.as_ref().map(|(ct, _)| ct.as_slice())),
        cell_lat: location.map(|l| l.as_ref().map(|(_, c)| c.lat)),
        cell_lng: location.map(|l| l.as_ref().map(|(_, c)| c.lng)),
        updated_at: Utc::now(),
    };
    let row: ReportRow = diesel::update(reports::table.find(id))
        .set(&changes)
        .returning(ReportRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

/// Marks report `id` deleted (purged by retention later).
pub async fn soft_delete(conn: &mut Conn, id: Uuid) -> Result<(), StoreError> {
    let now = Utc::now();
    diesel::update(reports::table.find(id))
        .set((reports::deleted_at.eq(now), reports::updated_at.eq(now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves report `id` to `status` with the note shown to its reporter; answers it as stored.
pub async fn set_status(
    conn: &mut Conn,
    id: Uuid,
    status: &str,
    public_note_ct: Option<&[u8]>,
) -> Result<StoredReport, StoreError> {
    let row: ReportRow = diesel::update(reports::table.find(id))
        .set((
            reports::status.eq(status),
            reports::public_note_ct.eq(public_note_ct),
            reports::updated_at.eq(Utc::now()),
        ))
        .returning(ReportRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = moderation_notes, check_for_backend(diesel::pg::Pg))]
struct NoteRow {
    id: Uuid,
    report_id: Uuid,
    moderator_id: Uuid,
    from_status: String,
    to_status: String,
    note_ct: Vec<u8>,
    public_note_ct: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
}

/// Stores a status move's notes.
pub async fn insert_note(conn: &mut Conn, note: &StoredNote) -> Result<(), StoreError> {
    diesel::insert_into(moderation_notes::table)
        .values(NoteRow {
            id: note.id,
            report_id: note.report_id,
            moderator_id: note.moderator_id,
            from_status: note.from_status.clone(),
            to_status: note.to_status.clone(),
            note_ct: note.note_ct.clone(),
            public_note_ct: note.public_note_ct.clone(),
            created_at: note.created_at,
        })
        .execute(conn)
        .await?;
    Ok(())
}

/// The notes of `reports`, oldest first.
pub async fn notes_of(conn: &mut Conn, reports: &[Uuid]) -> Result<Vec<StoredNote>, StoreError> {
    let rows: Vec<NoteRow> = moderation_notes::table
        .filter(moderation_notes::report_id.eq_any(reports))
        .order((moderation_notes::created_at.asc(), moderation_notes::id.asc()))
        .select(NoteRow::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|n| StoredNote {
            id: n.id,
            report_id: n.report_id,
            moderator_id: n.moderator_id,
            from_status: n.from_status,
            to_status: n.to_status,
            note_ct: n.note_ct,
            public_note_ct: n.public_note_ct,
            created_at: n.created_at,
        })
        .collect())
}
