//! Balancers: pick a backend for a new connection or flow.
//!
//! A [`Balancer`] is built once per change of a VIP's (or service port's) backend set, never per
//! connection; picking reads only the balancer's own tables and the backends' atomics. A pick
//! allocates nothing, takes no lock and makes no syscall: at most one relaxed `fetch_add` on the
//! balancer's cursor (round robin, weighted round robin, least connections), a thread-local RNG
//! step (power of two choices) or a table lookup (Maglev), plus atomic loads of the backends'
//! health and load.
//!
//! **Candidates.** A backend can be picked when its snapshot weight is > 0 (0 = draining) and it
//! is up ([`BackendState::is_up`]). When no backend with weight > 0 is up, all backends with
//! weight > 0 are candidates regardless of health (panic mode, as Envoy does: better to try an
//! unhealthy backend than to refuse every connection). Indexes in `exclude` (backends already
//! tried for this connection) are never picked; when every healthy backend is excluded the pick
//! is `None` (no fall back to unhealthy ones unless the whole set is down). While in panic mode,
//! a pick first checks health (O(n) atomic loads) instead of running a healthy pass that would
//! fail; the first backend back up ends it.
//!
//! **Algorithms** ([`Balance`]):
//! - `Rr`: round robin over the slots with weight > 0 (a schedule of their indexes and an atomic
//!   cursor).
//! - `Wrr`: weighted round robin; the schedule built in [`Balancer::new`] holds each slot as many
//!   times as its weight, interleaved smoothly (see [`schedule`]), and the cursor walks it.
//!   Weights are reduced by their gcd; schedules longer than [`schedule::MAX_SCHEDULE`] are
//!   scaled down (approximate shares, each slot at least once).
//! - `Wlc`: weighted least connections as IPVS `wlc` (Minuteman's default): the candidate with
//!   the smallest `active / weight` (compared as `active_a * weight_b < active_b * weight_a`);
//!   the scan starts at a rotating index so that equal backends share ties evenly. O(n).
//! - `P2c`: power of two random choices: two distinct random candidates, the one with the smaller
//!   `active / weight` wins (the first sampled on a tie).
//! - `Maglev`: consistent hashing of the client address (see [`maglev`]); a client keeps its
//!   backend while the set does not change, and a change remaps few clients.
//!
//! When the chosen entry is unavailable (down, draining, excluded), round robin takes the next
//! turns of the cursor (so a down backend's turns spread over the others), Maglev probes the next
//! table entries (deterministic per client); after a few misses both fall back to a linear scan
//! of the slots, so a pick costs O(n) at worst.
//!
//! **Cost** (`cargo bench --bench balance -- pick`, release, one thread, all backends up, on the
//! 2-core VM at load average 5-7): with 3 / 100 backends, `Rr` 21 / 18 ns, `Wrr` 23 / 15 ns,
//! `Wlc` 24 / 390 ns (it reads every backend's `active`), `P2c` 32 / 37 ns, `Maglev` 15 / 22 ns.

pub mod maglev;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::Balance;
use crate::health::BackendState;
use crate::model::BackendId;

/// App label choosing the balancer of the app's VIPs and service ports (user-space L4 proxy and
/// eBPF fast path alike).
pub const BALANCE_LABEL: &str = "FERRYMAN_L4_BALANCE";

/// What the balancer is built from: one entry per backend, in the pool's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub id: BackendId,
    /// Snapshot weight: 0 = draining (no new connections).
    pub weight: u32,
}

/// Round robin: cursor turns taken when the scheduled backend is unavailable, before the linear
/// scan.
const TURN_TRIES: usize = 8;

/// A built balancer for one backend set.
pub struct Balancer {
    kind: Balance,
    slots: Box<[Slot]>,
    /// Shared turn counter (round robin position; least connections' rotating start).
    cursor: AtomicUsize,
    /// Whether the last pick found every backend down (panic mode). While set, picks check
    /// health first (O(n)) instead of running a healthy pass that would fail, so that the
    /// turns of round robin and least connections are not spent on failing passes.
    panic: AtomicBool,
    table: Table,
}

