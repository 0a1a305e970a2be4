//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) on the client address.
//!
//! **Build.** Each slot with weight > 0 gets a permutation of the table positions from two hashes
//! of its [`BackendId`](crate::model::BackendId): `offset = h1 % M`, `skip = h2 % (M - 1) + 1`,
//! position `j` = `(offset + j·skip) % M` (a full cycle since `M` = 65537 is prime). Slots take
//! turns claiming their next preferred position that is still free until the table is full.
//! Weights: a slot of weight `w` takes a turn in an iteration only when
//! `iteration · w ≥ turns_taken · w_max` (Envoy's scheme), so it owns about `w / Σw` of the
//! table; weights are scaled so that `w_max ≤ 1024`. Slots with weight 0 own nothing. The table
//! depends only on the (id, weight) pairs in slot order, so every node with the same backend set
//! builds the same table and sends a client to the same backend.
//!
//! **Build time** (release build, equal weights, 2-core development VM shared with other builds:
//! load average 5-8, so these are upper bounds): criterion means from
//! `cargo bench --bench balance -- maglev_build`, and the fastest of 60 timed builds.
//!
//! | backends | criterion mean | fastest |
//! |---:|---:|---:|
//! | 10 | 1.69 ms | 1.10 ms |
//! | 100 | 1.94 ms | 1.28 ms |
//! | 1000 | 2.14 ms | 1.39 ms |
//!
//! The cost is the fill itself (≈ `M · ln M` probes of a 128 KiB table), nearly independent of
//! the number of backends. It runs only for Maglev balancers and only when the backend set
//! changes. The table takes 128 KiB (`u16` slot indexes; 256 KiB from 65535 backends on).
//!
//! **Lookup.** `hash(client) % M` → slot. When that slot is unavailable (down, draining,
//! excluded) the next [`PROBES`] table entries are tried in order, then the slots linearly from the
//! first entry's slot: deterministic per client, and a down backend's clients spread over the
//! others in proportion to their table share.

use std::net::IpAddr;

use super::{Slot, mix64};

/// Lookup table size `M`: prime, ≫ backends (the paper suggests `M > 100·N` for ≤ 1 % imbalance).
pub const MAGLEV_TABLE_SIZE: usize = 65537;

/// Table entries probed after the client's own entry before the linear fallback.
pub const PROBES: usize = 32;

/// Largest weight after scaling (bounds the fill iterations for skewed weights).
const MAX_WEIGHT: u64 = 1024;

/// Hash seeds for the permutation's offset and skip, and for the client address.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const SEED_CLIENT: u64 = 0x6d61_676c_6576_636c; // "maglevcl"
const SEED_PORT: u64 = 0x6d61_676c_6576_706f; // "maglevpo"

/// A built lookup table: `MAGLEV_TABLE_SIZE` slot indexes.
pub struct Table {
    entries: Entries,
}

enum Entries {
    /// Fewer than 65535 slots (the usual case): half the memory.
    Small(Box<[u16]>),
    Large(Box<[u32]>),
}

