//! `WebhookConfig` and `CourierHttpConfig`: the endpoint, the CloudEvents attributes or the
//! bearer token, and the bounds on time and concurrency; parsed from an `http://` URL.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::error::ConfigError;

/// Default bound on each HTTP request, connecting included: 10 s.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default most requests one batch has in flight at once: 16.
pub const CONCURRENCY_MAX_DEFAULT: usize = 16;
/// Default `ce-source`.
pub const SOURCE_DEFAULT: &str = "courier";
/// Default `ce-type`, when the message has no `ce-type` header.
pub const EVENT_TYPE_DEFAULT: &str = "courier.message";
/// Default largest payload total of one enqueue request to `courier serve`: 4 MiB (the
/// server takes 16 MiB of JSON by default; base64 grows payloads by a third).
pub const BATCH_PAYLOAD_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Where and how [`crate::WebhookPublisher`] POSTs CloudEvents.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The endpoint; each message's destination is appended to its path as segments
    /// (`http://h/hooks` + `orders/created` = `http://h/hooks/orders/created`; an empty
    /// destination posts to the endpoint itself).
    pub endpoint: Url,
    /// `ce-source` of every event. Default = [`SOURCE_DEFAULT`].
    pub source: String,
    /// `ce-type` of events whose message has no `ce-type` header. Default = [`EVENT_TYPE_DEFAULT`].
    pub event_type: String,
    /// Bound on each request, connecting included. Default = [`TIMEOUT_DEFAULT`] (10 s).
    pub timeout: Duration,
    /// Most requests in flight at once per batch. Default = [`CONCURRENCY_MAX_DEFAULT`].
    pub concurrency_max: usize,
    /// Sent as `Authorization: Bearer <token>` when set. Default = `None`.
    pub bearer_token: Option<String>,
}

/// Where and how [`crate::CourierHttpPublisher`] enqueues into `courier serve`.
#[derive(Clone)]
pub struct CourierHttpConfig {
    /// The server's base URL (`http://host:port`, or with a path prefix behind a proxy).
    pub base_url: Url,
    /// The server's `--auth-token`, sent as a bearer token. Default = `None`.
    pub auth_token: Option<String>,
    /// Bound on each request, connecting included. Default = [`TIMEOUT_DEFAULT`] (10 s).
    pub timeout: Duration,
    /// Most requests in flight at once per batch (one per destination queue).
    /// Default = [`CONCURRENCY_MAX_DEFAULT`].
    pub concurrency_max: usize,
    /// Largest payload total of one request, in bytes; a destination's messages beyond it (or
    /// beyond 1,000 messages) go in further requests, one after another. Default =
    /// [`BATCH_PAYLOAD_BYTES_MAX_DEFAULT`] (4 MiB).
    pub batch_payload_bytes_max: usize,
}

// Tokens must never reach a log line.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("source", &self.source)
            .field("event_type", &self.event_type)
            .field("timeout", &self.timeout)
            .field("concurrency_max", &self.concurrency_max)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for CourierHttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CourierHttpConfig")
            .field("base_url", &self.base_url.as_str())
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("concurrency_max", &self.concurrency_max)
            .field("batch_payload_bytes_max", &self.batch_payload_bytes_max)
            .finish()
    }
}

impl WebhookConfig {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: Url) -> Self {
        Self {
            endpoint,
            source: SOURCE_DEFAULT.to_owned(),
            event_type: EVENT_TYPE_DEFAULT.to_owned(),
            timeout: TIMEOUT_DEFAULT,
            concurrency_max: CONCURRENCY_MAX_DEFAULT,
            bearer_token: None,
        }
    }

    /// Parses `http://host[:port][/path][?options]`. These query parameters are options and
    /// are taken out of the endpoint; any other stays in it:
    /// - `ce_source` — [`WebhookConfig::source`];
    /// - `ce_type` — [`WebhookConfig::event_type`];
    /// - `timeout_ms` — [`WebhookConfig::timeout`], in milliseconds;
    /// - `concurrency_max` — [`WebhookConfig::concurrency_max`].
    ///
    /// The bearer token is not read from the URL (URLs end up in logs); set the field.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (endpoint, options) = split_options(url, &["ce_source", "ce_type", "timeout_ms", "concurrency_max"])?;
        let mut config = Self::new(endpoint);
        for (name, value) in options {
            match name.as_str() {
                "ce_source" => config.source = value,
                "ce_type" => config.event_type = value,
                "timeout_ms" => config.timeout = Duration::from_millis(number(&name, &value)?),
                _ => config.concurrency_max = usize::try_from(number(&name, &value)?).unwrap_or(usize::MAX),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_http(&self.endpoint)?;
        check_bounds(self.timeout, self.concurrency_max)?;
        if self.source.is_empty() || self.event_type.is_empty() {
            return Err(ConfigError::new(
                "source and event_type must not be empty (CloudEvents requires both)",
            ));
        }
        Ok(())
    }
}

