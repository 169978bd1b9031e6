//! The retry schedule: exponential backoff with jitter, per message.
//!
//! "Equal jitter": a wait is drawn between half and all of `base * 2^(failures-1)` (capped at
//! `max`), so messages that failed together spread out, yet none comes back sooner than half
//! its schedule. Pure, so the schedule is tested as a table.

use std::time::Duration;

/// The wait after `failures` failed attempts (1 or more), with `jitter` in `[0, 1]` choosing
/// where between half and all of the schedule's step it lands.
pub(crate) fn delay(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(63);
    let step = base
        .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A jitter draw for [`delay`].
pub(crate) fn jitter() -> f64 {
    rand::random_range(0.0..=1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(failures: u32, jitter: f64, expected_ms: u64) {
        let got = delay(failures, Duration::from_millis(100), Duration::from_secs(10), jitter);
        assert_eq!(
            got,
            Duration::from_millis(expected_ms),
            "failures {failures}, jitter {jitter}"
        );
    }

    #[test]
    fn schedule() {
        check(1, 1.0, 100);
        check(1, 0.0, 50);
        check(2, 1.0, 200);
        check(3, 1.0, 400);
        check(3, 0.5, 300);
        check(7, 1.0, 6_400);
        check(8, 1.0, 10_000);
        check(8, 0.0, 5_000);
        check(40, 1.0, 10_000);
        check(u32::MAX, 1.0, 10_000);
        check(0, 1.0, 100);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..=1.0).contains(&j));
        }
    }
}