impl Table {
    /// Builds the table for `slots`; `None` when no slot has weight > 0.
    pub fn build(slots: &[Slot]) -> Option<Table> {
        const M: u64 = MAGLEV_TABLE_SIZE as u64;
        let max_w = slots.iter().map(|s| u64::from(s.weight)).max().unwrap_or(0);
        if max_w == 0 {
            return None;
        }
        let mut entries: Vec<Entry> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.weight > 0)
            .map(|(i, s)| Entry {
                slot: i as u32,
                next: (mix64(s.id.0 ^ SEED_OFFSET) % M) as usize,
                skip: (mix64(s.id.0 ^ SEED_SKIP) % (M - 1) + 1) as usize,
                // Scaled to 1..=MAX_WEIGHT.
                weight: if max_w <= MAX_WEIGHT {
                    u64::from(s.weight)
                } else {
                    (u64::from(s.weight) * MAX_WEIGHT / max_w).max(1)
                },
                target: 0,
            })
            .collect();
        let max_w = max_w.min(MAX_WEIGHT);
        // Slot indexes fit in u16 (u16::MAX marks a free position) for fewer than 65535 slots.
        let entries = if slots.len() < usize::from(u16::MAX) {
            Entries::Small(fill(
                &mut entries,
                MAGLEV_TABLE_SIZE,
                max_w,
                u16::MAX,
                |i| i as u16,
            ))
        } else {
            Entries::Large(fill(
                &mut entries,
                MAGLEV_TABLE_SIZE,
                max_w,
                u32::MAX,
                |i| i,
            ))
        };
        Some(Table { entries })
    }

    /// The slot at table position `pos` (< `MAGLEV_TABLE_SIZE`).
    #[inline]
    pub fn get(&self, pos: usize) -> usize {
        match &self.entries {
            Entries::Small(t) => usize::from(t[pos]),
            Entries::Large(t) => t[pos] as usize,
        }
    }

    /// The table position of `client`.
    #[inline]
    pub fn position(client: IpAddr) -> usize {
        (hash_ip(client) % MAGLEV_TABLE_SIZE as u64) as usize
    }

    /// The slot for `client`: its entry if `ok`, else the next entries, else `scan_from` its
    /// entry's slot.
    #[inline]
    pub(super) fn select(
        &self,
        client: IpAddr,
        ok: impl Fn(usize) -> bool,
        scan_from: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        let mut pos = Table::position(client);
        let first = self.get(pos);
        for _ in 0..PROBES {
            let i = self.get(pos);
            if ok(i) {
                return Some(i);
            }
            pos += 1;
            if pos == MAGLEV_TABLE_SIZE {
                pos = 0;
            }
        }
        scan_from(first)
    }

    pub fn bytes(&self) -> usize {
        match &self.entries {
            Entries::Small(t) => t.len() * 2,
            Entries::Large(t) => t.len() * 4,
        }
    }
}

/// Builds an equal-weight table of `size` entries (a prime) for the backends whose stable
/// identities are `keys`: entry `p` is the index into `keys` of the backend owning position `p`.
/// This is the table of the eBPF fast path (`size` = `fastpath::layout::MAGLEV_M`, 4099, small
/// enough to write per service into a BPF array), built by the same turns as [`Table::build`].
///
/// The permutation of each backend comes from its key alone, never from its index, so a backend
/// keeps its positions when others come and go; callers pass a stable hash such as
/// [`hash_endpoint`] of its address. Removing one of N backends moves about 1/N of the
/// positions while `size` is well above 100·N (with 4099: 1.0-1.35 × size/N for N ≤ 20), and a
/// few percent of them beyond (see the test). `None` when `keys` is empty or `size` is not a
/// prime (a non-prime size would let a permutation miss free positions).
///
/// Cost: about `size · ln size` probes, ~45 µs for 4099 entries (release build).
pub fn build_sized(keys: &[u64], size: usize) -> Option<Vec<u32>> {
    if keys.is_empty() || !is_prime(size) || keys.len() > u32::MAX as usize {
        return None;
    }
    let m = size as u64;
    let mut entries: Vec<Entry> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| Entry {
            slot: i as u32,
            next: (mix64(k ^ SEED_OFFSET) % m) as usize,
            skip: (mix64(k ^ SEED_SKIP) % (m - 1) + 1) as usize,
            weight: 1,
            target: 0,
        })
        .collect();
    Some(fill(&mut entries, size, 1, u32::MAX, |i| i).into_vec())
}

/// A stable identity for a backend endpoint, for [`build_sized`]: the same on every node and
/// across restarts (IPv4-mapped IPv6 hashes as the IPv4 address).
#[inline]
pub fn hash_endpoint(ip: IpAddr, port: u16) -> u64 {
    mix64(hash_ip(ip) ^ mix64(u64::from(port) ^ SEED_PORT))
}

/// Trial division (the sizes here are a few thousand).
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend's state while the table fills.
struct Entry {
    slot: u32,
    /// Next preferred position (< M).
    next: usize,
    /// Permutation step, 1..M.
    skip: usize,
    weight: u64,
    /// Turns taken × `max_w`.
    target: u64,
}

