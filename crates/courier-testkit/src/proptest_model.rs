//! Model-based property test: proptest generates random operation sequences, runs each
//! against the reference [`Model`] and a fresh engine on the same `ManualClock`, and compares
//! every observable result. Engine ids differ from the model's, so they are mapped by enqueue order.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{
    Clock, Enqueued, Etag, ExpiryAction, Lease, ListOptions, ManualClock, MessageId, MessageInfo, MessageStatus,
    NackIntent, NewMessage, QueueEngine, QueuePolicy, QueueRef, Receipt, ReceiveBatch, ReceiveOptions, Redrive,
    Timestamp,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::json;

use crate::conformance::START;
use crate::harness::Harness;
use crate::model::Model;

/// Cases per run by default: enough to find ordering and expiry bugs, a few seconds long.
/// `PROPTEST_CASES` in the environment overrides it.
pub const DEFAULT_CASES: u32 = 64;

/// Longest generated operation sequence.
const OPS_MAX: usize = 60;

/// One message of a generated enqueue.
#[derive(Debug, Clone)]
pub struct MsgSpec {
    delay_ms: u64,
    ttl_ms: Option<u64>,
    group: Option<u8>,
    key: Option<u8>,
    max_attempts: Option<u32>,
    lease_ms: Option<u64>,
}

/// One generated operation. `pick` selects among receipts (or messages) seen so far, modulo
/// their count, so old and stale receipts are used as often as fresh ones.
#[derive(Debug, Clone)]
pub enum Op {
    /// Enqueue a batch of 1 to 3 messages.
    Enqueue(Vec<MsgSpec>),
    /// `try_receive` with `max` messages and an optional lease.
    Receive {
        /// `max_messages`.
        max: usize,
        /// `ReceiveOptions::lease` in ms.
        lease_ms: Option<u64>,
    },
    /// Ack a receipt.
    Ack {
        /// Which receipt.
        pick: usize,
    },
    /// Ack several receipts in one `ack_many` (repeats included).
    AckMany {
        /// Which receipts.
        picks: Vec<usize>,
    },
    /// Nack a receipt as a failure or a deferral.
    Nack {
        /// Which receipt.
        pick: usize,
        /// Failure (true) or deferral (false).
        failure: bool,
        /// The delay; `None` on a failure means the policy's backoff.
        delay_ms: Option<u64>,
    },
    /// Extend a receipt's lease (50 ms is invalid on purpose).
    Extend {
        /// Which receipt.
        pick: usize,
        /// Extension in ms.
        by_ms: u64,
    },
    /// Write a receipt's state document, optionally compare-and-swap on version `if_match`.
    PutState {
        /// Which receipt.
        pick: usize,
        /// Expected version, if any.
        if_match: Option<u64>,
    },
    /// Read a receipt's state document.
    GetState {
        /// Which receipt.
        pick: usize,
    },
    /// Move the clock forward.
    AdvanceClock {
        /// How far, in ms.
        ms: u64,
    },
    /// Compare stats.
    Stats,
    /// Compare `list_messages` and `dlq_list` in full.
    List,
    /// Redrive all dead letters, or some messages by id.
    Redrive {
        /// All, or by id.
        all: bool,
        /// Which messages, by enqueue index modulo their count.
        picks: Vec<usize>,
    },
    /// Purge the live messages.
    Purge,
}

