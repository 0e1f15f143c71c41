//! Use cases of a reporter's own reports: file, list, read, change, withdraw. Title, description,
//! location and the moderator's public note are sealed under the reporter's data key, each bound
//! to its table, column and row; the clear grid cell is offset (see `alerts`).

use chrono::Utc;
use rand::Rng as _;
use service_kit::envelope::{Aad, DataKey};
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::{KeyError, Reports};
use crate::alerts;
use crate::domain::{
    AuditEntry, Caller, Cell, DomainEvent, Filed, IdempotencyKey, ListQuery, Location, LocationChange, NewReport, Page,
    Report, ReportAttachment, ReportChanges, ReportDraft, ReportUpdate, Status, StoredReport,
};
use crate::events;
use crate::store::idempotency::Claimed;
use crate::store::{self, Abort, Conn, Transactions as _};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No such live report in the caller's scope (another user's reports are not found either).
    #[error("no such report")]
    NotFound,
    /// The report has left `submitted`: it can no longer be changed.
    #[error("the report is no longer submitted")]
    NotEditable,
    /// A status move the rules do not allow.
    #[error("this status move is not allowed")]
    BadMove,
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    #[error("a request with this idempotency key is still running")]
    RequestInProgress,
    /// Sealed data that does not open: the data key is gone (erased) or the bytes are not this
    /// row's. Never answered with anything read from them.
    #[error("sealed data does not open: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a create answered: the new report, or the first answer to the same request (as the
/// caller's `encode` made it).
pub enum Created {
    New(Box<Report>),
    Replayed(Vec<u8>),
}

type Refusal = Abort<ReportError>;

fn refused(e: impl Into<ReportError>) -> Refusal {
    Abort::Refused(e.into())
}

pub(super) const TABLE: &str = "reports";

pub(super) fn seal(key: &DataKey, table: &str, column: &str, row: Uuid, plain: &[u8]) -> Vec<u8> {
    key.seal(plain, &Aad::new(table, column, row.as_bytes()))
}

pub(super) fn open(key: &DataKey, table: &str, column: &str, row: Uuid, sealed: &[u8]) -> Result<Vec<u8>, ReportError> {
    key.open(sealed, &Aad::new(table, column, row.as_bytes()))
        .map_err(|e| ReportError::Unreadable(format!("{table}.{column} of {row}: {e}")))
}

pub(super) fn open_text(
    key: &DataKey,
    table: &str,
    column: &str,
    row: Uuid,
    sealed: &[u8],
) -> Result<String, ReportError> {
    String::from_utf8(open(key, table, column, row, sealed)?)
        .map_err(|_| ReportError::Unreadable(format!("{table}.{column} of {row}: not UTF-8")))
}

/// The reporter's data key, for reading: a report without one was erased.
pub(super) async fn reading_key(keys: &super::DataKeys, conn: &mut Conn, user: Uuid) -> Result<DataKey, ReportError> {
    keys.existing(conn, user).await?.ok_or_else(missing_key)
}

/// A reporter's data key is gone (erased): what they stored can no longer be read.
fn missing_key() -> ReportError {
    ReportError::Unreadable(format!(
        "no data key for the reporter of a report ({})",
        KeyError::Missing
    ))
}

/// The report's live files, oldest first.
pub(super) async fn attachment_list(conn: &mut Conn, report: Uuid) -> Result<Vec<ReportAttachment>, StoreError> {
    store::attachments::list_for_report(conn, report).await
}

/// `stored` opened with its reporter's `key`.
pub(super) async fn open_report(conn: &mut Conn, key: &DataKey, stored: StoredReport) -> Result<Report, ReportError> {
    let id = stored.id;
    let location = match &stored.location_ct {
        None => None,
        Some(ct) => Some(
            Location::from_bytes(&open(key, TABLE, "location_ct", id, ct)?)
                .ok_or_else(|| ReportError::Unreadable(format!("reports.location_ct of {id}: not a location")))?,
        ),
    };
    let public_note = match &stored.public_note_ct {
        None => None,
        Some(ct) => Some(open_text(key, TABLE, "public_note_ct", id, ct)?),
    };
    Ok(Report {
        id,
        title: open_text(key, TABLE, "title_ct", id, &stored.title_ct)?,
        description: open_text(key, TABLE, "description_ct", id, &stored.description_ct)?,
        location,
        public_note,
        attachments: attachment_list(conn, id).await?,
        category: stored.category,
        severity: stored.severity,
        status: stored.status,
        anonymous: stored.anonymous,
        occurred_at: stored.occurred_at,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    })
}

