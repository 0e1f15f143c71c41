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
    /// The longest a full burst may take to earn back (10 years). It keeps every time the script
    /// handles (microseconds since 1970, plus this) exact in Lua's doubles, below 2^53.
    pub const MAX_CAPACITY_US: u64 = 10 * 365 * 86_400 * 1_000_000;

    /// Microseconds between two requests at the sustained rate. Microseconds rather than
    /// milliseconds, so that every rate the configuration accepts (up to a million per second) is
    /// the rate enforced: in whole milliseconds, anything above 1000 per second became 1000.
    pub fn emission_us(&self) -> u64 {
        (self.window.as_micros() as u64 / u64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of now the TAT may run: `burst` emissions.
    pub fn capacity_us(&self) -> u64 {
        self.emission_us().saturating_mul(u64::from(self.burst.max(1)))
    }
}

/// Microseconds to milliseconds, rounded up: a client told to wait must not come back early.
pub fn ms(us: u64) -> u64 {
    us.div_ceil(1000)
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

/// Decides for a request at `now_us`; returns the decision and the TAT to store when allowed.
pub fn decide(tat: Option<u64>, now_us: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let (t, cap) = (quota.emission_us(), quota.capacity_us());
    let tat = tat.unwrap_or(now_us).max(now_us);
    let new_tat = tat + t;
    if new_tat - now_us > cap {
        let d = Decision {
            allowed: false,
            remaining: 0,
            reset_ms: ms(tat - now_us),
            retry_after_ms: ms(new_tat - now_us - cap),
        };
        return (d, None);
    }
    let d = Decision {
        allowed: true,
        remaining: (cap - (new_tat - now_us)) / t,
        reset_ms: ms(new_tat - now_us),
        retry_after_ms: 0,
    };
    (d, Some(new_tat))
}

/// Gives back one request's emission (the "skip successful requests" mode): the TAT moves back by
/// one emission, never before now. Returns the new TAT (`None`: the bucket is empty, drop it) and
/// the requests that could be made right now.
pub fn refund(tat: Option<u64>, now_us: u64, quota: &Quota) -> (Option<u64>, u64) {
    let (t, cap) = (quota.emission_us(), quota.capacity_us());
    let tat = tat.unwrap_or(now_us).saturating_sub(t);
    if tat <= now_us {
        return (None, cap / t);
    }
    (Some(tat), (cap.saturating_sub(tat - now_us)) / t)
}

/// The same as [`refund`] in Redis. KEYS = the bucket; ARGV = emission and capacity µs.
/// Returns the requests that could be made right now, and µs until the full burst is back.
pub const SCRIPT_REFUND: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) - t
if tat <= now then
  redis.call('DEL', KEYS[1])
  return {math.floor(cap / t), 0}
end
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000))
return {math.floor((cap - (tat - now)) / t), tat - now}
"#;

