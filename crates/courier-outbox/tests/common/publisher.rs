//! [`TestPublisher`]: records every message it accepted, in order, and fails the messages it is
//! told to; can be slowed down or held at a gate. Not a mock of a broker: `Publisher` is the
//! relay's own trait.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use courier_core::{OutboundMessage, PublishError, Publisher};
use tokio::sync::watch;
use uuid::Uuid;

/// How a [`TestPublisher`] answers.
#[derive(Debug, Default)]
struct Rules {
    down: bool,
    fail_ids: HashMap<Uuid, PublishError>,
    fail_keys: HashSet<String>,
    delay: Duration,
}

/// A publisher that records every message it accepted, in order, and fails the messages it is
/// told to. After a failure for a key it does not publish that key's later messages of the
/// batch, as the `Publisher` contract asks. Not a mock of a broker: it is the relay's own trait.
#[derive(Debug)]
pub struct TestPublisher {
    rules: Mutex<Rules>,
    published: Mutex<Vec<OutboundMessage>>,
    calls: Mutex<usize>,
    /// While false, publish calls wait (a slow or hung destination).
    gate: watch::Sender<bool>,
    /// Shared by several publishers, so a test sees the order across relays.
    sink: Option<Arc<Mutex<Vec<OutboundMessage>>>>,
}

impl Default for TestPublisher {
    fn default() -> Self {
        Self {
            rules: Mutex::default(),
            published: Mutex::default(),
            calls: Mutex::default(),
            gate: watch::Sender::new(true),
            sink: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TestPublisher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A publisher that also appends what it accepts to `sink`.
    pub fn with_sink(sink: Arc<Mutex<Vec<OutboundMessage>>>) -> Arc<Self> {
        Arc::new(Self {
            sink: Some(sink),
            ..Self::default()
        })
    }

    /// Every publish attempt fails with `Unavailable` while set.
    pub fn set_down(&self, down: bool) {
        lock(&self.rules).down = down;
    }

    pub fn fail_id(&self, id: Uuid, error: PublishError) {
        lock(&self.rules).fail_ids.insert(id, error);
    }

    pub fn fail_key(&self, key: &str) {
        lock(&self.rules).fail_keys.insert(key.to_owned());
    }

    pub fn heal(&self) {
        let mut rules = lock(&self.rules);
        rules.down = false;
        rules.fail_ids.clear();
        rules.fail_keys.clear();
    }

    /// Each publish call takes this long.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.rules).delay = delay;
    }

    /// Closed: publish calls wait until it opens.
    pub fn set_gate(&self, open: bool) {
        self.gate.send_replace(open);
    }

    pub fn published(&self) -> Vec<OutboundMessage> {
        lock(&self.published).clone()
    }

    pub fn published_ids(&self) -> Vec<Uuid> {
        self.published().iter().map(|m| m.id).collect()
    }

    pub fn calls(&self) -> usize {
        *lock(&self.calls)
    }

    fn answer(&self, rules: &Rules, message: &OutboundMessage, failed: &HashSet<String>) -> Result<(), PublishError> {
        if message.key.as_ref().is_some_and(|k| failed.contains(k)) {
            return Err(PublishError::Unavailable(
                "not attempted: earlier message of its key failed".into(),
            ));
        }
        if rules.down {
            return Err(PublishError::Unavailable("destination down".into()));
        }
        if let Some(error) = rules.fail_ids.get(&message.id) {
            return Err(error.clone());
        }
        if message.key.as_ref().is_some_and(|k| rules.fail_keys.contains(k)) {
            return Err(PublishError::Rejected("key refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for TestPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Result<(), PublishError>> {
        *lock(&self.calls) += 1;
        let mut gate = self.gate.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = gate.wait_for(|open| *open).await;
        let delay = lock(&self.rules).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let rules = lock(&self.rules);
        let mut failed_keys = HashSet::new();
        let mut published = lock(&self.published);
        let mut sink = self.sink.as_deref().map(lock);
        batch
            .iter()
            .map(|message| {
                let result = self.answer(&rules, message, &failed_keys);
                match &result {
                    Ok(()) => {
                        published.push(message.clone());
                        if let Some(sink) = sink.as_mut() {
                            sink.push(message.clone());
                        }
                    }
                    Err(_) => failed_keys.extend(message.key.clone()),
                }
                result
            })
            .collect()
    }

    fn name(&self) -> &str {
        "test"
    }
}
