//! Fast path metrics (`ferryman_l4_fastpath_*`, names in [`crate::metrics`]). Per-service
//! counters live in the per-CPU map `fm_stats` and are summed at scrape time by [`Collector`]:
//! the BPF programs bump them, nothing is copied per connection. The path/reason, occupancy and
//! refused-VIP figures come from what the run loop last published ([`publish`]) and from
//! [`super::status`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{LazyLock, Mutex, Once, PoisonError};

use aya::maps::{Map, MapData, PerCpuArray};
use prometheus::core::{Collector as PromCollector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, IntCounter};

use super::layout::{self, ServiceKey, Stats};
use crate::metrics as names;

/// What the run loop last published for the collector.
#[derive(Default)]
struct Exported {
    /// A handle on the pinned `fm_stats` (its own fd).
    stats: Option<PerCpuArray<MapData, Stats>>,
    /// VIP → service id, as the sync assigned them.
    ids: Vec<(ServiceKey, u32)>,
    /// (services, backends, rings) in use, and the limits.
    occupancy: Option<([u64; 3], [u64; 3])>,
}

static EXPORTED: LazyLock<Mutex<Exported>> = LazyLock::new(Default::default);

fn exported() -> std::sync::MutexGuard<'static, Exported> {
    EXPORTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sync duration and errors (plain metrics, registered with the collector).
pub struct SyncMetrics {
    pub seconds: Histogram,
    pub errors: IntCounter,
}

static SYNC: LazyLock<SyncMetrics> = LazyLock::new(|| SyncMetrics {
    seconds: Histogram::with_opts(
        HistogramOpts::new(
            names::L4_FASTPATH_SYNC_SECONDS,
            "Time one fast path sync (desired state + map writes) took.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
    )
    .expect("valid metric"),
    errors: IntCounter::new(
        names::L4_FASTPATH_SYNC_ERRORS_TOTAL,
        "Fast path syncs that failed (retried at the next tick).",
    )
    .expect("valid metric"),
});

static REGISTER: Once = Once::new();

/// Registers the fast path metrics in the process registry (once; later calls do nothing).
pub fn register() {
    REGISTER.call_once(|| {
        let r = &names::metrics().registry;
        let results = [
            r.register(Box::new(Collector::new())),
            r.register(Box::new(SYNC.seconds.clone())),
            r.register(Box::new(SYNC.errors.clone())),
        ];
        for e in results.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "cannot register a fast path metric");
        }
    });
}

/// The sync metrics (registered by [`register`]).
pub fn sync_metrics() -> &'static SyncMetrics {
    &SYNC
}

/// Opens the pinned `fm_stats` for the collector.
pub fn export_stats(pin_dir: &Path) {
    let opened = MapData::from_pin(pin_dir.join(layout::MAP_STATS))
        .map_err(|e| e.to_string())
        .and_then(|d| Map::from_map_data(d).map_err(|e| e.to_string()))
        .and_then(|m| PerCpuArray::try_from(m).map_err(|e| e.to_string()));
    match opened {
        Ok(m) => exported().stats = Some(m),
        Err(e) => tracing::warn!(error = %e, "cannot open fm_stats for the metrics"),
    }
}

/// Publishes the VIP → id table and occupancy after a sync.
pub fn publish(ids: Vec<(ServiceKey, u32)>, used: [u64; 3], limits: [u64; 3]) {
    let mut e = exported();
    e.ids = ids;
    e.occupancy = Some((used, limits));
}

/// Forgets everything (the fast path stopped or fell back).
pub fn clear() {
    *exported() = Exported::default();
}

