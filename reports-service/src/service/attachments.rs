//! Use cases: adding a file to a report, and reading it back (for its reporter, or a moderator).
//!
//! An upload streams: each chunk is judged and stripped (`crate::attachments::Inspector`),
//! encrypted with the reporter's data key bound to the attachment id
//! (`service_kit::envelope_stream`) and written to the file store, so no file is ever held whole.
//! The object becomes visible only when the whole upload passed; its row is written after, in a
//! transaction that checks the report and the cap again. A refused or failed upload leaves no
//! object behind.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use diesel_async::AsyncConnection as _;
use futures_util::stream::{BoxStream, Stream, StreamExt as _};
use prometheus::{IntCounter, IntCounterVec};
use service_kit::config::Env;
use service_kit::db::Pool;
use service_kit::envelope::{Aad, DataKey};
use service_kit::envelope_stream::{Opener, Sealer};
use service_kit::file_store::{FileStore, FileStoreConfig, FileStoreError, ObjectWriter};
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::keys::{DataKeys, KeyError};
pub use crate::attachments::Refusal;
use crate::attachments::{FileType, Inspector, Rules, check_file_name};
pub use crate::domain::Caller;
use crate::domain::{AuditEntry, IdempotencyKey};
pub use crate::store::attachments::AttachmentRecord;
use crate::store::idempotency::Claimed;
use crate::store::{self, Conn};

/// The associated data of an attachment's bytes: table, column and the attachment's id.
fn aad(id: &Uuid) -> Aad<'_> {
    Aad::new("attachments", "object", id.as_bytes())
}

/// `ALLOWED_FILE_TYPES`, `MAX_FILE_SIZE`, `MAX_ATTACHMENTS_PER_REPORT` and the file store.
#[derive(Debug, Clone)]
pub struct AttachmentsConfig {
    pub allowed: Vec<FileType>,
    pub max_file_size: u64,
    pub max_per_report: i64,
    pub file_store: FileStoreConfig,
}

impl AttachmentsConfig {
    pub fn from_env(env: &Env) -> Option<Self> {
        let allowed_text = env
            .optional_string("ALLOWED_FILE_TYPES")
            .unwrap_or_else(|| "jpeg,png,gif,pdf".to_owned());
        let allowed: Option<Vec<FileType>> = allowed_text.split(',').map(FileType::from_name).collect();
        let allowed = match allowed {
            Some(list) if !list.is_empty() => Some(list),
            _ => {
                env.problem(
                    "ALLOWED_FILE_TYPES",
                    "must be a comma-separated list of jpeg, png, gif, pdf",
                );
                None
            }
        };
        let max_file_size = env.int_in("MAX_FILE_SIZE", 10 * 1024 * 1024, 1, 1024 * 1024 * 1024);
        let max_per_report = env.int_in("MAX_ATTACHMENTS_PER_REPORT", 10, 1, 1000);
        let file_store = FileStoreConfig::from_env(env);
        Some(Self {
            allowed: allowed?,
            max_file_size,
            max_per_report,
            file_store: file_store?,
        })
    }
}

/// What the client said about the file before its bytes.
#[derive(Debug, Clone)]
pub struct UploadHeader {
    pub report_id: Uuid,
    pub idempotency_key: String,
    pub declared_type: String,
    pub file_name: String,
    /// 0 when unknown.
    pub declared_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Not the caller's report (or no such live report).
    #[error("no such report")]
    NotFound,
    #[error("the report already has {max} attachments")]
    TooMany { max: i64 },
    /// The `Idempotency-Key` came with another file or report before.
    #[error("the idempotency key was used for another upload")]
    IdempotencyKeyReused,
    /// An upload under the same `Idempotency-Key` is being stored right now.
    #[error("an upload with this idempotency key is still running")]
    RequestInProgress,
    /// The client's stream failed or ended early.
    #[error("the upload stream broke off")]
    Interrupted,
    /// The messages are not a header then chunks.
    #[error("malformed upload: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No such file on a report the caller may read, or its owner's key is gone.
    #[error("no such attachment")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FileStoreError> for UploadError {
    fn from(e: FileStoreError) -> Self {
        Self::Unexpected(anyhow::Error::new(e).context("file store"))
    }
}

fn key_to_store(e: KeyError) -> StoreError {
    match e {
        KeyError::Store(e) => e,
        e => StoreError::Unexpected(anyhow::Error::new(e)),
    }
}

