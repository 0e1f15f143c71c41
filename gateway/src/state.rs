//! What every handler and middleware of one HTTP worker shares: the service channels, the token
//! verifier and the revocation check (see `app`, which builds one per worker).

use std::time::Instant;

use prometheus::IntCounterVec;
use service_kit::auth::Verifier;

use crate::revocation::RevocationCheck;
use crate::upstream::Upstreams;

#[derive(Clone)]
pub struct AppState {
    pub upstreams: Upstreams,
    pub verifier: Verifier,
    pub revocation: RevocationCheck,
    /// False only in benchmarks (`GATEWAY_VERIFY_TOKENS=false`): the services still verify.
    pub verify_tokens: bool,
    pub started: Instant,
    /// `upstream_unavailable_total{upstream,cause}`: calls that got no answer from their service
    /// (`unreachable`, `connection_lost` mid-call, `deadline`), each answered 503.
    pub upstream_unavailable: IntCounterVec,
}
