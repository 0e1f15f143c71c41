//! The administrators' view: the identity service's audit log.

use super::{non_empty, time};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::routes::call::AuthCall;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use proto::auth::v1 as pb;
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changed_fields: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Admin: the identity service's audit log, newest first (other services' logs join this list
/// with their own issues).
#[utoipa::path(get, path = "/v1/admin/audit-logs", tag = "auth", security(("bearer" = [])),
    params(
        ("user_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            description = "Only this actor (a UUID)"),
        ("from" = Option<DateTime<Utc>>, Query, description = "RFC 3339, inclusive"),
        ("to" = Option<DateTime<Utc>>, Query, description = "RFC 3339, exclusive"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1..=100, default 20"),
        ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]*$", description = "next_cursor of the previous page"),
    ),
    responses((status = 200, description = "A page", body = AuditPage),
        (status = 403, description = "Not an administrator", body = crate::error::ErrorBody)))]
pub async fn audit_logs(
    req: HttpRequest,
    auth: Authenticated,
    auth_service: AuthCall,
) -> Result<HttpResponse, ApiError> {
    auth.require_role("admin")?;
    let q = crate::query::StrictQuery::parse(req.query_string(), &["user_id", "from", "to", "limit", "cursor"])?;
    let bound = |name: &str| -> Result<Option<prost_types::Timestamp>, ApiError> {
        Ok(q.optional::<DateTime<Utc>>(name, "an RFC 3339 time")?
            .map(service_kit::proto_time::to_timestamp))
    };
    let message = pb::ListAuditLogsRequest {
        user_id: q
            .optional::<uuid::Uuid>("user_id", "a UUID")?
            .map(|id| id.to_string())
            .unwrap_or_default(),
        from: bound("from")?,
        to: bound("to")?,
        limit: crate::routes::page_limit(&q)?,
        cursor: q.optional("cursor", "a cursor")?.unwrap_or_default(),
    };
    let r = auth_service
        .by(&auth)
        .send(message, async |c, m| c.list_audit_logs(m).await)
        .await?;
    let items = r
        .items
        .into_iter()
        .map(|a| AuditEntry {
            id: a.id,
            actor_id: non_empty(a.actor_id),
            action: a.action,
            resource: a.resource,
            resource_id: non_empty(a.resource_id),
            ip: non_empty(a.ip),
            user_agent: non_empty(a.user_agent),
            changed_fields: a.changed_fields,
            created_at: time(a.created_at.as_ref()),
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage {
        items,
        next_cursor: non_empty(r.next_cursor),
    }))
}
