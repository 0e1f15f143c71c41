//! The audit log (`audit_logs`: who changed what) and security events (`security_events`: what an
//! operator should see), both written in the transaction of the change they record.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{audit_logs, security_events};
use super::{Conn, StoreError};
use crate::domain::{Actor, AuditEntry, AuditFilter, UserId};

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
struct AuditRow {
    id: Uuid,
    actor_id: Option<Uuid>,
    action: String,
    resource: String,
    resource_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    changed_fields: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        let actor = Actor {
            user_id: r.actor_id.map(UserId),
            ip: r.ip,
            user_agent: r.user_agent,
        };
        Self {
            id: r.id,
            actor,
            action: r.action,
            resource: r.resource,
            resource_id: r.resource_id,
            changed_fields: r.changed_fields,
            created_at: r.created_at,
        }
    }
}

/// Records that `actor` did `action` on a resource, naming the fields it changed (never their
/// values).
pub async fn audit(
    conn: &mut Conn,
    actor: &Actor,
    action: &str,
    resource: &str,
    resource_id: Option<String>,
    changed_fields: &[&str],
) -> Result<(), StoreError> {
    diesel::insert_into(audit_logs::table)
        .values((
            audit_logs::actor_id.eq(actor.user_id.map(|u| u.0)),
            audit_logs::action.eq(action),
            audit_logs::resource.eq(resource),
            audit_logs::resource_id.eq(resource_id),
            audit_logs::ip.eq(actor.ip.as_deref()),
            audit_logs::user_agent.eq(actor.user_agent.as_deref()),
            audit_logs::changed_fields.eq(changed_fields.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn security_event(
    conn: &mut Conn,
    user: Option<UserId>,
    event_type: &str,
    severity: &str,
    ip: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    diesel::insert_into(security_events::table)
        .values((
            security_events::user_id.eq(user.map(|u| u.0)),
            security_events::event_type.eq(event_type),
            security_events::severity.eq(severity),
            security_events::ip.eq(ip),
            security_events::details.eq(details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of the audit log, newest first (see [`AuditFilter`]).
pub async fn audit_page(conn: &mut Conn, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
    let mut q = audit_logs::table.select(AuditRow::as_select()).into_boxed();
    if let Some(a) = filter.actor {
        q = q.filter(audit_logs::actor_id.eq(a.0));
    }
    if let Some(f) = filter.from {
        q = q.filter(audit_logs::created_at.ge(f));
    }
    if let Some(t) = filter.to {
        q = q.filter(audit_logs::created_at.lt(t));
    }
    if let Some((at, id)) = filter.after {
        q = q.filter(
            audit_logs::created_at
                .lt(at)
                .or(audit_logs::created_at.eq(at).and(audit_logs::id.lt(id))),
        );
    }
    let rows: Vec<AuditRow> = q
        .order((audit_logs::created_at.desc(), audit_logs::id.desc()))
        .limit(filter.limit)
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}
