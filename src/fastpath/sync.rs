//! The diff sync of the fast-path maps: what the maps should hold for a snapshot and the health
//! overlay ([`Desired`]), and the [`Syncer`] that writes only the difference to what it applied
//! before, in an order where a concurrent BPF lookup never sees a zero count it should not, a
//! slot below `count` that is missing, or a Maglev ring that is half written or points past
//! `count`.
//!
//! **Plain services** (any balancer but Maglev, and Maglev services without a ring): slots
//! `0..count` of the service's bank (0 when created), `ring = NO_RING`; the program picks a slot
//! at random (by socket cookie for unconnected UDP). A change of the backend set is applied in
//! place, each step one map write:
//! 1. a slot whose backend left is overwritten with an added backend (count unchanged);
//! 2. the remaining additions are written at `count..count + k`, then ONE `set_service` raises
//!    the count;
//! 3. each remaining removal copies the last slot into the hole, lowers the count by one, then
//!    deletes the old last slot.
//!
//! **Maglev services** own two rings of `fm_maglev` (current + spare) and use two banks of slots
//! (0 and [`BANK_B`]). A change writes the complete new list into the other bank, the new table
//! into the spare ring, then ONE `set_service` switches count, ring and bank together; the old
//! bank's slots are deleted last. The table comes from [`maglev::build_sized`] over a stable hash
//! of each backend's address and port, so positions stay put when other backends come and go.
//! When no pair of rings is free (`l4` ring pool), or the two banks would not fit in
//! `l4.max_backends`, the service is served without a ring (in place, as a plain service) and
//! counted in [`SyncReport::ringless`]; it gets a ring once room appears.
//!
//! **Limits.** A new service beyond `l4.max_services`, or whose slots would not fit in
//! `l4.max_backends` (both banks counted during a Maglev switch), is refused: not written,
//! listed in [`Syncer::refused`] (the user-space proxy serves it), logged once. Services already
//! applied keep their place; new ones are taken in key order, so the outcome is deterministic.
//!
//! **Failures.** The syncer records every write as it succeeds, so after an error it knows what
//! the maps hold (slots written for a count not yet raised are "stray": present, referenced by
//! nobody) and the next [`Syncer::apply`] converges from there. A failed map update is assumed
//! to have changed nothing (the kernel's update and delete are atomic).
//!
//! **Cost** (`cargo bench --bench fastpath_sync`, release, counting no-op `MapOps`, 2-core VM
//! shared with other builds, load 3-5; criterion medians of two runs): `Desired::from_snapshot`
//! of 10 000 VIPs 1.9-2.8 ms; apply of 10 000 new plain services (3 backends, 38 571 writes)
//! 1.0-1.6 ms; one changed service among 10 000 (2 writes) 0.5-0.9 ms, nothing changed
//! 0.43-0.7 ms (one merge walk over both sorted maps, no per-service lookup or allocation). A
//! Maglev ring costs ~45 µs to build (200 new Maglev services: 9 ms), so 1 000 new Maglev
//! services among 10 000 take ~40 ms; rings are built only when a Maglev service's backend set
//! changes.
//!
//! Imports `model`, `config`, `balance` (never another data path).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::MapOps;
use super::layout::{
    self, BANK_B, Backend, BackendKey, IPPROTO_TCP, IPPROTO_UDP, MAGLEV_M, NO_RING, Service,
    ServiceKey,
};
use crate::balance::{BALANCE_LABEL, maglev};
use crate::config::Balance;
use crate::model::{BackendId, Protocol, Snapshot};

/// Map capacities (from `l4.max_services`, `l4.max_backends` and the size of `fm_maglev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Service ids are `0..max_services` (they index `fm_stats`); id `max_services` is the
    /// loader's self-test.
    pub max_services: usize,
    /// Entries of `fm_backends` (slots of all services, both banks).
    pub max_backends: usize,
    /// Maglev rings in fm_maglev (each MAGLEV_M entries); a Maglev service uses two (current + spare).
    pub rings: u32,
}

/// What one VIP should look like in the maps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredService {
    /// Sorted, unique: the backends that take new connections (healthy, not draining).
    pub backends: Vec<layout::Backend>,
    /// Whether the VIP's balancer is Maglev (a consistent-hash ring in `fm_maglev`).
    pub maglev: bool,
}

/// What the maps should hold: one entry per VIP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub services: BTreeMap<layout::ServiceKey, DesiredService>,
}

impl Desired {
    /// One service per snapshot VIP (protocol tcp→IPPROTO_TCP, udp→IPPROTO_UDP). Backends: those with weight > 0,
    /// `is_up(id)` true, and of the VIP's address family; balancer from the app label FERRYMAN_L4_BALANCE else `default`;
    /// maglev = balancer is Maglev.
    ///
    /// The VIP's app is that of its first backend with an app id, as for the user-space
    /// listeners (`l4::listeners::targets`), so both paths pick the same balancer. Unlike the
    /// user-space balancers there is no panic mode: with every backend down the count is 0 and
    /// the program refuses connections (ECONNREFUSED), as a VIP without backends is refused.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        is_up: impl Fn(BackendId) -> bool,
        default: Balance,
    ) -> Desired {
        let apps = &snapshot.state.apps;
        let mut services: Vec<(ServiceKey, DesiredService)> =
            Vec::with_capacity(snapshot.vips.len());
        for vip in &snapshot.vips {
            let proto = match vip.key.protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
            };
            let balance = vip
                .backends
                .iter()
                .find_map(|b| b.app_id.as_ref())
                .and_then(|id| apps.get(id.as_str()))
                .and_then(|app| app.labels.get(BALANCE_LABEL))
                .and_then(|v| Balance::parse(v))
                .unwrap_or(default);
            let v4 = vip.key.ip.is_ipv4();
            let mut backends: Vec<Backend> = vip
                .backends
                .iter()
                .filter(|b| b.weight > 0 && b.ip.is_ipv4() == v4 && is_up(b.id))
                .map(|b| Backend::new(b.ip, b.port))
                .collect();
            // The snapshot sorts by (ip, port); the map layout orders by network-order words.
            backends.sort_unstable();
            backends.dedup();
            services.push((
                ServiceKey::new(vip.key.ip, vip.key.port, proto),
                DesiredService {
                    backends,
                    maglev: balance == Balance::Maglev,
                },
            ));
        }
        Desired {
            services: services.into_iter().collect(),
        }
    }
}

/// What one [`Syncer::apply`] did. `refused` and `ringless` are totals after the apply; the
/// others count this apply's work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Services written for the first time (or again after a refusal).
    pub added: usize,
    /// Services deleted (gone from the snapshot, or dropped for the limits).
    pub removed: usize,
    /// Services with at least one write.
    pub changed: usize,
    /// Services left as they were (no write).
    pub unchanged: usize,
    /// Successful map writes (updates, deletes, rings, stats resets).
    pub writes: usize,
    /// VIPs refused for the limits (served by the user-space proxy).
    pub refused: usize,
    /// Maglev services served without a ring (ring pool or `max_backends` exhausted).
    pub ringless: usize,
}

/// One service as the maps hold it.
#[derive(Debug, Clone)]
struct Applied {
    /// The `fm_services` value.
    svc: Service,
    /// The backends at slots `0..svc.count` of bank `svc.bank`, exactly as the map holds them
    /// (may hold duplicates after a failed apply). Empty while `broken`.
    live: Vec<Backend>,
    /// Other slots (bank bit included) of `svc.id` present in `fm_backends`: referenced by no
    /// lookup, except while `broken` (then every known slot of the id is here).
    stray: Vec<u32>,
    /// The two rings this service owns (current + spare; `svc.ring` is one of them or
    /// `NO_RING`). Equal entries: only the current ring is owned (adopted with no ring free).
    pair: Option<[u32; 2]>,
    /// Adopted in a state a lookup may trip on: rewritten whole before anything else changes.
    broken: Option<Repair>,
}

/// How an adopted, inconsistent service is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// Its id is its own: write the other bank and switch to it.
    OtherBank,
    /// Its id is out of range or shared, or its bank invalid: write under a fresh id and switch.
    FreshId,
}

impl Applied {
    /// The ring a Maglev switch writes into: the owned ring that is not current.
    fn spare(&self) -> Option<u32> {
        let [a, b] = self.pair?;
        if a != self.svc.ring {
            Some(a)
        } else if b != self.svc.ring {
            Some(b)
        } else {
            None
        }
    }

    fn held(&self) -> usize {
        self.live.len() + self.stray.len()
    }
}

/// Ids, rings and unreferenced keys.
#[derive(Debug, Clone)]
struct Pool {
    limits: Limits,
    /// Ids `next_fresh..max_services` were never used since the maps were created.
    next_fresh: u32,
    /// Ids used before and free again: their counters are reset before reuse.
    reused: BTreeSet<u32>,
    free_rings: BTreeSet<u32>,
    /// `fm_backends` slots that no service references, by id. The id returns to the pool once
    /// they are deleted (ids out of range never do).
    orphans: BTreeMap<u32, Vec<u32>>,
    /// Keys in `fm_backends` as far as this syncer knows (live + stray + orphans); recounted at
    /// the start of each apply, so a conservative count after an error does no lasting harm.
    used: usize,
    /// Reused buffers of the in-place diff.
    holes: Vec<u32>,
    adds: Vec<u32>,
    seen: Vec<bool>,
}

