//! Revocations in Redis, where the gateway reads them on every request. PostgreSQL holds every
//! revocation (written by the use cases in the transaction of the change); `redis` copies one
//! revocation there as soon as it is committed, and `sync` keeps Redis holding all of them, with the
//! marker that tells the gateway Redis can be trusted.

mod redis;
mod sync;

pub use redis::{KEY_MARGIN, RevocationWriter, revocation_pipe, write_pipe};
pub use sync::RevocationSync;
