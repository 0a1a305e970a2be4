//! Per-backend L7 statistics: Prometheus families in `/metrics` and HAProxy's CSV for
//! `/haproxy?stats;csv` (Marathon-LB's `zdd.py` reads it). SKELETON: the API below is what the
//! proxy and the server call; bodies are filled in by the stats helper.

use std::sync::Arc;
use std::time::Duration;

use super::{Frontend, Table};

/// The process's L7 statistics (cheap to clone).
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {}

/// Counters of one Marathon-LB backend (by name), kept across route tables. Per-server
/// counters live in the servers' `health::BackendState` atomics (`active`, `total`,
/// `bytes_in`, `bytes_out`, `connect_failures`), which the proxy bumps.
#[derive(Default)]
pub struct BackendStats {}

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
    /// No response head within `l7.request_timeout` (504).
    Timeout,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL` refused the client (403).
    Denied,
    /// `HAPROXY_{n}_AUTH` asked for credentials (401).
    Unauthorized,
    /// `HAPROXY_{n}_REDIRECT_TO_HTTPS` or `HTTP_BACKEND_REDIRECT` (301/302).
    Redirect,
}

/// Decrements the active-request gauge when dropped.
pub struct ActiveGuard {
    _stats: Arc<BackendStats>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats::default()
    }

    /// The statistics of backend `name`, created on first use and kept across tables.
    pub fn backend(&self, name: &str) -> Arc<BackendStats> {
        let _ = (name, &self.inner);
        Arc::new(BackendStats::default())
    }

    /// The table now served (rows of the CSV; backends no longer in it are dropped from the
    /// CSV and their metric label sets removed).
    pub fn publish(&self, table: &Arc<Table>) {
        let _ = table;
    }

    /// HAProxy's `show stat` CSV (FRONTEND rows per listener, one row per server, a BACKEND
    /// row per backend), columns as the `haproxy_stats.csv` fixture.
    pub fn csv(&self) -> String {
        String::new()
    }

    /// A client connection accepted (`Drop` of the guard: closed).
    pub fn connection(&self, frontend: Frontend) -> ConnGuard {
        let _ = frontend;
        ConnGuard {}
    }

    /// A request the edge answered itself (`backend`: the routed backend, when there was one).
    pub fn local_reply(&self, reply: LocalReply, backend: Option<&BackendStats>) {
        let _ = (reply, backend);
    }

    /// `HAPROXY_{n}_*` template labels that cannot apply, counted per app (replaces the set).
    pub fn set_unsupported_labels(&self, per_app: Vec<(String, usize)>) {
        let _ = per_app;
    }

    /// Apps skipped for bad labels or certificates in the current table.
    pub fn set_skipped_apps(&self, n: usize) {
        let _ = n;
    }
}

/// An open client connection of one frontend.
pub struct ConnGuard {}

impl BackendStats {
    /// One request routed to this backend starts (active gauge +1 until the guard drops).
    pub fn request_started(self: &Arc<Self>) -> ActiveGuard {
        ActiveGuard {
            _stats: self.clone(),
        }
    }

    /// The response head of a request went to the client: status class counter, latency
    /// (request start → response head) histogram.
    pub fn record(&self, status: u16, latency: Duration) {
        let _ = (status, latency);
    }

    /// Body bytes relayed: `from_client` to the backend, `to_client` from it.
    pub fn add_bytes(&self, from_client: u64, to_client: u64) {
        let _ = (from_client, to_client);
    }

    /// A retry to another server after a connect failure.
    pub fn retried(&self) {}
}