impl Pool {
    fn new(limits: Limits) -> Pool {
        Pool {
            limits,
            next_fresh: 0,
            reused: BTreeSet::new(),
            free_rings: (0..limits.rings).collect(),
            orphans: BTreeMap::new(),
            used: 0,
            holes: Vec::new(),
            adds: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// A free id and whether it needs its counters reset (it served another service before).
    fn alloc_id(&mut self) -> Option<(u32, bool)> {
        if let Some(id) = self.reused.pop_first() {
            return Some((id, true));
        }
        if (self.next_fresh as usize) < self.limits.max_services {
            let id = self.next_fresh;
            self.next_fresh += 1;
            return Some((id, false));
        }
        None
    }

    fn free_id(&mut self, id: u32) {
        if (id as usize) < self.limits.max_services && id < self.next_fresh {
            self.reused.insert(id);
        }
    }

    /// A spare ring for `a` (a pair when it has none): `false` when the pool has too few.
    fn ensure_spare(&mut self, a: &mut Applied) -> bool {
        if a.spare().is_some() {
            return true;
        }
        match a.pair {
            // Owns only its current ring (adopted when none was free): one more makes the pair.
            Some([cur, _]) => match self.free_rings.pop_first() {
                Some(r) => a.pair = Some([cur, r]),
                None => return false,
            },
            None => match self.alloc_pair() {
                Some(p) => a.pair = Some(p),
                None => return false,
            },
        }
        true
    }

    fn alloc_pair(&mut self) -> Option<[u32; 2]> {
        if self.free_rings.len() < 2 {
            return None;
        }
        let a = self.free_rings.pop_first()?;
        let b = self.free_rings.pop_first()?;
        Some([a, b])
    }

    fn free_pair(&mut self, pair: Option<[u32; 2]>) {
        if let Some([a, b]) = pair {
            self.free_rings.insert(a);
            self.free_rings.insert(b);
        }
    }

    /// Hands slots of `id` (possibly none) to the orphans: the id is freed once they are deleted.
    fn orphan(&mut self, id: u32, slots: impl IntoIterator<Item = u32>) {
        self.orphans.entry(id).or_default().extend(slots);
    }

    /// Deletes the orphaned slots of ids no service references (`referenced`: ids of broken
    /// services, which may still point at them), and frees those ids.
    fn clean_orphans<M: MapOps>(
        &mut self,
        w: &mut Writer<'_, M>,
        referenced: &BTreeSet<u32>,
    ) -> Result<(), M::Error> {
        let ids: Vec<u32> = self
            .orphans
            .keys()
            .copied()
            .filter(|id| !referenced.contains(id))
            .collect();
        for id in ids {
            if let Some(slots) = self.orphans.get_mut(&id) {
                slots.sort_unstable();
                slots.dedup();
                while let Some(&slot) = slots.last() {
                    w.delete_backend(id, slot)?;
                    slots.pop();
                    self.used = self.used.saturating_sub(1);
                }
            }
            self.orphans.remove(&id);
            self.free_id(id);
        }
        Ok(())
    }
}

/// Counts the writes that succeeded.
struct Writer<'a, M> {
    ops: &'a mut M,
    writes: usize,
}

impl<M: MapOps> Writer<'_, M> {
    fn set_backend(&mut self, id: u32, slot: u32, b: Backend) -> Result<(), M::Error> {
        self.ops.set_backend(BackendKey { id, slot }, b)?;
        self.writes += 1;
        Ok(())
    }
    fn delete_backend(&mut self, id: u32, slot: u32) -> Result<(), M::Error> {
        self.ops.delete_backend(BackendKey { id, slot })?;
        self.writes += 1;
        Ok(())
    }
    fn set_service(&mut self, key: ServiceKey, svc: Service) -> Result<(), M::Error> {
        self.ops.set_service(key, svc)?;
        self.writes += 1;
        Ok(())
    }
    fn delete_service(&mut self, key: ServiceKey) -> Result<(), M::Error> {
        self.ops.delete_service(key)?;
        self.writes += 1;
        Ok(())
    }
    fn set_ring(&mut self, ring: u32, slots: &[u32]) -> Result<(), M::Error> {
        self.ops.set_ring(ring, slots)?;
        self.writes += 1;
        Ok(())
    }
    fn reset_stats(&mut self, id: u32) -> Result<(), M::Error> {
        self.ops.reset_stats(id)?;
        self.writes += 1;
        Ok(())
    }
}

/// The outcome for one service in one apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Changed,
    /// Deleted from the maps for the limits (it may be added again as new in the same apply).
    Dropped,
}

/// Keeps the fast-path maps in step with [`Desired`] by diff. See the module docs for the write
/// order and the limits.
#[derive(Debug, Clone)]
pub struct Syncer {
    limits: Limits,
    applied: BTreeMap<ServiceKey, Applied>,
    refused: BTreeSet<ServiceKey>,
    pool: Pool,
}

// === impl Syncer ===

impl Syncer {
    /// A syncer for maps created empty by this process: no service, every `fm_stats` counter
    /// zero (ids are used without a reset until they are reused).
    pub fn new(limits: Limits) -> Syncer {
        Syncer {
            limits,
            applied: BTreeMap::new(),
            refused: BTreeSet::new(),
            pool: Pool::new(limits),
        }
    }

