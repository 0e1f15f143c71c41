//! Making the gateway's labelled counters: built, registered and handed back in one call (most of
//! its metrics are of this kind).

use prometheus::{IntCounterVec, Opts, Registry};
use service_kit::metrics::register;

/// A counter with `labels`, registered in `registry`.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}
