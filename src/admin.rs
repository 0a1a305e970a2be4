//! Admin HTTP API on `admin.listen`: `/healthz`, `/readyz`, `/v1/version`, `/v1/config`,
//! `/v1/vips`, `/metrics`, and the Mesos-DNS HTTP API (`/v1/hosts/{host}`,
//! `/v1/services/{service}`, `/v1/enumerate`, `/v1/axfr`, rendered by `dns::api`), and
//! Marathon-LB's endpoints of its `stats` listener (port 9090): `/_haproxy_health_check`,
//! `/_haproxy_getpids` and `/haproxy?stats;csv` (rendered by `l7::stats`), which Marathon-LB's
//! health checks and its blue/green tool `zdd.py` call; see ARCHITECTURE.md, "HTTP endpoints".
//!
//! Owns the admin listener's connections: [`serve`] takes a listener `main` bound, caps
//! connections with a semaphore acquired *before* `accept` (a full server stops accepting), bounds
//! header size and header read time, keeps every connection task in a `JoinSet` and stops them
//! gracefully when the shutdown token fires (in-flight requests finish, idle connections close,
//! stragglers are aborted after [`SHUTDOWN_GRACE`]).
//!
//! Reads the published [`Snapshot`] and DNS records (one `load()` per request) and the
//! [`Config`]; imports `model`, `config`, `dns::api` (pure rendering), the `metrics` leaf and
//! the L7 edge's statistics (`l7::Shared::stats`, read-only); never another data path. Writes
//! nothing.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{Protocol, Snapshot, Snapshots};

/// Most admin connections served at once; the next `accept` waits for a free slot.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its complete request head within this time (also bounds idle keep-alive).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers) accepted; larger gets 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Consecutive failed `accept` calls (other than per-connection errors) before `serve` gives up.
const MAX_ACCEPT_FAILURES: u32 = 10;

/// Project URL reported by `/v1/version` (Mesos-DNS reports its repository there).
pub const PROJECT_URL: &str = "https://github.com/ferryman-lb/ferryman";
/// Content type of `/metrics` (Prometheus text exposition format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const CSV: &str = "text/csv; charset=utf-8";
/// What HAProxy's `monitor-uri` answers while the process is up (its `HTTP_ERR_200` message).
pub const HAPROXY_MONITOR_BODY: &str =
    "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n";

type Body = Full<Bytes>;

struct AdminState {
    snapshots: Snapshots,
    config: Arc<Config>,
    /// The DNS record set being served (Mesos-DNS HTTP API).
    records: crate::dns::RecordsHandle,
    /// Live backend health and counters (`/v1/vips`).
    health: crate::health::Registry,
    /// The L7 edge (Marathon-LB compatible endpoints).
    l7: Arc<crate::l7::Shared>,
}

// === serve ===

/// Serves the admin API on `listener` until `shutdown` fires, then lets open requests finish (at
/// most [`SHUTDOWN_GRACE`]) and returns. Fails only when `accept` keeps failing
/// ([`MAX_ACCEPT_FAILURES`] times in a row, with backoff).
pub async fn serve(
    listener: TcpListener,
    snapshots: Snapshots,
    config: Arc<Config>,
    records: crate::dns::RecordsHandle,
    health: crate::health::Registry,
    l7: Arc<crate::l7::Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let state = Arc::new(AdminState {
        snapshots,
        config,
        records,
        health,
        l7,
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut failures = 0u32;
    let result = loop {
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}

        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            p = limit.clone().acquire_owned() => p.expect("the admin semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures = 0;
                conns.spawn(serve_connection(
                    stream,
                    peer,
                    state.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "admin accept: connection failed before accept");
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_ACCEPT_FAILURES {
                    tracing::error!(error = %e, failures, "admin accept keeps failing; giving up");
                    break Err(e);
                }
                let backoff = Duration::from_millis(50u64 << failures.min(6));
                tracing::warn!(error = %e, failures, backoff = ?backoff, "admin accept failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    };
    drop(listener);

    // Connection tasks saw the same token and are closing gracefully; give them the grace period
    // (plus a little for the close itself), then abort the rest.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = conns.len(),
            "admin connections still open after the grace period; aborting"
        );
        conns.shutdown().await;
    }
    result
}

/// Errors that concern one incoming connection only; `accept` can go on at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, &req)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
                }
                Err(_) => tracing::debug!(peer = %peer, "admin connection closed after the grace period"),
            }
        }
    }
}