/// A generated case: the queue's policy and the operations.
#[derive(Debug, Clone)]
pub struct Scenario {
    policy: QueuePolicy,
    ops: Vec<Op>,
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    (
        select(vec![0u64, 0, 0, 100, 500, 1_000, 2_500]),
        proptest::option::weighted(0.3, select(vec![500u64, 1_000, 3_000, 10_000])),
        proptest::option::weighted(0.5, 0u8..3),
        proptest::option::weighted(0.3, 0u8..4),
        proptest::option::weighted(0.3, 1u32..4),
        proptest::option::weighted(0.2, select(vec![200u64, 1_000, 5_000])),
    )
        .prop_map(|(delay_ms, ttl_ms, group, key, max_attempts, lease_ms)| MsgSpec {
            delay_ms,
            ttl_ms,
            group,
            key,
            max_attempts,
            lease_ms,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        6 => proptest::collection::vec(msg_spec(), 1..=3).prop_map(Op::Enqueue),
        6 => (1usize..4, proptest::option::weighted(0.4, select(vec![100u64, 500, 2_000])))
            .prop_map(|(max, lease_ms)| Op::Receive { max, lease_ms }),
        3 => pick.prop_map(|pick| Op::Ack { pick }),
        1 => proptest::collection::vec(any::<usize>(), 1..4).prop_map(|picks| Op::AckMany { picks }),
        3 => (pick, any::<bool>(), proptest::option::weighted(0.6, select(vec![0u64, 300, 1_500])))
            .prop_map(|(pick, failure, delay_ms)| Op::Nack { pick, failure, delay_ms }),
        2 => (pick, select(vec![50u64, 100, 1_000, 5_000])).prop_map(|(pick, by_ms)| Op::Extend { pick, by_ms }),
        1 => (pick, proptest::option::of(0u64..3)).prop_map(|(pick, if_match)| Op::PutState { pick, if_match }),
        1 => pick.prop_map(|pick| Op::GetState { pick }),
        5 => select(vec![1u64, 99, 100, 500, 1_000, 3_000, 10_000]).prop_map(|ms| Op::AdvanceClock { ms }),
        2 => Just(Op::Stats),
        1 => Just(Op::List),
        1 => (any::<bool>(), proptest::collection::vec(any::<usize>(), 0..3))
            .prop_map(|(all, picks)| Op::Redrive { all, picks }),
        1 => Just(Op::Purge),
    ]
}

fn policy() -> impl Strategy<Value = QueuePolicy> {
    (
        select(vec![500u64, 1_000, 3_000]),
        1u32..4,
        select(vec![0u64, 100, 1_000]),
        1u32..3,
        proptest::option::weighted(0.3, select(vec![2_000u64, 5_000])),
        any::<bool>(),
        select(vec![0u64, 1_000, 5_000]),
    )
        .prop_map(
            |(lease_ms, max_attempts, initial, multiplier, ttl_ms, drop, dedup)| QueuePolicy {
                lease_ms,
                max_attempts,
                backoff_initial_ms: initial,
                backoff_max_ms: 2_000,
                backoff_multiplier: multiplier,
                ttl_ms,
                on_expire: if drop {
                    ExpiryAction::Drop
                } else {
                    ExpiryAction::DeadLetter
                },
                dedup_window_ms: dedup,
            },
        )
}

/// The strategy for whole cases.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (policy(), proptest::collection::vec(op(), 1..=OPS_MAX)).prop_map(|(policy, ops)| Scenario { policy, ops })
}

/// Runs `cases` generated scenarios against engines from `h` and the model; panics with the
/// shrunk failing scenario on the first difference. Call it from a plain `#[test]` (it builds
/// its own runtime).
pub fn check_against_model(h: Arc<dyn Harness>, cases: u32) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&scenario(), |s| rt.block_on(run_scenario(&*h, s)));
    match result {
        Ok(()) => {}
        // The reason carries the shrunk case's trace; the policy is the rest of the scenario.
        Err(TestError::Fail(reason, scenario)) => {
            panic!("engine differs from the model: {reason}\npolicy: {:?}", scenario.policy)
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}

/// Runs one scenario on a fresh engine and a fresh model, comparing after every operation.
pub async fn run_scenario(h: &dyn Harness, s: Scenario) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(START));
    let te = h.engine(clock.clone()).await;
    let mut run = Run {
        model: Model::new(),
        engine: te.engine.clone(),
        clock,
        q: QueueRef::parse("model", "q").expect("valid name"),
        ids: Vec::new(),
        to_model: HashMap::new(),
        receipts: Vec::new(),
        trace: String::new(),
    };
    run.engine
        .set_policy(&run.q, s.policy.clone())
        .await
        .map_err(|e| fail(format!("set_policy: {e}")))?;
    run.model
        .set_policy(&run.q, s.policy.clone())
        .map_err(|e| fail(format!("model set_policy: {e}")))?;
    for (i, op) in s.ops.iter().enumerate() {
        let _ = writeln!(
            run.trace,
            "#{i} at {}: {op:?}",
            run.now().as_millis() - START.as_millis()
        );
        run.apply(op)
            .await
            .map_err(|e| fail(format!("op #{i} {op:?}: {e}\ntrace:\n{}", run.trace)))?;
    }
    drop(te);
    Ok(())
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Both sides of one scenario, and how engine ids map to model ids.
struct Run {
    model: Model,
    engine: Arc<dyn QueueEngine>,
    clock: Arc<ManualClock>,
    q: QueueRef,
    /// Every message added, in enqueue order: (model id, engine id).
    ids: Vec<(MessageId, MessageId)>,
    to_model: HashMap<MessageId, MessageId>,
    /// Every receipt handed out: (model, engine).
    receipts: Vec<(Receipt, Receipt)>,
    trace: String,
}

