//! `NatsPublisher`: publishes each message to JetStream on the subject named by its
//! destination, with `Nats-Msg-Id` = outbox id, pipelining a batch and then awaiting its acks.

use std::future::IntoFuture;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use courier_core::{OutboundMessage, PublishError, Publisher};
use tokio::sync::{watch, OnceCell};
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::NatsConfig;
use crate::error::{classify, ConnectError};
use courier_core::key_order::Outcomes;

/// Header carrying the message's ordering key, when it has one.
pub const KEY_HEADER: &str = "Courier-Key";
/// Header carrying the message's content type, when it has one.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";

type Outcome = Result<(), PublishError>;

/// A [`Publisher`] to NATS JetStream.
///
/// Each message goes to the subject `destination` with the application headers as NATS
/// headers, then `Nats-Msg-Id` (the outbox id), `Courier-Key` (the key, if any) and
/// `Content-Type` (if any); these three replace an application header of the same name.
/// A message is `Ok` once its stream acked it, a duplicate ack included: JetStream's duplicate
/// window recognised the id of an earlier publish.
///
/// The client reconnects by itself (backing off up to `reconnect_delay_max`); while it is
/// not connected every message comes back `Unavailable` at once rather than being buffered.
pub struct NatsPublisher {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// Set once the configured stream is known to exist (at once when there is none).
    stream_ready: OnceCell<()>,
    /// Counts the client's disconnections, so acks still awaited when the connection drops
    /// fail at once instead of at the timeout (their replies can no longer come).
    disconnects: Arc<watch::Sender<u64>>,
}

impl NatsPublisher {
    /// Connects (waiting at most `config.timeout`) and makes sure of the configured stream.
    /// Fails with a typed error when no server answers, so a misconfiguration shows at start.
    pub async fn connect(config: NatsConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let servers = config.hosts();
        let disconnects = Arc::new(watch::channel(0).0);
        let connecting = connect_options(&config, &disconnects).connect(config.servers.clone());
        let client = match timeout(config.timeout, connecting).await {
            Err(_) => {
                return Err(ConnectError::TimedOut {
                    servers,
                    timeout: config.timeout,
                })
            }
            Ok(Err(source)) => return Err(ConnectError::Unreachable { servers, source }),
            Ok(Ok(client)) => client,
        };
        let publisher = Self::with_client(client, config, disconnects);
        publisher.ensure_stream().await.map_err(|e| ConnectError::Stream {
            stream: publisher
                .config
                .stream
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            message: e.to_string(),
        })?;
        Ok(publisher)
    }

    /// Returns at once and connects in the background, retrying until a server answers; until
    /// then (and until the configured stream is made sure of) every message comes back
    /// `Unavailable`. For a relay that should start while NATS is down.
    pub async fn connect_lazy(config: NatsConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let servers = config.hosts();
        let disconnects = Arc::new(watch::channel(0).0);
        let client = connect_options(&config, &disconnects)
            .retry_on_initial_connect()
            .connect(config.servers.clone())
            .await
            .map_err(|source| ConnectError::Unreachable { servers, source })?;
        Ok(Self::with_client(client, config, disconnects))
    }

    fn with_client(client: async_nats::Client, config: NatsConfig, disconnects: Arc<watch::Sender<u64>>) -> Self {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.timeout)
            .ack_timeout(config.timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self {
            client,
            jetstream,
            config,
            stream_ready: OnceCell::new(),
            disconnects,
        }
    }

