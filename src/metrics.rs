//! Prometheus metrics: one registry, every name a documented `const`, every name
//! `ferryman_<subsystem>_<what>_<unit>` (counters end in `_total`, durations in `_seconds`).
//! Histograms, never summaries. A leaf module: imports nothing from the crate.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Fetches from a discovery source, by `source` (`file`, `marathon`, `mesos`) and `result`
/// (`ok`, `error`).
pub const DISCOVERY_FETCHES_TOTAL: &str = "ferryman_discovery_fetches_total";
/// Failed fetches by `source` and `kind` (`connect`, `timeout`, `http_status`, `decode`, `io`, `stream`).
pub const DISCOVERY_ERRORS_TOTAL: &str = "ferryman_discovery_errors_total";
/// Unix time of the last successful fetch, by `source`.
pub const DISCOVERY_LAST_SUCCESS_SECONDS: &str =
    "ferryman_discovery_last_success_timestamp_seconds";
/// Duration of a full fetch + decode, by `source`.
pub const DISCOVERY_FETCH_DURATION_SECONDS: &str = "ferryman_discovery_fetch_duration_seconds";
/// Marathon SSE events received, by `event_type`.
pub const DISCOVERY_SSE_EVENTS_TOTAL: &str = "ferryman_discovery_sse_events_total";
/// Updates held back by the shrink guard (an answer removing more than half of all backends).
pub const DISCOVERY_GUARD_HELD_TOTAL: &str = "ferryman_discovery_guard_held_total";
/// Version of the published snapshot.
pub const SNAPSHOT_VERSION: &str = "ferryman_snapshot_version";
/// Time `Snapshot::build` took.
pub const SNAPSHOT_BUILD_DURATION_SECONDS: &str = "ferryman_snapshot_build_duration_seconds";
/// Objects in the published snapshot, by `kind` (`apps`, `tasks`, `services`, `backends`, `vips`).
pub const SNAPSHOT_OBJECTS: &str = "ferryman_snapshot_objects";
/// Labels skipped, by `reason`.
pub const MODEL_LABELS_REJECTED_TOTAL: &str = "ferryman_model_labels_rejected_total";

/// DNS queries answered, by `qtype` (`A`, `AAAA`, `SRV`, …, `other`) and `rcode` (`NOERROR`,
/// `NXDOMAIN`, `SERVFAIL`, `FORMERR`, `REFUSED`, `NOTIMP`).
pub const DNS_QUERIES_TOTAL: &str = "ferryman_dns_queries_total";
/// Datagrams dropped without an answer (too short to hold a header, or a response), by `reason`.
pub const DNS_DROPPED_TOTAL: &str = "ferryman_dns_dropped_total";
/// UDP answers sent with the TC bit because they did not fit the client's payload size.
pub const DNS_TRUNCATED_TOTAL: &str = "ferryman_dns_truncated_total";
/// Queries forwarded to `dns.resolvers`, by `result` (`ok`, `timeout`, `error`, `busy`).
pub const DNS_FORWARDED_TOTAL: &str = "ferryman_dns_forwarded_total";
/// Failed upstream exchanges, by `upstream` and `kind` (`timeout`, `io`, `malformed`, `mismatch`).
pub const DNS_UPSTREAM_ERRORS_TOTAL: &str = "ferryman_dns_upstream_errors_total";
/// Round-trip time of a forwarded query, by `upstream`.
pub const DNS_UPSTREAM_DURATION_SECONDS: &str = "ferryman_dns_upstream_duration_seconds";
/// Forwarded answers served from the cache.
pub const DNS_CACHE_HITS_TOTAL: &str = "ferryman_dns_cache_hits_total";
/// Resource records in the published zone, by `type`.
pub const DNS_ZONE_RECORDS: &str = "ferryman_dns_zone_records";
/// Zones swapped in (one per published snapshot).
pub const DNS_ZONE_SWAPS_TOTAL: &str = "ferryman_dns_zone_swaps_total";
/// Time to build the zone from a snapshot.
pub const DNS_ZONE_BUILD_DURATION_SECONDS: &str = "ferryman_dns_zone_build_duration_seconds";

