//! Per-backend L4 metrics (`ferryman_l4_backend_*`, names in [`crate::metrics`]), read from the
//! backends' atomics at scrape time: nothing is done per connection beyond the atomics the data
//! path bumps anyway, and no label set is kept for a backend that is gone.
//!
//! One [`L4Collector`] is registered in the process registry the first time a health
//! [`Registry`] is made; at each scrape it walks every live health registry and, for each VIP
//! (or service port) of its membership ([`Registry::set_membership`]), each backend still in the
//! registry.

use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::{BackendState, Registry, RegistryInner, clock};
use crate::metrics as names;

/// Health registries alive now (dead ones are pruned when a new one is exported).
static LIVE: Mutex<Vec<Weak<RegistryInner>>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Adds a registry to what the collector exports, registering the collector once.
pub(crate) fn export(inner: &Arc<RegistryInner>) {
    {
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(inner));
    }
    REGISTER.call_once(|| {
        let registry = &names::metrics().registry;
        if let Err(e) = registry.register(Box::new(L4Collector::new())) {
            tracing::warn!(error = %e, "cannot register the per-backend L4 metrics");
        }
    });
}

/// One exported family: name, help, type and how to read the value from a state.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&BackendState, u64) -> f64,
}

fn load(a: &std::sync::atomic::AtomicU64) -> f64 {
    a.load(std::sync::atomic::Ordering::Relaxed) as f64
}

const FAMILIES: [Family; 7] = [
    Family {
        name: names::L4_BACKEND_CONNECTIONS_TOTAL,
        help: "Connections (or UDP flows) opened to a backend.",
        kind: MetricType::COUNTER,
        read: |s, _| load(&s.total),
    },
    Family {
        name: names::L4_BACKEND_ACTIVE_CONNECTIONS,
        help: "Connections (or UDP flows) open to a backend now.",
        kind: MetricType::GAUGE,
        read: |s, _| f64::from(s.active()),
    },
    Family {
        name: names::L4_BACKEND_IN_BYTES_TOTAL,
        help: "Bytes from clients sent to a backend.",
        kind: MetricType::COUNTER,
        read: |s, _| load(&s.bytes_in),
    },
    Family {
        name: names::L4_BACKEND_OUT_BYTES_TOTAL,
        help: "Bytes from a backend sent to clients.",
        kind: MetricType::COUNTER,
        read: |s, _| load(&s.bytes_out),
    },
    Family {
        name: names::L4_BACKEND_CONNECT_FAILURES_TOTAL,
        help: "Failed connects to a backend.",
        kind: MetricType::COUNTER,
        read: |s, _| load(&s.connect_failures),
    },
    Family {
        name: names::L4_BACKEND_UP,
        help: "1 when a backend takes new connections as far as health goes, 0 when ejected or failed by active checks.",
        kind: MetricType::GAUGE,
        read: |s, now| if s.is_up_at(now) { 1.0 } else { 0.0 },
    },
    Family {
        name: names::L4_BACKEND_EJECTIONS_TOTAL,
        help: "Ejections of a backend by passive outlier detection.",
        kind: MetricType::COUNTER,
        read: |s, _| load(&s.ejections),
    },
];

/// The scrape-time collector of the `ferryman_l4_backend_*` families.
pub struct L4Collector {
    descs: Vec<Desc>,
}

impl L4Collector {
    pub fn new() -> L4Collector {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_string(),
                    f.help.to_string(),
                    vec!["vip".to_string(), "backend".to_string()],
                    Default::default(),
                )
                .expect("valid metric description")
            })
            .collect();
        L4Collector { descs }
    }
}

impl Default for L4Collector {
    fn default() -> L4Collector {
        L4Collector::new()
    }
}

impl Collector for L4Collector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let registries: Vec<Registry> = LIVE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| Registry { inner })
            .collect();
        families(&registries)
    }
}

/// The `ferryman_l4_backend_*` families of `registries` now: one series per (VIP, backend) of
/// each registry's membership whose backend is still in the registry.
pub fn families(registries: &[Registry]) -> Vec<MetricFamily> {
    let now = clock::now_ms();
    // (vip label, backend label, state), gathered with each registry's lock held only to copy.
    let mut rows: Vec<(String, String, Arc<BackendState>)> = Vec::new();
    for registry in registries {
        let membership = registry.membership();
        let states = super::lock(&registry.inner.states);
        for m in membership.iter() {
            for id in &m.backends {
                if let Some(s) = states.get(id) {
                    rows.push((m.vip.clone(), s.addr.to_string(), s.clone()));
                }
            }
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);

    FAMILIES
        .iter()
        .map(|f| {
            let metrics = rows
                .iter()
                .map(|(vip, backend, state)| {
                    let mut m =
                        Metric::from_label(vec![label("vip", vip), label("backend", backend)]);
                    let value = (f.read)(state, now);
                    match f.kind {
                        MetricType::GAUGE => {
                            let mut g = Gauge::default();
                            g.set_value(value);
                            m.set_gauge(g);
                        }
                        _ => {
                            let mut c = Counter::default();
                            c.set_value(value);
                            m.set_counter(c);
                        }
                    }
                    m
                })
                .collect();
            let mut mf = MetricFamily::default();
            mf.set_name(f.name.to_string());
            mf.set_help(f.help.to_string());
            mf.set_field_type(f.kind);
            mf.set_metric(metrics);
            mf
        })
        .collect()
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}
