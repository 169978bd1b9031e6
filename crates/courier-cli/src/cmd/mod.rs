//! One module per subcommand, each with its clap `Args` and a `run` function; shared here:
//! the client context, queue-name parsing and JSON printing.

pub(crate) mod ack;
pub(crate) mod bench;
pub(crate) mod bench_relay;
pub(crate) mod dlq;
pub(crate) mod migrate;
pub(crate) mod nack;
pub(crate) mod outbox;
pub(crate) mod purge;
pub(crate) mod queues;
pub(crate) mod receive;
pub(crate) mod relay;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod stats;

use anyhow::anyhow;
use courier_core::QueueRef;
use serde_json::Value;

use crate::client::Client;

/// What every client command gets.
pub(crate) struct Ctx {
    /// The HTTP client.
    pub(crate) client: Client,
    /// Print the server's JSON rather than text.
    pub(crate) json: bool,
}

impl Ctx {
    /// Prints `body` as JSON when `--json` was given, else runs `human`.
    pub(crate) fn print(&self, body: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{body}");
        } else {
            human(body);
        }
    }
}

/// Parses `ns/queue` (or a bare `queue` in namespace `default`), naming the problem.
pub(crate) fn parse_queue(text: &str) -> anyhow::Result<QueueRef> {
    text.parse::<QueueRef>()
        .map_err(|e| anyhow!("queue name {text:?} is invalid: {e}"))
}

/// The URL path segments of a queue, followed by `rest`.
pub(crate) fn queue_path<'a>(queue: &'a QueueRef, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["v1", "queues", queue.namespace.as_str(), queue.name.as_str()];
    segments.extend_from_slice(rest);
    segments
}

/// A JSON field as text for people: strings bare, `null` as `-`.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::from("-"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