/// Fills a table of `m` (prime) entries of `T` (with `free` marking an empty position) by the
/// weighted Maglev turns. `entries` must not be empty and their `next`/`skip` must be below `m`.
fn fill<T: Copy + Eq>(
    entries: &mut [Entry],
    m: usize,
    max_w: u64,
    free: T,
    conv: impl Fn(u32) -> T,
) -> Box<[T]> {
    let mut table = vec![free; m].into_boxed_slice();
    let mut filled = 0usize;
    let mut iteration: u64 = 1;
    loop {
        for e in entries.iter_mut() {
            if iteration * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            // Terminates: `skip` is coprime with M (prime), so the walk reaches every position,
            // and at least one is free.
            while table[e.next] != free {
                e.next = step(e.next, e.skip, m);
            }
            table[e.next] = conv(e.slot);
            e.next = step(e.next, e.skip, m);
            filled += 1;
            if filled == m {
                return table;
            }
        }
        iteration += 1;
    }
}

/// `(pos + skip) % m` for `pos, skip < m`.
#[inline]
fn step(pos: usize, skip: usize, m: usize) -> usize {
    let n = pos + skip;
    if n >= m { n - m } else { n }
}

/// A stable hash of the client address (IPv4-mapped IPv6 hashes as the IPv4 address), the same
/// on every node and across restarts.
#[inline]
pub fn hash_ip(client: IpAddr) -> u64 {
    match client.to_canonical() {
        IpAddr::V4(a) => mix64(u64::from(a.to_bits()) ^ SEED_CLIENT),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            mix64((b >> 64) as u64 ^ mix64(b as u64 ^ SEED_CLIENT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                hash_endpoint(
                    IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]),
                    8080,
                )
            })
            .collect()
    }

    #[test]
    fn sized_table_is_full_and_even() {
        let n = 10;
        let t = build_sized(&keys(n), 4099).expect("table");
        assert_eq!(t.len(), 4099);
        let mut owned = vec![0usize; n];
        for &v in &t {
            owned[v as usize] += 1;
        }
        // Equal weights: every backend owns about M / N = 410 positions.
        for (i, &o) in owned.iter().enumerate() {
            assert!((369..=451).contains(&o), "backend {i} owns {o}");
        }
    }

    #[test]
    fn sized_table_rejects_empty_and_non_prime() {
        assert!(build_sized(&[], 4099).is_none());
        assert!(build_sized(&keys(3), 4100).is_none());
        assert!(build_sized(&keys(3), 1).is_none());
        assert!(build_sized(&keys(3), 7).is_some());
    }

    #[test]
    fn sized_table_removing_one_of_n_moves_about_one_nth() {
        // Measured (M = 4099): N = 3, 5, 10, 20 move 1.00, 1.03, 1.18, 1.35 x M/N positions;
        // N = 40, 100, 300 move 188, 166, 72 (the paper's M >= 100 N rule: with fewer
        // positions per backend, Maglev's extra churn grows relative to 1/N, but stays a few %).
        for n in [3usize, 5, 10, 20, 40, 100, 300] {
            let all = keys(n);
            let before = build_sized(&all, 4099).expect("table");
            let removed = n / 2;
            let rest: Vec<u64> = all
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != removed)
                .map(|(_, &k)| k)
                .collect();
            let after = build_sized(&rest, 4099).expect("table");
            // Compare by backend identity: indexes shift when the list shrinks.
            let changed = before
                .iter()
                .zip(&after)
                .filter(|&(&b, &a)| all[b as usize] != rest[a as usize])
                .count();
            let owned = before.iter().filter(|&&b| b as usize == removed).count();
            // Every position of the removed backend moves, and those of the others stay put
            // unless the removed one's turns displaced them.
            assert!(changed >= owned, "n={n}: {changed} changed, {owned} owned");
            let share = 4099.0 / n as f64;
            if n <= 20 {
                assert!(
                    changed as f64 <= share * 1.5,
                    "n={n}: {changed} changed, 1/N = {share:.0}"
                );
            } else {
                assert!(changed * 20 <= 4099, "n={n}: {changed} changed (> 5 %)");
            }
        }
    }

    #[test]
    fn sized_table_depends_on_keys_not_positions() {
        let all = keys(6);
        let t = build_sized(&all, 4099).expect("table");
        let mut rev = all.clone();
        rev.reverse();
        let r = build_sized(&rev, 4099).expect("table");
        // The same backends in another order own nearly the same positions (the turn order only
        // settles contested positions).
        let same = t
            .iter()
            .zip(&r)
            .filter(|&(&a, &b)| all[a as usize] == rev[b as usize])
            .count();
        assert!(same * 10 >= 4099 * 8, "{same} of 4099 kept");
    }
}
