//! `audit_logs`: one row per create, change, status move and delete, in its transaction.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::store_error::StoreError;

use super::Conn;
use super::schema::audit_logs;
use crate::domain::AuditEntry;

/// Takes a shared connection, so it can be pipelined with the statements of its transaction.
pub async fn insert(mut conn: &Conn, entry: &AuditEntry) -> Result<(), StoreError> {
    diesel::insert_into(audit_logs::table)
        .values((
            audit_logs::actor_id.eq(entry.actor_id),
            audit_logs::action.eq(entry.action),
            audit_logs::resource.eq(entry.resource),
            audit_logs::resource_id.eq(entry.resource_id.as_deref()),
            audit_logs::ip.eq(entry.ip.as_deref()),
            audit_logs::user_agent.eq(entry.user_agent.as_deref()),
            audit_logs::changed_fields.eq(&entry.changed_fields),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}