    /// State read back from pinned maps after a restart (services map entries and backends map entries). Anything
    /// inconsistent (a slot below count missing, id out of range, duplicate id, ring out of range) must be repaired by the next apply
    /// without a lookup ever seeing an empty slot (e.g. treat that service as needing a full rewrite in the other bank / fresh id).
    ///
    /// A consistent service is kept as it is (an unchanged VIP costs no write). An inconsistent
    /// one is rewritten whole by the next apply before anything else: into its other bank when
    /// its id is its own, else under a fresh id, switched in one `set_service`; the keys it
    /// pointed at are deleted only afterwards. Backend keys of no service are deleted by the next
    /// apply. The counters of every id not in use are reset before the id is used (they may hold
    /// a previous run's counts). Ring contents cannot be read back: a ring a service points at is
    /// trusted to have been written whole before (this module never points at anything else).
    pub fn adopt(
        limits: Limits,
        mut services: Vec<(layout::ServiceKey, layout::Service)>,
        backends: Vec<(layout::BackendKey, layout::Backend)>,
    ) -> Syncer {
        let mut by_id: BTreeMap<u32, BTreeMap<u32, Backend>> = BTreeMap::new();
        for (k, b) in backends {
            by_id.entry(k.id).or_default().insert(k.slot, b);
        }
        services.sort_by_key(|s| s.0);
        services.dedup_by(|a, b| a.0 == b.0);
        let mut holders: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, s) in &services {
            *holders.entry(s.id).or_default() += 1;
        }
        let mut pool = Pool::new(limits);
        // Every id may have served a previous run: reset before any use.
        pool.next_fresh = u32::try_from(limits.max_services).unwrap_or(u32::MAX);
        let mut applied = BTreeMap::new();
        let mut owned_ids = BTreeSet::new();
        let mut claimed_rings = BTreeSet::new();
        for (key, svc) in services {
            let own_id =
                (svc.id as usize) < limits.max_services && holders.get(&svc.id) == Some(&1);
            let bank_ok = svc.bank == 0 || svc.bank == BANK_B;
            let mut a = Applied {
                svc,
                live: Vec::new(),
                stray: Vec::new(),
                pair: None,
                broken: None,
            };
            let mut ring_owned = false;
            if svc.ring != NO_RING && svc.ring < limits.rings {
                // Claimed even for a broken service: nobody may rewrite a ring it reads.
                ring_owned = claimed_rings.insert(svc.ring);
            }
            if ring_owned {
                a.pair = Some([svc.ring, svc.ring]);
            }
            if !own_id || !bank_ok {
                // Its id's keys become orphans (below), deleted once no service points at them;
                // the id is not handed out before.
                a.broken = Some(Repair::FreshId);
                pool.orphan(svc.id, []);
                applied.insert(key, a);
                continue;
            }
            owned_ids.insert(svc.id);
            let empty = BTreeMap::new();
            let slots = by_id.get(&svc.id).unwrap_or(&empty);
            let mut ok = (svc.count as usize) <= slots.len();
            if ok {
                for i in 0..svc.count {
                    match slots.get(&(i | svc.bank)) {
                        Some(b) => a.live.push(*b),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
            if ok && svc.ring != NO_RING {
                ok = ring_owned && svc.count > 0;
            }
            if ok {
                let count = svc.count;
                let bank = svc.bank;
                a.stray = slots
                    .keys()
                    .copied()
                    .filter(|&s| s & BANK_B != bank || s & !BANK_B >= count)
                    .collect();
            } else {
                a.live.clear();
                a.stray = slots.keys().copied().collect();
                a.broken = Some(Repair::OtherBank);
            }
            applied.insert(key, a);
        }
        pool.free_rings.retain(|r| !claimed_rings.contains(r));
        // Spares for the rings in use, in key order; with none left a service keeps only its
        // current ring (and goes without a ring at its next change if none frees up).
        for a in applied.values_mut() {
            if let (None, Some([cur, _])) = (a.broken, a.pair) {
                let spare = pool.free_rings.pop_first().unwrap_or(cur);
                a.pair = Some([cur, spare]);
            }
        }
        for (id, slots) in by_id {
            if !owned_ids.contains(&id) {
                pool.orphan(id, slots.into_keys());
            }
        }
        pool.reused = (0..pool.next_fresh)
            .filter(|id| !owned_ids.contains(id) && !pool.orphans.contains_key(id))
            .collect();
        Syncer {
            limits,
            applied,
            refused: BTreeSet::new(),
            pool,
        }
    }

    /// VIPs refused for the limits (their clients stay on the user-space path).
    pub fn refused(&self) -> &BTreeSet<layout::ServiceKey> {
        &self.refused
    }

    /// (VIP, service id) of every applied service, for per-service counters.
    pub fn ids(&self) -> impl Iterator<Item = (layout::ServiceKey, u32)> + '_ {
        self.applied.iter().map(|(k, a)| (*k, a.svc.id))
    }

    /// (services, backend slots, rings) in use.
    pub fn occupancy(&self) -> (usize, usize, u32) {
        let slots = self.applied.values().map(Applied::held).sum::<usize>()
            + self.pool.orphans.values().map(Vec::len).sum::<usize>();
        let rings = self.limits.rings - self.pool.free_rings.len() as u32;
        (self.applied.len(), slots, rings)
    }

    /// Writes the difference between what is applied and `desired` through `ops`. Errors: stop and return the error; the
    /// Syncer must stay in step with what was actually written, so a later apply converges.
    ///
    /// Order: orphaned keys; services gone from `desired`; adopted services needing repair;
    /// services that stop using a ring (their rings free up); the other kept services; new
    /// services in key order (refused when over the limits).
    pub fn apply<M: MapOps>(
        &mut self,
        desired: &Desired,
        ops: &mut M,
    ) -> Result<SyncReport, M::Error> {
        let mut w = Writer { ops, writes: 0 };
        let mut report = SyncReport::default();
        let mut refused = BTreeSet::new();
        let result = self
            .apply_steps(desired, &mut w, &mut report, &mut refused)
            .and_then(|()| w.ops.flush());
        report.writes = w.writes;
        if result.is_ok() {
            // Per VIP at most the first few at `warn` (a full map can refuse thousands at once),
            // the rest at `debug`; the total is in the report (and the loader's metric).
            const LOGGED: usize = 8;
            let newly: Vec<&ServiceKey> = refused.difference(&self.refused).collect();
            for (i, key) in newly.iter().enumerate() {
                let vip = SocketAddr::new(key.ip(), key.port());
                if i < LOGGED {
                    tracing::warn!(
                        %vip,
                        proto = key.proto,
                        max_services = self.limits.max_services,
                        max_backends = self.limits.max_backends,
                        "fast path full: VIP left to the user-space proxy"
                    );
                } else {
                    tracing::debug!(%vip, proto = key.proto, "fast path full: VIP left to the user-space proxy");
                }
            }
            if newly.len() > LOGGED {
                tracing::warn!(
                    refused = newly.len(),
                    "fast path full: more VIPs left to the user-space proxy (listed at debug)"
                );
            }
            for key in self.refused.difference(&refused) {
                if self.applied.contains_key(key) {
                    tracing::info!(
                        vip = %SocketAddr::new(key.ip(), key.port()),
                        proto = key.proto,
                        "fast path has room again: VIP served in the kernel"
                    );
                }
            }
            self.refused = refused;
        } else {
            let applied = &self.applied;
            self.refused.retain(|k| !applied.contains_key(k));
        }
        report.refused = self.refused.len();
        result.map(|()| report)
    }

    fn apply_steps<M: MapOps>(
        &mut self,
        desired: &Desired,
        w: &mut Writer<'_, M>,
        report: &mut SyncReport,
        refused: &mut BTreeSet<ServiceKey>,
    ) -> Result<(), M::Error> {
        let pool = &mut self.pool;
        pool.used = self.applied.values().map(Applied::held).sum::<usize>()
            + pool.orphans.values().map(Vec::len).sum::<usize>();
        if !pool.orphans.is_empty() {
            pool.clean_orphans(w, &broken_ids(self.applied.values()))?;
        }

        // Services gone from the snapshot. Both maps are sorted by key: one merge walk, no
        // lookups (they would dominate an apply of 10 000 unchanged services).
        let mut gone = Vec::new();
        let mut dit = desired.services.keys().peekable();
        for k in self.applied.keys() {
            while dit.next_if(|dk| *dk < k).is_some() {}
            if dit.peek() != Some(&k) {
                gone.push(*k);
            }
        }
        for key in gone {
            let Some(a) = self.applied.get_mut(&key) else {
                continue;
            };
            unlink(pool, w, key, a)?;
            self.applied.remove(&key);
            report.removed += 1;
        }
        if !pool.orphans.is_empty() {
            pool.clean_orphans(w, &broken_ids(self.applied.values()))?;
        }

        // Kept services (all of `applied` now), paired with their desired state.
        let mut kept: Vec<Kept<'_>> = Vec::with_capacity(self.applied.len());
        let mut dit = desired.services.iter().peekable();
        for (key, a) in self.applied.iter_mut() {
            while dit.next_if(|(dk, _)| *dk < key).is_some() {}
            if let Some((_, d)) = dit.next_if(|(dk, _)| *dk == key) {
                kept.push(Kept {
                    key: *key,
                    a,
                    d,
                    outcome: None,
                });
            }
        }
        let result = change_kept(pool, w, &mut kept);
        let mut dropped = Vec::new();
        for k in &kept {
            match k.outcome {
                Some(Outcome::Unchanged) => report.unchanged += 1,
                Some(Outcome::Changed) => report.changed += 1,
                Some(Outcome::Dropped) => {
                    report.removed += 1;
                    dropped.push(k.key);
                }
                None => {}
            }
            if k.outcome != Some(Outcome::Dropped)
                && k.a.svc.ring == NO_RING
                && k.d.maglev
                && !k.d.backends.is_empty()
            {
                report.ringless += 1;
            }
        }
        drop(kept);
        for key in &dropped {
            self.applied.remove(key);
        }
        result?;
        if !pool.orphans.is_empty() {
            // Slots and ids of services dropped for the limits, before new ones need them.
            pool.clean_orphans(w, &broken_ids(self.applied.values()))?;
        }

        // New services (and refused ones that may fit now), in key order.
        let mut new = Vec::new();
        let mut ait = self.applied.keys().peekable();
        for (k, d) in &desired.services {
            while ait.next_if(|ak| *ak < k).is_some() {}
            if ait.peek() != Some(&k) {
                new.push((*k, d));
            }
        }
        for (key, d) in new {
            let n = d.backends.len();
            if self.applied.len() >= self.limits.max_services
                || pool.used + n > self.limits.max_backends
            {
                refused.insert(key);
                continue;
            }
            let Some(id) = pool.alloc_id() else {
                // Every id in use, or waiting for its orphaned slots to be deleted.
                refused.insert(key);
                continue;
            };
            let a = add(pool, w, key, d, id)?;
            if a.svc.ring == NO_RING && d.maglev && n > 0 {
                report.ringless += 1;
            }
            self.applied.insert(key, a);
            report.added += 1;
        }
        if !pool.orphans.is_empty() {
            pool.clean_orphans(w, &broken_ids(self.applied.values()))?;
        }
        Ok(())
    }
}

/// Ids of the adopted services not repaired yet (they may still read orphaned keys).
fn broken_ids<'a>(applied: impl Iterator<Item = &'a Applied>) -> BTreeSet<u32> {
    applied
        .filter(|a| a.broken.is_some())
        .map(|a| a.svc.id)
        .collect()
}

/// A kept service during an apply.
struct Kept<'a> {
    key: ServiceKey,
    a: &'a mut Applied,
    d: &'a DesiredService,
    /// `None` until its pass ran (or when an error stopped the apply before).
    outcome: Option<Outcome>,
}

