//! `idempotency_keys` (service_kit::idempotency): the key's claim, the stored response, the purge.

use service_kit::idempotency::{self, Claim, IdempotencyError};
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::Conn;
use crate::domain::IdempotencyKey;

/// What a key's claim found: run the write, or answer these (sealed) bytes.
pub enum Claimed {
    Fresh,
    Replay(Vec<u8>),
    InProgress,
    Reused,
}

pub async fn claim(conn: &mut Conn, user: Uuid, key: &IdempotencyKey) -> Result<Claimed, StoreError> {
    match idempotency::claim(conn, "reports", user, &key.key, &key.request_hash).await {
        Ok(Claim::Fresh) => Ok(Claimed::Fresh),
        Ok(Claim::Replay(bytes)) => Ok(Claimed::Replay(bytes)),
        Err(IdempotencyError::InProgress) => Ok(Claimed::InProgress),
        Err(IdempotencyError::Reused) => Ok(Claimed::Reused),
        Err(IdempotencyError::Query(e)) => Err(e.into()),
    }
}

pub async fn record(conn: &Conn, user: Uuid, key: &IdempotencyKey, response: &[u8]) -> Result<(), StoreError> {
    Ok(idempotency::record(conn, "reports", user, &key.key, &key.request_hash, response).await?)
}

/// Deletes lapsed keys (scope: the service's own role).
pub async fn purge(conn: &mut Conn) -> Result<usize, StoreError> {
    Ok(idempotency::purge(conn, "reports").await?)
}
