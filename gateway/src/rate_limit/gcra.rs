//! The generic cell rate algorithm (GCRA): one stored number per key, the "theoretical arrival
//! time" (TAT) of the next request. The same arithmetic runs in Redis (the Lua script below, on
//! Redis's clock so every gateway agrees) and
//! in process (the fallback), so both enforce the same limits.

use std::time::Duration;

/// A limit: `limit` requests per `window`, of which up to `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
    pub burst: u32,
}

impl Quota {
    /// Milliseconds between two requests at the sustained rate.
    pub fn emission_ms(&self) -> u64 {
        (self.window.as_millis() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of now the TAT may run: `burst` emissions.
    pub fn capacity_ms(&self) -> u64 {
        self.emission_ms() * u64::from(self.burst.max(1))
    }
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could be made right now (after this one).
    pub remaining: u64,
    /// Milliseconds until the full burst is available again.
    pub reset_ms: u64,
    /// Milliseconds until a refused request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

/// Decides for a request at `now_ms`; returns the decision and the TAT to store when allowed.
pub fn decide(tat: Option<u64>, now_ms: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let (t, cap) = (quota.emission_ms(), quota.capacity_ms());
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + t;
    if new_tat - now_ms > cap {
        let d = Decision {
            allowed: false,
            remaining: 0,
            reset_ms: tat - now_ms,
            retry_after_ms: new_tat - now_ms - cap,
        };
        return (d, None);
    }
    let d = Decision {
        allowed: true,
        remaining: (cap - (new_tat - now_ms)) / t,
        reset_ms: new_tat - now_ms,
        retry_after_ms: 0,
    };
    (d, Some(new_tat))
}

/// Gives back one request's emission (the "skip successful requests" mode): the TAT moves back by
/// one emission, never before now. Returns the new TAT (`None`: the bucket is empty, drop it) and
/// the requests that could be made right now.
pub fn refund(tat: Option<u64>, now_ms: u64, quota: &Quota) -> (Option<u64>, u64) {
    let (t, cap) = (quota.emission_ms(), quota.capacity_ms());
    let tat = tat.unwrap_or(now_ms).saturating_sub(t);
    if tat <= now_ms {
        return (None, cap / t);
    }
    (Some(tat), (cap.saturating_sub(tat - now_ms)) / t)
}

/// The same as [`refund`] in Redis. KEYS = the bucket; ARGV = emission and capacity ms.
/// Returns the requests that could be made right now, and ms until the full burst is back.
pub const SCRIPT_REFUND: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) - t
if tat <= now then
  redis.call('DEL', KEYS[1])
  return {math.floor(cap / t), 0}
end
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return {math.floor((cap - (tat - now)) / t), tat - now}
"#;

/// Every policy of a request, and optionally its token's revocation keys, in one round trip.
/// KEYS = n buckets, then (if the revocation flag is 1) the jti, session, not-before and marker
/// keys, then the address's refusal counter.
/// ARGV = n, then emission and capacity ms per bucket, then the revocation flag, then the
/// refusal counter's window in seconds.
/// Returns 4 numbers per bucket (allowed 0/1, remaining, reset ms, retry-after ms), then (with
/// the flag) jti present, session present, not-before (-1 when none), marker present (Redis holds
/// every revocation), then the address's refusals
/// in the current window (0 when allowed). Buckets are only spent when every policy allows the
/// request; a refusal is counted once, however many policies refused.
pub const SCRIPT_ALL: &str = r#"
local n = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}
local next_tat = {}
local all = true
for i = 1, n do
  local t = tonumber(ARGV[2 * i])
  local cap = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + t
  if new_tat - now > cap then
    all = false
    table.insert(out, 0); table.insert(out, 0); table.insert(out, tat - now); table.insert(out, new_tat - now - cap)
  else
    next_tat[i] = new_tat
    table.insert(out, 1); table.insert(out, math.floor((cap - (new_tat - now)) / t)); table.insert(out, new_tat - now); table.insert(out, 0)
  end
end
if all then
  for i = 1, n do
    redis.call('SET', KEYS[i], next_tat[i], 'PX', next_tat[i] - now)
  end
end
local counter = n + 1
if tonumber(ARGV[2 * n + 2]) == 1 then
  table.insert(out, redis.call('EXISTS', KEYS[n + 1]))
  table.insert(out, redis.call('EXISTS', KEYS[n + 2]))
  table.insert(out, tonumber(redis.call('GET', KEYS[n + 3]) or -1) or -1)
  table.insert(out, redis.call('EXISTS', KEYS[n + 4]))
  counter = n + 5
end
if all then
  table.insert(out, 0)
else
  local refusals = redis.call('INCR', KEYS[counter])
  if refusals == 1 then redis.call('EXPIRE', KEYS[counter], ARGV[2 * n + 3]) end
  table.insert(out, refusals)
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: Quota = Quota {
        limit: 5,
        window: Duration::from_secs(60),
        burst: 3,
    };

    #[test]
    fn burst_then_the_sustained_rate() {
        let mut tat = None;
        let now = 1_000_000;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (d, next) = decide(tat, now, &AUTH);
            assert!(d.allowed);
            remaining.push(d.remaining);
            tat = next;
        }
        assert_eq!(remaining, vec![2, 1, 0], "counts down");
        let (d, next) = decide(tat, now, &AUTH);
        assert!(!d.allowed && next.is_none());
        assert_eq!(d.retry_after_ms, 12_000, "one emission (60 s / 5) later");
        // Exactly at the boundary the next request passes, one millisecond before it does not.
        assert!(!decide(tat, now + 11_999, &AUTH).0.allowed);
        assert!(decide(tat, now + 12_000, &AUTH).0.allowed);
        // After a full idle period the whole burst is back.
        assert_eq!(decide(tat, now + 36_000, &AUTH).0.remaining, 2);
    }

    #[test]
    fn a_refund_gives_back_exactly_one_request() {
        let now = 1_000_000;
        let (_, tat) = decide(None, now, &AUTH);
        let (_, tat) = decide(tat, now, &AUTH);
        assert_eq!(tat, Some(now + 24_000));
        assert_eq!(refund(tat, now, &AUTH), (Some(now + 12_000), 2));
        // Back to an empty bucket: nothing to store, the whole burst available.
        assert_eq!(refund(Some(now + 12_000), now, &AUTH), (None, 3));
        // Never below now: a refund cannot bank credit beyond the burst.
        assert_eq!(refund(None, now, &AUTH), (None, 3));
        assert_eq!(refund(Some(now + 5_000), now, &AUTH), (None, 3));
    }

    #[test]
    fn api_quota_allows_its_burst_of_twenty() {
        let api = Quota {
            limit: 100,
            window: Duration::from_secs(60),
            burst: 20,
        };
        let (mut tat, now) = (None, 5_000);
        for i in 0..20 {
            let (d, next) = decide(tat, now, &api);
            assert!(d.allowed, "request {i}");
            tat = next;
        }
        assert!(!decide(tat, now, &api).0.allowed);
        assert_eq!(api.emission_ms(), 600);
    }
}
