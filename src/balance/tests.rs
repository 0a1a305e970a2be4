//! Balancer behaviour: distributions (exact for the deterministic ones, within ±15 % over ≥ 3000
//! picks for the random ones), health, panic mode, draining, exclusion, Maglev consistency.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const ALL: [Balance; 5] = [
    Balance::Rr,
    Balance::Wrr,
    Balance::Wlc,
    Balance::P2c,
    Balance::Maglev,
];

/// Backends whose health and load the test sets directly.
struct Fake {
    up: Vec<bool>,
    active: Vec<u32>,
}

impl Fake {
    fn up(n: usize) -> Fake {
        Fake {
            up: vec![true; n],
            active: vec![0; n],
        }
    }
    fn down(mut self, i: usize) -> Fake {
        self.up[i] = false;
        self
    }
}

impl View for Fake {
    fn count(&self) -> usize {
        self.up.len()
    }
    fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }
    fn active(&self, i: usize) -> u32 {
        self.active[i]
    }
}

fn slots(weights: &[u32]) -> Vec<Slot> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Slot {
            id: BackendId(mix64(i as u64 + 1)),
            weight,
        })
        .collect()
}

fn states(n: usize) -> Vec<Arc<BackendState>> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, 0, i as u8], 8080));
            Arc::new(BackendState::new(BackendId(mix64(i as u64 + 1)), addr))
        })
        .collect()
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// Counts per index over `picks` picks from `view` (clients from a seeded RNG).
fn shares<V: View + ?Sized>(b: &Balancer, view: &V, picks: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut c = vec![0; view.count()];
    for _ in 0..picks {
        let client = IpAddr::V4(Ipv4Addr::from_bits(rng.random()));
        let i = b.pick_in(client, view, &[]).expect("a candidate");
        c[i] += 1;
    }
    c
}

fn assert_within(counts: &[usize], expected: &[f64], tolerance: f64) {
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        assert!(
            (c as f64 - e).abs() <= e * tolerance,
            "index {i}: {c} vs expected {e:.0} ± {:.0} %: {counts:?}",
            tolerance * 100.0
        );
    }
}

// === all algorithms ===

#[test]
fn empty_or_all_draining_gives_none() {
    for kind in ALL {
        let b = Balancer::new(kind, &[]);
        assert_eq!(b.pick(CLIENT, &[], &[]), None, "{kind:?}");
        let b = Balancer::new(kind, &slots(&[0, 0, 0]));
        assert_eq!(b.pick(CLIENT, &states(3), &[]), None, "{kind:?}");
        assert!(!b.has_live());
        // Fewer backends than slots: only the common prefix counts.
        let b = Balancer::new(kind, &slots(&[0, 1]));
        assert_eq!(b.pick(CLIENT, &states(1), &[]), None, "{kind:?}");
        assert_eq!(b.pick(CLIENT, &states(2), &[]), Some(1), "{kind:?}");
    }
}

#[test]
fn draining_and_down_backends_are_never_picked() {
    for kind in ALL {
        let b = Balancer::new(kind, &slots(&[1, 0, 1, 1, 0]));
        let view = Fake::up(5).down(3);
        let c = shares(&b, &view, 3000);
        assert_eq!((c[1], c[3], c[4]), (0, 0, 0), "{kind:?}: {c:?}");
        assert_eq!(c[0] + c[2], 3000, "{kind:?}");
    }
}

#[test]
fn panic_mode_uses_all_live_backends_when_none_is_up() {
    for kind in ALL {
        let b = Balancer::new(kind, &slots(&[1, 1, 0, 1]));
        let view = Fake::up(4).down(0).down(1).down(2).down(3);
        let c = shares(&b, &view, 3000);
        assert_eq!(c[2], 0, "{kind:?}: weight 0 stays out in panic mode");
        assert!(c[0] > 0 && c[1] > 0 && c[3] > 0, "{kind:?}: {c:?}");
        // One up again (even a drained one does not count): panic mode ends.
        let mut view = view;
        view.up[2] = true;
        assert!(b.pick_in(CLIENT, &view, &[]).is_some(), "{kind:?}");
        view.up[1] = true;
        let c = shares(&b, &view, 300);
        assert_eq!(c[1], 300, "{kind:?}: {c:?}");
    }
}