/// The cell kept in clear for `location`: moved by a fresh random offset, then gridded.
fn public_cell(location: &Location) -> Cell {
    let mut rng = rand::rng();
    let bearing = rng.random_range(0.0..std::f64::consts::TAU);
    let distance = rng.random_range(alerts::MIN_OFFSET_M..=alerts::MAX_OFFSET_M);
    alerts::offset_cell(location.lat, location.lng, bearing, distance)
}

/// The audit row of a reporter's action: no actor, address or user agent on an anonymous report.
fn reporter_audit(
    caller: &Caller,
    anonymous: bool,
    action: &'static str,
    report: Uuid,
    fields: Vec<&'static str>,
) -> AuditEntry {
    AuditEntry {
        actor_id: (!anonymous).then_some(caller.user_id),
        action,
        resource: "report",
        resource_id: Some(report.to_string()),
        ip: if anonymous { None } else { caller.ip.clone() },
        user_agent: if anonymous { None } else { caller.user_agent.clone() },
        changed_fields: fields,
    }
}

/// `draft` as a new report of `user` under a fresh id, its columns sealed with `key`.
fn sealed_row(key: &DataKey, user: Uuid, draft: &ReportDraft) -> NewReport {
    let id = Uuid::new_v4();
    NewReport {
        id,
        user_id: user,
        category: draft.category,
        severity: draft.severity,
        title_ct: seal(key, TABLE, "title_ct", id, draft.title.as_bytes()),
        description_ct: seal(key, TABLE, "description_ct", id, draft.description.as_bytes()),
        location_ct: draft
            .location
            .as_ref()
            .map(|l| seal(key, TABLE, "location_ct", id, &l.to_bytes())),
        cell: draft.location.as_ref().map(public_cell),
        anonymous: draft.anonymous,
        occurred_at: draft.occurred_at,
    }
}

/// What filing `new` writes beside it: its audit row and its `report.submitted` event.
fn filing_records(caller: &Caller, new: &NewReport) -> (AuditEntry, DomainEvent) {
    let fields = vec![
        "category",
        "title",
        "description",
        "severity",
        "occurred_at",
        "location",
        "anonymous",
    ];
    let audit = reporter_audit(caller, new.anonymous, "report.create", new.id, fields);
    (audit, events::submitted(new, Utc::now()))
}

/// The report as filed: the draft's clear values, the row's, and what the database gave it.
fn filed_report(draft: ReportDraft, new: &NewReport, filed: Filed) -> Report {
    Report {
        id: new.id,
        category: new.category.to_owned(),
        title: draft.title,
        description: draft.description,
        severity: new.severity.to_owned(),
        status: filed.status,
        occurred_at: new.occurred_at,
        location: draft.location,
        anonymous: new.anonymous,
        attachments: Vec::new(),
        created_at: filed.created_at,
        updated_at: filed.updated_at,
        public_note: None,
    }
}

/// The associated data's row of a stored response: the user and the key.
fn response_row(user: Uuid, key: &IdempotencyKey) -> Vec<u8> {
    let mut row = user.as_bytes().to_vec();
    row.extend_from_slice(key.key.as_bytes());
    row
}

