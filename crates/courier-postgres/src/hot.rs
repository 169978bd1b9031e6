//! The hot path: enqueue, receive and ack run through [`Combiner`]s, so concurrent calls on one queue
//! of this node share one statement or transaction (one set of round trips, one commit) while
//! each keeps the answer, and the all-or-nothing effect, it would have had alone. In the common
//! case each hot operation is one autocommitted statement: an enqueue without keys or groups,
//! a receive when no sweep is due, an ack of ungrouped messages.
//!
//! Sharing changes no outcome a caller can observe: a combined enqueue is the calls' messages
//! in arrival order (a later call's idempotency key finds an earlier call's message, as it
//! would have in sequence), a combined ack settles receipts exactly as one `ack_many` over
//! all of them, and combined receives get what receives in arrival order would have got, the
//! oldest messages going to the earliest caller (rows leased for a caller that left are given
//! back in their place unless a receive gets to the queue first; their deliveries count and
//! fencing token show it).

use courier_core::{Enqueued, LeaseError, NewMessage, QueueRef, Receipt, ReceiveBatch, ReceiveOptions, StorageError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::analyze::{ChurnVacuum, GrowthAnalyzer};
use crate::combine::{split_by, Combiner};
use crate::receive::Dealt;
use crate::tx::{retry, transaction, Core};

/// Statements of one kind and key a node runs at once (the key is the queue, and for receives
/// also the receive's lease: receivers asking for different leases do not share a statement).
/// One: calls that arrive while it runs all go in the next, so the busier the queue the bigger
/// the batches. Measured with `courier bench` (16 HTTP clients): one in flight gave ~35 % more
/// single-message throughput than two, and lower latency, since each statement and commit
/// costs CPU the two cores lack.
const BATCHES_IN_FLIGHT: usize = 1;

type Answer<T> = Result<T, StorageError>;
/// One result per receipt.
type Settled = Vec<Result<(), LeaseError>>;
/// Receives share a statement when they name the same queue and lease.
type ReceiveKey = (QueueRef, Option<Duration>);

/// The combiners of one engine.
pub(crate) struct HotPath {
    core: Arc<Core>,
    growth: Arc<GrowthAnalyzer>,
    churn: Arc<ChurnVacuum>,
    enqueues: Arc<Combiner<QueueRef, Vec<NewMessage>, Answer<Vec<Enqueued>>>>,
    acks: Arc<Combiner<QueueRef, Vec<Receipt>, Answer<Settled>>>,
    /// Keyed by queue and the receive's lease, so one statement serves all; requests are the
    /// receivers' `max_messages`.
    receives: Arc<Combiner<ReceiveKey, usize, Answer<Dealt>>>,
}

/// What a caller gets when the task running its batch died: the outcome is unknown, as after
/// a connection lost mid-commit.
fn abandoned() -> StorageError {
    StorageError::Unavailable("the transaction running this operation was abandoned; its outcome is unknown".into())
}

/// The same failure for every call of a batch, or each call's share of the outputs.
fn distribute<T>(result: Answer<Vec<T>>, lengths: &[usize]) -> Vec<Answer<Vec<T>>> {
    match result {
        Ok(all) => split_by(all, lengths).into_iter().map(Ok).collect(),
        Err(e) => lengths.iter().map(|_| Err(e.clone())).collect(),
    }
}

impl HotPath {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let releasing = core.clone();
        let receives = Combiner::new(BATCHES_IN_FLIGHT, |max: &usize| *max).on_unclaimed(
            move |(queue, _): &ReceiveKey, share: Answer<Dealt>| {
                let Ok(share) = share else { return };
                if share.batch.deliveries.is_empty() {
                    return;
                }
                // Called where a caller's future is dropped, which may be outside a runtime.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    tracing::warn!(%queue, leases = share.batch.deliveries.len(), "no runtime to give back leases taken for a receiver that left; they run out instead");
                    return;
                };
                let (core, queue) = (releasing.clone(), queue.clone());
                runtime.spawn(async move { crate::receive::release(&core, &queue, share).await });
            },
        );
        Self {
            core,
            growth: Arc::default(),
            churn: Arc::default(),
            enqueues: Arc::new(Combiner::new(BATCHES_IN_FLIGHT, Vec::len)),
            acks: Arc::new(Combiner::new(BATCHES_IN_FLIGHT, Vec::len)),
            receives: Arc::new(receives),
        }
    }

    /// Adds `messages` (validated) to `queue`, all or none.
    pub(crate) async fn enqueue(&self, queue: &QueueRef, messages: Vec<NewMessage>) -> Answer<Vec<Enqueued>> {
        let (core, growth) = (self.core.clone(), self.growth.clone());
        let exec = move |queue: QueueRef, calls: Vec<Vec<NewMessage>>| {
            let (core, growth) = (core.clone(), growth.clone());
            async move {
                let lengths: Vec<usize> = calls.iter().map(Vec::len).collect();
                let messages: Vec<NewMessage> = calls.into_iter().flatten().collect();
                let result = enqueue_batch(&core, &queue, &messages).await;
                if let Ok(enqueued) = &result {
                    growth.inserted(enqueued.iter().filter(|e| !e.duplicate).count(), &core);
                }
                distribute(result, &lengths)
            }
        };
        self.enqueues
            .submit(queue.clone(), messages, exec)
            .await
            .unwrap_or_else(|| Err(abandoned()))
    }

    /// Leases up to `opts.max_messages` (validated) ready messages of `queue`.
    ///
    /// Receivers of one queue and lease that overlap share one statement, dealt out in pick
    /// order. Messages leased for a caller that left while it ran are given back at once (see
    /// [`crate::receive::release`]) rather than held for no one until their leases run out.
    pub(crate) async fn receive(&self, queue: &QueueRef, opts: &ReceiveOptions) -> Answer<ReceiveBatch> {
        let (core, churn) = (self.core.clone(), self.churn.clone());
        let exec = move |(queue, lease): ReceiveKey, wants: Vec<usize>| {
            let (core, churn) = (core.clone(), churn.clone());
            async move {
                let shares = crate::receive::receive_for(&core, &queue, &wants, lease).await;
                let leased = shares.iter().flatten().map(|s| s.batch.deliveries.len()).sum();
                churn.churned(leased, &core);
                shares
            }
        };
        self.receives
            .submit((queue.clone(), opts.lease), opts.max_messages, exec)
            .await
            .unwrap_or_else(|| Err(abandoned()))
            .map(|share| share.batch)
    }

    /// Settles each receipt as `ack_many` does, one result per receipt.
    pub(crate) async fn ack_many(&self, queue: &QueueRef, receipts: Vec<Receipt>) -> Answer<Settled> {
        let (core, churn) = (self.core.clone(), self.churn.clone());
        let exec = move |queue: QueueRef, calls: Vec<Vec<Receipt>>| {
            let (core, churn) = (core.clone(), churn.clone());
            async move {
                let lengths: Vec<usize> = calls.iter().map(Vec::len).collect();
                let receipts: Vec<Receipt> = calls.into_iter().flatten().collect();
                let settled = ack_batch(&core, &queue, &receipts).await;
                if let Ok(answers) = &settled {
                    churn.churned(answers.iter().filter(|a| a.is_ok()).count(), &core);
                }
                distribute(settled, &lengths)
            }
        };
        self.acks
            .submit(queue.clone(), receipts, exec)
            .await
            .unwrap_or_else(|| Err(abandoned()))
    }
}

