//! Fresh statistics while a queue table grows: after this node has inserted 1 000, 10 000,
//! 100 000 and 1 000 000 messages, it runs `ANALYZE messages` in the background.
//!
//! The engine's statements run on cached generic plans (planning them afresh on every call cost
//! more CPU than running them). A generic plan is made once per connection, with the
//! statistics of that moment, and is only replaced when the table's statistics change. A new
//! table is nearly empty when its plans are made, and autovacuum analyzes it only a minute or
//! more later; until then a plan may, say, walk a whole queue where a primary-key probe is
//! right. Analyzing at these steps replaces such plans on every node within a few thousand
//! messages; afterwards autovacuum keeps the statistics current.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;

/// The first step; each next one is ten times larger.
const FIRST_STEP: u64 = 1_000;
/// After this many inserts the node leaves statistics to autovacuum.
const LAST_STEP: u64 = 1_000_000;

/// Counts this node's inserts and analyzes at each step.
#[derive(Debug)]
pub(crate) struct GrowthAnalyzer {
    inserted: AtomicU64,
}

impl Default for GrowthAnalyzer {
    fn default() -> Self {
        Self {
            inserted: AtomicU64::new(0),
        }
    }
}

impl GrowthAnalyzer {
    /// Records `n` inserted messages; starts an `ANALYZE` when a step was crossed.
    pub(crate) fn inserted(&self, n: usize, pool: &PgPool) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let before = self.inserted.fetch_add(n, Ordering::Relaxed);
        if crossed_step(before, before.saturating_add(n)) {
            let pool = pool.clone();
            tokio::spawn(async move {
                // Statistics are an optimization: a failure is logged, not returned.
                if let Err(error) = sqlx::query("ANALYZE messages").execute(&pool).await {
                    tracing::warn!(%error, "cannot analyze the messages table");
                }
            });
        }
    }
}

/// Whether going from `before` to `after` inserts passes one of the steps.
fn crossed_step(before: u64, after: u64) -> bool {
    let mut step = FIRST_STEP;
    while step <= LAST_STEP {
        if before < step && after >= step {
            return true;
        }
        step *= 10;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_powers_of_ten_from_a_thousand_to_a_million() {
        assert!(!crossed_step(0, 999));
        assert!(crossed_step(999, 1_000));
        assert!(crossed_step(500, 1_500));
        assert!(!crossed_step(1_000, 9_999));
        assert!(crossed_step(9_000, 10_100));
        assert!(crossed_step(999_999, 1_000_000));
        assert!(!crossed_step(1_000_000, 50_000_000));
    }
}
