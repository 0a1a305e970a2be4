//! The L7 edge: HTTP/1.1, HTTP/2, WebSocket and TLS routing driven by Marathon-LB's `HAPROXY_*`
//! labels, so that apps deployed for Marathon-LB are served unchanged, and a deploy never
//! restarts a listener (routes are swapped, not reloaded).
//!
//! - [`labels`] (`model::haproxy`): one Marathon app's `HAPROXY_*` labels → typed per-service-port settings
//!   ([`labels::PortLabels`]), with Marathon-LB's defaults, precedence and backend naming, and
//!   errors that name the app, the label and the value.
//! - [`routes`]: one snapshot → the immutable [`routes::RouteTable`] (vhost/path router and
//!   per-service-port frontends, backends with their servers), in Marathon-LB's matching order.
//! - [`Table`] (here): a route table plus what the request path needs per backend (health
//!   states, balancer, statistics), built once per snapshot and published whole in
//!   [`Shared::table`] (`ArcSwap`): a request loads it once and never waits for the control plane.
//! - [`server`]: the listeners (`l7.http`, `l7.https`, http-mode service ports reconciled by
//!   diff), connection limits and timeouts, HTTP/1.1 and HTTP/2 (ALPN and prior knowledge).
//! - [`proxy`]: one request → route, access checks, backend pick, forwarding (pooled
//!   connections, upgrades, streaming bodies, retries), errors as 502/503/504.
//! - [`tls`]: certificates (`[l7.tls]`, `HAPROXY_{n}_SSL_CERT`), SNI, reload on change.
//! - [`auth`]: `HAPROXY_{n}_AUTH` basic auth against crypt(3) hashes.
//! - [`stats`]: per-backend statistics for `/metrics` and HAProxy's `/haproxy?stats;csv`.
//!
//! Like the rest of the data paths, this module reads the model (`model::Snapshot`) and uses
//! `balance` and `health`; never the discovery sources or another data path.

pub mod auth;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod stats;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Marathon-LB's labels are parsed in the model (the user-space L4 decides with the same rules
/// which service ports it leaves to this edge); re-exported under their L7 name.
pub use crate::model::haproxy as labels;

use crate::balance::Balancer;
use crate::config::{BackendProtocol, Config, L7Config};
use crate::health::{BackendState, Registry};
use routes::RouteTable;

/// What the request path reads per snapshot: the routes and, for each of its backends (same
/// order as [`RouteTable::backends`]), the runtime pieces.
pub struct Table {
    pub routes: RouteTable,
    pub backends: Vec<BackendRuntime>,
    /// The snapshot this table was built from (0 before the first).
    pub version: u64,
}

/// The runtime side of one [`routes::Backend`].
pub struct BackendRuntime {
    /// One per server, in [`routes::Backend::servers`] order; kept across tables while the
    /// server's id and address stay (health, ejections and counters survive a route change).
    pub states: Vec<Arc<BackendState>>,
    /// Built for this table's servers and weights (Marathon-LB's `BALANCE`).
    pub balancer: Balancer,
    /// The protocol spoken to this backend's servers.
    pub protocol: BackendProtocol,
    /// Statistics by Marathon-LB backend name, kept across tables.
    pub stats: Arc<stats::BackendStats>,
}

impl Table {
    pub fn empty() -> Table {
        Table {
            routes: RouteTable::default(),
            backends: Vec::new(),
            version: 0,
        }
    }
}

/// Which frontend accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `l7.http`: the vhost router.
    Http,
    /// `l7.https`: the vhost router behind TLS.
    Https,
    /// An http-mode service port: everything goes to its one backend.
    Port(u16),
}

/// What the request path knows of one client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub frontend: Frontend,
    /// The client's address (for `X-Forwarded-For`, ACLs and `source` balancing).
    pub client: SocketAddr,
    /// The address the client connected to (for `X-Forwarded-Port`).
    pub local: SocketAddr,
    /// Whether the connection is TLS (`X-Forwarded-Proto: https`, no redirect to HTTPS).
    pub tls: bool,
    /// The TLS server name the client sent (SNI), lowercased; the TLS router routes by it.
    pub sni: Option<Box<str>>,
}

