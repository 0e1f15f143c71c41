//! `attachments`: what each stored file is, and the report it belongs to. Queries run inside the
//! use case's transaction, scoped to the caller (row-level security), and also say whose rows
//! they want: the policies are the second lock, not the only one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::Conn;
use super::schema::{attachments, reports};
use crate::domain::ReportAttachment;

/// A stored file, as a use case reads it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = attachments, check_for_backend(diesel::pg::Pg))]
pub struct AttachmentRecord {
    pub id: Uuid,
    pub report_id: Uuid,
    /// The reporter (whose data key seals the bytes).
    pub user_id: Uuid,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub object_name: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Whether report `report_id` exists, is not deleted and belongs to `user`: `None` if not, else
/// whether it is anonymous (its audit rows then name no actor).
pub async fn live_report_anonymity(conn: &mut Conn, user: Uuid, report_id: Uuid) -> Result<Option<bool>, StoreError> {
    Ok(reports::table
        .filter(reports::id.eq(report_id))
        .filter(reports::user_id.eq(user))
        .filter(reports::deleted_at.is_null())
        .select(reports::anonymous)
        .first(conn)
        .await
        .optional()?)
}

/// Serialises the uploads to one report until the transaction ends, so two concurrent uploads
/// cannot both pass the per-report cap (an advisory lock: no write right on reports needed).
pub async fn lock_report(conn: &mut Conn, report_id: Uuid) -> Result<(), StoreError> {
    service_kit::statement::statement("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 18))")
        .bind::<diesel::sql_types::Uuid, _>(report_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many live files report `report_id` has.
pub async fn count_live(conn: &mut Conn, report_id: Uuid) -> Result<i64, StoreError> {
    Ok(attachments::table
        .filter(attachments::report_id.eq(report_id))
        .filter(attachments::deleted_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

pub async fn insert(conn: &mut Conn, record: &AttachmentRecord) -> Result<(), StoreError> {
    diesel::insert_into(attachments::table)
        .values((
            attachments::id.eq(record.id),
            attachments::report_id.eq(record.report_id),
            attachments::user_id.eq(record.user_id),
            attachments::content_type.eq(&record.content_type),
            attachments::size.eq(record.size),
            attachments::sha256.eq(&record.sha256),
            attachments::object_name.eq(record.object_name),
            attachments::created_at.eq(record.created_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// File `id` of live report `report_id`; of `owner`'s reports only, unless `owner` is `None`
/// (a moderator, whose scope the policies check).
pub async fn find_live(
    conn: &mut Conn,
    report_id: Uuid,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<Option<AttachmentRecord>, StoreError> {
    let mut query = attachments::table
        .inner_join(reports::table)
        .filter(attachments::id.eq(id))
        .filter(attachments::report_id.eq(report_id))
        .filter(attachments::deleted_at.is_null())
        .filter(reports::deleted_at.is_null())
        .select(AttachmentRecord::as_select())
        .into_boxed();
    if let Some(owner) = owner {
        query = query
            .filter(attachments::user_id.eq(owner))
            .filter(reports::user_id.eq(owner));
    }
    Ok(query.first(conn).await.optional()?)
}

/// The live files of report `report_id`, oldest first (a report's `attachments`).
pub async fn list_for_report(conn: &mut Conn, report_id: Uuid) -> Result<Vec<ReportAttachment>, StoreError> {
    let rows: Vec<AttachmentRecord> = attachments::table
        .filter(attachments::report_id.eq(report_id))
        .filter(attachments::deleted_at.is_null())
        .order((attachments::created_at.asc(), attachments::id.asc()))
        .select(AttachmentRecord::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReportAttachment {
            id: r.id,
            content_type: r.content_type,
            size: u64::try_from(r.size).unwrap_or(0),
            sha256: r.sha256,
            created_at: r.created_at,
        })
        .collect())
}
