//! `courier dlq list|redrive|purge`: a queue's dead letters.

use reqwest::Method;
use serde_json::json;

use super::{parse_queue, queue_path, text, Ctx};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List dead-lettered messages.
    List {
        /// Queue as `namespace/name`, or `name` in namespace `default`.
        queue: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this message id.
        #[arg(long)]
        after: Option<String>,
    },
    /// Move dead letters back to the queue: the given ids, or all.
    Redrive {
        /// Queue as `namespace/name`, or `name` in namespace `default`.
        queue: String,
        /// Message ids; none means all.
        ids: Vec<String>,
    },
    /// Delete the queue's dead letters.
    Purge {
        /// Queue as `namespace/name`, or `name` in namespace `default`.
        queue: String,
    },
}

pub(crate) async fn run(command: Command, ctx: &Ctx) -> anyhow::Result<()> {
    match command {
        Command::List { queue, limit, after } => list(ctx, &queue, limit, after).await,
        Command::Redrive { queue, ids } => redrive(ctx, &queue, ids).await,
        Command::Purge { queue } => purge(ctx, &queue).await,
    }
}

async fn list(ctx: &Ctx, queue: &str, limit: usize, after: Option<String>) -> anyhow::Result<()> {
    let queue = parse_queue(queue)?;
    let mut query = vec![("limit", limit.to_string())];
    query.extend(after.map(|a| ("after", a)));
    let rb = ctx
        .client
        .request(Method::GET, &queue_path(&queue, &["dlq"]))
        .query(&query);
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| {
        let messages = b["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            println!("no dead letters");
        }
        for m in messages {
            println!(
                "{}  {}  failures={}  last_error={}",
                text(&m["id"]),
                text(&m["dead_letter_reason"]),
                text(&m["failures"]),
                text(&m["last_error"])
            );
        }
        if !b["next_after"].is_null() {
            println!("more: --after {}", text(&b["next_after"]));
        }
    });
    Ok(())
}

async fn redrive(ctx: &Ctx, queue: &str, ids: Vec<String>) -> anyhow::Result<()> {
    let queue = parse_queue(queue)?;
    let request = if ids.is_empty() {
        json!({})
    } else {
        json!({ "ids": ids })
    };
    let rb = ctx
        .client
        .request(Method::POST, &queue_path(&queue, &["dlq", "redrive"]))
        .json(&request);
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| println!("redriven {}", text(&b["redriven"])));
    Ok(())
}

async fn purge(ctx: &Ctx, queue: &str) -> anyhow::Result<()> {
    let queue = parse_queue(queue)?;
    let rb = ctx.client.request(Method::POST, &queue_path(&queue, &["dlq", "purge"]));
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| println!("purged {}", text(&b["purged"])));
    Ok(())
}
