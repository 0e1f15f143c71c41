//! The Redis path: one request's decision as part of its worker's next batched call of the GCRA
//! script (with its token's revocation keys and the address's refusal counter), and the reading
//! of the answer.

use std::sync::Arc;

use super::batch::{self, Batcher};
use super::gcra::{self, Decision};
use super::{Checks, Limiter, Outcome, Policy, RateLimitConfig};
use crate::redis_link::Miss;
use crate::revocation::RedisAnswer;

/// What Redis made of a decision script.
pub(super) enum Script {
    Answered(Vec<i64>),
    /// Redis ran it after its deadline (Redis's clock, µs) and changed nothing.
    TooLate(i64),
}

impl Limiter {
    /// What the decision script is asked for one request.
    pub(super) fn script_decision(&self, checks: &Checks, revocation: Option<[String; 4]>) -> batch::Decision {
        batch::Decision {
            buckets: checks
                .policies
                .iter()
                .map(|(policy, key)| (key.clone(), policy.quota.emission_us(), policy.quota.capacity_us()))
                .collect(),
            revocation,
            refusals: (
                self.keys.key(&["rl:refusals:", &checks.ip]),
                checks.config.abuse_window.as_secs(),
            ),
        }
    }

    /// One request's decision in the worker's next [`gcra::SCRIPT_DECIDE`] batch, sent at
    /// `sent_us`, with the deadline after which Redis changes nothing: by then this gateway has
    /// stopped waiting and decided without it.
    pub(super) async fn run_script(
        &self,
        batcher: &Batcher,
        decision: &Arc<batch::Decision>,
        timeout: std::time::Duration,
        sent_us: u64,
    ) -> Result<Script, Miss> {
        let deadline_us = self.redis_clock.deadline(sent_us, timeout);
        let out = batcher.decide(decision.clone(), deadline_us, timeout).await?;
        Ok(match out[..] {
            [-1, .., redis_now] => Script::TooLate(redis_now),
            _ => Script::Answered(out),
        })
    }

    /// The script's answer: per policy how far its bucket's TAT runs ahead of now with this
    /// request counted, then the revocation state (when asked), then the address's refusals, then
    /// Redis's clock.
    pub(super) fn outcome_from_redis(out: &[i64], policies: &[(Policy, String)], with_rev: bool) -> Outcome {
        let num = |v: i64| u64::try_from(v).unwrap_or(0);
        let n = policies.len();
        let decisions = policies
            .iter()
            .zip(out)
            .map(|((policy, _), &ahead)| Some(decision_from_ahead(num(ahead), &policy.quota)))
            .collect();
        let revocation = with_rev.then(|| {
            let (flags, not_before) = (out[n], out[n + 1]);
            RedisAnswer {
                revoked: flags & 0b11 != 0,
                not_before: u64::try_from(not_before).ok(),
                complete: flags & 0b100 != 0,
            }
        });
        Outcome {
            decisions,
            revocation,
            via_redis: true,
            refusals: out.len().checked_sub(2).map_or(0, |i| num(out[i])),
        }
    }

    /// Gives back a successful request's emission of `policy` in Redis, where it was spent.
    pub(super) async fn refund_in_redis(
        &self,
        config: &RateLimitConfig,
        policy: &Policy,
        key: &str,
    ) -> Option<Decision> {
        let q = policy.quota;
        let link = self.redis.as_ref()?;
        let mut invocation = self.script_refund.prepare_invoke();
        invocation.key(key).arg(q.emission_us()).arg(q.capacity_us());
        let invocation = &invocation;
        let refunded = link
            .query(config.redis_timeout, |mut conn| async move {
                invocation.invoke_async::<(u64, u64)>(&mut conn).await
            })
            .await;
        let (remaining, reset_us) = match refunded {
            Ok(answer) => answer,
            Err(miss) => {
                tracing::warn!(policy = policy.name, cause = %miss, "could not refund a successful request in Redis");
                return None;
            }
        };
        Some(Decision {
            allowed: true,
            remaining,
            reset_ms: gcra::ms(reset_us),
            retry_after_ms: 0,
        })
    }
}

/// A bucket's decision from how far the script found its TAT ahead of now with the request
/// counted: the same arithmetic as [`gcra::decide`], on a clock that reads 0 now.
pub(super) fn decision_from_ahead(ahead_us: u64, quota: &gcra::Quota) -> Decision {
    let tat = ahead_us.saturating_sub(quota.emission_us());
    gcra::decide(Some(tat), 0, quota).0
}
