//! Where a service keeps files (attachments, receipts): a local directory by default, or an
//! S3-compatible bucket (`FILE_STORE_URL=s3://bucket/prefix`). Objects are named by a uuid the
//! service chose, never by anything a client sent; a write is invisible until it is committed, and
//! one that fails or is dropped leaves nothing behind. Bytes move in chunks both ways, so a file's
//! size never decides how much memory it takes (S3 holds one 5 MiB part per upload, its minimum).
//!
//! The store keeps what it is given: callers encrypt before they write
//! ([`crate::envelope_stream`]).
//!
//! Settings: `FILE_STORE_URL` (`file:///absolute/path`, or `s3://bucket/prefix`; unset: the
//! directory `files` under `DATA_DIR`, default `./data`). For S3: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (or `_FILE`), `AWS_REGION` (default `us-east-1`), `S3_ENDPOINT` (for an
//! S3-compatible server; `http://` allowed only there), `AWS_SESSION_TOKEN` optional.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::config::Env;

/// The bytes of a stored object, in order.
pub type ByteStream = BoxStream<'static, Result<Bytes, FileStoreError>>;

/// Bytes read from a local file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// S3's smallest part (except the last).
const S3_PART: usize = 5 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("no such object")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<object_store::Error> for FileStoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            e => Self::Unexpected(anyhow::Error::new(e).context("object store")),
        }
    }
}

impl From<std::io::Error> for FileStoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound,
            _ => Self::Unexpected(anyhow::Error::new(e).context("local file store")),
        }
    }
}

/// A place to keep files by uuid.
#[tonic::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Starts writing object `name`. Nothing is visible under `name` until
    /// [`ObjectWriter::commit`]; a writer dropped before that removes what it wrote.
    async fn writer(&self, name: Uuid) -> Result<Box<dyn ObjectWriter>, FileStoreError>;
    /// The object's bytes, streamed.
    async fn get(&self, name: Uuid) -> Result<ByteStream, FileStoreError>;
    /// Removes the object; removing one that is not there is not an error.
    async fn delete(&self, name: Uuid) -> Result<(), FileStoreError>;
}

/// One object being written.
#[tonic::async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), FileStoreError>;
    /// Makes the object visible, whole.
    async fn commit(self: Box<Self>) -> Result<(), FileStoreError>;
    /// Gives up: nothing of the object stays (dropping the writer does the same, in the background).
    async fn abort(self: Box<Self>) -> Result<(), FileStoreError>;
}

/// Where `FILE_STORE_URL` points.
#[derive(Clone)]
pub enum FileStoreConfig {
    Local {
        dir: PathBuf,
    },
    S3 {
        bucket: String,
        prefix: String,
        region: String,
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<secrecy::SecretString>,
        session_token: Option<secrecy::SecretString>,
    },
}

impl std::fmt::Debug for FileStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
        }
    }
}

pub const FILE_STORE_URL: &str = "FILE_STORE_URL";

impl FileStoreConfig {
    /// Reads `FILE_STORE_URL` and what it needs (see the module documentation); problems are
    /// recorded in `env`.
    pub fn from_env(env: &Env) -> Option<Self> {
        let Some(url) = env.optional_string(FILE_STORE_URL) else {
            let data = env.optional_string("DATA_DIR").unwrap_or_else(|| "./data".to_owned());
            return Some(Self::Local {
                dir: Path::new(&data).join("files"),
            });
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                env.problem(
                    FILE_STORE_URL,
                    "a file:// URL needs an absolute path (file:///var/lib/…)",
                );
                return None;
            }
            return Some(Self::Local { dir: path.into() });
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            env.problem(FILE_STORE_URL, "must be file:///absolute/path or s3://bucket/prefix");
            return None;
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            env.problem(FILE_STORE_URL, "an s3:// URL names a bucket: s3://bucket/prefix");
            return None;
        }
        let endpoint = env.optional_string("S3_ENDPOINT");
        if let Some(e) = &endpoint
            && !(e.starts_with("https://") || e.starts_with("http://"))
        {
            env.problem("S3_ENDPOINT", "must be an http:// or https:// URL");
            return None;
        }
        Some(Self::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            region: env
                .optional_string("AWS_REGION")
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint,
            access_key_id: env.optional_string("AWS_ACCESS_KEY_ID"),
            secret_access_key: env.optional_secret("AWS_SECRET_ACCESS_KEY"),
            session_token: env.optional_secret("AWS_SESSION_TOKEN"),
        })
    }

    /// The store this configuration names (a local directory is created when missing).
    pub fn open(&self) -> anyhow::Result<Arc<dyn FileStore>> {
        match self {
            Self::Local { dir } => Ok(Arc::new(LocalStore::open(dir)?)),
            Self::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_region(region);
                if let Some(e) = endpoint {
                    builder = builder.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                if let Some(id) = access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(s) = secret_access_key {
                    builder = builder.with_secret_access_key(s.expose_secret());
                }
                if let Some(t) = session_token {
                    builder = builder.with_token(t.expose_secret());
                }
                let store = builder.build()?;
                Ok(Arc::new(S3Store {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                }))
            }
        }
    }
}