// === routing ===

/// The admin endpoints. Path parameters are still percent-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Version,
    ConfigJson,
    Vips,
    Metrics,
    /// Mesos-DNS `/v1/hosts/{host}`.
    Hosts(&'a str),
    /// Mesos-DNS `/v1/hosts/{host}/ports`: routed but not implemented there (501).
    HostPorts,
    /// Mesos-DNS `/v1/services/{service}`.
    Services(&'a str),
    /// Mesos-DNS `/v1/enumerate`.
    Enumerate,
    /// Mesos-DNS `/v1/axfr`.
    Axfr,
    /// Marathon-LB's `monitor-uri /_haproxy_health_check` (its `stats` listener on 9090).
    HaproxyHealthCheck,
    /// Marathon-LB's `/_haproxy_getpids` (`getpids.lua`): `zdd.py` polls it and waits while
    /// more than one HAProxy process runs (a reload in progress); we never reload, so it is
    /// always our one pid.
    HaproxyGetPids,
    /// HAProxy's `stats uri` CSV export, `/haproxy?stats;csv` (`zdd.py` reads it).
    HaproxyStatsCsv,
}

impl<'a> Route<'a> {
    /// The route of a request URI: [`Route::from_path`], and HAProxy's stats page, which is
    /// told apart by its query (`/haproxy?stats;csv`, also with `;norefresh`).
    fn from_uri(uri: &'a http::Uri) -> Option<Route<'a>> {
        if uri.path() == "/haproxy" {
            return match uri.query() {
                Some("stats;csv" | "stats;csv;norefresh") => Some(Route::HaproxyStatsCsv),
                _ => None,
            };
        }
        Route::from_path(uri.path())
    }

    fn from_path(path: &'a str) -> Option<Route<'a>> {
        Some(match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/v1/version" => Route::Version,
            "/v1/config" => Route::ConfigJson,
            "/v1/vips" => Route::Vips,
            "/metrics" => Route::Metrics,
            "/v1/enumerate" => Route::Enumerate,
            "/v1/axfr" => Route::Axfr,
            "/_haproxy_health_check" => Route::HaproxyHealthCheck,
            "/_haproxy_getpids" => Route::HaproxyGetPids,
            _ => {
                // One non-empty segment per parameter, as go-restful matches `{host}`.
                let segment =
                    |rest: &'a str| (!rest.is_empty() && !rest.contains('/')).then_some(rest);
                if let Some(rest) = path.strip_prefix("/v1/hosts/") {
                    if let Some(host) = rest.strip_suffix("/ports") {
                        segment(host)?;
                        Route::HostPorts
                    } else {
                        Route::Hosts(segment(rest)?)
                    }
                } else if let Some(rest) = path.strip_prefix("/v1/services/") {
                    Route::Services(segment(rest)?)
                } else {
                    return None;
                }
            }
        })
    }
}

/// Answers one request. Unknown path: 404; known path with a method other than GET/HEAD: 405
/// (hyper leaves the body out of HEAD answers).
fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Body> {
    let Some(route) = Route::from_uri(req.uri()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match route {
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz => {
            if state.snapshots.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no snapshot published yet\n",
                )
            }
        }
        Route::Version => json(StatusCode::OK, version_json()),
        Route::ConfigJson => match serde_json::to_string_pretty(&*state.config) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the config");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot serialise the config\n",
                )
            }
        },
        Route::Vips => json(
            StatusCode::OK,
            vips_json(&state.snapshots.load(), &state.health.snapshot_view()),
        ),
        Route::Metrics => respond(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            crate::metrics::metrics().render(),
        ),
        Route::HaproxyHealthCheck => {
            let mut resp = respond(
                StatusCode::OK,
                "text/html",
                HAPROXY_MONITOR_BODY.to_string(),
            );
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        Route::HaproxyGetPids => {
            respond(StatusCode::OK, "text/plain", std::process::id().to_string())
        }
        Route::HaproxyStatsCsv => respond(StatusCode::OK, CSV, state.l7.stats.csv()),
        Route::HostPorts => text(StatusCode::NOT_IMPLEMENTED, "To be implemented...\n"),
        Route::Hosts(_) | Route::Services(_) | Route::Enumerate | Route::Axfr => {
            mesos_dns(state, route)
        }
    }
}

