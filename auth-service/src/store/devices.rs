//! Devices an account logged in from (`device_fingerprints`), keyed by a salted hash of the app's
//! device id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::device_fingerprints;
use super::{Conn, StoreError};
use crate::domain::{Device, KnownDevice, UserId};

#[derive(Queryable, Selectable)]
#[diesel(table_name = device_fingerprints, check_for_backend(diesel::pg::Pg))]
struct DeviceRow {
    device_id: String,
    platform: String,
    model: Option<String>,
    os_version: Option<String>,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    risk_score: i16,
    trusted: bool,
}

impl From<DeviceRow> for KnownDevice {
    fn from(r: DeviceRow) -> Self {
        Self {
            device_id: r.device_id,
            platform: r.platform,
            model: r.model,
            os_version: r.os_version,
            first_seen_at: r.first_seen_at,
            last_seen_at: r.last_seen_at,
            risk_score: r.risk_score,
            trusted: r.trusted,
        }
    }
}

/// The user's devices, the most recently seen first.
pub async fn devices(conn: &mut Conn, user: UserId) -> Result<Vec<KnownDevice>, StoreError> {
    let rows: Vec<DeviceRow> = device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user.0))
        .order(device_fingerprints::last_seen_at.desc())
        .select(DeviceRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(KnownDevice::from).collect())
}

/// Forgets one of the user's devices; false when the user has no such device.
pub async fn delete_device(conn: &mut Conn, user: UserId, fingerprint: &[u8]) -> Result<bool, StoreError> {
    let n = diesel::delete(device_fingerprints::table.find((user.0, fingerprint)))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Marks a known device of the user as seen now, with its current model and OS version; false
/// when the user has no such device.
pub async fn touch_device(
    conn: &mut Conn,
    user: UserId,
    fingerprint: &[u8],
    device: &Device,
) -> Result<bool, StoreError> {
    let n = diesel::update(device_fingerprints::table.find((user.0, fingerprint)))
        .set((
            device_fingerprints::last_seen_at.eq(diesel::dsl::now),
            device_fingerprints::model.eq(device.model.as_deref()),
            device_fingerprints::os_version.eq(device.os_version.as_deref()),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// How many devices the user has.
pub async fn device_count(conn: &mut Conn, user: UserId) -> Result<i64, StoreError> {
    Ok(device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user.0))
        .count()
        .get_result(conn)
        .await?)
}

/// A device seen for the first time, with the trust the use case gives it.
pub async fn insert_device(
    conn: &mut Conn,
    user: UserId,
    fingerprint: &[u8],
    device: &Device,
    risk_score: i16,
    trusted: bool,
) -> Result<(), StoreError> {
    diesel::insert_into(device_fingerprints::table)
        .values((
            device_fingerprints::user_id.eq(user.0),
            device_fingerprints::fingerprint_hash.eq(fingerprint),
            device_fingerprints::device_id.eq(&device.device_id),
            device_fingerprints::platform.eq(device.platform),
            device_fingerprints::model.eq(device.model.as_deref()),
            device_fingerprints::os_version.eq(device.os_version.as_deref()),
            device_fingerprints::risk_score.eq(risk_score),
            device_fingerprints::trusted.eq(trusted),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