/// `attachment_bytes_total` and `attachment_rejected_total{reason}`.
#[derive(Clone)]
pub struct AttachmentMetrics {
    bytes: IntCounter,
    rejected: IntCounterVec,
}

impl AttachmentMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let bytes = service_kit::metrics::register(
            registry,
            IntCounter::new(
                "attachment_bytes_total",
                "Bytes of attachments stored (after stripping)",
            )?,
        )?;
        let rejected = service_kit::metrics::counter_vec(
            registry,
            "attachment_rejected_total",
            "Uploads refused, by reason",
            &["reason"],
        )?;
        for reason in Refusal::REASONS {
            rejected.with_label_values(&[reason]);
        }
        Ok(Self { bytes, rejected })
    }

    fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}

/// The attachment use cases.
#[derive(Clone)]
pub struct Attachments {
    pool: Pool,
    keys: DataKeys,
    files: Arc<dyn FileStore>,
    config: Arc<AttachmentsConfig>,
    metrics: AttachmentMetrics,
}

impl Attachments {
    pub fn new(
        pool: Pool,
        keys: DataKeys,
        files: Arc<dyn FileStore>,
        config: AttachmentsConfig,
        metrics: AttachmentMetrics,
    ) -> Self {
        Self {
            pool,
            keys,
            files,
            config: Arc::new(config),
            metrics,
        }
    }

    /// Adds the file `chunks` carry to the caller's report `header.report_id`.
    pub async fn upload<S>(
        &self,
        caller: Caller,
        header: UploadHeader,
        chunks: S,
    ) -> Result<AttachmentRecord, UploadError>
    where
        S: Stream<Item = Result<Bytes, UploadError>> + Send + Unpin,
    {
        let result = self.upload_inner(caller, header, chunks).await;
        match &result {
            Ok(record) => self.metrics.bytes.inc_by(record.size.unsigned_abs()),
            Err(UploadError::Refused(r)) => self.metrics.rejected(r.reason()),
            Err(UploadError::TooMany { .. }) => self.metrics.rejected("too_many"),
            Err(_) => {}
        }
        result
    }

