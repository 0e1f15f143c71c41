//! The in-process fallback of `RATE_LIMIT_FAILURE_MODE=local`: the same policies decided in this
//! process's memory, refusals counted per address, while Redis does not answer.

use std::collections::HashMap;

use super::gcra::{self, Decision};
use super::{FailureMode, Limiter, Policy, RateLimitConfig, now_us};

/// Limits the in-process fallback's memory: past this many buckets, expired ones are dropped.
const LOCAL_PRUNE_AT: usize = 100_000;

fn drop_expired<V>(map: &mut HashMap<String, V>, live: impl Fn(&V) -> bool) {
    if map.len() >= LOCAL_PRUNE_AT {
        map.retain(|_, v| live(v));
        if map.len() >= LOCAL_PRUNE_AT {
            map.clear();
        }
    }
}

impl Limiter {
    /// No Redis answer (or none configured): the failure mode decides.
    pub(super) fn fallback(&self, config: &RateLimitConfig, policy: &Policy, key: &str) -> Option<Decision> {
        let q = policy.quota;
        let mode = config.failure_mode;
        if self.redis.is_some() {
            self.fallbacks.with_label_values(&[mode.name()]).inc();
        }
        match mode {
            FailureMode::Open => None,
            FailureMode::Closed => Some(Decision {
                allowed: false,
                remaining: 0,
                reset_ms: 1000,
                retry_after_ms: 1000,
            }),
            FailureMode::Local => {
                let now = now_us();
                let mut buckets = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                drop_expired(&mut buckets, |tat| *tat > now);
                let (d, tat) = gcra::decide(buckets.get(key).copied(), now, &q);
                if let Some(tat) = tat {
                    buckets.insert(key.to_owned(), tat);
                }
                Some(d)
            }
        }
    }

    pub(super) fn count_refusal_locally(&self, config: &RateLimitConfig, ip: &str) -> u64 {
        let now = now_us();
        let window = config.abuse_window.as_micros() as u64;
        let mut counts = self
            .local_refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop_expired(&mut counts, |(_, end)| *end > now);
        let entry = counts.entry(ip.to_owned()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        entry.0
    }

    /// Gives back a successful request's emission of `policy` in process (`local` mode only).
    pub(super) fn refund_locally(&self, config: &RateLimitConfig, policy: &Policy, key: &str) -> Option<Decision> {
        if config.failure_mode != FailureMode::Local {
            return None;
        }
        let now = now_us();
        let mut buckets = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tat, remaining) = gcra::refund(buckets.get(key).copied(), now, &policy.quota);
        let reset_ms = tat.map_or(0, |tat| gcra::ms(tat - now));
        match tat {
            Some(tat) => buckets.insert(key.to_owned(), tat),
            None => buckets.remove(key),
        };
        Some(Decision {
            allowed: true,
            remaining,
            reset_ms,
            retry_after_ms: 0,
        })
    }
}
