//! Courier's engine test kit: the conformance suite every engine runs unchanged, the reference
//! model of the queue semantics, and a model-based property test.
//!
//! An engine's `tests/conformance.rs` implements [`Harness`] (a fresh, isolated engine per
//! call) and invokes [`conformance_tests!`]; its `tests/model.rs` invokes [`model_tests!`].
//! The contract itself is `docs/specs/queue-semantics.md`; [`model`] is that document in code.
//!
//! It is not:
//! - an engine for production ([`ModelEngine`] keeps everything in memory and is not durable);
//! - a place for engine-specific tests (crash and fsync tests live with their engine).

#![warn(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod conformance;
pub mod harness;
pub mod model;
pub mod model_engine;
pub mod network;
pub mod postgres;
pub mod process;
pub mod proptest_model;

pub use harness::{Harness, TestEngine};
pub use model::Model;
pub use model_engine::{ModelEngine, ModelHarness};

/// Runs `fut` on a fresh multi-threaded runtime with 2 workers, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would. The macros use it so
/// that an engine crate does not need tokio's `macros` feature to run the suite.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fut)
}

/// Expands to one `#[test]` per conformance suite function, each running it against
/// `$harness` (an expression whose type implements [`Harness`]) on a 2-worker runtime.
///
/// ```
/// use std::sync::Arc;
/// use courier_testkit::{Harness, ModelEngine, TestEngine};
///
/// struct H;
///
/// #[async_trait::async_trait]
/// impl Harness for H {
///     async fn engine(&self, clock: Arc<dyn courier_core::Clock>) -> TestEngine {
///         // A real engine opens a fresh database here and puts its temp dir in `guard`.
///         TestEngine::unguarded(Arc::new(ModelEngine::new(clock)))
///     }
/// }
///
/// courier_testkit::conformance_tests!(H);
/// ```
// Keep this list and the `pub async fn`s under `src/conformance/` in sync: every suite
// function is listed exactly once. The `suite_list_matches_the_functions` test checks it.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::__conformance_tests! { $harness;
            admin::list_and_get_without_leasing,
            admin::list_pages_with_cursor,
            admin::dlq_list_pages_dead_letters,
            admin::purge,
            admin::delete_queue,
            admin::stats_counts_each_status,
            admin::reads_see_every_lapsed_lease_of_a_big_backlog,
            admin::reads_see_every_expiry_of_a_big_backlog,
            admin::oldest_ready_age_counts_ready_only,
            admin::set_policy_applies_to_later_enqueues_and_leases,
            admin::list_queues_by_namespace_in_name_order,
            admin::unknown_queue_errors,
            admin::get_message_unknown_id_is_not_found,
            admin::ready_then_shutdown_refuses_writes,
            enqueue::enqueue_stores_message_as_sent,
            enqueue::enqueue_creates_queue_with_default_policy,
            enqueue::ids_time_ordered,
            enqueue::batch_results_follow_message_order,
            enqueue::delay_makes_message_visible_later,
            enqueue::message_overrides_beat_policy_defaults,
            enqueue::batch_enqueue_is_atomic,
            enqueue::batch_size_is_1_to_1000,
            idempotency::idempotent_enqueue_within_window_returns_first_id,
            idempotency::dedup_window_runs_from_first_enqueue,
            idempotency::dedup_window_zero_disables_dedup,
            idempotency::duplicate_key_in_one_batch_maps_to_first,
            idempotency::dedup_keys_are_per_queue,
            idempotency::dedup_records_outlive_ack_and_purge,
            lease::receive_takes_oldest_visible_first,
            lease::max_messages_caps_the_batch,
            lease::each_delivery_of_a_batch_has_its_own_lease_id,
            lease::first_lease_has_token_one_and_policy_deadline,
            lease::lease_duration_precedence,
            lease::leased_message_not_redelivered_while_lease_valid,
            lease::expired_lease_redelivers_with_higher_fencing_token,
            lease::expired_lease_makes_message_visible_at_its_deadline,
            lease::lease_valid_until_deadline_exclusive,
            lease::stale_ack_is_refused_and_changes_nothing,
            lease::ack_unknown_message_is_not_found,
            lease::ack_deletes_message,
            lease::ack_many_settles_each_receipt,
            lease::extend_moves_deadline_keeps_lease,
            lease::shortened_lease_lapses_at_its_new_deadline,
            lease::next_due_reports_earliest_delayed_or_lease_deadline,
            lease::unknown_queue_receive_is_empty,
            lease::concurrent_receivers_never_share_a_lease,
            long_poll::long_poll_woken_by_enqueue,
            long_poll::long_poll_woken_when_delayed_message_due,
            long_poll::long_poll_woken_when_lease_expires,
            long_poll::long_poll_woken_by_nack,
            long_poll::long_poll_woken_by_ack_unblocking_group,
            long_poll::long_poll_times_out_empty,
            long_poll::long_poll_returns_at_once_when_ready,
            long_poll::waiting_receivers_in_stats,
            ordering::ordering_group_delivers_in_order_one_at_a_time,
            ordering::other_groups_not_blocked,
            ordering::group_stays_blocked_behind_retrying_message,
            ordering::group_advances_when_head_dead_lettered,
            ordering::group_advances_when_head_expires,
            ordering::unblocked_message_keeps_its_own_visible_at,
            ordering::redrive_into_busy_group_is_blocked,
            retry::nack_failure_counts_attempt_and_records_error,
            retry::backoff_delays_retry,
            retry::nack_failure_delay_overrides_backoff,
            retry::defer_does_not_count_attempt,
            retry::max_attempts_moves_to_dlq_with_last_error,
            retry::lease_expiry_at_max_attempts_dead_letters,
            retry::error_text_truncated_at_char_boundary,
            retry::nack_stale_or_unknown_is_refused,
            retry::redrive_all_and_by_id,
            retry::dlq_purge_deletes_dead_letters,
            state::state_starts_null_at_v0,
            state::state_cas_etag,
            state::state_survives_retry_deleted_on_ack,
            state::state_survives_dead_letter_and_redrive,
            state::state_needs_valid_lease,
            state::state_size_limit,
            ttl::ttl_expired_message_dead_lettered_or_dropped,
            ttl::ttl_from_policy_applies,
            ttl::in_flight_message_expires_only_after_lease_ends,
            ttl::delayed_and_blocked_messages_expire,
            ttl::no_ttl_never_expires,
            validation::invalid_names_refused,
            validation::invalid_message_fields_refused,
            validation::invalid_receive_options_refused,
            validation::invalid_lease_durations_refused,
            validation::invalid_policy_refused,
            validation::invalid_list_options_refused,
        }
    };
}

