//! The L7 listeners and their control loop.
//!
//! - [`run`]: binds `l7.http` and `l7.https` once, then per snapshot builds the [`Table`],
//!   publishes it (`Shared::table`, statistics, label certificates), reconciles active checks
//!   and the per-service-port listeners. A route change swaps the table: listeners never
//!   restart for it.
//! - [`Edge`]: the listeners. The vhost listeners live as long as the edge; service-port
//!   listeners are opened and closed by diff against each table. Every listener shares one
//!   `l7.max_connections` semaphore; connections outlive a closed listener until their
//!   in-flight requests finish.
//! - `conn`: one connection (TLS, HTTP/1.1 or HTTP/2, watchdog for the first-head deadline,
//!   keep-alive idle time and shutdown).
//! - `framing`: the guard hyper lacks against requests with both `Content-Length` and
//!   `Transfer-Encoding`.
//!
//! What hyper enforces itself (tested in `tests`): an oversize request head (`max_header_size`
//! = `l7.max_header_bytes`) or too many header fields (`l7.max_headers`) → 431 and close; a
//! bad request line or bad `Content-Length` → 400 and close; an HTTP/1 head not complete
//! within `l7.header_read_timeout` → close (without a 408: hyper sends none). hyper starts that
//! timer as soon as a response is done, so an idle HTTP/1 keep-alive connection lasts the
//! smaller of `l7.header_read_timeout` and `l7.idle_timeout` (as HAProxy's
//! `timeout http-keep-alive` defaults to `timeout http-request`). HTTP/2: a header list over
//! `l7.max_header_bytes` → 431 for that stream (the h2 crate); no header count limit.

mod conn;
mod framing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes::RouteError;
use super::{ConnInfo, Frontend, Shared, Table, labels, proxy, stats};
use crate::config::{Config, L7Config};
use crate::health::checks::Checker;
use crate::model::{Snapshot, Snapshots};

/// hyper's default `max_headers`: below or at it the parser keeps header slots on the stack;
/// another value costs an allocation per request, so it is only set when it differs.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Streams per HTTP/2 connection (HAProxy's `tune.h2.max-concurrent-streams` default).
const H2_MAX_STREAMS: u32 = 100;

/// Pause after an accept error (EMFILE and friends) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Answers the requests of the edge's connections: [`ProxyHandler`] in ferryman, a stub in
/// tests.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<proxy::Body>> + Send + 'static;
}

/// [`proxy::handle`] as the edge's [`Handler`].
pub struct ProxyHandler(pub Arc<Shared>);

impl Handler for ProxyHandler {
    fn handle(
        &self,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<proxy::Body>> + Send + 'static {
        use futures_util::FutureExt as _;
        proxy::handle(self.0.clone(), conn, req).map(|r| match r {
            Ok(r) => r,
            Err(never) => match never {},
        })
    }
}

/// Runs the L7 edge until `shutdown`. Fails when `l7.http` or `l7.https` cannot be bound (the
/// error names the key).
pub async fn run(
    shared: Arc<Shared>,
    snapshots: Snapshots,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls: Option<TlsConfig> = shared.certs.clone().map(|c| {
        let f: TlsConfig = Arc::new(move || c.server_config());
        f
    });
    let handler = Arc::new(ProxyHandler(shared.clone()));
    let mut edge = Edge::start(
        &shared.config,
        shared.stats.clone(),
        tls,
        handler,
        &shutdown,
    )?;
    // Certificate files are re-read when they change (the TLS listener's configuration
    // stays; its SNI table is swapped under it).
    let cert_watch = shared
        .certs
        .clone()
        .map(|c| tokio::spawn(c.watch(shutdown.child_token())));
    let mut control = Control::default();
    let mut checker = Checker::new(&shutdown);
    let mut rx = snapshots.subscribe();
    let mut snapshot = snapshots.load();
    loop {
        if snapshot.version > 0 {
            // Building a table parses every app's labels and may read certificate files: off
            // the runtime's workers, which serve requests meanwhile.
            let (shared2, snapshot2) = (shared.clone(), snapshot.clone());
            let (back, table) = tokio::task::spawn_blocking(move || {
                let table = control.apply(&shared2, &snapshot2);
                (control, table)
            })
            .await
            .context("l7 table build panicked")?;
            control = back;
            checker.reconcile(&snapshot, &shared.config.l4, &shared.registry);
            edge.reconcile(&table).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    // The publisher is gone: keep serving the last table until shutdown.
                    shutdown.cancelled().await;
                    break;
                }
                snapshot = rx.borrow_and_update().clone();
            }
        }
    }
    checker.shutdown().await;
    edge.shutdown().await;
    if let Some(task) = cert_watch
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "l7: certificate watcher ended abnormally");
    }
    Ok(())
}

