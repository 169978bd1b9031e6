//! `courier serve` plus the client commands: send, receive --ack, stats, nack to the DLQ,
//! dlq list/redrive/purge, queues and purge, in human and `--json` output.

mod common;

use common::Server;

#[test]
fn send_receive_ack_and_stats_through_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"));

    let sent = server.ok(&["send", "shop/orders", "hello", "--content-type", "text/plain"]);
    assert!(sent.starts_with("sent "), "{sent}");
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, "from a file").expect("write");
    server.ok(&[
        "send",
        "shop/orders",
        "--file",
        file.to_str().expect("utf8 path"),
        "--key",
        "k1",
    ]);
    let dup = server.ok(&["send", "shop/orders", "again", "--key", "k1"]);
    assert!(dup.starts_with("duplicate of "), "{dup}");

    let stats = server.json(&["stats", "shop/orders"]);
    assert_eq!(stats["ready"], 2);
    let human = server.ok(&["stats", "shop/orders"]);
    assert!(
        human.lines().any(|l| l.split_whitespace().eq(["ready", "2"])),
        "{human}"
    );

    let received = server.ok(&["receive", "shop/orders", "-n", "10", "--ack"]);
    assert!(
        received.contains("hello") && received.contains("from a file"),
        "{received}"
    );
    assert!(received.trim_end().ends_with("acked 2"), "{received}");
    let stats = server.json(&["stats", "shop/orders"]);
    assert_eq!(
        (stats["ready"].as_u64(), stats["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(server.ok(&["receive", "shop/orders"]).trim(), "no messages");

    let queues = server.ok(&["queues"]);
    assert!(queues.contains("shop/orders"), "{queues}");
}

#[test]
fn nack_dead_letters_then_dlq_commands_bring_it_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("data"));
    // A bare queue name lands in namespace "default".
    server.ok(&["send", "jobs", "work", "--max-attempts", "1"]);
    let got = server.json(&["receive", "jobs", "--lease-ms", "60000"]);
    let m = &got["messages"][0];
    let (id, lease) = (
        m["id"].as_str().expect("id"),
        m["lease"]["lease_id"].as_str().expect("lease"),
    );
    let nacked = server.ok(&["nack", "default/jobs", id, lease, "--error", "it broke"]);
    assert_eq!(nacked.trim(), format!("nacked {id}"));

    let listed = server.ok(&["dlq", "list", "jobs"]);
    assert!(
        listed.contains(id) && listed.contains("max_attempts") && listed.contains("it broke"),
        "{listed}"
    );
    assert_eq!(server.ok(&["dlq", "redrive", "jobs", id]).trim(), "redriven 1");

    let got = server.json(&["receive", "jobs"]);
    let m = &got["messages"][0];
    let lease = m["lease"]["lease_id"].as_str().expect("lease");
    server.ok(&["nack", "jobs", id, lease, "--error", "again"]);
    assert_eq!(server.ok(&["dlq", "purge", "jobs"]).trim(), "purged 1");
    server.ok(&["send", "jobs", "x"]);
    assert_eq!(server.ok(&["purge", "jobs"]).trim(), "purged 1");

    server.ok(&["send", "jobs", "deferred"]);
    let got = server.json(&["receive", "jobs"]);
    let m = &got["messages"][0];
    let (id, lease) = (
        m["id"].as_str().expect("id"),
        m["lease"]["lease_id"].as_str().expect("lease"),
    );
    server.ok(&["nack", "jobs", id, lease, "--defer"]);
    let got = server.json(&["receive", "jobs"]);
    let m = &got["messages"][0];
    assert_eq!((m["failures"].as_u64(), m["deliveries"].as_u64()), (Some(0), Some(2)));
    let lease = m["lease"]["lease_id"].as_str().expect("lease");
    assert_eq!(server.ok(&["ack", "jobs", id, lease]).trim(), format!("acked {id}"));
}
