//! Use cases of moderators: the queue, and moving a report along its statuses. Moderators read
//! reports of others (role `moderator` in the transaction's scope); the reporter of an anonymous
//! report is never handed out.

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use super::Reports;
use super::reports::{ReportError, TABLE, open_report, open_text, reading_key, seal};
use crate::domain::{
    AuditEntry, Caller, ListQuery, ModeratedReport, ModerationNote, Page, Status, StatusMove, StoredNote, StoredReport,
};
use crate::store::{self, Abort, Conn, Transactions as _};
use crate::{events, moderation};

const NOTES: &str = "moderation_notes";

type Refusal = Abort<ReportError>;

/// What to do with a report whose sealed data does not open (its reporter's key was erased).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    /// Leave it out of a queue page (logged), so one erased reporter cannot stop moderation.
    Skip,
    Fail,
}

/// `reports` as moderators see them, with their notes.
async fn moderated(
    keys: &super::DataKeys,
    conn: &mut Conn,
    reports: Vec<StoredReport>,
    unreadable: Unreadable,
) -> Result<Vec<ModeratedReport>, ReportError> {
    let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
    let mut notes: HashMap<Uuid, Vec<StoredNote>> = HashMap::new();
    for note in store::reports::notes_of(conn, &ids).await? {
        notes.entry(note.report_id).or_default().push(note);
    }
    let mut out = Vec::with_capacity(reports.len());
    for stored in reports {
        let id = stored.id;
        let reporter_id = (!stored.anonymous).then_some(stored.user_id);
        let report_notes = notes.remove(&id).unwrap_or_default();
        let opened = match reading_key(keys, conn, stored.user_id).await {
            Ok(key) => open_report(conn, &key, stored).await.map(|r| (key, r)),
            Err(e) => Err(e),
        };
        let (key, report) = match opened {
            Ok(opened) => opened,
            Err(ReportError::Unreadable(cause)) if unreadable == Unreadable::Skip => {
                tracing::warn!(report = %id, cause, "left an unreadable report out of the moderation queue");
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut opened = Vec::with_capacity(report_notes.len());
        for n in report_notes {
            opened.push(ModerationNote {
                note: open_text(&key, NOTES, "note_ct", n.id, &n.note_ct)?,
                public_note: match &n.public_note_ct {
                    None => None,
                    Some(ct) => Some(open_text(&key, NOTES, "public_note_ct", n.id, ct)?),
                },
                moderator_id: n.moderator_id,
                from_status: n.from_status,
                to_status: n.to_status,
                created_at: n.created_at,
            });
        }
        out.push(ModeratedReport {
            report,
            reporter_id,
            notes: opened,
        });
    }
    Ok(out)
}

impl Reports {
    /// A page of live reports in `query.status` (default `submitted`), oldest first.
    pub async fn moderation_queue(&self, query: ListQuery) -> Result<Page<ModeratedReport>, ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let keys = self.keys.clone();
        let status = query.status.unwrap_or(Status::Submitted);
        conn.transaction::<_, Refusal, _>(async move |conn| {
            store::enter_scope(conn, "", "moderator").await?;
            let page = store::reports::queue(conn, status, &query).await?;
            let items = moderated(&keys, conn, page.items, Unreadable::Skip)
                .await
                .map_err(Abort::Refused)?;
            Ok(Page { items, next: page.next })
        })
        .await
        .map_err(Abort::into_inner)
    }

    /// Moves report `id` as `moderator` says, with their notes; audited and published.
    pub async fn move_status(
        &self,
        moderator: &Caller,
        id: Uuid,
        step: StatusMove,
    ) -> Result<ModeratedReport, ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let (keys, moderator) = (self.keys.clone(), moderator.clone());
        let to = step.to;
        let moved = conn
            .transaction::<_, Refusal, _>(async move |conn| {
                store::enter_scope(conn, "", "moderator").await?;
                let stored = store::reports::find(conn, id, true)
                    .await?
                    .ok_or(Abort::Refused(ReportError::NotFound))?;
                let from = Status::parse(&stored.status).ok_or(Abort::Refused(ReportError::BadMove))?;
                if !moderation::allowed(from, step.to) {
                    return Err(Abort::Refused(ReportError::BadMove));
                }
                let key = reading_key(&keys, conn, stored.user_id).await.map_err(Abort::Refused)?;
                let note_id = Uuid::new_v4();
                let public_on_report = step
                    .public_note
                    .as_ref()
                    .map(|n| seal(&key, TABLE, "public_note_ct", id, n.as_bytes()));
                let updated =
                    store::reports::set_status(conn, id, step.to.as_str(), public_on_report.as_deref()).await?;
                let note = StoredNote {
                    id: note_id,
                    report_id: id,
                    moderator_id: moderator.user_id,
                    from_status: from.as_str().to_owned(),
                    to_status: step.to.as_str().to_owned(),
                    note_ct: seal(&key, NOTES, "note_ct", note_id, step.note.as_bytes()),
                    public_note_ct: step
                        .public_note
                        .as_ref()
                        .map(|n| seal(&key, NOTES, "public_note_ct", note_id, n.as_bytes())),
                    created_at: Utc::now(),
                };
                store::reports::insert_note(conn, &note).await?;
                let mut fields = vec!["status", "note"];
                if step.public_note.is_some() {
                    fields.push("public_note");
                }
                let audit = AuditEntry {
                    actor_id: Some(moderator.user_id),
                    action: "report.status_change",
                    resource: "report",
                    resource_id: Some(id.to_string()),
                    ip: moderator.ip.clone(),
                    user_agent: moderator.user_agent.clone(),
                    changed_fields: fields,
                };
                store::audit::insert(conn, &audit).await?;
                store::events::record(conn, events::status_changed(&updated, from.as_str(), Utc::now())).await?;
                let mut moderated = moderated(&keys, conn, vec![updated], Unreadable::Fail)
                    .await
                    .map_err(Abort::Refused)?;
                moderated.pop().ok_or(Abort::Refused(ReportError::NotFound))
            })
            .await
            .map_err(Abort::into_inner)?;
        self.metrics.status_changes.with_label_values(&[to.as_str()]).inc();
        Ok(moved)
    }
}
