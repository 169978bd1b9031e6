//! `AmqpPublisher`: publishes each message as a persistent message on one confirm channel,
//! routing key = destination, pipelining a batch and then awaiting its publisher confirms.

use async_trait::async_trait;
use courier_core::{OutboundMessage, PublishError, Publisher};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use tokio::sync::Mutex;
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::AmqpConfig;
use crate::error::{classify, ConfigError, ConnectError};
use courier_core::key_order::Outcomes;

/// AMQP header carrying the message's ordering key, when it has one.
pub const KEY_HEADER: &str = "Courier-Key";
/// `delivery_mode` of a persistent message: written to disk by durable queues.
const PERSISTENT: u8 = 2;

type Outcome = Result<(), PublishError>;

/// A [`Publisher`] to RabbitMQ (AMQP 0-9-1) with publisher confirms.
///
/// Each message is published to the configured exchange with routing key `destination`,
/// `delivery_mode` 2 (persistent), `message_id` = outbox id, `content_type`, `timestamp`
/// (seconds of `created_at`) and the application headers as AMQP headers (long strings), plus
/// `Courier-Key` when it has a key.
///
/// Outcomes: a confirm (`basic.ack`) is `Ok`; a message returned as unroutable (`mandatory`,
/// no queue bound) is `Rejected`; a `basic.nack` is `Unavailable`, since RabbitMQ nacks only
/// when it could not take the message now (a queue at its length limit with
/// `overflow = reject-publish`, an internal error), which a later retry may get past; a
/// channel closed by the broker for this message (no such exchange, access refused) is
/// `Rejected`; timeouts and lost connections are `Unavailable`.
///
/// lapin does not reconnect by itself here: when the connection or channel has died, the next
/// `publish` opens a new one (bounded by `timeout`); while that fails, every message comes
/// back `Unavailable`.
pub struct AmqpPublisher {
    config: AmqpConfig,
    /// The connection and confirm channel, `None` until opened or after they broke. One batch
    /// at a time uses the channel, so confirms of two batches never interleave.
    link: Mutex<Option<Link>>,
}

struct Link {
    // Kept so the connection lives as long as its channel; dropping it closes both.
    connection: Connection,
    channel: Channel,
}

impl Link {
    /// Connects, checks the exchange, opens a channel in confirm mode; all within `timeout`.
    async fn open(config: &AmqpConfig) -> Result<Self, ConnectError> {
        let broker = config.broker();
        match timeout(config.timeout, Self::open_unbounded(config, &broker)).await {
            Ok(link) => link,
            Err(_) => Err(ConnectError::TimedOut {
                broker,
                timeout: config.timeout,
            }),
        }
    }

    async fn open_unbounded(config: &AmqpConfig, broker: &str) -> Result<Self, ConnectError> {
        let unreachable = |source| ConnectError::Unreachable {
            broker: broker.to_owned(),
            source,
        };
        let properties = ConnectionProperties::default().with_connection_name("courier".into());
        let connection = Connection::connect_uri(config.uri.clone(), properties)
            .await
            .map_err(unreachable)?;
        let channel = connection.create_channel().await.map_err(unreachable)?;
        if !config.exchange.is_empty() {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            let name = ShortString::try_new(config.exchange.as_str())
                .map_err(|e| ConnectError::Config(ConfigError::new(format!("exchange: {e}"))))?;
            channel
                .exchange_declare(name, ExchangeKind::Direct, passive, FieldTable::default())
                .await
                .map_err(|source| ConnectError::Exchange {
                    broker: broker.to_owned(),
                    exchange: config.exchange.clone(),
                    source,
                })?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unreachable)?;
        Ok(Self { connection, channel })
    }

    fn is_usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl AmqpPublisher {
    /// Connects (waiting at most `config.timeout`), checks that a named exchange exists and
    /// opens the confirm channel. Fails with a typed error, so a misconfiguration shows at start.
    pub async fn connect(config: AmqpConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let link = Link::open(&config).await?;
        Ok(Self {
            config,
            link: Mutex::new(Some(link)),
        })
    }

    /// Returns at once; the first `publish` connects. Until a connection works every message
    /// comes back `Unavailable`. For a relay that should start while RabbitMQ is down.
    pub async fn connect_lazy(config: AmqpConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        Ok(Self {
            config,
            link: Mutex::new(None),
        })
    }

    /// The configuration this publisher was built with.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    async fn send(
        &self,
        channel: &Channel,
        m: &OutboundMessage,
        deadline: Instant,
    ) -> Result<PublisherConfirm, PublishError> {
        let properties = properties(m)?;
        let routing_key = short("destination (routing key)", &m.destination)?;
        let exchange = short("exchange", &self.config.exchange)?;
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        let publish = channel.basic_publish(exchange, routing_key, options, &m.payload, properties);
        match timeout_at(deadline, publish).await {
            Ok(Ok(confirm)) => Ok(confirm),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(self.timed_out("sending")),
        }
    }