impl Reports {
    /// Files `draft` for `caller`. With `idempotency`, the same key and request within 24 h
    /// answers the first response (`encode` made it) and files nothing new.
    pub async fn create(
        &self,
        caller: &Caller,
        draft: ReportDraft,
        idempotency: Option<IdempotencyKey>,
        encode: impl Fn(&Report) -> Vec<u8> + Send + Sync,
    ) -> Result<Created, ReportError> {
        let draft = match idempotency {
            Some(_) => draft,
            None => match self.create_at_once(caller, draft).await? {
                Ok(report) => return Ok(self.counted(Created::New(report))),
                Err(draft) => draft,
            },
        };
        let mut conn = store::connection(&self.pool).await?;
        let (user, keys, caller) = (caller.user_id, self.keys.clone(), caller.clone());
        let encode = &encode;
        let created = conn
            .transaction::<_, Refusal, _>(async move |conn| {
                // The scope and the caller's wrapped key in one round trip.
                let stored_key = store::data_keys::enter_scope_with_key(conn, user).await?;
                if let Some(idem) = &idempotency {
                    match store::idempotency::claim(conn, user, idem).await? {
                        Claimed::Fresh => {}
                        Claimed::InProgress => return Err(refused(ReportError::RequestInProgress)),
                        Claimed::Reused => return Err(refused(ReportError::IdempotencyKeyReused)),
                        Claimed::Replay(sealed) => {
                            let key = match &stored_key {
                                Some(wrapped) => keys.unwrap(user, wrapped).map_err(|e| refused(KeyError::from(e)))?,
                                None => return Err(refused(missing_key())),
                            };
                            let row = response_row(user, idem);
                            let bytes = key
                                .open(&sealed, &Aad::new("idempotency_keys", "response", &row))
                                .map_err(|e| refused(ReportError::Unreadable(format!("a stored response: {e}"))))?;
                            return Ok(Created::Replayed(bytes));
                        }
                    }
                }
                let key = keys.for_writing_from(conn, user, stored_key).await.map_err(refused)?;
                let new = sealed_row(&key, user, &draft);
                let (audit, event) = filing_records(&caller, &new);
                // The report, its audit row and its event in one statement, as without a key.
                let filed = store::reports::file(conn, &new, &audit, event).await?;
                let report = filed_report(draft, &new, filed);
                // The stored answer needs the row's times: after the insert.
                if let Some(idem) = &idempotency {
                    let row = response_row(user, idem);
                    let sealed = key.seal(&encode(&report), &Aad::new("idempotency_keys", "response", &row));
                    store::idempotency::record(conn, user, idem, &sealed).await?;
                }
                Ok(Created::New(Box::new(report)))
            })
            .await
            .map_err(Abort::into_inner)?;
        Ok(self.counted(created))
    }

    /// A create without an `Idempotency-Key` by a reporter who has a data key: two statements
    /// and no transaction block (the scope and key, then `store::reports::file`: the report, its
    /// audit row and its event in one statement), where the transaction took four round trips.
    /// `Err(draft)` back when the reporter has no key yet: their first write makes it, in a
    /// transaction. (Between the two statements the key may be erased, as it may between a
    /// transaction's read of it and its insert: the report is then sealed under a key that is gone.)
    async fn create_at_once(
        &self,
        caller: &Caller,
        draft: ReportDraft,
    ) -> Result<Result<Box<Report>, ReportDraft>, ReportError> {
        let user = caller.user_id;
        let mut conn = store::connection(&self.pool).await?;
        let Some(wrapped) = store::data_keys::enter_scope_with_key(&mut conn, user).await? else {
            return Ok(Err(draft));
        };
        let key = self.keys.unwrap(user, &wrapped).map_err(KeyError::from)?;
        let new = sealed_row(&key, user, &draft);
        let (audit, event) = filing_records(caller, &new);
        let filed = store::reports::file(&mut conn, &new, &audit, event).await?;
        Ok(Ok(Box::new(filed_report(draft, &new, filed))))
    }

    /// `created`, counted in `reports_created_total` when it is new.
    fn counted(&self, created: Created) -> Created {
        if let Created::New(report) = &created {
            self.metrics
                .created
                .with_label_values(&[report.category.as_str()])
                .inc();
        }
        created
    }