/// Brings the kept services to their desired state, in passes: repairs first (they may share
/// keys and rings with others), then those that give rings back, then the other Maglev
/// services, then another turn for Maglev services left without a ring because rings or room
/// were taken when their turn came while later ones gave some back (so the outcome does not
/// depend on the order of the passes, and an unchanged desired state writes nothing).
fn change_kept<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    kept: &mut [Kept<'_>],
) -> Result<(), M::Error> {
    for pass in 0..3 {
        for k in kept.iter_mut() {
            let ringed = k.d.maglev && !k.d.backends.is_empty();
            let this_pass = match (k.a.broken.is_some(), ringed) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => 2,
            };
            if this_pass == pass {
                k.outcome = Some(change(pool, w, k.key, k.a, k.d)?);
            }
        }
        if pass == 0 && !pool.orphans.is_empty() {
            // Keys of shared or out-of-range ids are unreferenced once repairs are done.
            let referenced = broken_ids(
                kept.iter()
                    .filter(|k| k.outcome != Some(Outcome::Dropped))
                    .map(|k| &*k.a),
            );
            pool.clean_orphans(w, &referenced)?;
        }
    }
    for k in kept.iter_mut() {
        let ringed = k.d.maglev && !k.d.backends.is_empty();
        if !ringed
            || k.a.svc.ring != NO_RING
            || k.a.broken.is_some()
            || k.outcome == Some(Outcome::Dropped)
        {
            continue;
        }
        if try_maglev_switch(pool, w, k.key, k.a, k.d)? {
            k.outcome = Some(Outcome::Changed);
        }
    }
    Ok(())
}

// === the steps of one service ===

/// Deletes a service's entry (lookups stop), hands its slots to the orphans (deleted by the
/// caller's next [`Pool::clean_orphans`], which frees the id) and frees its rings. Once this
/// returns `Ok`, the service is gone from the maps.
fn unlink<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    a: &mut Applied,
) -> Result<(), M::Error> {
    w.delete_service(key)?;
    let bank = a.svc.bank;
    let count = a.live.len() as u32;
    pool.orphan(
        a.svc.id,
        (0..count).map(|i| i | bank).chain(a.stray.drain(..)),
    );
    a.live.clear();
    pool.free_pair(a.pair.take());
    Ok(())
}

/// A new service: id (counters reset when reused), slots, ring, then the service entry.
fn add<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    d: &DesiredService,
    (id, reset): (u32, bool),
) -> Result<Applied, M::Error> {
    if reset && let Err(e) = w.reset_stats(id) {
        pool.reused.insert(id);
        return Err(e);
    }
    let table = if d.maglev && !d.backends.is_empty() {
        ring_table(&d.backends)
    } else {
        None
    };
    let pair = if table.is_some() {
        pool.alloc_pair()
    } else {
        None
    };
    let target = Service {
        id,
        count: d.backends.len() as u32,
        ring: pair.map_or(NO_RING, |p| p[0]),
        bank: 0,
    };
    let mut written = 0u32;
    let mut step = || -> Result<(), M::Error> {
        for (i, b) in d.backends.iter().enumerate() {
            w.set_backend(id, i as u32, *b)?;
            written += 1;
            pool.used += 1;
        }
        if let (Some([r, _]), Some(t)) = (pair, &table) {
            w.set_ring(r, t)?;
        }
        w.set_service(key, target)
    };
    match step() {
        Ok(()) => Ok(Applied {
            svc: target,
            live: d.backends.clone(),
            stray: Vec::new(),
            pair,
            broken: None,
        }),
        Err(e) => {
            // The slots are unreferenced; the id returns to the pool once they are deleted.
            pool.orphan(id, 0..written);
            pool.free_pair(pair);
            Err(e)
        }
    }
}

/// Brings a kept service to `d`.
fn change<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    a: &mut Applied,
    d: &DesiredService,
) -> Result<Outcome, M::Error> {
    let n = d.backends.len();
    let max = pool.limits.max_backends;
    if let Some(repair) = a.broken {
        // Nothing of the current state is trusted: write the whole list beside it and switch.
        if pool.used + n > max {
            unlink(pool, w, key, a)?;
            return Ok(Outcome::Dropped);
        }
        let fresh = if repair == Repair::FreshId {
            let Some((id, reset)) = pool.alloc_id() else {
                unlink(pool, w, key, a)?;
                return Ok(Outcome::Dropped);
            };
            if reset && let Err(e) = w.reset_stats(id) {
                pool.reused.insert(id);
                return Err(e);
            }
            Some(id)
        } else {
            None
        };
        let table = if d.maglev && n > 0 && pool.ensure_spare(a) {
            ring_table(&d.backends)
        } else {
            None
        };
        switch(pool, w, key, a, &d.backends, table.as_deref(), fresh)?;
        if a.svc.ring == NO_RING {
            pool.free_pair(a.pair.take());
        }
        return Ok(Outcome::Changed);
    }

    let writes = w.writes;
    // Strays (left by a failed apply) are unreferenced: drop them first.
    drain_strays(pool, w, a)?;

    if n == 0 {
        if a.svc.count != 0 || a.svc.ring != NO_RING {
            // One write: count 0 refuses without reading a slot or a ring.
            let target = Service {
                id: a.svc.id,
                count: 0,
                ring: NO_RING,
                bank: 0,
            };
            w.set_service(key, target)?;
            let old_bank = a.svc.bank;
            a.stray
                .extend((0..a.live.len() as u32).map(|i| i | old_bank));
            a.live.clear();
            a.svc = target;
            drain_strays(pool, w, a)?;
        }
        pool.free_pair(a.pair.take());
        return Ok(if w.writes == writes {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        });
    }

    if d.maglev {
        if a.svc.ring != NO_RING && a.live == d.backends {
            return Ok(Outcome::Unchanged);
        }
        if try_maglev_switch(pool, w, key, a, d)? {
            return Ok(Outcome::Changed);
        }
    }

    // Plain (or Maglev without a ring): in place.
    if a.svc.ring != NO_RING {
        // Same slots, no ring: the program picks among `count` slots at random.
        let target = Service {
            ring: NO_RING,
            ..a.svc
        };
        w.set_service(key, target)?;
        a.svc = target;
    }
    pool.free_pair(a.pair.take());
    let old = a.live.len();
    if pool.used.saturating_sub(old) + old.max(n) > max {
        unlink(pool, w, key, a)?;
        return Ok(Outcome::Dropped);
    }
    in_place(pool, w, key, a, &d.backends)?;
    if d.maglev && try_maglev_switch(pool, w, key, a, d)? {
        // Room for both banks appeared with the in-place change (the list shrank).
        return Ok(Outcome::Changed);
    }
    Ok(if w.writes == writes {
        Outcome::Unchanged
    } else {
        Outcome::Changed
    })
}

/// A Maglev switch to `d` when a spare ring and room for both banks are there. `Ok(false)`:
/// nothing written (no ring or no room), the caller goes on in place.
fn try_maglev_switch<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    a: &mut Applied,
    d: &DesiredService,
) -> Result<bool, M::Error> {
    if pool.used + d.backends.len() > pool.limits.max_backends {
        return Ok(false);
    }
    if !pool.ensure_spare(a) {
        return Ok(false);
    }
    let Some(table) = ring_table(&d.backends) else {
        return Ok(false);
    };
    switch(pool, w, key, a, &d.backends, Some(&table), None)?;
    Ok(true)
}

/// Writes `want` into the other bank (or bank 0 of `fresh_id`), the ring into the spare ring
/// when `table` is given, then switches the service in one write and deletes the old slots.
fn switch<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    a: &mut Applied,
    want: &[Backend],
    table: Option<&[u32]>,
    fresh_id: Option<u32>,
) -> Result<(), M::Error> {
    let (id, bank) = match fresh_id {
        Some(id) => (id, 0),
        None => (a.svc.id, a.svc.bank ^ BANK_B),
    };
    let ring = match table {
        Some(_) => a.spare().unwrap_or(NO_RING),
        None => NO_RING,
    };
    let n = want.len() as u32;
    let mut written = 0u32;
    let mut step = |pool: &mut Pool| -> Result<(), M::Error> {
        for (i, b) in want.iter().enumerate() {
            w.set_backend(id, i as u32 | bank, *b)?;
            written += 1;
            pool.used += 1;
        }
        if let (Some(t), true) = (table, ring != NO_RING) {
            w.set_ring(ring, t)?;
        }
        w.set_service(
            key,
            Service {
                id,
                count: n,
                ring,
                bank,
            },
        )
    };
    if let Err(e) = step(pool) {
        let slots = (0..written).map(|i| i | bank);
        match fresh_id {
            Some(id) => pool.orphan(id, slots),
            None => a.stray.extend(slots),
        }
        return Err(e);
    }
    // Switched: the old slots are referenced by nobody.
    let old = std::mem::replace(
        &mut a.svc,
        Service {
            id,
            count: n,
            ring,
            bank,
        },
    );
    let old_slots = (0..a.live.len() as u32).map(|i| i | old.bank);
    if fresh_id.is_some() {
        let stray = std::mem::take(&mut a.stray);
        pool.orphan(old.id, old_slots.chain(stray));
    } else {
        a.stray.extend(old_slots);
        a.stray.retain(|&s| s & BANK_B != bank || s & !BANK_B >= n);
    }
    a.live.clear();
    a.live.extend_from_slice(want);
    a.broken = None;
    drain_strays(pool, w, a)
}

/// Deletes a service's stray slots.
fn drain_strays<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    a: &mut Applied,
) -> Result<(), M::Error> {
    if a.stray.is_empty() {
        return Ok(());
    }
    a.stray.sort_unstable();
    a.stray.dedup();
    while let Some(&slot) = a.stray.last() {
        w.delete_backend(a.svc.id, slot)?;
        a.stray.pop();
        pool.used = pool.used.saturating_sub(1);
    }
    Ok(())
}

