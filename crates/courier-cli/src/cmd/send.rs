//! `courier send`: one message from an argument, a file or stdin, sent as a raw body so
//! any bytes go through unchanged.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use reqwest::Method;

use super::{parse_queue, queue_path, text, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Queue as `namespace/name`, or `name` in namespace `default`.
    queue: String,
    /// The payload; `-` reads stdin.
    payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, conflicts_with = "payload")]
    file: Option<PathBuf>,
    /// Keep the message invisible this long, in milliseconds.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Expire the message unseen after this long, in milliseconds.
    #[arg(long)]
    ttl_ms: Option<u64>,
    /// Failed attempts before dead-lettering.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Idempotency key: a repeat within the dedup window adds nothing.
    #[arg(long)]
    key: Option<String>,
    /// Ordering group: messages of a group are delivered in order, one at a time.
    #[arg(long)]
    group: Option<String>,
    /// MIME type of the payload.
    #[arg(long)]
    content_type: Option<String>,
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let queue = parse_queue(&args.queue)?;
    let payload = read_payload(&args)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    let numbers = [
        ("delay_ms", args.delay_ms),
        ("ttl_ms", args.ttl_ms),
        ("max_attempts", args.max_attempts.map(u64::from)),
    ];
    query.extend(numbers.into_iter().filter_map(|(k, v)| Some((k, v?.to_string()))));
    let texts = [("idempotency_key", &args.key), ("ordering_group", &args.group)];
    query.extend(texts.into_iter().filter_map(|(k, v)| Some((k, v.clone()?))));
    let mut rb = ctx
        .client
        .request(Method::POST, &queue_path(&queue, &["messages", "raw"]))
        .query(&query)
        .body(payload);
    if let Some(ct) = &args.content_type {
        rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| {
        let m = &b["messages"][0];
        if m["duplicate"].as_bool() == Some(true) {
            println!("duplicate of {}", text(&m["id"]));
        } else {
            println!("sent {}", text(&m["id"]));
        }
    });
    Ok(())
}

fn read_payload(args: &Args) -> anyhow::Result<Vec<u8>> {
    match (&args.payload, &args.file) {
        (Some(p), None) if p == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
            Ok(buf)
        }
        (Some(p), None) => Ok(p.clone().into_bytes()),
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display())),
        _ => bail!("give a payload, --file <path>, or - to read stdin"),
    }
}
