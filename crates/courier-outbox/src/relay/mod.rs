//! The relay: claims due rows under a lease, publishes them through a [`Publisher`], and
//! settles each message by id. Several relays may share one table.
#![doc = include_str!("../../DESIGN.md")]

mod backoff;
mod cleanup;
mod options;
mod settle;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use courier_core::{Clock, OutboundMessage, PublishError, Publisher};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{InvalidOption, OutboxError};
use crate::postgres::PgOutbox;
use crate::sqlite::SqliteOutbox;
use crate::store::{Claim, ClaimedRow, OnPublish, Settlement, Store};
use crate::wake::{RelayWaker, WakeHub};

pub use options::{
    RelayOptions, Retention, BATCH_SIZE_MAX, CLAIM_DURATION_MAX, CLAIM_DURATION_MIN, INTERVAL_MAX, MAX_ATTEMPTS_MAX,
    POLL_INTERVAL_MIN, RELAY_ID_BYTES_MAX,
};

/// How many times a failed settle is tried before the relay gives up on it (its rows are then
/// claimed again when the claim lapses, and published ones published again).
const SETTLE_ATTEMPTS_MAX: u32 = 5;
/// First wait between settle attempts; doubles each time.
const SETTLE_RETRY_WAIT: Duration = Duration::from_millis(100);

