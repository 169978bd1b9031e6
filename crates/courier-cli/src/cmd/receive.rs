//! `courier receive`: lease messages (optionally long-polling) and print them, acking
//! them at once with `--ack`.

use std::time::Duration;

use anyhow::anyhow;
use reqwest::Method;
use serde_json::{json, Value};

use super::{parse_queue, queue_path, text, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Queue as `namespace/name`, or `name` in namespace `default`.
    queue: String,
    /// Most messages to receive.
    #[arg(short = 'n', long = "max", default_value_t = 1)]
    max_messages: usize,
    /// Wait up to this long for a first message, in milliseconds (long poll).
    #[arg(long, default_value_t = 0)]
    wait_ms: u64,
    /// Lease to hold, in milliseconds; default the queue's.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Ack every received message right away.
    #[arg(long)]
    ack: bool,
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let request = json!({
        "max_messages": args.max_messages,
        "wait_ms": args.wait_ms,
        "lease_ms": args.lease_ms,
        "payload_encoding": "utf8",
    });
    let rb = ctx
        .client
        .request_waiting(
            Method::POST,
            &queue_path(&queue, &["receive"]),
            Duration::from_millis(args.wait_ms),
        )
        .json(&request);
    let body = ctx.client.send(rb).await?;
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    ctx.print(&body, |_| print_messages(&messages));
    if args.ack && !messages.is_empty() {
        ack_all(ctx, &queue, &messages).await?;
    }
    Ok(())
}

fn print_messages(messages: &[Value]) {
    if messages.is_empty() {
        println!("no messages");
    }
    for m in messages {
        println!(
            "{}  attempt {}  lease {}",
            text(&m["id"]),
            text(&m["lease"]["attempt"]),
            text(&m["lease"]["lease_id"])
        );
        if m["payload_encoding"] == "base64" {
            println!("  (binary payload, base64) {}", text(&m["payload"]));
        } else {
            println!("  {}", text(&m["payload"]));
        }
    }
}

async fn ack_all(ctx: &Ctx, queue: &courier_core::QueueRef, messages: &[Value]) -> anyhow::Result<()> {
    let receipts: Vec<Value> = messages
        .iter()
        .map(|m| json!({"message_id": m["id"], "lease_id": m["lease"]["lease_id"]}))
        .collect();
    let rb = ctx
        .client
        .request(Method::POST, &queue_path(queue, &["messages", "ack"]))
        .json(&json!({ "receipts": receipts }));
    let body = ctx.client.send(rb).await?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r["ok"].as_bool() != Some(true))
        .map(|r| format!("{} ({})", text(&r["message_id"]), text(&r["error"]["code"])))
        .collect();
    if !failed.is_empty() {
        return Err(anyhow!("could not ack {}", failed.join(", ")));
    }
    if !ctx.json {
        println!("acked {}", results.len());
    }
    Ok(())
}
