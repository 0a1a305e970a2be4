//! Listeners reconciled from each snapshot by diff.
//!
//! A snapshot asks for one listener per VIP (VIP ip:port/protocol, when the VIP link is usable)
//! and per Marathon-LB service port in TCP mode (`l4.bind`:service port/protocol). The running set
//! is diffed against it: a new key binds and starts a listener, a vanished key stops only that
//! listener, and a kept key whose backends, weights or balancer changed gets a new [`Pool`]
//! swapped in. Nothing else is touched: established connections hold their backend's `Arc` and
//! keep running (draining, see [`tcp`](super::tcp)).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::{Domain, Socket, Type};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Settings;
use crate::balance::{Balancer, Slot};
use crate::config::Balance;
use crate::health::{BackendState, Registry};
use crate::metrics::metrics;
use crate::model::{App, Backend, BackendId, Protocol, Snapshot, VipKey, haproxy};

pub use crate::balance::BALANCE_LABEL;

/// A listener's identity: protocol and bound address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// Whether a listener serves a VIP or a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vip,
    Service,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Vip => "vip",
            Kind::Service => "service",
        }
    }
}

/// What one listener serves, as the snapshot asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub balance: Balance,
    /// (id, address, weight) in snapshot order.
    pub backends: Vec<(BackendId, SocketAddr, u32)>,
}

// === impl Pool ===

/// The backends of one listener and their balancer, built together and swapped whole.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Arc<BackendState>>,
    /// Snapshot weights, in `backends` order (0 = draining).
    pub weights: Vec<u32>,
    pub balancer: Balancer,
}

impl Pool {
    pub fn empty(balance: Balance) -> Pool {
        Pool {
            backends: Vec::new(),
            weights: Vec::new(),
            balancer: Balancer::new(balance, &[]),
        }
    }

    /// Whether backend `id` is in the pool and takes new connections (weight > 0).
    pub fn serves(&self, id: BackendId) -> bool {
        self.backends
            .iter()
            .zip(&self.weights)
            .any(|(b, w)| b.id == id && *w > 0)
    }
}

/// A listener's current pool, and a signal that fires when it is replaced or the listener is
/// removed (connections watch it to start draining).
#[derive(Debug)]
pub struct PoolHandle {
    current: ArcSwap<Pool>,
    changed: watch::Sender<()>,
}

impl PoolHandle {
    pub fn new(pool: Pool) -> PoolHandle {
        PoolHandle {
            current: ArcSwap::from_pointee(pool),
            changed: watch::Sender::new(()),
        }
    }

    /// The pool now (one atomic load).
    pub fn load(&self) -> Arc<Pool> {
        self.current.load_full()
    }

    pub fn store(&self, pool: Pool) {
        self.current.store(Arc::new(pool));
        self.changed.send_replace(());
    }

    /// A receiver that sees each replacement; it errors once the listener is gone.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// Shared by a subsystem's listener and connection tasks.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub settings: Arc<Settings>,
    /// `l4.max_connections` permits, shared by every TCP listener.
    pub limit: Arc<Semaphore>,
    pub tasks: TaskTracker,
    /// Cancelled at subsystem shutdown: every listener and connection ends.
    pub shutdown: CancellationToken,
}

struct Running {
    target: Target,
    pool: Arc<PoolHandle>,
    /// Stops this listener's task (not its connections).
    stop: CancellationToken,
    local: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    /// Kept listeners whose pool was rebuilt.
    pub rebuilt: usize,
    /// Listeners that could not bind (retried on the next snapshot).
    pub failed: usize,
}

// === impl Listeners ===

/// The running listeners of the L4 subsystem.
pub struct Listeners {
    ctx: Arc<Ctx>,
    registry: Registry,
    running: BTreeMap<ListenerKey, Running>,
}

