//! One request through the edge: route, access checks, backend pick, forwarding.
//!
//! The request path reads the route table once ([`Shared::table`]) and never takes a lock. It
//! gives Marathon-LB's `HAPROXY_*` labels the meaning of the HAProxy configuration Marathon-LB
//! would generate from them (templates of upstream `config.py`, named in the comments below),
//! in HAProxy's order of evaluation:
//!
//! 0. a request with several `Host` fields, or an HTTP/1.1 one with none, gets 400 and the
//!    connection is closed (RFC 9112 3.2);
//! 1. routing: a per-port frontend sends everything to its backend; the plain vhost router
//!    matches `Host` (else the URI authority: HTTP/2's `:authority`) and the path prefix
//!    (`HTTP_FRONTEND_ACL*`); the TLS router matches the TLS server name instead
//!    (`HTTPS_FRONTEND_ACL*`: `ssl_fc_sni`), or `Host` when the client sent none;
//!    no match → 503, as HAProxy without a default backend;
//! 2. `HAPROXY_{n}_REDIRECT_TO_HTTPS` on the plain vhost router (`BACKEND_REDIRECT_HTTP_TO_HTTPS`,
//!    a frontend rule in upstream, so before any other check) → 301 to `https://`;
//! 3. `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL` (`HTTP_BACKEND_NETWORK_ALLOWED_ACL` +
//!    `HTTP_BACKEND_ACL_ALLOW_DENY`) → 403;
//! 4. `HAPROXY_{n}_AUTH` (`HTTP_FRONTEND_ACL_WITH_AUTH`) → 401. Upstream checks credentials in
//!    the frontend, before the backend's network ACL; here the ACL goes first so that a refused
//!    network cannot make us verify (costly) password hashes, and a refused client learns
//!    nothing of the realm. Upstream applies auth only on the vhost routers; here it applies on
//!    the service-port frontends too (otherwise the port would bypass the password);
//! 5. `HAPROXY_{n}_HTTP_BACKEND_REDIR` (`HTTP_BACKEND_REDIR`: `redirect code 301 location
//!    <path> if is_domain is_root`, the domain being the app's first vhost) → 301;
//! 6. forwarding to a server picked by the backend's balancer (or its sticky cookie), with
//!    `HTTP_BACKEND_PROXYPASS_GLUE`, `HTTP_BACKEND_REVPROXY_GLUE`, `BACKEND_HTTP_OPTIONS`
//!    (`X-Forwarded-*`), `BACKEND_HSTS_OPTIONS` and `BACKEND_STICKY_OPTIONS` applied.
//!
//! Forwarding uses pooled connections (HTTP/1.1: hyper-util's keep-alive pool; HTTP/2 with
//! prior knowledge: one multiplexed connection per server, so that `:authority` is the
//! client's host), streams bodies both ways, relays `Upgrade` (WebSocket) tunnels, and
//! retries idempotent requests without a body on another server when the connect fails
//! (`HAPROXY_HEAD`'s `retries 3` with `option redispatch`). Every failure is answered with a
//! short text body and counted ([`LocalReply`]); nothing waits longer than
//! `l7.request_timeout` for a response head (counted from the last byte of the client's body,
//! so that a long upload is not cut off), nor for the next piece of a streamed body in either
//! direction once it started ([`Idle`], HAProxy's `timeout server`/`timeout client`, which
//! Marathon-LB sets to 50 s and which also apply while a body streams): a stalled body is
//! aborted, never left hanging nor completed as if whole.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http2 as h2_client;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::routes::Backend;
use super::stats::{ActiveGuard, BackendStats, LocalReply};
use super::{ConnInfo, Frontend, Shared, Table};
use crate::config::{BackendProtocol, L7Config};
use crate::health::BackendState;

/// The error of a [`Body`]: hyper's, or [`Stalled`] (hyper's server takes any error that
/// converts into this).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body of the proxy (a backend's streamed body or a short local answer). An error
/// aborts the client's stream: HTTP/1.1 closes the connection (a truncated body is never
/// completed with a final chunk), HTTP/2 resets the stream.
pub type Body = BoxBody<Bytes, BoxError>;

/// Marathon-LB's sticky cookie (`BACKEND_STICKY_OPTIONS`: `cookie mesosphere_server_id insert
/// indirect nocache`).
pub const STICKY_COOKIE: &str = "mesosphere_server_id";

/// `BACKEND_HSTS_OPTIONS`: `rspadd Strict-Transport-Security: max-age=15768000`.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=15768000");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Backend connections idle longer than this are closed (HAProxy closes idle server
/// connections too; backends usually time out around 60 s, and reusing a connection the
/// backend is closing fails the request).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Backend connection pools and the settings of the request path.
pub struct Proxy {
    /// HTTP/1.1 servers: hyper-util's pool (keep-alive connections per `ip:port`).
    http1: Client<HttpConnector, ReqBody>,
    /// HTTP/2 servers get one multiplexed connection each ([`H2Conn`], in [`ServerMeta`]),
    /// opened within this time.
    connect_timeout: Duration,
    /// Per-server values derived from the current table (authorities, sticky cookies), built
    /// on the first request that sees a new table.
    derived: ArcSwapOption<Derived>,
    /// The port of `l7.https` when it is not 443 (for `REDIRECT_TO_HTTPS`).
    https_port: Option<u16>,
}

impl Proxy {
    pub fn new(l7: &L7Config) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(l7.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_headers(l7.max_headers.max(1))
            // One flattened write per request, as on the client side (`server::builders`).
            .http1_writev(false);
        let http1 = builder.build(connector);
        Proxy {
            http1,
            connect_timeout: l7.connect_timeout,
            derived: ArcSwapOption::empty(),
            https_port: l7.https.map(|a| a.port()).filter(|&p| p != 443),
        }
    }

    /// The derived values of `table`, built when the table changed since the last request.
    fn derived(&self, table: &Arc<Table>) -> Arc<Derived> {
        {
            let cur = self.derived.load();
            if let Some(d) = &*cur
                && std::ptr::eq(d.table.as_ptr(), Arc::as_ptr(table))
            {
                return d.clone();
            }
        }
        let prev = self.derived.load_full();
        let d = Arc::new(Derived::build(table, prev.as_deref()));
        self.derived.store(Some(d.clone()));
        d
    }

