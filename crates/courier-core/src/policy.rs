//! Per-queue policy: the defaults that govern leases, retries, expiry and dedup.
//!
//! A queue gets [`QueuePolicy::default`] when it is created on first use; messages may
//! override the lease time, max attempts and TTL individually.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;
use crate::limits;

/// What happens to a message whose time to live runs out before it is acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryAction {
    /// Move it to the dead-letter queue, so nothing disappears silently.
    #[default]
    DeadLetter,
    /// Delete it.
    Drop,
}

/// The defaults of one queue. All durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuePolicy {
    /// Lease (visibility timeout) given to a receiver. Default 30 000.
    pub lease_ms: u64,
    /// Failed attempts after which a message is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Delay before the first retry after a failure. Default 1 000.
    pub backoff_initial_ms: u64,
    /// Cap on the retry delay. Default 300 000.
    pub backoff_max_ms: u64,
    /// Factor by which the retry delay grows with each failure. Default 2.
    pub backoff_multiplier: u32,
    /// Time to live of a message; `None` keeps messages until acked. Default `None`.
    pub ttl_ms: Option<u64>,
    /// What to do with messages whose TTL ran out. Default dead-letter.
    pub on_expire: ExpiryAction,
    /// How long an idempotency key is remembered. Default 300 000 (5 minutes).
    pub dedup_window_ms: u64,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_attempts: 5,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            backoff_multiplier: 2,
            ttl_ms: None,
            on_expire: ExpiryAction::DeadLetter,
            dedup_window_ms: 300_000,
        }
    }
}

impl QueuePolicy {
    /// Checks every field against [`limits`].
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_duration("lease_ms", self.lease_ms, limits::LEASE_MIN, limits::LEASE_MAX)?;
        check_attempts("max_attempts", self.max_attempts)?;
        check_duration(
            "backoff_initial_ms",
            self.backoff_initial_ms,
            Duration::ZERO,
            limits::DELAY_MAX,
        )?;
        check_duration("backoff_max_ms", self.backoff_max_ms, Duration::ZERO, limits::DELAY_MAX)?;
        if self.backoff_initial_ms > self.backoff_max_ms {
            return Err(InvalidInput::new("backoff_initial_ms must not exceed backoff_max_ms"));
        }
        if !(1..=100).contains(&self.backoff_multiplier) {
            return Err(InvalidInput::new("backoff_multiplier must be between 1 and 100"));
        }
        if let Some(ttl) = self.ttl_ms {
            check_duration("ttl_ms", ttl, Duration::from_millis(1), limits::TTL_MAX)?;
        }
        check_duration(
            "dedup_window_ms",
            self.dedup_window_ms,
            Duration::ZERO,
            limits::DEDUP_WINDOW_MAX,
        )
    }

    /// The lease a receiver gets unless it or the message asks for another.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The retry delay after the `failures`-th failure (1-based): exponential, capped.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(63);
        let factor = u64::from(self.backoff_multiplier).saturating_pow(exponent);
        let ms = self.backoff_initial_ms.saturating_mul(factor).min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// The queue's default TTL.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl_ms.map(Duration::from_millis)
    }

    /// How long idempotency keys are remembered.
    pub fn dedup_window(&self) -> Duration {
        Duration::from_millis(self.dedup_window_ms)
    }
}

/// Refuses a duration outside `min..=max`, naming the field.
pub fn check_duration(field: &str, ms: u64, min: Duration, max: Duration) -> Result<(), InvalidInput> {
    let d = Duration::from_millis(ms);
    if d < min || d > max {
        return Err(InvalidInput::new(format!(
            "{field} must be between {} and {} milliseconds, got {ms}",
            min.as_millis(),
            max.as_millis()
        )));
    }
    Ok(())
}

/// Refuses a max-attempts value of zero or above the limit.
pub fn check_attempts(field: &str, attempts: u32) -> Result<(), InvalidInput> {
    if attempts == 0 || attempts > limits::MAX_ATTEMPTS_MAX {
        return Err(InvalidInput::new(format!(
            "{field} must be between 1 and {}, got {attempts}",
            limits::MAX_ATTEMPTS_MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_exponentially_and_caps() {
        let p = QueuePolicy {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            backoff_multiplier: 2,
            ..QueuePolicy::default()
        };
        let got: Vec<u64> = (1..=6).map(|n| p.retry_delay(n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(p.retry_delay(u32::MAX).as_millis(), 1_000);
    }

    #[test]
    fn default_policy_is_valid_and_bad_ones_are_named() {
        QueuePolicy::default().validate().unwrap();
        let bad = QueuePolicy {
            lease_ms: 0,
            ..QueuePolicy::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("lease_ms"));
        let bad = QueuePolicy {
            max_attempts: 0,
            ..QueuePolicy::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("max_attempts"));
    }
}
