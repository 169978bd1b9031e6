//! Identifiers: message ids (time-ordered UUIDv7), lease ids, fencing tokens and etags.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Timestamp;

/// A message's id: a UUIDv7, so ids sort by enqueue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// The id as 16 big-endian bytes; byte order equals time order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Mints strictly increasing UUIDv7 message ids from a clock.
///
/// Ids minted by one generator sort in the order they were minted, even within one
/// millisecond: the engines rely on that to use the id as the enqueue sequence.
#[derive(Debug, Default)]
pub struct MessageIdGenerator {
    last: u128,
}

impl MessageIdGenerator {
    /// A generator with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id, stamped with `now` and greater than every id minted before.
    pub fn next(&mut self, now: Timestamp) -> MessageId {
        let ms = u64::try_from(now.as_millis()).unwrap_or(0);
        let fresh = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
        ))
        .as_u128();
        let candidate = if fresh > self.last {
            fresh
        } else {
            bump_keeping_version(self.last)
        };
        self.last = candidate;
        MessageId(Uuid::from_u128(candidate))
    }

    /// Makes sure later ids sort after `id` (e.g. the largest id already stored).
    pub fn observe(&mut self, id: MessageId) {
        self.last = self.last.max(id.0.as_u128());
    }
}

/// Adds one to the random bits of a UUIDv7, skipping the version and variant fields.
fn bump_keeping_version(last: u128) -> u128 {
    // Layout: 48 bits time | 4 version | 12 rand_a | 2 variant | 62 rand_b.
    const RAND_B_MASK: u128 = (1 << 62) - 1;
    const RAND_A_SHIFT: u32 = 64;
    const RAND_A_MASK: u128 = 0xfff << RAND_A_SHIFT;
    if last & RAND_B_MASK != RAND_B_MASK {
        return last + 1;
    }
    let cleared = last & !RAND_B_MASK;
    if cleared & RAND_A_MASK != RAND_A_MASK {
        return cleared + (1 << RAND_A_SHIFT);
    }
    // Both random fields are exhausted within this millisecond: move to the next one.
    (cleared & !RAND_A_MASK) + (1 << 80)
}

/// Identifies one lease (one delivery) of a message. Unique across all leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub Uuid);

impl LeaseId {
    /// A fresh random lease id.
    pub fn random() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for LeaseId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A number that grows with every lease of one message.
///
/// A downstream system that remembers the highest token it has seen for a message can
/// refuse writes from a consumer whose lease was superseded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

/// Version tag of a state document, for compare-and-swap writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Etag(pub String);

impl Etag {
    /// The etag of document version `version`.
    pub fn from_version(version: u64) -> Self {
        Self(format!("v{version}"))
    }

    /// The version this etag names, if it is one of ours.
    pub fn version(&self) -> Option<u64> {
        self.0.strip_prefix('v')?.parse().ok()
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_within_one_millisecond() {
        let mut g = MessageIdGenerator::new();
        let mut prev = g.next(Timestamp(1_700_000_000_000));
        for _ in 0..10_000 {
            let id = g.next(Timestamp(1_700_000_000_000));
            assert!(id > prev);
            assert_eq!(id.0.get_version_num(), 7);
            prev = id;
        }
    }

    #[test]
    fn ids_stay_ordered_when_the_clock_goes_back() {
        let mut g = MessageIdGenerator::new();
        let a = g.next(Timestamp(2_000));
        let b = g.next(Timestamp(1_000));
        assert!(b > a);
    }

    #[test]
    fn bump_carries_into_rand_a_then_time() {
        let base = Uuid::from_u128(0).as_u128() | (7 << 76) | (0b10 << 62);
        let full_b = base | ((1 << 62) - 1);
        let next = bump_keeping_version(full_b);
        assert!(next > full_b);
        assert_eq!(Uuid::from_u128(next).get_version_num(), 7);
    }

    #[test]
    fn etag_round_trips_its_version() {
        assert_eq!(Etag::from_version(7).version(), Some(7));
        assert_eq!(Etag("junk".into()).version(), None);
    }
}
