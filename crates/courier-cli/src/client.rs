//! A thin HTTP client for the Courier API: builds URLs from path segments (percent-encoded,
//! so an id can never change the route), sends the bearer token, and turns failures into
//! one-line errors: unreachable server, or the server's `{"error":{"code","message"}}`.

use std::time::Duration;

use anyhow::{anyhow, Context};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;

/// Time allowed for a request on top of any long-poll wait it asks for.
const REQUEST_TIMEOUT_SLACK: Duration = Duration::from_secs(30);

/// A client for one server.
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = Url::parse(base).with_context(|| format!("server URL {base:?} is invalid"))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(anyhow!("server URL {base} must start with http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base, token })
    }

    /// A request to the path made of `segments`, each percent-encoded.
    pub(crate) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let rb = self.http.request(method, url).timeout(REQUEST_TIMEOUT_SLACK);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// A request whose server-side wait may take up to `wait` longer than usual.
    pub(crate) fn request_waiting(&self, method: Method, segments: &[&str], wait: Duration) -> RequestBuilder {
        self.request(method, segments).timeout(REQUEST_TIMEOUT_SLACK + wait)
    }

    /// Sends `rb` and returns the JSON body of a 2xx answer.
    pub(crate) async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Value> {
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).context("server sent a response that is not JSON");
        }
        Err(server_error(status, &bytes))
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let base = self.base.as_str().trim_end_matches('/');
        if e.is_timeout() {
            return anyhow!("server at {base} did not answer in time");
        }
        anyhow!("cannot reach server at {base}: {}", root_cause(e))
    }
}

/// The innermost cause, which names what actually happened ("connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    if let Some(io) = inner.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return String::from("connection refused");
        }
    }
    inner.to_string()
}

/// `server returned 409 lease_conflict: <message>`, or the status and a bit of the body.
fn server_error(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error.and_then(|e| Some((e["code"].as_str()?, e["message"].as_str()?))) {
        Some((code, message)) => anyhow!("server returned {} {code}: {message}", status.as_u16()),
        None => {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            anyhow!("server returned {}: {text}", status.as_u16())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded_so_ids_cannot_change_the_route() {
        let c = Client::new("http://127.0.0.1:7070/prefix/", None).expect("client");
        let rb = c.request(Method::GET, &["v1", "queues", "a", "../../x"]);
        let url = rb.build().expect("request").url().to_string();
        assert_eq!(url, "http://127.0.0.1:7070/prefix/v1/queues/a/..%2F..%2Fx");
    }

    #[test]
    fn server_errors_read_as_one_line() {
        let body = br#"{"error":{"code":"lease_conflict","message":"lease is stale"}}"#;
        let e = server_error(reqwest::StatusCode::CONFLICT, body);
        assert_eq!(e.to_string(), "server returned 409 lease_conflict: lease is stale");
        let e = server_error(reqwest::StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.to_string(), "server returned 502: upstream down");
    }

    #[test]
    fn only_http_urls_are_servers() {
        assert!(Client::new("ftp://x", None).is_err());
        assert!(Client::new("not a url", None).is_err());
    }
}
