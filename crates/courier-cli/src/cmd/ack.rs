//! `courier ack`: settle one received message by its id and lease.

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
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let rb = ctx
        .client
        .request(Method::POST, &queue_path(&queue, &["messages", &args.id, "ack"]))
        .json(&json!({ "lease_id": args.lease_id }));
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |_| println!("acked {}", args.id));
    Ok(())
}