    async fn upload_inner<S>(
        &self,
        caller: Caller,
        header: UploadHeader,
        mut chunks: S,
    ) -> Result<AttachmentRecord, UploadError>
    where
        S: Stream<Item = Result<Bytes, UploadError>> + Send + Unpin,
    {
        let (user, report_id, max) = (caller.user_id, header.report_id, self.config.max_per_report);
        let (ip, user_agent) = (caller.ip, caller.user_agent);
        // The report and the cap are checked first (someone else's report is 404 whatever the
        // file), before any byte is stored, and again with the row.
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        let keys = &self.keys;
        let (check, key) = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                service_kit::db::enter_scope(conn, &user.to_string(), "user").await?;
                let check = check_report(conn, user, report_id, max, false).await?;
                if !matches!(check, ReportCheck::Fine { .. }) {
                    return Ok((check, None));
                }
                let key = keys.for_writing(conn, user).await.map_err(key_to_store)?;
                Ok((check, Some(key)))
            })
            .await?;
        drop(conn);
        check.into_result()?;
        let key = key.ok_or_else(|| anyhow::anyhow!("a fine report check comes with a key"))?;
        check_file_name(&header.file_name)?;
        let rules = Rules {
            allowed: self.config.allowed.clone(),
            max_size: self.config.max_file_size,
        };
        let inspector = Inspector::new(rules, &header.declared_type, header.declared_size)?;

        let id = Uuid::new_v4();
        let object_name = Uuid::new_v4();
        let mut writer = self.files.writer(object_name).await?;
        let judged = match stream_into(inspector, &key, &id, &mut chunks, writer.as_mut()).await {
            Ok(judged) => judged,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "aborting a refused upload's object");
                }
                return Err(e);
            }
        };
        drop(key);
        writer.commit().await?;

        let record = AttachmentRecord {
            id,
            report_id,
            user_id: user,
            content_type: judged.file_type.mime().to_owned(),
            size: i64::try_from(judged.size).map_err(anyhow::Error::new)?,
            sha256: judged.sha256,
            object_name,
            created_at: Utc::now(),
        };
        let row = record.clone();
        // The same key with the same file for the same report (judged by what is stored, so a
        // retry of the same bytes matches) replays the first upload's answer.
        let idempotency = (!header.idempotency_key.is_empty()).then(|| IdempotencyKey {
            request_hash: upload_hash(report_id, &record.content_type, &record.sha256),
            key: header.idempotency_key.clone(),
        });
        let stored = async {
            let mut conn = self.pool.get().await.map_err(StoreError::from)?;
            let (check, replay) = conn
                .transaction::<_, StoreError, _>(async move |conn| {
                    service_kit::db::enter_scope(conn, &user.to_string(), "user").await?;
                    if let Some(idem) = &idempotency {
                        match store::idempotency::claim(conn, user, idem).await? {
                            Claimed::Fresh => {}
                            Claimed::Replay(first) => return Ok((ReportCheck::Replay, Some(first))),
                            Claimed::InProgress => return Ok((ReportCheck::InProgress, None)),
                            Claimed::Reused => return Ok((ReportCheck::Reused, None)),
                        }
                    }
                    let check = check_report(conn, user, report_id, max, true).await?;
                    if let ReportCheck::Fine { anonymous } = check {
                        store::attachments::insert(conn, &row).await?;
                        // As for the report itself: an anonymous report's files name no actor.
                        let audit = AuditEntry {
                            actor_id: (!anonymous).then_some(user),
                            action: "attachment.create",
                            resource: "attachment",
                            resource_id: Some(row.id.to_string()),
                            ip: if anonymous { None } else { ip },
                            user_agent: if anonymous { None } else { user_agent },
                            changed_fields: Vec::new(),
                        };
                        store::audit::insert(conn, &audit).await?;
                        if let Some(idem) = &idempotency {
                            // The answer to replay is the attachment itself, read back by id.
                            store::idempotency::record(conn, user, idem, row.id.as_bytes()).await?;
                        }
                    }
                    Ok((check, None))
                })
                .await?;
            match (check, replay) {
                (ReportCheck::Replay, Some(first)) => Ok(Some(Uuid::from_slice(&first).map_err(anyhow::Error::new)?)),
                (check, _) => check.into_result().map(|()| None),
            }
        }
        .await;
        match stored {
            Ok(None) => {}
            Ok(Some(first)) => {
                // This upload's object is not needed: the first one stands.
                self.discard(object_name).await;
                return self.replay(user, report_id, first).await;
            }
            Err(e) => {
                self.discard(object_name).await;
                return Err(e);
            }
        }
        tracing::info!(attachment_id = %id, report_id = %report_id, size = record.size, content_type = record.content_type, "attachment stored");
        Ok(record)
    }

    /// Removes the object of an upload that is not kept.
    async fn discard(&self, object_name: Uuid) {
        if let Err(delete) = self.files.delete(object_name).await {
            tracing::warn!(error = %delete, object = %object_name, "removing the object of an upload that is not kept");
        }
    }

    /// The first upload under a replayed key, as it was stored (deleted since: not found).
    async fn replay(&self, user: Uuid, report_id: Uuid, id: Uuid) -> Result<AttachmentRecord, UploadError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        let found = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                service_kit::db::enter_scope(conn, &user.to_string(), "user").await?;
                store::attachments::find_live(conn, report_id, id, Some(user)).await
            })
            .await?;
        tracing::info!(attachment_id = %id, report_id = %report_id, "upload replayed for its idempotency key");
        found.ok_or(UploadError::NotFound)
    }

    /// File `id` of report `report_id` with its decrypted bytes, streamed: the caller's own, or
    /// any for a moderator.
    pub async fn download(
        &self,
        caller: Caller,
        report_id: Uuid,
        id: Uuid,
    ) -> Result<(AttachmentRecord, BoxStream<'static, Result<Bytes, DownloadError>>), DownloadError> {
        let (user, role) = (caller.user_id, if caller.staff { "moderator" } else { "user" });
        let owner = (!caller.staff).then_some(user);
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        let keys = &self.keys;
        let found = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                service_kit::db::enter_scope(conn, &user.to_string(), role).await?;
                let Some(record) = store::attachments::find_live(conn, report_id, id, owner).await? else {
                    return Ok(None);
                };
                let key = keys.existing(conn, record.user_id).await.map_err(key_to_store)?;
                Ok(key.map(|key| (record, key)))
            })
            .await?;
        drop(conn);
        // A reporter whose key is gone (erased) has no readable files.
        let (record, key) = found.ok_or(DownloadError::NotFound)?;
        let object = self.files.get(record.object_name).await.map_err(|e| match e {
            FileStoreError::NotFound => {
                DownloadError::Unexpected(anyhow::anyhow!("attachment {} has a row but no object", record.id))
            }
            FileStoreError::Unexpected(e) => DownloadError::Unexpected(e),
        })?;
        let opener = Opener::new(&key, &aad(&record.id));
        Ok((record, decrypted(object, opener)))
    }
}

