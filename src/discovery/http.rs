//! The one HTTP client every discovery source uses: hyper 1 + hyper-util's legacy `Client` over an
//! `HttpConnector` with a connect timeout and TCP keepalive.
//!
//! Owns: authentication headers (HTTP basic or DC/OS `token=`), the request timeout (headers and
//! the whole body), the body size cap, redirects for plain GETs, and the classification of every
//! failure into a [`FetchError`] whose [`ErrorKind`] names the metric label. It knows nothing about
//! Marathon or Mesos payloads.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, LOCATION};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::decode::DecodeError;
use crate::config::DiscoveryConfig;

/// Largest REST body accepted (a hostile or broken server must not make us allocate without
/// bound). 10k apps with 100k tasks is about 150 MiB of Marathon JSON.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Redirects followed for one GET (a non-leading Mesos master answers 307 to the leader).
const MAX_REDIRECTS: usize = 3;

/// What went wrong, as the `kind` label of `ferryman_discovery_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Connect,
    Timeout,
    HttpStatus,
    Decode,
    Io,
    Stream,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Decode => "decode",
            ErrorKind::Io => "io",
            ErrorKind::Stream => "stream",
        }
    }
}

/// One failed fetch, naming the URL (never the credentials: they travel in headers).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: cannot connect: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: no complete answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: cannot decode the answer: {source}")]
    Decode {
        url: String,
        #[source]
        source: DecodeError,
    },
    #[error("{url}: {detail}")]
    Invalid { url: String, detail: String },
    #[error("{url}: I/O error: {detail}")]
    Io { url: String, detail: String },
    #[error("{url}: event stream broke: {detail}")]
    Stream { url: String, detail: String },
}

impl FetchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Connect { .. } => ErrorKind::Connect,
            FetchError::Timeout { .. } => ErrorKind::Timeout,
            FetchError::HttpStatus { .. } => ErrorKind::HttpStatus,
            FetchError::Decode { .. } | FetchError::Invalid { .. } => ErrorKind::Decode,
            FetchError::Io { .. } => ErrorKind::Io,
            FetchError::Stream { .. } => ErrorKind::Stream,
        }
    }
}

/// The shared client. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    auth: Option<HeaderValue>,
    request_timeout: Duration,
}

impl HttpClient {
    pub fn new(cfg: &DiscoveryConfig) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        // A half-open event stream (peer gone without a FIN) is noticed in about a minute.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        connector.set_keepalive_interval(Some(Duration::from_secs(10)));
        connector.set_keepalive_retries(Some(3));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        HttpClient {
            client,
            auth: auth_header(cfg),
            request_timeout: cfg.request_timeout,
        }
    }

    /// GETs `url` and reads the whole body, following redirects. The request timeout covers
    /// connecting, the headers and the body; bodies over [`MAX_BODY_BYTES`] are refused.
    pub async fn get(&self, url: &str, accept: &'static str) -> Result<Bytes, FetchError> {
        let after = self.request_timeout;
        let work = async {
            let (url, resp) = self.send_following(url, accept).await?;
            read_body(&url, resp).await
        };
        match tokio::time::timeout(after, work).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                url: url.to_string(),
                after,
            }),
        }
    }

    /// Opens a long-lived GET (an SSE stream). The request timeout covers connecting and the
    /// headers only; the caller watches the body for silence.
    pub async fn open_stream(
        &self,
        url: &str,
        accept: &'static str,
    ) -> Result<Incoming, FetchError> {
        let after = self.request_timeout;
        let resp = match tokio::time::timeout(after, self.send_following(url, accept)).await {
            Ok(r) => r?.1,
            Err(_) => {
                return Err(FetchError::Timeout {
                    url: url.to_string(),
                    after,
                });
            }
        };
        Ok(resp.into_body())
    }

    /// Sends a GET, follows up to [`MAX_REDIRECTS`] redirects, and returns the final URL and a
    /// 2xx response.
    async fn send_following(
        &self,
        url: &str,
        accept: &'static str,
    ) -> Result<(String, http::Response<Incoming>), FetchError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send(&url, accept).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok((url, resp));
            }
            if status.is_redirection()
                && let Some(next) = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve_location(&url, l))
            {
                tracing::debug!(from = %url, to = %next, "following redirect");
                url = next;
                continue;
            }
            return Err(FetchError::HttpStatus {
                url,
                status: status.as_u16(),
            });
        }
        Err(FetchError::HttpStatus {
            url,
            status: StatusCode::LOOP_DETECTED.as_u16(),
        })
    }

    async fn send(
        &self,
        url: &str,
        accept: &'static str,
    ) -> Result<http::Response<Incoming>, FetchError> {
        let uri: Uri = url.parse().map_err(|e| FetchError::Invalid {
            url: url.to_string(),
            detail: format!("bad URL: {e}"),
        })?;
        let mut req = Request::get(uri).header(ACCEPT, accept);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req.body(Empty::new()).map_err(|e| FetchError::Invalid {
            url: url.to_string(),
            detail: format!("bad request: {e}"),
        })?;
        self.client.request(req).await.map_err(|e| {
            let detail = error_chain(&e);
            if e.is_connect() {
                FetchError::Connect {
                    url: url.to_string(),
                    detail,
                }
            } else {
                FetchError::Io {
                    url: url.to_string(),
                    detail,
                }
            }
        })
    }
}