#[test]
fn excluded_backends_are_skipped() {
    for kind in ALL {
        let b = Balancer::new(kind, &slots(&[1, 1, 1]));
        let view = Fake::up(3);
        for _ in 0..100 {
            let i = b.pick_in(CLIENT, &view, &[1]).expect("candidate");
            assert_ne!(i, 1, "{kind:?}");
            assert_eq!(b.pick_in(CLIENT, &view, &[0, 2]), Some(1), "{kind:?}");
        }
        // Every one tried: no pick.
        assert_eq!(b.pick_in(CLIENT, &view, &[0, 1, 2]), None, "{kind:?}");
        // Healthy ones all tried, one down left: the connection has run out of tries (no panic
        // mode while a healthy backend exists).
        let view = Fake::up(3).down(2);
        assert_eq!(b.pick_in(CLIENT, &view, &[0, 1]), None, "{kind:?}");
        // All down (panic mode) and some excluded: the others.
        let view = Fake::up(3).down(0).down(1).down(2);
        assert_eq!(b.pick_in(CLIENT, &view, &[0, 2]), Some(1), "{kind:?}");
    }
}

#[test]
fn retries_walk_every_backend_once() {
    for kind in ALL {
        let b = Balancer::new(kind, &slots(&[1, 2, 1, 3, 1]));
        let view = Fake::up(5);
        let mut tried = Vec::new();
        while let Some(i) = b.pick_in(CLIENT, &view, &tried) {
            assert!(!tried.contains(&i));
            tried.push(i);
        }
        tried.sort_unstable();
        assert_eq!(tried, [0, 1, 2, 3, 4], "{kind:?}");
    }
}

// === Rr, Wrr ===

