//! Per-key order inside one batch: which messages may be pipelined together (waves), and
//! which must not be sent, or must not count as published, because an earlier message of
//! their key failed.

use std::collections::HashMap;

use courier_core::{OutboundMessage, PublishError};

/// Splits a batch into waves of indices, each in batch order. A wave is pipelined as a whole
/// and its outcomes are known before the next wave starts.
///
/// A keyed message joins the wave of its key's previous message when both go to the same
/// destination: one connection to one destination keeps their order, and a failure there
/// (no stream, stream down) almost always fails the later one too. When the destination
/// changes, the message waits one wave, so it is not stored before an earlier message of its
/// key that failed elsewhere. Unkeyed messages are unordered and go in the first wave.
pub(crate) fn waves(batch: &[OutboundMessage]) -> Vec<Vec<usize>> {
    let mut last: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        let wave = match m.key.as_deref() {
            None => 0,
            Some(key) => {
                let wave = match last.get(key) {
                    Some(&(w, dest)) if dest == m.destination => w,
                    Some(&(w, _)) => w + 1,
                    None => 0,
                };
                last.insert(key, (wave, m.destination.as_str()));
                wave
            }
        };
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(i);
    }
    waves
}

/// Remembers, per key, the first message of the batch that failed.
///
/// Outcomes may be learnt out of batch order (a send fails at once, an ack of an earlier
/// message comes later), so the gate compares batch indices rather than asking "has this key
/// failed yet".
#[derive(Debug, Default)]
pub(crate) struct KeyGate<'a> {
    first_failure: HashMap<&'a str, usize>,
}

impl<'a> KeyGate<'a> {
    /// `Err` (not attempted) when a message of `m`'s key before `index` failed: do not send it.
    pub(crate) fn check(&self, index: usize, m: &OutboundMessage) -> Result<(), PublishError> {
        match self.failed_before(index, m) {
            Some(key) => Err(PublishError::Unavailable(format!(
                "not attempted: an earlier message of key {key:?} failed"
            ))),
            None => Ok(()),
        }
    }

    /// Records the outcome of the message at `index` and returns what to report for it: its
    /// own outcome, except that a message sent in the same pipeline as an earlier failed
    /// message of its key is reported as an error even if the destination took it, since it
    /// now stands ahead of that message.
    pub(crate) fn settle(
        &mut self,
        index: usize,
        m: &'a OutboundMessage,
        outcome: Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        if let Some(key) = self.failed_before(index, m) {
            return Err(PublishError::Unavailable(format!(
                "an earlier message of key {key:?} failed; this one was pipelined with it and may have arrived"
            )));
        }
        if let (Some(key), Err(_)) = (m.key.as_deref(), &outcome) {
            let first = self.first_failure.entry(key).or_insert(index);
            *first = (*first).min(index);
        }
        outcome
    }

    fn failed_before<'m>(&self, index: usize, m: &'m OutboundMessage) -> Option<&'m str> {
        let key = m.key.as_deref()?;
        self.first_failure.get(key).is_some_and(|&f| f < index).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use courier_core::Timestamp;
    use uuid::Uuid;

    use super::*;

    fn msg(key: Option<&str>, destination: &str) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::new_v4(),
            destination: destination.to_owned(),
            key: key.map(str::to_owned),
            payload: Bytes::new(),
            headers: BTreeMap::new(),
            content_type: None,
            created_at: Timestamp(0),
        }
    }

    fn check(batch: &[(Option<&str>, &str)], expected: &[&[usize]]) {
        let batch: Vec<_> = batch.iter().map(|(k, d)| msg(*k, d)).collect();
        assert_eq!(waves(&batch), expected, "{batch:?}");
    }

    #[test]
    fn waves_split_a_key_only_where_its_destination_changes() {
        check(&[], &[]);
        check(&[(None, "a"), (None, "b"), (None, "a")], &[&[0, 1, 2]]);
        check(&[(Some("k"), "a"), (Some("k"), "a"), (Some("j"), "b")], &[&[0, 1, 2]]);
        check(&[(Some("k"), "a"), (Some("k"), "b"), (None, "c")], &[&[0, 2], &[1]]);
        check(
            &[(Some("k"), "a"), (Some("k"), "b"), (Some("k"), "b"), (Some("k"), "a")],
            &[&[0], &[1, 2], &[3]],
        );
        check(
            &[(Some("k"), "a"), (Some("j"), "b"), (Some("k"), "b"), (Some("j"), "b")],
            &[&[0, 1, 3], &[2]],
        );
    }

    #[test]
    fn after_a_failure_the_key_is_closed_and_other_keys_are_not() {
        let batch = [
            msg(Some("k"), "a"),
            msg(Some("k"), "a"),
            msg(Some("j"), "a"),
            msg(None, "a"),
        ];
        let mut gate = KeyGate::default();
        let failed = Err(PublishError::Rejected("no".into()));
        assert_eq!(
            gate.settle(1, &batch[1], failed.clone()),
            failed,
            "a send failure, learnt first"
        );
        assert!(gate.check(0, &batch[0]).is_ok(), "an earlier message is not held back");
        assert_eq!(gate.settle(0, &batch[0], Ok(())), Ok(()), "nor reported as failed");
        assert_eq!(gate.settle(0, &batch[0], failed.clone()), failed);
        assert!(gate.check(1, &batch[1]).is_err());
        assert!(matches!(
            gate.settle(1, &batch[1], Ok(())),
            Err(PublishError::Unavailable(_))
        ));
        assert_eq!(gate.check(2, &batch[2]), Ok(()));
        assert_eq!(gate.settle(2, &batch[2], Ok(())), Ok(()));
        assert_eq!(gate.settle(3, &batch[3], failed.clone()), failed);
        assert_eq!(
            gate.check(3, &batch[3]),
            Ok(()),
            "unkeyed messages never close anything"
        );
    }
}
