//! `courier nack`: give a received message back, as a failure (counts toward max attempts)
//! or with `--defer` (does not count).

use reqwest::Method;
use serde_json::json;

use super::{parse_queue, queue_path, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Queue as `namespace/name`, or `name` in namespace `default`.
    queue: String,
    /// Message id.
    id: String,
    /// Lease id from the receive.
    lease_id: String,
    /// What went wrong; kept on the message.
    #[arg(long, conflicts_with = "defer")]
    error: Option<String>,
    /// Put it back without counting an attempt.
    #[arg(long)]
    defer: bool,
    /// Retry after this long, in milliseconds; default the queue's backoff (0 for --defer).
    #[arg(long)]
    delay_ms: Option<u64>,
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let intent = if args.defer { "defer" } else { "failure" };
    let request = json!({
        "lease_id": args.lease_id,
        "intent": intent,
        "error": args.error,
        "delay_ms": args.delay_ms,
    });
    let rb = ctx
        .client
        .request(Method::POST, &queue_path(&queue, &["messages", &args.id, "nack"]))
        .json(&request);
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |_| println!("nacked {}", args.id));
    Ok(())
}