/// The `vip` label of a service key (`tcp://11.0.0.1:80`, `udp://[fd01:c::5]:53`), as the
/// user-space L4 metrics spell it.
pub fn vip_label(key: &ServiceKey) -> String {
    let proto = match key.proto {
        layout::IPPROTO_TCP => "tcp",
        layout::IPPROTO_UDP => "udp",
        _ => "ip",
    };
    format!("{proto}://{}", SocketAddr::new(key.ip(), key.port()))
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const INFO: Family = Family {
    name: names::L4_FASTPATH_INFO,
    help: "1 for the path that serves VIPs for local clients (ebpf, userspace, off) and why.",
    kind: MetricType::GAUGE,
    labels: &["path", "reason"],
};
const REFUSED_SERVICES: Family = Family {
    name: names::L4_FASTPATH_REFUSED_SERVICES,
    help: "VIPs over l4.max_services or l4.max_backends, served by the user-space path.",
    kind: MetricType::GAUGE,
    labels: &[],
};
const OCCUPANCY: [Family; 6] = [
    Family {
        name: names::L4_FASTPATH_SERVICES,
        help: "VIPs in the fast path's maps.",
        kind: MetricType::GAUGE,
        labels: &[],
    },
    Family {
        name: names::L4_FASTPATH_BACKENDS,
        help: "Backend slots in the fast path's maps.",
        kind: MetricType::GAUGE,
        labels: &[],
    },
    Family {
        name: names::L4_FASTPATH_RINGS,
        help: "Maglev rings in use in the fast path's maps.",
        kind: MetricType::GAUGE,
        labels: &[],
    },
    Family {
        name: names::L4_FASTPATH_SERVICES_LIMIT,
        help: "VIPs the fast path's maps can hold (l4.max_services).",
        kind: MetricType::GAUGE,
        labels: &[],
    },
    Family {
        name: names::L4_FASTPATH_BACKENDS_LIMIT,
        help: "Backend slots the fast path's maps can hold (l4.max_backends).",
        kind: MetricType::GAUGE,
        labels: &[],
    },
    Family {
        name: names::L4_FASTPATH_RINGS_LIMIT,
        help: "Maglev rings the fast path's maps can hold.",
        kind: MetricType::GAUGE,
        labels: &[],
    },
];
const REWRITES: Family = Family {
    name: names::L4_FASTPATH_REWRITES_TOTAL,
    help: "Destinations rewritten to a backend by the BPF hooks, by VIP and hook.",
    kind: MetricType::COUNTER,
    labels: &["vip", "hook"],
};
const REFUSED_CONNECTIONS: Family = Family {
    name: names::L4_FASTPATH_REFUSED_CONNECTIONS_TOTAL,
    help: "Connects and datagrams to a VIP without a healthy backend, refused by the BPF hooks.",
    kind: MetricType::COUNTER,
    labels: &["vip"],
};
const LOOKUP_ERRORS: Family = Family {
    name: names::L4_FASTPATH_LOOKUP_ERRORS_TOTAL,
    help: "Rewrites skipped because a backend slot lookup failed (the VIP was left as it was).",
    kind: MetricType::COUNTER,
    labels: &["vip"],
};

/// Reads `fm_stats` and the published state at scrape time.
pub struct Collector {
    descs: Vec<Desc>,
}

impl Collector {
    pub fn new() -> Collector {
        let all = [&INFO, &REFUSED_SERVICES]
            .into_iter()
            .chain(OCCUPANCY.iter())
            .chain([&REWRITES, &REFUSED_CONNECTIONS, &LOOKUP_ERRORS]);
        let descs = all
            .map(|f| {
                Desc::new(
                    f.name.to_string(),
                    f.help.to_string(),
                    f.labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
                .expect("valid metric description")
            })
            .collect();
        Collector { descs }
    }
}

impl Default for Collector {
    fn default() -> Collector {
        Collector::new()
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn sample(family: &Family, labels: &[&str], value: f64) -> Metric {
    let pairs = family
        .labels
        .iter()
        .zip(labels)
        .map(|(n, v)| label(n, v))
        .collect();
    let mut m = Metric::from_label(pairs);
    if family.kind == MetricType::COUNTER {
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

fn family(f: &Family, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(f.name.to_string());
    mf.set_help(f.help.to_string());
    mf.set_field_type(f.kind);
    mf.set_metric(metrics);
    mf
}

/// The metric families for `status` and what was exported (pure but for the map reads).
fn families(status: &super::Status) -> Vec<MetricFamily> {
    let path = match status.path {
        super::Path::Ebpf => "ebpf",
        super::Path::Userspace => "userspace",
        super::Path::Off => "off",
    };
    let reason = status.reason.as_deref().unwrap_or("");
    let mut out = vec![
        family(&INFO, vec![sample(&INFO, &[path, reason], 1.0)]),
        family(
            &REFUSED_SERVICES,
            vec![sample(&REFUSED_SERVICES, &[], status.refused.len() as f64)],
        ),
    ];
    let e = exported();
    if let Some((used, limits)) = e.occupancy {
        for (f, v) in OCCUPANCY.iter().zip(used.iter().chain(limits.iter())) {
            out.push(family(f, vec![sample(f, &[], *v as f64)]));
        }
    }
    if let Some(stats) = &e.stats {
        let mut rows: Vec<(String, Stats)> = e
            .ids
            .iter()
            .filter_map(|(key, id)| {
                let per_cpu = stats.get(id, 0).ok()?;
                Some((vip_label(key), super::maps::sum(per_cpu.iter())))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rewrites = Vec::new();
        let mut refused = Vec::new();
        let mut errors = Vec::new();
        for (vip, s) in &rows {
            rewrites.push(sample(&REWRITES, &[vip, "connect"], s.connect as f64));
            rewrites.push(sample(&REWRITES, &[vip, "sendmsg"], s.sendmsg as f64));
            refused.push(sample(&REFUSED_CONNECTIONS, &[vip], s.refused as f64));
            errors.push(sample(&LOOKUP_ERRORS, &[vip], s.errors as f64));
        }
        out.push(family(&REWRITES, rewrites));
        out.push(family(&REFUSED_CONNECTIONS, refused));
        out.push(family(&LOOKUP_ERRORS, errors));
    }
    out
}

impl PromCollector for Collector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&super::status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_labels_match_the_user_space_spelling() {
        let k = ServiceKey::new("11.0.0.1".parse().unwrap(), 80, layout::IPPROTO_TCP);
        assert_eq!(vip_label(&k), "tcp://11.0.0.1:80");
        let k = ServiceKey::new("fd01:c::5".parse().unwrap(), 53, layout::IPPROTO_UDP);
        assert_eq!(vip_label(&k), "udp://[fd01:c::5]:53");
    }

    #[test]
    fn info_names_the_path_and_reason() {
        let status = super::super::Status {
            path: super::super::Path::Userspace,
            reason: Some("no permission".into()),
            refused: [ServiceKey::default()].into_iter().collect(),
        };
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &families(&status)[..2],
            &mut buf,
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains(
                "ferryman_l4_fastpath_info{path=\"userspace\",reason=\"no permission\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ferryman_l4_fastpath_refused_services 1"),
            "{text}"
        );
    }
}
