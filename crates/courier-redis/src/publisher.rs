//! `RedisPublisher`: appends each message to the stream named by its destination with `XADD`,
//! one pipeline per wave of a batch, over a `ConnectionManager` that reconnects by itself.

use std::time::Duration;

use async_trait::async_trait;
use courier_core::{OutboundMessage, PublishError, Publisher};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisResult, Value};
use tokio::time::timeout;

use crate::config::RedisConfig;
use crate::error::{classify, ConnectError};
use courier_core::key_order::Outcomes;

/// Prefix of the stream fields that carry application headers: header `Trace-Id` is field
/// `h:Trace-Id`.
pub const HEADER_FIELD_PREFIX: &str = "h:";
/// Pause before the second attempt of a reconnect (jittered, doubling); there are two
/// attempts per reconnect, and the next command after a failed one starts another.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
const RECONNECT_ATTEMPTS_AFTER_THE_FIRST: usize = 1;

type Outcome = Result<(), PublishError>;

/// A [`Publisher`] to Redis Streams.
///
/// Each message becomes one stream entry, appended with `XADD <destination> [MAXLEN ~ n] *`,
/// with the fields
///
/// | field | value |
/// |---|---|
/// | `id` | the outbox id (a UUID, text) |
/// | `key` | the ordering key, when there is one |
/// | `payload` | the payload bytes, unchanged (binary safe) |
/// | `content_type` | when there is one |
/// | `created_at` | milliseconds since the Unix epoch, text |
/// | `h:<name>` | one per application header |
///
/// An entry is `Ok` once Redis answered its `XADD` with an entry id (durable as the server's
/// persistence settings make it: AOF `appendfsync`, replication). Streams have no duplicate
/// detection: a re-publish after a lost answer appends a second entry with the same `id`
/// field, which consumers skip.
///
/// The `ConnectionManager` reconnects by itself after the connection drops; meanwhile every
/// message comes back `Unavailable` within `timeout`.
pub struct RedisPublisher {
    manager: ConnectionManager,
    config: RedisConfig,
}

impl RedisPublisher {
    /// Connects (waiting at most `config.timeout`). Fails with a typed error when the server
    /// does not answer or refuses us, so a misconfiguration shows at start.
    pub async fn connect(config: RedisConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let server = config.server();
        let client = client(&config)?;
        let connecting = ConnectionManager::new_with_config(client, manager_config(&config));
        let manager = match timeout(config.timeout, connecting).await {
            Ok(Ok(manager)) => manager,
            Ok(Err(source)) => return Err(ConnectError::Unreachable { server, source }),
            Err(_) => {
                return Err(ConnectError::TimedOut {
                    server,
                    timeout: config.timeout,
                })
            }
        };
        Ok(Self { manager, config })
    }

    /// Returns at once; the first `publish` connects. Until a connection works every message
    /// comes back `Unavailable`. For a relay that should start while Redis is down.
    pub async fn connect_lazy(config: RedisConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let server = config.server();
        let manager = ConnectionManager::new_lazy_with_config(client(&config)?, manager_config(&config))
            .map_err(|source| ConnectError::Unreachable { server, source })?;
        Ok(Self { manager, config })
    }

    /// The configuration this publisher was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Sends `commands` as one pipeline and returns one reply per command.
    async fn pipeline(&self, commands: Vec<Cmd>) -> Vec<Outcome> {
        let count = commands.len();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for command in commands {
            pipe.add_command(command);
        }
        let mut connection = self.manager.clone();
        let replies = pipe.query_async::<Vec<RedisResult<Value>>>(&mut connection);
        match timeout(self.config.timeout, replies).await {
            Ok(Ok(replies)) if replies.len() == count => replies
                .into_iter()
                .map(|reply| reply.map(|_| ()).map_err(|e| classify(&e)))
                .collect(),
            Ok(Ok(replies)) => {
                let e = format!("Redis answered {} replies to a pipeline of {count}", replies.len());
                vec![Err(PublishError::Unavailable(e)); count]
            }
            Ok(Err(e)) => vec![Err(classify(&e)); count],
            Err(_) => {
                let e = format!("Redis: no answer within {:?}", self.config.timeout);
                vec![Err(PublishError::Unavailable(e)); count]
            }
        }
    }
}

#[async_trait]
impl Publisher for RedisPublisher {
    async fn publish(&self, batch: &[OutboundMessage]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(batch);
        for wave in outcomes.waves() {
            let admitted: Vec<usize> = wave.into_iter().filter(|&i| outcomes.admit(i)).collect();
            if admitted.is_empty() {
                continue;
            }
            let commands = admitted.iter().map(|&i| xadd(&batch[i], self.config.maxlen)).collect();
            let replies = self.pipeline(commands).await;
            for (i, outcome) in admitted.into_iter().zip(replies) {
                outcomes.record(i, outcome);
            }
        }
        outcomes.finish()
    }

    fn name(&self) -> &str {
        "redis"
    }
}

fn client(config: &RedisConfig) -> Result<redis::Client, ConnectError> {
    redis::Client::open(config.connection.clone())
        .map_err(|e| ConnectError::Config(crate::error::ConfigError::new(e.to_string())))
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_number_of_retries(RECONNECT_ATTEMPTS_AFTER_THE_FIRST)
        .set_min_delay(RECONNECT_DELAY_MIN)
        .set_max_delay(config.timeout)
}

/// `XADD <destination> [MAXLEN ~ n] * id … key … payload … content_type … created_at … h:… …`
fn xadd(m: &OutboundMessage, maxlen: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&m.destination);
    if let Some(n) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*").arg("id").arg(m.id.to_string());
    if let Some(key) = &m.key {
        cmd.arg("key").arg(key);
    }
    cmd.arg("payload").arg(&m.payload[..]);
    if let Some(content_type) = &m.content_type {
        cmd.arg("content_type").arg(content_type);
    }
    cmd.arg("created_at").arg(m.created_at.as_millis());
    for (name, value) in &m.headers {
        cmd.arg(format!("{HEADER_FIELD_PREFIX}{name}")).arg(value);
    }
    cmd
}
