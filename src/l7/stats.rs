//! Per-backend L7 statistics: Prometheus families in `/metrics` and HAProxy's CSV for
//! `/haproxy?stats;csv` (Marathon-LB's `zdd.py` reads it to decide when a blue/green switch
//! may go on).
//!
//! Nothing here costs more than atomics per request: a backend's metric handles are resolved
//! once when its [`BackendStats`] is created (kept by name across route tables), and the
//! per-server values (`ferryman_l7_server_*`, `ferryman_l7_backend_servers`, the server rows of
//! the CSV) are read at scrape time from the servers' `health::BackendState` atomics, which the
//! proxy bumps anyway, through the table last given to [`Stats::publish`].
//!
//! Label sets of backends (and service-port frontends, and apps) that left the table are
//! removed at [`Stats::publish`]; a request still in flight on a removed backend updates
//! handles no longer exported.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Frontend, Table};
use crate::health::clock;
use crate::metrics as names;

/// Marathon-LB's frontend of `l7.http` (template `HAPROXY_HTTP_FRONTEND_HEAD`).
pub const HTTP_FRONTEND: &str = "marathon_http_in";
/// Marathon-LB's frontend of `l7.https` (template `HAPROXY_HTTPS_FRONTEND_HEAD`).
pub const HTTPS_FRONTEND: &str = "marathon_https_in";

/// The column header of HAProxy's `show stat` CSV (HAProxy 1.x, as in the
/// `marathon/haproxy_stats.csv` fixture). `zdd.py` names its row fields after it and drops each
/// row's last field, so every row ends with a `,` as HAProxy's do.
pub const CSV_HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,";

/// Status classes of `ferryman_l7_requests_total` (`code` label), index = class − 1, then
/// `other` for a status outside 100..=599.
const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The process's L7 statistics (cheap to clone).
#[derive(Clone)]
pub struct Stats {
    inner: Arc<Inner>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

struct Inner {
    families: Families,
    /// By backend name; entries not in the published table are dropped at publish.
    backends: Mutex<HashMap<String, Arc<BackendStats>>>,
    http: Arc<FrontendStats>,
    https: Arc<FrontendStats>,
    /// Whether the `l7.http` / `l7.https` frontends are listed in the CSV.
    listeners: Mutex<(bool, bool)>,
    /// Service port → its frontend (named after the port's backend), rebuilt at publish.
    ports: ArcSwap<BTreeMap<u16, Arc<FrontendStats>>>,
    /// The table last published (CSV rows, scrape-time server metrics).
    table: ArcSwap<Table>,
    /// Apps with a `ferryman_l7_unsupported_labels` series.
    unsupported_apps: Mutex<Vec<String>>,
    /// `ferryman_l7_local_replies_total` without a backend, by reason, resolved on first use.
    no_backend: [OnceLock<IntCounter>; LocalReply::COUNT],
}

/// The metric families the statistics write (the process registry's, or private ones).
#[derive(Clone)]
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    active: IntGaugeVec,
    local: IntCounterVec,
    retries: IntCounterVec,
    connections: IntCounterVec,
    active_connections: IntGaugeVec,
    unsupported: IntGaugeVec,
    parked: IntGauge,
    skipped: IntGauge,
}

impl Families {
    fn global() -> Families {
        let m = names::metrics();
        Families {
            requests: m.l7_requests.clone(),
            duration: m.l7_request_duration.clone(),
            bytes_in: m.l7_bytes_in.clone(),
            bytes_out: m.l7_bytes_out.clone(),
            active: m.l7_active_requests.clone(),
            local: m.l7_local_replies.clone(),
            retries: m.l7_retries.clone(),
            connections: m.l7_connections.clone(),
            active_connections: m.l7_active_connections.clone(),
            unsupported: m.l7_unsupported_labels.clone(),
            parked: m.l7_parked_connections.clone(),
            skipped: m.l7_skipped_apps.clone(),
        }
    }

    /// Families registered nowhere (tests, detached handles): same names and labels.
    fn private() -> Families {
        use prometheus::{HistogramOpts, Opts};
        let counter = |name: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, "private"), labels).expect("valid metric")
        };
        let gauge = |name: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, "private"), labels).expect("valid metric")
        };
        Families {
            requests: counter(names::L7_REQUESTS_TOTAL, &["backend", "code"]),
            duration: HistogramVec::new(
                HistogramOpts::new(names::L7_REQUEST_DURATION_SECONDS, "private"),
                &["backend"],
            )
            .expect("valid metric"),
            bytes_in: counter(names::L7_BYTES_IN_TOTAL, &["backend"]),
            bytes_out: counter(names::L7_BYTES_OUT_TOTAL, &["backend"]),
            active: gauge(names::L7_ACTIVE_REQUESTS, &["backend"]),
            local: counter(names::L7_LOCAL_REPLIES_TOTAL, &["reason", "backend"]),
            retries: counter(names::L7_RETRIES_TOTAL, &["backend"]),
            connections: counter(names::L7_CONNECTIONS_TOTAL, &["frontend"]),
            active_connections: gauge(names::L7_ACTIVE_CONNECTIONS, &["frontend"]),
            unsupported: gauge(names::L7_UNSUPPORTED_LABELS, &["app"]),
            parked: IntGauge::new(names::L7_PARKED_CONNECTIONS, "private").expect("valid metric"),
            skipped: IntGauge::new(names::L7_SKIPPED_APPS, "private").expect("valid metric"),
        }
    }
}

/// Counters of one Marathon-LB backend (by name), kept across route tables. Per-server
/// counters live in the servers' `health::BackendState` atomics (`active`, `total`,
/// `bytes_in`, `bytes_out`, `connect_failures`), which the proxy bumps.
pub struct BackendStats {
    name: String,
    /// `ferryman_l7_requests_total`, by [`CODES`].
    requests: [IntCounter; 6],
    duration: Histogram,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    active: IntGauge,
    retries: IntCounter,
    /// Requests started (HAProxy's `stot`/`lbtot` of the BACKEND row).
    started: AtomicU64,
    /// Local replies by [`LocalReply`] (CSV `dreq`, `econ`, `eresp`), and their series,
    /// resolved on first use (most backends never see most reasons).
    local_counts: [AtomicU64; LocalReply::COUNT],
    local: [OnceLock<IntCounter>; LocalReply::COUNT],
    local_family: IntCounterVec,
}