impl ConnInfo {
    pub fn client_ip(&self) -> IpAddr {
        self.client.ip().to_canonical()
    }
}

/// State shared by every listener and request of the L7 edge.
pub struct Shared {
    pub config: Arc<Config>,
    pub table: ArcSwap<Table>,
    /// Health of the L7 backends (passive detection from proxied requests; active checks).
    pub registry: Registry,
    pub proxy: proxy::Proxy,
    pub stats: stats::Stats,
    pub auth: auth::Verifier,
    /// The certificate store when `l7.https` is set.
    pub certs: Option<tls::Certs>,
}

impl Shared {
    /// The shared state before the first snapshot (an empty table). Fails when `l7.https` is
    /// set and `[l7.tls]` names a certificate that cannot be loaded (the error names the key).
    pub fn new(config: Arc<Config>) -> Result<Arc<Shared>, tls::TlsError> {
        let certs = match config.l7.https {
            Some(_) => Some(tls::Certs::new(&config.l7.tls)?),
            None => None,
        };
        let policy = crate::health::HealthPolicy::from_config(&config.l4);
        let stats = stats::Stats::new();
        stats.set_listeners(config.l7.http.is_some(), config.l7.https.is_some());
        Ok(Arc::new(Shared {
            table: ArcSwap::from_pointee(Table::empty()),
            registry: Registry::private(policy),
            proxy: proxy::Proxy::new(&config.l7),
            stats,
            auth: auth::Verifier::new(),
            certs,
            config,
        }))
    }

    pub fn l7(&self) -> &L7Config {
        &self.config.l7
    }
}

impl Table {
    /// The table for `snapshot`: routes for `l7.group`, and per backend its servers' health
    /// states (reconciled in `registry`: a server that stays keeps its state), a balancer and
    /// its statistics handle. `cert_ok` vets `HAPROXY_{n}_SSL_CERT` paths (see
    /// [`RouteTable::build_with`]). Returns what was skipped, by app id, for the caller to log.
    pub fn build(
        snapshot: &crate::model::Snapshot,
        config: &Config,
        registry: &Registry,
        stats: &stats::Stats,
        cert_ok: &dyn Fn(&std::path::Path) -> Result<(), String>,
    ) -> (Table, Vec<(String, routes::RouteError)>) {
        let (routes, errors) = RouteTable::build_with(snapshot, &config.l7.group, cert_ok);
        registry.reconcile(routes.backends().iter().flat_map(|b| {
            b.servers
                .iter()
                .map(|s| (s.id, SocketAddr::new(s.ip, s.port)))
        }));
        let backends = routes
            .backends()
            .iter()
            .map(|b| {
                let states: Vec<Arc<BackendState>> = b
                    .servers
                    .iter()
                    .map(|s| {
                        let addr = SocketAddr::new(s.ip, s.port);
                        registry
                            .get(s.id)
                            .filter(|st| st.addr == addr)
                            .unwrap_or_else(|| {
                                Arc::new(BackendState::with_policy(s.id, addr, registry.policy()))
                            })
                    })
                    .collect();
                let slots: Vec<crate::balance::Slot> = b
                    .servers
                    .iter()
                    .map(|s| crate::balance::Slot {
                        id: s.id,
                        weight: s.weight,
                    })
                    .collect();
                BackendRuntime {
                    states,
                    balancer: Balancer::new(balance_kind(b.balance), &slots),
                    protocol: b.protocol.unwrap_or(config.l7.backend_protocol),
                    stats: stats.backend(&b.name),
                }
            })
            .collect();
        let table = Table {
            routes,
            backends,
            version: snapshot.version,
        };
        (table, errors)
    }
}

/// Marathon-LB's `HAPROXY_{n}_BALANCE` as one of our balancers: `roundrobin` → round robin
/// over the servers' weights, `leastconn` → weighted least connections, `source` → Maglev
/// on the client address (HAProxy hashes the source address too; Maglev keeps most clients
/// on their server when the set changes, as `hash-type consistent` would).
fn balance_kind(b: labels::Balance) -> crate::config::Balance {
    use crate::config::Balance as B;
    match b {
        labels::Balance::RoundRobin => B::Wrr,
        labels::Balance::LeastConn => B::Wlc,
        labels::Balance::Source => B::Maglev,
    }
}
