//! GCRA, the generic cell rate algorithm (ITU-T I.371; the "virtual scheduling" form), in
//! integer microseconds.
//!
//! One number per key: the theoretical arrival time (TAT), when the key's bucket would be empty
//! again had it drained at exactly the allowed rate. A request at `now` is allowed when
//! `now >= TAT - tolerance`, and then moves TAT to `max(TAT, now) + interval`. With
//! `interval = period / count` and `tolerance = interval × (burst − 1)`, that admits `burst`
//! requests at once and `count` per `period` after that — the same arithmetic as governor's and
//! redis-cell's. The Redis script (`gcra.lua`) is a line-by-line copy of [`decide`], so local
//! and shared limiting agree to the microsecond and a fallback changes no answer's shape.

/// One limit's rate, in the units GCRA works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// How far ahead of the sustained rate a client may run: `interval × (burst − 1)`.
    pub tolerance_us: u64,
    /// `burst`: requests admitted at once by an idle key.
    pub burst: u32,
}

impl Quota {
    /// `count` requests per `period_us`, `burst` at once. `None` when the rate is finer than
    /// one microsecond per request or a number is zero.
    pub fn new(count: u32, period_us: u64, burst: u32) -> Option<Quota> {
        if count == 0 || burst == 0 {
            return None;
        }
        let interval_us = period_us / u64::from(count);
        if interval_us == 0 {
            return None;
        }
        Some(Quota {
            interval_us,
            tolerance_us: interval_us.checked_mul(u64::from(burst) - 1)?,
            burst,
        })
    }
}

/// The new TAT when a request at `now` is allowed, or how long until one would be.
/// `tat` is the key's stored TAT (`None`: a key never seen, or expired).
pub fn decide(quota: &Quota, now: u64, tat: Option<u64>) -> Result<u64, u64> {
    let tat = tat.unwrap_or(now).max(now);
    let allowed_from = tat.saturating_sub(quota.tolerance_us);
    if now < allowed_from {
        Err(allowed_from - now)
    } else {
        Ok(tat + quota.interval_us)
    }
}

/// Requests the key could still make at `now` with TAT `tat` (the `r` of the `RateLimit` header).
pub fn remaining(quota: &Quota, now: u64, tat: u64) -> u64 {
    let credit = (now + quota.tolerance_us + quota.interval_us).saturating_sub(tat);
    (credit / quota.interval_us).min(u64::from(quota.burst))
}

/// Microseconds until the key's whole burst is available again.
pub fn until_full(now: u64, tat: u64) -> u64 {
    tat.saturating_sub(now)
}

/// Whole seconds, rounded up: what `Retry-After` and the `t` parameter carry (delay-seconds).
pub fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn an_idle_key_gets_its_burst_then_the_rate() {
        let q = Quota::new(10, SECOND, 5).unwrap();
        assert_eq!(q.interval_us, 100_000);
        let now = 1_000 * SECOND;
        let mut tat = None;
        for i in 0..5 {
            let next = decide(&q, now, tat).expect("within the burst");
            assert_eq!(remaining(&q, now, next), 4 - i);
            tat = Some(next);
        }
        let wait = decide(&q, now, tat).expect_err("burst used up");
        assert_eq!(wait, 100_000, "one interval until the next request");
        // One interval later exactly one more.
        let later = now + wait;
        let next = decide(&q, later, tat).expect("a cell came back");
        assert_eq!(remaining(&q, later, next), 0);
        assert!(decide(&q, later, Some(next)).is_err());
        assert_eq!(until_full(later, next), 500_000);
    }

    #[test]
    fn over_a_window_the_count_is_burst_plus_rate() {
        let q = Quota::new(50, SECOND, 50).unwrap();
        let start = 7 * SECOND;
        let (mut tat, mut allowed) = (None, 0u64);
        // A client asking every millisecond for four seconds.
        for ms in 0..4_000u64 {
            if let Ok(next) = decide(&q, start + ms * 1000, tat) {
                tat = Some(next);
                allowed += 1;
            }
        }
        // 50 at once, then one per 20 ms for 4 s (the last request at 3.999 s).
        assert_eq!(allowed, 50 + 199);
    }

    #[test]
    fn an_idle_key_is_full_again() {
        let q = Quota::new(1, 60 * SECOND, 3).unwrap();
        let now = 100 * SECOND;
        let tat = decide(&q, now, None).unwrap();
        assert_eq!(remaining(&q, now, tat), 2);
        assert_eq!(remaining(&q, now + 3600 * SECOND, tat), 3);
        assert_eq!(ceil_secs(until_full(now, tat)), 60);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(0), 0);
    }

    #[test]
    fn impossible_rates_are_refused() {
        assert!(Quota::new(0, SECOND, 1).is_none());
        assert!(Quota::new(1, SECOND, 0).is_none());
        assert!(Quota::new(2_000_000, SECOND, 1).is_none());
    }
}
