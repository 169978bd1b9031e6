//! Enqueue-to-receive latency: producers stamp the payload, consumers read the stamp.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Digits of the send-time stamp at the start of every payload; text, so the same payload
/// travels as UTF-8 through the HTTP API.
const STAMP_DIGITS: usize = 20;

/// A payload of `size` bytes whose first 20 bytes carry the send time as decimal digits.
pub(crate) fn stamped_payload(size: usize) -> Vec<u8> {
    let nanos = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut payload = format!("{nanos:0STAMP_DIGITS$}").into_bytes();
    payload.resize(size.max(STAMP_DIGITS), b'x');
    payload
}

/// Time since the stamp in `payload` was written, if it carries one.
pub(crate) fn age_of(payload: &[u8]) -> Option<Duration> {
    let stamp: u64 = std::str::from_utf8(payload.get(..STAMP_DIGITS)?).ok()?.parse().ok()?;
    let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    Some(Duration::from_nanos(now.saturating_sub(stamp)))
}

/// A latency histogram in microseconds, 1 µs to 60 s.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// p50 and p99 of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}
