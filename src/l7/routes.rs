//! The L7 route table: which Marathon-LB backend serves an HTTP request, built once per
//! [`Snapshot`] and never mutated (the proxy will publish it whole with `ArcSwap`).
//!
//! Two kinds of frontend, as Marathon-LB generates them (upstream `mesosphere/marathon-lb`,
//! `marathon_lb.config()` and the `HAPROXY_HTTP_FRONTEND_ACL*` templates of `config.py`):
//! - the vhost router of `l7.http` (Marathon-LB's port 80 frontend): `hdr(host) -i <vhost>`,
//!   optionally `path_beg <prefix>`, → the port's backend;
//! - one frontend per http-mode service port, which sends everything to its backend
//!   (`HAPROXY_FRONTEND_BACKEND_GLUE` is an unconditional `use_backend`, so no path applies).
//!
//! Served ports: http mode, enabled (Marathon-LB's default, non-strict), in the `l7.group`
//! (`has_group`). An app with any bad label is skipped whole and reported, as `labels` explains.
//!
//! Matching order on one vhost, following upstream where it is well defined:
//! 1. higher `HAPROXY_{n}_BACKEND_WEIGHT` first (`http_frontend_list.sort(key=weight,
//!    reverse=True)`); a `PATH` raises the default weight to 1, so path routes are tried before
//!    catch-alls (weight 0);
//! 2. then, **unlike upstream**, the longer path prefix first: upstream keeps the order apps
//!    were sorted in (`sorted(apps, key=(appId, servicePort))`, a stable sort), so `/api` of
//!    app `/a` would make `/api/v2` of app `/b` unreachable; here `/api/v2` wins for its
//!    requests and nothing reachable upstream becomes unreachable;
//! 3. then app id and service port ascending (upstream's order).
//!
//! Host comparison is case-insensitive without the `:port` (`lower,regsub(:.*$,,)` as in the
//! `MAP_HTTP_FRONTEND_ACL` template; the plain `hdr(host) -i` ACL would miss `Host: a:80`).
//!
//! Other deliberate differences from upstream:
//! - a port with no servers keeps its routes (the proxy answers 503) instead of being dropped
//!   (upstream skips such an app, so its requests would fall through to another app's
//!   catch-all while it scales from zero);
//! - two backends claiming the same vhost and path prefix: upstream writes both ACLs and HAProxy
//!   serves the first; here the first in the order above wins too, and the loser is reported.
//!   Two backends on one service port (HAProxy would fail to bind the second, taking every app
//!   down) and two unrelated apps with the same backend name are reported the same way. The
//!   per-port frontends are keyed by port alone: two apps on one port with different
//!   `BIND_ADDR`s, which upstream binds side by side, are reported as a conflict for now.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::labels::{self, Balance, BasicAuth, LabelError, Mode, PortLabels};
use crate::config::BackendProtocol;
use crate::model::{BackendId, ClusterState, Service, Snapshot};

/// App label choosing the protocol spoken to the app's backends (`http1` or `h2`), over
/// `l7.backend_protocol`. Marathon-LB has no equivalent (HAProxy 1.x spoke HTTP/1.1 only).
pub const BACKEND_PROTOCOL_LABEL: &str = "FERRYMAN_L7_BACKEND_PROTOCOL";

/// Longest `Host` (without port) looked up: a DNS name is at most 253 characters, so a longer
/// header cannot name a vhost and is not copied into the stack buffer.
const MAX_HOST: usize = 255;

/// One upstream server of a backend (a task's address for this service port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Marathon-LB's server name (`host_ip_port`, or `ip_port` when the agent host is the task
    /// IP, every character outside `[A-Za-z0-9-]` → `_`): the `svname` of `/haproxy?stats;csv`
    /// that `zdd.py` looks for, and the `server` label of the metrics.
    pub name: String,
    /// The health overlay key (`health::HealthView` is keyed by it).
    pub id: BackendId,
    pub ip: IpAddr,
    pub port: u16,
    /// The snapshot's weight: 1 takes new requests, 0 drains.
    pub weight: u32,
}

