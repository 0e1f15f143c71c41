//! The caller's devices: list them, and forget one (which ends its sessions).

use service_kit::auth::AccessClaims;

use super::{Auth, Common, Reauth};
use crate::domain::{Actor, Device, KnownDevice, UserId};
use crate::store::{self, Conn, StoreError, Transaction as _};

/// What listing or removing devices can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The caller has no device with this id.
    #[error("not found")]
    NotFound,
    /// Removing a device needs the password (or a code) again (`Common::Reauth`).
    #[error(transparent)]
    Common(#[from] Common),
}

/// Risk score (0..100) and trust of a device seen for the first time: the first device of an
/// account is its home; any later new device starts at a higher risk.
fn first_seen(known_devices: i64) -> (i16, bool) {
    if known_devices == 0 { (0, true) } else { (30, false) }
}

/// Records the device of a new session (in the caller's transaction); true when it is new to an
/// account that had others (a security event).
pub(super) async fn record_device(
    conn: &mut Conn,
    user: UserId,
    fingerprint: &[u8],
    device: &Device,
) -> Result<bool, StoreError> {
    if store::touch_device(conn, user, fingerprint, device).await? {
        return Ok(false);
    }
    let known = store::device_count(conn, user).await?;
    let (risk_score, trusted) = first_seen(known);
    store::insert_device(conn, user, fingerprint, device, risk_score, trusted).await?;
    Ok(known > 0)
}

impl Auth {
    /// The caller's devices, the most recently seen first.
    pub async fn devices(&self, claims: &AccessClaims) -> Result<Vec<KnownDevice>, DeviceError> {
        let (user, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        Ok(store::devices(&mut conn, user).await?)
    }

    /// Forgets one of the caller's devices and ends its sessions, after the password (or a code)
    /// again. Another user's device id is simply not found: it names nothing of the caller's.
    pub async fn remove_device(
        &self,
        claims: &AccessClaims,
        device_id: &str,
        reauth: Reauth,
        actor: Actor,
    ) -> Result<(), DeviceError> {
        let (account, _, mut conn) = self.caller_account(claims).await?;
        if device_id.is_empty() || device_id.chars().count() > 128 {
            return Err(DeviceError::NotFound);
        }
        self.reauthenticate(&mut conn, &account, &reauth, &actor).await?;
        let user = account.id;
        let fingerprint = self.fingerprint(device_id);
        let device = device_id.to_owned();
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

#[cfg(test)]
mod tests {
    use super::first_seen;

    #[test]
    fn the_first_device_is_home_and_later_ones_start_riskier() {
        assert_eq!(first_seen(0), (0, true));
        assert_eq!(first_seen(1), (30, false));
        assert_eq!(first_seen(7), (30, false));
    }
}