/// The comparable outcome of a lease operation.
#[derive(Debug, PartialEq, Eq)]
enum Outcome<T> {
    Ok(T),
    Err(courier_core::ErrorKind),
}

fn outcome<T, E>(r: Result<T, E>, kind: impl Fn(&E) -> courier_core::ErrorKind) -> Outcome<T> {
    match r {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Err(kind(&e)),
    }
}

type Check = Result<(), String>;

fn same<T: std::fmt::Debug + PartialEq>(what: &str, model: T, engine: T) -> Check {
    if model == engine {
        Ok(())
    } else {
        Err(format!("{what}: model {model:?}, engine {engine:?}"))
    }
}

impl Run {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn apply(&mut self, op: &Op) -> Check {
        match op {
            Op::Enqueue(specs) => self.enqueue(specs).await,
            Op::Receive { max, lease_ms } => self.receive(*max, *lease_ms).await,
            Op::Ack { pick } => self.ack(*pick).await,
            Op::AckMany { picks } => self.ack_many(picks).await,
            Op::Nack {
                pick,
                failure,
                delay_ms,
            } => self.nack(*pick, *failure, *delay_ms).await,
            Op::Extend { pick, by_ms } => self.extend(*pick, *by_ms).await,
            Op::PutState { pick, if_match } => self.put_state(*pick, *if_match).await,
            Op::GetState { pick } => self.get_state(*pick).await,
            Op::AdvanceClock { ms } => {
                self.clock.advance(Duration::from_millis(*ms));
                Ok(())
            }
            Op::Stats => self.stats().await,
            Op::List => self.list().await,
            Op::Redrive { all, picks } => self.redrive(*all, picks).await,
            Op::Purge => self.purge().await,
        }
    }

    async fn enqueue(&mut self, specs: &[MsgSpec]) -> Check {
        let messages: Vec<NewMessage> = specs.iter().map(new_message).collect();
        let now = self.now();
        let model = self
            .model
            .enqueue(&self.q, messages.clone(), now)
            .map_err(|e| e.to_string())?;
        let engine = self
            .engine
            .enqueue(&self.q, messages)
            .await
            .map_err(|e| format!("engine: {e}"))?;
        same("result count", model.len(), engine.len())?;
        for (m, e) in model.iter().zip(&engine) {
            same("duplicate flag", m.duplicate, e.duplicate)?;
            if m.duplicate {
                same("duplicate's id", Some(m.id), self.to_model.get(&e.id).copied())?;
            } else {
                self.learn(*m, *e)?;
            }
        }
        Ok(())
    }

    fn learn(&mut self, m: Enqueued, e: Enqueued) -> Check {
        if let Some(&(_, last)) = self.ids.last() {
            if e.id <= last {
                return Err(format!("engine id {} is not above the previous {last}", e.id));
            }
        }
        if self.to_model.insert(e.id, m.id).is_some() {
            return Err(format!("engine reused id {}", e.id));
        }
        self.ids.push((m.id, e.id));
        Ok(())
    }

    fn model_id(&self, engine_id: MessageId) -> Result<MessageId, String> {
        self.to_model
            .get(&engine_id)
            .copied()
            .ok_or_else(|| format!("engine returned an id it never issued: {engine_id}"))
    }

    /// The engine's message info in model terms: its id mapped, and the unspecified
    /// `visible_at` of dead letters blanked on both sides.
    fn normalize(&self, mut info: MessageInfo, from_engine: bool) -> Result<MessageInfo, String> {
        if from_engine {
            info.id = self.model_id(info.id)?;
        }
        if info.status == MessageStatus::DeadLettered {
            info.visible_at = Timestamp(0);
        }
        Ok(info)
    }

    async fn receive(&mut self, max: usize, lease_ms: Option<u64>) -> Check {
        let opts = ReceiveOptions {
            max_messages: max,
            lease: lease_ms.map(Duration::from_millis),
            ..ReceiveOptions::default()
        };
        let now = self.now();
        let model = self.model.try_receive(&self.q, &opts, now).map_err(|e| e.to_string())?;
        let engine = self
            .engine
            .try_receive(&self.q, &opts)
            .await
            .map_err(|e| format!("engine: {e}"))?;
        self.compare_batches(model, engine)
    }

