//! `AmqpConfig`: the broker URI, the exchange messages go to, and how long any network step
//! may take; parsed from an `amqp://` URL.

use std::fmt;
use std::time::Duration;

use lapin::uri::AMQPUri;

use crate::error::ConfigError;

/// Default bound on connecting and on each wave of publisher confirms of a batch: 5 s.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Query parameters lapin reads from the URL itself (connection tuning); passed through.
const LAPIN_OPTIONS: [&str; 5] = [
    "frame_max",
    "channel_max",
    "heartbeat",
    "connection_timeout",
    "auth_mechanism",
];

/// How to reach RabbitMQ and where messages go. Build with [`AmqpConfig::new`] or
/// [`AmqpConfig::from_url`], then adjust the public fields.
#[derive(Clone)]
pub struct AmqpConfig {
    /// Broker address, credentials, virtual host and connection tuning.
    pub uri: AMQPUri,
    /// The exchange every message is published to, with its destination as routing key.
    /// Default = `""`, the default exchange, which routes to the queue named by the
    /// destination. A named exchange must exist: connecting checks it.
    pub exchange: String,
    /// Bound on connecting (TCP, handshake, channel set-up) and on each wave of publisher
    /// confirms of a batch. Default = [`TIMEOUT_DEFAULT`] (5 s).
    pub timeout: Duration,
    /// Publish with the `mandatory` flag, so a message no queue takes comes back
    /// (`basic.return`) and is reported `Rejected` instead of being dropped by the broker.
    /// Default = `true`.
    pub mandatory: bool,
}

// The URI carries a password, which must never reach a log line.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("broker", &self.broker())
            .field("exchange", &self.exchange)
            .field("timeout", &self.timeout)
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl AmqpConfig {
    /// Defaults for `uri`.
    pub fn new(uri: AMQPUri) -> Self {
        Self {
            uri,
            exchange: String::new(),
            timeout: TIMEOUT_DEFAULT,
            mandatory: true,
        }
    }

    /// Parses `amqp://[user:password@]host[:port][/vhost][?options]` (`/%2f` is the vhost
    /// `/`, also the default when the path is missing).
    ///
    /// Options (query parameters, values percent-decoded):
    /// - `exchange` — [`AmqpConfig::exchange`];
    /// - `timeout_ms` — [`AmqpConfig::timeout`], in milliseconds;
    /// - `mandatory` — `true` or `false`, [`AmqpConfig::mandatory`];
    /// - lapin's own `heartbeat`, `connection_timeout`, `frame_max`, `channel_max`,
    ///   `auth_mechanism`, passed to it unchanged.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let mut uri: AMQPUri = url.parse().map_err(|e| ConfigError::new(format!("AMQP URL: {e}")))?;
        // lapin's parser reads the host with `Url::domain`, which turns an IPv6 address into
        // its default, "localhost"; read the host as written instead.
        uri.authority.host = host_of(url)?;
        let mut config = Self::new(uri);
        let query = url.split_once('?').map_or("", |(_, q)| q);
        for (name, value) in query_pairs(query)? {
            match name.as_str() {
                "exchange" => config.exchange = value,
                "timeout_ms" => config.timeout = millis(&name, &value)?,
                "mandatory" => {
                    config.mandatory = value
                        .parse()
                        .map_err(|_| ConfigError::new(format!("mandatory must be true or false, got {value:?}")))?
                }
                _ if LAPIN_OPTIONS.contains(&name.as_str()) => {}
                _ => return Err(ConfigError::new(format!("unknown option {name:?} in the AMQP URL"))),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout must be above zero"));
        }
        if self.exchange.len() > 255 {
            return Err(ConfigError::new("exchange names are at most 255 bytes"));
        }
        Ok(())
    }

    /// `host:port/vhost`, without credentials: safe to log.
    pub fn broker(&self) -> String {
        let a = &self.uri.authority;
        format!("{}:{}/{}", a.host, a.port, self.uri.vhost)
    }
}

/// The host between `@` (or `//`) and the port or path, brackets of an IPv6 address removed.
fn host_of(url: &str) -> Result<String, ConfigError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(ConfigError::new(format!(
            "no host in the AMQP URL {:?}",
            url.split('@').next_back().unwrap_or("")
        )));
    }
    percent_decode(host)
}

fn millis(name: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| ConfigError::new(format!("{name} must be a whole number of milliseconds, got {value:?}")))
}

/// `a=1&b=x%2Cy` as decoded pairs.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ConfigError> {
    courier_core::url_query::query_pairs(query).map_err(ConfigError::new)
}

fn percent_decode(s: &str) -> Result<String, ConfigError> {
    courier_core::url_query::percent_decode(s).map_err(ConfigError::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_gets_the_defaults() {
        let c = AmqpConfig::from_url("amqp://guest:s3cret@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(c.broker(), "127.0.0.1:5672//");
        assert_eq!(c.uri.authority.userinfo.password, "s3cret");
        assert_eq!(
            (c.exchange.as_str(), c.timeout, c.mandatory),
            ("", TIMEOUT_DEFAULT, true)
        );
        assert!(!format!("{c:?}").contains("s3cret"), "no credentials in Debug");
    }

    #[test]
    fn hosts_keep_their_address_and_options_are_read() {
        let check =
            |url: &str, host: &str| assert_eq!(AmqpConfig::from_url(url).unwrap().uri.authority.host, host, "{url}");
        check("amqp://10.1.2.3:5672", "10.1.2.3");
        check("amqp://u:p@rabbit.internal/vh", "rabbit.internal");
        check("amqp://[::1]:5673/%2f", "::1");
        let c =
            AmqpConfig::from_url("amqp://h/v?exchange=amq.topic&timeout_ms=250&mandatory=false&heartbeat=10").unwrap();
        assert_eq!(
            (c.exchange.as_str(), c.timeout, c.mandatory),
            ("amq.topic", Duration::from_millis(250), false)
        );
        assert_eq!((c.uri.vhost.as_str(), c.uri.query.heartbeat), ("v", Some(10)));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let check = |url: &str, needle: &str| {
            let e = AmqpConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        };
        check("http://h", "scheme");
        check("amqp://h?timeout_ms=soon", "timeout_ms");
        check("amqp://h?timeout_ms=0", "timeout");
        check("amqp://h?mandatory=yes", "mandatory");
        check("amqp://h?color=red", "color");
        check("amqp://h?exchange=%zz", "percent");
    }
}