// === impl Control ===

/// What the control loop remembers between snapshots, to log changes only.
#[derive(Default)]
struct Control {
    /// The skipped apps and reasons last logged.
    skipped: BTreeSet<(String, String)>,
    /// Apps already warned about for unsupported template labels (pruned to the apps present).
    warned: HashSet<String>,
}

impl Control {
    /// Builds and publishes the table of `snapshot`; returns it for the listeners.
    fn apply(&mut self, shared: &Shared, snapshot: &Snapshot) -> Arc<Table> {
        let config = &shared.config;
        let accept_all = |_: &std::path::Path| Ok(());
        let (table, errors) = match &shared.certs {
            Some(certs) => Table::build(
                snapshot,
                config,
                &shared.registry,
                &shared.stats,
                &|p: &std::path::Path| certs.check(p),
            ),
            None => Table::build(
                snapshot,
                config,
                &shared.registry,
                &shared.stats,
                &accept_all,
            ),
        };
        self.log_skipped(&errors);
        shared.stats.set_skipped_apps(skipped_apps(&errors));
        let table = Arc::new(table);
        shared.table.store(table.clone());
        shared.stats.publish(&table);
        if let Some(certs) = &shared.certs {
            let mut paths: Vec<PathBuf> = table
                .routes
                .backends()
                .iter()
                .flat_map(|b| b.ssl_certs.iter().cloned())
                .collect();
            paths.sort();
            paths.dedup();
            certs.set_label_certs(paths);
        }
        let unsupported = self.unsupported_labels(snapshot, &config.l7.group);
        shared.stats.set_unsupported_labels(unsupported);
        tracing::debug!(
            version = table.version,
            backends = table.routes.backends().len(),
            ports = table.routes.ports().count(),
            skipped = errors.len(),
            "l7 table published"
        );
        table
    }

    /// Warns once per (app, reason) while it lasts: a snapshot that repeats the same errors
    /// logs nothing. Returns how many were warned about.
    fn log_skipped(&mut self, errors: &[(String, RouteError)]) -> usize {
        let now: BTreeSet<(String, String)> = errors
            .iter()
            .map(|(app, e)| (app.clone(), e.to_string()))
            .collect();
        if now == self.skipped {
            return 0;
        }
        let mut warned = 0;
        for (app, reason) in now.difference(&self.skipped) {
            tracing::warn!(app = %app, reason = %reason, "l7: app (or port) not served");
            warned += 1;
        }
        for (app, reason) in self.skipped.difference(&now) {
            tracing::info!(app = %app, reason = %reason, "l7: no longer skipped for this reason");
        }
        self.skipped = now;
        warned
    }

    /// Raw HAProxy template labels (`HAPROXY_{n}_FRONTEND_HEAD`, …) of the apps in `group`:
    /// counted per app (distinct names over its ports) and warned once per app.
    fn unsupported_labels(&mut self, snapshot: &Snapshot, group: &str) -> Vec<(String, usize)> {
        let groups = [group];
        let mut per_app = Vec::new();
        for (id, app) in snapshot.state.apps.iter() {
            let mut names: BTreeSet<&str> = BTreeSet::new();
            let ports = labels::app_ports(app);
            for p in ports.iter().flatten().filter(|p| p.in_group(&groups)) {
                names.extend(p.unsupported.iter().map(String::as_str));
            }
            if names.is_empty() {
                continue;
            }
            if self.warned.insert(id.clone()) {
                let list: Vec<&str> = names.iter().copied().collect();
                tracing::warn!(
                    app = %id,
                    labels = %list.join(","),
                    "l7: HAProxy template labels cannot apply to ferryman and are ignored"
                );
            }
            per_app.push((id.clone(), names.len()));
        }
        self.warned
            .retain(|id| snapshot.state.apps.contains_key(id.as_str()));
        per_app
    }
}

