//! `RedisConfig`: where Redis is, how long any network step may take, and how long the
//! streams may grow; parsed from a `redis://` URL.

use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::error::ConfigError;

/// Default bound on connecting and on each pipeline of a batch: 5 s.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Query parameters the redis crate reads from the URL itself; passed through.
const REDIS_OPTIONS: [&str; 4] = ["protocol", "db", "user", "pass"];

/// How to reach Redis and append to its streams. Build with [`RedisConfig::new`] or
/// [`RedisConfig::from_url`], then adjust the public fields. `Debug` hides the password.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Address, database and credentials, as the redis crate reads them.
    pub connection: ConnectionInfo,
    /// Bound on connecting and on each pipeline of a batch (one per wave, usually one).
    /// Default = [`TIMEOUT_DEFAULT`] (5 s).
    pub timeout: Duration,
    /// Trim each stream to about this many entries on every append (`XADD … MAXLEN ~ n`;
    /// Redis trims whole nodes, so a stream may hold somewhat more). Default = `None`: streams
    /// grow until the consumers trim them.
    pub maxlen: Option<u64>,
}

impl RedisConfig {
    /// Defaults for `connection`.
    pub fn new(connection: ConnectionInfo) -> Self {
        Self {
            connection,
            timeout: TIMEOUT_DEFAULT,
            maxlen: None,
        }
    }

    /// Parses `redis://[user][:password@]host[:port][/db][?options]` (also `rediss://` when
    /// the redis crate was built with TLS, and `redis+unix:///path`).
    ///
    /// Options (query parameters, values percent-decoded):
    /// - `timeout_ms` — [`RedisConfig::timeout`], in milliseconds;
    /// - `maxlen` — [`RedisConfig::maxlen`], entries;
    /// - the redis crate's own `protocol` (`resp2`, `resp3`), `db`, `user`, `pass`.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let connection = url
            .into_connection_info()
            .map_err(|e| ConfigError::new(format!("Redis URL: {e}")))?;
        let mut config = Self::new(connection);
        let query = url.split_once('?').map_or("", |(_, q)| q);
        for (name, value) in query_pairs(query)? {
            match name.as_str() {
                "timeout_ms" => config.timeout = Duration::from_millis(number(&name, &value)?),
                "maxlen" => config.maxlen = Some(number(&name, &value)?),
                _ if REDIS_OPTIONS.contains(&name.as_str()) => {}
                _ => return Err(ConfigError::new(format!("unknown option {name:?} in the Redis URL"))),
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
        if self.maxlen == Some(0) {
            return Err(ConfigError::new(
                "maxlen must be at least 1 (leave it out to keep everything)",
            ));
        }
        Ok(())
    }

    /// `host:port` (or the socket path), without credentials: safe to log.
    pub fn server(&self) -> String {
        self.connection.addr().to_string()
    }
}

fn number(name: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .parse::<u64>()
        .map_err(|_| ConfigError::new(format!("{name} must be a whole number, got {value:?}")))
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
        let c = RedisConfig::from_url("redis://:s3cret@127.0.0.1:6379/2").unwrap();
        assert_eq!(c.server(), "127.0.0.1:6379");
        assert_eq!((c.timeout, c.maxlen), (TIMEOUT_DEFAULT, None));
        assert!(!format!("{c:?}").contains("s3cret"), "no credentials in Debug");
    }

    #[test]
    fn options_are_read_and_the_crate_s_own_passed_through() {
        let c = RedisConfig::from_url("redis://h:7000/?timeout_ms=250&maxlen=1000&protocol=resp3").unwrap();
        assert_eq!((c.timeout, c.maxlen), (Duration::from_millis(250), Some(1000)));
        assert_eq!(c.server(), "h:7000");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let check = |url: &str, needle: &str| {
            let e = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        };
        check("http://h", "Redis URL");
        check("redis://h?timeout_ms=soon", "timeout_ms");
        check("redis://h?timeout_ms=0", "timeout");
        check("redis://h?maxlen=0", "maxlen");
        check("redis://h?color=red", "color");
        check("redis://h?maxlen=%zz", "percent");
    }
}
