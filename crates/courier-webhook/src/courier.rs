//! `CourierHttpPublisher`: enqueues messages into a `courier serve` queue over its HTTP API,
//! one atomic batch request per destination queue.

use std::collections::HashSet;
use std::str::FromStr;

use async_trait::async_trait;
use base64::Engine as _;
use courier_core::{limits, OutboundMessage, PublishError, Publisher, QueueRef};
use futures_util::future::join_all;
use reqwest::{Client, Url};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::config::CourierHttpConfig;
use crate::error::{ConfigError, ConnectError};
use crate::publisher::http_client;
use crate::retry::{classify_status, classify_transport, read_body_start};
use courier_core::key_order::Outcomes;

type Outcome = Result<(), PublishError>;

/// A [`Publisher`] into `courier serve` queues (`POST /v1/queues/{ns}/{q}/messages`).
///
/// The destination names the queue as `namespace/queue`, or `queue` in namespace `default`
/// (as the CLI reads it). Each message is enqueued with `idempotency_key` = outbox id (so a
/// re-publish within the queue's dedup window adds nothing and still counts as `Ok`),
/// `ordering_group` = key, `content_type`, the headers as `attributes` (an object of strings),
/// and the payload as UTF-8 text when it is valid UTF-8, else base64.
///
/// A batch goes as one request per destination queue (up to 1,000 messages and
/// `batch_payload_bytes_max` of payload each; more follow in further requests), which the
/// server enqueues atomically: all its messages share the outcome, classified like a webhook
/// answer (2xx `Ok`; 408, 409, 429, 5xx and no answer `Unavailable`; other 4xx `Rejected`).
/// When the server refuses a batch as invalid (400, 413), nothing of it was enqueued, and its
/// messages are sent again one at a time so each gets its own verdict. A key whose messages go
/// to different queues is sent queue by queue, in order, and stops at its first failure.
pub struct CourierHttpPublisher {
    client: Client,
    config: CourierHttpConfig,
}

impl CourierHttpPublisher {
    /// A publisher for `config`, without contacting the server.
    pub fn new(config: CourierHttpConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let client = http_client(config.timeout)?;
        Ok(Self { client, config })
    }