/// The outcome of checking a report before storing a file on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportCheck {
    /// The caller's live report, with room; whether it is anonymous.
    Fine {
        anonymous: bool,
    },
    NotFound,
    /// The idempotency key answers an earlier upload.
    Replay,
    InProgress,
    Reused,
    Full {
        max: i64,
    },
}

impl ReportCheck {
    fn into_result(self) -> Result<(), UploadError> {
        match self {
            Self::Fine { .. } => Ok(()),
            Self::NotFound => Err(UploadError::NotFound),
            Self::InProgress => Err(UploadError::RequestInProgress),
            Self::Reused => Err(UploadError::IdempotencyKeyReused),
            Self::Replay => Err(UploadError::Unexpected(anyhow::anyhow!("a replay without its answer"))),
            Self::Full { max } => Err(UploadError::TooMany { max }),
        }
    }
}

/// Whether `user` may add a file to `report_id`: their own live report, under the cap. With
/// `lock`, concurrent uploads to the report wait for this transaction.
/// What an upload's `Idempotency-Key` is bound to: the report and the file as stored.
fn upload_hash(report_id: Uuid, content_type: &str, sha256: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(b"reports.v1.ReportsService/UploadAttachment\0");
    hash.update(report_id.as_bytes());
    hash.update(content_type.as_bytes());
    hash.update(b"\0");
    hash.update(sha256.as_bytes());
    hash.finalize().into()
}

async fn check_report(
    conn: &mut Conn,
    user: Uuid,
    report_id: Uuid,
    max: i64,
    lock: bool,
) -> Result<ReportCheck, StoreError> {
    if lock {
        store::attachments::lock_report(conn, report_id).await?;
    }
    let Some(anonymous) = store::attachments::live_report_anonymity(conn, user, report_id).await? else {
        return Ok(ReportCheck::NotFound);
    };
    if store::attachments::count_live(conn, report_id).await? >= max {
        return Ok(ReportCheck::Full { max });
    }
    Ok(ReportCheck::Fine { anonymous })
}

/// Judges, strips, seals and writes the upload's chunks one by one.
async fn stream_into<S>(
    mut inspector: Inspector,
    key: &DataKey,
    id: &Uuid,
    chunks: &mut S,
    writer: &mut dyn ObjectWriter,
) -> Result<crate::attachments::Judged, UploadError>
where
    S: Stream<Item = Result<Bytes, UploadError>> + Send + Unpin,
{
    let mut sealer = Sealer::new(key, &aad(id));
    while let Some(chunk) = chunks.next().await {
        let plain = inspector.push(&chunk?)?;
        let sealed = sealer.push(&plain);
        if !sealed.is_empty() {
            writer.write(Bytes::from(sealed)).await?;
        }
    }
    let (last, judged) = inspector.finish()?;
    let mut sealed = sealer.push(&last);
    sealed.extend(sealer.finish());
    writer.write(Bytes::from(sealed)).await?;
    Ok(judged)
}

/// The plaintext of a sealed object, chunk by chunk; an error (and no more bytes) as soon as a
/// segment does not open or the object ends early.
fn decrypted(
    object: service_kit::file_store::ByteStream,
    opener: Opener,
) -> BoxStream<'static, Result<Bytes, DownloadError>> {
    let unopened = |e: service_kit::envelope::EnvelopeError| {
        DownloadError::Unexpected(anyhow::Error::new(e).context("attachment bytes"))
    };
    futures_util::stream::unfold((object, Some(opener)), move |(mut object, opener)| async move {
        let mut opener = opener?;
        loop {
            match object.next().await {
                Some(Ok(sealed)) => match opener.push(&sealed) {
                    Ok(plain) if plain.is_empty() => {}
                    Ok(plain) => return Some((Ok(Bytes::from(plain)), (object, Some(opener)))),
                    Err(e) => return Some((Err(unopened(e)), (object, None))),
                },
                Some(Err(e)) => {
                    let e = DownloadError::Unexpected(anyhow::Error::new(e).context("reading an attachment"));
                    return Some((Err(e), (object, None)));
                }
                None => {
                    let last = opener.finish().map(Bytes::from).map_err(unopened);
                    return Some((last, (object, None)));
                }
            }
        }
    })
    .boxed()
}
