//! `courier queues`: the queues with their main policy settings.

use reqwest::Method;

use super::{text, Ctx};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only queues of this namespace.
    #[arg(long)]
    namespace: Option<String>,
}

pub(crate) async fn run(args: Args, ctx: &Ctx) -> anyhow::Result<()> {
    let mut rb = ctx.client.request(Method::GET, &["v1", "queues"]);
    if let Some(ns) = &args.namespace {
        rb = rb.query(&[("namespace", ns)]);
    }
    let body = ctx.client.send(rb).await?;
    ctx.print(&body, |b| {
        let queues = b["queues"].as_array().cloned().unwrap_or_default();
        if queues.is_empty() {
            println!("no queues");
        }
        for q in queues {
            let p = &q["policy"];
            println!(
                "{}/{}  lease_ms={} max_attempts={} ttl_ms={}",
                text(&q["namespace"]),
                text(&q["name"]),
                text(&p["lease_ms"]),
                text(&p["max_attempts"]),
                text(&p["ttl_ms"])
            );
        }
    });
    Ok(())
}