    /// Sends `req` to an HTTP/2 server over its shared connection, opened when there is none
    /// (or it closed).
    async fn send_h2(
        &self,
        slot: &H2Conn,
        addr: SocketAddr,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = match slot.sender() {
            Some(s) => s,
            None => self.connect_h2(slot, addr).await?,
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Failed {
                client_side: e.is_user() || e.is_body_write_aborted(),
                error: e.into(),
            })
    }

    async fn connect_h2(
        &self,
        slot: &H2Conn,
        addr: SocketAddr,
    ) -> Result<h2_client::SendRequest<ReqBody>, SendError> {
        // Requests arriving while a connect is under way wait for it instead of opening more.
        let _connecting = slot.connecting.lock().await;
        if let Some(s) = slot.sender() {
            return Ok(s);
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| SendError::Connect("connect timed out".into()))?
            .map_err(|e| SendError::Connect(e.into()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = h2_client::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = %addr, error = %e, "HTTP/2 backend connection ended");
            }
        });
        slot.send.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }
}

/// Why a request got no response from a server.
enum SendError {
    /// No connection could be made: the request was not sent (retry elsewhere if idempotent).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed after connecting; `client_side`: because of the client's body.
    Failed {
        client_side: bool,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SendError {
    fn from_legacy(e: hyper_util::client::legacy::Error) -> SendError {
        if e.is_connect() {
            SendError::Connect(e.into())
        } else {
            SendError::Failed {
                client_side: caused_by_client(&e),
                error: e.into(),
            }
        }
    }
}

/// The one HTTP/2 connection to a server, shared by its requests (hyper-util's pool would
/// send the server's address as `:authority`; the client's host must go there, RFC 9113
/// 8.3.1). Kept across tables while the server stays.
#[derive(Default)]
struct H2Conn {
    send: ArcSwapOption<h2_client::SendRequest<ReqBody>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Conn {
    fn sender(&self) -> Option<h2_client::SendRequest<ReqBody>> {
        let cur = self.send.load();
        cur.as_deref().filter(|s| !s.is_closed()).cloned()
    }
}

// === Derived ===

/// Values computed once per table instead of once per request.
struct Derived {
    /// The table these values are for (a `Weak` keeps the allocation, so the pointer cannot be
    /// reused by a later table while this entry lives).
    table: Weak<Table>,
    /// By backend, by server (same order as the table).
    servers: Vec<Box<[ServerMeta]>>,
}

struct ServerMeta {
    addr: SocketAddr,
    /// `ip:port`, the pool key of the server's connections.
    authority: Option<Authority>,
    /// HTTP/2 backends only.
    h2: Option<Arc<H2Conn>>,
    /// Sticky backends only: the cookie value and the `Set-Cookie` that inserts it.
    sticky: Option<([u8; 10], HeaderValue)>,
}

impl Derived {
    fn build(table: &Arc<Table>, prev: Option<&Derived>) -> Derived {
        // HTTP/2 connections of servers that stay are kept.
        let h2_conns: HashMap<SocketAddr, &Arc<H2Conn>> = prev
            .iter()
            .flat_map(|p| p.servers.iter().flat_map(|b| b.iter()))
            .filter_map(|m| m.h2.as_ref().map(|c| (m.addr, c)))
            .collect();
        let servers = table
            .routes
            .backends()
            .iter()
            .zip(&table.backends)
            .map(|(b, rt)| {
                let h2 = rt.protocol == BackendProtocol::H2;
                b.servers
                    .iter()
                    .map(|s| {
                        let addr = SocketAddr::new(s.ip, s.port);
                        ServerMeta {
                            addr,
                            authority: Authority::from_maybe_shared(Bytes::from(addr.to_string()))
                                .ok(),
                            h2: h2.then(|| {
                                h2_conns
                                    .get(&addr)
                                    .map_or_else(Arc::default, |c| Arc::clone(c))
                            }),
                            sticky: b.sticky.then(|| {
                                let value = sticky_value(&s.name);
                                let set = HeaderValue::from_maybe_shared(Bytes::from(format!(
                                    "{STICKY_COOKIE}={}; path=/",
                                    std::str::from_utf8(&value).unwrap_or_default()
                                )))
                                .unwrap_or(HeaderValue::from_static(""));
                                (value, set)
                            }),
                        }
                    })
                    .collect()
            })
            .collect();
        Derived {
            table: Arc::downgrade(table),
            servers,
        }
    }
}

/// marathon_lb.py's `shortHashedServerName`: the first 10 hex digits of sha1(server name).
fn sticky_value(server_name: &str) -> [u8; 10] {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(server_name.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 10];
    for (i, b) in digest.iter().take(5).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

// === handle ===

/// Serves one request that a listener accepted on `conn`.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(serve(&shared, &conn, req).await)
}

async fn serve(shared: &Shared, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    // RFC 9112 3.2: a request with more than one Host is invalid (400); the first and the
    // last could name different vhosts to us and to the backend.
    // An HTTP/1.1 request without one is invalid too (HTTP/1.0 needs none; HTTP/2 has
    // `:authority`). The connection is closed: what follows on it cannot be trusted.
    if has_several_hosts(req.headers())
        || (req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST))
    {
        let mut resp = local(shared, LocalReply::BadRequest, None);
        if req.version() <= Version::HTTP_11 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return resp;
    }
    let table = shared.table.load_full();
    let host = request_host(&req);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());

    // 1. Routing. The TLS router routes by the TLS server name, as Marathon-LB's HTTPS
    // frontend does (`HTTPS_FRONTEND_ACL*`: `use_backend ... if { ssl_fc_sni <vhost> }`), so a
    // connection for one name cannot reach another vhost by its `Host`. A client that sent no
    // SNI (one that dials an IP) is routed by `Host` instead (upstream would answer 503).
    let index = match conn.frontend {
        Frontend::Port(p) => table.routes.port_index(p),
        Frontend::Http => host_str.and_then(|h| table.routes.route_index(h, req.uri().path())),
        Frontend::Https => conn
            .sni
            .as_deref()
            .or(host_str)
            .and_then(|h| table.routes.route_index(h, req.uri().path())),
    };
    let (Some(index), Some(rt)) = (index, index.and_then(|i| table.backends.get(i))) else {
        return local(shared, LocalReply::NoRoute, None);
    };
    let Some(backend) = table.routes.backends().get(index) else {
        return local(shared, LocalReply::NoRoute, None);
    };
    let stats = &rt.stats;

    // 2.-5. Frontend and backend rules answered here.
    if let Some(resp) = admit(shared, conn, backend, stats, &req, host_str) {
        return resp;
    }

    // 6. Forwarding.
    let client_ip = conn.client_ip();
    let _request = stats.request_started();
    let derived = shared.proxy.derived(&table);
    let Some(metas) = derived.servers.get(index) else {
        return local(shared, LocalReply::NoServer, Some(stats));
    };
    let h2_backend = rt.protocol == BackendProtocol::H2;
    let upgrading = !h2_backend && is_upgrade_request(&req);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));

    // Sticky: the server the client's cookie names, when it may take requests.
    let sticky_server = if backend.sticky {
        find_cookie(req.headers(), STICKY_COOKIE).and_then(|v| {
            metas.iter().enumerate().find_map(|(i, m)| {
                let live = m.sticky.as_ref().is_some_and(|(c, _)| c.as_slice() == v)
                    && backend.servers.get(i).is_some_and(|s| s.weight > 0)
                    && rt.states.get(i).is_some_and(|s| s.is_up());
                live.then_some(i)
            })
        })
    } else {
        None
    };

    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    let method_retriable = is_idempotent(&parts.method);
    let body_empty = body.is_end_stream();
    let retriable = method_retriable && body_empty;
    let max_attempts = if retriable {
        1 + shared.l7().retries as usize
    } else {
        1
    };
    let mut body = if body_empty { None } else { Some(body) };

    // Request head toward the backend.
    strip_hop_by_hop(&mut parts.headers, upgrading);
    if upgrading {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if backend.sticky {
        // `indirect` with `insert`: the server never sees the persistence cookie.
        strip_cookie(&mut parts.headers, STICKY_COOKIE);
    }
    add_forwarded(&mut parts.headers, conn, host.as_ref());
    // HTTP_BACKEND_PROXYPASS_GLUE: `http-request set-header Host {hostname}`: with a proxypass
    // path the servers see the app's vhost, whichever host the client used (without a vhost
    // upstream would send `Host: None`; the client's host is kept instead).
    let proxypass_host = backend
        .proxypass_path
        .as_ref()
        .and(backend.hostname.as_deref())
        .and_then(|h| HeaderValue::from_str(h).ok());
    let upstream_host = proxypass_host.as_ref().or(host.as_ref());
    // That host as HTTP/1.1 `Host` (from an HTTP/2 client's `:authority`), or HTTP/2
    // `:authority` (from a `Host`, which is then dropped: both would have to agree).
    let h2_authority = if h2_backend {
        parts.headers.remove(header::HOST);
        upstream_host.and_then(|h| Authority::try_from(h.as_bytes()).ok())
    } else {
        if let Some(h) = proxypass_host.clone() {
            parts.headers.insert(header::HOST, h);
        } else if !parts.headers.contains_key(header::HOST)
            && let Some(h) = &host
        {
            parts.headers.insert(header::HOST, h.clone());
        }
        None
    };
    let pq = {
        let orig = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match backend.proxypass_path.as_deref() {
            Some(prefix) => match proxypass(orig.as_str(), prefix) {
                Some(p) => PathAndQuery::from_maybe_shared(Bytes::from(p)).unwrap_or(orig),
                None => orig,
            },
            None => orig,
        }
    };
    let version = if h2_backend {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let timeout = shared.l7().request_timeout;
    let mut deadline = tokio::time::Instant::from_std(
        start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(86_400)),
    );
    let mut progress: Option<Arc<Progress>> = None;

    let mut tried: Vec<usize> = Vec::new();
    let (resp, server, active) = loop {
        let attempt = tried.len();
        let pick = match sticky_server {
            Some(i) if !tried.contains(&i) => Some(i),
            _ => rt.balancer.pick(client_ip, &rt.states, &tried),
        };
        let (Some(i), Some(state)) = (pick, pick.and_then(|i| rt.states.get(i))) else {
            let kind = if attempt == 0 {
                LocalReply::NoServer
            } else {
                LocalReply::ConnectFailed
            };
            return local(shared, kind, Some(stats));
        };
        let Some(meta) = metas.get(i) else {
            return local(shared, LocalReply::NoServer, Some(stats));
        };
        let Some(authority) = h2_authority.clone().or_else(|| meta.authority.clone()) else {
            return local(shared, LocalReply::NoServer, Some(stats));
        };
        let active = ServerActive::new(state);
        let last = attempt + 1 >= max_attempts;
        let headers = if last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(authority);
        uri_parts.path_and_query = Some(pq.clone());
        let Ok(uri) = Uri::from_parts(uri_parts) else {
            return local(shared, LocalReply::BadGateway, Some(stats));
        };
        let req_body = match body.take() {
            Some(b) => {
                let p = Arc::new(Progress {
                    start,
                    last_ms: AtomicU64::new(0),
                });
                progress = Some(p.clone());
                ReqBody::stream(b, state.clone(), stats.clone(), p, timeout)
            }
            None => ReqBody::empty(),
        };
        let mut out = Request::new(req_body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = version;
        *out.headers_mut() = headers;

        let sent = async {
            match &meta.h2 {
                Some(slot) => shared.proxy.send_h2(slot, meta.addr, out).await,
                None => shared
                    .proxy
                    .http1
                    .request(out)
                    .await
                    .map_err(SendError::from_legacy),
            }
        };
        let mut sent = std::pin::pin!(sent);
        let outcome = loop {
            match tokio::time::timeout_at(deadline, &mut sent).await {
                Ok(r) => break Ok(r),
                Err(elapsed) => {
                    // The timeout counts from the last byte of the client's body.
                    let next = progress
                        .as_ref()
                        .and_then(|p| p.last().checked_add(timeout));
                    match next {
                        Some(next) if next > deadline.into_std() => {
                            deadline = tokio::time::Instant::from_std(next);
                        }
                        _ => break Err(elapsed),
                    }
                }
            }
        };
        match outcome {
            Err(_) => {
                if shared.l7().passive_timeouts {
                    // A failure for outlier detection, not a failed connect (HAProxy's
                    // `econ`, which `connect_failures` feeds).
                    state.report_reset();
                }
                tracing::debug!(backend = %backend.name, server = %state.addr, "no response head in time");
                return local(shared, LocalReply::Timeout, Some(stats));
            }
            Ok(Err(SendError::Connect(e))) => {
                state.report_connect_failure();
                tracing::debug!(backend = %backend.name, server = %state.addr, error = %e, "connect failed");
                tried.push(i);
                if tried.len() < max_attempts {
                    stats.retried();
                    continue;
                }
                return local(shared, LocalReply::ConnectFailed, Some(stats));
            }
            Ok(Err(SendError::Failed { client_side, error })) => {
                // The client's own body failing (an aborted upload) says nothing of the server.
                if !client_side {
                    state.report_reset();
                }
                tracing::debug!(backend = %backend.name, server = %state.addr, error = %error, "backend failed");
                return local(shared, LocalReply::BadGateway, Some(stats));
            }
            Ok(Ok(resp)) => break (resp, i, active),
        }
    };

    let state = active.state().clone();
    let status = resp.status();
    if shared.l7().passive_5xx && status.is_server_error() {
        // As for timeouts: an outlier failure, not a connect error. (`report_reset` lets one
        // success in between clear only the reset mark, so a server failing every other
        // request is ejected too.)
        state.report_reset();
    } else {
        state.report_connect_ok();
    }
    stats.record(status.as_u16(), start.elapsed());

    let mut resp = resp;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client_upgrade) = client_upgrade {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        spawn_tunnel(
            client_upgrade,
            backend_upgrade,
            Meter {
                stats: stats.clone(),
                _request,
                active,
            },
            backend.name.clone(),
        );
        let (mut rparts, _) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers, true);
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        rparts.version = client_version;
        return Response::from_parts(rparts, empty());
    }

    let (mut rparts, rbody) = resp.into_parts();
    rparts.version = client_version;
    strip_hop_by_hop(&mut rparts.headers, false);
    if let Some(root) = backend.revproxy_path.as_deref() {
        rewrite_location(&mut rparts.headers, backend.hostname.as_deref(), root);
    }
    if backend.use_hsts {
        rparts
            .headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
    }
    if backend.sticky {
        // `insert indirect`: a cookie the server sets under our name is removed; ours is
        // inserted unless the client already holds the one for this server.
        strip_set_cookie(&mut rparts.headers, STICKY_COOKIE);
        if sticky_server != Some(server)
            && let Some((_, set)) = metas.get(server).and_then(|m| m.sticky.as_ref())
        {
            rparts.headers.append(header::SET_COOKIE, set.clone());
            // `nocache`: a response that inserts a cookie must not be cached by a shared
            // cache (HAProxy adds `Cache-control: private` to cacheable responses).
            if !is_uncacheable(&rparts.headers) {
                rparts
                    .headers
                    .append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            }
        }
    }
    let body = RespBody {
        inner: rbody,
        meter: Meter {
            stats: stats.clone(),
            _request,
            active,
        },
        idle: Idle::new(timeout),
        passive_timeouts: shared.l7().passive_timeouts,
    };
    Response::from_parts(rparts, BoxBody::new(body))
}