#[test]
fn rr_gives_exact_shares() {
    let b = Balancer::new(Balance::Rr, &slots(&[1, 5, 1]));
    let c = shares(&b, &*states(3), 3000);
    assert_eq!(c, [1000, 1000, 1000]);
    // A drained backend does not skew the others.
    let b = Balancer::new(Balance::Rr, &slots(&[1, 0, 1, 1]));
    assert_eq!(shares(&b, &*states(4), 3000), [1000, 0, 1000, 1000]);
    // A down backend's turns go to the next turns: the others still share evenly.
    let b = Balancer::new(Balance::Rr, &slots(&[1, 1, 1, 1]));
    assert_eq!(
        shares(&b, &Fake::up(4).down(1), 3000),
        [1000, 0, 1000, 1000]
    );
    // In turn order.
    let b = Balancer::new(Balance::Rr, &slots(&[1, 1, 1]));
    let order: Vec<usize> = (0..6)
        .map(|_| b.pick(CLIENT, &states(3), &[]).unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn wrr_gives_exact_weighted_shares_per_cycle() {
    let weights = [1, 2, 3, 0, 4];
    let b = Balancer::new(Balance::Wrr, &slots(&weights));
    let backends = states(5);
    // One cycle = Σ weights = 10 picks.
    let mut cycle = vec![0; 5];
    for _ in 0..10 {
        cycle[b.pick(CLIENT, &backends, &[]).unwrap()] += 1;
    }
    assert_eq!(cycle, [1, 2, 3, 0, 4]);
    assert_eq!(shares(&b, &*backends, 1000), [100, 200, 300, 0, 400]);
    // Weights with a common factor: the cycle is the reduced one.
    let b = Balancer::new(Balance::Wrr, &slots(&[100, 300]));
    let mut cycle = vec![0; 2];
    for _ in 0..4 {
        cycle[b.pick(CLIENT, &backends, &[]).unwrap()] += 1;
    }
    assert_eq!(cycle, [1, 3]);
}

// === Wlc ===

#[test]
fn wlc_picks_the_least_loaded_weighted() {
    let backends = states(4);
    for (i, a) in [5, 2, 7, 3].into_iter().enumerate() {
        backends[i].active.store(a, Ordering::Relaxed);
    }
    let b = Balancer::new(Balance::Wlc, &slots(&[1, 1, 1, 1]));
    for _ in 0..10 {
        assert_eq!(b.pick(CLIENT, &backends, &[]), Some(1));
    }
    assert_eq!(b.pick(CLIENT, &backends, &[1]), Some(3));
    // Weighted: 5/4 < 2/1 < 7/1 etc.: slot 0 with weight 4 wins over slot 1.
    let b = Balancer::new(Balance::Wlc, &slots(&[4, 1, 1, 1]));
    assert_eq!(b.pick(CLIENT, &backends, &[]), Some(0));
    // A drained backend with no load stays out.
    backends[2].active.store(0, Ordering::Relaxed);
    let b = Balancer::new(Balance::Wlc, &slots(&[1, 1, 0, 1]));
    assert_eq!(b.pick(CLIENT, &backends, &[]), Some(1));
}

#[test]
fn wlc_spreads_ties_evenly_and_balances_load() {
    let b = Balancer::new(Balance::Wlc, &slots(&[1, 1, 1]));
    // Equal load (nothing counted as it goes): the rotating start shares exactly.
    assert_eq!(shares(&b, &*states(3), 3000), [1000, 1000, 1000]);
    // Load counted as connections open: a weighted 1:2:3 split of 600 connections.
    let b = Balancer::new(Balance::Wlc, &slots(&[1, 2, 3]));
    let backends = states(3);
    for _ in 0..600 {
        let i = b.pick(CLIENT, &backends, &[]).unwrap();
        backends[i].active.fetch_add(1, Ordering::Relaxed);
    }
    let active: Vec<u32> = backends.iter().map(|s| s.active()).collect();
    assert_eq!(active, [100, 200, 300]);
}

// === P2c ===

#[test]
fn p2c_spreads_equal_load_evenly() {
    let b = Balancer::new(Balance::P2c, &slots(&[1, 1, 1]));
    let c = shares(&b, &*states(3), 3000);
    assert_within(&c, &[1000.0; 3], 0.15);
    let b = Balancer::new(Balance::P2c, &slots(&[1; 10]));
    let c = shares(&b, &*states(10), 10_000);
    assert_within(&c, &[1000.0; 10], 0.15);
}

#[test]
fn p2c_avoids_a_heavily_loaded_backend() {
    let backends = states(3);
    backends[1].active.store(1000, Ordering::Relaxed);
    let b = Balancer::new(Balance::P2c, &slots(&[1, 1, 1]));
    let c = shares(&b, &*backends, 3000);
    // The two samples are distinct, so the loaded one always loses.
    assert_eq!(c[1], 0, "{c:?}");
    assert_within(&[c[0], c[2]], &[1500.0; 2], 0.15);
    // With load counted as it goes, 10 backends stay within a few connections of each other.
    let b = Balancer::new(Balance::P2c, &slots(&[1; 10]));
    let backends = states(10);
    for _ in 0..3000 {
        let i = b.pick(CLIENT, &backends, &[]).unwrap();
        backends[i].active.fetch_add(1, Ordering::Relaxed);
    }
    let active: Vec<u32> = backends.iter().map(|s| s.active()).collect();
    let (min, max) = (active.iter().min().unwrap(), active.iter().max().unwrap());
    assert!(max - min <= 10, "{active:?}");
}

#[test]
fn p2c_respects_weights_under_load() {
    let b = Balancer::new(Balance::P2c, &slots(&[1, 3]));
    let backends = states(2);
    for _ in 0..4000 {
        let i = b.pick(CLIENT, &backends, &[]).unwrap();
        backends[i].active.fetch_add(1, Ordering::Relaxed);
    }
    let active: Vec<f64> = backends.iter().map(|s| f64::from(s.active())).collect();
    assert_within(
        &[active[0] as usize, active[1] as usize],
        &[1000.0, 3000.0],
        0.15,
    );
}

// === Maglev ===

fn random_clients(n: usize, seed: u64) -> Vec<IpAddr> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|k| {
            if k % 4 == 3 {
                IpAddr::V6(Ipv6Addr::from_bits(rng.random()))
            } else {
                IpAddr::V4(Ipv4Addr::from_bits(rng.random()))
            }
        })
        .collect()
}