/// Apps skipped whole (a bad label or certificate), as opposed to one route losing a conflict.
fn skipped_apps(errors: &[(String, RouteError)]) -> usize {
    errors
        .iter()
        .filter(|(_, e)| matches!(e, RouteError::Label(_) | RouteError::Cert { .. }))
        .map(|(app, _)| app.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

// === impl Edge ===

/// The rustls configuration for a new TLS connection (asked per connection, so a certificate
/// reload that builds a new configuration applies to the next handshake).
pub type TlsConfig = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// What every connection of the edge shares.
struct Ctx<H> {
    handler: Arc<H>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// `l7.max_connections` over every listener.
    permits: Arc<Semaphore>,
    stats: stats::Stats,
    tls: Option<TlsConfig>,
    /// The edge's shutdown: connections drain, bounded by `conn::GRACE`.
    shutdown: CancellationToken,
    connections: TaskTracker,
    /// Connections parked so far (see [`conn::PARK_AFTER`]): [`release_memory`] looks at it.
    parks: std::sync::atomic::AtomicU64,
}

/// How often [`release_memory`] looks for newly parked connections.
const RELEASE_EVERY: Duration = Duration::from_secs(5);

/// Parks since the last release that make the next one worth it: each frees about 16 KiB.
const PARKS_PER_RELEASE: u64 = 256;

/// Hands the memory that parked connections freed back to the system. glibc's allocator keeps
/// freed small blocks for reuse, so without this, buffers of connections gone idle stay in the
/// process's RSS. At most every [`RELEASE_EVERY`], only after [`PARKS_PER_RELEASE`] new parks,
/// off the runtime's workers. `malloc_trim` holds each heap's lock while it walks it: 3–5 ms
/// measured with 4000 parked connections, during which an allocation on that heap waits.
async fn release_memory<H: Handler>(ctx: Arc<Ctx<H>>, stop: CancellationToken) {
    let mut seen = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(RELEASE_EVERY) => {}
            () = stop.cancelled() => return,
        }
        let parks = ctx.parks.load(std::sync::atomic::Ordering::Relaxed);
        if parks - seen < PARKS_PER_RELEASE {
            continue;
        }
        seen = parks;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let trimmed = tokio::task::spawn_blocking(|| {
                let t = std::time::Instant::now();
                // SAFETY: malloc_trim takes no pointers and only releases free memory of
                // glibc's own heaps.
                #[allow(unsafe_code)]
                let released = unsafe { libc::malloc_trim(0) } == 1;
                (released, t.elapsed())
            })
            .await;
            if let Ok((released, took)) = trimmed {
                tracing::debug!(
                    released,
                    ?took,
                    "l7: released the memory of parked connections"
                );
            }
        }
    }
}

/// The L7 listeners (see the module doc).
pub struct Edge<H: Handler> {
    ctx: Arc<Ctx<H>>,
    /// Parent of every listener's token (cancelled at shutdown).
    listeners_token: CancellationToken,
    accept_loops: TaskTracker,
    /// `l7.http` / `l7.https`, bound at start.
    vhost: Vec<(Frontend, SocketAddr)>,
    ports: BTreeMap<u16, PortListener>,
    /// Service ports that failed to bind, with the address tried (warned once until it
    /// binds or is no longer wanted).
    failing: BTreeMap<u16, SocketAddr>,
    default_bind: IpAddr,
}

