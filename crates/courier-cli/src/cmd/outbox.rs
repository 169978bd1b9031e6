//! `courier outbox …`: what an operator sees and does with an application's outbox: counts by
//! status, failed messages page by page, and retrying them. Talks to the database directly.

use anyhow::{anyhow, bail};
use courier_outbox::{FailedMessage, PageRequest};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::outbox::OutboxArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Rows by status: pending, published (kept by retention), failed.
    Stats(Common),
    /// List messages that reached their max attempts, oldest first.
    Failed(FailedArgs),
    /// Put failed messages back to pending (attempts reset), by id or all of them.
    Retry(RetryArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    #[command(flatten)]
    outbox: OutboxArgs,
    /// Print JSON rather than text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FailedArgs {
    #[command(flatten)]
    common: Common,
    /// Most messages to list.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue after this cursor (printed as `next` by the previous page).
    #[arg(long)]
    after: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RetryArgs {
    #[command(flatten)]
    common: Common,
    /// Retry every failed message.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Ids of failed messages to retry.
    ids: Vec<String>,
}

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Stats(args) => stats(args).await,
        Command::Failed(args) => failed(args).await,
        Command::Retry(args) => retry(args).await,
    }
}

async fn stats(args: Common) -> anyhow::Result<()> {
    let (outbox, _) = args.outbox.open().await?;
    let c = outbox.counts().await?;
    if args.json {
        println!(
            "{}",
            json!({"pending": c.pending, "published": c.published, "failed": c.failed})
        );
    } else {
        println!("pending {}  published {}  failed {}", c.pending, c.published, c.failed);
    }
    Ok(())
}

async fn failed(args: FailedArgs) -> anyhow::Result<()> {
    let (outbox, _) = args.common.outbox.open().await?;
    let page = match args.after {
        Some(after) => PageRequest::after(after, args.limit),
        None => PageRequest::first(args.limit),
    };
    let page = outbox.list_failed(page).await?;
    if args.common.json {
        let messages: Vec<Value> = page.messages.iter().map(failed_json).collect();
        println!("{}", json!({"messages": messages, "next_after": page.next_after}));
        return Ok(());
    }
    for m in &page.messages {
        println!(
            "{}  {}  key {}  attempts {}  {}",
            m.id,
            m.destination,
            m.key.as_deref().unwrap_or("-"),
            m.attempts,
            m.last_error.as_deref().unwrap_or("-")
        );
    }
    if let Some(next) = page.next_after {
        println!("next: --after {next}");
    }
    Ok(())
}

fn failed_json(m: &FailedMessage) -> Value {
    json!({
        "id": m.id,
        "seq": m.seq,
        "destination": m.destination,
        "key": m.key,
        "payload": String::from_utf8_lossy(&m.payload),
        "headers": m.headers,
        "content_type": m.content_type,
        "created_at_ms": m.created_at.as_millis(),
        "attempts": m.attempts,
        "last_error": m.last_error,
        "last_attempt_at_ms": m.last_attempt_at.map(|t| t.as_millis()),
    })
}

async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    if !args.all && args.ids.is_empty() {
        bail!("name the failed messages to retry, or pass --all");
    }
    let ids = args
        .ids
        .iter()
        .map(|id| Uuid::parse_str(id).map_err(|e| anyhow!("{id:?} is not a message id: {e}")))
        .collect::<anyhow::Result<Vec<Uuid>>>()?;
    let (outbox, _) = args.common.outbox.open().await?;
    let retried = if args.all {
        outbox.retry_all_failed().await?
    } else {
        outbox.retry_failed(&ids).await?
    };
    if args.common.json {
        println!("{}", json!({"retried": retried}));
    } else {
        println!("retried {retried}");
    }
    Ok(())
}
