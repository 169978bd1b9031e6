//! `WebhookPublisher`: POSTs each message as a binary-mode CloudEvent to the endpoint with the
//! destination appended to its path; keys one request at a time, in order, keys concurrently.

use std::collections::HashMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use courier_core::{OutboundMessage, PublishError, Publisher};
use futures_util::future::join_all;
use reqwest::{Client, Url};
use tokio::sync::Semaphore;

use crate::cloudevents::binary_headers;
use crate::config::WebhookConfig;
use crate::error::ConfigError;
use crate::retry::{classify_status, classify_transport, read_body_start};

type Outcome = Result<(), PublishError>;

/// A [`Publisher`] to an HTTP endpoint, one CloudEvent per message in binary mode: the
/// payload is the body, the attributes `ce-*` headers (see [`crate::cloudevents`] for the
/// mapping of ids, keys, times and application headers).
///
/// Outcomes follow Knative's retry logic: 2xx is `Ok`; 408, 409, 429, 5xx and requests that
/// got no answer (refused, reset, timed out) are `Unavailable`; every other status is
/// `Rejected`. Redirects are not followed. A `Retry-After` header is quoted in the error;
/// when to try again is the relay's backoff.
///
/// Messages of one key are posted one at a time, in batch order, and a key stops at its first
/// failure; other keys and unkeyed messages go concurrently, at most `concurrency_max` at
/// once. When a request gets no answer at all, the endpoint is taken to be down for the rest
/// of the batch: requests not yet started are not attempted (`Unavailable`), so an outage
/// costs one timeout per batch, not one per message.
pub struct WebhookPublisher {
    client: Client,
    config: WebhookConfig,
}

impl WebhookPublisher {
    /// A publisher for `config`. Nothing is sent until the first batch: a generic endpoint
    /// has no side-effect-free probe.
    pub fn new(config: WebhookConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let client = http_client(config.timeout)?;
        Ok(Self { client, config })
    }

    /// The configuration this publisher was built with.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Posts a key's messages in order, stopping at the first failure.
    async fn run_chain(
        &self,
        batch: &[OutboundMessage],
        chain: &[usize],
        permits: &Semaphore,
        endpoint_down: &OnceLock<String>,
    ) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::with_capacity(chain.len());
        let mut failed = false;
        for &i in chain {
            let m = &batch[i];
            let outcome = if failed {
                let key = m.key.as_deref().unwrap_or_default();
                Err(PublishError::Unavailable(format!(
                    "not attempted: an earlier message of key {key:?} failed"
                )))
            } else {
                let _permit = permits.acquire().await;
                match endpoint_down.get() {
                    Some(why) => Err(PublishError::Unavailable(format!(
                        "not attempted: the endpoint failed earlier in this batch ({why})"
                    ))),
                    None => self.post(m, endpoint_down).await,
                }
            };
            failed |= outcome.is_err();
            outcomes.push((i, outcome));
        }
        outcomes
    }

    async fn post(&self, m: &OutboundMessage, endpoint_down: &OnceLock<String>) -> Outcome {
        let url = target_url(&self.config.endpoint, &m.destination)?;
        let headers = binary_headers(m, &self.config.source, &self.config.event_type)?;
        let mut request = self.client.post(url).headers(headers).body(m.payload.clone());
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(mut response) => {
                let body = if response.status().is_success() {
                    Vec::new()
                } else {
                    read_body_start(&mut response).await
                };
                classify_status(response.status(), response.headers(), &body)
            }
            Err(e) => {
                let error = classify_transport(&e);
                let _ = endpoint_down.set(error.to_string());
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Publisher for WebhookPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let permits = Semaphore::new(self.config.concurrency_max);
        let endpoint_down = OnceLock::new();
        let chains = chains(batch);
        let runs = chains
            .iter()
            .map(|chain| self.run_chain(batch, chain, &permits, &endpoint_down));
        let mut results: Vec<Option<Outcome>> = vec![None; batch.len()];
        for (i, outcome) in join_all(runs).await.into_iter().flatten() {
            results[i] = Some(outcome);
        }
        let missing = || Err(PublishError::Unavailable("internal: no outcome was recorded".into()));
        results.into_iter().map(|r| r.unwrap_or_else(missing)).collect()
    }

    fn name(&self) -> &str {
        "webhook"
    }
}

/// An HTTP client bounded by `timeout` per request (connecting included) that does not follow
/// redirects.
pub(crate) fn http_client(timeout: std::time::Duration) -> Result<Client, ConfigError> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::new(format!("HTTP client: {e}")))
}

/// Index chains: one per key holding its messages in batch order, one per unkeyed message.
fn chains(batch: &[OutboundMessage]) -> Vec<Vec<usize>> {
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        match m.key.as_deref() {
            Some(key) => match by_key.get(key) {
                Some(&c) => chains[c].push(i),
                None => {
                    by_key.insert(key, chains.len());
                    chains.push(vec![i]);
                }
            },
            None => chains.push(vec![i]),
        }
    }
    chains
}

/// `endpoint` with `destination` appended as path segments (a leading `/` ignored).
fn target_url(endpoint: &Url, destination: &str) -> Result<Url, PublishError> {
    let destination = destination.trim_start_matches('/');
    if destination.is_empty() {
        return Ok(endpoint.clone());
    }
    let segments: Vec<&str> = destination.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(PublishError::Rejected(format!(
            "destination {destination:?} has an empty, `.` or `..` path segment"
        )));
    }
    let mut url = endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| PublishError::Rejected("the endpoint URL cannot take a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_appended_as_encoded_segments() {
        let endpoint = Url::parse("http://h/hooks/?sig=1").unwrap();
        let check = |d: &str, expected: &str| assert_eq!(target_url(&endpoint, d).unwrap().as_str(), expected, "{d}");
        check("", "http://h/hooks/?sig=1");
        check("orders", "http://h/hooks/orders?sig=1");
        check("/orders/created", "http://h/hooks/orders/created?sig=1");
        check("a b?c", "http://h/hooks/a%20b%3Fc?sig=1");
        for bad in ["a//b", "../admin", "a/./b", "a/"] {
            assert!(
                matches!(target_url(&endpoint, bad), Err(PublishError::Rejected(_))),
                "{bad}"
            );
        }
    }
}