/// The decisions of a batch of requests (those one gateway worker gathered while its previous
/// batch was out), each with every policy of its request and optionally its token's revocation
/// keys, in one round trip and one script: Redis pays for a script call and its reads once per
/// batch rather than once per request, which is much of what a decision costs it. The
/// batch runs atomically, and each decision sees the buckets the decisions before it wrote.
///
/// ARGV = the number of decisions, then per decision: n, emission and capacity µs per bucket,
/// the revocation flag, the refusal counter's window in seconds, the deadline (Redis time, µs; 0
/// for none). KEYS per decision: its n buckets, then (if its revocation flag is 1) the jti,
/// session, not-before and marker keys, then the address's refusal counter.
///
/// Each decision reads Redis's clock anew, as it would alone: decided at one instant, the
/// requests of a batch would all count as simultaneous, and a policy of a million a second with
/// a burst of 5 would refuse the sixth of 16 requests that came microseconds apart. (Dating each
/// back by its wait in the gateway would not do: two workers' batches would then reach Redis out
/// of the order of their requests' times, and the later ones would count as early.)
///
/// Returns one array per decision: 4 numbers per bucket (allowed 0/1, remaining, reset µs,
/// retry-after µs), then (with the flag) jti present, session present, not-before (-1 when none),
/// marker present (Redis holds every revocation), then the address's refusals in the current
/// window (0 when allowed), then Redis's clock (µs). Buckets are only spent when every policy
/// allows the request; a refusal is counted once, however many policies refused.
/// Past its deadline the gateway has stopped waiting for a decision and decided without Redis (a
/// frozen or overloaded Redis runs the scripts queued meanwhile when it comes back): the decision
/// changes nothing and its array is -1 and Redis's clock.
pub const SCRIPT_DECIDE: &str = r#"
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]
-- Every read of the batch in one MGET: each redis.call costs Redis more than the arithmetic does.
local stored = redis.call('MGET', unpack(KEYS))
-- Buckets written by an earlier decision of this batch (one client's requests in one batch).
local written = {}
local results = {}
local k, a = 0, 2
for d = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  local with_rev = ARGV[a + 2 * n + 1] == '1'
  local deadline = tonumber(ARGV[a + 2 * n + 3])
  if d > 1 then
    clock = redis.call('TIME')
    now = clock[1] * 1000000 + clock[2]
  end
  local reads = n
  if with_rev then reads = n + 4 end
  if deadline > 0 and now > deadline then
    results[d] = {-1, now}
  else
    -- Sized at once (two policies and the revocation state): growing a table costs Redis more
    -- than the arithmetic does.
    local out = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
    local new_tats = {0, 0}
    local all = true
    local m = 0
    for i = 1, n do
      local t = tonumber(ARGV[a + 2 * i - 1])
      local cap = tonumber(ARGV[a + 2 * i])
      local tat = tonumber(written[KEYS[k + i]] or stored[k + i] or now)
      if tat < now then tat = now end
      local ahead = tat + t - now
      if ahead > cap then
        all = false
        out[m + 1] = 0; out[m + 2] = 0; out[m + 3] = tat - now; out[m + 4] = ahead - cap
      else
        new_tats[i] = tat + t
        out[m + 1] = 1; out[m + 2] = math.floor((cap - ahead) / t); out[m + 3] = ahead; out[m + 4] = 0
      end
      m = m + 4
    end
    if all then
      for i = 1, n do
        -- Integers written as such: a Lua number passed as it is would be formatted as a float.
        redis.call('PSETEX', KEYS[k + i], string.format('%d', math.ceil((new_tats[i] - now) / 1000)), string.format('%d', new_tats[i]))
        written[KEYS[k + i]] = new_tats[i]
      end
    end
    if with_rev then
      out[m + 1] = stored[k + n + 1] and 1 or 0
      out[m + 2] = stored[k + n + 2] and 1 or 0
      out[m + 3] = tonumber(stored[k + n + 3] or -1) or -1
      out[m + 4] = stored[k + n + 4] and 1 or 0
      m = m + 4
    end
    if all then
      out[m + 1] = 0
    else
      local counter = KEYS[k + reads + 1]
      local refusals = redis.call('INCR', counter)
      if refusals == 1 then redis.call('EXPIRE', counter, ARGV[a + 2 * n + 2]) end
      out[m + 1] = refusals
    end
    out[m + 2] = now
    for i = m + 3, #out do out[i] = nil end
    results[d] = out
  end
  k = k + reads + 1
  a = a + 2 * n + 4
end
return results
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: Quota = Quota {
        limit: 5,
        window: Duration::from_secs(60),
        burst: 3,
    };

    /// Seconds since 1970 in microseconds, as Redis's clock gives them.
    const NOW: u64 = 1_800_000_000_000_000;

    #[test]
    fn burst_then_the_sustained_rate() {
        let mut tat = None;
        let now = NOW;
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
        // Exactly at the boundary the next request passes, one microsecond before it does not.
        assert!(!decide(tat, now + 11_999_999, &AUTH).0.allowed);
        assert!(decide(tat, now + 12_000_000, &AUTH).0.allowed);
        // Told to wait, a client is never told a time too short: 1 µs left is 1 ms.
        assert_eq!(decide(tat, now + 11_999_999, &AUTH).0.retry_after_ms, 1);
        // After a full idle period the whole burst is back.
        assert_eq!(decide(tat, now + 36_000_000, &AUTH).0.remaining, 2);
    }

    #[test]
    fn a_refund_gives_back_exactly_one_request() {
        let now = NOW;
        let (_, tat) = decide(None, now, &AUTH);
        let (_, tat) = decide(tat, now, &AUTH);
        assert_eq!(tat, Some(now + 24_000_000));
        assert_eq!(refund(tat, now, &AUTH), (Some(now + 12_000_000), 2));
        // Back to an empty bucket: nothing to store, the whole burst available.
        assert_eq!(refund(Some(now + 12_000_000), now, &AUTH), (None, 3));
        // Never below now: a refund cannot bank credit beyond the burst.
        assert_eq!(refund(None, now, &AUTH), (None, 3));
        assert_eq!(refund(Some(now + 5_000_000), now, &AUTH), (None, 3));
    }

    #[test]
    fn api_quota_allows_its_burst_of_twenty() {
        let api = Quota {
            limit: 100,
            window: Duration::from_secs(60),
            burst: 20,
        };
        let (mut tat, now) = (None, NOW);
        for i in 0..20 {
            let (d, next) = decide(tat, now, &api);
            assert!(d.allowed, "request {i}");
            tat = next;
        }
        assert!(!decide(tat, now, &api).0.allowed);
        assert_eq!(api.emission_us(), 600_000);
    }

    #[test]
    fn rates_above_a_thousand_per_second_are_enforced_as_written() {
        let fast = Quota {
            limit: 250_000,
            window: Duration::from_secs(1),
            burst: 1,
        };
        assert_eq!(fast.emission_us(), 4);
        let (d, tat) = decide(None, NOW, &fast);
        assert!(d.allowed);
        assert!(!decide(tat, NOW + 3, &fast).0.allowed, "3 µs later is too soon");
        assert!(decide(tat, NOW + 4, &fast).0.allowed, "one emission later passes");
        // A whole second admits exactly the configured number.
        let (mut tat, mut allowed) = (None, 0);
        for us in 0..1_000_000 {
            let (d, next) = decide(tat, NOW + us, &fast);
            if d.allowed {
                allowed += 1;
                tat = next;
            }
        }
        assert_eq!(allowed, 250_000);
    }

    #[test]
    fn the_longest_burst_the_configuration_accepts_stays_exact_in_lua() {
        // Lua numbers are doubles: times up to NOW + the longest capacity must be exact integers.
        let latest = NOW + Quota::MAX_CAPACITY_US;
        assert!(latest < 1 << 53, "{latest}");
        assert_eq!((latest as f64) as u64, latest);
    }
}