impl Default for BackendStats {
    /// Statistics exported nowhere (for tests of code that needs a handle).
    fn default() -> BackendStats {
        BackendStats::new("", &Families::private())
    }
}

/// Why the edge answered a request itself instead of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// No route for the host/path or port (503, as HAProxy without a default backend).
    NoRoute,
    /// A route but no server to take it (503).
    NoServer,
    /// Every connect attempt failed (502).
    ConnectFailed,
    /// The backend failed after connecting: reset, bad response (502).
    BadGateway,
    /// No response head within `l7.request_timeout` (504), or a response body the server
    /// stopped sending for that long (aborted; see [`BackendStats::body_timeout`]).
    Timeout,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL` refused the client (403).
    Denied,
    /// `HAPROXY_{n}_AUTH` asked for credentials (401).
    Unauthorized,
    /// `HAPROXY_{n}_REDIRECT_TO_HTTPS` or `HTTP_BACKEND_REDIRECT` (301/302).
    Redirect,
    /// A request the edge refuses before routing (400), e.g. more than one `Host`.
    BadRequest,
}

impl LocalReply {
    const COUNT: usize = 9;
    const ALL: [LocalReply; LocalReply::COUNT] = [
        LocalReply::NoRoute,
        LocalReply::NoServer,
        LocalReply::ConnectFailed,
        LocalReply::BadGateway,
        LocalReply::Timeout,
        LocalReply::Denied,
        LocalReply::Unauthorized,
        LocalReply::Redirect,
        LocalReply::BadRequest,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalReply::NoRoute => "no_route",
            LocalReply::NoServer => "no_server",
            LocalReply::ConnectFailed => "connect_failed",
            LocalReply::BadGateway => "bad_gateway",
            LocalReply::Timeout => "timeout",
            LocalReply::Denied => "denied",
            LocalReply::Unauthorized => "unauthorized",
            LocalReply::Redirect => "redirect",
            LocalReply::BadRequest => "bad_request",
        }
    }

    /// Index into [`CODES`] of the status the edge answers with.
    fn code_class(self) -> usize {
        match self {
            LocalReply::Redirect => 2,
            LocalReply::Denied | LocalReply::Unauthorized | LocalReply::BadRequest => 3,
            _ => 4,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Decrements the active-request gauge when dropped.
pub struct ActiveGuard {
    stats: Arc<BackendStats>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active.dec();
    }
}

/// Statistics of one frontend (a listener): connections accepted and open.
struct FrontendStats {
    name: String,
    total: IntCounter,
    active: IntGauge,
}

impl FrontendStats {
    fn new(name: &str, f: &Families) -> FrontendStats {
        FrontendStats {
            name: name.to_string(),
            total: f.connections.with_label_values(&[name]),
            active: f.active_connections.with_label_values(&[name]),
        }
    }

    fn remove_labels(&self, f: &Families) {
        // Errors only say the set was not there (already removed by a same-named frontend).
        let _ = f.connections.remove_label_values(&[&self.name]);
        let _ = f.active_connections.remove_label_values(&[&self.name]);
    }
}

/// Statistics registered with the scrape-time collector (the first [`Stats::new`] registers it).
static LIVE: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

impl Stats {
    /// Statistics in the process registry (`/metrics`). Several in one process (tests) share
    /// the families: same backend names share series.
    pub fn new() -> Stats {
        let stats = Stats::with_families(Families::global());
        {
            let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&stats.inner));
        }
        REGISTER.call_once(|| {
            let registry = &names::metrics().registry;
            if let Err(e) = registry.register(Box::new(ServerCollector::new())) {
                tracing::warn!(error = %e, "cannot register the per-server L7 metrics");
            }
        });
        stats
    }

    /// Statistics exported nowhere (tests: values read through [`Stats::csv`] and handles).
    pub fn private() -> Stats {
        Stats::with_families(Families::private())
    }

    fn with_families(families: Families) -> Stats {
        Stats {
            inner: Arc::new(Inner {
                http: Arc::new(FrontendStats::new(HTTP_FRONTEND, &families)),
                https: Arc::new(FrontendStats::new(HTTPS_FRONTEND, &families)),
                listeners: Mutex::new((true, true)),
                ports: ArcSwap::from_pointee(BTreeMap::new()),
                backends: Mutex::new(HashMap::new()),
                table: ArcSwap::from_pointee(Table::empty()),
                unsupported_apps: Mutex::new(Vec::new()),
                no_backend: [const { OnceLock::new() }; LocalReply::COUNT],
                families,
            }),
        }
    }

    /// Which of the `l7.http` and `l7.https` frontends exist (their CSV FRONTEND rows); both
    /// until told.
    pub fn set_listeners(&self, http: bool, https: bool) {
        *self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (http, https);
    }

    /// The statistics of backend `name`, created on first use and kept across tables.
    pub fn backend(&self, name: &str) -> Arc<BackendStats> {
        let mut backends = self
            .inner
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        backends
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(BackendStats::new(name, &self.inner.families)))
            .clone()
    }

    /// The table now served (rows of the CSV; backends no longer in it are dropped from the
    /// CSV and their metric label sets removed).
    pub fn publish(&self, table: &Arc<Table>) {
        let inner = &self.inner;
        let f = &inner.families;
        inner.table.store(table.clone());
        {
            let mut backends = inner
                .backends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let keep: std::collections::HashSet<&str> = table
                .routes
                .backends()
                .iter()
                .map(|b| b.name.as_str())
                .collect();
            backends.retain(|name, stats| {
                let kept = keep.contains(name.as_str());
                if !kept {
                    stats.remove_labels(f);
                }
                kept
            });
        }
        // Service-port frontends, named after their backend (`frontend {backend}`,
        // Marathon-LB's `HAPROXY_FRONTEND_HEAD`).
        let old = inner.ports.load_full();
        let mut ports = BTreeMap::new();
        for port in table.routes.ports() {
            let Some(backend) = table.routes.port_route(port) else {
                continue;
            };
            let fe = match old.get(&port) {
                Some(fe) if fe.name == backend.name => fe.clone(),
                _ => Arc::new(FrontendStats::new(&backend.name, f)),
            };
            ports.insert(port, fe);
        }
        for (port, fe) in old.iter() {
            let same = ports.get(port).is_some_and(|n| Arc::ptr_eq(n, fe));
            let renamed_to = ports.values().any(|n| n.name == fe.name);
            if !same && !renamed_to {
                fe.remove_labels(f);
            }
        }
        inner.ports.store(Arc::new(ports));
    }

    /// HAProxy's `show stat` CSV (FRONTEND rows per listener, one row per server, a BACKEND
    /// row per backend), columns as the `haproxy_stats.csv` fixture.
    pub fn csv(&self) -> String {
        let inner = &self.inner;
        let table = inner.table.load_full();
        let now = clock::now_ms();
        let (http, https) = *inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(1024);
        out.push_str(CSV_HEADER);
        out.push('\n');
        let mut iid = 0u32;
        let mut frontend = |out: &mut String, fe: &FrontendStats| {
            iid += 1;
            let mut row = Row::new();
            row.set(PXNAME, &fe.name)
                .set(SVNAME, "FRONTEND")
                .num(SCUR, fe.active.get().max(0).unsigned_abs())
                .num(STOT, fe.total.get())
                .set(STATUS, "OPEN")
                .num(PID, 1)
                .num(IID, u64::from(iid))
                .num(SID, 0)
                .num(TYPE, 0);
            row.write(out);
        };
        if http {
            frontend(&mut out, &inner.http);
        }
        if https {
            frontend(&mut out, &inner.https);
        }
        for fe in inner.ports.load().values() {
            frontend(&mut out, fe);
        }
        for (i, (backend, runtime)) in table
            .routes
            .backends()
            .iter()
            .zip(&table.backends)
            .enumerate()
        {
            let iid = u64::from(iid) + 1 + i as u64;
            let stats = &runtime.stats;
            let (mut scur, mut weight, mut act) = (0u64, 0u64, 0u64);
            for (sid, (server, state)) in backend.servers.iter().zip(&runtime.states).enumerate() {
                let up = state.is_up_at(now);
                let status = server_status(server.weight, up);
                let active = u64::from(state.active());
                scur += active;
                if status == "UP" {
                    weight += u64::from(server.weight);
                    act += 1;
                }
                let total = load(&state.total);
                let failures = load(&state.connect_failures);
                let mut row = Row::new();
                row.set(PXNAME, &backend.name)
                    .set(SVNAME, &server.name)
                    .num(QCUR, 0)
                    .num(SCUR, active)
                    .num(STOT, total)
                    .num(BIN, load(&state.bytes_in))
                    .num(BOUT, load(&state.bytes_out))
                    .num(ECON, failures)
                    .set(STATUS, status)
                    .num(WEIGHT, u64::from(server.weight))
                    .num(ACT, 1)
                    .num(BCK, 0)
                    .num(CHKFAIL, failures)
                    .num(CHKDOWN, load(&state.ejections))
                    .num(PID, 1)
                    .num(IID, iid)
                    .num(SID, sid as u64 + 1)
                    .num(LBTOT, total)
                    .num(TYPE, 2);
                row.write(&mut out);
            }
            let hrsp: [u64; 6] = std::array::from_fn(|c| stats.requests[c].get());
            let local = |r: LocalReply| stats.local_counts[r.index()].load(Ordering::Relaxed);
            let started = stats.started.load(Ordering::Relaxed);
            let mut row = Row::new();
            row.set(PXNAME, &backend.name)
                .set(SVNAME, "BACKEND")
                .num(QCUR, 0)
                .num(SCUR, scur)
                .num(STOT, started)
                .num(BIN, stats.bytes_in.get())
                .num(BOUT, stats.bytes_out.get())
                .num(DREQ, local(LocalReply::Denied))
                .num(ECON, local(LocalReply::ConnectFailed))
                .num(
                    ERESP,
                    local(LocalReply::BadGateway) + local(LocalReply::Timeout),
                )
                .num(WRETR, stats.retries.get())
                .set(STATUS, if act > 0 { "UP" } else { "DOWN" })
                .num(WEIGHT, weight)
                .num(ACT, act)
                .num(BCK, 0)
                .num(PID, 1)
                .num(IID, iid)
                .num(SID, 0)
                .num(LBTOT, started)
                .num(TYPE, 1)
                .num(HRSP_1XX, hrsp[0])
                .num(HRSP_1XX + 1, hrsp[1])
                .num(HRSP_1XX + 2, hrsp[2])
                .num(HRSP_1XX + 3, hrsp[3])
                .num(HRSP_1XX + 4, hrsp[4])
                .num(HRSP_1XX + 5, hrsp[5])
                .num(REQ_TOT, hrsp.iter().sum());
            row.write(&mut out);
        }
        out
    }

    /// An idle connection parked (see `server::conn::PARK_AFTER`) until the guard drops.
    pub fn parked(&self) -> ParkedGuard {
        let g = self.inner.families.parked.clone();
        g.inc();
        ParkedGuard(g)
    }

    /// Idle connections parked now.
    pub fn parked_now(&self) -> i64 {
        self.inner.families.parked.get()
    }

    /// A client connection accepted (`Drop` of the guard: closed).
    pub fn connection(&self, frontend: Frontend) -> ConnGuard {
        let stats = match frontend {
            Frontend::Http => self.inner.http.clone(),
            Frontend::Https => self.inner.https.clone(),
            Frontend::Port(port) => match self.inner.ports.load().get(&port) {
                Some(fe) => fe.clone(),
                None => self.unknown_port(port),
            },
        };
        stats.total.inc();
        stats.active.inc();
        ConnGuard { stats }
    }

    /// A connection on a service port the published table does not name (a listener opened
    /// from a table not yet published): counted under `port_{port}` until the next publish.
    fn unknown_port(&self, port: u16) -> Arc<FrontendStats> {
        let f = &self.inner.families;
        let mut made = None;
        self.inner.ports.rcu(|ports| {
            let mut ports = BTreeMap::clone(ports);
            let fe = ports
                .entry(port)
                .or_insert_with(|| Arc::new(FrontendStats::new(&format!("port_{port}"), f)));
            made = Some(fe.clone());
            ports
        });
        made.unwrap_or_else(|| Arc::new(FrontendStats::new(&format!("port_{port}"), f)))
    }

    /// A request the edge answered itself (`backend`: the routed backend, when there was one).
    /// A routed one also counts in the backend's `ferryman_l7_requests_total` by the status
    /// class of the answer (HAProxy counts its own 503s in the backend's `hrsp_5xx`).
    pub fn local_reply(&self, reply: LocalReply, backend: Option<&BackendStats>) {
        match backend {
            Some(b) => b.local_reply(reply),
            None => self.inner.no_backend[reply.index()]
                .get_or_init(|| {
                    self.inner
                        .families
                        .local
                        .with_label_values(&[reply.as_str(), ""])
                })
                .inc(),
        }
    }

    /// `HAPROXY_{n}_*` template labels that cannot apply, counted per app (replaces the set).
    pub fn set_unsupported_labels(&self, per_app: Vec<(String, usize)>) {
        let f = &self.inner.families;
        let mut apps = self
            .inner
            .unsupported_apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let new: HashMap<&str, usize> = per_app
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(a, n)| (a.as_str(), *n))
            .collect();
        for app in apps.iter() {
            if !new.contains_key(app.as_str()) {
                let _ = f.unsupported.remove_label_values(&[app]);
            }
        }
        for (app, n) in &new {
            f.unsupported
                .with_label_values(&[app])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        *apps = new.keys().map(|a| a.to_string()).collect();
    }

    /// Apps skipped for bad labels or certificates in the current table.
    pub fn set_skipped_apps(&self, n: usize) {
        self.inner
            .families
            .skipped
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// An idle HTTP/1 client connection parked without hyper's buffers (`Drop`: woken or closed).
pub struct ParkedGuard(IntGauge);

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An open client connection of one frontend.
pub struct ConnGuard {
    stats: Arc<FrontendStats>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.stats.active.dec();
    }
}

impl BackendStats {
    fn new(name: &str, f: &Families) -> BackendStats {
        BackendStats {
            name: name.to_string(),
            requests: CODES.map(|code| f.requests.with_label_values(&[name, code])),
            duration: f.duration.with_label_values(&[name]),
            bytes_in: f.bytes_in.with_label_values(&[name]),
            bytes_out: f.bytes_out.with_label_values(&[name]),
            active: f.active.with_label_values(&[name]),
            retries: f.retries.with_label_values(&[name]),
            started: AtomicU64::new(0),
            local_counts: [const { AtomicU64::new(0) }; LocalReply::COUNT],
            local: [const { OnceLock::new() }; LocalReply::COUNT],
            local_family: f.local.clone(),
        }
    }

    /// Marathon-LB's backend name these statistics are for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One request routed to this backend starts (active gauge +1 until the guard drops).
    pub fn request_started(self: &Arc<Self>) -> ActiveGuard {
        self.active.inc();
        self.started.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            stats: self.clone(),
        }
    }

    /// The response head of a request went to the client: status class counter, latency
    /// (request start → response head) histogram.
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests[code_class(status)].inc();
        self.duration.observe(latency.as_secs_f64());
    }

    /// Body bytes relayed: `from_client` to the backend, `to_client` from it.
    pub fn add_bytes(&self, from_client: u64, to_client: u64) {
        if from_client > 0 {
            self.bytes_in.inc_by(from_client);
        }
        if to_client > 0 {
            self.bytes_out.inc_by(to_client);
        }
    }

    /// A retry to another server after a connect failure.
    pub fn retried(&self) {
        self.retries.inc();
    }

    fn local_reply(&self, reply: LocalReply) {
        self.count_local(reply);
        self.requests[reply.code_class()].inc();
    }

    /// A streamed response the server stopped sending for `l7.request_timeout`, aborted:
    /// counted as a [`LocalReply::Timeout`] (CSV `eresp`), not as a second request (its
    /// status was recorded when the head went out).
    pub fn body_timeout(&self) {
        self.count_local(LocalReply::Timeout);
    }

    fn count_local(&self, reply: LocalReply) {
        let i = reply.index();
        self.local_counts[i].fetch_add(1, Ordering::Relaxed);
        self.local[i]
            .get_or_init(|| {
                self.local_family
                    .with_label_values(&[reply.as_str(), &self.name])
            })
            .inc();
    }

    /// Removes this backend's label sets from the families (it left the table).
    fn remove_labels(&self, f: &Families) {
        let name = self.name.as_str();
        // Errors only say the set was not there.
        for code in CODES {
            let _ = f.requests.remove_label_values(&[name, code]);
        }
        let _ = f.duration.remove_label_values(&[name]);
        let _ = f.bytes_in.remove_label_values(&[name]);
        let _ = f.bytes_out.remove_label_values(&[name]);
        let _ = f.active.remove_label_values(&[name]);
        let _ = f.retries.remove_label_values(&[name]);
        for reply in LocalReply::ALL {
            if self.local[reply.index()].get().is_some() {
                let _ = f.local.remove_label_values(&[reply.as_str(), name]);
            }
        }
    }
}

/// Index into [`CODES`] of an HTTP status.
fn code_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

/// A server row's status as HAProxy shows it: `MAINT` for a draining server (weight 0:
/// Marathon-LB puts draining tasks in maintenance, which `zdd.py` waits for), `DOWN` when
/// health says so, else `UP`.
fn server_status(weight: u32, up: bool) -> &'static str {
    if weight == 0 {
        "MAINT"
    } else if up {
        "UP"
    } else {
        "DOWN"
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

// === CSV rows ===

const COLUMNS: usize = 62;
const PXNAME: usize = 0;
const SVNAME: usize = 1;
const QCUR: usize = 2;
const SCUR: usize = 4;
const STOT: usize = 7;
const BIN: usize = 8;
const BOUT: usize = 9;
const DREQ: usize = 10;
const ECON: usize = 13;
const ERESP: usize = 14;
const WRETR: usize = 15;
const STATUS: usize = 17;
const WEIGHT: usize = 18;
const ACT: usize = 19;
const BCK: usize = 20;
const CHKFAIL: usize = 21;
const CHKDOWN: usize = 22;
const PID: usize = 26;
const IID: usize = 27;
const SID: usize = 28;
const LBTOT: usize = 30;
const TYPE: usize = 32;
const HRSP_1XX: usize = 39;
const REQ_TOT: usize = 48;

/// One CSV row: [`COLUMNS`] fields, empty unless set.
struct Row {
    fields: [Option<String>; COLUMNS],
}

impl Row {
    fn new() -> Row {
        Row {
            fields: std::array::from_fn(|_| None),
        }
    }

    /// Sets a text field; characters that would break `zdd.py`'s reader (`,`, its quote
    /// character `'`, `"`, line breaks) become `_` (Marathon-LB's names never hold them).
    fn set(&mut self, column: usize, value: &str) -> &mut Row {
        let clean = value.replace([',', '\'', '"', '\n', '\r'], "_");
        if let Some(f) = self.fields.get_mut(column) {
            *f = Some(clean);
        }
        self
    }

    fn num(&mut self, column: usize, value: u64) -> &mut Row {
        if let Some(f) = self.fields.get_mut(column) {
            *f = Some(value.to_string());
        }
        self
    }

    /// Every field followed by `,` (HAProxy's rows end with one), then a newline.
    fn write(&self, out: &mut String) {
        for f in &self.fields {
            if let Some(v) = f {
                out.push_str(v);
            }
            out.push(',');
        }
        out.push('\n');
    }
}