/// The Mesos-DNS HTTP API routes. Before the first record set is published: 503 (the DNS server
/// answers SERVFAIL then; an empty answer would claim the names do not exist). A parameter that
/// is not valid percent-encoded UTF-8: 400.
fn mesos_dns(state: &AdminState, route: Route<'_>) -> Response<Body> {
    let Some(records) = state.records.load_full() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no DNS records published yet\n",
        );
    };
    let decode = |param: &str| crate::dns::api::decode_segment(param);
    let body = match route {
        Route::Hosts(host) => match decode(host) {
            Some(host) => crate::dns::api::hosts_json(&records, &host),
            None => return text(StatusCode::BAD_REQUEST, "bad host name\n"),
        },
        Route::Services(service) => match decode(service) {
            Some(service) => crate::dns::api::services_json(&records, &service),
            None => return text(StatusCode::BAD_REQUEST, "bad service name\n"),
        },
        Route::Enumerate => crate::dns::api::enumerate_json(&records),
        Route::Axfr => crate::dns::api::axfr_json(&records, &state.config),
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    json(StatusCode::OK, body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, TEXT, body.to_string())
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    respond(status, JSON, body)
}

// === rendering ===

/// `/v1/version`, in Mesos-DNS's shape (`{"Service","Version","URL"}`).
pub fn version_json() -> String {
    #[derive(Serialize)]
    struct Version {
        #[serde(rename = "Service")]
        service: &'static str,
        #[serde(rename = "Version")]
        version: &'static str,
        #[serde(rename = "URL")]
        url: &'static str,
    }
    serde_json::to_string(&Version {
        service: "ferryman",
        version: env!("CARGO_PKG_VERSION"),
        url: PROJECT_URL,
    })
    .expect("a struct of strings always serialises")
}

/// One `/v1/vips` entry: one (protocol, VIP, port). Fields may be added, never renamed.
#[derive(Debug, Serialize)]
struct VipView<'a> {
    protocol: Protocol,
    ip: IpAddr,
    port: u16,
    /// DNS name of a named VIP; `null` for an IP VIP.
    name: Option<&'a str>,
    backends: Vec<BackendView>,
    /// What serves the VIP for local clients: `ebpf` (the kernel fast path), `userspace` (the
    /// proxy), `off` (`l4.mode = "off"`).
    path: crate::fastpath::Path,
    /// Why not `ebpf` (`null` when it is).
    path_reason: Option<&'a str>,
}

/// `path_reason` of a VIP the fast path's maps refused.
const REFUSED_REASON: &str = "the fast path's maps are full (l4.max_services or l4.max_backends): served by the user-space path";

#[derive(Debug, Serialize)]
struct BackendView {
    ip: IpAddr,
    port: u16,
    weight: u32,
    health: &'static str,
    active: u64,
}

/// The `/v1/vips` JSON array for `snapshot`, in the snapshot's (sorted) order, with each backend's
/// live health (`up`, or `down` when ejected or failed by active checks) and active connections
/// from `health` (a backend it does not know, e.g. with L4 off: `up`, 0), and the path that
/// serves it (the published fast path status).
pub fn vips_json(snapshot: &Snapshot, health: &crate::health::HealthView) -> String {
    vips_json_with(snapshot, health, &crate::fastpath::status())
}

/// The path serving `vip` and why it is not the fast path (`None` when it is).
fn vip_path(
    fastpath: &crate::fastpath::Status,
    vip: crate::model::VipKey,
) -> (crate::fastpath::Path, Option<&str>) {
    use crate::fastpath::{Path, layout};
    match fastpath.path {
        Path::Ebpf => {
            let proto = match vip.protocol {
                Protocol::Tcp => layout::IPPROTO_TCP,
                Protocol::Udp => layout::IPPROTO_UDP,
            };
            if fastpath
                .refused
                .contains(&layout::ServiceKey::new(vip.ip, vip.port, proto))
            {
                (Path::Userspace, Some(REFUSED_REASON))
            } else {
                (Path::Ebpf, None)
            }
        }
        other => (other, Some(fastpath.reason.as_deref().unwrap_or(""))),
    }
}