/// Per-backend L4 metrics, read from the backends' atomics at scrape time by the collector in
/// `health::collector` (registered once in [`Metrics::registry`]), labelled by `vip`
/// (`tcp://11.0.0.1:80`, a service port as `tcp://127.0.0.1:10000`) and `backend` (`ip:port`).
/// A backend serving several VIPs shows the same values under each.
///
/// Connections (or UDP flows) opened to a backend.
pub const L4_BACKEND_CONNECTIONS_TOTAL: &str = "ferryman_l4_backend_connections_total";
/// Connections (or UDP flows) open to a backend now.
pub const L4_BACKEND_ACTIVE_CONNECTIONS: &str = "ferryman_l4_backend_active_connections";
/// Bytes from clients sent to a backend.
pub const L4_BACKEND_IN_BYTES_TOTAL: &str = "ferryman_l4_backend_in_bytes_total";
/// Bytes from a backend sent to clients.
pub const L4_BACKEND_OUT_BYTES_TOTAL: &str = "ferryman_l4_backend_out_bytes_total";
/// Failed connects to a backend (refused, timed out, unreachable).
pub const L4_BACKEND_CONNECT_FAILURES_TOTAL: &str = "ferryman_l4_backend_connect_failures_total";
/// 1 when a backend takes new connections as far as health goes, 0 when ejected or failed by
/// active checks.
pub const L4_BACKEND_UP: &str = "ferryman_l4_backend_up";
/// Ejections of a backend by passive outlier detection.
pub const L4_BACKEND_EJECTIONS_TOTAL: &str = "ferryman_l4_backend_ejections_total";

/// L4 listeners running, by `protocol` (`tcp`, `udp`) and `kind` (`vip`, `service`).
pub const L4_LISTENERS: &str = "ferryman_l4_listeners";
/// VIP listeners not started because the VIP link cannot be managed (no CAP_NET_ADMIN, or no
/// `l4.link`).
pub const L4_VIP_LISTENERS_SKIPPED: &str = "ferryman_l4_vip_listeners_skipped";
/// L4 connections (or UDP datagrams opening a flow) refused, by `reason` (`max_connections`,
/// `no_backend`, `connect_failed`).
pub const L4_REFUSED_TOTAL: &str = "ferryman_l4_refused_total";
/// UDP flows open now.
pub const L4_UDP_FLOWS: &str = "ferryman_l4_udp_flows";
/// UDP flows evicted to make room (`l4.udp_max_flows` reached).
pub const L4_UDP_FLOWS_EVICTED_TOTAL: &str = "ferryman_l4_udp_flows_evicted_total";

/// The eBPF fast path's metrics, registered by `fastpath::stats` (a collector reading the
/// per-CPU map `fm_stats` and the published fast path status at scrape time).
///
/// 1 for the path serving VIPs for local clients, by `path` (`ebpf`, `userspace`, `off`) and
/// `reason` (empty on `ebpf`).
pub const L4_FASTPATH_INFO: &str = "ferryman_l4_fastpath_info";
/// Destinations rewritten to a backend, by `vip` and `hook` (`connect`, `sendmsg`).
pub const L4_FASTPATH_REWRITES_TOTAL: &str = "ferryman_l4_fastpath_rewrites_total";
/// Connects/datagrams refused for want of a healthy backend, by `vip`.
pub const L4_FASTPATH_REFUSED_CONNECTIONS_TOTAL: &str =
    "ferryman_l4_fastpath_refused_connections_total";