/// The in-place diff of a plain service (no ring, no strays) to `want` (sorted, unique).
fn in_place<M: MapOps>(
    pool: &mut Pool,
    w: &mut Writer<'_, M>,
    key: ServiceKey,
    a: &mut Applied,
    want: &[Backend],
) -> Result<(), M::Error> {
    debug_assert!(a.svc.ring == NO_RING && a.stray.is_empty());
    if a.live.as_slice() == want {
        return Ok(());
    }
    let id = a.svc.id;
    let bank = a.svc.bank;
    // Holes: slots whose backend left (or a duplicate after a failed apply); adds: backends of
    // `want` in no slot.
    pool.seen.clear();
    pool.seen.resize(want.len(), false);
    pool.holes.clear();
    for (i, b) in a.live.iter().enumerate() {
        match want.binary_search(b) {
            Ok(j) if !pool.seen[j] => pool.seen[j] = true,
            _ => pool.holes.push(i as u32),
        }
    }
    pool.adds.clear();
    pool.adds
        .extend((0..want.len() as u32).filter(|&j| !pool.seen[j as usize]));
    if pool.holes.is_empty() && pool.adds.is_empty() {
        return Ok(());
    }
    let fill = pool.holes.len().min(pool.adds.len());
    // 1. Holes take added backends in place.
    for k in 0..fill {
        let (h, j) = (pool.holes[k], pool.adds[k]);
        let b = want[j as usize];
        w.set_backend(id, h | bank, b)?;
        a.live[h as usize] = b;
    }
    // 2. Remaining additions above the count, then one write raises it.
    if pool.adds.len() > fill {
        let base = a.live.len() as u32;
        for (k, &j) in pool.adds[fill..].iter().enumerate() {
            let slot = (base + k as u32) | bank;
            w.set_backend(id, slot, want[j as usize])?;
            a.stray.push(slot);
            pool.used += 1;
        }
        let target = Service {
            count: base + (pool.adds.len() - fill) as u32,
            ..a.svc
        };
        w.set_service(key, target)?;
        a.svc = target;
        a.stray.clear();
        a.live
            .extend(pool.adds[fill..].iter().map(|&j| want[j as usize]));
    }
    // 3. Remaining removals, highest hole first (every slot above it is kept): move the last
    // slot into the hole, lower the count, delete the old last slot.
    for k in (fill..pool.holes.len()).rev() {
        let h = pool.holes[k] as usize;
        let last = a.live.len() - 1;
        if h != last {
            let moved = a.live[last];
            w.set_backend(id, h as u32 | bank, moved)?;
            a.live[h] = moved;
        }
        let target = Service {
            count: last as u32,
            ..a.svc
        };
        w.set_service(key, target)?;
        a.svc = target;
        a.live.pop();
        a.stray.push(last as u32 | bank);
        w.delete_backend(id, last as u32 | bank)?;
        a.stray.pop();
        pool.used = pool.used.saturating_sub(1);
    }
    Ok(())
}