/// A Marathon-LB backend: one service port of one app, or of a blue/green deployment group
/// (both colours' servers; settings of the older colour, see [`settings_source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Marathon-LB's backend name ([`labels::backend_name`]), for metrics and logs.
    pub name: String,
    /// The apps whose tasks are the servers, sorted (two for a blue/green switch).
    pub app_ids: Vec<String>,
    pub service_port: u16,
    /// `HAPROXY_{n}_BIND_ADDR` of the per-port frontend; `None` binds every address.
    pub bind_addr: Option<IpAddr>,
    /// Sorted by (ip, port), unique.
    pub servers: Vec<Server>,
    pub balance: Balance,
    pub sticky: bool,
    pub redirect_to_https: bool,
    pub use_hsts: bool,
    pub auth: Option<BasicAuth>,
    /// Client networks allowed; empty allows all.
    pub network_allowed: Vec<IpNet>,
    pub proxypass_path: Option<String>,
    pub revproxy_path: Option<String>,
    pub redirect_root: Option<String>,
    /// The settings app's first `HAPROXY_{n}_VHOST` (lowercased): Marathon-LB's `hostname`
    /// in `HTTP_BACKEND_PROXYPASS_GLUE` (`Host` sent to the servers),
    /// `HTTP_BACKEND_REVPROXY_GLUE` (which `Location` URLs are rewritten) and
    /// `HTTP_BACKEND_REDIR` (`is_domain`). `None` without a vhost.
    pub hostname: Option<String>,
    /// `HAPROXY_{n}_BACKEND_WEIGHT` (routing order, larger first).
    pub weight: i64,
    /// `HAPROXY_{n}_SSL_CERT` files of the members (for the TLS listener's SNI table).
    pub ssl_certs: Vec<PathBuf>,
    /// [`BACKEND_PROTOCOL_LABEL`] of the settings' app; `None` = `l7.backend_protocol`.
    pub protocol: Option<BackendProtocol>,
}

/// Why (part of) an app is not routed. The caller logs it; the other apps are served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error("vhost {host} path {path:?}: backend {backend} shadowed by {winner}")]
    VhostTaken {
        host: String,
        /// `None`: the catch-all route (no `PATH`).
        path: Option<String>,
        backend: String,
        winner: String,
    },
    #[error("service port {port}: backend {backend} shadowed by {winner}")]
    PortTaken {
        port: u16,
        backend: String,
        winner: String,
    },
    #[error("backend name {backend} already used by app {winner} (no shared deployment group)")]
    NameTaken { backend: String, winner: String },
    #[error("HAPROXY_{index}_SSL_CERT {path}: {reason}")]
    Cert {
        index: usize,
        path: PathBuf,
        reason: String,
    },
}

/// One route of a vhost: an optional `path_beg` prefix and the backend it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VhostRoute {
    prefix: Option<String>,
    case_insensitive: bool,
    backend: usize,
}

impl VhostRoute {
    fn matches(&self, path: &str) -> bool {
        let Some(prefix) = &self.prefix else {
            return true;
        };
        let Some(head) = path.as_bytes().get(..prefix.len()) else {
            return false;
        };
        if self.case_insensitive {
            head.eq_ignore_ascii_case(prefix.as_bytes())
        } else {
            head == prefix.as_bytes()
        }
    }
}

/// The immutable routing table of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Sorted by name.
    backends: Vec<Backend>,
    /// Lowercased vhost → routes in matching order (see the module doc).
    vhosts: HashMap<String, Vec<VhostRoute>>,
    /// Service port → backend (the per-port frontends).
    ports: BTreeMap<u16, usize>,
}

impl RouteTable {
    /// The table for `snapshot`'s apps in the L7 group `group`, and what was skipped, each with
    /// the app id it concerns (sorted by app id, then as found).
    pub fn build(snapshot: &Snapshot, group: &str) -> (RouteTable, Vec<(String, RouteError)>) {
        Self::build_with(snapshot, group, &|_| Ok(()))
    }