/// Rewrites skipped because a slot lookup failed, by `vip`.
pub const L4_FASTPATH_LOOKUP_ERRORS_TOTAL: &str = "ferryman_l4_fastpath_lookup_errors_total";
/// VIPs, backend slots and Maglev rings in the maps, and the maps' capacity (`_limit`).
pub const L4_FASTPATH_SERVICES: &str = "ferryman_l4_fastpath_services";
pub const L4_FASTPATH_BACKENDS: &str = "ferryman_l4_fastpath_backends";
pub const L4_FASTPATH_RINGS: &str = "ferryman_l4_fastpath_rings";
pub const L4_FASTPATH_SERVICES_LIMIT: &str = "ferryman_l4_fastpath_services_limit";
pub const L4_FASTPATH_BACKENDS_LIMIT: &str = "ferryman_l4_fastpath_backends_limit";
pub const L4_FASTPATH_RINGS_LIMIT: &str = "ferryman_l4_fastpath_rings_limit";
/// VIPs the maps could not take (over `l4.max_services`/`l4.max_backends`): user space serves them.
pub const L4_FASTPATH_REFUSED_SERVICES: &str = "ferryman_l4_fastpath_refused_services";
/// Time one sync of the maps took (desired state from the snapshot + writes).
pub const L4_FASTPATH_SYNC_SECONDS: &str = "ferryman_l4_fastpath_sync_seconds";
/// Syncs that failed (logged; retried at the next tick).
pub const L4_FASTPATH_SYNC_ERRORS_TOTAL: &str = "ferryman_l4_fastpath_sync_errors_total";

/// The L7 edge's metrics (`l7::stats`). Per-backend families are labelled by Marathon-LB's
/// backend name (`backend`, e.g. `nginx_10000`); their label sets are removed when the backend
/// leaves the route table.
///
/// Responses sent for a backend, by `backend` and status class `code` (`1xx` … `5xx`,
/// `other`); includes the edge's own answers (502/503/504, 401/403, redirects) to requests
/// routed to the backend.
pub const L7_REQUESTS_TOTAL: &str = "ferryman_l7_requests_total";
/// Time from the start of a request to the backend's response head, by `backend`.
pub const L7_REQUEST_DURATION_SECONDS: &str = "ferryman_l7_request_duration_seconds";
/// Body bytes from clients sent to a backend, by `backend`.
pub const L7_BYTES_IN_TOTAL: &str = "ferryman_l7_bytes_in_total";
/// Body bytes from a backend sent to clients, by `backend`.
pub const L7_BYTES_OUT_TOTAL: &str = "ferryman_l7_bytes_out_total";
/// Requests routed to a backend in flight now, by `backend`.
pub const L7_ACTIVE_REQUESTS: &str = "ferryman_l7_active_requests";
/// Requests the edge answered itself, by `reason` (`no_route`, `no_server`, `connect_failed`,
/// `bad_gateway`, `timeout`, `denied`, `unauthorized`, `redirect`) and `backend` (empty when
/// no backend was routed).
pub const L7_LOCAL_REPLIES_TOTAL: &str = "ferryman_l7_local_replies_total";
/// Retries to another server after a connect failure, by `backend`.
pub const L7_RETRIES_TOTAL: &str = "ferryman_l7_retries_total";
/// Client connections accepted, by `frontend` (Marathon-LB's frontend names:
/// `marathon_http_in`, `marathon_https_in`, the backend name for a service port).
pub const L7_CONNECTIONS_TOTAL: &str = "ferryman_l7_connections_total";
/// Client connections open now, by `frontend`.
pub const L7_ACTIVE_CONNECTIONS: &str = "ferryman_l7_active_connections";
/// Idle HTTP/1 client connections parked between requests (hyper's buffers released).
pub const L7_PARKED_CONNECTIONS: &str = "ferryman_l7_parked_connections";
/// Raw HAProxy template labels (and unknown `HAPROXY_*` labels) that cannot apply, by `app`.
pub const L7_UNSUPPORTED_LABELS: &str = "ferryman_l7_unsupported_labels";
/// Apps skipped for bad labels or certificates in the served route table.
pub const L7_SKIPPED_APPS: &str = "ferryman_l7_skipped_apps";
/// Read at scrape time from the servers' health states (`l7::stats` collector):
/// servers of a backend by `backend` and `state` (`up`, `down`, `maint` = weight 0, draining).
pub const L7_BACKEND_SERVERS: &str = "ferryman_l7_backend_servers";
/// 1 when a server takes new requests as far as health goes (not ejected, not failed by
/// checks), by `backend` and `server` (Marathon-LB's server name).
pub const L7_SERVER_UP: &str = "ferryman_l7_server_up";
/// Requests to a server in flight now, by `backend` and `server`.
pub const L7_SERVER_ACTIVE_REQUESTS: &str = "ferryman_l7_server_active_requests";
/// Requests sent to a server, by `backend` and `server`.
pub const L7_SERVER_REQUESTS_TOTAL: &str = "ferryman_l7_server_requests_total";