/// `Authorization` from the config: a DC/OS token wins over basic credentials (config validation
/// forbids setting both).
fn auth_header(cfg: &DiscoveryConfig) -> Option<HeaderValue> {
    use base64::Engine as _;
    let value = if !cfg.token.is_empty() {
        format!("token={}", cfg.token.expose())
    } else if !cfg.username.is_empty() {
        let raw = format!("{}:{}", cfg.username, cfg.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    } else {
        return None;
    };
    match HeaderValue::from_str(&value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            tracing::warn!(
                "discovery credentials contain characters not allowed in a header; not sent"
            );
            None
        }
    }
}

async fn read_body(url: &str, resp: http::Response<Incoming>) -> Result<Bytes, FetchError> {
    let too_large = || FetchError::Invalid {
        url: url.to_string(),
        detail: format!("answer larger than {MAX_BODY_BYTES} bytes"),
    };
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(FetchError::Io {
            url: url.to_string(),
            detail: error_chain(e.as_ref()),
        }),
    }
}

/// Resolves a `Location` header against the request URL: absolute (`http://h:p/x`),
/// scheme-relative (`//h:p/x`, what Mesos sends) or path-absolute (`/x`).
fn resolve_location(base: &str, location: &str) -> Option<String> {
    let base: Uri = base.parse().ok()?;
    let scheme = base.scheme_str().unwrap_or("http");
    let next = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{}{location}", base.authority()?)
    } else {
        return None;
    };
    next.parse::<Uri>().ok().map(|_| next)
}

/// An error and its sources joined with `: ` (hyper's top-level messages alone say little).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    let mut n = 0;
    while let Some(s) = cur {
        n += 1;
        if n > 8 {
            break;
        }
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://10.0.0.1:5050/master/state";
        assert_eq!(
            resolve_location(base, "//10.0.0.2:5050/master/state").as_deref(),
            Some("http://10.0.0.2:5050/master/state")
        );
        assert_eq!(
            resolve_location(base, "/master/redirect").as_deref(),
            Some("http://10.0.0.1:5050/master/redirect")
        );
        assert_eq!(
            resolve_location(base, "http://h:1/x").as_deref(),
            Some("http://h:1/x")
        );
        assert_eq!(resolve_location(base, "relative/path"), None);
    }

    #[test]
    fn auth_header_prefers_token_and_encodes_basic() {
        let mut cfg = crate::config::Config::default().discovery;
        assert!(auth_header(&cfg).is_none());
        cfg.username = "alice".into();
        cfg.password = crate::config::Secret("s3cret".into());
        // base64("alice:s3cret") = YWxpY2U6czNjcmV0
        assert_eq!(
            auth_header(&cfg).unwrap().to_str().unwrap(),
            "Basic YWxpY2U6czNjcmV0"
        );
        cfg.token = crate::config::Secret("abc.def".into());
        assert_eq!(
            auth_header(&cfg).unwrap().to_str().unwrap(),
            "token=abc.def"
        );
    }
}