    /// [`RouteTable::build`], and an app whose served port names an `HAPROXY_{n}_SSL_CERT`
    /// that `cert_ok` refuses (missing, unreadable, no key) is skipped whole like one with a bad
    /// label, with the reason `cert_ok` gave.
    pub fn build_with(
        snapshot: &Snapshot,
        group: &str,
        cert_ok: &dyn Fn(&Path) -> Result<(), String>,
    ) -> (RouteTable, Vec<(String, RouteError)>) {
        let mut errors = Vec::new();
        let mut protocols: HashMap<&str, BackendProtocol> = HashMap::new();
        let services: HashMap<(&str, usize), &Service> = snapshot
            .services
            .iter()
            .map(|s| ((s.app_id.as_str(), s.port_index), &**s))
            .collect();

        // Served ports, grouped by backend name (apps are visited in id order, so the first
        // member of a group is the lowest app id).
        let mut by_name: BTreeMap<String, Vec<PortLabels>> = BTreeMap::new();
        for (id, app) in snapshot.state.apps.iter() {
            let ports = match labels::app_ports(app)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p,
                Err(e) => {
                    errors.push((id.clone(), RouteError::Label(e)));
                    continue;
                }
            };
            let served = |p: &PortLabels| {
                p.mode == Mode::Http && p.enabled(false) && (group == "*" || p.in_group(&[group]))
            };
            let bad_cert = ports.iter().filter(|p| served(p)).find_map(|p| {
                p.ssl_certs.iter().find_map(|path| {
                    cert_ok(path).err().map(|reason| RouteError::Cert {
                        index: p.index,
                        path: path.clone(),
                        reason,
                    })
                })
            });
            if let Some(e) = bad_cert {
                errors.push((id.clone(), e));
                continue;
            }
            if let Some(v) = app.labels.get(BACKEND_PROTOCOL_LABEL) {
                match BackendProtocol::parse(v) {
                    Some(p) => {
                        protocols.insert(id.as_str(), p);
                    }
                    None => {
                        errors.push((
                            id.clone(),
                            RouteError::Label(LabelError {
                                app_id: id.clone(),
                                label: BACKEND_PROTOCOL_LABEL.to_string(),
                                value: v.clone(),
                                reason: "want http1 or h2",
                            }),
                        ));
                        continue;
                    }
                }
            }
            for p in ports {
                if !served(&p) {
                    continue;
                }
                let members = by_name.entry(p.backend.clone()).or_default();
                if let Some(first) = members.first()
                    && (first.deployment.group.is_none()
                        || first.deployment.group != p.deployment.group)
                {
                    errors.push((
                        p.app_id.clone(),
                        RouteError::NameTaken {
                            backend: p.backend.clone(),
                            winner: first.app_id.clone(),
                        },
                    ));
                    continue;
                }
                members.push(p);
            }
        }

        let mut table = RouteTable::default();
        // Per host: (weight, app id, service port, route), before ordering.
        let mut candidates: BTreeMap<String, Vec<(i64, String, u16, VhostRoute)>> = BTreeMap::new();
        for (name, members) in by_name {
            let Some(first) = settings_source(&members) else {
                continue;
            };
            let index = table.backends.len();
            let mut servers: Vec<Server> = members
                .iter()
                .filter_map(|m| services.get(&(m.app_id.as_str(), m.index)))
                .flat_map(|s| s.backends.iter())
                .map(|b| Server {
                    name: server_name(&snapshot.state, &b.task_id, b.ip, b.port),
                    id: b.id,
                    ip: b.ip,
                    port: b.port,
                    weight: b.weight,
                })
                .collect();
            servers.sort_by_key(|s| (s.ip, s.port));
            servers.dedup_by_key(|s| (s.ip, s.port));
            let mut app_ids: Vec<String> = members.iter().map(|m| m.app_id.clone()).collect();
            app_ids.sort();
            app_ids.dedup();
            for m in &members {
                for host in &m.vhosts {
                    let prefixes: Vec<Option<&String>> = match &m.path {
                        Some(p) => p.prefixes.iter().map(Some).collect(),
                        None => vec![None],
                    };
                    for prefix in prefixes {
                        candidates.entry(host.clone()).or_default().push((
                            m.backend_weight,
                            m.app_id.clone(),
                            m.service_port,
                            VhostRoute {
                                prefix: prefix.cloned(),
                                case_insensitive: m
                                    .path
                                    .as_ref()
                                    .is_some_and(|p| p.case_insensitive),
                                backend: index,
                            },
                        ));
                    }
                }
            }
            table.backends.push(Backend {
                name,
                app_ids,
                service_port: first.service_port,
                bind_addr: first.bind_addr,
                servers,
                balance: first.balance,
                sticky: first.sticky,
                redirect_to_https: first.redirect_to_https,
                use_hsts: first.use_hsts,
                auth: first.auth.clone(),
                network_allowed: first.network_allowed.clone(),
                proxypass_path: first.proxypass_path.clone(),
                revproxy_path: first.revproxy_path.clone(),
                redirect_root: first.redirect_root.clone(),
                hostname: first.vhosts.first().cloned(),
                weight: first.backend_weight,
                ssl_certs: {
                    let mut certs: Vec<PathBuf> =
                        members.iter().flat_map(|m| m.ssl_certs.clone()).collect();
                    certs.sort();
                    certs.dedup();
                    certs
                },
                protocol: protocols.get(first.app_id.as_str()).copied(),
            });
        }

