//! `NatsConfig`: where the NATS servers are, how long any network step may take, and the
//! JetStream stream to make sure of at connect; parsed from a `nats://` URL.

use std::fmt;
use std::time::Duration;

use async_nats::ServerAddr;

use crate::error::ConfigError;

/// Default bound on connecting, on each publish ack and on stream API requests: 5 s.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default longest pause between reconnect attempts: 2 s.
pub const RECONNECT_DELAY_MAX_DEFAULT: Duration = Duration::from_secs(2);

/// A JetStream stream to create when it does not exist (its other settings are the server's
/// defaults: file storage, limits retention, a 2-minute duplicate window). An existing stream
/// of that name is used as it is, whatever its subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// The subjects it captures, wildcards allowed (`orders.>`).
    pub subjects: Vec<String>,
}

/// How to reach NATS and publish to JetStream. Build with [`NatsConfig::new`] or
/// [`NatsConfig::from_url`], then adjust the public fields.
#[derive(Clone)]
pub struct NatsConfig {
    /// The servers to try; credentials in the first one's URL are used for all
    /// (`nats://user:password@host:port` or `nats://token@host:port`).
    pub servers: Vec<ServerAddr>,
    /// Bound on connecting, on each wave of publish acks of a batch, and on stream API
    /// requests. Default = [`TIMEOUT_DEFAULT`] (5 s).
    pub timeout: Duration,
    /// Longest pause between reconnect attempts (they back off from 0 ms, doubling).
    /// Default = [`RECONNECT_DELAY_MAX_DEFAULT`] (2 s).
    pub reconnect_delay_max: Duration,
    /// A stream to create at connect when missing. Default = `None`: publishing to a subject
    /// no stream captures comes back `Rejected`.
    pub stream: Option<StreamSpec>,
}

// URLs may carry a password or token, which must never reach a log line.
impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.hosts())
            .field("timeout", &self.timeout)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("stream", &self.stream)
            .finish()
    }
}

impl NatsConfig {
    /// Defaults for one server.
    pub fn new(server: ServerAddr) -> Self {
        Self {
            servers: vec![server],
            timeout: TIMEOUT_DEFAULT,
            reconnect_delay_max: RECONNECT_DELAY_MAX_DEFAULT,
            stream: None,
        }
    }

    /// Parses `nats://[user:password@|token@]host[:port][,nats://host2:port…][?options]`.
    ///
    /// Options (query parameters, values percent-decoded):
    /// - `timeout_ms` — [`NatsConfig::timeout`], in milliseconds;
    /// - `reconnect_delay_max_ms` — [`NatsConfig::reconnect_delay_max`], in milliseconds;
    /// - `stream` and `subjects` — [`NatsConfig::stream`]: the name, and the subjects
    ///   separated by commas (`?stream=ORDERS&subjects=orders.>`); both or neither.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (servers, query) = url.split_once('?').unwrap_or((url, ""));
        let servers = servers
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<ServerAddr>()
                    .map_err(|e| ConfigError::new(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = Self {
            servers,
            timeout: TIMEOUT_DEFAULT,
            reconnect_delay_max: RECONNECT_DELAY_MAX_DEFAULT,
            stream: None,
        };
        let (mut stream, mut subjects) = (None, None);
        for (name, value) in query_pairs(query)? {
            match name.as_str() {
                "timeout_ms" => config.timeout = millis(&name, &value)?,
                "reconnect_delay_max_ms" => config.reconnect_delay_max = millis(&name, &value)?,
                "stream" => stream = Some(value),
                "subjects" => subjects = Some(value.split(',').map(str::to_owned).collect()),
                _ => return Err(ConfigError::new(format!("unknown option {name:?} in the NATS URL"))),
            }
        }
        config.stream = match (stream, subjects) {
            (Some(name), Some(subjects)) => Some(StreamSpec { name, subjects }),
            (None, None) => None,
            _ => return Err(ConfigError::new("`stream` and `subjects` go together in the NATS URL")),
        };
        config.validate()?;
        Ok(config)
    }

    /// The servers as `host:port,host:port`, without credentials: safe to log.
    pub fn hosts(&self) -> String {
        let hosts: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect();
        hosts.join(",")
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new("at least one NATS server is needed"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout must be above zero"));
        }
        if let Some(s) = &self.stream {
            if s.name.is_empty() || s.subjects.is_empty() || s.subjects.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    "stream needs a name and at least one non-empty subject",
                ));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_gets_the_defaults() {
        let c = NatsConfig::from_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!((c.servers[0].host(), c.servers[0].port()), ("127.0.0.1", 4222));
        assert_eq!(
            (c.timeout, c.reconnect_delay_max, c.stream),
            (TIMEOUT_DEFAULT, RECONNECT_DELAY_MAX_DEFAULT, None)
        );
    }

    #[test]
    fn options_and_servers_are_read() {
        let c = NatsConfig::from_url(
            "nats://u:s3cret@a:1,nats://b?timeout_ms=250&reconnect_delay_max_ms=100&stream=S&subjects=o.%3E,p.*",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(
            (c.servers[0].username(), c.servers[0].password()),
            (Some("u"), Some("s3cret"))
        );
        assert_eq!(c.servers[1].port(), 4222);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.reconnect_delay_max, Duration::from_millis(100));
        let stream = c.stream.clone().unwrap();
        assert_eq!(
            (stream.name.as_str(), stream.subjects),
            ("S", vec!["o.>".to_owned(), "p.*".to_owned()])
        );
        assert!(!format!("{c:?}").contains("s3cret"), "no credentials in Debug");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let check = |url: &str, needle: &str| {
            let e = NatsConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        };
        check("http://h:1", "scheme");
        check("nats://h?timeout_ms=soon", "timeout_ms");
        check("nats://h?timeout_ms=0", "timeout");
        check("nats://h?color=red", "color");
        check("nats://h?stream=S", "together");
        check("nats://h?stream=S&subjects=", "subject");
        check("nats://h?stream=%zz", "percent");
    }
}