struct PortListener {
    /// The address asked for (the backend's `HAPROXY_{n}_BIND_ADDR` or `l4.bind`).
    addr: SocketAddr,
    /// Cancels the accept loop and tells its connections to finish.
    token: CancellationToken,
    /// The accept loop (owns the socket); taken when the listener closes.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl<H: Handler> Edge<H> {
    /// Binds `l7.http` and `l7.https` (when set); an error names the key.
    pub fn start(
        config: &Config,
        stats: stats::Stats,
        tls: Option<TlsConfig>,
        handler: Arc<H>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Edge<H>> {
        let l7 = &config.l7;
        let (h1, h2) = builders(l7);
        let ctx = Arc::new(Ctx {
            handler,
            h1,
            h2,
            header_read_timeout: l7.header_read_timeout,
            idle_timeout: l7.idle_timeout,
            permits: Arc::new(Semaphore::new(l7.max_connections)),
            stats,
            tls,
            shutdown: shutdown.clone(),
            connections: TaskTracker::new(),
            parks: std::sync::atomic::AtomicU64::new(0),
        });
        let mut edge = Edge {
            ctx,
            listeners_token: shutdown.child_token(),
            accept_loops: TaskTracker::new(),
            vhost: Vec::new(),
            ports: BTreeMap::new(),
            failing: BTreeMap::new(),
            default_bind: config.l4.bind,
        };
        if let Some(addr) = l7.http {
            let listener = bind(addr).with_context(|| format!("l7.http {addr}: cannot listen"))?;
            log_listening("http", &listener);
            edge.spawn_listener(listener, Frontend::Http, edge.listeners_token.clone());
        }
        if let Some(addr) = l7.https {
            anyhow::ensure!(
                edge.ctx.tls.is_some(),
                "l7.https {addr}: no certificate store"
            );
            let listener = bind(addr).with_context(|| format!("l7.https {addr}: cannot listen"))?;
            log_listening("https", &listener);
            edge.spawn_listener(listener, Frontend::Https, edge.listeners_token.clone());
        }
        edge.accept_loops.spawn(release_memory(
            edge.ctx.clone(),
            edge.listeners_token.clone(),
        ));
        Ok(edge)
    }

    /// The local address of the `l7.http` / `l7.https` listener, or of a service port's.
    pub fn local_addr(&self, frontend: Frontend) -> Option<SocketAddr> {
        match frontend {
            Frontend::Port(p) => self.ports.get(&p).map(|l| l.addr),
            f => self
                .vhost
                .iter()
                .find(|(g, _)| *g == f)
                .map(|&(_, addr)| addr),
        }
    }

    /// The service ports listened on now.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// Makes the service-port listeners those of `table` by diff: a port whose bind address
    /// is unchanged keeps its listener; removed ports stop accepting (their connections
    /// finish in-flight requests); a port that fails to bind is warned about and retried
    /// with the next table.
    pub async fn reconcile(&mut self, table: &Table) {
        let want: BTreeMap<u16, SocketAddr> = table
            .routes
            .ports()
            .map(|p| {
                let ip = table
                    .routes
                    .port_route(p)
                    .and_then(|b| b.bind_addr)
                    .unwrap_or(self.default_bind);
                (p, SocketAddr::new(ip, p))
            })
            .collect();
        let mut closing = Vec::new();
        self.ports.retain(|port, l| {
            let keep = want.get(port) == Some(&l.addr);
            if !keep {
                tracing::debug!(port, addr = %l.addr, "l7: service port listener closed");
                l.token.cancel();
                closing.push(l.task.take());
            }
            keep
        });
        let closed = closing.len();
        let mut opened = 0usize;
        // Their sockets close when the accept loops end (promptly: they wait on the token):
        // a port that moves to another address, or comes back at once, can then bind again.
        for task in closing.into_iter().flatten() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "l7: accept loop ended abnormally");
            }
        }
        self.failing
            .retain(|port, addr| want.get(port) == Some(addr));
        for (&port, &addr) in &want {
            if self.ports.contains_key(&port) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    if self.failing.remove(&port).is_some() {
                        tracing::info!(port, %addr, "l7: service port bound after earlier failures");
                    } else {
                        tracing::debug!(port, %addr, "l7: service port listener opened");
                    }
                    opened += 1;
                    let token = self.listeners_token.child_token();
                    let task = self.spawn_listener(listener, Frontend::Port(port), token.clone());
                    self.ports.insert(
                        port,
                        PortListener {
                            addr,
                            token,
                            task: Some(task),
                        },
                    );
                }
                Err(e) => {
                    if self.failing.insert(port, addr).is_none() {
                        tracing::warn!(port, %addr, error = %e, "l7: cannot listen on service port; retried with the next snapshot");
                    } else {
                        tracing::debug!(port, %addr, error = %e, "l7: service port still cannot listen");
                    }
                }
            }
        }
        if opened + closed > 0 {
            tracing::info!(
                opened,
                closed,
                listening = self.ports.len(),
                failing = self.failing.len(),
                "l7: service port listeners reconciled"
            );
        }
    }

    fn spawn_listener(
        &mut self,
        listener: TcpListener,
        frontend: Frontend,
        token: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        if let (Frontend::Http | Frontend::Https, Ok(addr)) = (frontend, listener.local_addr()) {
            self.vhost.push((frontend, addr));
        }
        self.accept_loops
            .spawn(accept_loop(self.ctx.clone(), listener, frontend, token))
    }

    /// Stops accepting, then waits for the connections (each bounded by `conn::GRACE` after
    /// the shutdown token fired; this waits a little longer for them to unwind).
    pub async fn shutdown(self) {
        self.listeners_token.cancel();
        self.accept_loops.close();
        self.accept_loops.wait().await;
        self.ctx.connections.close();
        let wait = self.ctx.connections.wait();
        if tokio::time::timeout(conn::GRACE + Duration::from_secs(1), wait)
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.ctx.connections.len(),
                "l7: connections still open after the shutdown grace period"
            );
        }
    }
}

