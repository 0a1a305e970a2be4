//! Balancer cost: `pick()` per algorithm with 3 and 100 backends (all up, equal weights, varied
//! load and client addresses), and the Maglev table build for 10, 100 and 1000 backends.
//!
//! `cargo bench --bench balance` (add `-- --quick` for a fast pass, a filter such as
//! `-- maglev_build` for one group).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferryman::balance::{Balancer, Slot};
use ferryman::config::Balance;
use ferryman::health::BackendState;
use ferryman::model::BackendId;

fn slots(n: usize) -> Vec<Slot> {
    (0..n)
        .map(|i| Slot {
            id: BackendId(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)),
            weight: 1,
        })
        .collect()
}

fn backends(n: usize) -> Vec<Arc<BackendState>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080));
            let s = BackendState::new(BackendId(i as u64), addr);
            // Uneven load so least connections and P2c compare for real.
            s.active.store((i * 7 % 13) as u32, Ordering::Relaxed);
            Arc::new(s)
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 100] {
        let backends = backends(n);
        for kind in [
            Balance::Rr,
            Balance::Wrr,
            Balance::Wlc,
            Balance::P2c,
            Balance::Maglev,
        ] {
            let b = Balancer::new(kind, &slots(n));
            let mut k: u32 = 0;
            g.bench_with_input(BenchmarkId::new(format!("{kind:?}"), n), &n, |bench, _| {
                bench.iter(|| {
                    k = k.wrapping_add(0x9e37_79b9);
                    let client = IpAddr::V4(Ipv4Addr::from_bits(k));
                    black_box(b.pick(black_box(client), &backends, &[]))
                })
            });
        }
    }
    g.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(30);
    for n in [10usize, 100, 1000] {
        let s = slots(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| black_box(Balancer::new(Balance::Maglev, black_box(&s))))
        });
    }
    g.finish();
}

criterion_group!(benches, pick, maglev_build);
criterion_main!(benches);
