//! The L7 edge (issue 8) end to end, through the real binary: Marathon apps with Marathon-LB's
//! `HAPROXY_*` labels in a file source, in-test HTTP and WebSocket backends on 127.0.0.1, and
//! real clients (`curl`, `wrk`, a WebSocket client, raw `TcpStream`s for malformed input).
//!
//! This file holds what the areas share: backends that answer with their identity and echo what
//! reached them (path, headers), counting requests; the app JSON; test certificates (rcgen);
//! starting Ferryman with an L7 config and finding its listeners; HTTP, `curl` and `wrk` helpers.
//! Every wait is bounded.

mod admin;
mod bad_input;
mod balance;
mod errors;
mod limits;
mod load;
mod routing;
mod tls;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::harness::{Ferryman, free_port, tool};

/// How long a route may take to appear after its apps file is written (debounce, snapshot,
/// table swap, listener start).
pub const ROUTE_WITHIN: Duration = Duration::from_secs(15);
/// One request's bound.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// How long a `/slow…` request stays in a backend before it answers.
pub const SLOW_BACKEND: Duration = Duration::from_secs(5);

// === backends ===

/// An in-test HTTP/1.1 + h2c backend on 127.0.0.1 that answers every request with JSON naming
/// itself and echoing the method, path and query, protocol version and every request header
/// (repeated headers joined with `", "`). Paths beginning with `/slow` answer after
/// [`SLOW_BACKEND`]; paths beginning with `/302` answer 302 with `Location: /login`; paths
/// beginning with `/hop` add hop-by-hop response fields (`Connection: x-drop`, `X-Drop`). Counts the requests it received. Serves until the test's runtime ends.
pub struct Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_with_status(name, 200).await
    }

    /// A backend whose answers carry `status` (500: a broken server).
    pub async fn start_with_status(name: &str, status: u16) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicU64::new(0));
        let (name_c, hits_c) = (name.to_string(), hits.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (name, hits) = (name_c.clone(), hits_c.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        echo(name.clone(), hits.clone(), status, req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, hits }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn echo(
    name: String,
    hits: Arc<AtomicU64>,
    status: u16,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let slow = path.starts_with("/slow");
    // Read the request body whole (the test bodies are small) so keep-alive works.
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    if slow {
        tokio::time::sleep(SLOW_BACKEND).await;
    }
    let body = json!({
        "backend": name, "method": method, "path": path, "version": version,
        "headers": headers, "body_len": body_len,
    });
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-backend", name.as_str());
    if path.starts_with("/302") {
        response = response.status(302).header("location", "/login");
    }
    if path.starts_with("/hop") {
        // Hop-by-hop response fields the edge must not relay.
        response = response
            .header("connection", "x-drop")
            .header("x-drop", "1")
            .header("x-keep", "1");
    }
    Ok(response
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response"))
}

/// What a [`Backend`] saw, from its answer.
#[derive(Debug, Clone)]
pub struct Echo {
    pub backend: String,
    pub path: String,
    pub version: String,
    pub headers: BTreeMap<String, String>,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A WebSocket echo backend on 127.0.0.1 (tokio-tungstenite): every text or binary message
/// comes back unchanged, prefixed (text only) with `name:`; counts accepted handshakes.
pub struct WsBackend {
    pub addr: SocketAddr,
    pub handshakes: Arc<AtomicU64>,
}

impl WsBackend {
    pub async fn start(name: &str) -> WsBackend {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let addr = listener.local_addr().expect("ws address");
        let handshakes = Arc::new(AtomicU64::new(0));
        let (count, name) = (handshakes.clone(), name.to_string());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, name) = (count.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(msg)) = ws.next().await {
                        let reply = match msg {
                            Message::Text(t) => Message::text(format!("{name}:{}", t.as_str())),
                            Message::Binary(b) => Message::binary(b),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsBackend { addr, handshakes }
    }
}

// === Marathon apps ===

/// A Marathon app (`/v2/apps?embed=apps.tasks` shape) whose one service port `service_port`
/// carries `labels`, with one running task per backend port on 127.0.0.1. Every app binds its
/// per-port frontend to 127.0.0.1 (`HAPROXY_0_BIND_ADDR`, unless `labels` sets it): the tests
/// listen on loopback only.
pub fn app(id: &str, service_port: u16, backends: &[u16], labels: Value) -> Value {
    let mut labels = labels;
    let map = labels.as_object_mut().expect("labels are an object");
    map.entry("HAPROXY_0_BIND_ADDR")
        .or_insert_with(|| json!("127.0.0.1"));
    let trimmed = id.trim_start_matches('/');
    let tasks: Vec<Value> = backends
        .iter()
        .enumerate()
        .map(|(i, port)| {
            json!({
                "id": format!("{}.task-{i}", trimmed.replace('/', "_")), "appId": id,
                "host": "127.0.0.1", "slaveId": "agent-1", "ports": [port],
                "state": "TASK_RUNNING", "startedAt": "2024-01-01T00:00:01.000Z",
            })
        })
        .collect();
    json!({
        "id": id, "version": "2024-01-01T00:00:00.000Z", "instances": backends.len(),
        "labels": labels,
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "labels": {}}],
        "tasks": tasks,
    })
}

/// An app in the `external` group on the vhost router: `HAPROXY_0_VHOST=vhost` plus `extra`
/// labels, on a fresh service port.
pub fn vhost_app(id: &str, vhost: &str, backends: &[&Backend], extra: Value) -> Value {
    let mut labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": vhost});
    if let Value::Object(extra) = extra {
        labels.as_object_mut().expect("object").extend(extra);
    }
    let ports: Vec<u16> = backends.iter().map(|b| b.port()).collect();
    app(id, free_port(), &ports, labels)
}

/// `{"apps": [...]}`.
pub fn apps(list: Vec<Value>) -> Value {
    json!({ "apps": list })
}

// === certificates ===

/// A test CA and certificates it signed, as PEM files in a directory of the test's own.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// A CA (`ca.pem`) and, for each name, `<name>.pem` holding the certificate (subject
    /// `CN=<name>`, SAN `<name>`) followed by its private key, as HAProxy's `crt` takes them.
    pub fn generate(names: &[&str]) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Ferryman test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        let issuer = Issuer::new(ca, ca_key);
        for name in names {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
            params.distinguished_name.push(DnType::CommonName, *name);
            let cert = params.signed_by(&key, &issuer).expect("signed certificate");
            let pem = format!("{}{}", cert.pem(), key.serialize_pem());
            std::fs::write(dir.path().join(format!("{name}.pem")), pem).expect("write pem");
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn ca(&self) -> String {
        self.path("ca.pem").to_string_lossy().into_owned()
    }
}

// === Ferryman with the L7 edge ===

/// A running Ferryman serving the apps of `apps.json` on its L7 listeners.
pub struct Edge {
    pub f: Ferryman,
    /// The bound `l7.http` address (the harness binds it to 127.0.0.1:0).
    pub http: SocketAddr,
    /// Its socket's inode (see [`Edge::http_listener_kept`]).
    http_inode: u64,
    /// `l7.https`, when the test set it.
    pub https: Option<SocketAddr>,
}

impl Edge {
    /// Starts Ferryman with a file source on `apps`, `[l7]` keys `l7_keys` (TOML lines) and
    /// further TOML `sections` (e.g. `[l7.tls]`), and waits for the first snapshot and the
    /// http listener.
    pub async fn start(l7_keys: &str, sections: &str, apps: &Value) -> Edge {
        let config = format!(
            "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\n\
             [l7]\ngroup = \"external\"\n{l7_keys}\n{sections}\n"
        );
        let f = Ferryman::start_with(&config, &[("apps.json", apps.to_string().as_bytes())]);
        f.wait_ready(ROUTE_WITHIN).await;
        let https = toml::from_str::<toml::Table>(&config).ok().and_then(|t| {
            t.get("l7")?
                .get("https")?
                .as_str()
                .and_then(|s| s.parse().ok())
        });
        let (http, http_inode) = find_http_listener(&f, https, apps).await;
        Edge {
            f,
            http,
            http_inode,
            https,
        }
    }

    /// Whether the `l7.http` listening socket found at start is still the one listening on its
    /// address (never closed and bound again).
    pub fn http_listener_kept(&self) -> bool {
        let now: Vec<(SocketAddr, u64)> = listening_sockets(self.f.pid())
            .into_iter()
            .filter(|(a, _)| *a == self.http)
            .collect();
        now == [(self.http, self.http_inode)]
    }

    /// Replaces the apps file atomically (write a temporary file, rename it over).
    pub fn set_apps(&self, apps: &Value) {
        let tmp = self.f.dir.path().join(".apps.json.tmp");
        std::fs::write(&tmp, apps.to_string()).expect("write apps");
        std::fs::rename(&tmp, self.f.dir.path().join("apps.json")).expect("replace apps.json");
    }

    /// GET `path` with `Host: host` on the http listener.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.request(host, path, &[]).await
    }

    /// GET `path` with `Host: host` and `headers` on the http listener.
    pub async fn request(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(self.http, None, "GET", host, path, headers)
            .await
            .unwrap_or_else(|e| panic!("GET http://{host}{path}: {e}\n{}", self.f.logs()))
    }

    /// Polls GET `host` `path` until `ok` holds for the reply (the route appears once the
    /// snapshot is applied), at most [`ROUTE_WITHIN`]; panics with the last reply and the logs.
    pub async fn wait_for(&self, host: &str, path: &str, ok: impl Fn(&Reply) -> bool) -> Reply {
        wait_for_at(self.http, host, path, ok, &self.f).await
    }

    /// Polls until `host` `path` is answered by backend `name`.
    pub async fn wait_backend(&self, host: &str, path: &str, name: &str) -> Reply {
        self.wait_for(host, path, |r| {
            r.status == 200 && r.echo().is_some_and(|e| e.backend == name)
        })
        .await
    }
}

/// [`Edge::wait_for`] against any listener address.
pub async fn wait_for_at(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ok: impl Fn(&Reply) -> bool,
    f: &Ferryman,
) -> Reply {
    let deadline = Instant::now() + ROUTE_WITHIN;
    let mut last = None;
    while Instant::now() < deadline {
        match send(addr, None, "GET", host, path, &[]).await {
            Ok(r) if ok(&r) => return r,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "GET http://{addr}{path} Host: {host} not as expected within {ROUTE_WITHIN:?}; last: \
         {last:?}\nferryman's stderr:\n{}",
        f.logs()
    );
}

/// The listening IPv4 TCP sockets of process `pid`, with their socket inodes: the process's
/// sockets from `/proc/<pid>/fd`, their state and address from `/proc/<pid>/net/tcp`. A socket
/// that keeps its inode was never closed and bound again.
pub fn listening_sockets(pid: u32) -> Vec<(SocketAddr, u64)> {
    let inodes: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A = TCP_LISTEN.
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let inode: u64 = f.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            // The address is the in-memory (network order) u32 printed as a host (little
            // endian, x86 and arm64) number.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((SocketAddr::new(ip.into(), port), inode))
        })
        .collect()
}

/// Every service port `apps` names (Marathon `portDefinitions`, `ports`, Docker
/// `portMappings`, `HAPROXY_{n}_PORT` labels): the listeners that are not the vhost router's.
fn service_ports(apps: &Value) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    for app in apps["apps"].as_array().into_iter().flatten() {
        for d in app["portDefinitions"].as_array().into_iter().flatten() {
            ports.extend(port(&d["port"]));
        }
        for p in app["ports"].as_array().into_iter().flatten() {
            ports.extend(port(p));
        }
        let mappings = &app["container"]["docker"]["portMappings"];
        for m in mappings.as_array().into_iter().flatten() {
            ports.extend(port(&m["servicePort"]));
        }
        for (k, v) in app["labels"].as_object().into_iter().flatten() {
            if k.starts_with("HAPROXY_") && k.ends_with("_PORT") {
                ports.extend(v.as_str().and_then(|v| v.parse::<u16>().ok()));
            }
        }
    }
    ports
}

