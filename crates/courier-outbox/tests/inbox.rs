//! The inbox on PostgreSQL and SQLite: a message handled twice changes the consumer's table
//! once; a failing handler leaves neither its writes nor the record; concurrent deliveries of
//! one message run the handler once; invalid metadata is refused; old records are purged, by
//! hand and by the cleanup loop.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{manual_clock, Backend, Db};
use courier_core::{Clock, ManualClock};
use courier_outbox::inbox::{run_processed_cleanup, HandleError, Handled, InboxError, PgInbox, SqliteInbox};
use sqlx::{PgConnection, SqliteConnection};

on_both_databases!(
    message_handled_twice_changes_the_consumer_table_once,
    failing_handler_leaves_no_record_and_no_writes,
    concurrent_deliveries_run_the_handler_once,
    invalid_metadata_is_refused_and_nothing_recorded,
    old_records_are_purged_by_hand_and_by_the_cleanup_loop,
);

/// The inbox of one test database, with a consumer table `effects` to write into.
enum Inbox {
    Pg(PgInbox, String),
    Lite(SqliteInbox),
}

impl Inbox {
    async fn open(db: &Db, clock: Arc<ManualClock>) -> Self {
        match db {
            Db::Pg { pool, schema, .. } => {
                sqlx::raw_sql(&format!(
                    "CREATE TABLE {}.effects (message_id text NOT NULL)",
                    schema.name
                ))
                .execute(pool)
                .await
                .expect("consumer table");
                let inbox = PgInbox::new(pool.clone(), &schema.name)
                    .expect("schema")
                    .with_clock(clock);
                Self::Pg(inbox, format!("{}.effects", schema.name))
            }
            Db::Lite { pool, .. } => {
                sqlx::raw_sql("CREATE TABLE effects (message_id TEXT NOT NULL)")
                    .execute(pool)
                    .await
                    .expect("consumer table");
                Self::Lite(SqliteInbox::new(pool.clone()).with_clock(clock))
            }
        }
    }