/// The per-algorithm table built in [`Balancer::new`].
enum Table {
    /// Least connections, power of two choices: nothing beyond the slots.
    None,
    /// Round robin, weighted round robin: slot indexes in turn order.
    Schedule(Box<[u32]>),
    /// Maglev lookup table; `None` when no slot has weight > 0.
    Maglev(Option<maglev::Table>),
}

/// What a pick reads of the backends, by index (in slot order). Implemented for the live
/// [`BackendState`]s; tests implement it to set health directly.
pub(crate) trait View {
    fn count(&self) -> usize;
    fn is_up(&self, i: usize) -> bool;
    fn active(&self, i: usize) -> u32;
}

impl View for [Arc<BackendState>] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn is_up(&self, i: usize) -> bool {
        self[i].is_up()
    }
    #[inline]
    fn active(&self, i: usize) -> u32 {
        self[i].active()
    }
}

// === impl Balancer ===

impl Balancer {
    /// Builds the balancer and its tables for `slots`: the turn schedule for `Rr`/`Wrr`, the
    /// lookup table for `Maglev` (see [`maglev`] for its build time), nothing for the others.
    pub fn new(kind: Balance, slots: &[Slot]) -> Balancer {
        let table = match kind {
            Balance::Rr => {
                let ones: Vec<u32> = slots.iter().map(|s| u32::from(s.weight > 0)).collect();
                Table::Schedule(schedule::build(&ones))
            }
            Balance::Wrr => {
                let weights: Vec<u32> = slots.iter().map(|s| s.weight).collect();
                Table::Schedule(schedule::build(&weights))
            }
            Balance::Wlc | Balance::P2c => Table::None,
            Balance::Maglev => Table::Maglev(maglev::Table::build(slots)),
        };
        Balancer {
            kind,
            slots: slots.into(),
            cursor: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
            table,
        }
    }

    pub fn kind(&self) -> Balance {
        self.kind
    }

    /// The slots this balancer was built from.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Whether some slot has weight > 0 (a pick can succeed when the backends allow it).
    pub fn has_live(&self) -> bool {
        self.slots.iter().any(|s| s.weight > 0)
    }

    /// The index (into `backends`, which is in `slots` order) of the backend for a new connection
    /// from `client`, among backends with weight > 0 that are up; when none is up, among all
    /// with weight > 0 (panic mode: all unhealthy → use all); `None` when there is no backend
    /// (or every one has weight 0). `exclude`: indexes already tried for this connection.
    ///
    /// If `backends` and the slots differ in length, only the common prefix is considered.
    pub fn pick(
        &self,
        client: IpAddr,
        backends: &[Arc<BackendState>],
        exclude: &[usize],
    ) -> Option<usize> {
        self.pick_in(client, backends, exclude)
    }

    /// [`Balancer::pick`] over any [`View`] of the backends.
    pub(crate) fn pick_in<V: View + ?Sized>(
        &self,
        client: IpAddr,
        view: &V,
        exclude: &[usize],
    ) -> Option<usize> {
        let n = self.slots.len().min(view.count());
        if n == 0 {
            return None;
        }
        let mut p = Pass {
            slots: &self.slots[..n],
            view,
            exclude,
            panic: false,
        };
        let was_panic = self.panic.load(Ordering::Relaxed);
        if !was_panic && let Some(i) = self.select(&p, client) {
            return Some(i);
        }
        // No healthy candidate left (or none at the last pick). Panic mode only when nothing with
        // weight > 0 is up at all; if healthy backends exist but were all excluded, the
        // connection has run out of tries.
        if (0..n).any(|i| self.slots[i].weight > 0 && view.is_up(i)) {
            if was_panic {
                self.panic.store(false, Ordering::Relaxed);
                return self.select(&p, client);
            }
            return None;
        }
        if !was_panic {
            self.panic.store(true, Ordering::Relaxed);
        }
        p.panic = true;
        self.select(&p, client)
    }

    fn select<V: View + ?Sized>(&self, p: &Pass<'_, V>, client: IpAddr) -> Option<usize> {
        match &self.table {
            Table::Schedule(s) => self.select_turn(p, s),
            Table::None if self.kind == Balance::P2c => select_p2c(p),
            Table::None => self.select_wlc(p),
            Table::Maglev(Some(t)) => t.select(client, |i| p.ok(i), |i| p.scan_from(i)),
            Table::Maglev(None) => None,
        }
    }