/// The `l7.http` listener of `f` (bound to 127.0.0.1:0 by the harness, and not logged): the
/// one listening socket of the process that is not admin, DNS, `l7.https` or a service port of
/// `apps`. Waits at most [`ROUTE_WITHIN`] for it to be the only one.
async fn find_http_listener(
    f: &Ferryman,
    https: Option<SocketAddr>,
    apps: &Value,
) -> (SocketAddr, u64) {
    let mut known = service_ports(apps);
    known.extend([f.admin.port(), f.dns.port()]);
    known.extend(https.map(|a| a.port()));
    let deadline = Instant::now() + ROUTE_WITHIN;
    loop {
        let candidates: Vec<(SocketAddr, u64)> = listening_sockets(f.pid())
            .into_iter()
            .filter(|(a, _)| !known.contains(&a.port()))
            .collect();
        if let [one] = candidates[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "cannot tell the l7.http listener among {candidates:?} (known ports {known:?}); \
             stderr:\n{}",
            f.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === HTTP client ===

/// An HTTP answer read by [`send`].
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend's echo, when a [`Backend`] answered.
    pub fn echo(&self) -> Option<Echo> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        Some(Echo {
            backend: v["backend"].as_str()?.to_string(),
            path: v["path"].as_str()?.to_string(),
            version: v["version"].as_str().unwrap_or_default().to_string(),
            headers: serde_json::from_value(v["headers"].clone()).ok()?,
        })
    }

    /// [`Reply::echo`], panicking with the reply when no backend answered.
    pub fn expect_echo(&self) -> Echo {
        self.echo()
            .unwrap_or_else(|| panic!("expected a backend's answer, got {self:?}"))
    }
}

/// One HTTP/1.1 request on a new connection to `addr` (from `source` when given: another
/// loopback address), with `Host: host` and `headers`; the whole answer (chunked or not).
pub async fn send(
    addr: SocketAddr,
    source: Option<IpAddr>,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let exchange = async {
        let stream = connect(addr, source).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(REQUEST_WITHIN, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST_WITHIN:?}"))?
}

/// A TCP connection to `addr`, bound to `source` when given.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    match source {
        None => TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}")),
        Some(ip) => {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect(addr)
                .await
                .map_err(|e| format!("connect {addr} from {ip}: {e}"))
        }
    }
}