    fn compare_batches(&mut self, model: ReceiveBatch, engine: ReceiveBatch) -> Check {
        let engine_ids = engine
            .deliveries
            .iter()
            .map(|d| self.model_id(d.message.id))
            .collect::<Result<Vec<_>, _>>()?;
        let model_ids: Vec<_> = model.deliveries.iter().map(|d| d.message.id).collect();
        let nothing_delivered = model_ids.is_empty();
        same("delivered messages (model ids, in order)", model_ids, engine_ids)?;
        for (m, e) in model.deliveries.into_iter().zip(engine.deliveries) {
            same(
                "lease token, attempt, deadline",
                lease_view(&m.lease),
                lease_view(&e.lease),
            )?;
            let receipts = (m.receipt(), e.receipt());
            same("delivered message", m.message, self.normalize(e.message, true)?)?;
            self.receipts.push(receipts);
        }
        // next_due is specified only when nothing was delivered.
        if nothing_delivered {
            same("next_due", model.next_due, engine.next_due)?;
        }
        Ok(())
    }

    fn receipt(&self, pick: usize) -> Option<(Receipt, Receipt)> {
        if self.receipts.is_empty() {
            None
        } else {
            Some(self.receipts[pick % self.receipts.len()])
        }
    }

    async fn ack(&mut self, pick: usize) -> Check {
        let Some((m, e)) = self.receipt(pick) else {
            return Ok(());
        };
        let now = self.now();
        let model = outcome(self.model.ack(&self.q, &m, now), |e| e.kind());
        let engine = outcome(self.engine.ack(&self.q, &e).await, |e| e.kind());
        same("ack", model, engine)
    }

    async fn ack_many(&mut self, picks: &[usize]) -> Check {
        let Some(pairs) = picks.iter().map(|p| self.receipt(*p)).collect::<Option<Vec<_>>>() else {
            return Ok(());
        };
        let (model_receipts, engine_receipts): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        let now = self.now();
        let model: Vec<_> = self
            .model
            .ack_many(&self.q, &model_receipts, now)
            .into_iter()
            .map(|r| outcome(r, |e| e.kind()))
            .collect();
        let engine = self
            .engine
            .ack_many(&self.q, &engine_receipts)
            .await
            .map_err(|e| format!("engine ack_many: {e}"))?;
        let engine: Vec<_> = engine.into_iter().map(|r| outcome(r, |e| e.kind())).collect();
        same("ack_many", model, engine)
    }

    async fn nack(&mut self, pick: usize, failure: bool, delay_ms: Option<u64>) -> Check {
        let Some((m, e)) = self.receipt(pick) else {
            return Ok(());
        };
        let delay = delay_ms.map(Duration::from_millis);
        let intent = if failure {
            NackIntent::Failure {
                error: format!("failed at {}", self.now().as_millis()),
                delay,
            }
        } else {
            NackIntent::Defer {
                delay: delay.unwrap_or_default(),
            }
        };
        let now = self.now();
        let model = outcome(self.model.nack(&self.q, &m, intent.clone(), now), |e| e.kind());
        let engine = outcome(self.engine.nack(&self.q, &e, intent).await, |e| e.kind());
        same("nack", model, engine)
    }

    async fn extend(&mut self, pick: usize, by_ms: u64) -> Check {
        let Some((m, e)) = self.receipt(pick) else {
            return Ok(());
        };
        let by = Duration::from_millis(by_ms);
        let now = self.now();
        let model = outcome(self.model.extend(&self.q, &m, by, now).map(|l| lease_view(&l)), |e| {
            e.kind()
        });
        let engine = self.engine.extend(&self.q, &e, by).await;
        if let Ok(lease) = &engine {
            same("extended lease id", e.lease_id, lease.lease_id)?;
        }
        same("extend", model, outcome(engine.map(|l| lease_view(&l)), |e| e.kind()))
    }

