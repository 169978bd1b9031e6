//! Durability seams of the SQLite engine: what a failed commit does, what a reopen finds,
//! and that one data file has one owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use courier_core::{NewMessage, QueueEngine, QueueRef, ReceiveOptions, StorageError};
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