/// Files in one directory: `<uuid>` when whole, `.<uuid>.partial` while being written.
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating the file store {}: {e}", dir.display()))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, name: Uuid) -> PathBuf {
        self.dir.join(name.hyphenated().to_string())
    }
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    path: PathBuf,
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: leave nothing. Synchronous, so it is done when the drop is.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[tonic::async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), FileStoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("written after commit"))?;
        file.write_all(&bytes).await?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), FileStoreError> {
        let mut file = self.file.take().ok_or_else(|| anyhow::anyhow!("committed twice"))?;
        let done = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            // A rename within a directory is atomic: the object appears whole or not at all.
            tokio::fs::rename(&self.partial, &self.path).await
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&self.partial).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), FileStoreError> {
        drop(self.file.take());
        match tokio::fs::remove_file(&self.partial).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl FileStore for LocalStore {
    async fn writer(&self, name: Uuid) -> Result<Box<dyn ObjectWriter>, FileStoreError> {
        let partial = self.dir.join(format!(".{}.partial", name.hyphenated()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            partial,
            path: self.path(name),
        }))
    }

    async fn get(&self, name: Uuid) -> Result<ByteStream, FileStoreError> {
        let file = tokio::fs::File::open(self.path(name)).await?;
        let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
            let mut buf = vec![0u8; READ_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), file)))
        });
        Ok(chunks.boxed())
    }

    async fn delete(&self, name: Uuid) -> Result<(), FileStoreError> {
        match tokio::fs::remove_file(self.path(name)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Objects in an S3-compatible bucket under `prefix/`, written by multipart upload (invisible
/// until completed; aborted when the write fails or is dropped).
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3Store {
    fn path(&self, name: Uuid) -> ObjectPath {
        let name = name.hyphenated().to_string();
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }
}

struct S3Writer {
    upload: Option<WriteMultipart>,
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "aborting an abandoned multipart upload");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), FileStoreError> {
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("written after commit"))?;
        // One part in flight at most: memory stays at a part or two per upload.
        upload.wait_for_capacity(1).await?;
        upload.put(bytes);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), FileStoreError> {
        let upload = self.upload.take().ok_or_else(|| anyhow::anyhow!("committed twice"))?;
        upload.finish().await?;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), FileStoreError> {
        if let Some(upload) = self.upload.take() {
            upload.abort().await?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl FileStore for S3Store {
    async fn writer(&self, name: Uuid) -> Result<Box<dyn ObjectWriter>, FileStoreError> {
        let upload = self.store.put_multipart(&self.path(name)).await?;
        Ok(Box::new(S3Writer {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, S3_PART)),
        }))
    }

    async fn get(&self, name: Uuid) -> Result<ByteStream, FileStoreError> {
        let got = self.store.get(&self.path(name)).await?;
        Ok(got.into_stream().map_err(FileStoreError::from).boxed())
    }

    async fn delete(&self, name: Uuid) -> Result<(), FileStoreError> {
        match self.store.delete(&self.path(name)).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &dyn FileStore, name: Uuid) -> Result<Vec<u8>, FileStoreError> {
        let mut out = Vec::new();
        let mut stream = store.get(name).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_local_object_appears_only_when_committed_and_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(&dir.path().join("files")).expect("store");
        let name = Uuid::new_v4();
        let mut w = store.writer(name).await.expect("writer");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        w.write(Bytes::from(big.clone())).await.expect("write");
        w.write(Bytes::from_static(b"tail")).await.expect("write");
        assert!(
            matches!(store.get(name).await, Err(FileStoreError::NotFound)),
            "visible before commit"
        );
        w.commit().await.expect("commit");
        let mut expected = big;
        expected.extend_from_slice(b"tail");
        assert_eq!(read_all(&store, name).await.expect("read"), expected);
        assert_eq!(entries(&dir.path().join("files")), vec![name.to_string()]);
        store.delete(name).await.expect("delete");
        store.delete(name).await.expect("deleting twice is fine");
        assert!(matches!(store.get(name).await, Err(FileStoreError::NotFound)));
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_local_write_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("store");
        let mut w = store.writer(Uuid::new_v4()).await.expect("writer");
        w.write(Bytes::from_static(b"half")).await.expect("write");
        w.abort().await.expect("abort");
        let mut w = store.writer(Uuid::new_v4()).await.expect("writer");
        w.write(Bytes::from_static(b"half")).await.expect("write");
        drop(w);
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn file_store_url_is_parsed_and_refused_by_name() {
        let local = |vars: &[(&str, &str)]| {
            let env = Env::from_map(vars.iter().copied());
            let c = FileStoreConfig::from_env(&env);
            (c, env.finish())
        };
        let (c, ok) = local(&[]);
        assert!(ok.is_ok());
        assert!(matches!(c, Some(FileStoreConfig::Local { dir }) if dir == Path::new("./data/files")));
        let (c, _) = local(&[("FILE_STORE_URL", "file:///srv/files")]);
        assert!(matches!(c, Some(FileStoreConfig::Local { dir }) if dir == Path::new("/srv/files")));
        let (c, ok) = local(&[
            ("FILE_STORE_URL", "s3://bucket/a/b/"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ]);
        assert!(ok.is_ok());
        let c = c.expect("s3");
        assert!(matches!(&c, FileStoreConfig::S3 { bucket, prefix, .. } if bucket == "bucket" && prefix == "a/b"));
        assert!(!format!("{c:?}").contains("very-secret"));
        for bad in ["s3://", "ftp://x", "file://relative"] {
            let (_, err) = local(&[("FILE_STORE_URL", bad)]);
            assert!(err.expect_err(bad).to_string().contains("FILE_STORE_URL"), "{bad}");
        }
    }
}