    async fn put_state(&mut self, pick: usize, if_match: Option<u64>) -> Check {
        let Some((m, e)) = self.receipt(pick) else {
            return Ok(());
        };
        let value = json!({ "written_at": self.now().as_millis() });
        let if_match = if_match.map(Etag::from_version);
        let now = self.now();
        let model = self.model.put_state(&self.q, &m, value.clone(), if_match.clone(), now);
        let engine = self.engine.put_state(&self.q, &e, value, if_match).await;
        same("put_state", outcome(model, |e| e.kind()), outcome(engine, |e| e.kind()))
    }

    async fn get_state(&mut self, pick: usize) -> Check {
        let Some((m, e)) = self.receipt(pick) else {
            return Ok(());
        };
        let now = self.now();
        let model = outcome(self.model.get_state(&self.q, &m, now), |e| e.kind());
        let engine = outcome(self.engine.get_state(&self.q, &e).await, |e| e.kind());
        same("get_state", model, engine)
    }

    async fn stats(&mut self) -> Check {
        let now = self.now();
        let model = self.model.stats(&self.q, now).map_err(|e| e.to_string())?;
        let engine = self.engine.stats(&self.q).await.map_err(|e| format!("engine: {e}"))?;
        same("stats", model, engine)
    }

    async fn list(&mut self) -> Check {
        let all = ListOptions {
            after: None,
            limit: courier_core::limits::LIST_PAGE_MAX,
        };
        let now = self.now();
        let model = self.model.list_messages(&self.q, all, now).map_err(|e| e.to_string())?;
        let engine = self
            .engine
            .list_messages(&self.q, all)
            .await
            .map_err(|e| format!("engine: {e}"))?;
        self.compare_pages("list_messages", model.items, engine.items)?;
        let model = self.model.dlq_list(&self.q, all, now).map_err(|e| e.to_string())?;
        let engine = self
            .engine
            .dlq_list(&self.q, all)
            .await
            .map_err(|e| format!("engine: {e}"))?;
        self.compare_pages("dlq_list", model.items, engine.items)
    }

    fn compare_pages(&self, what: &str, model: Vec<MessageInfo>, engine: Vec<MessageInfo>) -> Check {
        let model = model
            .into_iter()
            .map(|i| self.normalize(i, false))
            .collect::<Result<Vec<_>, _>>()?;
        let engine = engine
            .into_iter()
            .map(|i| self.normalize(i, true))
            .collect::<Result<Vec<_>, _>>()?;
        same(what, model, engine)
    }

    async fn redrive(&mut self, all: bool, picks: &[usize]) -> Check {
        // Stats first on both sides: redrive is not one of the operations the spec says run
        // maintenance, so make sure both start from maintained state.
        self.stats().await?;
        let (model_which, engine_which) = if all || self.ids.is_empty() {
            (Redrive::All, Redrive::All)
        } else {
            let chosen: Vec<_> = picks.iter().map(|p| self.ids[p % self.ids.len()]).collect();
            (
                Redrive::Ids(chosen.iter().map(|(m, _)| *m).collect()),
                Redrive::Ids(chosen.iter().map(|(_, e)| *e).collect()),
            )
        };
        let now = self.now();
        let model = self
            .model
            .dlq_redrive(&self.q, model_which, now)
            .map_err(|e| e.to_string())?;
        let engine = self
            .engine
            .dlq_redrive(&self.q, engine_which)
            .await
            .map_err(|e| format!("engine: {e}"))?;
        same("redrive count", model, engine)
    }

    async fn purge(&mut self) -> Check {
        self.stats().await?;
        let model = self.model.purge(&self.q).map_err(|e| e.to_string())?;
        let engine = self.engine.purge(&self.q).await.map_err(|e| format!("engine: {e}"))?;
        same("purge count", model, engine)
    }
}

/// The parts of a lease that both sides must agree on (lease ids differ by construction).
fn lease_view(l: &Lease) -> (u64, u32, Timestamp) {
    (l.fencing_token.0, l.attempt, l.deadline)
}

fn new_message(s: &MsgSpec) -> NewMessage {
    let mut m =
        NewMessage::new(format!("d{}-t{:?}", s.delay_ms, s.ttl_ms)).with_delay(Duration::from_millis(s.delay_ms));
    m.ttl = s.ttl_ms.map(Duration::from_millis);
    m.ordering_group = s.group.map(|g| format!("g{g}"));
    m.idempotency_key = s.key.map(|k| format!("k{k}"));
    m.max_attempts = s.max_attempts;
    m.lease = s.lease_ms.map(Duration::from_millis);
    m
}