/// All metric handles. Get them with [`metrics()`].
pub struct Metrics {
    pub registry: Registry,
    pub discovery_fetches: IntCounterVec,
    pub discovery_errors: IntCounterVec,
    pub discovery_last_success: IntGaugeVec,
    pub discovery_fetch_duration: HistogramVec,
    pub sse_events: IntCounterVec,
    pub guard_held: prometheus::IntCounter,
    pub snapshot_version: IntGauge,
    pub snapshot_build_duration: Histogram,
    pub snapshot_objects: IntGaugeVec,
    pub labels_rejected: IntCounterVec,
    pub dns_queries: IntCounterVec,
    pub dns_dropped: IntCounterVec,
    pub dns_truncated: prometheus::IntCounter,
    pub dns_forwarded: IntCounterVec,
    pub dns_upstream_errors: IntCounterVec,
    pub dns_upstream_duration: HistogramVec,
    pub dns_cache_hits: prometheus::IntCounter,
    pub dns_zone_records: IntGaugeVec,
    pub dns_zone_swaps: prometheus::IntCounter,
    pub dns_zone_build_duration: Histogram,
    pub l4_listeners: IntGaugeVec,
    pub l4_vip_listeners_skipped: IntGauge,
    pub l4_refused: IntCounterVec,
    pub l4_udp_flows: IntGauge,
    pub l4_udp_flows_evicted: prometheus::IntCounter,
    pub l7_requests: IntCounterVec,
    pub l7_request_duration: HistogramVec,
    pub l7_bytes_in: IntCounterVec,
    pub l7_bytes_out: IntCounterVec,
    pub l7_active_requests: IntGaugeVec,
    pub l7_local_replies: IntCounterVec,
    pub l7_retries: IntCounterVec,
    pub l7_connections: IntCounterVec,
    pub l7_active_connections: IntGaugeVec,
    pub l7_parked_connections: IntGauge,
    pub l7_unsupported_labels: IntGaugeVec,
    pub l7_skipped_apps: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            discovery_fetches: IntCounterVec::new(
                Opts::new(DISCOVERY_FETCHES_TOTAL, "Fetches from a discovery source."),
                &["source", "result"],
            )
            .expect("valid metric"),
            discovery_errors: IntCounterVec::new(
                Opts::new(
                    DISCOVERY_ERRORS_TOTAL,
                    "Failed discovery fetches by kind of failure.",
                ),
                &["source", "kind"],
            )
            .expect("valid metric"),
            discovery_last_success: IntGaugeVec::new(
                Opts::new(
                    DISCOVERY_LAST_SUCCESS_SECONDS,
                    "Unix time of the last successful fetch from a source.",
                ),
                &["source"],
            )
            .expect("valid metric"),
            discovery_fetch_duration: HistogramVec::new(
                HistogramOpts::new(
                    DISCOVERY_FETCH_DURATION_SECONDS,
                    "Duration of a full fetch and decode.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["source"],
            )
            .expect("valid metric"),
            sse_events: IntCounterVec::new(
                Opts::new(DISCOVERY_SSE_EVENTS_TOTAL, "Marathon SSE events received."),
                &["event_type"],
            )
            .expect("valid metric"),
            guard_held: prometheus::IntCounter::new(
                DISCOVERY_GUARD_HELD_TOTAL,
                "Updates held back because they would remove more than half of all backends.",
            )
            .expect("valid metric"),
            snapshot_version: IntGauge::new(SNAPSHOT_VERSION, "Version of the published snapshot.")
                .expect("valid metric"),
            snapshot_build_duration: Histogram::with_opts(
                HistogramOpts::new(
                    SNAPSHOT_BUILD_DURATION_SECONDS,
                    "Time Snapshot::build took.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            snapshot_objects: IntGaugeVec::new(
                Opts::new(SNAPSHOT_OBJECTS, "Objects in the published snapshot."),
                &["kind"],
            )
            .expect("valid metric"),
            labels_rejected: IntCounterVec::new(
                Opts::new(MODEL_LABELS_REJECTED_TOTAL, "Labels skipped, by reason."),
                &["reason"],
            )
            .expect("valid metric"),
            dns_queries: IntCounterVec::new(
                Opts::new(
                    DNS_QUERIES_TOTAL,
                    "DNS queries answered, by type and rcode.",
                ),
                &["qtype", "rcode"],
            )
            .expect("valid metric"),
            dns_dropped: IntCounterVec::new(
                Opts::new(
                    DNS_DROPPED_TOTAL,
                    "DNS datagrams dropped without an answer.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            dns_truncated: prometheus::IntCounter::new(
                DNS_TRUNCATED_TOTAL,
                "UDP answers sent truncated (TC bit) because they did not fit.",
            )
            .expect("valid metric"),
            dns_forwarded: IntCounterVec::new(
                Opts::new(
                    DNS_FORWARDED_TOTAL,
                    "Queries forwarded to upstream resolvers.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            dns_upstream_errors: IntCounterVec::new(
                Opts::new(DNS_UPSTREAM_ERRORS_TOTAL, "Failed upstream exchanges."),
                &["upstream", "kind"],
            )
            .expect("valid metric"),
            dns_upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    DNS_UPSTREAM_DURATION_SECONDS,
                    "Round-trip time of a forwarded query.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["upstream"],
            )
            .expect("valid metric"),
            dns_cache_hits: prometheus::IntCounter::new(
                DNS_CACHE_HITS_TOTAL,
                "Forwarded answers served from the cache.",
            )
            .expect("valid metric"),
            dns_zone_records: IntGaugeVec::new(
                Opts::new(DNS_ZONE_RECORDS, "Resource records in the published zone."),
                &["type"],
            )
            .expect("valid metric"),
            dns_zone_swaps: prometheus::IntCounter::new(
                DNS_ZONE_SWAPS_TOTAL,
                "DNS zones swapped in, one per published snapshot.",
            )
            .expect("valid metric"),
            dns_zone_build_duration: Histogram::with_opts(
                HistogramOpts::new(
                    DNS_ZONE_BUILD_DURATION_SECONDS,
                    "Time to build the DNS zone from a snapshot.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            l4_listeners: IntGaugeVec::new(
                Opts::new(L4_LISTENERS, "L4 listeners running."),
                &["protocol", "kind"],
            )
            .expect("valid metric"),
            l4_vip_listeners_skipped: IntGauge::new(
                L4_VIP_LISTENERS_SKIPPED,
                "VIP listeners not started because the VIP link cannot be managed.",
            )
            .expect("valid metric"),
            l4_refused: IntCounterVec::new(
                Opts::new(L4_REFUSED_TOTAL, "L4 connections refused, by reason."),
                &["reason"],
            )
            .expect("valid metric"),
            l4_udp_flows: IntGauge::new(L4_UDP_FLOWS, "UDP flows open now.").expect("valid metric"),
            l4_udp_flows_evicted: prometheus::IntCounter::new(
                L4_UDP_FLOWS_EVICTED_TOTAL,
                "UDP flows evicted because l4.udp_max_flows was reached.",
            )
            .expect("valid metric"),
            l7_requests: IntCounterVec::new(
                Opts::new(L7_REQUESTS_TOTAL, "Responses sent for a backend, by status class."),
                &["backend", "code"],
            )
            .expect("valid metric"),
            l7_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    L7_REQUEST_DURATION_SECONDS,
                    "Time from the start of a request to the backend's response head.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["backend"],
            )
            .expect("valid metric"),
            l7_bytes_in: IntCounterVec::new(
                Opts::new(L7_BYTES_IN_TOTAL, "Body bytes from clients sent to a backend."),
                &["backend"],
            )
            .expect("valid metric"),
            l7_bytes_out: IntCounterVec::new(
                Opts::new(L7_BYTES_OUT_TOTAL, "Body bytes from a backend sent to clients."),
                &["backend"],
            )
            .expect("valid metric"),
            l7_active_requests: IntGaugeVec::new(
                Opts::new(L7_ACTIVE_REQUESTS, "Requests routed to a backend in flight now."),
                &["backend"],
            )
            .expect("valid metric"),
            l7_local_replies: IntCounterVec::new(
                Opts::new(
                    L7_LOCAL_REPLIES_TOTAL,
                    "Requests the edge answered itself, by reason and routed backend.",
                ),
                &["reason", "backend"],
            )
            .expect("valid metric"),
            l7_retries: IntCounterVec::new(
                Opts::new(
                    L7_RETRIES_TOTAL,
                    "Retries to another server after a connect failure.",
                ),
                &["backend"],
            )
            .expect("valid metric"),
            l7_connections: IntCounterVec::new(
                Opts::new(L7_CONNECTIONS_TOTAL, "L7 client connections accepted."),
                &["frontend"],
            )
            .expect("valid metric"),
            l7_active_connections: IntGaugeVec::new(
                Opts::new(L7_ACTIVE_CONNECTIONS, "L7 client connections open now."),
                &["frontend"],
            )
            .expect("valid metric"),
            l7_parked_connections: IntGauge::new(
                L7_PARKED_CONNECTIONS,
                "Idle HTTP/1 client connections waiting for their next request with their \
                 buffers released.",
            )
            .expect("valid metric"),
            l7_unsupported_labels: IntGaugeVec::new(
                Opts::new(
                    L7_UNSUPPORTED_LABELS,
                    "HAPROXY_* labels (raw HAProxy templates, unknown names) that cannot apply, per app.",
                ),
                &["app"],
            )
            .expect("valid metric"),
            l7_skipped_apps: IntGauge::new(
                L7_SKIPPED_APPS,
                "Apps skipped for bad labels or certificates in the served L7 route table.",
            )
            .expect("valid metric"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.discovery_fetches.clone()))
            .expect("unique metric");
        r.register(Box::new(m.discovery_errors.clone()))
            .expect("unique metric");
        r.register(Box::new(m.discovery_last_success.clone()))
            .expect("unique metric");
        r.register(Box::new(m.discovery_fetch_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.sse_events.clone()))
            .expect("unique metric");
        r.register(Box::new(m.guard_held.clone()))
            .expect("unique metric");
        r.register(Box::new(m.snapshot_version.clone()))
            .expect("unique metric");
        r.register(Box::new(m.snapshot_build_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.snapshot_objects.clone()))
            .expect("unique metric");
        r.register(Box::new(m.labels_rejected.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_queries.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_dropped.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_truncated.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_forwarded.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_upstream_errors.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_upstream_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_cache_hits.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_zone_records.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_zone_swaps.clone()))
            .expect("unique metric");
        r.register(Box::new(m.dns_zone_build_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l4_listeners.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l4_vip_listeners_skipped.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l4_refused.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l4_udp_flows.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l4_udp_flows_evicted.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_requests.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_request_duration.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_bytes_in.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_bytes_out.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_active_requests.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_local_replies.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_retries.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_connections.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_active_connections.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_parked_connections.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_unsupported_labels.clone()))
            .expect("unique metric");
        r.register(Box::new(m.l7_skipped_apps.clone()))
            .expect("unique metric");
        m
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