#[test]
fn maglev_keeps_a_client_on_its_backend() {
    let b = Balancer::new(Balance::Maglev, &slots(&[1; 7]));
    let backends = states(7);
    let again = Balancer::new(Balance::Maglev, &slots(&[1; 7]));
    for client in random_clients(500, 1) {
        let first = b.pick(client, &backends, &[]);
        for _ in 0..5 {
            assert_eq!(b.pick(client, &backends, &[]), first);
        }
        // A rebuilt balancer for the same set (another node, a restart) agrees.
        assert_eq!(again.pick(client, &backends, &[]), first);
    }
    // IPv4-mapped IPv6 is the same client as IPv4.
    let v4 = Ipv4Addr::new(198, 51, 100, 9);
    assert_eq!(
        b.pick(IpAddr::V4(v4), &backends, &[]),
        b.pick(IpAddr::V6(v4.to_ipv6_mapped()), &backends, &[])
    );
}

#[test]
fn maglev_spreads_clients_evenly_and_by_weight() {
    let clients = random_clients(6000, 2);
    let count = |b: &Balancer, n: usize| {
        let backends = states(n);
        let mut c = vec![0; n];
        for &client in &clients {
            c[b.pick(client, &backends, &[]).unwrap()] += 1;
        }
        c
    };
    let c = count(&Balancer::new(Balance::Maglev, &slots(&[1; 3])), 3);
    assert_within(&c, &[2000.0; 3], 0.15);
    let c = count(&Balancer::new(Balance::Maglev, &slots(&[1; 6])), 6);
    assert_within(&c, &[1000.0; 6], 0.15);
    let c = count(&Balancer::new(Balance::Maglev, &slots(&[1, 2, 3])), 3);
    assert_within(&c, &[1000.0, 2000.0, 3000.0], 0.15);
    // Table shares themselves (all 65537 entries) are close to the weights.
    let b = Balancer::new(Balance::Maglev, &slots(&[1, 2, 0, 3]));
    let Table::Maglev(Some(t)) = &b.table else {
        panic!("maglev table")
    };
    let mut owned = [0usize; 4];
    for pos in 0..maglev::MAGLEV_TABLE_SIZE {
        owned[t.get(pos)] += 1;
    }
    let m = maglev::MAGLEV_TABLE_SIZE as f64;
    assert_eq!(owned[2], 0);
    assert_within(
        &[owned[0], owned[1], owned[3]],
        &[m / 6.0, m / 3.0, m / 2.0],
        0.02,
    );
}

/// Clients of backend `id` per client, for a set of ids (index → id mapping differs per set).
fn assignment(ids: &[u64], clients: &[IpAddr]) -> Vec<u64> {
    let slots: Vec<Slot> = ids
        .iter()
        .map(|&id| Slot {
            id: BackendId(id),
            weight: 1,
        })
        .collect();
    let b = Balancer::new(Balance::Maglev, &slots);
    let view = Fake::up(ids.len());
    clients
        .iter()
        .map(|&c| ids[b.pick_in(c, &view, &[]).unwrap()])
        .collect()
}