        // Per-port frontends: the lowest app id on a port wins.
        let mut port_order: Vec<usize> = (0..table.backends.len()).collect();
        port_order.sort_by(|&a, &b| {
            let (a, b) = (&table.backends[a], &table.backends[b]);
            (a.service_port, &a.app_ids).cmp(&(b.service_port, &b.app_ids))
        });
        for i in port_order {
            let b = &table.backends[i];
            match table.ports.get(&b.service_port) {
                None => {
                    table.ports.insert(b.service_port, i);
                }
                Some(&w) => errors.push((
                    b.app_ids.first().cloned().unwrap_or_default(),
                    RouteError::PortTaken {
                        port: b.service_port,
                        backend: b.name.clone(),
                        winner: table.backends[w].name.clone(),
                    },
                )),
            }
        }

        for (host, mut routes) in candidates {
            routes.sort_by(|a, b| {
                let key = |r: &(i64, String, u16, VhostRoute)| {
                    (
                        std::cmp::Reverse(r.0),
                        std::cmp::Reverse(r.3.prefix.as_ref().map(|p| p.len())),
                    )
                };
                key(a)
                    .cmp(&key(b))
                    .then_with(|| (&a.1, a.2).cmp(&(&b.1, b.2)))
            });
            let mut kept: Vec<VhostRoute> = Vec::with_capacity(routes.len());
            for (_, app_id, _, route) in routes {
                match kept.iter().find(|k| k.prefix == route.prefix) {
                    None => kept.push(route),
                    Some(k) if k.backend == route.backend => {}
                    Some(k) => errors.push((
                        app_id,
                        RouteError::VhostTaken {
                            host: host.clone(),
                            path: route.prefix.clone(),
                            backend: table.backends[route.backend].name.clone(),
                            winner: table.backends[k.backend].name.clone(),
                        },
                    )),
                }
            }
            table.vhosts.insert(host, kept);
        }

        errors.sort_by(|a, b| a.0.cmp(&b.0));
        (table, errors)
    }
}

