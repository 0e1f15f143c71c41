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
/// batch rather than once per request, which is much of what a decision costs it. The batch runs
/// atomically, and each decision sees the buckets the decisions before it spent.
///
/// KEYS = the batch's distinct keys, each once (two requests of one client share their buckets).
/// ARGV[1] = the batch's numbers as little-endian 64-bit integers (Lua's `struct`): the number of
/// decisions, then per decision its deadline (Redis time, µs; 0 for none), n (its buckets), the
/// revocation flag (0/1), its refusal counter (a KEYS index) and that counter's window in seconds,
/// then per bucket its KEYS index, emission µs and capacity µs, then (with the flag) the KEYS
/// indexes of the jti, session, not-before and marker keys.
///
/// Its shape is what Redis's Lua makes cheap (measured with callgrind on Redis 7.0): every
/// `tonumber` of an argument runs `strtod` (about as costly as the decision's arithmetic), every
/// table it returns is probed for `err`/`ok`/`map` fields, every `redis.call` goes through
/// Redis's whole command path. So the numbers come in one binary argument, each bucket is read
/// once and written once per batch, however many of its decisions spent it, and the answer is as
/// few numbers as the gateway needs, packed the same way: one bulk string, which the gateway's
/// client reads in one piece where it parses an array number by number (that parsing was a third
/// of what the gateway spent on Redis).
///
/// Each decision reads Redis's clock anew, as it would alone: decided at one instant, the
/// requests of a batch would all count as simultaneous, and a policy of a million a second with
/// a burst of 5 would refuse the sixth of 16 requests that came microseconds apart. (Dating each
/// back by its wait in the gateway would not do: two workers' batches would then reach Redis out
/// of the order of their requests' times, and the later ones would count as early.)
///
/// Returns little-endian 64-bit integers, per decision in order: per bucket how far its TAT runs
/// ahead of now once this request is counted (µs; the request is allowed by that bucket when it
/// is at most the capacity, and the gateway derives remaining, reset and retry-after from it as
/// [`decide`] does), then (with the flag) the revocation flags (1: jti revoked, 2: session
/// revoked, 4: the marker that Redis holds every revocation) and the not-before time (-1 when
/// none), then the address's refusals in the current window (0 when allowed), then Redis's clock
/// (µs). Buckets are only spent when every policy allows the request; a refusal is counted once,
/// however many policies refused.
/// Past its deadline the gateway has stopped waiting for a decision and decided without Redis (a
/// frozen or overloaded Redis runs the scripts queued meanwhile when it comes back): the decision
/// changes nothing, its first number is -1 and its last Redis's clock (the others 0).
pub const SCRIPT_DECIDE: &str = r#"
local v = {struct.unpack('<' .. string.rep('i8', #ARGV[1] / 8), ARGV[1])}
local stored = redis.call('MGET', unpack(KEYS))
-- Per KEYS index: the bucket's TAT as this batch leaves it (read once), and whether it was spent.
local tat, spent, out = {}, {}, {}
local o, p, now = 0, 2, 0
-- The marker vouches only when it names this server: a Redis restored from a snapshot (or a
-- promoted replica) holds the marker of the one it was copied from, and may lack revocations
-- made since. INFO is read once per call, and only for a marker that is there.
local run_id
local function current(marker)
  if not marker then return false end
  if run_id == nil then
    run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or false
  end
  return marker == run_id
end
for d = 1, v[1] do
  local clock = redis.call('TIME')
  now = clock[1] * 1000000 + clock[2]
  local deadline, n, with_rev, refusals_key, window = v[p], v[p + 1], v[p + 2], v[p + 3], v[p + 4]
  p = p + 5
  if deadline > 0 and now > deadline then
    local size = n + 2 * with_rev + 2
    out[o + 1] = -1
    for i = o + 2, o + size - 1 do out[i] = 0 end
    out[o + size] = now
    o = o + size
    p = p + 3 * n + 4 * with_rev
  else
    local all = true
    local first = p
    for i = 1, n do
      local k, t, cap = v[p], v[p + 1], v[p + 2]
      p = p + 3
      local cur = tat[k]
      if cur == nil then
        cur = tonumber(stored[k]) or now
        tat[k] = cur
      end
      if cur < now then cur = now end
      local ahead = cur + t - now
      if ahead > cap then all = false end
      out[o + 1] = ahead
      o = o + 1
    end
    if all then
      for i = 1, n do
        local k = v[first]
        local cur = tat[k]
        if cur < now then cur = now end
        tat[k] = cur + v[first + 1]
        spent[k] = true
        first = first + 3
      end
    end
    if with_rev == 1 then
      out[o + 1] = (stored[v[p]] and 1 or 0) + (stored[v[p + 1]] and 2 or 0) + (current(stored[v[p + 3]]) and 4 or 0)
      out[o + 2] = tonumber(stored[v[p + 2]] or -1) or -1
      o = o + 2
      p = p + 4
    end
    if all then
      out[o + 1] = 0
    else
      local refusals = redis.call('INCR', KEYS[refusals_key])
      if refusals == 1 then redis.call('EXPIRE', KEYS[refusals_key], window) end
      out[o + 1] = refusals
    end
    out[o + 2] = now
    o = o + 2
  end
end
-- A bucket whose TAT has passed is full, as if it were not stored: nothing to write.
for k in pairs(spent) do
  if tat[k] > now then
    -- Integers written as such: a Lua number passed as it is would be formatted with %.17g,
    -- which costs Redis more.
    redis.call('PSETEX', KEYS[k], string.format('%d', math.ceil((tat[k] - now) / 1000)), string.format('%d', tat[k]))
  end
end
return struct.pack('<' .. string.rep('i8', #out), unpack(out))
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