/// Marathon-LB's rules that answer a request without a backend (steps 2 to 5 of the module
/// doc), in order; `None`: forward it.
fn admit(
    shared: &Shared,
    conn: &ConnInfo,
    backend: &Backend,
    stats: &BackendStats,
    req: &Request<Incoming>,
    host_str: Option<&str>,
) -> Option<Response<Body>> {
    // 2. BACKEND_REDIRECT_HTTP_TO_HTTPS: `redirect scheme https code 301 if !{ ssl_fc }`, on
    // the plain vhost router only. Upstream redirects to the default port 443; our TLS
    // listener may be elsewhere, so its port is added when it is not 443.
    if backend.redirect_to_https && conn.frontend == Frontend::Http && !conn.tls {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = https_location(host_str.unwrap_or_default(), shared.proxy.https_port, pq);
        return Some(redirect(
            shared,
            stats,
            StatusCode::MOVED_PERMANENTLY,
            &location,
        ));
    }

    // 3. HTTP_BACKEND_NETWORK_ALLOWED_ACL + HTTP_BACKEND_ACL_ALLOW_DENY.
    let client_ip = conn.client_ip();
    if !backend.network_allowed.is_empty()
        && !backend
            .network_allowed
            .iter()
            .any(|n| n.contains(&client_ip))
    {
        return Some(local(shared, LocalReply::Denied, Some(stats)));
    }

    // 4. HTTP_FRONTEND_ACL_WITH_AUTH: `http-request auth realm "<realm>" if !auth_ok`.
    if let Some(auth) = &backend.auth
        && !shared
            .auth
            .check(auth, req.headers().get(header::AUTHORIZATION))
    {
        let mut resp = local(shared, LocalReply::Unauthorized, Some(stats));
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, www_authenticate(&auth.realm));
        return Some(resp);
    }

    // 5. HTTP_BACKEND_REDIR: `redirect code 301 location <path> if is_domain is_root`, with
    // `is_domain`: `hdr(host) -i {hostname}` (the app's first vhost; never true without one).
    // The port of `Host` is ignored here (`app.example:80` is the same domain), as routing
    // ignores it.
    if let Some(root) = &backend.redirect_root
        && req.uri().path() == "/"
        && let (Some(host), Some(domain)) = (host_str, backend.hostname.as_deref())
        && host_without_port(host).eq_ignore_ascii_case(domain)
    {
        return Some(redirect(shared, stats, StatusCode::MOVED_PERMANENTLY, root));
    }

    // CONNECT asks for a tunnel to an address of the client's choice, not for a resource of
    // the app: refused instead of being relayed to a server as a tunnel.
    if req.method() == Method::CONNECT {
        shared.stats.local_reply(LocalReply::Denied, Some(stats));
        return Some(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed\n",
        ));
    }
    None
}