// === scrape-time collector ===

/// The `ferryman_l7_backend_servers` and `ferryman_l7_server_*` families, read from the
/// published tables' server states at scrape time.
struct ServerCollector {
    descs: Vec<Desc>,
}

const SERVER_FAMILIES: [(&str, &str, MetricType); 3] = [
    (
        names::L7_SERVER_UP,
        "1 when an L7 server takes new requests as far as health goes.",
        MetricType::GAUGE,
    ),
    (
        names::L7_SERVER_ACTIVE_REQUESTS,
        "Requests to an L7 server in flight now.",
        MetricType::GAUGE,
    ),
    (
        names::L7_SERVER_REQUESTS_TOTAL,
        "Requests sent to an L7 server.",
        MetricType::COUNTER,
    ),
];
const BACKEND_SERVERS_HELP: &str =
    "Servers of an L7 backend by state (up, down, maint = weight 0, draining).";

impl ServerCollector {
    fn new() -> ServerCollector {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("valid metric description")
        };
        let mut descs: Vec<Desc> = SERVER_FAMILIES
            .iter()
            .map(|(name, help, _)| desc(name, help, &["backend", "server"]))
            .collect();
        descs.push(desc(
            names::L7_BACKEND_SERVERS,
            BACKEND_SERVERS_HELP,
            &["backend", "state"],
        ));
        ServerCollector { descs }
    }
}

