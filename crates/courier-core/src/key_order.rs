//! Per-key order inside one batch: which messages may be pipelined together (waves), and
//! which must not be sent, or must not count as published, because an earlier message of
//! their key failed. Pure bookkeeping that every publisher shares; the publisher does the I/O:
//!
//! ```text
//! for wave in outcomes.waves() { send each i with outcomes.admit(i); then record(i, ack) }
//! ```

use std::collections::HashMap;

use crate::publish::{OutboundMessage, PublishError};

/// One message's result.
pub type Outcome = Result<(), PublishError>;

/// The outcomes of one batch as they are learnt, and the per-key rule over them.
#[derive(Debug)]
pub struct Outcomes<'a> {
    batch: &'a [OutboundMessage],
    results: Vec<Option<Outcome>>,
    /// Per key, the batch index of its first failed message.
    first_failure: HashMap<&'a str, usize>,
}

impl<'a> Outcomes<'a> {
    /// No outcome known yet for any message of `batch`.
    pub fn new(batch: &'a [OutboundMessage]) -> Self {
        Self {
            batch,
            results: vec![None; batch.len()],
            first_failure: HashMap::new(),
        }
    }

    /// Splits the batch into waves of indices, each in batch order. A wave is pipelined as a
    /// whole and its outcomes are recorded before the next wave starts.
    ///
    /// A keyed message joins the wave of its key's previous message when both go to the same
    /// destination: one connection to one destination keeps their order, and a failure there
    /// (no stream, no queue, broker down) almost always fails the later one too. When the
    /// destination changes, the message waits one wave, so it is not stored before an earlier
    /// message of its key that failed elsewhere. Unkeyed messages go in the first wave.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut last: HashMap<&str, (usize, &str)> = HashMap::new();
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (i, m) in self.batch.iter().enumerate() {
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

    /// Whether message `i` may be sent. When an earlier message of its key failed it may not,
    /// and it is recorded as not attempted.
    pub fn admit(&mut self, i: usize) -> bool {
        match self.failed_before(i) {
            Some(key) => {
                let e = PublishError::Unavailable(format!("not attempted: an earlier message of key {key:?} failed"));
                self.results[i] = Some(Err(e));
                false
            }
            None => true,
        }
    }

    /// Records the outcome of message `i`, in any order (a send fails at once, the ack of an
    /// earlier message comes later). A message sent in the same pipeline as an earlier failed
    /// message of its key is recorded as an error even if the destination took it, since it
    /// now stands ahead of that message; a failure keeps its own reason.
    pub fn record(&mut self, i: usize, outcome: Outcome) {
        let outcome = match (self.failed_before(i), outcome) {
            (Some(key), Ok(())) => Err(PublishError::Unavailable(format!(
                "an earlier message of key {key:?} failed; this one was pipelined with it and may have arrived"
            ))),
            (_, outcome) => outcome,
        };
        if let (Some(key), Err(_)) = (self.batch[i].key.as_deref(), &outcome) {
            let first = self.first_failure.entry(key).or_insert(i);
            *first = (*first).min(i);
        }
        self.results[i] = Some(outcome);
    }

    /// One outcome per message, in batch order.
    pub fn finish(self) -> Vec<Outcome> {
        let missing = || Err(PublishError::Unavailable("internal: no outcome was recorded".into()));
        self.results.into_iter().map(|r| r.unwrap_or_else(missing)).collect()
    }

    fn failed_before(&self, i: usize) -> Option<&'a str> {
        let key = self.batch[i].key.as_deref()?;
        self.first_failure.get(key).is_some_and(|&f| f < i).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::time::Timestamp;
    use bytes::Bytes;
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
        assert_eq!(Outcomes::new(&batch).waves(), expected, "{batch:?}");
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
            msg(Some("k"), "a"),
        ];
        let mut outcomes = Outcomes::new(&batch);
        let failed = Err(PublishError::Rejected("no".into()));
        assert!(outcomes.admit(0) && outcomes.admit(1) && outcomes.admit(2) && outcomes.admit(3));
        outcomes.record(1, failed.clone()); // a send failure, learnt before the earlier ack
        outcomes.record(0, Ok(()));
        outcomes.record(2, Ok(()));
        outcomes.record(3, failed.clone());
        assert!(!outcomes.admit(4), "a later message of the failed key is not sent");
        let results = outcomes.finish();
        assert_eq!(results[..4], [Ok(()), failed.clone(), Ok(()), failed]);
        assert!(matches!(&results[4], Err(PublishError::Unavailable(e)) if e.contains("not attempted")));
    }

    #[test]
    fn a_message_pipelined_after_its_keys_failure_is_not_reported_published() {
        let batch = [msg(Some("k"), "a"), msg(Some("k"), "a"), msg(Some("k"), "a")];
        let mut outcomes = Outcomes::new(&batch);
        assert!(outcomes.admit(0) && outcomes.admit(1) && outcomes.admit(2));
        outcomes.record(0, Err(PublishError::Unavailable("timed out".into())));
        outcomes.record(1, Ok(()));
        outcomes.record(2, Err(PublishError::Rejected("too big".into())));
        let results = outcomes.finish();
        assert!(matches!(&results[1], Err(PublishError::Unavailable(e)) if e.contains("may have arrived")));
        assert_eq!(
            results[2],
            Err(PublishError::Rejected("too big".into())),
            "a failure keeps its own reason"
        );
    }
}
