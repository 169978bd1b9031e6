//! `courier purge`: delete every live message of a queue (its dead letters stay).

use reqwest::Method;

use super::{parse_queue, queue_path, text, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Queue as `namespace/name`, or `name` in namespace `default`.
    queue: String,
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let rb = ctx.client.request(Method::POST, &queue_path(&queue, &["purge"]));
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| println!("purged {}", text(&b["purged"])));
    Ok(())
}
