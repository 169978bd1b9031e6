//! [`RelayOptions`]: every setting of a relay, with its default and its bounds, and
//! [`Retention`], what happens to published rows.
//!
//! Options are validated when the relay is built, so a relay that runs has sane settings.

use std::time::Duration;

use uuid::Uuid;

use crate::error::InvalidOption;

/// Most rows one claim takes.
pub const BATCH_SIZE_MAX: usize = 1_000;
/// Shortest claim; shorter claims lapse while a healthy batch is still publishing.
pub const CLAIM_DURATION_MIN: Duration = Duration::from_millis(100);
/// Longest claim; a dead relay's messages wait this long at most.
pub const CLAIM_DURATION_MAX: Duration = Duration::from_secs(3600);
/// Shortest poll interval.
pub const POLL_INTERVAL_MIN: Duration = Duration::from_millis(1);
/// Longest poll interval, backoff or cleanup interval.
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Largest max-attempts setting (the same bound as the queue engines').
pub const MAX_ATTEMPTS_MAX: u32 = courier_core::limits::MAX_ATTEMPTS_MAX;
/// Longest relay id, in bytes.
pub const RELAY_ID_BYTES_MAX: usize = 128;

/// What happens to a row once its message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Deleted by the statement that records the publish: the table holds only work to do, and
    /// a publish costs one statement.
    #[default]
    DeleteOnPublish,
    /// Kept as `published` (with `published_at`) for this long, then deleted by the relay's
    /// cleanup loop, which runs every [`RelayOptions::cleanup_interval`].
    KeepFor(Duration),
    /// Kept until the application deletes them; the relay runs no cleanup. Also the choice for
    /// every relay but one when several share a table and one cleanup is enough.
    KeepForever,
}

impl Retention {
    /// A retention of zero disables the cleanup, as in the seed libraries' `Retention: 0`:
    /// `KeepFor(0)` is `KeepForever`.
    pub(crate) fn normalized(self) -> Self {
        match self {
            Self::KeepFor(age) if age.is_zero() => Self::KeepForever,
            other => other,
        }
    }
}

