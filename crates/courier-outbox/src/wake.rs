//! In-process wake-ups: a writer's commit (or anyone calling [`RelayWaker::wake`]) wakes the
//! relays of this process at once instead of at their next poll.
//!
//! Each relay has its own [`Notify`], so a wake that arrives while a relay is busy is kept as a
//! permit and the relay looks again as soon as it is done; one wake reaches every relay.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

/// The relays one outbox handle wakes after its writes commit.
#[derive(Debug, Default)]
pub(crate) struct WakeHub {
    relays: Mutex<Vec<Weak<Notify>>>,
}

impl WakeHub {
    /// Registers a relay; the returned signal is what the relay waits on.
    pub(crate) fn register(&self) -> Arc<Notify> {
        let signal = Arc::new(Notify::new());
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        // Relays that were dropped leave their entry behind; prune them here, not on every wake.
        relays.retain(|r| r.strong_count() > 0);
        relays.push(Arc::downgrade(&signal));
        signal
    }

    /// Wakes every live relay registered here.
    pub(crate) fn wake_all(&self) {
        let relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        for relay in relays.iter().filter_map(Weak::upgrade) {
            relay.notify_one();
        }
    }
}

/// Wakes one relay now rather than at its next poll (the seeds' `WakeProcessor`). Cheap to
/// clone; never blocks. Obtained from [`crate::Relay::waker`] before the relay runs.
#[derive(Debug, Clone)]
pub struct RelayWaker(pub(crate) Arc<Notify>);

impl RelayWaker {
    /// Asks the relay to look for work now. Wakes that arrive while it is busy coalesce into
    /// one more look.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_wake_reaches_every_relay_even_when_busy() {
        let hub = WakeHub::default();
        let a = hub.register();
        let b = hub.register();
        hub.wake_all();
        // Nobody was waiting: each relay keeps a permit and returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), a.notified())
            .await
            .expect("a woken");
        tokio::time::timeout(std::time::Duration::from_secs(1), b.notified())
            .await
            .expect("b woken");
        drop(a);
        let c = hub.register();
        assert_eq!(hub.relays.lock().map(|r| r.len()).unwrap_or(0), 2);
        drop((b, c));
    }
}