// === curl ===

/// What one `curl` run returned.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0: transfer done).
    pub code: i32,
    /// `%{http_code}` (0 without an answer).
    pub status: u16,
    /// `%{http_version}`: `1.1`, `2`.
    pub version: String,
    /// The last response head, as received (`-D`).
    pub head: String,
    pub body: String,
    /// `-v` output and errors.
    pub stderr: String,
}

impl Curl {
    /// A header of the last response head, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The server certificate's subject as `curl -v` prints it (`*  subject: CN=…`).
    pub fn subject(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject:"))
            .map(str::trim)
    }
}

/// Runs `curl -sS -v --max-time 10 <args>`, the response head and body into temporary files.
/// `None` (the caller returns: skipped) when curl is missing, see [`tool`].
pub async fn curl(args: &[&str]) -> Option<Curl> {
    let curl = tool("curl")?;
    let dir = tempfile::tempdir().expect("a directory for curl");
    let (head_path, body_path) = (dir.path().join("head"), dir.path().join("body"));
    let out = tokio::process::Command::new(curl)
        .args(["-sS", "-v", "--max-time", "10", "-D"])
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = stdout.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = w.next().unwrap_or_default().to_string();
    let raw_head = std::fs::read_to_string(&head_path).unwrap_or_default();
    // Several heads when curl followed an upgrade or saw 1xx: keep the last.
    let head = raw_head
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or_default()
        .to_string();
    Some(Curl {
        code: out.status.code().unwrap_or(-1),
        status,
        version,
        head,
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `--resolve NAME:PORT:127.0.0.1` for `addr`.
pub fn resolve(name: &str, addr: SocketAddr) -> String {
    format!("{name}:{}:{}", addr.port(), addr.ip())
}

// === wrk ===

/// The counts `wrk` prints.
#[derive(Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub non_2xx_3xx: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    pub output: String,
}

/// Spawns `wrk -t1 -c<connections> -d<secs>s --timeout 5s -H "Host: host" http://addr/path`
/// (at most `secs` + a little); `None` when wrk is missing (skipped, see [`tool`]).
pub fn spawn_wrk(
    addr: SocketAddr,
    host: &str,
    path: &str,
    connections: u32,
    secs: u32,
) -> Option<tokio::process::Child> {
    let wrk = tool("wrk")?;
    Some(
        tokio::process::Command::new(wrk)
            .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
            .args(["--timeout", "5s", "-H", &format!("Host: {host}")])
            .arg(format!("http://{addr}{path}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start wrk"),
    )
}

/// Waits for a [`spawn_wrk`] run (bounded by `secs` + 15 s) and parses its summary.
pub async fn wrk_result(child: tokio::process::Child, secs: u32) -> WrkResult {
    let out = tokio::time::timeout(
        Duration::from_secs(u64::from(secs) + 15),
        child.wait_with_output(),
    )
    .await
    .expect("wrk ends")
    .expect("wrk output");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&output)
}

/// wrk's summary: `N requests in …`, `Socket errors: connect A, read B, write C, timeout D`,
/// `Non-2xx or 3xx responses: N` (the last two only when not zero).
pub fn parse_wrk(output: &str) -> WrkResult {
    let mut r = WrkResult {
        output: output.to_string(),
        ..WrkResult::default()
    };
    for line in output.lines().map(str::trim) {
        if let Some(n) = line.split_once(" requests in ").map(|(n, _)| n) {
            r.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = rest.trim().parse().unwrap_or(u64::MAX);
        }
    }
    r
}

#[test]
fn wrk_summary_is_parsed() {
    let out = "Running 3s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  \
               Thread Stats   Avg      Stdev     Max   +/- Stdev\n  \
               12345 requests in 3.00s, 1.00MB read\n  \
               Socket errors: connect 1, read 2, write 3, timeout 4\n  \
               Non-2xx or 3xx responses: 7\nRequests/sec:   4115.00\n";
    let r = parse_wrk(out);
    assert_eq!((r.requests, r.socket_errors, r.non_2xx_3xx), (12345, 10, 7));
    let clean = parse_wrk("  99 requests in 1.00s, 1KB read\n");
    assert_eq!(
        (clean.requests, clean.socket_errors, clean.non_2xx_3xx),
        (99, 0, 0)
    );
}

#[test]
fn service_ports_of_apps() {
    let apps = json!({"apps": [
        {"portDefinitions": [{"port": 10000}], "labels": {"HAPROXY_0_PORT": "10001"}},
        {"ports": [10002], "container": {"docker": {"portMappings": [{"servicePort": 10003}]}},
         "labels": {"HAPROXY_DEPLOYMENT_ALT_PORT": "10004", "HAPROXY_1_PORT": "abc"}},
    ]});
    assert_eq!(
        service_ports(&apps).into_iter().collect::<Vec<_>>(),
        vec![10000, 10001, 10002, 10003, 10004]
    );
}

#[test]
fn listening_sockets_of_this_process() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("address");
    let found = listening_sockets(std::process::id());
    assert!(
        found.iter().any(|(a, _)| *a == addr),
        "{addr} not in {found:?}"
    );
}
/// Sum of the samples of metric `name` whose labels contain every `label="value"` of `with`.
pub fn metric_sum(metrics: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            with.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