    async fn confirm(&self, m: &OutboundMessage, confirm: PublisherConfirm, deadline: Instant) -> Outcome {
        match timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(PublishError::Rejected(format!(
                    "RabbitMQ returned the message as unroutable ({} {}): no queue is bound for routing key {:?} on exchange {:?}",
                    returned.reply_code, returned.reply_text, m.destination, self.config.exchange
                )))
            }
            Ok(Ok(Confirmation::Nack(None))) => Err(PublishError::Unavailable(
                "RabbitMQ nacked the message (it could not take it now, e.g. a queue at its length limit)".into(),
            )),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                "internal: the channel is not in confirm mode".into(),
            )),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(self.timed_out("waiting for the publisher confirm")),
        }
    }

    /// Publishes `batch` wave by wave on `channel`; also says whether a wave missed its deadline.
    async fn publish_on(&self, channel: &Channel, batch: &[OutboundMessage]) -> (Vec<Outcome>, bool) {
        let mut outcomes = Outcomes::new(batch);
        let mut timed_out = false;
        for wave in outcomes.waves() {
            let deadline = Instant::now() + self.config.timeout;
            let mut sent = Vec::with_capacity(wave.len());
            for i in wave {
                if !outcomes.admit(i) {
                    continue;
                }
                match self.send(channel, &batch[i], deadline).await {
                    Ok(confirm) => sent.push((i, confirm)),
                    Err(e) => outcomes.record(i, Err(e)),
                }
            }
            for (i, confirm) in sent {
                let outcome = self.confirm(&batch[i], confirm, deadline).await;
                timed_out |= outcome.is_err() && deadline <= Instant::now();
                outcomes.record(i, outcome);
            }
        }
        (outcomes.finish(), timed_out)
    }

    fn timed_out(&self, doing: &str) -> PublishError {
        PublishError::Unavailable(format!("RabbitMQ: timed out {doing} after {:?}", self.config.timeout))
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let mut link = self.link.lock().await;
        if !link.as_ref().is_some_and(Link::is_usable) {
            *link = None;
            match Link::open(&self.config).await {
                Ok(opened) => *link = Some(opened),
                Err(e) => return vec![Err(PublishError::Unavailable(e.to_string())); batch.len()],
            }
        }
        let Some(channel) = link.as_ref().map(|l| l.channel.clone()) else {
            return vec![Err(PublishError::Unavailable("internal: no channel".into())); batch.len()];
        };
        let (results, timed_out) = self.publish_on(&channel, batch).await;
        // A channel that missed its deadline may be stuck (a blocked connection, a lost
        // confirm); a closed one is useless. Either way the next batch starts afresh.
        if timed_out || !link.as_ref().is_some_and(Link::is_usable) {
            tracing::warn!(broker = %self.config.broker(), timed_out, "dropping the RabbitMQ connection; the next publish reconnects");
            *link = None;
        }
        results
    }

    fn name(&self) -> &str {
        "amqp"
    }
}

/// The message's AMQP properties; a field AMQP cannot carry refuses the message.
fn properties(m: &OutboundMessage) -> Result<BasicProperties, PublishError> {
    let mut headers = FieldTable::default();
    for (name, value) in &m.headers {
        headers.insert(short("header name", name)?, long(value));
    }
    if let Some(key) = &m.key {
        headers.insert(KEY_HEADER.into(), long(key));
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(short("message id", &m.id.to_string())?)
        .with_timestamp(u64::try_from(m.created_at.as_millis() / 1000).unwrap_or(0))
        .with_headers(headers);
    if let Some(content_type) = &m.content_type {
        properties = properties.with_content_type(short("content type", content_type)?);
    }
    Ok(properties)
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

fn short(what: &str, value: &str) -> Result<ShortString, PublishError> {
    ShortString::try_new(value)
        .map_err(|_| PublishError::Rejected(format!("{what} is {} bytes; AMQP allows at most 255", value.len())))
}
