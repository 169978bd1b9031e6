//! Durability seams of the SQLite engine: what a failed commit does, what a reopen finds,
//! and that one data file has one owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use courier_core::{
    ErrorKind, ManualClock, MessageId, NewMessage, QueueEngine, QueueRef, ReceiveOptions, StorageError, Timestamp,
};
use courier_sqlite::{SqliteEngine, SqliteOptions};

fn queue() -> QueueRef {
    "test/durable".parse().unwrap()
}

#[tokio::test]
async fn failed_commit_loses_nothing_acknowledged_and_poisons_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let fail = Arc::new(AtomicBool::new(false));
    let hook_flag = fail.clone();
    let engine = SqliteEngine::open(SqliteOptions::new(&path).commit_hook(Arc::new(move || {
        if hook_flag.load(Ordering::SeqCst) {
            Err("injected fsync failure".into())
        } else {
            Ok(())
        }
    })))
    .await
    .unwrap();
    let kept = engine.enqueue(&queue(), vec![NewMessage::new("kept")]).await.unwrap();

    fail.store(true, Ordering::SeqCst);
    let lost = engine
        .enqueue(&queue(), vec![NewMessage::new("never acknowledged")])
        .await;
    assert!(
        matches!(
            lost,
            Err(courier_core::EnqueueError::Storage(StorageError::Poisoned(_)))
        ),
        "{lost:?}"
    );

    fail.store(false, Ordering::SeqCst);
    let after = engine.enqueue(&queue(), vec![NewMessage::new("refused")]).await;
    assert!(
        matches!(
            after,
            Err(courier_core::EnqueueError::Storage(StorageError::Poisoned(_)))
        ),
        "a poisoned engine must refuse writes even when the disk looks healthy again: {after:?}"
    );
    engine.shutdown().await.unwrap();
    drop(engine);

    let reopened = SqliteEngine::open(SqliteOptions::new(&path)).await.unwrap();
    let batch = reopened
        .try_receive(
            &queue(),
            &ReceiveOptions {
                max_messages: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = batch.deliveries.iter().map(|d| d.message.id).collect();
    assert_eq!(ids, vec![kept[0].id], "exactly the acknowledged message survives");
}

#[tokio::test]
async fn reopen_finds_every_acknowledged_message_and_ids_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let engine = SqliteEngine::open(SqliteOptions::new(&path)).await.unwrap();
    let first = engine
        .enqueue(&queue(), (0..50).map(|i| NewMessage::new(format!("m{i}"))).collect())
        .await
        .unwrap();
    engine.shutdown().await.unwrap();
    drop(engine);

    let engine = SqliteEngine::open(SqliteOptions::new(&path)).await.unwrap();
    let later = engine.enqueue(&queue(), vec![NewMessage::new("later")]).await.unwrap();
    assert!(later[0].id > first.last().unwrap().id);
    let stats = engine.stats(&queue()).await.unwrap();
    assert_eq!(stats.ready, 51);
}

#[tokio::test]
async fn a_second_engine_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let _owner = SqliteEngine::open(SqliteOptions::new(&path)).await.unwrap();
    let second = SqliteEngine::open(SqliteOptions::new(&path)).await;
    assert!(matches!(second, Err(StorageError::Unavailable(_))), "{second:?}");
}

/// A look-up of an id the queue does not hold still keeps the sweep it did first: the lapsed
/// lease it found is given back in the stored rows, not left for the next call to find again.
#[tokio::test]
async fn a_get_of_an_unknown_id_keeps_its_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let engine = SqliteEngine::open(SqliteOptions::new(&path).clock(clock.clone()))
        .await
        .unwrap();
    engine.enqueue(&queue(), vec![NewMessage::new("m")]).await.unwrap();
    let short = ReceiveOptions {
        lease: Some(Duration::from_secs(1)),
        ..ReceiveOptions::default()
    };
    let leased = engine.try_receive(&queue(), &short).await.unwrap().deliveries;
    assert_eq!(leased.len(), 1);
    clock.advance(Duration::from_secs(2));

    let err = engine
        .get_message(&queue(), MessageId(uuid::Uuid::now_v7()))
        .await
        .expect_err("no such message");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    engine.shutdown().await.unwrap();
    drop(engine);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT status FROM messages").unwrap();
    let stored: Vec<i64> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(stored, [0], "the lapsed lease is ready again in the file (status 0)");
}