/// Relays an upgraded connection (WebSocket, h2c, ...) both ways once both sides switched,
/// counting the bytes when it ends.
fn spawn_tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    meter: Meter,
    backend: String,
) {
    tokio::spawn(async move {
        let (client_io, server_io) = match tokio::try_join!(client, server) {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(backend = %backend, error = %e, "upgrade failed");
                return;
            }
        };
        let mut client_io = TokioIo::new(client_io);
        let mut server_io = TokioIo::new(server_io);
        match tokio::io::copy_bidirectional(&mut client_io, &mut server_io).await {
            Ok((up, down)) => meter.add(up, down),
            Err(e) => tracing::debug!(backend = %backend, error = %e, "tunnel ended with an error"),
        }
    });
}

/// Whether a failed exchange failed on the client's side (its request body), not the server's.
fn caused_by_client(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_user() || h.is_body_write_aborted();
        }
        source = err.source();
    }
    false
}

// === local replies ===

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The answer the edge gives itself, counted as `kind`.
fn local(shared: &Shared, kind: LocalReply, backend: Option<&BackendStats>) -> Response<Body> {
    shared.stats.local_reply(kind, backend);
    let (status, msg) = match kind {
        LocalReply::NoRoute => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no backend serves this host/path\n",
        ),
        LocalReply::NoServer => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: no server available\n",
        ),
        LocalReply::ConnectFailed => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: could not connect to a server\n",
        ),
        LocalReply::BadGateway => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the server failed\n",
        ),
        LocalReply::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: the server did not answer in time\n",
        ),
        LocalReply::Denied => (StatusCode::FORBIDDEN, "403 Forbidden\n"),
        LocalReply::Unauthorized => (StatusCode::UNAUTHORIZED, "401 Unauthorized\n"),
        LocalReply::Redirect => (StatusCode::MOVED_PERMANENTLY, ""),
        LocalReply::BadRequest => (StatusCode::BAD_REQUEST, "400 Bad Request\n"),
    };
    text(status, msg)
}

