//! From a claimed batch and the publisher's answers to what each row becomes: published,
//! retried later (attempt counted), failed at max attempts, or released unattempted.
//!
//! Results are matched to rows by message id right where the publisher's answers come back,
//! never by position in another list: a batch that skipped some rows would otherwise mark the
//! wrong rows published. Pure functions, tested without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use courier_core::{OutboundMessage, PublishError, Timestamp};
use uuid::Uuid;

use crate::error::truncate;
use crate::message::parse_headers;
use crate::relay::backoff;
use crate::relay::options::RelayOptions;
use crate::store::{status, ClaimedRow, Retry, Settlement};

/// Longest error text kept on a row (the queue engines' bound); longer texts are cut.
pub(crate) const ERROR_TEXT_BYTES_MAX: usize = courier_core::limits::ERROR_TEXT_BYTES_MAX;

/// What happened to one row of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Published,
    Failed(String),
    /// Not attempted: an earlier row of its key failed in this batch.
    NotAttempted,
}

/// The batch as handed to the publisher, and the rows decided before publishing.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) messages: Vec<OutboundMessage>,
    pub(crate) decided: HashMap<Uuid, Outcome>,
}

/// Turns claimed rows (in seq order) into messages. A row that cannot be read fails without
/// being sent, and the later rows of its key are not attempted.
pub(crate) fn prepare(rows: &[ClaimedRow]) -> Prepared {
    let mut prepared = Prepared::default();
    let mut blocked: HashSet<&str> = HashSet::new();
    for row in rows {
        if row.key.as_deref().is_some_and(|key| blocked.contains(key)) {
            prepared.decided.insert(row.id, Outcome::NotAttempted);
            continue;
        }
        match outbound(row) {
            Ok(message) => prepared.messages.push(message),
            Err(error) => {
                prepared.decided.insert(row.id, Outcome::Failed(error));
                blocked.extend(row.key.as_deref());
            }
        }
    }
    prepared
}

fn outbound(row: &ClaimedRow) -> Result<OutboundMessage, String> {
    let headers: BTreeMap<String, String> = parse_headers(&row.headers)?;
    Ok(OutboundMessage {
        id: row.id,
        destination: row.destination.clone(),
        key: row.key.clone(),
        payload: row.payload.clone().into(),
        headers,
        content_type: row.content_type.clone(),
        created_at: Timestamp(row.created_at),
    })
}

/// Each row's outcome, in row order. A result count that does not match the batch is a
/// publisher bug: nobody can tell which message succeeded, so every sent row counts a failed
/// attempt (and is published again later; ids make that safe downstream). After a row of a key
/// fails, the key's later rows are not attempted whatever the publisher said, as the
/// `Publisher` contract lets the relay assume.
pub(crate) fn outcomes(
    rows: &[ClaimedRow],
    prepared: &Prepared,
    results: Vec<Result<(), PublishError>>,
) -> Vec<Outcome> {
    let sent = prepared.messages.len();
    let by_id: HashMap<Uuid, Outcome> = if results.len() == sent {
        prepared
            .messages
            .iter()
            .zip(results)
            .map(|(message, result)| (message.id, outcome_of(result)))
            .collect()
    } else {
        let error = format!("publisher returned {} results for {sent} messages", results.len());
        tracing::error!(%error, "publisher broke its contract; counting a failed attempt for the whole batch");
        prepared
            .messages
            .iter()
            .map(|m| (m.id, Outcome::Failed(error.clone())))
            .collect()
    };
    let mut failed_keys: HashSet<&str> = HashSet::new();
    rows.iter()
        .map(|row| {
            let outcome = prepared
                .decided
                .get(&row.id)
                .or_else(|| by_id.get(&row.id))
                .cloned()
                .unwrap_or_else(|| Outcome::Failed("no result for this message".into()));
            let Some(key) = row.key.as_deref() else {
                return outcome;
            };
            if failed_keys.contains(key) {
                return Outcome::NotAttempted;
            }
            if outcome != Outcome::Published {
                failed_keys.insert(key);
            }
            outcome
        })
        .collect()
}