/// The expansion behind [`conformance_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($harness:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $harness;
                $crate::block_on($crate::conformance::$module::$name(&harness));
            }
        )*
    };
}

/// Expands to one `#[test]` that runs the model-based property test against `$harness`
/// with [`proptest_model::DEFAULT_CASES`] cases.
#[macro_export]
macro_rules! model_tests {
    ($harness:expr) => {
        #[test]
        fn engine_matches_reference_model() {
            $crate::proptest_model::check_against_model(
                ::std::sync::Arc::new($harness),
                $crate::proptest_model::DEFAULT_CASES,
            );
        }
    };
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` of the suite is listed in `conformance_tests!` exactly once.
    #[test]
    fn suite_list_matches_the_functions() {
        let files = [
            ("admin", include_str!("conformance/admin.rs")),
            ("enqueue", include_str!("conformance/enqueue.rs")),
            ("idempotency", include_str!("conformance/idempotency.rs")),
            ("lease", include_str!("conformance/lease.rs")),
            ("long_poll", include_str!("conformance/long_poll.rs")),
            ("ordering", include_str!("conformance/ordering.rs")),
            ("retry", include_str!("conformance/retry.rs")),
            ("state", include_str!("conformance/state.rs")),
            ("ttl", include_str!("conformance/ttl.rs")),
            ("validation", include_str!("conformance/validation.rs")),
        ];
        let lib = include_str!("lib.rs");
        let mut functions = 0;
        for (module, src) in files {
            for line in src.lines() {
                let Some(rest) = line.strip_prefix("pub async fn ") else {
                    continue;
                };
                let name = rest.split('(').next().unwrap_or_default();
                let entry = format!("            {module}::{name},\n");
                assert_eq!(
                    lib.matches(&entry).count(),
                    1,
                    "{module}::{name} must be listed once in conformance_tests!"
                );
                functions += 1;
            }
        }
        let start = lib.find("__conformance_tests! { $harness;").expect("the list");
        let list = &lib[start..];
        let list = &list[..list.find("        }").expect("end of the list")];
        let listed = list.lines().filter(|l| l.trim_end().ends_with(',')).count();
        assert_eq!(
            listed, functions,
            "conformance_tests! lists a function that does not exist"
        );
    }
}
