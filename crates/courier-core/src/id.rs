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
/// millisecond, and so do their high 64 bits ([`MessageId::sequence`]): the 12 `rand_a` bits
/// count up within a millisecond (from a random start in the lower half), so an engine with a
/// single generator may use the sequence as its primary key. The low 62 bits stay random.
#[derive(Debug, Default)]
pub struct MessageIdGenerator {
    last_high: u64,
}

const VERSION_7: u64 = 7 << 12;
const RAND_A_MAX: u64 = 0xfff;

impl MessageIdGenerator {
    /// A generator with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id, stamped with `now` and greater than every id minted before.
    pub fn next(&mut self, now: Timestamp) -> MessageId {
        let random = Uuid::new_v4().as_u128();
        let ms = u64::try_from(now.as_millis()).unwrap_or(0) & ((1 << 48) - 1);
        let rand_a_start = u64::try_from(random >> 117).unwrap_or(0) & 0x7ff;
        let fresh = (ms << 16) | VERSION_7 | rand_a_start;
        let high = if fresh > self.last_high {
            fresh
        } else {
            next_high(self.last_high)
        };
        self.last_high = high;
        let low = (0b10 << 62) | (random & ((1 << 62) - 1));
        MessageId(Uuid::from_u128((u128::from(high) << 64) | low))
    }

    /// Makes sure later ids sort after `id` (e.g. the largest id already stored).
    pub fn observe(&mut self, id: MessageId) {
        self.last_high = self.last_high.max(id.high());
    }
}

/// The smallest high half after `high`: the next `rand_a` count, or the next millisecond
/// when this one's 4096 counts are used up.
fn next_high(high: u64) -> u64 {
    if high & RAND_A_MAX < RAND_A_MAX {
        high + 1
    } else {
        (((high >> 16) + 1) << 16) | VERSION_7
    }
}

impl MessageId {
    fn high(&self) -> u64 {
        u64::try_from(self.0.as_u128() >> 64).unwrap_or(u64::MAX)
    }

    /// The high 64 bits as a positive integer (48-bit milliseconds, version, counter): unique
    /// and increasing among the ids of one [`MessageIdGenerator`].
    pub fn sequence(&self) -> i64 {
        i64::try_from(self.high()).unwrap_or(i64::MAX)
    }
}

/// Identifies one lease (one delivery) of a message. Unique across all leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub Uuid);

impl LeaseId {
    /// A fresh lease id: a UUIDv7 (time-ordered with random low bits), unique, but not a
    /// secret; a lease is checked by id and token, not guarded by being hard to guess.
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
    fn sequences_strictly_increase_and_roll_into_the_next_millisecond() {
        let mut g = MessageIdGenerator::new();
        let mut prev = g.next(Timestamp(5_000));
        for _ in 0..10_000 {
            let id = g.next(Timestamp(5_000));
            assert!(id.sequence() > prev.sequence());
            assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
            prev = id;
        }
        let full = (5_000u64 << 16) | VERSION_7 | RAND_A_MAX;
        assert_eq!(next_high(full), (5_001u64 << 16) | VERSION_7);
    }

    #[test]
    fn etag_round_trips_its_version() {
        assert_eq!(Etag::from_version(7).version(), Some(7));
        assert_eq!(Etag("junk".into()).version(), None);
    }
}