fn outcome_of(result: Result<(), PublishError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Published,
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

/// The settlement of `rows` given their `outcomes` (same order), at `now`. `jitter` draws the
/// backoff jitter. Unattempted rows of a key wait as long as the key's failed row, since they
/// cannot go before it; that keeps them out of the claim's due range meanwhile.
pub(crate) fn plan(
    rows: &[ClaimedRow],
    outcomes: &[Outcome],
    now: Timestamp,
    options: &RelayOptions,
    mut jitter: impl FnMut() -> f64,
) -> Settlement {
    debug_assert_eq!(rows.len(), outcomes.len());
    let mut settlement = Settlement::default();
    let mut key_due: HashMap<&str, i64> = HashMap::new();
    for (row, outcome) in rows.iter().zip(outcomes) {
        match outcome {
            Outcome::Published => settlement.published.push(row.seq),
            Outcome::Failed(error) => {
                let retry = failed_attempt(row, error, now, options, jitter());
                if let Some(key) = row.key.as_deref() {
                    key_due.insert(key, retry.next_attempt_at);
                }
                settlement.retries.push(retry);
            }
            Outcome::NotAttempted => {
                let due = row.key.as_deref().and_then(|k| key_due.get(k)).copied();
                settlement.retries.push(Retry {
                    seq: row.seq,
                    status: status::PENDING,
                    attempted: false,
                    next_attempt_at: due.unwrap_or(now.as_millis()).max(now.as_millis()),
                    error: None,
                });
            }
        }
    }
    settlement
}

fn failed_attempt(row: &ClaimedRow, error: &str, now: Timestamp, options: &RelayOptions, jitter: f64) -> Retry {
    let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
    let error = Some(truncate(error.to_owned(), ERROR_TEXT_BYTES_MAX));
    if attempts >= options.max_attempts {
        return Retry {
            seq: row.seq,
            status: status::FAILED,
            attempted: true,
            next_attempt_at: now.as_millis(),
            error,
        };
    }
    debug_assert!(
        attempts < options.max_attempts,
        "a pending row stays below max attempts"
    );
    let wait = backoff::delay(attempts, options.backoff_base, options.backoff_max, jitter);
    Retry {
        seq: row.seq,
        status: status::PENDING,
        attempted: true,
        next_attempt_at: now.saturating_add(wait).as_millis(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn row(seq: i64, key: Option<&str>, attempts: i32) -> ClaimedRow {
        ClaimedRow {
            seq,
            id: Uuid::from_u128(u128::try_from(seq).unwrap_or(0)),
            destination: "d".into(),
            key: key.map(str::to_owned),
            payload: vec![],
            headers: "{}".into(),
            content_type: None,
            created_at: 0,
            attempts,
        }
    }

    fn unavailable() -> Result<(), PublishError> {
        Err(PublishError::Unavailable("down".into()))
    }

    #[test]
    fn results_follow_ids_when_a_row_was_not_sent() {
        // Row 2's headers are unreadable, so it is not sent: the publisher sees rows 1 and 3.
        let mut bad = row(2, None, 0);
        bad.headers = "[]".into();
        let rows = vec![row(1, None, 0), bad, row(3, None, 0)];
        let prepared = prepare(&rows);
        assert_eq!(prepared.messages.len(), 2);
        let got = outcomes(&rows, &prepared, vec![unavailable(), Ok(())]);
        assert!(matches!(got[0], Outcome::Failed(_)));
        assert!(matches!(&got[1], Outcome::Failed(e) if e.contains("headers")));
        assert_eq!(got[2], Outcome::Published, "row 3's Ok must not land on row 2");
    }

    #[test]
    fn a_failure_holds_back_its_key_only() {
        let rows = vec![
            row(1, Some("a"), 0),
            row(2, Some("b"), 0),
            row(3, Some("a"), 0),
            row(4, None, 0),
        ];
        let prepared = prepare(&rows);
        // The publisher wrongly published a's second row after a's first failed.
        let got = outcomes(&rows, &prepared, vec![unavailable(), Ok(()), Ok(()), Ok(())]);
        assert!(matches!(got[0], Outcome::Failed(_)));
        assert_eq!(got[1], Outcome::Published);
        assert_eq!(got[2], Outcome::NotAttempted);
        assert_eq!(got[3], Outcome::Published);
    }

    #[test]
    fn a_wrong_result_count_fails_every_sent_row() {
        let rows = vec![row(1, None, 0), row(2, None, 0)];
        let prepared = prepare(&rows);
        let got = outcomes(&rows, &prepared, vec![Ok(())]);
        assert!(got
            .iter()
            .all(|o| matches!(o, Outcome::Failed(e) if e.contains("1 results for 2"))));
    }

    #[test]
    fn plan_counts_attempts_backs_off_and_fails_at_the_limit() {
        let options = RelayOptions::default()
            .max_attempts(3)
            .backoff_base(Duration::from_millis(100))
            .backoff_max(Duration::from_secs(10));
        let rows = vec![
            row(1, Some("k"), 0),
            row(2, Some("k"), 0),
            row(3, None, 2),
            row(4, None, 0),
        ];
        let got = vec![
            Outcome::Failed("e1".into()),
            Outcome::NotAttempted,
            Outcome::Failed("e3".into()),
            Outcome::Published,
        ];
        let now = Timestamp(1_000);
        let settlement = plan(&rows, &got, now, &options, || 1.0);
        assert_eq!(settlement.published, vec![4]);
        let r = &settlement.retries;
        assert_eq!(
            (r[0].seq, r[0].status, r[0].attempted, r[0].next_attempt_at),
            (1, "pending", true, 1_100)
        );
        assert_eq!(r[0].error.as_deref(), Some("e1"));
        // The unattempted row of key k waits as long as k's failed row.
        assert_eq!(
            (r[1].seq, r[1].status, r[1].attempted, r[1].next_attempt_at),
            (2, "pending", false, 1_100)
        );
        assert_eq!(r[1].error, None);
        // Third failure of row 3 reaches max attempts.
        assert_eq!((r[2].seq, r[2].status, r[2].attempted), (3, "failed", true));
    }

    #[test]
    fn long_errors_are_cut() {
        let options = RelayOptions::default();
        let rows = vec![row(1, None, 0)];
        let settlement = plan(
            &rows,
            &[Outcome::Failed("x".repeat(10_000))],
            Timestamp(0),
            &options,
            || 0.5,
        );
        assert_eq!(
            settlement.retries[0].error.as_ref().map(String::len),
            Some(ERROR_TEXT_BYTES_MAX)
        );
    }
}