fn redirect(
    shared: &Shared,
    stats: &BackendStats,
    status: StatusCode,
    location: &str,
) -> Response<Body> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return local(shared, LocalReply::BadGateway, Some(stats));
    };
    let mut resp = local(shared, LocalReply::Redirect, Some(stats));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// Appends `text` as an HTTP quoted-string (RFC 9110 §5.6.4): `"` and `\` escaped.
fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn www_authenticate(realm: &str) -> HeaderValue {
    let mut v = String::with_capacity(realm.len() + 16);
    v.push_str("Basic realm=");
    push_quoted(&mut v, realm);
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Basic realm=\"restricted\""))
}

// === pure helpers ===

/// Whether `headers` hold more than one `Host` field.
fn has_several_hosts(headers: &HeaderMap) -> bool {
    headers.get_all(header::HOST).iter().nth(1).is_some()
}

/// The host the client asked for: `Host`, else the URI authority (HTTP/2 clients send
/// `:authority` instead of `Host`; an absolute-form HTTP/1.1 request has both).
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    req.uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

/// `host[:port]` without the port (`[v6]` keeps its brackets).
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// `BACKEND_REDIRECT_HTTP_TO_HTTPS`' target: `https://host[:port]<path?query>`.
fn https_location(host: &str, https_port: Option<u16>, pq: &str) -> String {
    let host = host_without_port(host);
    let mut s = String::with_capacity(host.len() + pq.len() + 16);
    s.push_str("https://");
    s.push_str(host);
    if let Some(p) = https_port {
        let _ = write!(s, ":{p}");
    }
    s.push_str(pq);
    s
}

/// `HTTP_BACKEND_PROXYPASS_GLUE`: `reqirep "^([^ :]*)\ {proxypath}/?(.*)" "\1\ /\2"`: a path
/// starting with the prefix (case-insensitively) loses it and one `/` after it. `None`: no
/// rewrite.
fn proxypass(pq: &str, prefix: &str) -> Option<String> {
    let head = pq.as_bytes().get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    let rest = &pq[prefix.len()..];
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let mut s = String::with_capacity(rest.len() + 1);
    s.push('/');
    s.push_str(rest);
    Some(s)
}

/// `HTTP_BACKEND_REVPROXY_GLUE`: `rspirep "^Location: (https?://{hostname}(:[0-9]+)?)?(/.*)"
/// "Location: {rootpath}"`: a `Location` that is an absolute path, or a URL at the app's host,
/// becomes `rootpath` (the template drops the rest of the path). `hostname` is the app's first
/// vhost ([`Backend::hostname`]), whichever host the client asked for.
fn revproxy_location(location: &[u8], hostname: Option<&str>) -> bool {
    let rest = if location.first() == Some(&b'/') {
        location
    } else {
        let Some(hostname) = hostname else {
            return false;
        };
        let lower = |p: &[u8], pre: &[u8]| {
            p.get(..pre.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(pre))
        };
        let after_scheme = if lower(location, b"http://") {
            &location[7..]
        } else if lower(location, b"https://") {
            &location[8..]
        } else {
            return false;
        };
        if !lower(after_scheme, hostname.as_bytes()) {
            return false;
        }
        let mut rest = &after_scheme[hostname.len()..];
        if rest.first() == Some(&b':') {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            rest = &rest[1 + digits..];
        }
        rest
    };
    rest.first() == Some(&b'/')
}