impl Collector for ServerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let tables: Vec<Arc<Table>> = LIVE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| inner.table.load_full())
            .collect();
        server_families(&tables)
    }
}

/// The per-server families of `tables` now (a backend name in several tables: first wins).
fn server_families(tables: &[Arc<Table>]) -> Vec<MetricFamily> {
    let now = clock::now_ms();
    let mut per_server: [Vec<Metric>; 3] = Default::default();
    let mut per_backend = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for table in tables {
        for (backend, runtime) in table.routes.backends().iter().zip(&table.backends) {
            if !seen.insert(backend.name.as_str()) {
                continue;
            }
            let mut counts = [0u64; 3]; // up, down, maint
            for (server, state) in backend.servers.iter().zip(&runtime.states) {
                let up = state.is_up_at(now);
                counts[match server_status(server.weight, up) {
                    "UP" => 0,
                    "DOWN" => 1,
                    _ => 2,
                }] += 1;
                let values = [
                    if up { 1.0 } else { 0.0 },
                    f64::from(state.active()),
                    load(&state.total) as f64,
                ];
                for (i, value) in values.into_iter().enumerate() {
                    let labels = vec![
                        label("backend", &backend.name),
                        label("server", &server.name),
                    ];
                    per_server[i].push(metric(labels, SERVER_FAMILIES[i].2, value));
                }
            }
            for (state, n) in ["up", "down", "maint"].into_iter().zip(counts) {
                let labels = vec![label("backend", &backend.name), label("state", state)];
                per_backend.push(metric(labels, MetricType::GAUGE, n as f64));
            }
        }
    }
    let mut out: Vec<MetricFamily> = SERVER_FAMILIES
        .iter()
        .zip(per_server)
        .map(|((name, help, kind), metrics)| family(name, help, *kind, metrics))
        .collect();
    out.push(family(
        names::L7_BACKEND_SERVERS,
        BACKEND_SERVERS_HELP,
        MetricType::GAUGE,
        per_backend,
    ));
    out
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_string());
    mf.set_help(help.to_string());
    mf.set_field_type(kind);
    mf.set_metric(metrics);
    mf
}