/// [`vips_json`] with the fast path status given.
pub fn vips_json_with(
    snapshot: &Snapshot,
    health: &crate::health::HealthView,
    fastpath: &crate::fastpath::Status,
) -> String {
    let view: Vec<VipView<'_>> = snapshot
        .vips
        .iter()
        .map(|v| {
            let (path, path_reason) = vip_path(fastpath, v.key);
            VipView {
                protocol: v.key.protocol,
                ip: v.key.ip,
                port: v.key.port,
                name: v.name.as_deref(),
                path,
                path_reason,
                backends: v
                    .backends
                    .iter()
                    .map(|b| {
                        let live = health.get(b.id);
                        BackendView {
                            ip: b.ip,
                            port: b.port,
                            weight: b.weight,
                            health: match live {
                                Some(v) if !v.health.is_up() => "down",
                                _ => "up",
                            },
                            active: live.map_or(0, |v| u64::from(v.active)),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    serde_json::to_string(&view).expect("VIP views (strings, numbers, IPs) always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, BackendId, ClusterState, Publisher, UpdateKind, Vip, VipKey};

    fn backend(ip: &str, port: u16, weight: u32) -> Backend {
        Backend {
            id: BackendId(u64::from(port)),
            ip: ip.parse().unwrap(),
            port,
            weight,
            task_id: format!("task-{port}").into(),
            app_id: Some("/web".into()),
            agent_ip: None,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: 3,
            vips: vec![
                Vip {
                    key: VipKey {
                        protocol: Protocol::Tcp,
                        ip: "10.10.0.1".parse().unwrap(),
                        port: 5000,
                    },
                    name: None,
                    label: None,
                    backends: vec![backend("127.0.0.1", 8003, 1)],
                }
                .into(),
                Vip {
                    key: VipKey {
                        protocol: Protocol::Tcp,
                        ip: "11.125.3.7".parse().unwrap(),
                        port: 80,
                    },
                    name: Some("web.marathon.l4lb.thisdcos.directory".into()),
                    label: None,
                    backends: vec![
                        backend("10.0.2.234", 31000, 1),
                        backend("10.0.2.235", 31001, 0),
                    ],
                }
                .into(),
                Vip {
                    key: VipKey {
                        protocol: Protocol::Udp,
                        ip: "fd01:c::5".parse().unwrap(),
                        port: 53,
                    },
                    name: Some("dns.marathon.l4lb.thisdcos.directory".into()),
                    label: None,
                    backends: vec![],
                }
                .into(),
            ],
            ..Snapshot::default()
        }
    }

    fn userspace(reason: &str) -> crate::fastpath::Status {
        crate::fastpath::Status {
            path: crate::fastpath::Path::Userspace,
            reason: Some(reason.into()),
            refused: Default::default(),
        }
    }

    #[test]
    fn vips_render_in_the_contract_shape() {
        let got: serde_json::Value = serde_json::from_str(&vips_json_with(
            &snapshot(),
            &Default::default(),
            &userspace("l4.mode = userspace"),
        ))
        .unwrap();
        let want = serde_json::json!([
            {"protocol": "tcp", "ip": "10.10.0.1", "port": 5000, "name": null,
             "backends": [{"ip": "127.0.0.1", "port": 8003, "weight": 1, "health": "up", "active": 0}],
             "path": "userspace", "path_reason": "l4.mode = userspace"},
            {"protocol": "tcp", "ip": "11.125.3.7", "port": 80,
             "name": "web.marathon.l4lb.thisdcos.directory",
             "backends": [
                {"ip": "10.0.2.234", "port": 31000, "weight": 1, "health": "up", "active": 0},
                {"ip": "10.0.2.235", "port": 31001, "weight": 0, "health": "up", "active": 0}],
             "path": "userspace", "path_reason": "l4.mode = userspace"},
            {"protocol": "udp", "ip": "fd01:c::5", "port": 53,
             "name": "dns.marathon.l4lb.thisdcos.directory", "backends": [],
             "path": "userspace", "path_reason": "l4.mode = userspace"}
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn vips_show_the_fast_path_except_for_refused_vips() {
        use crate::fastpath::{Path, Status, layout};
        let refused =
            layout::ServiceKey::new("11.125.3.7".parse().unwrap(), 80, layout::IPPROTO_TCP);
        let status = Status {
            path: Path::Ebpf,
            reason: None,
            refused: [refused].into_iter().collect(),
        };
        let got: serde_json::Value =
            serde_json::from_str(&vips_json_with(&snapshot(), &Default::default(), &status))
                .unwrap();
        assert_eq!(got[0]["path"], "ebpf");
        assert_eq!(got[0]["path_reason"], serde_json::Value::Null);
        assert_eq!(got[1]["path"], "userspace", "over the limits");
        assert!(
            got[1]["path_reason"]
                .as_str()
                .unwrap()
                .contains("l4.max_services")
        );
        // Other VIPs stay on the fast path.
        assert_eq!(got[2]["path"], "ebpf");
        let off = Status {
            path: Path::Off,
            reason: Some("l4.mode = off".into()),
            refused: Default::default(),
        };
        let got: serde_json::Value =
            serde_json::from_str(&vips_json_with(&snapshot(), &Default::default(), &off)).unwrap();
        assert_eq!(got[1]["path"], "off");
        assert_eq!(got[1]["path_reason"], "l4.mode = off");
    }

    #[test]
    fn vips_show_live_health_and_active_connections_from_the_registry() {
        let registry = crate::health::Registry::new(Default::default());
        let addr = "127.0.0.1:8003".parse().unwrap();
        registry.reconcile([(BackendId(8003), addr)]);
        let state = registry.get(BackendId(8003)).unwrap();
        state.active.store(3, std::sync::atomic::Ordering::Relaxed);
        let got: serde_json::Value =
            serde_json::from_str(&vips_json(&snapshot(), &registry.snapshot_view())).unwrap();
        assert_eq!(got[0]["backends"][0]["health"], "up");
        assert_eq!(got[0]["backends"][0]["active"], 3);
        state.set_check_down(true);
        let got: serde_json::Value =
            serde_json::from_str(&vips_json(&snapshot(), &registry.snapshot_view())).unwrap();
        assert_eq!(got[0]["backends"][0]["health"], "down");
        // Backends the registry does not know: up, 0.
        assert_eq!(got[1]["backends"][0]["health"], "up");
        assert_eq!(got[1]["backends"][0]["active"], 0);
    }

    #[test]
    fn vips_of_the_empty_snapshot_are_an_empty_array() {
        assert_eq!(vips_json(&Snapshot::empty(), &Default::default()), "[]");
    }

    #[test]
    fn version_has_mesos_dns_shape() {
        let v: serde_json::Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(v["Service"], "ferryman");
        assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["URL"], PROJECT_URL);
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    fn state() -> (Publisher, AdminState) {
        let config = Arc::new(
            Config::parse("[discovery]\nusername = \"u\"\npassword = \"hunter2\"\n").unwrap(),
        );
        let (publisher, snapshots) = Publisher::new(config.clone());
        (
            publisher,
            AdminState {
                snapshots,
                records: Default::default(),
                health: crate::health::Registry::new(Default::default()),
                l7: crate::l7::Shared::new(config.clone()).unwrap(),
                config,
            },
        )
    }

    fn get(state: &AdminState, method: Method, path: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let resp = handle(state, &req);
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let status = resp.status();
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
            resp.into_body(),
        ))
        .unwrap()
        .unwrap()
        .to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn routes_answer_as_documented() {
        let (_publisher, s) = state();
        assert_eq!(
            get(&s, Method::GET, "/healthz"),
            (StatusCode::OK, TEXT.into(), "ok\n".into())
        );
        assert_eq!(
            get(&s, Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&s, Method::GET, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&s, Method::POST, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&s, Method::POST, "/v1/vips").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/vips"),
            (StatusCode::OK, JSON.into(), "[]".into())
        );
        let (status, ct, _) = get(&s, Method::GET, "/metrics");
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::OK, METRICS_CONTENT_TYPE)
        );
        let (status, _, body) = get(&s, Method::GET, "/v1/config");
        assert_eq!(status, StatusCode::OK);
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(c["discovery"]["password"], "<redacted>");
        assert_eq!(c["discovery"]["username"], "u");
        assert!(!body.contains("hunter2"));
    }

    #[test]
    fn marathon_lb_endpoints() {
        let (_publisher, s) = state();
        let (status, ct, body) = get(&s, Method::GET, "/_haproxy_health_check");
        assert_eq!(
            (status, ct.as_str(), body.as_str()),
            (StatusCode::OK, "text/html", HAPROXY_MONITOR_BODY)
        );
        // HAProxy's monitor answer is 58 bytes (its `Content-length: 58`).
        assert_eq!(HAPROXY_MONITOR_BODY.len(), 58);
        assert_eq!(
            get(&s, Method::HEAD, "/_haproxy_health_check").0,
            StatusCode::OK
        );
        let (status, _, body) = get(&s, Method::GET, "/_haproxy_getpids");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            std::process::id().to_string(),
            "one pid: not reloading"
        );

        // An empty table: the header and the listeners' FRONTEND rows, as zdd.py reads them.
        for path in ["/haproxy?stats;csv", "/haproxy?stats;csv;norefresh"] {
            let (status, ct, body) = get(&s, Method::GET, path);
            assert_eq!((status, ct.as_str()), (StatusCode::OK, CSV), "{path}");
            assert_eq!(body, s.l7.stats.csv());
            let mut lines = body.lines();
            assert_eq!(lines.next(), Some(crate::l7::stats::CSV_HEADER));
            assert!(
                lines.all(|l| l.split(',').nth(1) == Some("FRONTEND")),
                "{body}"
            );
        }
        // Only that path and query.
        for path in [
            "/haproxy",
            "/haproxy?stats",
            "/haproxy?stats;csv;x",
            "/haproxy/?stats;csv",
            "/_haproxy_health_check/",
        ] {
            assert_eq!(
                get(&s, Method::GET, path).0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(
            get(&s, Method::POST, "/haproxy?stats;csv").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// A published L7 table shows in the CSV: one row per server and a BACKEND row.
    #[test]
    fn stats_csv_shows_the_published_table() {
        let (_publisher, s) = state();
        let shared = &s.l7;
        let snap = Snapshot::build(
            &Arc::new(
                crate::discovery::decode::marathon_apps(
                    &crate::discovery::decode::test_support::fixture("marathon/zdd_apps.json"),
                )
                .unwrap(),
            ),
            &shared.config,
            &Snapshot::empty(),
        );
        let (table, errors) = crate::l7::Table::build(
            &snap,
            &shared.config,
            &shared.registry,
            &shared.stats,
            &|_| Ok(()),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let servers = table
            .routes
            .port_route(10000)
            .expect("nginx_10000")
            .servers
            .len();
        let table = Arc::new(table);
        shared.table.store(table.clone());
        shared.stats.publish(&table);
        let (_, _, body) = get(&s, Method::GET, "/haproxy?stats;csv");
        let rows: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("nginx_10000,"))
            .collect();
        // Its service-port FRONTEND, the servers, the BACKEND.
        assert_eq!(rows.len(), servers + 2, "{body}");
        assert!(rows.iter().any(|r| r.starts_with("nginx_10000,BACKEND,")));
    }

    #[test]
    fn ready_once_a_snapshot_is_published() {
        let (mut publisher, s) = state();
        assert_eq!(
            get(&s, Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        publisher.update(Arc::new(ClusterState::default()), UpdateKind::Full);
        assert_eq!(
            get(&s, Method::GET, "/readyz"),
            (StatusCode::OK, TEXT.into(), "ready\n".into())
        );
    }

    fn publish_records(s: &AdminState) {
        let mut r = crate::dns::Records {
            serial: 9,
            zones: vec!["mesos.".into()],
            ..Default::default()
        };
        r.hosts.insert(
            "nginx.marathon.mesos.".into(),
            ["10.190.238.173".parse().unwrap()].into(),
        );
        r.srvs.insert(
            "_nginx._tcp.marathon.mesos.".into(),
            [crate::dns::records::Srv {
                target: "nginx.marathon.mesos.".into(),
                port: 31667,
            }]
            .into(),
        );
        s.records.store(Some(Arc::new(r)));
    }

    #[test]
    fn mesos_dns_routes_wait_for_the_first_records() {
        let (_publisher, s) = state();
        for path in [
            "/v1/hosts/nginx.marathon.mesos",
            "/v1/services/_nginx._tcp.marathon.mesos.",
            "/v1/enumerate",
            "/v1/axfr",
        ] {
            let (status, ct, body) = get(&s, Method::GET, path);
            assert_eq!(
                (status, ct.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, TEXT),
                "{path}"
            );
            assert!(body.starts_with("not ready"), "{path}: {body}");
        }
    }

    #[test]
    fn mesos_dns_routes_answer_in_mesos_dns_shape() {
        let (_publisher, s) = state();
        publish_records(&s);
        // Shapes from the Mesos-DNS docs (docs/docs/http.md) and resolver.go.
        assert_eq!(
            get(&s, Method::GET, "/v1/hosts/Nginx.Marathon.Mesos"),
            (
                StatusCode::OK,
                JSON.into(),
                r#"[{"host":"nginx.marathon.mesos.","ip":"10.190.238.173"}]"#.into()
            )
        );
        // Percent-encoded parameters are decoded first.
        assert_eq!(
            get(&s, Method::GET, "/v1/hosts/nginx%2Emarathon.mesos.").2,
            r#"[{"host":"nginx.marathon.mesos.","ip":"10.190.238.173"}]"#
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/hosts/unknown.mesos"),
            (
                StatusCode::OK,
                JSON.into(),
                r#"[{"host":"","ip":""}]"#.into()
            )
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/services/_nginx._tcp.marathon.mesos."),
            (
                StatusCode::OK,
                JSON.into(),
                r#"[{"service":"_nginx._tcp.marathon.mesos.","host":"nginx.marathon.mesos.","ip":"10.190.238.173","port":"31667"}]"#.into()
            )
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/services/_x._tcp.marathon.mesos").2,
            r#"[{"service":"","host":"","ip":"","port":""}]"#
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/enumerate"),
            (StatusCode::OK, JSON.into(), r#"{"frameworks":null}"#.into())
        );
        let (status, ct, body) = get(&s, Method::GET, "/v1/axfr");
        assert_eq!((status, ct.as_str()), (StatusCode::OK, JSON));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Serial"], 9);
        assert_eq!(v["Domain"], "mesos");
        assert_eq!(v["Mname"], "ns1.mesos.");
        assert_eq!(
            v["Records"]["As"]["nginx.marathon.mesos."],
            serde_json::json!(["10.190.238.173"])
        );
        assert_eq!(
            v["Records"]["SRVs"]["_nginx._tcp.marathon.mesos."],
            serde_json::json!(["nginx.marathon.mesos.:31667"])
        );
        // /v1/version stays Mesos-DNS shaped, /v1/config stays ours.
        assert_eq!(get(&s, Method::GET, "/v1/version").2, version_json());
        let (_, _, config) = get(&s, Method::GET, "/v1/config");
        assert!(config.contains("\"dns\""));
    }

    #[test]
    fn mesos_dns_routes_reject_other_methods_and_shapes() {
        let (_publisher, s) = state();
        publish_records(&s);
        for path in [
            "/v1/hosts/nginx.marathon.mesos",
            "/v1/services/_nginx._tcp.marathon.mesos.",
            "/v1/enumerate",
            "/v1/axfr",
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(())
                    .unwrap();
                let resp = handle(&s, &req);
                assert_eq!(
                    resp.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert_eq!(resp.headers()[ALLOW], "GET, HEAD");
            }
            assert_eq!(get(&s, Method::HEAD, path).0, StatusCode::OK, "HEAD {path}");
        }
        for path in [
            "/v1/hosts/",
            "/v1/hosts",
            "/v1/hosts/a/b",
            "/v1/services/",
            "/v1/services/a/b",
            "/v1/enumerate/x",
        ] {
            assert_eq!(
                get(&s, Method::GET, path).0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        // Mesos-DNS routes /v1/hosts/{host}/ports but answers 501.
        assert_eq!(
            get(&s, Method::GET, "/v1/hosts/nginx.marathon.mesos/ports"),
            (
                StatusCode::NOT_IMPLEMENTED,
                TEXT.into(),
                "To be implemented...\n".into()
            )
        );
        assert_eq!(
            get(&s, Method::GET, "/v1/hosts/bad%zz").0,
            StatusCode::BAD_REQUEST
        );
    }

    /// Sends one HTTP/1.1 request on a fresh connection and returns the raw answer.
    async fn raw_request(addr: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("answer within 5 s")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_on_shutdown() {
        let (_publisher, s) = state();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            s.snapshots,
            s.config,
            s.records,
            s.health,
            s.l7,
            token.clone(),
        ));

        let answer = raw_request(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");

        // A request head over the limit is refused with 431.
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let answer = raw_request(addr, &big).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

        // An idle keep-alive connection does not hold shutdown up.
        let _idle = TcpStream::connect(addr).await.unwrap();
        token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap();
        assert!(result.is_ok());
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