fn rewrite_location(headers: &mut HeaderMap, hostname: Option<&str>, root: &str) {
    let Some(loc) = headers.get(header::LOCATION) else {
        return;
    };
    if revproxy_location(loc.as_bytes(), hostname)
        && let Ok(v) = HeaderValue::from_str(root)
    {
        headers.insert(header::LOCATION, v);
    }
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1): `Connection` and the fields it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE` (kept as `trailers` when asked for),
/// `Trailer`, `Transfer-Encoding` (hyper frames the body again), and `Upgrade` unless
/// `upgrading` (then `Connection` is set again by the caller).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let mut names = headers.get_all(header::CONNECTION).iter();
    if let Some(first) = names.next().cloned() {
        // Usually one `Connection` line: cloning it is a reference count; more are collected
        // (an empty `collect` does not allocate).
        let more: Vec<HeaderValue> = names.cloned().collect();
        headers.remove(header::CONNECTION);
        for v in std::iter::once(first).chain(more) {
            let Ok(s) = v.to_str() else { continue };
            for name in s.split(',') {
                let name = name.trim();
                if name.is_empty() || (upgrading && name.eq_ignore_ascii_case("upgrade")) {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(n);
                }
            }
        }
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    if let Some(te) = headers.remove(header::TE) {
        let trailers = te.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if !upgrading {
        headers.remove(header::UPGRADE);
    }
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// RFC 9110 idempotent methods: safe to send again after a failed connect.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `BACKEND_HTTP_OPTIONS` (`option forwardfor`, `X-Forwarded-Port %[dst_port]`,
/// `X-Forwarded-Proto`) and RFC 7239 `Forwarded`. `X-Forwarded-For` and `Forwarded` are
/// appended (a proxy in front keeps its entries); proto and port are set (a client cannot
/// claim `https`).
fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>) {
    let values = forwarded_values(conn.client_ip(), conn.tls, conn.local.port(), host);
    headers.append(X_FORWARDED_FOR, values.xff);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    headers.insert(X_FORWARDED_PORT, values.port);
    headers.append(header::FORWARDED, values.forwarded);
}

#[derive(Clone)]
struct ForwardedValues {
    xff: HeaderValue,
    port: HeaderValue,
    forwarded: HeaderValue,
}

#[derive(Clone, PartialEq, Eq)]
struct ForwardedKey {
    ip: IpAddr,
    tls: bool,
    port: u16,
    host: Option<HeaderValue>,
}

thread_local! {
    /// The last forwarded values built on this thread: consecutive requests of a keep-alive
    /// connection (and of a benchmark's clients) share them, saving three header allocations.
    static LAST_FORWARDED: RefCell<Option<(ForwardedKey, ForwardedValues)>> =
        const { RefCell::new(None) };
}

fn forwarded_values(
    ip: IpAddr,
    tls: bool,
    port: u16,
    host: Option<&HeaderValue>,
) -> ForwardedValues {
    LAST_FORWARDED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some((k, v)) = &*cell
            && k.ip == ip
            && k.tls == tls
            && k.port == port
            && k.host.as_ref() == host
        {
            return v.clone();
        }
        let values = ForwardedValues {
            xff: header_value(ip.to_string()),
            port: HeaderValue::from(port),
            forwarded: header_value(forwarded_element(
                ip,
                if tls { "https" } else { "http" },
                host.and_then(|h| h.to_str().ok()),
            )),
        };
        *cell = Some((
            ForwardedKey {
                ip,
                tls,
                port,
                host: host.cloned(),
            },
            values.clone(),
        ));
        values
    })
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(s)).unwrap_or(HeaderValue::from_static(""))
}

/// One RFC 7239 element: `for=<ip>;proto=<p>[;host=<h>]`; an IPv6 address is bracketed and
/// quoted, a host that is not a token (a `:port`) is quoted.
fn forwarded_element(ip: IpAddr, proto: &str, host: Option<&str>) -> String {
    let mut s = String::with_capacity(64);
    match ip {
        IpAddr::V4(v4) => {
            let _ = write!(s, "for={v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(s, "for=\"[{v6}]\"");
        }
    }
    let _ = write!(s, ";proto={proto}");
    if let Some(h) = host {
        let token = !h.is_empty()
            && h.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
        if token {
            let _ = write!(s, ";host={h}");
        } else {
            s.push_str(";host=");
            push_quoted(&mut s, h);
        }
    }
    s
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 may split them).
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|v| cookie_in(v.as_bytes(), name))
}

fn cookie_in<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    line.split(|&c| c == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&c| c == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// Removes cookie `name` from the `Cookie` headers (the others are kept, in order); a header
/// left empty is dropped. Allocates only when the cookie is present.
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    if find_cookie(headers, name).is_none() {
        return;
    }
    let old: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    headers.remove(header::COOKIE);
    for v in old {
        if cookie_in(v.as_bytes(), name).is_none() {
            headers.append(header::COOKIE, v);
            continue;
        }
        let mut kept: Vec<&[u8]> = Vec::new();
        for pair in v.as_bytes().split(|&c| c == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let n = pair
                .iter()
                .position(|&c| c == b'=')
                .map_or(pair, |eq| pair[..eq].trim_ascii());
            if n != name.as_bytes() {
                kept.push(pair);
            }
        }
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..]))
        {
            headers.append(header::COOKIE, v);
        }
    }
}

/// Removes `Set-Cookie` headers of the server that set cookie `name` (`insert` without
/// `preserve`).
fn strip_set_cookie(headers: &mut HeaderMap, name: &str) {
    let sets_ours = |v: &HeaderValue| {
        let b = v.as_bytes();
        let eq = b.iter().position(|&c| c == b'=').unwrap_or(b.len());
        b[..eq].trim_ascii() == name.as_bytes()
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(sets_ours) {
        return;
    }
    let old: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in old.into_iter().filter(|v| !sets_ours(v)) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Whether `Cache-Control` already keeps shared caches from storing the response.
fn is_uncacheable(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|d| {
                let d = d.trim();
                d.eq_ignore_ascii_case("private")
                    || d.eq_ignore_ascii_case("no-cache")
                    || d.eq_ignore_ascii_case("no-store")
            })
        })
    })
}

// === bodies ===

/// Keeps a server's `active` count raised while a request to it is in flight (until its
/// response body ends or is dropped); counts the request in `total`.
struct ServerActive(Arc<BackendState>);

impl ServerActive {
    fn new(state: &Arc<BackendState>) -> ServerActive {
        state.active.fetch_add(1, Ordering::Relaxed);
        state.total.fetch_add(1, Ordering::Relaxed);
        ServerActive(state.clone())
    }

    fn state(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for ServerActive {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body sent to a backend: the client's streamed body, counted, or nothing.
struct ReqBody {
    inner: Option<Upload>,
}

struct Upload {
    body: Incoming,
    state: Arc<BackendState>,
    stats: Arc<BackendStats>,
    progress: Arc<Progress>,
    /// A client that stops sending its body mid-way is cut off after `l7.request_timeout`
    /// (the backend would otherwise hold the request open until its own timeout).
    idle: Idle,
}

/// When the client's body last moved: the response-head timeout runs from then, so that a
/// long upload that keeps moving is not cut off.
struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last body frame.
    last_ms: AtomicU64,
}

impl Progress {
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl ReqBody {
    fn empty() -> ReqBody {
        ReqBody { inner: None }
    }

    fn stream(
        body: Incoming,
        state: Arc<BackendState>,
        stats: Arc<BackendStats>,
        progress: Arc<Progress>,
        timeout: Duration,
    ) -> ReqBody {
        ReqBody {
            inner: Some(Upload {
                body,
                state,
                stats,
                progress,
                idle: Idle::new(timeout),
            }),
        }
    }
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(up) = &mut self.get_mut().inner else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(&mut up.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(other) => {
                up.idle.moved();
                return Poll::Ready(other.map(|r| r.map_err(BoxError::from)));
            }
            Poll::Pending => {
                return match up.idle.poll_expired(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(backend = %up.stats.name(), server = %up.state.addr, "the client's body stalled");
                        Poll::Ready(Some(Err(Stalled::Client.into())))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        up.idle.moved();
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            up.state.bytes_in.fetch_add(n, Ordering::Relaxed);
            up.stats.add_bytes(n, 0);
            let ms = up.progress.start.elapsed().as_millis();
            up.progress
                .last_ms
                .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|u| u.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(u) => u.body.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// What a forwarded request holds until its response (or tunnel) ends: the backend's and the
/// server's active gauges, and where to count bytes.
struct Meter {
    stats: Arc<BackendStats>,
    _request: ActiveGuard,
    active: ServerActive,
}

impl Meter {
    fn add(&self, from_client: u64, to_client: u64) {
        let state = self.active.state();
        if from_client != 0 {
            state.bytes_in.fetch_add(from_client, Ordering::Relaxed);
        }
        if to_client != 0 {
            state.bytes_out.fetch_add(to_client, Ordering::Relaxed);
        }
        self.stats.add_bytes(from_client, to_client);
    }
}

/// The body returned to the client: the backend's streamed body, counted; holds the request's
/// active gauges until it ends. A server that stops sending it for `l7.request_timeout` gets
/// the body aborted ([`Stalled::Server`]).
struct RespBody {
    inner: Incoming,
    meter: Meter,
    idle: Idle,
    /// `l7.passive_timeouts`: a stalled body counts against the server.
    passive_timeouts: bool,
}

impl HttpBody for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(other) => {
                this.idle.moved();
                return Poll::Ready(other.map(|r| r.map_err(BoxError::from)));
            }
            Poll::Pending => {
                return match this.idle.poll_expired(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(this.stalled()))),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        this.idle.moved();
        if let Some(data) = frame.data_ref() {
            this.meter.add(0, data.len() as u64);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl RespBody {
    /// The server stalled mid-body: counted once (HAProxy's `eresp`; the response's status
    /// was already recorded), and as a failed request for outlier detection when configured.
    fn stalled(&mut self) -> BoxError {
        if !self.idle.reported {
            self.idle.reported = true;
            self.meter.stats.body_timeout();
            let state = self.meter.active.state();
            if self.passive_timeouts {
                state.report_reset();
            }
            tracing::debug!(backend = %self.meter.stats.name(), server = %state.addr, "the server's body stalled");
        }
        Stalled::Server.into()
    }
}

/// Why a streamed body was aborted.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Stalled {
    #[error("the server sent no body data for l7.request_timeout")]
    Server,
    #[error("the client sent no body data for l7.request_timeout")]
    Client,
}

/// Inactivity limit of a streamed body: time spent waiting for its next frame, counted from
/// the first poll that finds none (the time between handing out a frame and the next poll is
/// the reader's: a slow client reading a response is not the server's stall).
///
/// Cheap on the data path: no timer exists until a poll has to wait; a frame costs no timer
/// update (the one timer is re-armed only when it fires before the current limit, i.e. at most
/// once per `limit` while data flows) and one clock read per wait that follows a frame.
struct Idle {
    limit: Duration,
    /// When the current wait began; `None` right after a frame.
    since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The stall was counted (a body polled again after its error is not counted twice).
    reported: bool,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        Idle {
            limit,
            since: None,
            timer: None,
            reported: false,
        }
    }

    /// The source gave a frame (or ended): the next wait starts a new period.
    fn moved(&mut self) {
        self.since = None;
    }

    /// The source has no frame: `Ready` when it has had none for `limit`; otherwise the
    /// timer is armed to wake the task when it will have.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        let deadline = since
            .checked_add(self.limit)
            .unwrap_or_else(|| since + Duration::from_secs(86_400 * 365));
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Armed for an earlier wait: move it to this one's limit and wait on.
                Poll::Ready(()) if timer.deadline() < deadline => {
                    timer.as_mut().reset(deadline);
                }
                Poll::Ready(()) => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn hop_by_hop_headers_are_removed_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, hv("keep-alive, X-Secret"));
        h.append(header::CONNECTION, hv("x-other"));
        h.insert("x-secret", hv("1"));
        h.insert("x-other", hv("1"));
        h.insert(KEEP_ALIVE, hv("timeout=5"));
        h.insert(PROXY_CONNECTION, hv("keep-alive"));
        h.insert(header::TE, hv("gzip, trailers"));
        h.insert(header::TRAILER, hv("x-sum"));
        h.insert(header::TRANSFER_ENCODING, hv("chunked"));
        h.insert(header::UPGRADE, hv("websocket"));
        h.insert("x-kept", hv("yes"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"], "{h:?}");
        assert_eq!(h[header::TE], "trailers");

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, hv("Upgrade"));
        h.insert(header::UPGRADE, hv("websocket"));
        h.insert(header::TE, hv("gzip"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE), Some(&hv("websocket")));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::TE));
    }

    #[test]
    fn forwarded_elements_follow_rfc_7239() {
        let v4: IpAddr = "192.0.2.60".parse().unwrap();
        let v6: IpAddr = "2001:db8:cafe::17".parse().unwrap();
        assert_eq!(
            forwarded_element(v4, "http", Some("example.com")),
            "for=192.0.2.60;proto=http;host=example.com"
        );
        assert_eq!(
            forwarded_element(v6, "https", Some("example.com:8443")),
            "for=\"[2001:db8:cafe::17]\";proto=https;host=\"example.com:8443\""
        );
        assert_eq!(
            forwarded_element(v4, "http", None),
            "for=192.0.2.60;proto=http"
        );
    }

    #[test]
    fn several_hosts_are_refused() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, hv("a.example"));
        assert!(!has_several_hosts(&h));
        h.append(header::HOST, hv("b.example"));
        assert!(has_several_hosts(&h));
        assert!(!has_several_hosts(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let conn = ConnInfo {
            frontend: Frontend::Https,
            client: "[::ffff:10.1.2.3]:5555".parse().unwrap(),
            local: "0.0.0.0:8443".parse().unwrap(),
            tls: true,
            sni: Some("app.example".into()),
        };
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, hv("1.1.1.1"));
        h.insert(X_FORWARDED_PROTO, hv("http"));
        let host = hv("a.example");
        add_forwarded(&mut h, &conn, Some(&host));
        let xff: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(xff, [hv("1.1.1.1"), hv("10.1.2.3")]);
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_PORT], "8443");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.1.2.3;proto=https;host=a.example"
        );
        // A second request with another host does not reuse the cached values.
        let mut h2 = HeaderMap::new();
        add_forwarded(&mut h2, &conn, Some(&hv("b.example")));
        assert_eq!(
            h2[header::FORWARDED],
            "for=10.1.2.3;proto=https;host=b.example"
        );
    }

    #[test]
    fn proxypass_strips_the_prefix_as_reqirep() {
        assert_eq!(
            proxypass("/test/foo?x=1", "/test").as_deref(),
            Some("/foo?x=1")
        );
        assert_eq!(proxypass("/test", "/test").as_deref(), Some("/"));
        assert_eq!(proxypass("/test?x=1", "/test").as_deref(), Some("/?x=1"));
        assert_eq!(proxypass("/TEST/a", "/test").as_deref(), Some("/a"));
        // The template's regex has no boundary after the prefix.
        assert_eq!(proxypass("/testing", "/test").as_deref(), Some("/ing"));
        assert_eq!(proxypass("/test/foo", "/test/").as_deref(), Some("/foo"));
        assert_eq!(proxypass("/other", "/test"), None);
        assert_eq!(proxypass("/te", "/test"), None);
    }

    #[test]
    fn revproxy_rewrites_locations_at_the_app() {
        let host = Some("app.example.com");
        assert!(revproxy_location(b"/login", host));
        assert!(revproxy_location(b"http://app.example.com/x", host));
        assert!(revproxy_location(b"https://APP.example.com:8080/x", host));
        assert!(!revproxy_location(b"https://other.example.com/x", host));
        assert!(!revproxy_location(b"http://app.example.com.evil/x", host));
        assert!(!revproxy_location(b"http://app.example.com", host));
        assert!(!revproxy_location(b"relative", host));
        assert!(!revproxy_location(b"http://app.example.com/x", None));

        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, hv("http://app.example.com:80/deep/path"));
        rewrite_location(&mut h, host, "/my/content");
        assert_eq!(h[header::LOCATION], "/my/content");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, hv("https://elsewhere/"));
        rewrite_location(&mut h, host, "/my/content");
        assert_eq!(h[header::LOCATION], "https://elsewhere/");
    }

    #[test]
    fn cookies_are_found_and_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            hv("a=1; mesosphere_server_id=0123456789 ;b=2"),
        );
        h.append(header::COOKIE, hv("c=3"));
        assert_eq!(find_cookie(&h, STICKY_COOKIE), Some(&b"0123456789"[..]));
        assert_eq!(find_cookie(&h, "c"), Some(&b"3"[..]));
        assert_eq!(find_cookie(&h, "mesosphere"), None);
        strip_cookie(&mut h, STICKY_COOKIE);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, [hv("a=1; b=2"), hv("c=3")]);

        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, hv("mesosphere_server_id=x"));
        strip_cookie(&mut h, STICKY_COOKIE);
        assert!(!h.contains_key(header::COOKIE));

        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, hv("mesosphere_server_id=evil; path=/"));
        h.append(header::SET_COOKIE, hv("session=1"));
        strip_set_cookie(&mut h, STICKY_COOKIE);
        let all: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(all, [hv("session=1")]);
    }

    #[test]
    fn sticky_value_is_marathon_lbs_short_hash() {
        // hashlib.sha1(b"10_0_0_1_31000").hexdigest()[:10]
        let v = sticky_value("10_0_0_1_31000");
        use sha1::{Digest, Sha1};
        let full: String = Sha1::digest(b"10_0_0_1_31000")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(std::str::from_utf8(&v).unwrap(), &full[..10]);
        assert_eq!(
            std::str::from_utf8(&sticky_value("abc")).unwrap(),
            "a9993e3647"
        );
    }

    #[test]
    fn https_redirect_target() {
        assert_eq!(
            https_location("a.example:80", None, "/p?q=1"),
            "https://a.example/p?q=1"
        );
        assert_eq!(
            https_location("a.example", Some(8443), "/"),
            "https://a.example:8443/"
        );
        assert_eq!(
            https_location("[::1]:80", Some(8443), "/x"),
            "https://[::1]:8443/x"
        );
    }

    #[test]
    fn request_host_is_host_else_authority() {
        let r = Request::builder()
            .uri("/p")
            .header(header::HOST, "h.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), Some(hv("h.example")));
        let r = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://a.example:8443/p")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), Some(hv("a.example:8443")));
        let r = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://a.example:8443/p")
            .header(header::HOST, "h.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), Some(hv("h.example")));
        let r = Request::builder().uri("/p").body(()).unwrap();
        assert_eq!(request_host(&r), None);
    }

    #[test]
    fn upgrade_and_idempotency() {
        let r = Request::builder()
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade_request(&r));
        let r = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade_request(&r));
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }

    #[test]
    fn www_authenticate_quotes_the_realm() {
        assert_eq!(
            www_authenticate("my \"realm\""),
            "Basic realm=\"my \\\"realm\\\"\""
        );
    }
}

#[cfg(test)]
mod e2e;