    /// Handles `message_id` once: the handler writes one effect row, then fails if told to.
    async fn handle(&self, message_id: &str, fail: bool) -> Result<Handled<()>, HandleError<sqlx::Error>> {
        let id = message_id.to_owned();
        match self {
            Self::Pg(inbox, table) => {
                let insert = format!("INSERT INTO {table} (message_id) VALUES ($1)");
                inbox
                    .handle_once(
                        "billing",
                        message_id,
                        Some(r#"{"by":"test"}"#),
                        async |conn: &mut PgConnection| {
                            sqlx::query(&insert).bind(&id).execute(&mut *conn).await?;
                            if fail {
                                return Err(sqlx::Error::Protocol("handler failed on purpose".into()));
                            }
                            Ok(())
                        },
                    )
                    .await
            }
            Self::Lite(inbox) => {
                inbox
                    .handle_once("billing", message_id, None, async |conn: &mut SqliteConnection| {
                        sqlx::query("INSERT INTO effects (message_id) VALUES (?1)")
                            .bind(&id)
                            .execute(&mut *conn)
                            .await?;
                        if fail {
                            return Err(sqlx::Error::Protocol("handler failed on purpose".into()));
                        }
                        Ok(())
                    })
                    .await
            }
        }
    }

    async fn effects(&self, db: &Db) -> i64 {
        match (self, db) {
            (Self::Pg(_, table), Db::Pg { pool, .. }) => {
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                    .fetch_one(pool)
                    .await
            }
            (_, Db::Lite { pool, .. }) => sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(pool).await,
            _ => unreachable!("inbox and database come from the same backend"),
        }
        .expect("count effects")
    }

    async fn is_processed(&self, db: &Db, message_id: &str) -> bool {
        match (self, db) {
            (Self::Pg(inbox, _), Db::Pg { pool, .. }) => {
                let mut conn = pool.acquire().await.expect("connection");
                inbox.is_processed(&mut conn, "billing", message_id).await
            }
            (Self::Lite(inbox), Db::Lite { pool, .. }) => {
                let mut conn = pool.acquire().await.expect("connection");
                inbox.is_processed(&mut conn, "billing", message_id).await
            }
            _ => unreachable!("inbox and database come from the same backend"),
        }
        .expect("is processed")
    }

    async fn mark(&self, db: &Db, message_id: &str, metadata: Option<&str>) -> Result<bool, InboxError> {
        match (self, db) {
            (Self::Pg(inbox, _), Db::Pg { pool, .. }) => {
                let mut tx = pool.begin().await.expect("begin");
                let marked = inbox.mark_processed(&mut tx, "billing", message_id, metadata).await;
                tx.commit().await.expect("commit");
                marked
            }
            (Self::Lite(inbox), Db::Lite { pool, .. }) => {
                let mut tx = pool.begin().await.expect("begin");
                let marked = inbox.mark_processed(&mut tx, "billing", message_id, metadata).await;
                tx.commit().await.expect("commit");
                marked
            }
            _ => unreachable!("inbox and database come from the same backend"),
        }
    }

    async fn purge_before(&self, before: courier_core::Timestamp) -> u64 {
        match self {
            Self::Pg(inbox, _) => inbox.purge_processed_before(before).await,
            Self::Lite(inbox) => inbox.purge_processed_before(before).await,
        }
        .expect("purge")
    }
}

async fn setup(backend: Backend) -> (Db, Inbox, Arc<ManualClock>) {
    let clock = manual_clock();
    let db = Db::open(backend, clock.clone()).await;
    let inbox = Inbox::open(&db, clock.clone()).await;
    (db, inbox, clock)
}

async fn message_handled_twice_changes_the_consumer_table_once(backend: Backend) {
    let (db, inbox, _clock) = setup(backend).await;
    assert!(!inbox.is_processed(&db, "m1").await);
    assert_eq!(inbox.handle("m1", false).await.expect("first"), Handled::Ran(()));
    assert_eq!(
        inbox.handle("m1", false).await.expect("second"),
        Handled::AlreadyProcessed
    );
    assert_eq!(inbox.effects(&db).await, 1);
    assert!(inbox.is_processed(&db, "m1").await);
    assert!(!inbox.mark(&db, "m1", None).await.expect("mark"), "already recorded");
}

async fn failing_handler_leaves_no_record_and_no_writes(backend: Backend) {
    let (db, inbox, _clock) = setup(backend).await;
    let failed = inbox.handle("m1", true).await;
    assert!(matches!(failed, Err(HandleError::Handler(_))), "{failed:?}");
    assert_eq!(inbox.effects(&db).await, 0, "the handler's write was rolled back");
    assert!(
        !inbox.is_processed(&db, "m1").await,
        "the record was rolled back with it"
    );
    // The redelivery runs the handler again.
    assert_eq!(inbox.handle("m1", false).await.expect("retry"), Handled::Ran(()));
    assert_eq!(inbox.effects(&db).await, 1);
}

async fn concurrent_deliveries_run_the_handler_once(backend: Backend) {
    let (db, inbox, _clock) = setup(backend).await;
    let inbox = Arc::new(inbox);
    let ran = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (inbox, ran) = (inbox.clone(), ran.clone());
            tokio::spawn(async move {
                if inbox.handle("same", false).await.expect("handle") == Handled::Ran(()) {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(inbox.effects(&db).await, 1);
}

async fn invalid_metadata_is_refused_and_nothing_recorded(backend: Backend) {
    let (db, inbox, _clock) = setup(backend).await;
    let refused = inbox.mark(&db, "m1", Some("{not json")).await;
    assert!(matches!(refused, Err(InboxError::InvalidMetadata(_))), "{refused:?}");
    assert!(!inbox.is_processed(&db, "m1").await);
    assert!(matches!(inbox.mark(&db, "", None).await, Err(InboxError::Invalid(_))));
    assert!(inbox
        .mark(&db, "m1", Some(r#"{"printer":"p1","copies":2}"#))
        .await
        .expect("valid"));
}

async fn old_records_are_purged_by_hand_and_by_the_cleanup_loop(backend: Backend) {
    let (db, inbox, clock) = setup(backend).await;
    assert!(inbox.mark(&db, "old", None).await.expect("mark"));
    clock.advance(Duration::from_secs(3600));
    assert!(inbox.mark(&db, "new", None).await.expect("mark"));
    let cutoff = courier_core::Timestamp(clock.now().as_millis() - 1000);
    assert_eq!(inbox.purge_before(cutoff).await, 1);
    assert!(!inbox.is_processed(&db, "old").await);
    assert!(inbox.is_processed(&db, "new").await);

    // A zero retention or interval disables the loop: it returns at once.
    let disabled = async {
        match &inbox {
            Inbox::Pg(i, _) => {
                run_processed_cleanup(i, Duration::ZERO, Duration::from_millis(10), std::future::pending()).await
            }
            Inbox::Lite(i) => {
                run_processed_cleanup(i, Duration::from_secs(1), Duration::ZERO, std::future::pending()).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), disabled)
        .await
        .expect("disabled loop returns");

    clock.advance(Duration::from_secs(2 * 3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let retention = Duration::from_secs(3600);
    let every = Duration::from_millis(20);
    let cleanup = async {
        match &inbox {
            Inbox::Pg(i, _) => run_processed_cleanup(i, retention, every, shutdown).await,
            Inbox::Lite(i) => run_processed_cleanup(i, retention, every, shutdown).await,
        }
    };
    let watch = async {
        common::wait_until("the loop to purge", Duration::from_secs(10), || async {
            !inbox.is_processed(&db, "new").await
        })
        .await;
        let _ = stop.send(());
    };
    tokio::time::timeout(Duration::from_secs(15), async { tokio::join!(cleanup, watch) })
        .await
        .expect("cleanup loop stops on shutdown");
}