impl CourierHttpConfig {
    /// Defaults for `base_url`.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            auth_token: None,
            timeout: TIMEOUT_DEFAULT,
            concurrency_max: CONCURRENCY_MAX_DEFAULT,
            batch_payload_bytes_max: BATCH_PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }

    /// Parses `http://host[:port][/prefix][?options]`, options being `timeout_ms`,
    /// `concurrency_max` and `batch_payload_bytes_max`. The token is not read from the URL
    /// (URLs end up in logs); set [`CourierHttpConfig::auth_token`].
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (base_url, options) = split_options(url, &["timeout_ms", "concurrency_max", "batch_payload_bytes_max"])?;
        let mut config = Self::new(base_url);
        for (name, value) in options {
            let n = number(&name, &value)?;
            match name.as_str() {
                "timeout_ms" => config.timeout = Duration::from_millis(n),
                "concurrency_max" => config.concurrency_max = usize::try_from(n).unwrap_or(usize::MAX),
                _ => config.batch_payload_bytes_max = usize::try_from(n).unwrap_or(usize::MAX),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_http(&self.base_url)?;
        check_bounds(self.timeout, self.concurrency_max)?;
        if self.batch_payload_bytes_max == 0 {
            return Err(ConfigError::new("batch_payload_bytes_max must be at least 1"));
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(ConfigError::new("auth_token must not be empty when given"));
        }
        Ok(())
    }
}

/// The URL without the named query parameters, and those parameters.
fn split_options(url: &str, names: &[&str]) -> Result<(Url, Vec<(String, String)>), ConfigError> {
    let mut url = Url::parse(url).map_err(|e| ConfigError::new(format!("URL {url:?}: {e}")))?;
    let (options, kept): (Vec<_>, Vec<_>) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| names.contains(&k.as_str()));
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((url, options))
}

fn check_http(url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "http" => Ok(()),
        "https" => Err(ConfigError::new(
            "https needs TLS, which this build of reqwest leaves out; use http",
        )),
        other => Err(ConfigError::new(format!("scheme {other:?} is not http"))),
    }
}

fn check_bounds(timeout: Duration, concurrency_max: usize) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::new("timeout must be above zero"));
    }
    if concurrency_max == 0 {
        return Err(ConfigError::new("concurrency_max must be at least 1"));
    }
    Ok(())
}

fn number(name: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(format!("{name} must be a whole number, got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_taken_out_of_the_url_and_the_rest_kept() {
        let c =
            WebhookConfig::from_url("http://h:8080/hooks?ce_source=%2Fshop&sig=abc&timeout_ms=250&concurrency_max=4")
                .unwrap();
        assert_eq!(c.endpoint.as_str(), "http://h:8080/hooks?sig=abc");
        assert_eq!(
            (c.source.as_str(), c.event_type.as_str()),
            ("/shop", EVENT_TYPE_DEFAULT)
        );
        assert_eq!((c.timeout, c.concurrency_max), (Duration::from_millis(250), 4));
        let c = CourierHttpConfig::from_url("http://h:7070?batch_payload_bytes_max=1000").unwrap();
        assert_eq!(
            (c.base_url.as_str(), c.batch_payload_bytes_max),
            ("http://h:7070/", 1000)
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let check = |result: Result<(), ConfigError>, needle: &str| {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        check(WebhookConfig::from_url("https://h/").map(drop), "TLS");
        check(WebhookConfig::from_url("ftp://h/").map(drop), "scheme");
        check(WebhookConfig::from_url("not a url").map(drop), "URL");
        check(WebhookConfig::from_url("http://h/?timeout_ms=0").map(drop), "timeout");
        check(
            WebhookConfig::from_url("http://h/?concurrency_max=x").map(drop),
            "concurrency_max",
        );
        check(WebhookConfig::from_url("http://h/?ce_type=").map(drop), "event_type");
        check(
            CourierHttpConfig::from_url("http://h/?batch_payload_bytes_max=0").map(drop),
            "batch_payload",
        );
    }

    #[test]
    fn debug_hides_tokens() {
        let mut c = CourierHttpConfig::from_url("http://h").unwrap();
        c.auth_token = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        let mut w = WebhookConfig::from_url("http://h").unwrap();
        w.bearer_token = Some("s3cret".into());
        assert!(!format!("{w:?}").contains("s3cret"));
    }
}