/// One combined enqueue: a plain batch on a queue this node knows is one autocommitted
/// insert; anything else (keys, groups, an unknown or vanished queue) is a full transaction.
async fn enqueue_batch(core: &Core, queue: &QueueRef, messages: &[NewMessage]) -> Answer<Vec<Enqueued>> {
    if crate::enqueue::is_plain(messages) {
        if let Some(meta) = core.cache.meta(queue) {
            match retry(|| crate::enqueue::enqueue_plain(core, queue, &meta, messages)).await? {
                Some(enqueued) => {
                    if messages.iter().all(|m| m.delay.is_zero()) {
                        core.announce_ready(queue, enqueued.len());
                    } else {
                        // Waiting receivers must learn when the delayed ones fall due.
                        core.announce(std::slice::from_ref(queue));
                    }
                    return Ok(enqueued);
                }
                None => core.cache.forget(queue),
            }
        }
    }
    transaction!(core, finish_ok, |ctx| crate::enqueue::enqueue(
        &mut ctx, queue, messages
    ))
    .await
}

/// One combined ack: receipts of ungrouped messages are settled by one autocommitted
/// statement; the rest (grouped messages, refusals, a receipt named twice) by the full
/// transaction, which answers exactly as before for them.
///
/// Should that transaction fail after the first statement acked some receipts, those still
/// answer `Ok` and only the rest carry the error: an ack that changed something never
/// reports that nothing changed.
async fn ack_batch(core: &Core, queue: &QueueRef, receipts: &[Receipt]) -> Answer<Settled> {
    let distinct = receipts.iter().map(|r| r.message_id).collect::<HashSet<_>>().len() == receipts.len();
    let meta = core.cache.meta(queue).filter(|_| distinct);
    let Some(meta) = meta else {
        return transaction!(core, finish_ok, |ctx| crate::lease::ack_many(&mut ctx, queue, receipts)).await;
    };
    let acked = retry(|| crate::lease::ack_ungrouped(core, meta.id, receipts)).await?;
    let rest: Vec<Receipt> = receipts
        .iter()
        .filter(|r| !acked.contains(&r.message_id.0))
        .cloned()
        .collect();
    if rest.is_empty() {
        return Ok(receipts.iter().map(|_| Ok(())).collect());
    }
    let settled_rest = transaction!(core, finish_ok, |ctx| crate::lease::ack_many(&mut ctx, queue, &rest)).await;
    let mut rest_answers = match settled_rest {
        Ok(answers) => answers.into_iter(),
        Err(e) if acked.is_empty() => return Err(e),
        Err(e) => rest
            .iter()
            .map(|_| Err(LeaseError::Storage(e.clone())))
            .collect::<Vec<_>>()
            .into_iter(),
    };
    let mut out = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        if acked.contains(&receipt.message_id.0) {
            out.push(Ok(()));
        } else {
            let answer = rest_answers
                .next()
                .ok_or_else(|| StorageError::Internal("ack_many answered fewer receipts than it was given".into()))?;
            out.push(answer);
        }
    }
    Ok(out)
}
