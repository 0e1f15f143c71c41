//! Devices an account logged in from (`device_fingerprints`), keyed by a salted hash of the app's
//! device id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::device_fingerprints;
use super::{Conn, StoreError};
use crate::domain::{Device, KnownDevice};

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
pub async fn devices(conn: &mut Conn, user: Uuid) -> Result<Vec<KnownDevice>, StoreError> {
    let rows: Vec<DeviceRow> = device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user))
        .order(device_fingerprints::last_seen_at.desc())
        .select(DeviceRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(KnownDevice::from).collect())
}

/// Forgets one of the user's devices; false when the user has no such device.
pub async fn delete_device(conn: &mut Conn, user: Uuid, fingerprint: &[u8]) -> Result<bool, StoreError> {
    let n = diesel::delete(device_fingerprints::table.find((user, fingerprint)))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Records the device of a login; returns true when it is new for this user.
pub async fn upsert_device(
    conn: &mut Conn,
    user: Uuid,
    fingerprint: &[u8],
    device: &Device,
) -> Result<bool, StoreError> {
    let existing: Option<i16> = device_fingerprints::table
        .find((user, fingerprint))
        .select(device_fingerprints::risk_score)
        .first(conn)
        .await
        .optional()?;
    if existing.is_some() {
        diesel::update(device_fingerprints::table.find((user, fingerprint)))
            .set((
                device_fingerprints::last_seen_at.eq(diesel::dsl::now),
                device_fingerprints::model.eq(device.model.as_deref()),
                device_fingerprints::os_version.eq(device.os_version.as_deref()),
            ))
            .execute(conn)
            .await?;
        return Ok(false);
    }
    let known: i64 = device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user))
        .count()
        .get_result(conn)
        .await?;
    // The first device of an account is its home; any later new device starts at a higher risk.
    let risk: i16 = if known == 0 { 0 } else { 30 };
    diesel::insert_into(device_fingerprints::table)
        .values((
            device_fingerprints::user_id.eq(user),
            device_fingerprints::fingerprint_hash.eq(fingerprint),
            device_fingerprints::device_id.eq(&device.device_id),
            device_fingerprints::platform.eq(device.platform),
            device_fingerprints::model.eq(device.model.as_deref()),
            device_fingerprints::os_version.eq(device.os_version.as_deref()),
            device_fingerprints::risk_score.eq(risk),
            device_fingerprints::trusted.eq(known == 0),
        ))
        .execute(conn)
        .await?;
    Ok(known > 0)
}