#[test]
fn maglev_removing_one_backend_remaps_few_clients() {
    let clients = random_clients(20_000, 3);
    for n in [5usize, 10, 50] {
        let ids: Vec<u64> = (0..n as u64).map(|i| mix64(i ^ 0xabc)).collect();
        let before = assignment(&ids, &clients);
        let removed = ids[n / 2];
        let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != removed).collect();
        let after = assignment(&rest, &clients);
        let on_removed = before.iter().filter(|&&id| id == removed).count();
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != removed && b != a)
            .count();
        let total = clients.len() as f64;
        // The removed backend's clients (≈ 1/n) must move; of the others, fewer than 2/n
        // (Maglev's disruption; a mod-n hash would move ≈ all).
        assert!(
            (on_removed as f64) < 1.3 * total / n as f64,
            "n={n}: {on_removed}"
        );
        assert!(
            (moved_others as f64) < 2.0 * total / n as f64,
            "n={n}: {moved_others} of {total} moved besides the removed backend's {on_removed}"
        );
        // In practice far fewer: 49, 55, 72 of 20 000 for n = 5, 10, 50.
        assert!(moved_others as f64 <= 0.01 * total, "n={n}: {moved_others}");
        // Adding it back restores the original mapping exactly (the table depends on the set).
        assert_eq!(assignment(&ids, &clients), before);
    }
}

#[test]
fn maglev_down_backend_clients_spread_and_others_stay() {
    let clients = random_clients(6000, 4);
    let b = Balancer::new(Balance::Maglev, &slots(&[1; 4]));
    let up = Fake::up(4);
    let down = Fake::up(4).down(0);
    let mut moved_to = [0usize; 4];
    for &client in &clients {
        let home = b.pick_in(client, &up, &[]).unwrap();
        let now = b.pick_in(client, &down, &[]).unwrap();
        if home == 0 {
            moved_to[now] += 1;
            // Deterministic fallback: the same client lands on the same backend.
            assert_eq!(b.pick_in(client, &down, &[]), Some(now));
        } else {
            assert_eq!(now, home, "a client of a healthy backend stays");
        }
    }
    assert_eq!(moved_to[0], 0);
    let moved: usize = moved_to.iter().sum();
    let third = moved as f64 / 3.0;
    assert_within(&moved_to[1..], &[third; 3], 0.25);
}

#[test]
fn maglev_more_backends_than_probes_are_found() {
    // 200 backends, all but one down or excluded: the linear fallback finds the one left.
    let b = Balancer::new(Balance::Maglev, &slots(&[1; 200]));
    let mut view = Fake::up(200);
    view.up.iter_mut().for_each(|u| *u = false);
    view.up[137] = true;
    for client in random_clients(200, 5) {
        assert_eq!(b.pick_in(client, &view, &[]), Some(137));
        assert_eq!(b.pick_in(client, &view, &[137]), None);
    }
}

#[test]
fn maglev_table_is_half_size_with_u16_indexes() {
    let b = Balancer::new(Balance::Maglev, &slots(&[1; 3]));
    assert_eq!(b.table_bytes(), maglev::MAGLEV_TABLE_SIZE * 2);
    assert_eq!(
        Balancer::new(Balance::Wlc, &slots(&[1; 3])).table_bytes(),
        0
    );
    let b = Balancer::new(Balance::Maglev, &slots(&[0; 3]));
    assert_eq!(b.table_bytes(), 0);
}

#[test]
fn live_backend_states_drive_health_and_panic_mode() {
    let backends = states(3);
    for kind in ALL {
        let b = Balancer::new(kind, &slots(&[1, 1, 1]));
        // Active checks fail one: never picked.
        backends[0].set_check_down(true);
        // Passive detection ejects another after consecutive connect failures.
        for _ in 0..backends[1].policy().outlier_failures.max(1) {
            backends[1].report_connect_failure();
        }
        assert!(!backends[1].is_up());
        for _ in 0..50 {
            assert_eq!(b.pick(CLIENT, &backends, &[]), Some(2), "{kind:?}");
        }
        // All down: panic mode uses all of them.
        backends[2].set_check_down(true);
        let mut seen = [false; 3];
        for client in random_clients(300, 6) {
            seen[b.pick(client, &backends, &[]).expect("panic mode")] = true;
        }
        assert_eq!(seen, [true; 3], "{kind:?}");
        // One back: only it, panic mode over.
        backends[2].set_check_down(false);
        assert_eq!(b.pick(CLIENT, &backends, &[]), Some(2), "{kind:?}");
        backends[0].set_check_down(false);
        backends[1].report_connect_ok();
    }
}
