//! Use case of operators: `rotate-master-key` re-wraps every data key that is not under the
//! current master key (the first of `ENCRYPTION_KEYS`), batch by batch, each batch in its own
//! transaction. The data sealed under the keys is untouched. A run cut short (a crash, a
//! deploy) leaves every key either wholly old or wholly new, so running it again finishes the job.

use service_kit::db::Pool;

use super::{DataKeys, KeyError};
use crate::store::{self, Abort, Transactions as _};

/// Keys re-wrapped per transaction.
const BATCH: i64 = 100;

/// Re-wraps every data key under the current master key; answers how many were re-wrapped.
pub async fn rotate_master_key(pool: &Pool, keys: &DataKeys) -> Result<u64, KeyError> {
    let mut total = 0u64;
    loop {
        let mut conn = store::connection(pool).await?;
        let keys = keys.clone();
        let done = conn
            .transaction::<_, Abort<KeyError>, _>(async move |conn| {
                store::enter_scope(conn, "", "reports-service").await?;
                let current = keys.keyring().current_id().to_owned();
                let batch = store::data_keys::stale_batch(conn, &current, BATCH).await?;
                for (user, wrapped) in &batch {
                    let rewrapped = keys
                        .keyring()
                        .rewrap(wrapped, user.as_bytes())
                        .map_err(|e| Abort::Refused(KeyError::from(e)))?;
                    if let Some(new) = rewrapped {
                        store::data_keys::replace(conn, *user, &new).await?;
                    }
                }
                Ok(batch.len() as u64)
            })
            .await
            .map_err(Abort::into_inner)?;
        if done == 0 {
            return Ok(total);
        }
        total += done;
        tracing::info!(rewrapped = total, "re-wrapped a batch of data keys");
    }
}