    /// A page of the caller's own live reports, newest first.
    pub async fn list_mine(&self, caller: &Caller, query: ListQuery) -> Result<Page<Report>, ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let (user, keys) = (caller.user_id, self.keys.clone());
        conn.transaction::<_, Refusal, _>(async move |conn| {
            store::enter_scope(conn, &user.to_string(), "user").await?;
            let page = store::reports::list_own(conn, user, &query).await?;
            if page.items.is_empty() {
                return Ok(Page {
                    items: Vec::new(),
                    next: None,
                });
            }
            let key = reading_key(&keys, conn, user).await.map_err(Abort::Refused)?;
            let mut items = Vec::with_capacity(page.items.len());
            for stored in page.items {
                items.push(open_report(conn, &key, stored).await.map_err(Abort::Refused)?);
            }
            Ok(Page { items, next: page.next })
        })
        .await
        .map_err(Abort::into_inner)
    }

    /// One of the caller's own live reports.
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<Report, ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let (user, keys) = (caller.user_id, self.keys.clone());
        conn.transaction::<_, Refusal, _>(async move |conn| {
            store::enter_scope(conn, &user.to_string(), "user").await?;
            let stored = store::reports::find(conn, id, false)
                .await?
                .ok_or_else(|| refused(ReportError::NotFound))?;
            let key = reading_key(&keys, conn, user).await.map_err(Abort::Refused)?;
            open_report(conn, &key, stored).await.map_err(Abort::Refused)
        })
        .await
        .map_err(Abort::into_inner)
    }

    /// Changes the caller's report `id` while it is `submitted`.
    pub async fn update(&self, caller: &Caller, id: Uuid, changes: ReportChanges) -> Result<Report, ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let (user, keys, caller) = (caller.user_id, self.keys.clone(), caller.clone());
        conn.transaction::<_, Refusal, _>(async move |conn| {
            store::enter_scope(conn, &user.to_string(), "user").await?;
            let stored = store::reports::find(conn, id, true)
                .await?
                .ok_or_else(|| refused(ReportError::NotFound))?;
            if Status::parse(&stored.status) != Some(Status::Submitted) {
                return Err(refused(ReportError::NotEditable));
            }
            let key = keys.for_writing(conn, user).await.map_err(refused)?;
            let fields = changes.field_names();
            let update = ReportUpdate {
                category: changes.category,
                severity: changes.severity,
                occurred_at: changes.occurred_at,
                title_ct: changes.title.map(|t| seal(&key, TABLE, "title_ct", id, t.as_bytes())),
                description_ct: changes
                    .description
                    .map(|d| seal(&key, TABLE, "description_ct", id, d.as_bytes())),
                location: match &changes.location {
                    LocationChange::Keep => None,
                    LocationChange::Clear => Some(None),
                    LocationChange::Set(l) => Some(Some((
                        seal(&key, TABLE, "location_ct", id, &l.to_bytes()),
                        public_cell(l),
                    ))),
                },
            };
            let updated = store::reports::update(conn, id, &update).await?;
            store::audit::insert(
                conn,
                &reporter_audit(&caller, stored.anonymous, "report.update", id, fields),
            )
            .await?;
            open_report(conn, &key, updated).await.map_err(Abort::Refused)
        })
        .await
        .map_err(Abort::into_inner)
    }

    /// Withdraws the caller's report `id` (soft delete).
    pub async fn delete(&self, caller: &Caller, id: Uuid) -> Result<(), ReportError> {
        let mut conn = store::connection(&self.pool).await?;
        let (user, caller) = (caller.user_id, caller.clone());
        conn.transaction::<_, Refusal, _>(async move |conn| {
            store::enter_scope(conn, &user.to_string(), "user").await?;
            let stored = store::reports::find(conn, id, true)
                .await?
                .ok_or_else(|| refused(ReportError::NotFound))?;
            store::reports::soft_delete(conn, id).await?;
            store::audit::insert(
                conn,
                &reporter_audit(&caller, stored.anonymous, "report.delete", id, Vec::new()),
            )
            .await?;
            store::events::record(conn, events::deleted(&stored, Utc::now())).await?;
            Ok(())
        })
        .await
        .map_err(Abort::into_inner)
    }
}
