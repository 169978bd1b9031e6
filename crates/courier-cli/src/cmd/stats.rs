//! `courier stats`: a queue's counts by status.

use reqwest::Method;

use super::{parse_queue, queue_path, text, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Queue as `namespace/name`, or `name` in namespace `default`.
    queue: String,
}

/// The fields shown, in order.
const FIELDS: [&str; 7] = [
    "ready",
    "in_flight",
    "delayed",
    "blocked",
    "dead_lettered",
    "oldest_ready_age_ms",
    "waiting_receivers",
];

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let body = ctx
        .client
        .send(ctx.client.request(Method::GET, &queue_path(&queue, &["stats"])))
        .await?;
    ctx.print(&body, |b| {
        for field in FIELDS {
            println!("{field:<20} {}", text(&b[field]));
        }
    });
    Ok(())
}