/// hyper's HTTP/1 and HTTP/2 servers with the `[l7]` limits.
fn builders(l7: &L7Config) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(l7.header_read_timeout)
        .max_header_size(l7.max_header_bytes)
        .keep_alive(true)
        // Head and body copied into one buffer, one write: +5 % req/s on small responses
        // over two-slice writev (measured; bodies are copied once, as HAProxy does).
        .writev(false);
    if l7.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        h1.max_headers(l7.max_headers);
    }
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(l7.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
}

/// Says where a vhost router listens (as admin and DNS do: with port 0 in tests, the log is
/// where a client learns the port).
fn log_listening(what: &str, listener: &TcpListener) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!("l7 {what} listening on {addr}"),
        Err(e) => tracing::warn!(error = %e, "l7 {what}: no local address"),
    }
}

/// A listening socket with `SO_REUSEADDR` (a restarted ferryman binds while old connections
/// are in TIME_WAIT) and a backlog for bursts of short connections.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until `token`; at `l7.max_connections` it stops accepting until a connection ends
/// (one accepted client waits unserved, the next ones in the kernel's accept queue, as with
/// HAProxy's `maxconn`).
async fn accept_loop<H: Handler>(
    ctx: Arc<Ctx<H>>,
    listener: TcpListener,
    frontend: Frontend,
    token: CancellationToken,
) {
    loop {
        let (stream, client) = tokio::select! {
            () = token.cancelled() => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(?frontend, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Accept first, then wait for a permit: a listener waiting in accept holds none, so
        // idle listeners never starve a busy one.
        let permit = match ctx.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::debug!(?frontend, "l7.max_connections reached: accepting paused");
                tokio::select! {
                    () = token.cancelled() => return,
                    p = ctx.permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                }
            }
        };
        let hold = conn::Hold {
            _permit: permit,
            _guard: ctx.stats.connection(frontend),
        };
        ctx.connections.spawn(conn::serve(
            ctx.clone(),
            stream,
            client,
            frontend,
            hold,
            token.clone(),
        ));
    }
}