    /// A publisher for `config`, after checking that the server answers and takes the token
    /// (`GET /v1/queues`), so a wrong URL or token shows at start.
    pub async fn connect(config: CourierHttpConfig) -> Result<Self, ConnectError> {
        let publisher = Self::new(config)?;
        let url = publisher.url(&["v1", "queues"])?;
        let response = publisher.authorized(publisher.client.get(url.clone())).send().await;
        let mut response = response.map_err(|e| ConnectError::Unreachable {
            url: url.to_string(),
            message: classify_transport(&e).to_string(),
        })?;
        if !response.status().is_success() {
            let body = read_body_start(&mut response).await;
            return Err(ConnectError::Refused {
                url: url.to_string(),
                status: response.status().as_u16(),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(publisher)
    }

    /// The configuration this publisher was built with.
    pub fn config(&self) -> &CourierHttpConfig {
        &self.config
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ConfigError> {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| ConfigError::new("the base URL cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.auth_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Enqueues `indices` (all for one destination) in one request; on a refusal of the
    /// batch as invalid, one at a time.
    async fn enqueue(&self, batch: &[OutboundMessage], indices: &[usize], permits: &Semaphore) -> Vec<Outcome> {
        let outcome = {
            let _permit = permits.acquire().await;
            self.enqueue_atomically(batch, indices).await
        };
        match outcome {
            Err(PublishError::Rejected(why)) if indices.len() > 1 && refused_as_invalid(&why) => {
                self.enqueue_one_by_one(batch, indices, permits).await
            }
            outcome => vec![outcome; indices.len()],
        }
    }

    async fn enqueue_one_by_one(
        &self,
        batch: &[OutboundMessage],
        indices: &[usize],
        permits: &Semaphore,
    ) -> Vec<Outcome> {
        let mut failed_keys: HashSet<&str> = HashSet::new();
        let mut outcomes = Vec::with_capacity(indices.len());
        for &i in indices {
            let key = batch[i].key.as_deref();
            let outcome = match key {
                Some(k) if failed_keys.contains(k) => Err(PublishError::Unavailable(format!(
                    "not attempted: an earlier message of key {k:?} failed"
                ))),
                _ => {
                    let _permit = permits.acquire().await;
                    self.enqueue_atomically(batch, &[i]).await
                }
            };
            if let (Some(k), Err(_)) = (key, &outcome) {
                failed_keys.insert(k);
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    async fn enqueue_atomically(&self, batch: &[OutboundMessage], indices: &[usize]) -> Outcome {
        let destination = &batch[indices[0]].destination;
        let queue = QueueRef::from_str(destination)
            .map_err(|e| PublishError::Rejected(format!("destination {destination:?} is not a queue: {e}")))?;
        let url = self
            .url(&[
                "v1",
                "queues",
                queue.namespace.as_str(),
                queue.name.as_str(),
                "messages",
            ])
            .map_err(|e| PublishError::Rejected(e.to_string()))?;
        let messages: Vec<Value> = indices.iter().map(|&i| message_json(&batch[i])).collect();
        let request = self
            .authorized(self.client.post(url))
            .json(&json!({ "messages": messages }));
        let mut response = request.send().await.map_err(|e| classify_transport(&e))?;
        let body = read_body_start(&mut response).await;
        classify_status(response.status(), response.headers(), &body)
    }
}

#[async_trait]
impl Publisher for CourierHttpPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let permits = Semaphore::new(self.config.concurrency_max);
        let mut outcomes = Outcomes::new(batch);
        for wave in outcomes.waves() {
            // Within a wave each key has one destination, so requests to different queues
            // share no key and may run concurrently. Chunks of one queue go round by round.
            let chunked: Vec<Vec<Vec<usize>>> = by_destination(batch, &wave)
                .into_iter()
                .map(|group| chunks(batch, group, self.config.batch_payload_bytes_max))
                .collect();
            let rounds = chunked.iter().map(Vec::len).max().unwrap_or(0);
            for round in 0..rounds {
                let requests: Vec<Vec<usize>> = chunked
                    .iter()
                    .filter_map(|c| c.get(round))
                    .map(|chunk| chunk.iter().copied().filter(|&i| outcomes.admit(i)).collect::<Vec<_>>())
                    .filter(|admitted| !admitted.is_empty())
                    .collect();
                let replies = join_all(requests.iter().map(|r| self.enqueue(batch, r, &permits))).await;
                for (request, reply) in requests.iter().zip(replies) {
                    for (&i, outcome) in request.iter().zip(reply) {
                        outcomes.record(i, outcome);
                    }
                }
            }
        }
        outcomes.finish()
    }

    fn name(&self) -> &str {
        "courier-http"
    }
}

/// 400 and 413 say something in the request was invalid, which one message alone can cause.
fn refused_as_invalid(why: &str) -> bool {
    why.starts_with("HTTP 400") || why.starts_with("HTTP 413")
}

/// The wave's indices grouped by destination, groups in order of first appearance.
fn by_destination(batch: &[OutboundMessage], wave: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for &i in wave {
        let destination = batch[i].destination.as_str();
        match groups.iter_mut().find(|(d, _)| *d == destination) {
            Some((_, group)) => group.push(i),
            None => groups.push((destination, vec![i])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// `group` cut into requests of at most `ENQUEUE_BATCH_MAX` messages and about
/// `payload_bytes_max` of payload (a single larger message goes alone).
fn chunks(batch: &[OutboundMessage], group: Vec<usize>, payload_bytes_max: usize) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for i in group {
        let len = batch[i].payload.len();
        let full = chunks
            .last()
            .is_none_or(|c| c.len() >= limits::ENQUEUE_BATCH_MAX || (bytes + len > payload_bytes_max && !c.is_empty()));
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(i);
        }
    }
    chunks
}

fn message_json(m: &OutboundMessage) -> Value {
    let mut json = Map::new();
    match std::str::from_utf8(&m.payload) {
        Ok(text) => {
            json.insert("payload".into(), text.into());
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&m.payload);
            json.insert("payload".into(), encoded.into());
            json.insert("payload_encoding".into(), "base64".into());
        }
    }
    json.insert("idempotency_key".into(), m.id.to_string().into());
    if let Some(key) = &m.key {
        json.insert("ordering_group".into(), key.clone().into());
    }
    if let Some(content_type) = &m.content_type {
        json.insert("content_type".into(), content_type.clone().into());
    }
    let attributes: Map<String, Value> = m.headers.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    json.insert("attributes".into(), attributes.into());
    Value::Object(json)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use courier_core::Timestamp;
    use uuid::Uuid;

    use super::*;

    fn msg(destination: &str, payload_len: usize) -> OutboundMessage {
        OutboundMessage {
            id: Uuid::nil(),
            destination: destination.into(),
            key: None,
            payload: Bytes::from(vec![b'x'; payload_len]),
            headers: BTreeMap::new(),
            content_type: None,
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn groups_keep_first_appearance_order_and_chunks_respect_both_limits() {
        let batch = [msg("a", 1), msg("b", 1), msg("a", 1)];
        assert_eq!(by_destination(&batch, &[0, 1, 2]), [vec![0, 2], vec![1]]);
        let batch = [msg("a", 6), msg("a", 6), msg("a", 20), msg("a", 1)];
        assert_eq!(
            chunks(&batch, vec![0, 1, 2, 3], 10),
            [vec![0], vec![1], vec![2], vec![3]]
        );
        assert_eq!(chunks(&batch, vec![0, 3], 10), [vec![0, 3]]);
        let many: Vec<_> = (0..2001).map(|_| msg("a", 0)).collect();
        let sizes: Vec<usize> = chunks(&many, (0..2001).collect(), 10).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1000, 1000, 1]);
    }

    #[test]
    fn payloads_go_as_text_when_they_can_and_base64_otherwise() {
        let mut m = msg("q", 0);
        m.payload = Bytes::from_static(b"hello");
        m.key = Some("k".into());
        m.headers.insert("Trace-Id".into(), "t".into());
        let json = message_json(&m);
        assert_eq!(json["payload"], "hello");
        assert_eq!(json["payload_encoding"], Value::Null);
        assert_eq!(
            (json["ordering_group"].as_str(), json["attributes"]["Trace-Id"].as_str()),
            (Some("k"), Some("t"))
        );
        m.payload = Bytes::from_static(&[0xff, 0x00]);
        let json = message_json(&m);
        assert_eq!(
            (json["payload"].as_str(), json["payload_encoding"].as_str()),
            (Some("/wA="), Some("base64"))
        );
    }
}
