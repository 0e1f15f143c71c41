//! Each user's data key: made on a user's first write, unwrapped for each use, never stored in
//! clear. Used by every use case that seals or opens a user's values or files.

use std::sync::Arc;

use service_kit::envelope::{DataKey, EnvelopeError, Keyring, WrappedKey};
use service_kit::store_error::StoreError;
use uuid::Uuid;

use crate::store::{self, Conn};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The user's key is gone (erased): their data can no longer be read.
    #[error("the user's data key is gone")]
    Missing,
    /// The wrapped key names a master key that ENCRYPTION_KEYS no longer holds, or does not open.
    #[error("the user's data key does not unwrap: {0}")]
    Unwrap(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Data keys over the master keyring.
#[derive(Clone)]
pub struct DataKeys {
    keyring: Arc<Keyring>,
}

impl DataKeys {
    pub fn new(keyring: Arc<Keyring>) -> Self {
        Self { keyring }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// `user`'s data key, made and stored (wrapped by the current master key) if they have none.
    /// Call it inside the transaction of the write that needs it, scoped to `user`.
    pub async fn for_writing(&self, conn: &mut Conn, user: Uuid) -> Result<DataKey, KeyError> {
        let stored = store::data_keys::find(conn, user).await?;
        self.for_writing_from(conn, user, stored).await
    }

    /// [`Self::for_writing`] when the transaction has read `user`'s wrapped key already (`stored`,
    /// `None` when they had none).
    pub async fn for_writing_from(
        &self,
        conn: &mut Conn,
        user: Uuid,
        stored: Option<WrappedKey>,
    ) -> Result<DataKey, KeyError> {
        if let Some(wrapped) = stored {
            return Ok(self.unwrap(user, &wrapped)?);
        }
        let fresh = DataKey::generate();
        let wrapped = self.keyring.wrap(&fresh, user.as_bytes());
        store::data_keys::insert_if_absent(conn, user, &wrapped).await?;
        // A concurrent first write may have stored its key first: use whichever is stored.
        self.existing(conn, user).await?.ok_or(KeyError::Missing)
    }

    /// `user`'s data key, or `None` when they have none (never wrote, or erased).
    pub async fn existing(&self, conn: &mut Conn, user: Uuid) -> Result<Option<DataKey>, KeyError> {
        match store::data_keys::find(conn, user).await? {
            Some(wrapped) => Ok(Some(self.unwrap(user, &wrapped)?)),
            None => Ok(None),
        }
    }

    /// `wrapped`, `user`'s stored key, opened (bound to the user it was made for).
    pub fn unwrap(&self, user: Uuid, wrapped: &WrappedKey) -> Result<DataKey, EnvelopeError> {
        self.keyring.unwrap(wrapped, user.as_bytes())
    }
}
