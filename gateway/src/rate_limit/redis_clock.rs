//! Where Redis's clock stands against ours, so that a decision script can be told the instant
//! after which the gateway no longer waits for it.
//!
//! A frozen or overloaded Redis keeps the scripts sent to it; the gateway gives up on each after
//! `RATE_LIMIT_REDIS_TIMEOUT_MS` and decides without Redis, and when Redis comes back it runs them
//! all. Without a deadline they would spend every bucket a second time (once locally, once in
//! Redis), and users would be refused for requests counted twice.
//!
//! The offset is learnt from the scripts' own answers: each returns Redis's clock, which reads at
//! least our clock at sending plus the true offset (the trip there only adds), so the smallest
//! difference seen is the offset plus the shortest trip. A clock that moves (an NTP step on either
//! host, a failover to a server with another clock) is caught the first time a script refuses a
//! deadline while its caller still waits: the caller learns the offset again from that answer and
//! asks once more, with a deadline by the offset just learnt.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Nothing learnt yet: scripts get no deadline.
const UNKNOWN: i64 = i64::MAX;

pub struct RedisClock {
    /// Redis's clock minus ours, in µs: the smallest difference seen.
    offset_us: AtomicI64,
}

impl Default for RedisClock {
    fn default() -> Self {
        Self {
            offset_us: AtomicI64::new(UNKNOWN),
        }
    }
}

impl RedisClock {
    /// The deadline, in Redis's time (µs), of a script sent at `sent_us` (our time) by a caller
    /// who waits `timeout`; 0 (none) until an answer has been seen.
    pub fn deadline(&self, sent_us: u64, timeout: Duration) -> u64 {
        let offset = self.offset_us.load(Ordering::Relaxed);
        if offset == UNKNOWN {
            return 0;
        }
        let timeout_us = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX);
        i64::try_from(sent_us)
            .unwrap_or(i64::MAX)
            .saturating_add(offset)
            .saturating_add(timeout_us)
            .max(1) as u64
    }

    /// A script sent at `sent_us` (our time) ran at `redis_us` (Redis's time).
    pub fn observe(&self, sent_us: u64, redis_us: i64) {
        let difference = Self::difference(sent_us, redis_us);
        // Read first: most answers teach nothing new, and a write per request would bounce the
        // cache line between the workers' cores.
        if difference < self.offset_us.load(Ordering::Relaxed) {
            self.offset_us.fetch_min(difference, Ordering::Relaxed);
        }
    }

    /// A script refused a deadline while its caller still waited: the clocks moved apart since
    /// the offset was learnt. Learns it again from this answer alone.
    pub fn relearn(&self, sent_us: u64, redis_us: i64) {
        let offset = Self::difference(sent_us, redis_us);
        let before = self.offset_us.swap(offset, Ordering::Relaxed);
        tracing::debug!(
            moved_ms = offset.saturating_sub(before) / 1000,
            "Redis's clock moved ahead of the gateway's; the deadline of rate-limit scripts follows it"
        );
    }

    fn difference(sent_us: u64, redis_us: i64) -> i64 {
        redis_us
            .saturating_sub(i64::try_from(sent_us).unwrap_or(i64::MAX))
            .min(UNKNOWN - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000;

    #[test]
    fn no_deadline_until_an_answer_is_seen() {
        let clock = RedisClock::default();
        assert_eq!(clock.deadline(T, Duration::from_millis(50)), 0);
    }

    #[test]
    fn the_deadline_is_the_timeout_after_sending_on_the_fastest_trip_seen() {
        let clock = RedisClock::default();
        // Redis's clock 2 s ahead; trips of 300 µs, then 100 µs, then a slow one of 40 ms.
        let ahead = 2_000_000;
        clock.observe(T, (T + ahead + 300) as i64);
        clock.observe(T + 10, (T + 10 + ahead + 100) as i64);
        clock.observe(T + 20, (T + 20 + ahead + 40_000) as i64);
        let deadline = clock.deadline(T + 1_000, Duration::from_millis(50));
        assert_eq!(deadline, T + 1_000 + ahead + 100 + 50_000);
        // A Redis clock behind ours works alike.
        let behind = RedisClock::default();
        behind.observe(T, (T - 5_000_000 + 200) as i64);
        assert_eq!(
            behind.deadline(T, Duration::from_millis(10)),
            T - 5_000_000 + 200 + 10_000
        );
    }

    #[test]
    fn a_clock_that_moved_ahead_is_learnt_again_and_one_that_fell_back_at_once() {
        let clock = RedisClock::default();
        clock.observe(T, (T + 100) as i64);
        // Redis's clock stepped 3 s ahead: the smallest difference alone would never follow.
        clock.observe(T + 10, (T + 10 + 3_000_000 + 100) as i64);
        assert_eq!(clock.deadline(T + 20, Duration::ZERO), T + 20 + 100);
        clock.relearn(T + 30, (T + 30 + 3_000_000 + 150) as i64);
        assert_eq!(clock.deadline(T + 40, Duration::ZERO), T + 40 + 3_000_150);
        // Stepped back again: the next answer's smaller difference wins.
        clock.observe(T + 50, (T + 50 + 80) as i64);
        assert_eq!(clock.deadline(T + 60, Duration::ZERO), T + 60 + 80);
    }
}
