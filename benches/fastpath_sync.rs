//! CPU cost of the fast-path sync (the part before the map syscalls): `Desired::from_snapshot`
//! on a 10 000-VIP snapshot, and `Syncer::apply` of 10 000 new services, of one changed service
//! among 10 000, and of 200 new Maglev services (ring builds), into a MapOps that only counts.
//! The goal for a 10 000-service sync against real maps is <= 100 ms, so this part should take a
//! few ms; the writes printed are the syscalls the real maps would see.
//!
//! `cargo bench --bench fastpath_sync` (add `-- --quick` for a fast pass).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferryman::balance::BALANCE_LABEL;
use ferryman::config::Balance;
use ferryman::fastpath::MapOps;
use ferryman::fastpath::layout::{self, BackendKey, ServiceKey};
use ferryman::fastpath::sync::{Desired, Limits, Syncer};
use ferryman::model::{App, Backend, BackendId, ClusterState, Protocol, Snapshot, Vip, VipKey};

const VIPS: usize = 10_000;
const BACKENDS_PER_VIP: usize = 3;

/// Counts writes; stores nothing.
#[derive(Default)]
struct Counting {
    writes: usize,
}

impl MapOps for Counting {
    type Error = Infallible;
    fn set_backend(&mut self, _: BackendKey, _: layout::Backend) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
    fn delete_backend(&mut self, _: BackendKey) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
    fn set_service(&mut self, _: ServiceKey, _: layout::Service) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
    fn delete_service(&mut self, _: ServiceKey) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
    fn set_ring(&mut self, _: u32, _: &[u32]) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
    fn reset_stats(&mut self, _: u32) -> Result<(), Infallible> {
        self.writes += 1;
        Ok(())
    }
}

/// 10 000 TCP VIPs of 100 apps (one in ten labelled Maglev), 3 backends each, one draining.
fn snapshot() -> Snapshot {
    let mut state = ClusterState::default();
    for a in 0..100 {
        let mut app = App {
            id: format!("/app{a}"),
            ..Default::default()
        };
        if a % 10 == 0 {
            app.labels.insert(BALANCE_LABEL.into(), "maglev".into());
        }
        state.apps.insert(app.id.clone(), Arc::new(app));
    }
    let vips = (0..VIPS)
        .map(|i| {
            let app: Arc<str> = Arc::from(format!("/app{}", i % 100));
            let backends = (0..BACKENDS_PER_VIP)
                .map(|j| {
                    let n = (i * BACKENDS_PER_VIP + j) as u32;
                    Backend {
                        id: BackendId(u64::from(n)),
                        ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)),
                        port: 8080,
                        weight: u32::from(j != 2 || i % 7 != 0),
                        task_id: format!("task{n}").into(),
                        app_id: Some(app.as_ref().into()),
                        agent_ip: None,
                    }
                })
                .collect();
            Arc::new(Vip {
                key: VipKey {
                    protocol: Protocol::Tcp,
                    ip: IpAddr::V4(Ipv4Addr::from(0x0b00_0000 | i as u32)),
                    port: 80,
                },
                name: None,
                label: None,
                backends,
            })
        })
        .collect();
    let mut snapshot = Snapshot::empty();
    snapshot.state = Arc::new(state);
    snapshot.vips = vips;
    snapshot
}

fn limits() -> Limits {
    Limits {
        max_services: 16_384,
        max_backends: 262_144,
        rings: 2_048,
    }
}

/// `d` without Maglev (no ring builds: the plain-service cost).
fn plain(d: &Desired) -> Desired {
    Desired {
        services: d
            .services
            .iter()
            .map(|(k, s)| {
                let mut s = s.clone();
                s.maglev = false;
                (*k, s)
            })
            .collect(),
    }
}

fn sync(c: &mut Criterion) {
    let snap = snapshot();
    let mut g = c.benchmark_group("fastpath_sync");
    g.sample_size(20);

    g.bench_function("from_snapshot_10k", |b| {
        b.iter(|| {
            black_box(Desired::from_snapshot(
                black_box(&snap),
                |_| true,
                Balance::Rr,
            ))
        })
    });

    let mixed = Desired::from_snapshot(&snap, |_| true, Balance::Rr);
    let all_plain = plain(&mixed);
    // One service gains a backend, the next apply takes it away again.
    let mut one_changed = all_plain.clone();
    if let Some(s) = one_changed.services.values_mut().nth(VIPS / 2) {
        s.backends
            .push(layout::Backend::new(IpAddr::from([10, 255, 0, 1]), 9090));
        s.backends.sort_unstable();
    }
    let maglev_200 = Desired {
        services: mixed
            .services
            .iter()
            .filter(|(_, s)| s.maglev)
            .take(200)
            .map(|(k, s)| (*k, s.clone()))
            .collect::<BTreeMap<_, _>>(),
    };

    for (name, d) in [
        ("apply_10k_new_plain", &all_plain),
        ("apply_10k_new_mixed", &mixed),
        ("apply_200_new_maglev", &maglev_200),
    ] {
        let mut ops = Counting::default();
        let r = Syncer::new(limits())
            .apply(d, &mut ops)
            .unwrap_or_else(|e| match e {});
        println!("{name}: {r:?}");
        g.bench_function(name, |b| {
            b.iter_batched(
                || Syncer::new(limits()),
                |mut s| {
                    let mut ops = Counting::default();
                    let r = s.apply(d, &mut ops).unwrap_or_else(|e| match e {});
                    black_box((r, s))
                },
                BatchSize::PerIteration,
            )
        });
    }

    let mut s = Syncer::new(limits());
    let mut ops = Counting::default();
    s.apply(&all_plain, &mut ops).unwrap_or_else(|e| match e {});
    let r = s
        .apply(&one_changed, &mut ops)
        .unwrap_or_else(|e| match e {});
    println!("apply_1_changed_of_10k: {r:?}");
    let r = s.apply(&all_plain, &mut ops).unwrap_or_else(|e| match e {});
    println!("apply_1_changed_of_10k (back): {r:?}");
    let mut flip = false;
    g.bench_function("apply_1_changed_of_10k", |b| {
        b.iter(|| {
            flip = !flip;
            let d = if flip { &one_changed } else { &all_plain };
            black_box(s.apply(d, &mut ops).unwrap_or_else(|e| match e {}))
        })
    });
    g.bench_function("apply_unchanged_10k", |b| {
        b.iter(|| black_box(s.apply(&all_plain, &mut ops).unwrap_or_else(|e| match e {})))
    });
    g.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