    /// The configuration this publisher was built with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    async fn ensure_stream(&self) -> Result<(), PublishError> {
        let init = || async {
            let Some(spec) = &self.config.stream else {
                return Ok(());
            };
            let config = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                ..Default::default()
            };
            match timeout(self.config.timeout, self.jetstream.get_or_create_stream(config)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(PublishError::Unavailable(format!("stream {:?}: {e}", spec.name))),
                Err(_) => Err(PublishError::Unavailable(format!(
                    "stream {:?}: no answer within {:?}",
                    spec.name, self.config.timeout
                ))),
            }
        };
        self.stream_ready.get_or_try_init(init).await.map(|_| ())
    }

    /// Publishes `batch` wave by wave: sends a wave's messages (skipping keys that failed),
    /// then awaits their acks; acks still awaited when the connection drops fail at once.
    async fn publish_in_waves(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(batch);
        let mut disconnected = self.disconnects.subscribe();
        let mut connection_lost = false;
        for wave in outcomes.waves() {
            let deadline = Instant::now() + self.config.timeout;
            let mut in_flight: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(wave.len());
            for i in wave {
                if !outcomes.admit(i) {
                    continue;
                }
                match self.send(&batch[i], deadline).await {
                    Ok(ack) => in_flight.push((i, ack)),
                    Err(e) => outcomes.record(i, Err(e)),
                }
            }
            for (i, ack) in in_flight {
                let outcome = if connection_lost {
                    Err(connection_lost_error())
                } else {
                    tokio::select! {
                        biased;
                        outcome = self.await_ack(&batch[i], ack, deadline) => outcome,
                        _ = disconnected.changed() => {
                            connection_lost = true;
                            Err(connection_lost_error())
                        }
                    }
                };
                outcomes.record(i, outcome);
            }
        }
        outcomes.finish()
    }

    async fn send(&self, m: &OutboundMessage, deadline: Instant) -> Result<PublishAckFuture, PublishError> {
        let message = PublishMessage::build().payload(m.payload.clone()).headers(headers(m)?);
        match timeout_at(deadline, self.jetstream.send_publish(m.destination.clone(), message)).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(e)) => Err(classify(&e, &m.destination)),
            Err(_) => Err(self.timed_out("sending")),
        }
    }

    async fn await_ack(&self, m: &OutboundMessage, ack: PublishAckFuture, deadline: Instant) -> Outcome {
        match timeout_at(deadline, ack.into_future()).await {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    tracing::debug!(id = %m.id, stream = %ack.stream, "JetStream dropped a duplicate publish");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(classify(&e, &m.destination)),
            Err(_) => Err(self.timed_out("waiting for the publish ack")),
        }
    }

    fn timed_out(&self, doing: &str) -> PublishError {
        PublishError::Unavailable(format!("NATS: timed out {doing} after {:?}", self.config.timeout))
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let state = self.client.connection_state();
        if state != State::Connected {
            let e = PublishError::Unavailable(format!("not connected to NATS ({state:?}); the client is reconnecting"));
            return vec![Err(e); batch.len()];
        }
        if let Err(e) = self.ensure_stream().await {
            return vec![Err(e); batch.len()];
        }
        self.publish_in_waves(batch).await
    }

    fn name(&self) -> &str {
        "nats"
    }
}

fn connection_lost_error() -> PublishError {
    PublishError::Unavailable("the connection to NATS dropped before the publish ack came".into())
}

fn connect_options(config: &NatsConfig, disconnects: &Arc<watch::Sender<u64>>) -> async_nats::ConnectOptions {
    let delay_max = config.reconnect_delay_max;
    let first = &config.servers[0];
    let options = match (first.username(), first.password()) {
        (Some(user), Some(password)) => {
            async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
        }
        (Some(token), None) => async_nats::ConnectOptions::with_token(token.to_owned()),
        _ => async_nats::ConnectOptions::new(),
    };
    options
        .name("courier")
        .connection_timeout(config.timeout)
        .request_timeout(Some(config.timeout))
        .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, delay_max))
        .event_callback({
            let disconnects = disconnects.clone();
            move |event| {
                if matches!(event, async_nats::Event::Disconnected | async_nats::Event::Closed) {
                    tracing::warn!(%event, "NATS connection lost; the client reconnects by itself");
                    disconnects.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            }
        })
}

/// 0 ms, then doubling from 1 ms, capped at `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(31);
    match attempts {
        0 | 1 => Duration::ZERO,
        _ => Duration::from_millis(1u64 << exponent).min(max),
    }
}

/// The message's NATS headers; a name or value NATS cannot carry refuses the message.
fn headers(m: &OutboundMessage) -> Result<HeaderMap, PublishError> {
    let mut map = HeaderMap::new();
    for (name, value) in &m.headers {
        map.insert(header_name(name)?, header_value(name, value)?);
    }
    map.insert(async_nats::header::NATS_MESSAGE_ID, m.id.to_string().as_str());
    if let Some(key) = &m.key {
        map.insert(KEY_HEADER, header_value(KEY_HEADER, key)?);
    }
    if let Some(content_type) = &m.content_type {
        map.insert(CONTENT_TYPE_HEADER, header_value(CONTENT_TYPE_HEADER, content_type)?);
    }
    Ok(map)
}

fn header_name(name: &str) -> Result<HeaderName, PublishError> {
    HeaderName::from_str(name).map_err(|_| PublishError::Rejected(format!("header name {name:?} is not valid in NATS")))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, PublishError> {
    HeaderValue::from_str(value)
        .map_err(|_| PublishError::Rejected(format!("header {name:?} has a value NATS cannot carry (CR or LF)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_doubles_up_to_the_cap() {
        let max = Duration::from_millis(100);
        let delays: Vec<u64> = (0..10).map(|a| reconnect_delay(a, max).as_millis() as u64).collect();
        assert_eq!(delays, [0, 0, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }
}