    /// Round robin over `sched`: the cursor's turn; if that backend is unavailable, the next
    /// turns (a few), then a linear scan.
    fn select_turn<V: View + ?Sized>(&self, p: &Pass<'_, V>, sched: &[u32]) -> Option<usize> {
        let len = sched.len();
        let mut last = 0;
        for _ in 0..len.min(TURN_TRIES) {
            let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            last = sched[turn] as usize;
            if p.ok(last) {
                return Some(last);
            }
        }
        if len == 0 {
            return None;
        }
        p.scan_from(last)
    }

    /// Weighted least connections: the smallest `active / weight`, ties to the first from a
    /// rotating start.
    fn select_wlc<V: View + ?Sized>(&self, p: &Pass<'_, V>) -> Option<usize> {
        let n = p.slots.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = wrap(start + k, n);
            let w = u64::from(p.slots[i].weight);
            if w == 0 {
                continue;
            }
            let a = u64::from(p.view.active(i));
            // Health and exclusion only for a backend that would win (fewer loads per pick).
            let better = best.is_none_or(|(_, ba, bw)| a * bw < ba * w);
            if better && p.ok(i) {
                best = Some((i, a, w));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Bytes of the balancer's tables (for metrics and the build-time note).
    pub fn table_bytes(&self) -> usize {
        match &self.table {
            Table::None | Table::Maglev(None) => 0,
            Table::Schedule(s) => s.len() * size_of::<u32>(),
            Table::Maglev(Some(t)) => t.bytes(),
        }
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("kind", &self.kind)
            .field("slots", &self.slots.len())
            .field("table_bytes", &self.table_bytes())
            .finish()
    }
}

/// Power of two choices: two distinct random candidates (each the first candidate at or after a
/// random index), the less loaded (weighted) wins, the first on a tie.
fn select_p2c<V: View + ?Sized>(p: &Pass<'_, V>) -> Option<usize> {
    let n = p.slots.len();
    let r = rand_u64();
    let a = p.scan_from(bounded(r as u32, n))?;
    if n == 1 {
        return Some(a);
    }
    // The second start is another index than `a`, uniformly among the other n - 1.
    let start = wrap(a + 1 + bounded((r >> 32) as u32, n - 1), n);
    let Some(b) = (0..n)
        .map(|k| wrap(start + k, n))
        .find(|&i| i != a && p.ok(i))
    else {
        return Some(a);
    };
    let (la, wa) = (u64::from(p.view.active(a)), u64::from(p.slots[a].weight));
    let (lb, wb) = (u64::from(p.view.active(b)), u64::from(p.slots[b].weight));
    Some(if lb * wa < la * wb { b } else { a })
}

/// One pass of a pick: which indexes are candidates.
struct Pass<'a, V: ?Sized> {
    /// The slots, cut to the backends' length.
    slots: &'a [Slot],
    view: &'a V,
    exclude: &'a [usize],
    /// Panic mode: ignore health.
    panic: bool,
}

impl<V: View + ?Sized> Pass<'_, V> {
    #[inline]
    fn ok(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.weight > 0)
            && !self.exclude.contains(&i)
            && (self.panic || self.view.is_up(i))
    }

    /// The first candidate at or after `start` (wrapping).
    fn scan_from(&self, start: usize) -> Option<usize> {
        let n = self.slots.len();
        let start = start % n.max(1);
        (0..n).map(|k| wrap(start + k, n)).find(|&i| self.ok(i))
    }
}

/// `i mod n` for `i < 2n`.
#[inline]
fn wrap(i: usize, n: usize) -> usize {
    if i >= n { i - n } else { i }
}

/// A uniform index below `n` (`n ≤ 2^32`) from 32 random bits (Lemire's multiply-shift).
#[inline]
fn bounded(r: u32, n: usize) -> usize {
    ((u64::from(r) * n as u64) >> 32) as usize
}

/// The splitmix64 finaliser: a fast, well-mixed 64-bit hash step.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    /// Per-thread splitmix64 state, seeded once per thread from the OS-seeded `rand` generator.
    static RNG: Cell<u64> = Cell::new(rand::random());
}

/// 64 random bits from the thread-local splitmix64 generator (not cryptographic).
#[inline]
fn rand_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        mix64(x)
    })
}