/// Claims, publishes and settles outbox rows until told to stop. Build it with
/// [`Relay::postgres`] or [`Relay::sqlite`] and run it with [`Relay::run`].
pub struct Relay {
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    clock: Arc<dyn Clock>,
    signal: Arc<Notify>,
    /// What this relay writes in `claimed_by`: see [`Relay::claimer`].
    claimer: String,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("publisher", &self.publisher.name())
            .field("claimer", &self.claimer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay on a PostgreSQL outbox: it uses the outbox's pool and clock, is woken by its
    /// writes in this process at once and by other processes' commits through LISTEN/NOTIFY.
    /// While it runs it keeps one connection of the pool for listening and uses up to two more
    /// (claiming the next batch while settling the current one).
    pub fn postgres(
        outbox: &PgOutbox,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Result<Self, InvalidOption> {
        Self::build(
            Arc::new(outbox.clone()),
            &outbox.hub,
            outbox.clock.clone(),
            publisher,
            options,
        )
    }

    /// A relay on a SQLite outbox: it uses the outbox's pool and clock and is woken by its writes
    /// in this process; other processes' writes are found at the next poll.
    pub fn sqlite(
        outbox: &SqliteOutbox,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Result<Self, InvalidOption> {
        Self::build(
            Arc::new(outbox.clone()),
            &outbox.hub,
            outbox.clock.clone(),
            publisher,
            options,
        )
    }

    fn build(
        store: Arc<dyn Store>,
        hub: &WakeHub,
        clock: Arc<dyn Clock>,
        publisher: Arc<dyn Publisher>,
        options: RelayOptions,
    ) -> Result<Self, InvalidOption> {
        options.validate()?;
        let options = RelayOptions {
            retention: options.retention.normalized(),
            ..options
        };
        let claimer = format!("{}#{}", options.relay_id, &Uuid::new_v4().simple().to_string()[..8]);
        Ok(Self {
            store,
            publisher,
            options,
            clock,
            signal: hub.register(),
            claimer,
        })
    }

    /// The relay's id, as configured (in logs).
    pub fn id(&self) -> &str {
        &self.options.relay_id
    }

    /// `claimed_by` on the rows this relay holds: its id, `#` and a nonce drawn when it was
    /// built. A relay renews and settles only rows claimed under this value, so two relays
    /// given the same id by mistake (two replicas of one deployment) still never renew or
    /// settle each other's claims.
    pub fn claimer(&self) -> &str {
        &self.claimer
    }

    /// A handle that wakes this relay, usable after [`Relay::run`] took it.
    pub fn waker(&self) -> RelayWaker {
        RelayWaker(self.signal.clone())
    }

    /// Wakes this relay now rather than at its next poll.
    pub fn wake(&self) {
        self.signal.notify_one();
    }

    /// One round without waiting: claims a batch, publishes it and settles it. Returns how many
    /// rows were claimed (0 when nothing was due). For tests and hand-made loops; [`Relay::run`]
    /// does this continuously.
    pub async fn pump(&self) -> Result<usize, OutboxError> {
        let batch = self.store.claim(self.claim_request()).await?;
        let (_keep, stop) = watch::channel(false);
        let claimed = batch.len();
        if claimed > 0 {
            self.process(batch, stop, &Mutex::default()).await;
        }
        Ok(claimed)
    }

    /// Runs until `shutdown` completes: claims and publishes whenever woken or every poll
    /// interval, and deletes old published rows if the retention says so. On shutdown the batch
    /// being published may finish (for up to the shutdown grace) and is settled; a batch claimed
    /// ahead but not yet published is released. Errors are logged and retried, never returned:
    /// a relay outlives database restarts and publisher outages.
    ///
    /// If this future is dropped instead, nothing is released: the claims lapse and any relay
    /// takes the rows over after the claim duration.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let _listener = AbortOnDrop(self.store.listen(self.signal.clone()));
        tracing::info!(relay = %self.id(), claimer = %self.claimer, publisher = self.publisher.name(), "outbox relay started");
        let work = async {
            tokio::join!(
                self.relay_loop(stop_rx.clone()),
                cleanup::run(
                    self.store.as_ref(),
                    self.clock.as_ref(),
                    self.options.retention,
                    self.options.cleanup_interval,
                    stop_rx.clone(),
                ),
            )
        };
        let stop = async {
            shutdown.await;
            // The receivers live in `work`, which is still running.
            let _ = stop_tx.send(true);
        };
        tokio::join!(work, stop);
        tracing::info!(relay = %self.id(), "outbox relay stopped");
    }

    async fn relay_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            self.drain(&stop).await;
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Publishes batch after batch while they come back full. After a batch of unkeyed rows the
    /// next batch is claimed while the current one publishes; it cannot hold rows of a key the
    /// current one holds anyway, because a key's later rows are not claimable while an earlier
    /// one is unpublished.
    async fn drain(&self, stop: &watch::Receiver<bool>) {
        let Some(mut batch) = self.claim().await else {
            return;
        };
        while !batch.is_empty() {
            if *stop.borrow() {
                self.release(&batch).await;
                return;
            }
            let full = batch.len() >= self.options.batch_size;
            // Claiming ahead while a batch holds keyed rows would walk every later row of those
            // keys (held back until this batch settles) for nothing; claim after settling then.
            let ahead = full && batch.iter().all(|row| row.key.is_none());
            // The batch claimed ahead waits for the current one to publish, which may take
            // longer than a claim lasts: the current publish renews its claims too.
            let ahead_seqs: Mutex<Vec<i64>> = Mutex::default();
            let prefetch = async {
                if !ahead {
                    return None;
                }
                let next = self.claim().await;
                if let Some(rows) = &next {
                    lock(&ahead_seqs).extend(rows.iter().map(|r| r.seq));
                }
                next
            };
            let ((), next) = tokio::join!(self.process(batch, stop.clone(), &ahead_seqs), prefetch);
            let next = match next {
                None if full && !ahead => self.claim().await,
                next => next,
            };
            match next {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    fn claim_request(&self) -> Claim<'_> {
        let now = self.clock.now();
        Claim {
            relay_id: &self.claimer,
            now,
            deadline: now.saturating_add(self.options.claim_duration),
            limit: self.options.batch_size,
        }
    }

    /// Claims a batch; `None` (logged) when the database failed.
    async fn claim(&self) -> Option<Vec<ClaimedRow>> {
        match self.store.claim(self.claim_request()).await {
            Ok(batch) => {
                if !batch.is_empty() {
                    tracing::debug!(relay = %self.id(), claimed = batch.len(), "claimed outbox batch");
                }
                Some(batch)
            }
            Err(error) => {
                tracing::warn!(relay = %self.id(), %error, "cannot claim outbox rows; trying again at the next poll");
                None
            }
        }
    }

    /// Publishes one claimed batch and settles every row of it. While it publishes it also
    /// renews the claims in `also_renew` (a batch claimed ahead, waiting for this one).
    async fn process(&self, rows: Vec<ClaimedRow>, stop: watch::Receiver<bool>, also_renew: &Mutex<Vec<i64>>) {
        let prepared = settle::prepare(&rows);
        let results = if prepared.messages.is_empty() {
            Some(Vec::new())
        } else {
            self.publish(&rows, &prepared.messages, stop, also_renew).await
        };
        let now = self.clock.now();
        let Some(results) = results else {
            self.release(&rows).await;
            return;
        };
        let outcomes = settle::outcomes(&rows, &prepared, results);
        let settlement = settle::plan(&rows, &outcomes, now, &self.options, backoff::jitter);
        tracing::debug!(
            relay = %self.id(),
            published = settlement.published.len(),
            retried = settlement.retries.len(),
            "settling outbox batch"
        );
        self.settle(&settlement).await;
    }

    /// Publishes `messages`, renewing the claim on `rows` (and on `also_renew`) every renew
    /// interval. On shutdown the publish may go on for the shutdown grace; after that it is
    /// abandoned (`None`).
    async fn publish(
        &self,
        rows: &[ClaimedRow],
        messages: &[OutboundMessage],
        mut stop: watch::Receiver<bool>,
        also_renew: &Mutex<Vec<i64>>,
    ) -> Option<Vec<Result<(), PublishError>>> {
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let publish = self.publisher.publish(messages);
        tokio::pin!(publish);
        let every = self.options.renew_interval();
        let mut renew = tokio::time::interval_at(Instant::now() + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut give_up: Option<Instant> = (*stop.borrow()).then(|| Instant::now() + self.options.shutdown_grace);
        loop {
            let grace = async {
                match give_up {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                results = &mut publish => return Some(results),
                _ = renew.tick() => {
                    let mut held = seqs.clone();
                    held.extend(lock(also_renew).iter().copied());
                    self.renew(&held).await;
                }
                _ = stop.changed(), if give_up.is_none() => {
                    give_up = Some(Instant::now() + self.options.shutdown_grace);
                }
                () = grace => {
                    tracing::warn!(relay = %self.id(), rows = seqs.len(), "shutdown grace over; abandoning the publish and releasing its claims");
                    return None;
                }
            }
        }
    }

    async fn renew(&self, seqs: &[i64]) {
        let deadline = self.clock.now().saturating_add(self.options.claim_duration);
        match self.store.renew(&self.claimer, seqs, deadline).await {
            Ok(renewed) if renewed < seqs.len() as u64 => tracing::warn!(
                relay = %self.id(),
                lost = seqs.len() as u64 - renewed,
                "some claims lapsed and were taken over; those messages may be published twice"
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(relay = %self.id(), %error, "cannot renew claims; they lapse unless a later renewal succeeds")
            }
        }
    }

    /// Gives rows back unattempted, due now.
    async fn release(&self, rows: &[ClaimedRow]) {
        let settlement = Settlement::release(rows.iter().map(|r| r.seq), self.clock.now());
        self.settle(&settlement).await;
    }

    /// Applies a settlement, retrying briefly: a lost settle means published rows are
    /// published again after the claim lapses.
    async fn settle(&self, settlement: &Settlement) {
        if settlement.is_empty() {
            return;
        }
        let on_publish = match self.options.retention {
            Retention::DeleteOnPublish => OnPublish::Delete,
            Retention::KeepFor(_) | Retention::KeepForever => OnPublish::Keep,
        };
        let mut wait = SETTLE_RETRY_WAIT;
        for attempt in 1..=SETTLE_ATTEMPTS_MAX {
            let now = self.clock.now();
            match self.store.settle(&self.claimer, settlement, now, on_publish).await {
                Ok(()) => return,
                Err(error) if attempt < SETTLE_ATTEMPTS_MAX => {
                    tracing::warn!(relay = %self.id(), %error, attempt, "cannot settle outbox batch; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(error) => tracing::error!(
                    relay = %self.id(),
                    %error,
                    "cannot settle outbox batch; its rows are claimed again when the claim lapses (published ones are published again)"
                ),
            }
        }
    }
}

/// Aborts a background task when dropped, so a relay whose `run` future is dropped leaves no
/// listener behind.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
