//! The caller's devices: list them, and forget one (which ends its sessions).

use service_kit::auth::AccessClaims;

use super::{Auth, CallerError};
use crate::domain::{Actor, KnownDevice};
use crate::store::{self, StoreError, Transaction as _};

/// What listing or removing devices can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The caller has no device with this id.
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Auth {
    /// The caller's devices, the most recently seen first.
    pub async fn devices(&self, claims: &AccessClaims) -> Result<Vec<KnownDevice>, DeviceError> {
        let (user, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        Ok(store::devices(&mut conn, user).await?)
    }

    /// Forgets one of the caller's devices and ends its sessions. Another user's device id is
    /// simply not found: it names nothing of the caller's.
    pub async fn remove_device(&self, claims: &AccessClaims, device_id: &str, actor: Actor) -> Result<(), DeviceError> {
        let (user, _) = self.live_session(claims).await?;
        if device_id.is_empty() || device_id.len() > 128 {
            return Err(DeviceError::NotFound);
        }
        let fingerprint = self.fingerprint(device_id);
        let device = device_id.to_owned();
        let mut conn = self.conn().await?;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                if !store::delete_device(conn, user, &fingerprint).await? {
                    return Ok(None);
                }
                let ended = store::revoke_sessions(conn, user, None, Some(&device), "device_removed").await?;
                store::audit(
                    conn,
                    &actor.acting_as(user),
                    "device.remove",
                    "device",
                    Some(device.clone()),
                    &[],
                )
                .await?;
                Ok(Some(ended))
            })
            .await?
            .ok_or(DeviceError::NotFound)?;
        self.revocations.revoke(None, &ended).await;
        Ok(())
    }
}