fn metric(labels: Vec<LabelPair>, kind: MetricType, value: f64) -> Metric {
    let mut m = Metric::from_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use prometheus::core::Collector;

    use super::*;
    use crate::config::Config;
    use crate::health::{HealthPolicy, Registry};
    use crate::model::{App, BackendId, ClusterState, Protocol, Service, Snapshot};

    /// Apps `(id, service port, servers (ip, port, weight))` of group `external` in http mode.
    /// A test app: id, service port, servers (ip, port, weight).
    type AppSpec<'a> = (&'a str, u16, &'a [(&'a str, u16, u32)]);

    fn snapshot(apps: &[AppSpec<'_>]) -> Snapshot {
        let mut state = ClusterState::default();
        let mut services = Vec::new();
        for &(id, port, servers) in apps {
            let labels = [("HAPROXY_GROUP", "external"), ("HAPROXY_0_MODE", "http")];
            let app = App {
                id: id.to_string(),
                service_ports: vec![port],
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..App::default()
            };
            state.apps.insert(id.to_string(), Arc::new(app));
            services.push(Arc::new(Service {
                app_id: id.to_string(),
                port_index: 0,
                service_port: port,
                protocol: Protocol::Tcp,
                backends: servers
                    .iter()
                    .map(|&(ip, port, weight)| crate::model::Backend {
                        id: BackendId(u64::from(port)),
                        ip: ip.parse().unwrap(),
                        port,
                        weight,
                        task_id: format!("{id}.{port}").into(),
                        app_id: Some(id.into()),
                        agent_ip: None,
                    })
                    .collect(),
            }));
        }
        Snapshot {
            version: 1,
            state: Arc::new(state),
            services,
            ..Snapshot::default()
        }
    }

    fn table(stats: &Stats, registry: &Registry, snap: &Snapshot) -> Arc<Table> {
        let (t, errors) = Table::build(snap, &Config::default(), registry, stats, &|_| Ok(()));
        assert!(errors.is_empty(), "{errors:?}");
        Arc::new(t)
    }

    /// zdd.py's `parse_haproxy_stats`, in Rust: the header names the fields (`# ` and the
    /// trailing `,` stripped), every row's last field is dropped and the rest must fill the
    /// named tuple exactly (Python's `namedtuple(*row[0:-1])` raises otherwise).
    fn zdd_parse(csv: &str) -> Vec<HashMap<String, String>> {
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches(['#', ' '])
            .trim_end_matches([',', '\n'])
            .split(',')
            .collect();
        lines
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                assert_eq!(fields.len() - 1, header.len(), "row {l:?}");
                assert_eq!(*fields.last().unwrap(), "", "row ends with ','");
                header
                    .iter()
                    .zip(&fields)
                    .map(|(h, f)| (h.to_string(), f.to_string()))
                    .collect()
            })
            .collect()
    }

    fn fixture_header() -> String {
        let text = crate::discovery::decode::test_support::fixture("marathon/haproxy_stats.csv");
        String::from_utf8(text)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_header_is_the_fixtures() {
        assert_eq!(CSV_HEADER, fixture_header());
        let columns: Vec<&str> = CSV_HEADER[2..].trim_end_matches(',').split(',').collect();
        assert_eq!(columns.len(), COLUMNS);
        for (i, name) in [
            (PXNAME, "pxname"),
            (SVNAME, "svname"),
            (QCUR, "qcur"),
            (SCUR, "scur"),
            (STOT, "stot"),
            (BIN, "bin"),
            (BOUT, "bout"),
            (DREQ, "dreq"),
            (ECON, "econ"),
            (ERESP, "eresp"),
            (WRETR, "wretr"),
            (STATUS, "status"),
            (WEIGHT, "weight"),
            (ACT, "act"),
            (BCK, "bck"),
            (CHKFAIL, "chkfail"),
            (CHKDOWN, "chkdown"),
            (PID, "pid"),
            (IID, "iid"),
            (SID, "sid"),
            (LBTOT, "lbtot"),
            (TYPE, "type"),
            (HRSP_1XX, "hrsp_1xx"),
            (HRSP_1XX + 4, "hrsp_5xx"),
            (HRSP_1XX + 5, "hrsp_other"),
            (REQ_TOT, "req_tot"),
        ] {
            assert_eq!(columns[i], name);
        }
    }

    #[test]
    fn csv_rows_line_up_and_zdd_sees_the_draining_server() {
        let stats = Stats::private();
        let registry = Registry::private(HealthPolicy::default());
        let snap = snapshot(&[(
            "/nginx",
            10000,
            &[
                ("10.0.0.1", 31000, 1),
                ("10.0.0.2", 31001, 0),
                ("10.0.0.3", 31002, 1),
            ],
        )]);
        let t = table(&stats, &registry, &snap);
        stats.publish(&t);
        stats.set_listeners(true, false);
        let _conn = stats.connection(Frontend::Http);
        let _port_conn = stats.connection(Frontend::Port(10000));
        let b = &t.backends[0];
        // One request in flight on the draining server, one finished on the first.
        b.states[1].active.fetch_add(1, Ordering::Relaxed);
        b.states[1].total.fetch_add(1, Ordering::Relaxed);
        b.states[0].total.fetch_add(1, Ordering::Relaxed);
        b.states[2].set_check_down(true);
        let _active = b.stats.request_started();
        b.stats.request_started();
        b.stats.record(200, Duration::from_millis(3));
        b.stats.add_bytes(10, 2000);
        stats.local_reply(LocalReply::ConnectFailed, Some(&b.stats));

        let csv = stats.csv();
        assert!(csv.ends_with('\n'));
        let rows = zdd_parse(&csv);
        let row = |px: &str, sv: &str| {
            rows.iter()
                .find(|r| r["pxname"] == px && r["svname"] == sv)
                .unwrap_or_else(|| panic!("no row {px}/{sv} in\n{csv}"))
        };
        assert_eq!(rows.len(), 2 + 3 + 1, "{csv}");
        let http = row(HTTP_FRONTEND, "FRONTEND");
        assert_eq!((&*http["scur"], &*http["stot"]), ("1", "1"));
        assert_eq!(&http["type"], "0");
        assert_eq!(&row("nginx_10000", "FRONTEND")["scur"], "1");

        let up = row("nginx_10000", "10_0_0_1_31000");
        assert_eq!(
            (
                &*up["status"],
                &*up["scur"],
                &*up["stot"],
                &*up["weight"],
                &*up["type"]
            ),
            ("UP", "0", "1", "1", "2")
        );
        // zdd.py: select_draining_listeners (status MAINT), _has_pending_requests (qcur/scur).
        let draining = row("nginx_10000", "10_0_0_2_31001");
        assert_eq!(&draining["status"], "MAINT");
        assert_eq!(&draining["qcur"], "0");
        assert_eq!(&draining["scur"], "1", "still serving: not drained yet");
        assert_eq!(&row("nginx_10000", "10_0_0_3_31002")["status"], "DOWN");

        let backend = row("nginx_10000", "BACKEND");
        assert_eq!(&backend["type"], "1");
        assert_eq!(&backend["status"], "UP");
        assert_eq!(&backend["scur"], "1", "sum of the servers'");
        assert_eq!(&backend["stot"], "2");
        assert_eq!((&*backend["bin"], &*backend["bout"]), ("10", "2000"));
        assert_eq!(&backend["hrsp_2xx"], "1");
        assert_eq!(&backend["hrsp_5xx"], "1", "the edge's own 502");
        assert_eq!(&backend["econ"], "1");
        assert_eq!(&backend["req_tot"], "2");
        assert_eq!((&*backend["act"], &*backend["weight"]), ("1", "1"));

        // Drained: nothing in flight any more.
        b.states[1].active.fetch_sub(1, Ordering::Relaxed);
        let rows = zdd_parse(&stats.csv());
        let drained = rows
            .iter()
            .find(|r| r["svname"] == "10_0_0_2_31001")
            .unwrap();
        assert_eq!((&*drained["status"], &*drained["scur"]), ("MAINT", "0"));
    }

    /// zdd.py's own parser (verbatim `parse_haproxy_stats`, Python's csv module) on our CSV,
    /// twice concatenated as `fetch_combined_haproxy_stats` does for two Marathon-LBs.
    #[test]
    fn zdd_py_parses_the_csv() {
        let Ok(python) = which("python3") else {
            if std::env::var_os("FERRYMAN_REQUIRE_ALL").is_some_and(|v| v == "1") {
                panic!("python3 not found (FERRYMAN_REQUIRE_ALL=1)");
            }
            eprintln!("skipping: python3 not found");
            return;
        };
        let stats = Stats::private();
        let registry = Registry::private(HealthPolicy::default());
        let snap = snapshot(&[
            (
                "/nginx",
                10000,
                &[("10.0.0.1", 31000, 1), ("10.0.0.2", 31001, 0)],
            ),
            ("/api", 10001, &[]),
        ]);
        stats.publish(&table(&stats, &registry, &snap));
        let csv = stats.csv();
        let script = r#"
import csv, sys
from collections import namedtuple
def parse_haproxy_stats(csv_data):
    rows = csv_data.splitlines()
    headings = rows.pop(0).lstrip('# ').rstrip(',\n').split(',')
    csv_reader = csv.reader(rows, delimiter=',', quotechar="'")
    Row = namedtuple('Row', headings)
    return [Row(*row[0:-1]) for row in csv_reader if row[0][0] != '#']
listeners = [li for li in parse_haproxy_stats(sys.stdin.read())
             if li.pxname == 'nginx_10000' and li.svname not in ['BACKEND', 'FRONTEND']]
for li in listeners:
    print(li.svname, li.status, int(li.qcur or 0) > 0 or int(li.scur or 0) > 0)
"#;
        let mut child = std::process::Command::new(python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{csv}{csv}").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "10_0_0_1_31000 UP False\n10_0_0_2_31001 MAINT False\n".repeat(2)
        );
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        let path = std::env::var_os("PATH").ok_or(())?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }

    /// (label values) of a family's series.
    fn series(c: &dyn Collector) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = c
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric().iter())
            .map(|m| {
                m.get_label()
                    .iter()
                    .map(|l| l.value().to_string())
                    .collect()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn backend_stats_survive_tables_and_leavers_lose_their_series() {
        let stats = Stats::private();
        let f = stats.inner.families.clone();
        let registry = Registry::private(HealthPolicy::default());
        let both = snapshot(&[
            ("/a", 10000, &[("10.0.0.1", 31000, 1)]),
            ("/b", 10001, &[("10.0.0.2", 31001, 1)]),
        ]);
        let t1 = table(&stats, &registry, &both);
        stats.publish(&t1);
        let _conn = stats.connection(Frontend::Port(10001));
        t1.backends[1].stats.retried();
        stats.local_reply(LocalReply::Timeout, Some(&t1.backends[1].stats));
        assert_eq!(
            series(&f.retries),
            vec![vec!["a_10000".to_string()], vec!["b_10001".to_string()]]
        );
        assert_eq!(
            series(&f.connections),
            [HTTP_FRONTEND, HTTPS_FRONTEND, "a_10000", "b_10001"]
                .map(|s| vec![s.to_string()])
                .to_vec()
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );

        let t2 = table(
            &stats,
            &registry,
            &snapshot(&[("/a", 10000, &[("10.0.0.1", 31000, 1)])]),
        );
        assert!(Arc::ptr_eq(&t1.backends[0].stats, &t2.backends[0].stats));
        stats.publish(&t2);
        for family in [
            &f.retries as &dyn Collector,
            &f.bytes_in,
            &f.active,
            &f.duration,
        ] {
            assert_eq!(series(family), vec![vec!["a_10000".to_string()]]);
        }
        assert!(series(&f.requests).iter().all(|s| s[0] == "a_10000"));
        assert!(series(&f.local).is_empty(), "{:?}", series(&f.local));
        assert!(!series(&f.connections).iter().any(|s| s[0] == "b_10001"));
        assert!(!stats.csv().contains("b_10001"));
    }

    #[test]
    fn code_classes_and_local_replies() {
        assert_eq!(
            [100, 199, 200, 302, 404, 503, 599, 600, 0, 99].map(code_class),
            [0, 0, 1, 2, 3, 4, 4, 5, 5, 5]
        );
        let stats = Stats::private();
        let f = stats.inner.families.clone();
        let b = stats.backend("web_80");
        b.record(101, Duration::from_millis(1));
        b.record(204, Duration::from_millis(1));
        b.record(204, Duration::from_secs(2));
        stats.local_reply(LocalReply::Unauthorized, Some(&b));
        stats.local_reply(LocalReply::NoRoute, None);
        stats.local_reply(LocalReply::NoRoute, None);
        let code = |c: &str| f.requests.with_label_values(&["web_80", c]).get();
        assert_eq!(
            (code("1xx"), code("2xx"), code("4xx"), code("5xx")),
            (1, 2, 1, 0)
        );
        let h = f.duration.with_label_values(&["web_80"]);
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 2.002).abs() < 1e-9);
        assert_eq!(f.local.with_label_values(&["no_route", ""]).get(), 2);
        assert_eq!(
            f.local.with_label_values(&["unauthorized", "web_80"]).get(),
            1
        );
        {
            let _g = b.request_started();
            let _g2 = b.request_started();
            assert_eq!(f.active.with_label_values(&["web_80"]).get(), 2);
        }
        assert_eq!(f.active.with_label_values(&["web_80"]).get(), 0);
    }

    #[test]
    fn connections_by_frontend() {
        let stats = Stats::private();
        let f = stats.inner.families.clone();
        {
            let _a = stats.connection(Frontend::Https);
            let _b = stats.connection(Frontend::Https);
            assert_eq!(
                f.active_connections
                    .with_label_values(&[HTTPS_FRONTEND])
                    .get(),
                2
            );
            // A port the published table does not know yet.
            let _c = stats.connection(Frontend::Port(10005));
            assert_eq!(f.connections.with_label_values(&["port_10005"]).get(), 1);
        }
        assert_eq!(
            f.active_connections
                .with_label_values(&[HTTPS_FRONTEND])
                .get(),
            0
        );
        assert_eq!(f.connections.with_label_values(&[HTTPS_FRONTEND]).get(), 2);
        // Published: the port's frontend is named after its backend, port_10005 is gone.
        let registry = Registry::private(HealthPolicy::default());
        let t = table(&stats, &registry, &snapshot(&[("/web", 10005, &[])]));
        stats.publish(&t);
        let _d = stats.connection(Frontend::Port(10005));
        assert_eq!(f.connections.with_label_values(&["web_10005"]).get(), 1);
        assert!(!series(&f.connections).iter().any(|s| s[0] == "port_10005"));
        stats.set_listeners(false, true);
        let csv = stats.csv();
        assert!(
            !csv.contains(HTTP_FRONTEND) && csv.contains(HTTPS_FRONTEND),
            "{csv}"
        );
        assert!(csv.contains("web_10005,BACKEND,"), "{csv}");
        assert!(csv.contains("\nweb_10005,BACKEND,0,,0,,,0,"), "{csv}");
        assert!(csv.contains(",DOWN,0,0,0,"), "no server: DOWN\n{csv}");
    }

    #[test]
    fn server_metrics_are_read_at_scrape_time() {
        let stats = Stats::private();
        let registry = Registry::private(HealthPolicy::default());
        let t = table(
            &stats,
            &registry,
            &snapshot(&[(
                "/web",
                10000,
                &[
                    ("10.0.0.1", 31000, 1),
                    ("10.0.0.2", 31001, 0),
                    ("10.0.0.3", 31002, 1),
                ],
            )]),
        );
        t.backends[0].states[2].set_check_down(true);
        t.backends[0].states[0]
            .total
            .fetch_add(7, Ordering::Relaxed);
        let families = server_families(&[t]);
        let value = |name: &str, labels: &[&str]| -> Option<f64> {
            let mf = families.iter().find(|mf| mf.name() == name)?;
            mf.get_metric()
                .iter()
                .find(|m| {
                    m.get_label()
                        .iter()
                        .map(|l| l.value())
                        .eq(labels.iter().copied())
                })
                .map(|m| {
                    if mf.get_field_type() == MetricType::COUNTER {
                        m.get_counter().get_value()
                    } else {
                        m.get_gauge().get_value()
                    }
                })
        };
        let b = "web_10000";
        assert_eq!(value(names::L7_BACKEND_SERVERS, &[b, "up"]), Some(1.0));
        assert_eq!(value(names::L7_BACKEND_SERVERS, &[b, "down"]), Some(1.0));
        assert_eq!(value(names::L7_BACKEND_SERVERS, &[b, "maint"]), Some(1.0));
        assert_eq!(
            value(names::L7_SERVER_UP, &[b, "10_0_0_3_31002"]),
            Some(0.0)
        );
        assert_eq!(
            value(names::L7_SERVER_UP, &[b, "10_0_0_2_31001"]),
            Some(1.0)
        );
        assert_eq!(
            value(names::L7_SERVER_REQUESTS_TOTAL, &[b, "10_0_0_1_31000"]),
            Some(7.0)
        );
    }

    /// The process registry with L7 series of every kind passes `promtool check metrics`.
    #[test]
    fn global_families_pass_promtool() {
        let stats = Stats::new();
        let registry = Registry::private(HealthPolicy::default());
        let t = table(
            &stats,
            &registry,
            &snapshot(&[(
                "/promtool-check",
                10099,
                &[("10.0.9.1", 31990, 1), ("10.0.9.2", 31991, 0)],
            )]),
        );
        stats.publish(&t);
        let b = &t.backends[0].stats;
        b.record(200, Duration::from_millis(2));
        b.add_bytes(1, 2);
        b.retried();
        stats.local_reply(LocalReply::BadGateway, Some(b));
        stats.local_reply(LocalReply::NoRoute, None);
        stats.set_unsupported_labels(vec![("/promtool-check".into(), 1)]);
        let _conn = stats.connection(Frontend::Port(10099));
        let body = names::metrics().render();
        for want in [
            "ferryman_l7_requests_total{backend=\"promtool-check_10099\",code=\"2xx\"} 1",
            "ferryman_l7_request_duration_seconds_count{backend=\"promtool-check_10099\"} 1",
            "ferryman_l7_local_replies_total{backend=\"promtool-check_10099\",reason=\"bad_gateway\"} 1",
            "ferryman_l7_server_up{backend=\"promtool-check_10099\",server=\"10_0_9_2_31991\"} 1",
            "ferryman_l7_backend_servers{backend=\"promtool-check_10099\",state=\"maint\"} 1",
            "ferryman_l7_active_connections{frontend=\"promtool-check_10099\"} 1",
            "ferryman_l7_unsupported_labels{app=\"/promtool-check\"} 1",
        ] {
            assert!(body.contains(want), "{want} not in\n{body}");
        }
        let Ok(promtool) = which("promtool") else {
            if std::env::var_os("FERRYMAN_REQUIRE_ALL").is_some_and(|v| v == "1") {
                panic!("promtool not found (FERRYMAN_REQUIRE_ALL=1)");
            }
            eprintln!("skipping the promtool check: promtool not found");
            return;
        };
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Gone from the table: gone from /metrics.
        stats.publish(&Arc::new(Table::empty()));
        assert!(!names::metrics().render().contains("promtool-check_10099"));
    }

    #[test]
    fn unsupported_labels_replace_the_set() {
        let stats = Stats::private();
        let f = stats.inner.families.clone();
        stats.set_unsupported_labels(vec![("/a".into(), 2), ("/b".into(), 1)]);
        assert_eq!(f.unsupported.with_label_values(&["/a"]).get(), 2);
        stats.set_unsupported_labels(vec![("/b".into(), 3), ("/c".into(), 0)]);
        assert_eq!(series(&f.unsupported), vec![vec!["/b".to_string()]]);
        assert_eq!(f.unsupported.with_label_values(&["/b"]).get(), 3);
        stats.set_skipped_apps(4);
        assert_eq!(f.skipped.get(), 4);
    }
}