/// A relay's settings. Build with [`RelayOptions::default`] and the setters; each setter
/// documents its default. Checked by [`RelayOptions::validate`] when the relay is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    pub(crate) relay_id: String,
    pub(crate) batch_size: usize,
    pub(crate) claim_duration: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) retention: Retention,
    pub(crate) cleanup_interval: Duration,
    pub(crate) shutdown_grace: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            relay_id: format!("relay-{}", Uuid::new_v4().simple()),
            batch_size: 500,
            claim_duration: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retention: Retention::DeleteOnPublish,
            cleanup_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl RelayOptions {
    /// The relay's name in logs and, followed by `#` and a nonce drawn when the relay is built,
    /// in `claimed_by` (see [`Relay::claimer`](crate::Relay::claimer)), so relays sharing an id
    /// still never settle each other's claims. Default = `relay-` and a random UUID.
    pub fn relay_id(mut self, id: impl Into<String>) -> Self {
        self.relay_id = id.into();
        self
    }

    /// Most rows claimed and published at once, 1 to [`BATCH_SIZE_MAX`]. Default = 500.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How long a claim holds rows before another relay may take them over, renewed every third
    /// of it while the batch is publishing. Default = 30 s.
    pub fn claim_duration(mut self, d: Duration) -> Self {
        self.claim_duration = d;
        self
    }

    /// How often the relay looks without being woken: the safety net for lost wake-ups and
    /// writes from processes that do not notify. Default = 1 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// Attempts before a message is marked `failed`, 1 to [`MAX_ATTEMPTS_MAX`]. Default = 10.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Wait after the first failed attempt; it doubles with every further failure up to
    /// [`RelayOptions::backoff_max`], each wait drawn between half and all of it. Default = 1 s.
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = d;
        self
    }

    /// Longest wait between attempts. Default = 5 min.
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.backoff_max = d;
        self
    }

    /// What happens to published rows. Default = [`Retention::DeleteOnPublish`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How often the cleanup loop deletes published rows older than [`Retention::KeepFor`].
    /// Default = 1 min.
    pub fn cleanup_interval(mut self, d: Duration) -> Self {
        self.cleanup_interval = d;
        self
    }

    /// On shutdown, how long the batch being published may take to finish before the relay
    /// stops waiting and releases its claims. Default = 10 s.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.shutdown_grace = d;
        self
    }

    /// The relay id.
    pub fn id(&self) -> &str {
        &self.relay_id
    }

    /// How often claims are renewed while a batch publishes: a third of the claim, so two
    /// renewals can fail before the claim lapses.
    pub(crate) fn renew_interval(&self) -> Duration {
        self.claim_duration / 3
    }

    /// Checks every setting against its bounds.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let id = &self.relay_id;
        if id.is_empty() || id.len() > RELAY_ID_BYTES_MAX || id.contains('\0') {
            return Err(invalid(format!(
                "relay_id must be 1 to {RELAY_ID_BYTES_MAX} bytes without NUL, got {id:?}"
            )));
        }
        if self.batch_size == 0 || self.batch_size > BATCH_SIZE_MAX {
            return Err(invalid(format!(
                "batch_size must be 1 to {BATCH_SIZE_MAX}, got {}",
                self.batch_size
            )));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_MAX {
            return Err(invalid(format!(
                "max_attempts must be 1 to {MAX_ATTEMPTS_MAX}, got {}",
                self.max_attempts
            )));
        }
        check(
            "claim_duration",
            self.claim_duration,
            CLAIM_DURATION_MIN,
            CLAIM_DURATION_MAX,
        )?;
        check("poll_interval", self.poll_interval, POLL_INTERVAL_MIN, INTERVAL_MAX)?;
        check("backoff_base", self.backoff_base, Duration::ZERO, INTERVAL_MAX)?;
        check("backoff_max", self.backoff_max, self.backoff_base, INTERVAL_MAX)?;
        check(
            "cleanup_interval",
            self.cleanup_interval,
            POLL_INTERVAL_MIN,
            INTERVAL_MAX,
        )?;
        check("shutdown_grace", self.shutdown_grace, Duration::ZERO, INTERVAL_MAX)?;
        if let Retention::KeepFor(age) = self.retention {
            check(
                "retention",
                age,
                Duration::ZERO,
                Duration::from_secs(10 * 365 * 24 * 3600),
            )?;
        }
        Ok(())
    }
}

fn invalid(message: String) -> InvalidOption {
    InvalidOption(message)
}

fn check(name: &str, value: Duration, min: Duration, max: Duration) -> Result<(), InvalidOption> {
    if value < min || value > max {
        return Err(invalid(format!("{name} must be {min:?} to {max:?}, got {value:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_options(options: RelayOptions, error_fragment: Option<&str>) {
        match (options.validate(), error_fragment) {
            (Ok(()), None) => {}
            (Err(e), Some(fragment)) => assert!(e.0.contains(fragment), "{e} should mention {fragment}"),
            (got, want) => panic!("got {got:?}, wanted error {want:?}"),
        }
    }

    #[test]
    fn bounds() {
        let d = RelayOptions::default;
        check_options(d(), None);
        check_options(d().batch_size(0), Some("batch_size"));
        check_options(d().batch_size(1001), Some("batch_size"));
        check_options(d().max_attempts(0), Some("max_attempts"));
        check_options(d().relay_id(""), Some("relay_id"));
        check_options(d().claim_duration(Duration::from_millis(10)), Some("claim_duration"));
        check_options(d().poll_interval(Duration::ZERO), Some("poll_interval"));
        check_options(
            d().backoff_base(Duration::from_secs(10))
                .backoff_max(Duration::from_secs(1)),
            Some("backoff_max"),
        );
        check_options(d().retention(Retention::KeepFor(Duration::from_secs(60))), None);
    }

    #[test]
    fn zero_retention_disables_cleanup() {
        assert_eq!(Retention::KeepFor(Duration::ZERO).normalized(), Retention::KeepForever);
        assert_eq!(
            Retention::KeepFor(Duration::from_secs(1)).normalized(),
            Retention::KeepFor(Duration::from_secs(1))
        );
    }

    #[test]
    fn default_ids_differ() {
        assert_ne!(RelayOptions::default().relay_id, RelayOptions::default().relay_id);
    }
}