/// The Maglev ring of `backends` (values: their slot numbers).
fn ring_table(backends: &[Backend]) -> Option<Vec<u32>> {
    let keys: Vec<u64> = backends
        .iter()
        .map(|b| maglev::hash_endpoint(b.ip(), b.port()))
        .collect();
    maglev::build_sized(&keys, MAGLEV_M as usize)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::model::{App, ClusterState, Vip, VipKey};

    #[derive(Debug, PartialEq, Eq)]
    struct Injected;

    impl std::fmt::Display for Injected {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("injected map write failure")
        }
    }

    impl std::error::Error for Injected {}

    /// The maps in memory. After every single write it asserts what a concurrent BPF lookup
    /// could see (see `check`); the write rules it enforces are those of the real maps plus
    /// the sync's own contract (no reused id without a reset, no rewrite of a ring in use).
    #[derive(Debug, Clone)]
    struct Model {
        limits: Limits,
        services: BTreeMap<ServiceKey, Service>,
        backends: BTreeMap<BackendKey, Backend>,
        /// Rings written whole (a failed or partial write leaves none).
        rings: BTreeMap<u32, Vec<u32>>,
        /// Ids whose counters hold another service's counts (not reset since).
        stale: BTreeSet<u32>,
        /// Adopted broken services: the keys their lookups could reach at the start, which must
        /// stay until their entry is rewritten or deleted.
        tainted: BTreeMap<ServiceKey, (Service, Vec<BackendKey>)>,
        /// Index of the write attempt that fails (counted from 0 at the last `arm`).
        fail_at: Option<usize>,
        attempts: usize,
        writes: usize,
    }

    impl Model {
        fn new(limits: Limits) -> Model {
            Model {
                limits,
                services: BTreeMap::new(),
                backends: BTreeMap::new(),
                rings: BTreeMap::new(),
                stale: BTreeSet::new(),
                tainted: BTreeMap::new(),
                fail_at: None,
                attempts: 0,
                writes: 0,
            }
        }

        fn arm(&mut self, fail_at: Option<usize>) {
            self.fail_at = fail_at;
            self.attempts = 0;
            self.writes = 0;
        }

        fn attempt(&mut self) -> Result<(), Injected> {
            let n = self.attempts;
            self.attempts += 1;
            if self.fail_at == Some(n) {
                return Err(Injected);
            }
            self.writes += 1;
            Ok(())
        }

        fn referenced(&self, id: u32) -> bool {
            self.services.values().any(|s| s.id == id)
        }

        /// What a lookup running now could see, for every service.
        fn check(&self) {
            for (k, s) in &self.services {
                if let Some((at_start, keys)) = self.tainted.get(k)
                    && at_start == s
                {
                    for key in keys {
                        assert!(
                            self.backends.contains_key(key),
                            "broken service {k:?} lost {key:?} before its repair"
                        );
                    }
                    continue;
                }
                assert!(
                    (s.id as usize) < self.limits.max_services,
                    "{k:?}: id {}",
                    s.id
                );
                for i in 0..s.count {
                    let key = BackendKey {
                        id: s.id,
                        slot: i | s.bank,
                    };
                    let b = self
                        .backends
                        .get(&key)
                        .unwrap_or_else(|| panic!("{k:?} {s:?}: slot {key:?} missing"));
                    assert_eq!(b.family, k.family, "{k:?}: family of slot {i}");
                }
                if s.ring != NO_RING {
                    let ring = self
                        .rings
                        .get(&s.ring)
                        .unwrap_or_else(|| panic!("{k:?} {s:?}: ring not written whole"));
                    assert!(s.count > 0, "{k:?}: ring with count 0");
                    assert!(
                        ring.iter().all(|&v| v < s.count),
                        "{k:?} {s:?}: ring value >= count"
                    );
                }
            }
        }

        /// Live slots of a service in slot order.
        fn live(&self, s: &Service) -> Vec<Backend> {
            (0..s.count)
                .map(|i| {
                    self.backends[&BackendKey {
                        id: s.id,
                        slot: i | s.bank,
                    }]
                })
                .collect()
        }
    }

    impl MapOps for Model {
        type Error = Injected;

        fn set_backend(&mut self, key: BackendKey, value: Backend) -> Result<(), Injected> {
            self.attempt()?;
            self.backends.insert(key, value);
            self.check();
            Ok(())
        }

        fn delete_backend(&mut self, key: BackendKey) -> Result<(), Injected> {
            self.attempt()?;
            assert!(
                self.backends.remove(&key).is_some(),
                "delete of absent {key:?}"
            );
            self.check();
            Ok(())
        }

        fn set_service(&mut self, key: ServiceKey, value: Service) -> Result<(), Injected> {
            self.attempt()?;
            assert!(
                !self.stale.contains(&value.id),
                "{key:?}: id {} reused without reset_stats",
                value.id
            );
            let old = self.services.insert(key, value);
            if let Some(old) = old
                && old.id != value.id
                && !self.referenced(old.id)
            {
                self.stale.insert(old.id);
            }
            self.check();
            Ok(())
        }

        fn delete_service(&mut self, key: ServiceKey) -> Result<(), Injected> {
            self.attempt()?;
            let old = self.services.remove(&key);
            let old = old.unwrap_or_else(|| panic!("delete of absent service {key:?}"));
            if !self.referenced(old.id) {
                self.stale.insert(old.id);
            }
            self.tainted.remove(&key);
            self.check();
            Ok(())
        }

        fn set_ring(&mut self, ring: u32, slots: &[u32]) -> Result<(), Injected> {
            assert!(ring < self.limits.rings, "ring {ring} out of range");
            assert!(
                !self.services.values().any(|s| s.ring == ring),
                "ring {ring} rewritten while a service reads it"
            );
            // A failed write leaves a ring not written whole.
            self.rings.remove(&ring);
            self.attempt()?;
            assert_eq!(slots.len(), MAGLEV_M as usize);
            self.rings.insert(ring, slots.to_vec());
            self.check();
            Ok(())
        }

        fn reset_stats(&mut self, id: u32) -> Result<(), Injected> {
            self.attempt()?;
            assert!(
                !self.referenced(id),
                "reset_stats({id}) while a service counts there"
            );
            self.stale.remove(&id);
            Ok(())
        }
    }

    fn limits(max_services: usize, max_backends: usize, rings: u32) -> Limits {
        Limits {
            max_services,
            max_backends,
            rings,
        }
    }

    fn vip(i: u8) -> ServiceKey {
        if i % 3 == 2 {
            ServiceKey::new(
                format!("fd00:f::{i}").parse().unwrap(),
                80,
                if i.is_multiple_of(2) {
                    IPPROTO_TCP
                } else {
                    IPPROTO_UDP
                },
            )
        } else {
            ServiceKey::new(
                IpAddr::from([11, 0, 0, i]),
                80 + u16::from(i % 2),
                IPPROTO_TCP,
            )
        }
    }

    /// Backend `j` of the family of `key`.
    fn be(key: &ServiceKey, j: u8) -> Backend {
        if key.family == layout::FAMILY_V6 {
            Backend::new(format!("fd01::{j}").parse().unwrap(), 8000 + u16::from(j))
        } else {
            Backend::new(IpAddr::from([10, 0, 1, j]), 8000 + u16::from(j))
        }
    }

    fn svc(key: &ServiceKey, backends: &[u8], maglev: bool) -> DesiredService {
        let mut backends: Vec<Backend> = backends.iter().map(|&j| be(key, j)).collect();
        backends.sort_unstable();
        backends.dedup();
        DesiredService { backends, maglev }
    }

    fn desired(items: &[(u8, &[u8], bool)]) -> Desired {
        Desired {
            services: items
                .iter()
                .map(|&(i, b, m)| (vip(i), svc(&vip(i), b, m)))
                .collect(),
        }
    }

    /// The maps hold exactly `d` minus the refused VIPs, nothing else.
    fn assert_converged(model: &Model, syncer: &Syncer, d: &Desired) {
        let refused = syncer.refused();
        assert!(refused.iter().all(|k| d.services.contains_key(k)));
        let want: BTreeSet<ServiceKey> = d
            .services
            .keys()
            .filter(|k| !refused.contains(k))
            .copied()
            .collect();
        let have: BTreeSet<ServiceKey> = model.services.keys().copied().collect();
        assert_eq!(have, want, "services in the map");
        let mut keys = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut ringed = 0u32;
        for (k, s) in &model.services {
            let ds = &d.services[k];
            assert!(ids.insert(s.id), "id {} twice", s.id);
            let live = model.live(s);
            let mut sorted = live.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ds.backends, "{k:?}: live slots");
            for i in 0..s.count {
                keys.insert(BackendKey {
                    id: s.id,
                    slot: i | s.bank,
                });
            }
            if s.ring != NO_RING {
                assert!(ds.maglev, "{k:?}: ring on a plain service");
                ringed += 1;
                assert_eq!(
                    model.rings[&s.ring],
                    ring_table(&live).unwrap(),
                    "{k:?}: ring content"
                );
            }
        }
        let stored: BTreeSet<BackendKey> = model.backends.keys().copied().collect();
        assert_eq!(stored, keys, "leftover backend keys");
        let syncer_ids: BTreeMap<ServiceKey, u32> = syncer.ids().collect();
        let model_ids: BTreeMap<ServiceKey, u32> =
            model.services.iter().map(|(k, s)| (*k, s.id)).collect();
        assert_eq!(syncer_ids, model_ids);
        let (n, slots, rings) = syncer.occupancy();
        assert_eq!((n, slots), (model.services.len(), model.backends.len()));
        assert_eq!(rings, 2 * ringed, "rings held by nobody");
    }

    /// Applies `d` (no failure), checks convergence, then checks that applying it again writes
    /// nothing.
    fn apply_ok(model: &mut Model, syncer: &mut Syncer, d: &Desired) -> SyncReport {
        model.arm(None);
        let r = syncer.apply(d, model).expect("apply");
        assert_eq!(r.writes, model.writes, "writes counted");
        assert_converged(model, syncer, d);
        model.arm(None);
        let again = syncer.apply(d, model).expect("apply again");
        assert_eq!(again.writes, 0, "unchanged desired wrote: {again:?}");
        assert_eq!(again.unchanged, model.services.len());
        assert_eq!(again.refused, r.refused);
        r
    }

    #[test]
    fn add_remove_replace_and_zero() {
        let l = limits(16, 256, 8);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[1, 2, 3], false), (2, &[1], true)]),
        );
        assert_eq!((r.added, r.writes), (2, 3 + 1 + 1 + 1 + 1));
        // One backend more: one slot, one count.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[1, 2, 3, 4], false), (2, &[1], true)]),
        );
        assert_eq!((r.changed, r.unchanged, r.writes), (1, 1, 2));
        // A replacement fills the hole in place: one write.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[1, 2, 5, 4], false), (2, &[1], true)]),
        );
        assert_eq!(r.writes, 1);
        // A removal: move the last slot, lower the count, delete.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[2, 5, 4], false), (2, &[1], true)]),
        );
        assert_eq!(r.writes, 3);
        // Removing the last slot needs no move.
        let before = m.live(&m.services[&vip(1)]);
        let last = *before.last().unwrap();
        let keep: Vec<u8> = [2u8, 5, 4]
            .into_iter()
            .filter(|&j| be(&vip(1), j) != last)
            .collect();
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &keep, false), (2, &[1], true)]),
        );
        assert_eq!(r.writes, 2);
        // Maglev change: new bank + ring + switch + delete the old bank.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &keep, false), (2, &[1, 2], true)]),
        );
        assert_eq!(r.writes, 2 + 1 + 1 + 1);
        assert_eq!(m.services[&vip(2)].bank, BANK_B);
        // All to zero: one write each, then the slots.
        let r = apply_ok(&mut m, &mut s, &desired(&[(1, &[], false), (2, &[], true)]));
        assert_eq!(r.writes, 1 + 2 + 1 + 2);
        assert!(
            m.services
                .values()
                .all(|s| s.count == 0 && s.ring == NO_RING)
        );
        assert_eq!(
            s.occupancy().2,
            0,
            "rings of an empty Maglev service are freed"
        );
        // Zero to some.
        apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[7, 8], false), (2, &[7, 8, 9], true)]),
        );
        // Remove everything.
        let r = apply_ok(&mut m, &mut s, &Desired::default());
        assert_eq!(r.removed, 2);
        assert!(m.services.is_empty() && m.backends.is_empty());
        // Ids come back, with a reset first (the model asserts it).
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(3, &[1], false), (4, &[1], true)]),
        );
        assert_eq!(r.writes, 2 + 2 + 1 + 1 + 1);
    }

    #[test]
    fn maglev_on_off_and_back() {
        let l = limits(16, 256, 8);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        apply_ok(&mut m, &mut s, &desired(&[(1, &[1, 2, 3], false)]));
        // Plain to Maglev: a full switch with a ring.
        apply_ok(&mut m, &mut s, &desired(&[(1, &[1, 2, 3], true)]));
        assert_ne!(m.services[&vip(1)].ring, NO_RING);
        // Maglev to plain, same backends: one write drops the ring.
        let r = apply_ok(&mut m, &mut s, &desired(&[(1, &[1, 2, 3], false)]));
        assert_eq!(r.writes, 1);
        assert_eq!(s.occupancy().2, 0);
        // Maglev to plain with a change: ring dropped, then in place.
        apply_ok(&mut m, &mut s, &desired(&[(1, &[1, 2, 3, 4], true)]));
        apply_ok(&mut m, &mut s, &desired(&[(1, &[2, 3, 5], false)]));
    }

    #[test]
    fn maglev_switch_keeps_ring_positions_of_the_backends_that_stay() {
        let l = limits(16, 256, 8);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        let all: Vec<u8> = (1..=10).collect();
        apply_ok(&mut m, &mut s, &desired(&[(1, &all, true)]));
        let owner = |m: &Model| -> Vec<Backend> {
            let svc = m.services[&vip(1)];
            let live = m.live(&svc);
            m.rings[&svc.ring]
                .iter()
                .map(|&v| live[v as usize])
                .collect()
        };
        let before = owner(&m);
        let fewer: Vec<u8> = all.iter().copied().filter(|&j| j != 4).collect();
        apply_ok(&mut m, &mut s, &desired(&[(1, &fewer, true)]));
        let after = owner(&m);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let gone = before.iter().filter(|&&b| b == be(&vip(1), 4)).count();
        // Slot numbers shift in the new bank, yet only the removed backend's positions (plus
        // Maglev's small extra churn) change owner: about 1/N of the ring.
        let share = f64::from(MAGLEV_M) / all.len() as f64;
        assert!(gone > 0 && moved >= gone, "{moved} moved, {gone} owned");
        assert!(
            moved as f64 <= 1.5 * share,
            "{moved} moved, 1/N = {share:.0}"
        );
    }

    #[test]
    fn limits_refuse_new_services_in_key_order_and_take_them_when_room_appears() {
        let l = limits(3, 100, 8);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        let all = [
            (1, &[1u8, 2][..], false),
            (2, &[1][..], true),
            (3, &[1, 2][..], false),
            (4, &[3][..], false),
            (5, &[4][..], true),
        ];
        let r = apply_ok(&mut m, &mut s, &desired(&all));
        assert_eq!((r.added, r.refused), (3, 2));
        let mut keys: Vec<ServiceKey> = all.iter().map(|t| vip(t.0)).collect();
        keys.sort();
        let refused: Vec<ServiceKey> = s.refused().iter().copied().collect();
        assert_eq!(refused, keys[3..].to_vec(), "the last two in key order");
        // Removing an applied one makes room for the first refused one.
        let gone = keys[0];
        let rest: Vec<_> = all.iter().copied().filter(|t| vip(t.0) != gone).collect();
        let r = apply_ok(&mut m, &mut s, &desired(&rest));
        assert_eq!((r.removed, r.added, r.refused), (1, 1, 1));
        assert!(m.services.contains_key(&keys[3]));
        assert_eq!(
            s.refused().iter().copied().collect::<Vec<_>>(),
            vec![keys[4]]
        );
        // The new one, earlier in key order than the applied ones, does not take a place.
        let mut more = rest.clone();
        more.push((0, &[1][..], false));
        let r = apply_ok(&mut m, &mut s, &desired(&more));
        assert_eq!((r.added, r.refused), (0, 2));
        assert!(s.refused().contains(&vip(0)));
    }

    #[test]
    fn backend_limit_counts_both_banks_of_a_maglev_switch() {
        // 4 slots: a Maglev service of 3 cannot switch to 3 others (6 slots at the peak); it
        // goes without a ring, in place; a new service of 2 does not fit beside it.
        let l = limits(8, 4, 8);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        apply_ok(&mut m, &mut s, &desired(&[(1, &[1, 2, 3], true)]));
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[4, 5, 6], true), (2, &[1, 2], false)]),
        );
        assert_eq!((r.ringless, r.refused), (1, 1));
        assert_eq!(m.services[&vip(1)].ring, NO_RING);
        // Shrinking leaves room for both banks: the ring comes back in the same apply.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[4], true), (2, &[1, 2], false)]),
        );
        assert_eq!((r.ringless, r.refused, r.added), (0, 0, 1));
        assert_ne!(m.services[&vip(1)].ring, NO_RING);
        // A service that cannot fit at all is refused, not written.
        let r = apply_ok(
            &mut m,
            &mut s,
            &desired(&[(1, &[4], true), (3, &[1, 2, 3, 4, 5], false)]),
        );
        assert_eq!(r.refused, 1);
        assert!(!m.services.contains_key(&vip(3)));
    }

    #[test]
    fn ring_pool_exhaustion_serves_without_a_ring_until_rings_free_up() {
        let l = limits(16, 256, 4);
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        let three = [
            (1, &[1u8, 2][..], true),
            (2, &[1, 3][..], true),
            (3, &[2, 3][..], true),
        ];
        let r = apply_ok(&mut m, &mut s, &desired(&three));
        assert_eq!(r.ringless, 1);
        assert_eq!(s.occupancy().2, 4);
        let ringless: Vec<_> = m
            .services
            .iter()
            .filter(|(_, s)| s.ring == NO_RING)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(ringless.len(), 1);
        // A ringless Maglev service still changes safely (in place).
        let mut changed = three;
        for t in changed.iter_mut() {
            if vip(t.0) == ringless[0] {
                t.1 = &[5, 6, 7];
            }
        }
        let r = apply_ok(&mut m, &mut s, &desired(&changed));
        assert_eq!(r.ringless, 1);
        // Turning another one plain frees its pair for the ringless one.
        let mut other = changed;
        let idx = other.iter().position(|t| vip(t.0) != ringless[0]).unwrap();
        other[idx].2 = false;
        let r = apply_ok(&mut m, &mut s, &desired(&other));
        assert_eq!(r.ringless, 0);
        assert_ne!(m.services[&ringless[0]].ring, NO_RING);
    }

    /// A random walk over desired states: VIPs come and go, backends change, Maglev toggles,
    /// limits are tight, writes fail.
    #[test]
    fn random_steps_stay_safe_and_converge() {
        // What the walk went through, so that it cannot pass by missing the hard cases.
        let (mut errors, mut refused, mut ringless, mut adopted) = (0, 0, 0, 0);
        for seed in 0..150u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let l = limits(
                rng.random_range(2..9),
                rng.random_range(6..60),
                rng.random_range(0..9),
            );
            let mut m = Model::new(l);
            let mut s = Syncer::new(l);
            let mut d = Desired::default();
            for step in 0..40 {
                mutate(&mut d, &mut rng);
                if rng.random_bool(0.3) {
                    // A write fails somewhere; the state stays safe, and a later apply
                    // converges.
                    let at = rng.random_range(0..12);
                    m.arm(Some(at));
                    let r = s.apply(&d, &mut m);
                    if r.is_err() {
                        errors += 1;
                        assert_eq!(m.writes, at, "seed {seed} step {step}");
                        if rng.random_bool(0.5) {
                            mutate(&mut d, &mut rng);
                        }
                    }
                }
                if rng.random_bool(0.1) {
                    // A restart: adopt whatever the maps hold (strays of a failed apply
                    // included).
                    s = adopt_from(&m);
                    adopted += 1;
                }
                let r = apply_ok(&mut m, &mut s, &d);
                refused += usize::from(r.refused > 0);
                ringless += usize::from(r.ringless > 0);
            }
        }
        assert!(
            errors > 300 && refused > 300 && ringless > 100 && adopted > 300,
            "errors {errors} refused {refused} ringless {ringless} adopted {adopted}"
        );
    }

    fn mutate(d: &mut Desired, rng: &mut ChaCha8Rng) {
        for i in 0..8u8 {
            let key = vip(i);
            if rng.random_bool(0.15) {
                if d.services.remove(&key).is_none() {
                    let n = rng.random_range(0..5);
                    let b: Vec<u8> = (0..n).map(|_| rng.random_range(0..12)).collect();
                    d.services.insert(key, svc(&key, &b, rng.random_bool(0.5)));
                }
                continue;
            }
            let Some(ds) = d.services.get_mut(&key) else {
                continue;
            };
            if rng.random_bool(0.1) {
                ds.maglev = !ds.maglev;
            }
            match rng.random_range(0..10) {
                0 if !ds.backends.is_empty() => {
                    let i = rng.random_range(0..ds.backends.len());
                    ds.backends.remove(i);
                }
                1 => ds.backends.push(be(&key, rng.random_range(0..12))),
                2 => ds.backends.clear(),
                3 => {
                    ds.backends = (0..rng.random_range(1..7))
                        .map(|_| be(&key, rng.random_range(0..12)))
                        .collect()
                }
                4 if !ds.backends.is_empty() => {
                    let i = rng.random_range(0..ds.backends.len());
                    ds.backends[i] = be(&key, rng.random_range(0..12));
                }
                _ => {}
            }
            ds.backends.sort_unstable();
            ds.backends.dedup();
        }
    }

    /// A Model holding a previous run's maps (rings written as that run would have).
    fn previous_run(l: Limits, d: &Desired) -> Model {
        let mut m = Model::new(l);
        let mut s = Syncer::new(l);
        m.arm(None);
        s.apply(d, &mut m).expect("apply");
        m
    }

    fn adopt_from(m: &Model) -> Syncer {
        Syncer::adopt(
            m.limits,
            m.services.iter().map(|(k, v)| (*k, *v)).collect(),
            m.backends.iter().map(|(k, v)| (*k, *v)).collect(),
        )
    }

    #[test]
    fn adopt_consistent_maps_costs_nothing_then_follows_changes() {
        let l = limits(16, 256, 8);
        let d = desired(&[(1, &[1, 2, 3], false), (2, &[1, 4], true), (3, &[], true)]);
        let mut m = previous_run(l, &d);
        let mut s = adopt_from(&m);
        m.arm(None);
        let r = s.apply(&d, &mut m).expect("apply");
        assert_eq!((r.writes, r.unchanged), (0, 3));
        assert_converged(&m, &s, &d);
        // Every free id may hold a previous run's counts: the model marks them stale.
        m.stale = (0..16).filter(|id| !m.referenced(*id)).collect();
        let d2 = desired(&[(1, &[1, 3], false), (2, &[1, 4, 5], true), (4, &[2], true)]);
        apply_ok(&mut m, &mut s, &d2);
    }

    #[test]
    fn adopt_repairs_inconsistent_maps_without_exposing_empty_slots() {
        let l = limits(16, 256, 8);
        let mut m = Model::new(l);
        let put = |m: &mut Model, id: u32, slot: u32, key: &ServiceKey, j: u8| {
            m.backends.insert(BackendKey { id, slot }, be(key, j));
        };
        let s_ = |id, count, ring, bank| Service {
            id,
            count,
            ring,
            bank,
        };
        // 0: slot 2 of 3 missing.
        let k = vip(0);
        m.services.insert(k, s_(0, 3, NO_RING, 0));
        put(&mut m, 0, 0, &k, 1);
        put(&mut m, 0, 1, &k, 2);
        // 1: id out of range, slots fine.
        let k = vip(1);
        m.services.insert(k, s_(20, 2, NO_RING, 0));
        put(&mut m, 20, 0, &k, 1);
        put(&mut m, 20, 1, &k, 2);
        // 3 and 4 share id 3 (both read its slots).
        let (k3, k4) = (vip(3), vip(4));
        m.services.insert(k3, s_(3, 2, NO_RING, 0));
        m.services.insert(k4, s_(3, 1, NO_RING, 0));
        put(&mut m, 3, 0, &k3, 1);
        put(&mut m, 3, 1, &k3, 2);
        // 5 (v6): ring out of range, bank B.
        let k = vip(5);
        m.services.insert(k, s_(5, 1, 9, BANK_B));
        put(&mut m, 5, BANK_B, &k, 3);
        // 6 and 7: consistent, share ring 1 (6 keeps it, 7 is rewritten).
        let (k6, k7) = (vip(6), vip(7));
        m.services.insert(k6, s_(6, 1, 1, 0));
        put(&mut m, 6, 0, &k6, 1);
        m.services.insert(k7, s_(7, 1, 1, 0));
        put(&mut m, 7, 0, &k7, 1);
        m.rings.insert(1, vec![0; MAGLEV_M as usize]);
        // 8 (v6): invalid bank bits, slot present at that bank.
        let k = vip(8);
        m.services.insert(k, s_(1, 1, NO_RING, 0x4000_0000));
        put(&mut m, 1, 0x4000_0000, &k, 1);
        // Keys of no service, and a stray slot above a count.
        put(&mut m, 2, 0, &vip(0), 5);
        put(&mut m, 6, 3, &k6, 2);
        // What lookups of the broken ones can reach now must stay until each is rewritten.
        for (k, s) in m.services.clone() {
            let keys: Vec<BackendKey> = (0..s.count)
                .map(|i| BackendKey {
                    id: s.id,
                    slot: i | s.bank,
                })
                .filter(|key| m.backends.contains_key(key))
                .collect();
            m.tainted.insert(k, (s, keys));
        }
        m.tainted.remove(&k6);
        m.stale = (0..16).filter(|id| !m.referenced(*id)).collect();
        let mut s = adopt_from(&m);
        let d = Desired {
            services: [0u8, 1, 3, 4, 5, 6, 7, 8]
                .iter()
                .map(|&i| {
                    let k = vip(i);
                    (k, svc(&k, &[1, 2], i == 6 || i == 7 || i == 5))
                })
                .collect(),
        };
        let r = apply_ok(&mut m, &mut s, &d);
        assert_eq!(r.refused, 0);
        // Missing slot: rewritten in its other bank under its own id.
        assert_eq!(
            (m.services[&vip(0)].id, m.services[&vip(0)].bank),
            (0, BANK_B)
        );
        // Out-of-range, shared and bad-bank ids: moved to fresh ids; id 1 and 3 freed.
        for i in [1, 3, 4, 8] {
            assert!(![20, 3, 1].contains(&m.services[&vip(i)].id), "vip {i}");
        }
        // Rings: 6 kept ring 1 (and switched to its spare), 7 and 5 got pairs of their own.
        let rings: BTreeSet<u32> = [k6, k7, vip(5)]
            .iter()
            .map(|k| m.services[k].ring)
            .collect();
        assert_eq!(rings.len(), 3);
        assert!(rings.iter().all(|&r| r < 8));
        assert_eq!(m.services[&k6].id, 6);
        // A second adopt of the repaired maps is consistent: nothing to write.
        let mut s2 = adopt_from(&m);
        m.arm(None);
        assert_eq!(s2.apply(&d, &mut m).expect("apply").writes, 0);
    }

    #[test]
    fn adopt_repair_of_unwanted_services_deletes_them_after_unlinking() {
        let l = limits(8, 256, 4);
        let mut m = Model::new(l);
        let (k3, k4) = (vip(3), vip(4));
        m.services.insert(
            k3,
            Service {
                id: 3,
                count: 2,
                ring: NO_RING,
                bank: 0,
            },
        );
        m.services.insert(
            k4,
            Service {
                id: 3,
                count: 2,
                ring: NO_RING,
                bank: 0,
            },
        );
        for slot in 0..2 {
            m.backends
                .insert(BackendKey { id: 3, slot }, be(&k3, slot as u8));
        }
        for (k, s) in m.services.clone() {
            let keys = (0..2).map(|slot| BackendKey { id: 3, slot }).collect();
            m.tainted.insert(k, (s, keys));
        }
        m.stale = (0..8).collect();
        let mut s = adopt_from(&m);
        // 3 stays (moved to a fresh id), 4 goes; id 3's keys go only after both stopped
        // reading them.
        let d = Desired {
            services: [(k3, svc(&k3, &[0, 1], false))].into_iter().collect(),
        };
        apply_ok(&mut m, &mut s, &d);
        assert_ne!(m.services[&k3].id, 3);
    }

    #[test]
    fn a_failed_write_mid_apply_is_repaired_by_the_next_apply() {
        let l = limits(16, 256, 8);
        let d1 = desired(&[
            (1, &[1, 2, 3, 4], false),
            (2, &[1, 2], true),
            (3, &[5], false),
        ]);
        let d2 = desired(&[(1, &[2, 6], false), (2, &[1, 3], true), (4, &[5, 6], true)]);
        // Fail at every possible write of the d1 -> d2 apply in turn.
        for at in 0.. {
            let mut m = Model::new(l);
            let mut s = Syncer::new(l);
            apply_ok(&mut m, &mut s, &d1);
            m.arm(Some(at));
            if s.apply(&d2, &mut m).is_ok() {
                assert!(at > 5, "the apply has more than {at} writes");
                break;
            }
            assert_eq!(m.writes, at);
            apply_ok(&mut m, &mut s, &d2);
            // And back, with the recovery in between.
            apply_ok(&mut m, &mut s, &d1);
        }
    }

    #[test]
    fn from_snapshot_filters_health_weight_family_and_reads_the_label() {
        use crate::model::Backend as SBackend;
        let backend = |ip: &str, port: u16, weight: u32, app: &str| SBackend {
            id: BackendId(u64::from(port)),
            ip: ip.parse().unwrap(),
            port,
            weight,
            task_id: format!("t{port}").into(),
            app_id: Some(app.into()),
            agent_ip: None,
        };
        let mut state = ClusterState::default();
        let app = |id: &str, labels: &[(&str, &str)]| App {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        state.apps.insert(
            "/mag".into(),
            Arc::new(app("/mag", &[(BALANCE_LABEL, "maglev")])),
        );
        state.apps.insert("/rr".into(), Arc::new(app("/rr", &[])));
        let v4 = VipKey {
            protocol: Protocol::Tcp,
            ip: "11.0.0.1".parse().unwrap(),
            port: 80,
        };
        let v6 = VipKey {
            protocol: Protocol::Udp,
            ip: "fd00::1".parse().unwrap(),
            port: 53,
        };
        let snapshot = Snapshot {
            state: Arc::new(state),
            vips: vec![
                Arc::new(Vip {
                    key: v4,
                    name: None,
                    label: None,
                    backends: vec![
                        backend("10.0.0.1", 1001, 1, "/mag"),
                        backend("10.0.0.2", 1002, 0, "/mag"), // draining
                        backend("10.0.0.3", 1003, 1, "/mag"), // down
                        backend("fd01::4", 1004, 1, "/mag"),  // other family
                        backend("10.0.0.5", 1005, 1, "/mag"),
                    ],
                }),
                Arc::new(Vip {
                    key: v6,
                    name: None,
                    label: None,
                    backends: vec![
                        backend("fd01::6", 1006, 1, "/rr"),
                        backend("10.0.0.7", 1007, 1, "/rr"),
                    ],
                }),
            ],
            ..Default::default()
        };
        let d = Desired::from_snapshot(&snapshot, |id| id != BackendId(1003), Balance::Wlc);
        let k4 = ServiceKey::new(v4.ip, 80, IPPROTO_TCP);
        let k6 = ServiceKey::new(v6.ip, 53, IPPROTO_UDP);
        assert_eq!(d.services.len(), 2);
        let mut want4 = vec![
            Backend::new("10.0.0.1".parse().unwrap(), 1001),
            Backend::new("10.0.0.5".parse().unwrap(), 1005),
        ];
        want4.sort_unstable();
        assert_eq!(d.services[&k4].backends, want4);
        assert!(d.services[&k4].maglev);
        assert_eq!(
            d.services[&k6].backends,
            vec![Backend::new("fd01::6".parse().unwrap(), 1006)]
        );
        assert!(!d.services[&k6].maglev);
        // The default balancer applies without the label.
        let d = Desired::from_snapshot(&snapshot, |_| true, Balance::Maglev);
        assert!(d.services[&k6].maglev);
        assert_eq!(d.services[&k4].backends.len(), 3);
        // All down: count 0 (the program refuses), the VIP stays.
        let d = Desired::from_snapshot(&snapshot, |_| false, Balance::Rr);
        assert!(d.services.values().all(|s| s.backends.is_empty()));
    }
}