/// Marathon-LB's server name for a task's address (see [`Server::name`]); the host is the
/// task's agent hostname, or the IP when the agent is unknown.
fn server_name(state: &ClusterState, task_id: &str, ip: IpAddr, port: u16) -> String {
    let ip = ip.to_string();
    let host = state
        .tasks
        .get(task_id)
        .and_then(|t| state.agents.get(&t.agent_id))
        .map(|a| a.hostname.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(&ip);
    let raw = if host == ip {
        format!("{ip}_{port}")
    } else {
        format!("{host}_{ip}_{port}")
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The member whose settings a merged blue/green backend takes: upstream `get_apps` keeps the
/// *old* app (earlier `HAPROXY_DEPLOYMENT_STARTED_AT`; a missing date counts as the earliest,
/// `datetime.min`) and appends the new colour's tasks to it. On a tie (upstream: whichever
/// Marathon listed second) the lower app id, so every node agrees. ISO 8601 timestamps of one
/// writer (`zdd.py`) compare correctly as strings.
///
/// Not done here: upstream also marks as many old tasks draining as the new colour has healthy
/// instances; the servers keep the snapshot's weights and health overlay instead.
fn settings_source(members: &[PortLabels]) -> Option<&PortLabels> {
    // `members` is in app id order; `min_by_key` keeps the first of equal keys.
    members.iter().min_by_key(|p| {
        let started = p.deployment.started_at.as_deref();
        (started.is_some(), started)
    })
}

impl RouteTable {
    /// The backend for a request to the vhost router: `host` is the `Host` header (or the
    /// HTTP/2 `:authority`), any case, with or without `:port`; `path` is the request path.
    /// The first route of the host whose prefix `path` begins with, in the module doc's order.
    /// Allocation-free: the host is lowercased into a stack buffer.
    pub fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        self.route_index(host, path)
            .and_then(|i| self.backends.get(i))
    }

    /// [`RouteTable::route`] as an index into [`RouteTable::backends`] (for per-backend state
    /// kept beside the table in the same order).
    pub fn route_index(&self, host: &str, path: &str) -> Option<usize> {
        let host = strip_port(host);
        if host.len() > MAX_HOST {
            return None;
        }
        let mut buf = [0u8; MAX_HOST];
        let lower = buf.get_mut(..host.len())?;
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps UTF-8 valid.
        let lower = std::str::from_utf8(lower).ok()?;
        self.vhosts
            .get(lower)?
            .iter()
            .find(|r| r.matches(path))
            .map(|r| r.backend)
    }

    /// The backend of the http frontend on service port `port` (every path).
    pub fn port_route(&self, port: u16) -> Option<&Backend> {
        self.ports.get(&port).and_then(|&i| self.backends.get(i))
    }

    /// [`RouteTable::port_route`] as an index into [`RouteTable::backends`].
    pub fn port_index(&self, port: u16) -> Option<usize> {
        self.ports.get(&port).copied()
    }

    /// The service ports with an http frontend, ascending (the listeners to open).
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// Every backend, sorted by name.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Whether nothing is routed (no listener needed beyond the vhost router).
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// `host` without a trailing `:port`; an IPv6 literal keeps its brackets (`[::1]:80` →
/// `[::1]`), which is how a vhost label would have to spell it.
fn strip_port(host: &str) -> &str {
    let cut = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => i,
        _ => return host,
    };
    if host.starts_with('[') || !host[..cut].contains(':') {
        &host[..cut]
    } else {
        // A bare IPv6 address without brackets has no port.
        host
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::discovery::decode::marathon_apps;
    use crate::discovery::decode::test_support::fixture;
    use crate::model::{App, ClusterState, Protocol};

    /// An app with service ports and labels; `servers[i]` are port `i`'s tasks (ip, port,
    /// weight).
    struct Spec<'a> {
        id: &'a str,
        ports: Vec<u16>,
        labels: &'a [(&'a str, &'a str)],
        servers: &'a [&'a [(&'a str, u16, u32)]],
    }

    fn snapshot(specs: &[Spec<'_>]) -> Snapshot {
        let mut state = ClusterState::default();
        let mut services = Vec::new();
        for s in specs {
            let app = App {
                id: s.id.to_string(),
                service_ports: s.ports.clone(),
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..App::default()
            };
            state.apps.insert(s.id.to_string(), Arc::new(app));
            for (index, servers) in s.servers.iter().enumerate() {
                services.push(Arc::new(Service {
                    app_id: s.id.to_string(),
                    port_index: index,
                    service_port: s.ports.get(index).copied().unwrap_or(0),
                    protocol: Protocol::Tcp,
                    backends: servers
                        .iter()
                        .map(|&(ip, port, weight)| crate::model::Backend {
                            id: BackendId(u64::from(port)),
                            ip: ip.parse().expect("test IP literal"),
                            port,
                            weight,
                            task_id: format!("{}.{port}", s.id).into(),
                            app_id: Some(s.id.into()),
                            agent_ip: None,
                        })
                        .collect(),
                }));
            }
        }
        Snapshot {
            version: 1,
            state: Arc::new(state),
            services,
            ..Snapshot::default()
        }
    }

    fn spec<'a>(id: &'a str, port: u16, labels: &'a [(&'a str, &'a str)]) -> Spec<'a> {
        Spec {
            id,
            ports: vec![port],
            labels,
            servers: &[&[("10.0.0.1", 31000, 1)]],
        }
    }

    fn build(specs: &[Spec<'_>]) -> (RouteTable, Vec<(String, RouteError)>) {
        RouteTable::build(&snapshot(specs), "external")
    }

    fn name<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        t.route(host, path).map(|b| b.name.as_str())
    }

    const EXT: (&str, &str) = ("HAPROXY_GROUP", "external");

    #[test]
    fn vhost_routes_to_the_port_backend_with_its_settings() {
        let (t, errors) = build(&[spec(
            "/team/web",
            10000,
            &[
                EXT,
                ("HAPROXY_0_VHOST", "Web.Example.com,www.example.com"),
                ("HAPROXY_0_STICKY", "true"),
                ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
                ("HAPROXY_0_USE_HSTS", "true"),
                ("HAPROXY_0_BALANCE", "leastconn"),
                ("HAPROXY_0_AUTH", "r:alice:$6$x$y"),
                ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/8"),
                ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/p"),
                ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/r"),
            ],
        )]);
        assert!(errors.is_empty(), "{errors:?}");
        let b = t.route("web.example.com", "/").expect("routed");
        assert_eq!(b.name, "team_web_10000");
        assert_eq!(b.app_ids, ["/team/web"]);
        assert_eq!(b.balance, Balance::LeastConn);
        assert!(b.sticky && b.redirect_to_https && b.use_hsts);
        assert_eq!(b.auth.as_ref().map(|a| a.user.as_str()), Some("alice"));
        assert_eq!(b.network_allowed.len(), 1);
        assert_eq!(b.proxypass_path.as_deref(), Some("/p"));
        assert_eq!(b.revproxy_path.as_deref(), Some("/r"));
        // Marathon-LB's `hostname`: the first vhost, lowercased.
        assert_eq!(b.hostname.as_deref(), Some("web.example.com"));
        assert_eq!(
            b.servers,
            [Server {
                name: "10_0_0_1_31000".into(),
                id: BackendId(31000),
                ip: "10.0.0.1".parse().unwrap(),
                port: 31000,
                weight: 1
            }]
        );
        assert_eq!(name(&t, "www.example.com", "/x"), Some("team_web_10000"));
        assert_eq!(name(&t, "other.example.com", "/"), None);
        assert_eq!(name(&t, "example.com", "/"), None, "no suffix match");
    }

    #[test]
    fn host_is_case_and_port_insensitive() {
        let (t, _) = build(&[spec(
            "/web",
            10000,
            &[EXT, ("HAPROXY_0_VHOST", "Web.Example.COM")],
        )]);
        for host in [
            "web.example.com",
            "WEB.example.com:80",
            "web.EXAMPLE.com:8443",
        ] {
            assert_eq!(name(&t, host, "/"), Some("web_10000"), "{host}");
        }
        assert_eq!(name(&t, "web.example.com.evil", "/"), None);
        assert_eq!(name(&t, &"a".repeat(300), "/"), None, "over-long host");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.b:8080"), "a.b");
    }

    /// A `PATH` route (weight 1) is tried before the catch-all (weight 0) whatever the app ids;
    /// `path_beg` is a prefix match, case-sensitive unless `-i`; several prefixes each route.
    #[test]
    fn path_routes_before_catch_all() {
        let (t, errors) = build(&[
            spec("/a-root", 10000, &[EXT, ("HAPROXY_0_VHOST", "h.example")]),
            spec(
                "/z-api",
                10001,
                &[
                    EXT,
                    ("HAPROXY_0_VHOST", "h.example"),
                    ("HAPROXY_0_PATH", "/api /v2"),
                ],
            ),
            spec(
                "/z-img",
                10002,
                &[
                    EXT,
                    ("HAPROXY_0_VHOST", "h.example"),
                    ("HAPROXY_0_PATH", "-i /img"),
                ],
            ),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(name(&t, "h.example", "/api/users"), Some("z-api_10001"));
        assert_eq!(name(&t, "h.example", "/v2"), Some("z-api_10001"));
        assert_eq!(name(&t, "h.example", "/API"), Some("a-root_10000"));
        assert_eq!(name(&t, "h.example", "/IMG/x.png"), Some("z-img_10002"));
        assert_eq!(name(&t, "h.example", "/ap"), Some("a-root_10000"));
        assert_eq!(name(&t, "h.example", "/"), Some("a-root_10000"));
    }

    /// Equal weights: the longer prefix first (upstream would shadow `/api/v2` under `/api`);
    /// an explicit `BACKEND_WEIGHT` still orders first, as upstream.
    #[test]
    fn weights_then_longest_prefix() {
        let (t, _) = build(&[
            spec(
                "/a",
                1,
                &[EXT, ("HAPROXY_0_VHOST", "h"), ("HAPROXY_0_PATH", "/api")],
            ),
            spec(
                "/b",
                2,
                &[EXT, ("HAPROXY_0_VHOST", "h"), ("HAPROXY_0_PATH", "/api/v2")],
            ),
        ]);
        assert_eq!(name(&t, "h", "/api/v2/x"), Some("b_2"));
        assert_eq!(name(&t, "h", "/api/v1"), Some("a_1"));

        // A catch-all with weight 5 beats path routes of weight 1 (upstream order).
        let (t, _) = build(&[
            spec(
                "/a",
                1,
                &[EXT, ("HAPROXY_0_VHOST", "h"), ("HAPROXY_0_PATH", "/api")],
            ),
            spec(
                "/b",
                2,
                &[
                    EXT,
                    ("HAPROXY_0_VHOST", "h"),
                    ("HAPROXY_0_BACKEND_WEIGHT", "5"),
                ],
            ),
        ]);
        assert_eq!(name(&t, "h", "/api"), Some("b_2"));
        assert_eq!(t.port_route(2).map(|b| b.weight), Some(5));
    }

    /// Two apps on the same vhost and path: the lower app id wins (upstream's sorted order) and
    /// the other is reported; its other routes and its port frontend stay.
    #[test]
    fn conflicting_vhost_lower_app_id_wins_and_is_reported() {
        let (t, errors) = build(&[
            spec("/b", 2, &[EXT, ("HAPROXY_0_VHOST", "h,only-b")]),
            spec("/a", 1, &[EXT, ("HAPROXY_0_VHOST", "h")]),
        ]);
        assert_eq!(name(&t, "h", "/"), Some("a_1"));
        assert_eq!(name(&t, "only-b", "/"), Some("b_2"));
        assert_eq!(t.port_route(2).map(|b| b.name.as_str()), Some("b_2"));
        assert_eq!(
            errors,
            [(
                "/b".to_string(),
                RouteError::VhostTaken {
                    host: "h".into(),
                    path: None,
                    backend: "b_2".into(),
                    winner: "a_1".into()
                }
            )]
        );
        // Same result whatever the insertion order (the snapshot's apps are sorted anyway).
        let (again, _) = build(&[
            spec("/a", 1, &[EXT, ("HAPROXY_0_VHOST", "h")]),
            spec("/b", 2, &[EXT, ("HAPROXY_0_VHOST", "h,only-b")]),
        ]);
        assert_eq!(again, t);
    }

    /// Each http port has its own frontend (every path); tcp ports and disabled ports none;
    /// two apps on one service port: the lower app id keeps it.
    #[test]
    fn service_port_frontends() {
        let (t, errors) = build(&[
            Spec {
                id: "/multi",
                ports: vec![10000, 10001, 10002],
                labels: &[
                    EXT,
                    ("HAPROXY_0_MODE", "http"),
                    ("HAPROXY_1_ENABLED", "false"),
                    ("HAPROXY_1_MODE", "http"),
                ],
                servers: &[&[("10.0.0.1", 1, 1)], &[("10.0.0.2", 2, 1)], &[]],
            },
            spec("/other", 10000, &[EXT, ("HAPROXY_0_MODE", "http")]),
        ]);
        assert_eq!(t.ports().collect::<Vec<_>>(), [10000]);
        assert_eq!(
            t.port_route(10000).map(|b| b.name.as_str()),
            Some("multi_10000")
        );
        assert!(t.port_route(10001).is_none(), "disabled");
        assert!(t.port_route(10002).is_none(), "tcp");
        assert_eq!(
            errors,
            [(
                "/other".to_string(),
                RouteError::PortTaken {
                    port: 10000,
                    backend: "other_10000".into(),
                    winner: "multi_10000".into()
                }
            )]
        );
        // A port with no vhost is not on the vhost router.
        assert!(t.route("multi", "/").is_none());
    }

    #[test]
    fn group_filtering() {
        let specs = [
            spec("/ext", 1, &[EXT, ("HAPROXY_0_VHOST", "ext")]),
            spec(
                "/int",
                2,
                &[("HAPROXY_GROUP", "internal"), ("HAPROXY_0_VHOST", "int")],
            ),
            spec(
                "/port-group",
                3,
                &[
                    ("HAPROXY_GROUP", "internal"),
                    ("HAPROXY_0_GROUP", "external"),
                    ("HAPROXY_0_VHOST", "pg"),
                ],
            ),
            spec("/none", 4, &[("HAPROXY_0_VHOST", "none")]),
        ];
        let snap = snapshot(&specs);
        let (t, _) = RouteTable::build(&snap, "external");
        let names: Vec<&str> = t.backends().iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["ext_1", "port-group_3"]);
        assert!(t.route("int", "/").is_none() && t.route("none", "/").is_none());
        let (all, _) = RouteTable::build(&snap, "*");
        assert_eq!(all.backends().len(), 4, "* serves every group and none");
        let (int, _) = RouteTable::build(&snap, "internal");
        assert_eq!(name(&int, "int", "/"), Some("int_2"));
    }

    /// A bad label skips that app only, reported with the label error.
    #[test]
    fn bad_label_skips_only_that_app() {
        let (t, errors) = build(&[
            spec(
                "/bad",
                1,
                &[
                    EXT,
                    ("HAPROXY_0_VHOST", "bad"),
                    ("HAPROXY_0_BALANCE", "uri"),
                ],
            ),
            spec("/good", 2, &[EXT, ("HAPROXY_0_VHOST", "good")]),
        ]);
        assert_eq!(name(&t, "good", "/"), Some("good_2"));
        assert!(t.route("bad", "/").is_none() && t.port_route(1).is_none());
        let [(app, RouteError::Label(e))] = errors.as_slice() else {
            panic!("{errors:?}")
        };
        assert_eq!(
            (app.as_str(), e.label.as_str()),
            ("/bad", "HAPROXY_0_BALANCE")
        );
    }

    /// Server weights come from the snapshot (0 = draining stays listed); servers are unique.
    #[test]
    fn server_weights_and_order() {
        let (t, _) = build(&[Spec {
            id: "/w",
            ports: vec![1],
            labels: &[EXT, ("HAPROXY_0_VHOST", "w")],
            servers: &[&[
                ("10.0.0.2", 80, 1),
                ("10.0.0.1", 80, 0),
                ("10.0.0.2", 80, 1),
            ]],
        }]);
        let b = t.route("w", "/").expect("routed");
        let got: Vec<(String, u32)> = b
            .servers
            .iter()
            .map(|s| (format!("{}:{}", s.ip, s.port), s.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:80".to_string(), 0),
                ("10.0.0.2:80".to_string(), 1)
            ]
        );
    }

    /// Blue/green by labels: both colours feed one backend; an unrelated app whose name
    /// collides is reported, not merged.
    #[test]
    fn blue_green_union_and_name_collision() {
        let dg = |colour: &'static str,
                  started: &'static str,
                  balance: &'static str|
         -> Vec<(&'static str, &'static str)> {
            vec![
                EXT,
                ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
                ("HAPROXY_DEPLOYMENT_COLOUR", colour),
                ("HAPROXY_DEPLOYMENT_STARTED_AT", started),
                ("HAPROXY_0_BALANCE", balance),
                ("HAPROXY_0_PORT", "10000"),
                ("HAPROXY_0_VHOST", "shop"),
            ]
        };
        // Blue is the new colour (later start) although its id sorts first; green's settings
        // apply, as upstream keeps the old app and appends the new one's tasks.
        let (blue, green) = (
            dg("blue", "2016-02-01T14:57:54.371005", "leastconn"),
            dg("green", "2016-02-01T14:13:42.499089", "source"),
        );
        let (t, errors) = build(&[
            Spec {
                id: "/a-shop-blue",
                ports: vec![10001],
                labels: &blue,
                servers: &[&[("10.0.0.1", 1, 1)]],
            },
            Spec {
                id: "/a-shop-green",
                ports: vec![10002],
                labels: &green,
                servers: &[&[("10.0.0.2", 2, 1)]],
            },
            spec("/shop", 10000, &[EXT, ("HAPROXY_0_MODE", "http")]),
        ]);
        let b = t.route("shop", "/").expect("routed");
        assert_eq!(b.name, "shop_10000");
        assert_eq!(b.app_ids, ["/a-shop-blue", "/a-shop-green"]);
        assert_eq!(b.balance, Balance::Source, "the older colour's settings");
        assert_eq!(b.servers.len(), 2);
        assert_eq!(t.backends().len(), 1);
        assert_eq!(
            errors,
            [(
                "/shop".to_string(),
                RouteError::NameTaken {
                    backend: "shop_10000".into(),
                    winner: "/a-shop-blue".into()
                }
            )],
            "the group (lowest id first) holds the name; the unrelated /shop is not merged"
        );
    }

    /// zdd_apps.json through the real decoder and `Snapshot::build`: both colours of
    /// deployment group `nginx` serve backend `nginx_10000` with the tasks of both.
    #[test]
    fn zdd_fixture_blue_green_union() {
        let state = marathon_apps(&fixture("marathon/zdd_apps.json")).expect("fixture decodes");
        let snap = Snapshot::build(&Arc::new(state), &Config::default(), &Snapshot::empty());
        let (t, errors) = RouteTable::build(&snap, "external");
        assert!(errors.is_empty(), "{errors:?}");
        let b = t.port_route(10000).expect("nginx_10000 served");
        assert_eq!(b.name, "nginx_10000");
        assert_eq!(b.app_ids.len(), 2, "{:?}", b.app_ids);
        let expected: usize = snap
            .services
            .iter()
            .filter(|s| b.app_ids.iter().any(|a| *a == s.app_id))
            .map(|s| s.backends.len())
            .sum();
        assert!(expected >= 2, "fixture tasks in the snapshot: {expected}");
        assert_eq!(b.servers.len(), expected);
    }

    /// ci-docker_bridge.json (one app definition as posted, no tasks): a VHOST app of group
    /// external, routed with no servers yet (503, not another app). As posted it has no
    /// `servicePort` (Marathon assigns one; upstream `get_service_ports` would find no port
    /// either), so the test assigns 10000 as Marathon would; `HAPROXY_0_PORT` makes it 10100.
    #[test]
    fn ci_fixture_vhost() {
        let body = [
            &b"{\"app\": "[..],
            &fixture("marathon/ci-docker_bridge.json"),
            b"}",
        ]
        .concat();
        let mut state = marathon_apps(&body).expect("fixture decodes");
        let app = state
            .apps
            .get_mut("/nginx-docker-bridge")
            .expect("fixture app");
        Arc::make_mut(app).service_ports = vec![10000];
        let snap = Snapshot::build(&Arc::new(state), &Config::default(), &Snapshot::empty());
        let (t, errors) = RouteTable::build(&snap, "external");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            name(&t, "NGINX-docker-bridge.test:80", "/"),
            Some("nginx-docker-bridge_10100"),
        );
        assert!(t.port_route(10100).is_some_and(|b| b.servers.is_empty()));
        assert!(
            t.port_route(10000).is_none(),
            "HAPROXY_0_PORT replaces the service port"
        );
        assert!(RouteTable::build(&snap, "internal").0.is_empty());
    }
}