impl Listeners {
    pub fn new(settings: Arc<Settings>, registry: Registry, shutdown: CancellationToken) -> Self {
        let limit = Arc::new(Semaphore::new(settings.max_connections));
        Listeners {
            ctx: Arc::new(Ctx {
                settings,
                limit,
                tasks: TaskTracker::new(),
                shutdown,
            }),
            registry,
            running: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The address a running listener is bound to.
    pub fn local_addr(&self, key: &ListenerKey) -> Option<SocketAddr> {
        self.running.get(key).map(|r| r.local)
    }

    /// The keys of the running listeners.
    pub fn keys(&self) -> Vec<ListenerKey> {
        self.running.keys().copied().collect()
    }

    /// The current pool of a running listener.
    pub fn pool(&self, key: &ListenerKey) -> Option<Arc<Pool>> {
        self.running.get(key).map(|r| r.pool.load())
    }

    /// Tasks (listeners and connections) running now.
    pub fn tasks(&self) -> usize {
        self.ctx.tasks.len()
    }

    /// Makes the running listeners match `snapshot` (VIP listeners only when `vips` is true).
    /// Must run inside the tokio runtime.
    pub fn reconcile(&mut self, snapshot: &Snapshot, vips: bool) -> Reconciled {
        let targets = targets(snapshot, &self.ctx.settings, vips);
        let mut done = Reconciled::default();

        // The registry holds the backends of the listeners and of every VIP, also without VIP
        // listeners: the eBPF fast path serves VIPs from health the registry keeps (checks).
        let every_vip = (!vips).then(|| self::targets(snapshot, &self.ctx.settings, true));
        let health_targets = every_vip.as_ref().unwrap_or(&targets);
        self.registry.reconcile(
            health_targets
                .values()
                .flat_map(|t| t.backends.iter().map(|(id, addr, _)| (*id, *addr))),
        );
        self.registry.set_membership(
            health_targets
                .iter()
                .map(|(k, t)| {
                    let label = VipKey {
                        protocol: k.protocol,
                        ip: k.addr.ip(),
                        port: k.addr.port(),
                    }
                    .to_string();
                    (label, t.backends.iter().map(|b| b.0).collect())
                })
                .collect(),
        );

        let before = self.running.len();
        self.running.retain(|k, _| targets.contains_key(k));
        done.removed = before - self.running.len();

        for (key, target) in targets {
            match self.running.get(&key).map(|r| r.target == target) {
                Some(true) => {}
                Some(false) => {
                    let pool = self.build_pool(&target);
                    if let Some(r) = self.running.get_mut(&key) {
                        r.pool.store(pool);
                        r.target = target;
                        done.rebuilt += 1;
                    }
                }
                None => match self.start(key, &target) {
                    Ok(running) => {
                        self.running.insert(key, running);
                        done.added += 1;
                    }
                    Err(e) => {
                        done.failed += 1;
                        tracing::warn!(
                            error = %e,
                            vip = %key.addr,
                            protocol = %key.protocol,
                            "cannot bind an l4 listener; retried on the next snapshot"
                        );
                    }
                },
            }
        }
        self.export_counts();
        done
    }

    fn export_counts(&self) {
        let m = &metrics().l4_listeners;
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            for kind in [Kind::Vip, Kind::Service] {
                let n = self
                    .running
                    .iter()
                    .filter(|(k, r)| k.protocol == protocol && r.target.kind == kind)
                    .count();
                m.with_label_values(&[protocol.as_str(), kind.as_str()])
                    .set(n as i64);
            }
        }
    }

    fn build_pool(&self, target: &Target) -> Pool {
        let backends: Vec<Arc<BackendState>> = target
            .backends
            .iter()
            .map(|(id, addr, _)| {
                self.registry
                    .get(*id)
                    .unwrap_or_else(|| Arc::new(BackendState::new(*id, *addr)))
            })
            .collect();
        let slots: Vec<Slot> = target
            .backends
            .iter()
            .map(|(id, _, weight)| Slot {
                id: *id,
                weight: *weight,
            })
            .collect();
        Pool {
            backends,
            weights: target.backends.iter().map(|b| b.2).collect(),
            balancer: Balancer::new(target.balance, &slots),
        }
    }

    fn start(&self, key: ListenerKey, target: &Target) -> io::Result<Running> {
        let pool = Arc::new(PoolHandle::new(self.build_pool(target)));
        let stop = self.ctx.shutdown.child_token();
        let freebind = target.kind == Kind::Vip;
        let local = match key.protocol {
            Protocol::Tcp => {
                let listener = bind_tcp(key.addr, freebind)?;
                let local = listener.local_addr()?;
                self.ctx.tasks.spawn(super::tcp::serve(
                    listener,
                    pool.clone(),
                    self.ctx.clone(),
                    stop.clone(),
                ));
                local
            }
            Protocol::Udp => {
                let socket = bind_udp(key.addr, freebind)?;
                let local = socket.local_addr()?;
                self.ctx.tasks.spawn(super::udp::serve(
                    socket,
                    pool.clone(),
                    self.ctx.clone(),
                    stop.clone(),
                ));
                local
            }
        };
        tracing::info!(vip = %local, protocol = %key.protocol, kind = target.kind.as_str(), backends = target.backends.len(), "l4 listener started");
        Ok(Running {
            target: target.clone(),
            pool,
            stop,
            local,
        })
    }

    /// Stops every listener and connection and waits for their tasks.
    pub async fn shutdown(mut self) {
        self.running.clear();
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
        self.export_counts();
    }
}

/// A TCP listener socket: SO_REUSEADDR, and IP_FREEBIND for VIPs (bindable even while the
/// address is being added). Backlog 1024.
fn bind_tcp(addr: SocketAddr, freebind: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if freebind {
        set_freebind(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn bind_udp(addr: SocketAddr, freebind: bool) -> io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if freebind {
        set_freebind(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

fn set_freebind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}

// === targets ===

/// The VIP addresses of a snapshot (what the link must carry).
pub fn vip_addresses(snapshot: &Snapshot) -> BTreeSet<IpAddr> {
    snapshot.vips.iter().map(|v| v.key.ip).collect()
}

fn backend_list(backends: &[Backend]) -> Vec<(BackendId, SocketAddr, u32)> {
    backends
        .iter()
        .map(|b| (b.id, SocketAddr::new(b.ip, b.port), b.weight))
        .collect()
}

/// The listeners `snapshot` asks for: every VIP (when `vips`), and every service port of an app
/// in `settings.group` that Marathon-LB would serve in TCP mode. A service port taken twice (two
/// apps, same port and protocol) goes to the first in snapshot order.
pub fn targets(
    snapshot: &Snapshot,
    settings: &Settings,
    vips: bool,
) -> BTreeMap<ListenerKey, Target> {
    let mut out = BTreeMap::new();
    let apps = &snapshot.state.apps;
    if vips {
        for vip in &snapshot.vips {
            let app = vip
                .backends
                .iter()
                .find_map(|b| b.app_id.as_ref())
                .and_then(|id| apps.get(id.as_str()));
            let balance = app
                .and_then(|a| a.labels.get(BALANCE_LABEL))
                .and_then(|v| Balance::parse(v))
                .unwrap_or(settings.balance);
            out.insert(
                ListenerKey {
                    protocol: vip.key.protocol,
                    addr: SocketAddr::new(vip.key.ip, vip.key.port),
                },
                Target {
                    kind: Kind::Vip,
                    balance,
                    backends: backend_list(&vip.backends),
                },
            );
        }
    }
    for service in &snapshot.services {
        let Some(app) = apps.get(service.app_id.as_str()) else {
            continue;
        };
        if !in_group(app, service.port_index, &settings.group) || is_http(app, service.port_index) {
            continue;
        }
        let key = ListenerKey {
            protocol: service.protocol,
            addr: SocketAddr::new(settings.bind, service.service_port),
        };
        if out.contains_key(&key) {
            tracing::debug!(app_id = %service.app_id, port = service.service_port, "service port already taken");
            continue;
        }
        let balance = app
            .labels
            .get(BALANCE_LABEL)
            .or_else(|| port_label(app, service.port_index, "BALANCE"))
            .and_then(|v| Balance::parse(v))
            .unwrap_or(settings.balance);
        out.insert(
            key,
            Target {
                kind: Kind::Service,
                balance,
                backends: backend_list(&service.backends),
            },
        );
    }
    out
}

/// `HAPROXY_{index}_{what}`.
fn port_label<'a>(app: &'a App, index: usize, what: &str) -> Option<&'a String> {
    app.labels.get(&format!("HAPROXY_{index}_{what}"))
}

/// Whether Marathon-LB would serve the app's port `index` for a load balancer of group
/// `group` (`*` = every group): the port is enabled and in the group, with Marathon-LB's rules
/// (`model::haproxy`, which the L7 edge uses too, so both agree on every port). An app with a
/// bad `HAPROXY_*` label is served by neither (the L7 edge logs it), as Marathon-LB skips it.
pub fn in_group(app: &App, index: usize, group: &str) -> bool {
    haproxy::port_labels(app, index).is_ok_and(|p| p.enabled(false) && p.in_group(&[group]))
}

/// Whether Marathon-LB would serve the app's port `index` in http mode (left to the L7 edge):
/// `HAPROXY_{n}_MODE`, else an HTTP health check of the port (or of the port named by
/// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`), else a `HAPROXY_{n}_VHOST`; see
/// `model::haproxy` for the order. A port whose labels do not parse is not http.
pub fn is_http(app: &App, index: usize) -> bool {
    haproxy::port_labels(app, index).is_ok_and(|p| p.mode == haproxy::Mode::Http)
}
