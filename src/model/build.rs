//! `Snapshot::build`: the pure function from a `ClusterState` (plus the config and the previous
//! snapshot, for stable named-VIP addresses) to the next `Snapshot`: VIPs with their backends,
//! named-VIP allocations, Marathon service ports, rejected labels and counts.
//!
//! No clock, no I/O, no logging of its own (the publisher logs new rejections): the same input
//! gives the same, sorted output. The rules are dcos-net's L4LB rules (`dcos_l4lb_mesos_poller`,
//! `dcos_net_mesos_listener`, `dcos_l4lb_lashup_vip_listener`); each is stated where it is applied.
//! Bad labels become [`Rejection`]s; one bad label never affects another label or app.
//!
//! **Incremental.** The work is split by *owner*: a Marathon app (its definition and all its
//! tasks) or, for a task without an app, the task alone. Each snapshot keeps a private [`Index`]
//! of per-owner results; the next build diffs the new state against the state of `prev`, reuses
//! every owner whose tasks and app are the same (`Arc` pointer, else equal by value) and its
//! agents' addresses unchanged, recomputes the others, and reassembles only the VIPs and
//! services those owners touch (the others are shared `Arc`s). Named-VIP allocation runs over
//! every live name, exactly as [`vip::allocate`] documents, whenever a name, its age or its need
//! for IPv6 changed (or `prev.named` is not what the index allocated); otherwise its result is
//! known to be the previous one (a fixed point) and is reused. The output equals a build from
//! scratch with the same `prev.named` (a property test checks it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use ipnet::{Ipv4Net, Ipv6Net};

use super::labels::{self, VipHost, VipLabel};
use super::snapshot::{
    Backend, BackendId, Counts, NamedVip, NamedVipKey, Protocol, RejectReason, Rejection, Service,
    SharedStr, Snapshot, Vip, VipKey,
};
use super::state::{App, ClusterState, PortProtocol, Task, TaskState};
use super::vip;
use crate::config::Config;

impl Snapshot {
    /// Builds the snapshot that follows `prev` from `state`. Pure and deterministic; `version` is
    /// `prev.version + 1`.
    ///
    /// **VIPs** (dcos-net rules):
    /// - Port labels (`TaskPort::labels`) whose key starts with `VIP` or `vip` carry `HOST:PORT`
    ///   ([`labels::parse_vip`]); the protocol is the port's. Legacy task labels `vip_portN` carry
    ///   `tcp://HOST:PORT` / `udp://HOST:PORT` for the task's `N`th host port.
    /// - Backends are tasks in `TASK_RUNNING` (weight 1, or 0 when unhealthy: `healthy == false`,
    ///   or no verdict yet while the task has a health check) and `TASK_KILLING` (weight 0: drains,
    ///   still listed). Other states are not backends.
    /// - Backend address: a port with a host port → agent IP + host port; otherwise one backend
    ///   per task IP (`netinfo_ips`, else the agent IP) + the port's number.
    /// - An IP VIP gets only backends of its own address family. A named VIP gets an IPv4 VIP
    ///   with its IPv4 backends and, when it has IPv6 backends, an IPv6 VIP with those. Addresses
    ///   come from [`vip::allocate`]; the name is `name.framework.l4lb.thisdcos.directory`.
    /// - A VIP without any backend is not published (dcos-net drops it too).
    /// - Backends are unique per VIP by (ip, port) (a duplicate keeps the higher weight, then the
    ///   first task in id order) and sorted. **If every backend of a VIP or service has weight 0,
    ///   all get weight 1**: a set of draining backends still serves rather than black-holing new
    ///   connections.
    ///
    /// **Services** (Marathon-LB): one per (app, port index, protocol) with a non-zero service
    /// port (`HAPROXY_{n}_PORT`, else the port's `servicePort`); backends are agent IP + the task's
    /// `n`th host port, or, for a task without host ports (IP-per-task), its first IP + the
    /// container port. Weights as for VIPs. A service with no backends is still listed.
    ///
    /// Work for owners (apps, app-less tasks) that did not change since `prev` is reused from
    /// `prev`'s private index; see the module docs.
    pub fn build(state: &Arc<ClusterState>, config: &Config, prev: &Snapshot) -> Snapshot {
        let ctx = Ctx::new(state);
        let base = prev.index.as_deref().filter(|ix| {
            Arc::ptr_eq(&ix.state, &prev.state) && ix.state.frameworks == state.frameworks
        });
        let (mut ix, updates) = match base {
            Some(old) => (old.clone_for(state), diff_owners(old, state)),
            None => (Index::empty(state), all_owners(state)),
        };

        // Recompute changed owners and note which VIPs and named VIPs they touch.
        // Collected unsorted (a from-scratch build touches every key), sorted and deduplicated
        // once before use.
        let mut dirty_vips: Vec<VipKey> = Vec::new();
        let mut dirty_named: Vec<NamedVipKey> = Vec::new();
        let mut old_services: Vec<Arc<Service>> = Vec::new();
        let mut new_services: Vec<Arc<Service>> = Vec::new();
        // The rejections change only when an owner with rejections or a name short of
        // addresses changes.
        let mut rejections_changed = base.is_none();
        // From scratch, the owner maps are filled after the loop, each key once.
        let mut fresh_ip: Vec<(VipKey, Arc<str>, Arc<OwnerOut>)> = Vec::new();
        let mut fresh_named: Vec<(NamedVipKey, Arc<str>, Arc<OwnerOut>)> = Vec::new();
        for up in updates {
            // From scratch, no owner has an old result.
            let old_out = base.and(ix.owners.get(&up.key).cloned());
            let out = Arc::new(compute_owner(&ctx, &up.key, up.app, &up.tasks));
            if up.tasks.is_empty() && up.app.is_none() {
                ix.owners.remove(&up.key);
            } else {
                ix.owners.insert(up.key.clone(), out.clone());
            }
            new_services.extend(out.services.iter().cloned());
            rejections_changed |= !out.rejected.is_empty();
            if let Some(old) = &old_out {
                old_services.extend(old.services.iter().cloned());
                rejections_changed |= !old.rejected.is_empty();
                for (k, _) in &old.ip_vips {
                    dirty_vips.push(*k);
                    if let Some(set) = ix.ip_owners.get_mut(k) {
                        set.remove(&up.key);
                        if set.is_empty() {
                            ix.ip_owners.remove(k);
                        }
                    }
                }
                for (k, _) in &old.named {
                    dirty_named.push(k.clone());
                    if let Some(set) = ix.named_owners.get_mut(k) {
                        set.remove(&up.key);
                        if set.is_empty() {
                            ix.named_owners.remove(k);
                        }
                    }
                }
            }
            if base.is_none() {
                let with = || (up.key.clone(), out.clone());
                fresh_ip.extend(out.ip_vips.iter().map(|(k, _)| {
                    let (o, r) = with();
                    (*k, o, r)
                }));
                fresh_named.extend(out.named.iter().map(|(k, _)| {
                    let (o, r) = with();
                    (k.clone(), o, r)
                }));
                continue;
            }
            for (k, _) in &out.ip_vips {
                dirty_vips.push(*k);
                ix.ip_owners
                    .entry(*k)
                    .or_default()
                    .insert(up.key.clone(), out.clone());
            }
            for (k, _) in &out.named {
                dirty_named.push(k.clone());
                ix.named_owners
                    .entry(k.clone())
                    .or_default()
                    .insert(up.key.clone(), out.clone());
            }
        }
        if base.is_none() {
            ix.ip_owners = owners_by_key(fresh_ip);
            ix.named_owners = owners_by_key(fresh_named);
            dirty_vips.extend(ix.ip_owners.keys().copied());
            dirty_named.extend(ix.named_owners.keys().cloned());
        }

        // Named VIPs: aggregate the changed ones, then allocate every live name, unless no
        // request changed and `prev.named` is what this index allocated: `vip::allocate` would
        // then give every name the address it has (a fixed point: live names keep their
        // addresses, and names that found the range full find it full again).
        dirty_named.sort_unstable();
        dirty_named.dedup();
        let mut requests_changed = base.is_none();
        for k in &dirty_named {
            let old = ix.named.remove(k);
            if let Some(old) = &old {
                forget_named(&mut ix.vip_named, k, &old.vip_keys, &mut dirty_vips);
            }
            let agg = aggregate_named(&ix, k, old.as_deref());
            rejections_changed |= old.as_ref().is_some_and(|o| o.short);
            requests_changed |= match (&old, &agg) {
                (Some(o), Some(n)) => (&o.base, o.age_ms, o.ipv6) != (&n.base, n.age_ms, n.ipv6),
                (None, None) => false,
                _ => true,
            };
            if let Some(agg) = agg {
                ix.named.insert(k.clone(), agg);
            }
        }
        let ranges = (config.l4.vip_range, config.l4.vip_range6);
        let reuse_allocation =
            !requests_changed && ix.ranges == ranges && prev.named == ix.allocated;
        let mut changed: Vec<(NamedVipKey, Arc<NamedEntry>)> = Vec::new();
        if reuse_allocation {
            for key in &dirty_named {
                if let Some(e) = ix.named.get(key) {
                    rejections_changed |= e.short;
                    changed.push((key.clone(), Arc::new(NamedEntry::clone(e))));
                }
            }
        } else {
            rejections_changed = true;
            let names: Vec<(&NamedVipKey, &Arc<NamedEntry>)> = ix.named.iter().collect();
            let requests: Vec<vip::Request<'_>> = names
                .iter()
                .map(|(key, e)| vip::Request {
                    key,
                    base: &e.base,
                    age_ms: e.age_ms,
                    ipv6: e.ipv6,
                })
                .collect();
            let allocations = vip::allocate(&requests, &prev.named, ranges.0, ranges.1);
            drop(requests);
            let mut named: OrdMap<NamedVipKey, NamedVip> = OrdMap::new();
            for ((key, e), allocation) in names.into_iter().zip(allocations) {
                let (alloc, short) = match allocation {
                    vip::Allocation::Ok(nv) => (Some(nv), false),
                    vip::Allocation::NoIpv6(nv) => (Some(nv), true),
                    vip::Allocation::Exhausted => (None, true),
                };
                if let Some(nv) = &alloc {
                    named.insert(key.clone(), nv.clone());
                }
                if e.alloc != alloc || e.short != short || !e.placed {
                    changed.push((
                        key.clone(),
                        Arc::new(NamedEntry {
                            alloc,
                            short,
                            placed: false,
                            ..NamedEntry::clone(e)
                        }),
                    ));
                }
            }
            ix.allocated = named;
            ix.ranges = ranges;
        }
        for (key, mut entry) in changed {
            if let Some(old) = ix.named.get(&key) {
                let old_keys = old.vip_keys.clone();
                forget_named(&mut ix.vip_named, &key, &old_keys, &mut dirty_vips);
            }
            let vip_keys = named_vip_keys(&ix, &key, &entry);
            for k in &vip_keys {
                dirty_vips.push(*k);
                ix.vip_named.entry(*k).or_default().insert(key.clone());
            }
            let e = Arc::make_mut(&mut entry);
            e.vip_keys = vip_keys;
            e.placed = true;
            ix.named.insert(key, entry);
        }

        // VIPs: keep every untouched one, rebuild the touched ones (both lists are sorted).
        dirty_vips.sort_unstable();
        dirty_vips.dedup();
        let mut vips: Vec<Arc<Vip>> = Vec::with_capacity(ix.vips.len() + dirty_vips.len());
        let mut at = 0;
        for k in &dirty_vips {
            let rest = ix.vips.get(at..).unwrap_or_default();
            let n = rest.partition_point(|v| v.key < *k);
            vips.extend_from_slice(rest.get(..n).unwrap_or_default());
            at += n;
            if ix.vips.get(at).is_some_and(|v| v.key == *k) {
                at += 1;
            }
            if let Some(v) = assemble_vip(&ix, *k) {
                vips.push(Arc::new(v));
            }
        }
        vips.extend_from_slice(ix.vips.get(at..).unwrap_or_default());
        ix.vips = vips.clone();

        // Services: the changed owners' old ones out, their new ones in, in sort order.
        let skey = service_key;
        old_services.sort_unstable_by(|a, b| skey(a).cmp(&skey(b)));
        new_services.sort_unstable_by(|a, b| skey(a).cmp(&skey(b)));
        let mut services: Vec<Arc<Service>> =
            Vec::with_capacity(ix.services.len() + new_services.len());
        let mut gone = old_services.iter().peekable();
        let mut added = new_services.into_iter().peekable();
        for s in &ix.services {
            while let Some(n) = added.next_if(|n| skey(n) < skey(s)) {
                services.push(n);
            }
            while gone.next_if(|g| skey(g) < skey(s)).is_some() {}
            if gone.next_if(|g| skey(g) == skey(s)).is_some() {
                continue;
            }
            services.push(s.clone());
        }
        services.extend(added);
        ix.services = services.clone();

        if rejections_changed {
            let mut rejected: Vec<Rejection> = ix
                .owners
                .values()
                .flat_map(|o| o.rejected.iter().cloned())
                .chain(
                    ix.named
                        .values()
                        .filter(|e| e.short)
                        .map(|e| e.first.clone()),
                )
                .collect();
            rejected.sort_unstable();
            rejected.dedup();
            ix.rejected = rejected;
        }
        let rejected = ix.rejected.clone();

        let backends = vips.iter().map(|v| v.backends.len()).sum::<usize>()
            + services.iter().map(|s| s.backends.len()).sum::<usize>();
        let counts = Counts {
            apps: state.apps.len(),
            tasks: state.tasks.len(),
            services: services.len(),
            backends,
            vips: vips.len(),
        };
        Snapshot {
            version: prev.version + 1,
            state: state.clone(),
            vips,
            named: ix.allocated.clone(),
            services,
            rejected,
            counts,
            index: Some(Arc::new(ix)),
        }
    }
}

/// The order of `Snapshot::services`.
fn service_key(s: &Service) -> (u16, Protocol, &str, usize) {
    (s.service_port, s.protocol, s.app_id.as_str(), s.port_index)
}

/// The weight a task's backends get, or `None` when the task is not a backend
/// (`dcos_l4lb_mesos_poller:is_running/1` and `get_weight/1`, with dcos-net's listener treating
/// a task that has a health check but no verdict yet as unhealthy).
pub fn task_weight(task: &Task) -> Option<u32> {
    match task.state {
        TaskState::Running => {
            let unhealthy =
                task.healthy == Some(false) || (task.healthy.is_none() && task.has_health_check);
            Some(u32::from(!unhealthy))
        }
        TaskState::Killing => Some(0),
        _ => None,
    }
}

/// The stable identity of a backend: FNV-1a (64 bit) over the protocol byte (tcp 6, udp 17),
/// the address octets (4 or 16) and the big-endian port.
pub fn backend_id(protocol: Protocol, ip: IpAddr, port: u16) -> BackendId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(&[match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }]);
    match ip {
        IpAddr::V4(v4) => eat(&v4.octets()),
        IpAddr::V6(v6) => eat(&v6.octets()),
    }
    eat(&port.to_be_bytes());
    BackendId(h)
}

// === impl Index ===
//
// Owner keys are strings: `a` + app id for a Marathon app, `t` + task id for a task without an
// app (so the two never collide, and look-ups borrow a `&str`).

const APP: &str = "a";
const TASK: &str = "t";

/// The owner key of a task, written into `buf`.
fn owner_key_into<'b>(buf: &'b mut String, task: &Task) -> &'b str {
    buf.clear();
    match &task.app_id {
        Some(app) => {
            buf.push_str(APP);
            buf.push_str(app);
        }
        None => {
            buf.push_str(TASK);
            buf.push_str(&task.id);
        }
    }
    buf
}

/// What a build keeps for the next one (private to the model; never serialised).
pub(crate) struct Index {
    /// The state this index was built from (`prev.state`, checked by pointer before reuse).
    state: Arc<ClusterState>,
    owners: OrdMap<Arc<str>, Arc<OwnerOut>>,
    /// IP VIP → the owners that file backends under it.
    ip_owners: OrdMap<VipKey, OrdMap<Arc<str>, Arc<OwnerOut>>>,
    /// Named VIP → the owners that file backends under it.
    named_owners: OrdMap<NamedVipKey, OrdMap<Arc<str>, Arc<OwnerOut>>>,
    /// Live named VIPs, aggregated over their owners, with the allocation they got.
    named: OrdMap<NamedVipKey, Arc<NamedEntry>>,
    /// VIP key → the named VIPs whose allocation files backends under it (usually one).
    vip_named: OrdMap<VipKey, OrdSet<NamedVipKey>>,
    /// The allocation `named` came from, and its ranges.
    allocated: OrdMap<NamedVipKey, NamedVip>,
    ranges: (Ipv4Net, Ipv6Net),
    /// The build's output, shared with the snapshot.
    rejected: Vec<Rejection>,
    vips: Vec<Arc<Vip>>,
    services: Vec<Arc<Service>>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("owners", &self.owners.len())
            .field("named", &self.named.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    fn empty(state: &Arc<ClusterState>) -> Index {
        Index {
            state: state.clone(),
            owners: OrdMap::new(),
            ip_owners: OrdMap::new(),
            named_owners: OrdMap::new(),
            named: OrdMap::new(),
            vip_named: OrdMap::new(),
            allocated: OrdMap::new(),
            ranges: Default::default(),
            rejected: Vec::new(),
            vips: Vec::new(),
            services: Vec::new(),
        }
    }

    /// A copy to update for the next build (maps of `Arc`s: pointers are copied, not results).
    fn clone_for(&self, state: &Arc<ClusterState>) -> Index {
        Index {
            state: state.clone(),
            owners: self.owners.clone(),
            ip_owners: self.ip_owners.clone(),
            named_owners: self.named_owners.clone(),
            named: self.named.clone(),
            vip_named: self.vip_named.clone(),
            allocated: self.allocated.clone(),
            ranges: self.ranges,
            rejected: self.rejected.clone(),
            vips: self.vips.clone(),
            services: self.services.clone(),
        }
    }
}

/// What one owner contributes. Backend lists are sorted by (ip, port), one per (ip, port), with
/// the weights the tasks give (the all-draining lift is applied per VIP, over every owner).
#[derive(Default)]
struct OwnerOut {
    /// The owner's app id and task ids, back to back (backends hold slices of it).
    ids: Option<Arc<str>>,
    /// Every task of the owner (backend or not), in id order, as ranges of `ids`.
    tasks: Vec<(u32, u32)>,
    services: Vec<Arc<Service>>,
    rejected: Vec<Rejection>,
    /// Sorted by key.
    ip_vips: Vec<(VipKey, Vec<Backend>)>,
    /// Sorted by key.
    named: Vec<(NamedVipKey, NamedPart)>,
}

impl OwnerOut {
    /// The ids of the owner's tasks, in id order.
    fn task_ids(&self) -> impl Iterator<Item = &str> {
        let buf = self.ids.as_deref().unwrap_or_default();
        self.tasks
            .iter()
            .map(move |&(a, b)| buf.get(a as usize..b as usize).unwrap_or_default())
    }
}

/// One owner's part of a named VIP.
struct NamedPart {
    base: String,
    age_ms: Option<i64>,
    /// By (protocol, VIP port), sorted.
    ports: Vec<((Protocol, u16), Vec<Backend>)>,
    /// The `RangeExhausted` rejection of the first label (in task id order) that gave a backend.
    first: Rejection,
}

/// A live named VIP over all its owners.
#[derive(Clone)]
struct NamedEntry {
    base: String,
    age_ms: Option<i64>,
    ipv6: bool,
    first: Rejection,
    /// What the allocation gave (`None`: range exhausted).
    alloc: Option<NamedVip>,
    /// The range was full for one of its families: `first` is reported (`RangeExhausted`).
    short: bool,
    /// `vip_keys` are computed for `alloc`.
    placed: bool,
    /// The VIP keys it files backends under.
    vip_keys: Vec<VipKey>,
}

/// An owner whose inputs changed, with its inputs now.
struct Update<'s> {
    key: Arc<str>,
    app: Option<&'s App>,
    /// In id order.
    tasks: Vec<&'s Task>,
}

/// Every owner of `state`, from scratch.
fn all_owners(state: &ClusterState) -> Vec<Update<'_>> {
    // Runs of consecutive tasks (in id order) with one owner; Marathon task ids start with the
    // app id, so an app's tasks are usually one run.
    // Keys as (prefix, id), borrowed from the state: ordered as the strings `prefix + id`.
    fn key(task: &Task) -> (&'static str, &str) {
        match &task.app_id {
            Some(app) => (APP, app),
            None => (TASK, &task.id),
        }
    }
    let mut runs: Vec<((&str, &str), Vec<&Task>)> = Vec::with_capacity(state.apps.len() + 16);
    for task in state.tasks.values() {
        let k = key(task);
        match runs.last_mut() {
            Some((last, tasks)) if *last == k => tasks.push(task),
            _ => runs.push((k, vec![task])),
        }
    }
    runs.extend(state.apps.keys().map(|id| ((APP, id.as_str()), Vec::new())));
    // Stable: an owner's runs stay in id order, so their concatenation is too.
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut apps = state.apps.iter().peekable();
    let mut out: Vec<Update<'_>> = Vec::with_capacity(runs.len());
    let mut last_key: Option<(&str, &str)> = None;
    for (k, tasks) in runs {
        if last_key == Some(k)
            && let Some(last) = out.last_mut()
        {
            last.tasks.extend(tasks);
            continue;
        }
        last_key = Some(k);
        let (prefix, id) = k;
        let app = (prefix == APP)
            .then(|| {
                while apps.next_if(|(a, _)| a.as_str() < id).is_some() {}
                apps.next_if(|(a, _)| a.as_str() == id)
                    .map(|(_, app)| &**app)
            })
            .flatten();
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        out.push(Update {
            key: Arc::from(key),
            app,
            tasks,
        });
    }
    out
}

/// The owners whose inputs differ between `old.state` and `state`: tasks or apps that differ
/// (`imbl`'s diff skips the tree nodes both states share and compares the rest by value, `Arc`
/// pointers first), and tasks on agents whose address changed.
fn diff_owners<'s>(old: &'s Index, state: &'s ClusterState) -> Vec<Update<'s>> {
    use imbl::ordmap::DiffItem;
    let prev = &*old.state;
    // Owner key → (task id, in the owner now), in id order.
    let mut pending: BTreeMap<String, Vec<(&'s str, bool)>> = BTreeMap::new();
    let mut buf = String::new();
    let mut touch = |task: &Task, id: &'s str, present: bool| {
        let key = owner_key_into(&mut buf, task);
        match pending.get_mut(key) {
            Some(p) => p.push((id, present)),
            None => {
                pending.insert(key.to_string(), vec![(id, present)]);
            }
        }
    };
    for item in prev.tasks.diff(&state.tasks) {
        match item {
            DiffItem::Add(k, t) => touch(t, k, true),
            DiffItem::Remove(k, t) => touch(t, k, false),
            DiffItem::Update {
                old: (k, a),
                new: (_, b),
            } => {
                if a.app_id != b.app_id {
                    touch(a, k, false);
                }
                touch(b, k, true);
            }
        }
    }
    // Agents whose address changed: every owner with a task there is recomputed.
    if prev.agents != state.agents {
        let moved: HashSet<&str> = prev
            .agents
            .iter()
            .filter(|(id, a)| state.agents.get(*id).map(|b| b.ip) != Some(a.ip))
            .chain(
                state
                    .agents
                    .iter()
                    .filter(|(id, a)| prev.agents.get(*id).map(|b| b.ip) != Some(a.ip)),
            )
            .map(|(id, _)| id.as_str())
            .collect();
        if !moved.is_empty() {
            for task in state.tasks.values() {
                if moved.contains(task.agent_id.as_str()) {
                    let key = owner_key_into(&mut buf, task);
                    if !pending.contains_key(key) {
                        pending.insert(key.to_string(), Vec::new());
                    }
                }
            }
        }
    }
    for item in prev.apps.diff(&state.apps) {
        let id = match item {
            DiffItem::Add(k, _) | DiffItem::Remove(k, _) => k,
            DiffItem::Update { new: (k, _), .. } => k,
        };
        pending.entry(format!("{APP}{id}")).or_default();
    }

    pending
        .into_iter()
        .map(|(key, changes)| {
            let (key, ids) = match old.owners.get_key_value(key.as_str()) {
                Some((k, out)) => (k.clone(), merge_ids(out.task_ids(), &changes)),
                None => (
                    Arc::from(key),
                    changes
                        .iter()
                        .filter(|(_, present)| *present)
                        .map(|(id, _)| *id)
                        .collect(),
                ),
            };
            let tasks = ids
                .into_iter()
                .filter_map(|id| state.tasks.get(id).map(|t| &**t))
                .collect();
            let app = key
                .strip_prefix(APP)
                .and_then(|id| state.apps.get(id))
                .map(|a| &**a);
            Update { key, app, tasks }
        })
        .collect()
}

/// The ids `old` (in id order) with `changes` (in id order) applied.
fn merge_ids<'a>(old: impl Iterator<Item = &'a str>, changes: &[(&'a str, bool)]) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(changes.len() + 8);
    let mut o = old.peekable();
    for &(id, present) in changes {
        while let Some(t) = o.next_if(|t| *t < id) {
            out.push(t);
        }
        o.next_if(|t| *t == id);
        if present {
            out.push(id);
        }
    }
    out.extend(o);
    out
}

/// A named VIP over all its owners, or `None` when no owner files under it any more.
fn aggregate_named(
    ix: &Index,
    key: &NamedVipKey,
    old: Option<&NamedEntry>,
) -> Option<Arc<NamedEntry>> {
    let owners = ix.named_owners.get(key)?;
    let mut entry: Option<NamedEntry> = None;
    for part in owners.values().filter_map(|o| named_part(o, key)) {
        let ipv6 = part
            .ports
            .iter()
            .any(|(_, bs)| bs.iter().any(|b| b.ip.is_ipv6()));
        match &mut entry {
            None => {
                entry = Some(NamedEntry {
                    base: part.base.clone(),
                    age_ms: part.age_ms,
                    ipv6,
                    first: part.first.clone(),
                    alloc: old.and_then(|o| o.alloc.clone()),
                    short: old.is_some_and(|o| o.short),
                    placed: false,
                    vip_keys: Vec::new(),
                })
            }
            Some(e) => {
                e.age_ms = min_age(e.age_ms, part.age_ms);
                e.ipv6 |= ipv6;
                if part.first.task_id < e.first.task_id {
                    e.first = part.first.clone();
                }
            }
        }
    }
    entry.map(Arc::new)
}

fn named_part<'o>(out: &'o OwnerOut, key: &NamedVipKey) -> Option<&'o NamedPart> {
    out.named
        .binary_search_by(|(k, _)| k.cmp(key))
        .ok()
        .and_then(|i| out.named.get(i))
        .map(|(_, p)| p)
}

fn min_age(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// From scratch: a map of owners by VIP or named-VIP key, from (key, owner, result) triples.
fn owners_by_key<K: Ord + Clone>(
    mut triples: Vec<(K, Arc<str>, Arc<OwnerOut>)>,
) -> OrdMap<K, OrdMap<Arc<str>, Arc<OwnerOut>>> {
    triples.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut map = OrdMap::new();
    let mut it = triples.into_iter().peekable();
    while let Some((k, owner, out)) = it.next() {
        let mut owners = OrdMap::unit(owner, out);
        while let Some((_, o, r)) = it.next_if(|t| t.0 == k) {
            owners.insert(o, r);
        }
        map.insert(k, owners);
    }
    map
}

/// Removes a named VIP from the VIP keys it filed under, marking them dirty.
fn forget_named(
    vip_named: &mut OrdMap<VipKey, OrdSet<NamedVipKey>>,
    key: &NamedVipKey,
    vip_keys: &[VipKey],
    dirty: &mut Vec<VipKey>,
) {
    for k in vip_keys {
        dirty.push(*k);
        if let Some(set) = vip_named.get_mut(k) {
            set.remove(key);
            if set.is_empty() {
                vip_named.remove(k);
            }
        }
    }
}

/// The VIP keys a named VIP files backends under with its allocation: (protocol, IPv4, port)
/// for ports with IPv4 backends, (protocol, IPv6, port) for ports with IPv6 backends when it has
/// an IPv6 address.
fn named_vip_keys(ix: &Index, key: &NamedVipKey, entry: &NamedEntry) -> Vec<VipKey> {
    let Some(nv) = &entry.alloc else {
        return Vec::new();
    };
    let mut keys = BTreeSet::new();
    let owners = ix
        .named_owners
        .get(key)
        .into_iter()
        .flat_map(|m| m.values());
    for part in owners.filter_map(|o| named_part(o, key)) {
        for ((protocol, port), bs) in &part.ports {
            if bs.iter().any(|b| b.ip.is_ipv4()) {
                keys.insert(VipKey {
                    protocol: *protocol,
                    ip: IpAddr::V4(nv.ipv4),
                    port: *port,
                });
            }
            if let Some(ip6) = nv.ipv6
                && bs.iter().any(|b| b.ip.is_ipv6())
            {
                keys.insert(VipKey {
                    protocol: *protocol,
                    ip: IpAddr::V6(ip6),
                    port: *port,
                });
            }
        }
    }
    keys.into_iter().collect()
}

/// One VIP from every owner and named VIP that files backends under `key`; `None` without
/// backends.
fn assemble_vip(ix: &Index, key: VipKey) -> Option<Vip> {
    let mut lists: Vec<&[Backend]> = Vec::new();
    for owner in ix.ip_owners.get(&key).into_iter().flat_map(|m| m.values()) {
        if let Ok(i) = owner.ip_vips.binary_search_by(|(k, _)| k.cmp(&key))
            && let Some((_, bs)) = owner.ip_vips.get(i)
        {
            lists.push(bs);
        }
    }
    let mut filtered: Vec<Backend> = Vec::new();
    let mut label: Option<(&NamedVipKey, &str)> = None;
    for nk in ix.vip_named.get(&key).into_iter().flatten() {
        let Some(nv) = ix.named.get(nk).and_then(|e| e.alloc.as_ref()) else {
            continue;
        };
        label.get_or_insert((nk, nv.fqdn.as_str()));
        for part in ix
            .named_owners
            .get(nk)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|o| named_part(o, nk))
        {
            if let Ok(i) = part
                .ports
                .binary_search_by(|(pk, _)| pk.cmp(&(key.protocol, key.port)))
                && let Some((_, bs)) = part.ports.get(i)
            {
                filtered.extend(
                    bs.iter()
                        .filter(|b| b.ip.is_ipv4() == key.ip.is_ipv4())
                        .cloned(),
                );
            }
        }
    }
    let mut backends: Vec<Backend> = if lists.len() == 1 && filtered.is_empty() {
        lists.first().map(|l| l.to_vec()).unwrap_or_default()
    } else {
        for l in lists {
            filtered.extend_from_slice(l);
        }
        filtered.sort_unstable_by(|a, b| {
            (a.ip, a.port, Reverse(a.weight))
                .cmp(&(b.ip, b.port, Reverse(b.weight)))
                .then_with(|| a.task_id.cmp(&b.task_id))
        });
        filtered.dedup_by(|later, kept| later.ip == kept.ip && later.port == kept.port);
        filtered
    };
    if backends.is_empty() {
        return None;
    }
    lift_draining(&mut backends);
    Some(Vip {
        key,
        name: label.map(|(_, fqdn)| fqdn.to_string()),
        label: label.map(|(k, _)| k.clone()),
        backends,
    })
}

/// If every backend has weight 0, all get weight 1.
fn lift_draining(backends: &mut [Backend]) {
    if backends.iter().all(|b| b.weight == 0) {
        for b in backends {
            b.weight = 1;
        }
    }
}

// === impl OwnerBuilder ===
//
// One pass over an owner's tasks does everything that needs the task's data: candidate backends
// are made while the task is in cache and filed under their VIP, named VIP or service port;
// finishing only sorts, deduplicates and turns them into `Backend`s. The owner's app id and task
// ids are copied once into one buffer that its backends share (`SharedStr`).

/// What every owner's computation reads from the state.
struct Ctx<'s> {
    agent_ips: HashMap<&'s str, IpAddr>,
    frameworks: HashMap<&'s str, &'s str>,
}

impl<'s> Ctx<'s> {
    fn new(state: &'s ClusterState) -> Ctx<'s> {
        Ctx {
            agent_ips: state
                .agents
                .iter()
                .filter_map(|(id, a)| Some((id.as_str(), a.ip?)))
                .collect(),
            frameworks: state
                .frameworks
                .iter()
                .map(|(id, f)| (id.as_str(), f.name.as_str()))
                .collect(),
        }
    }
}

/// A candidate backend: a `Backend` with its id strings as ranges of the owner's id buffer.
/// `task` is the task's position in the owner's id order (the tie-breaker between duplicates).
#[derive(Debug, Clone, Copy)]
struct Cand {
    ip: IpAddr,
    port: u16,
    weight: u32,
    agent_ip: Option<IpAddr>,
    task: u32,
    ids: TaskIds,
}

/// Where a task's id and app id are in the id buffer (byte ranges).
#[derive(Debug, Clone, Copy)]
struct TaskIds {
    id: (u32, u32),
    app: Option<(u32, u32)>,
}

/// The id buffer, frozen after the task pass.
struct Ids {
    buf: Arc<str>,
}

impl Ids {
    fn slice(&self, (start, end): (u32, u32)) -> SharedStr {
        SharedStr::new(self.buf.clone(), start as usize..end as usize)
    }
}

/// Everything gathered for one named VIP (name, framework) within one owner.
struct NamedAcc<'s> {
    /// [`vip::vip_base_name`]; `None` when the name has no DNS-safe characters.
    base: Option<String>,
    /// Oldest age among the tasks that gave backends.
    age_ms: Option<i64>,
    /// Backends by (protocol, VIP port); usually one entry.
    ports: Vec<((Protocol, u16), Vec<Cand>)>,
    /// The first label that gave a backend (tasks are visited in id order).
    first: Option<(&'s Task, &'s str, &'s str)>,
}

/// One service port of an app, with its candidate backends.
struct ServicePort {
    index: usize,
    service_port: u16,
    tcp: bool,
    udp: bool,
    container_port: Option<u16>,
    cands: Vec<Cand>,
}

/// What every backend of one task shares.
struct TaskCtx {
    weight: u32,
    agent_ip: Option<IpAddr>,
    task: u32,
    ids: TaskIds,
}

impl TaskCtx {
    fn cand(&self, ip: IpAddr, port: u16) -> Cand {
        Cand {
            ip,
            port,
            weight: self.weight,
            agent_ip: self.agent_ip,
            task: self.task,
            ids: self.ids,
        }
    }
}

/// Appends `s` to the id buffer and returns its range.
/// Past 4 GiB of ids the ranges saturate and read as `""` (never in practice).
fn push_id(ids: &mut String, s: &str) -> (u32, u32) {
    let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let start = at(ids.len());
    ids.push_str(s);
    (start, at(ids.len()))
}

/// Computes one owner's contribution.
fn compute_owner(ctx: &Ctx<'_>, key: &str, app: Option<&App>, tasks: &[&Task]) -> OwnerOut {
    let mut b = OwnerBuilder {
        ctx,
        ids: String::with_capacity(16 + tasks.len() * 40),
        app_range: None,
        app_age: None,
        ports: Vec::new(),
        ip_vips: BTreeMap::new(),
        named: BTreeMap::new(),
        rejected: Vec::new(),
        scratch: Vec::new(),
        task_ranges: Vec::with_capacity(tasks.len()),
        tasks_seen: 0,
        last_framework: None,
    };
    if let Some(app) = app {
        b.app(app);
    } else if let Some(id) = key.strip_prefix(APP) {
        b.app_range = Some(push_id(&mut b.ids, id));
    }
    for task in tasks {
        b.task(task);
    }
    b.finish(app)
}

struct OwnerBuilder<'s> {
    ctx: &'s Ctx<'s>,
    /// The app id and task ids, back to back (`TaskIds` ranges point into it).
    ids: String,
    app_range: Option<(u32, u32)>,
    app_age: Option<i64>,
    ports: Vec<ServicePort>,
    ip_vips: BTreeMap<VipKey, Vec<Cand>>,
    named: BTreeMap<(&'s str, &'s str), NamedAcc<'s>>,
    rejected: Vec<Rejection>,
    /// Reused buffer for the addresses of one label.
    scratch: Vec<(IpAddr, u16)>,
    /// Every task's id range in `ids`.
    task_ranges: Vec<(u32, u32)>,
    /// Backend tasks seen so far (the next task's position).
    tasks_seen: u32,
    /// The framework of the previous named-VIP label (id, name).
    last_framework: Option<(&'s str, &'s str)>,
}

impl<'s> OwnerBuilder<'s> {
    /// The service ports of an app: one per port index with a non-zero service port
    /// (`HAPROXY_{n}_PORT`, else the port's `servicePort`).
    fn app(&mut self, app: &App) {
        self.app_range = Some(push_id(&mut self.ids, &app.id));
        self.app_age = app.version_ms;
        let n = app.service_ports.len().max(app.ports.len());
        for index in 0..n {
            let port_def = app.ports.get(index);
            let declared = port_def
                .and_then(|p| p.service_port)
                .or_else(|| app.service_ports.get(index).copied());
            let service_port = match labels::haproxy_port(&app.labels, index) {
                Some((_, _, Ok(p))) => Some(p),
                Some((key, value, Err(reason))) => {
                    self.reject(Some(&app.id), "", key, value, reason);
                    declared
                }
                None => declared,
            };
            let Some(service_port) = service_port.filter(|&p| p != 0) else {
                continue;
            };
            // `tcp`, `udp`, `udp,tcp` (as `PortProtocol::parse_list`, without allocating); an
            // empty protocol is tcp.
            let (mut tcp, mut udp) = (false, false);
            match port_def.map(|p| p.protocol.trim()) {
                Some(list) if !list.is_empty() => {
                    for p in list.split(',').map(str::trim) {
                        tcp |= p.eq_ignore_ascii_case("tcp");
                        udp |= p.eq_ignore_ascii_case("udp");
                    }
                }
                _ => tcp = true,
            }
            if !tcp && !udp {
                continue;
            }
            self.ports.push(ServicePort {
                index,
                service_port,
                tcp,
                udp,
                container_port: port_def.and_then(|p| p.container_port),
                cands: Vec::with_capacity(usize::try_from(app.instances).unwrap_or(0).min(64)),
            });
        }
    }

    /// Framework name of a task, falling back to its framework ID (as `ClusterState` does).
    fn framework_name(&mut self, task: &'s Task) -> &'s str {
        let id = task.framework_id.as_str();
        if let Some((last, name)) = self.last_framework
            && last == id
        {
            return name;
        }
        let name = match self.ctx.frameworks.get(id) {
            Some(name) if !name.is_empty() => name,
            _ => id,
        };
        self.last_framework = Some((id, name));
        name
    }

    fn reject(
        &mut self,
        app_id: Option<&str>,
        task_id: &str,
        key: &str,
        value: &str,
        reason: RejectReason,
    ) {
        self.rejected.push(Rejection {
            app_id: app_id.map(str::to_string),
            task_id: task_id.to_string(),
            label: labels::label_text(key, value),
            reason,
        });
    }

    fn reject_task(&mut self, task: &Task, key: &str, value: &str, reason: RejectReason) {
        self.reject(task.app_id.as_deref(), &task.id, key, value, reason);
    }

    /// Files every backend of one task: VIP backends from its port labels and legacy task
    /// labels, and service-port candidates of its Marathon app.
    fn task(&mut self, task: &'s Task) {
        let id = push_id(&mut self.ids, &task.id);
        self.task_ranges.push(id);
        let Some(weight) = task_weight(task) else {
            return;
        };
        let index = self.tasks_seen;
        self.tasks_seen = self.tasks_seen.saturating_add(1);
        let ctx = TaskCtx {
            weight,
            agent_ip: self.ctx.agent_ips.get(task.agent_id.as_str()).copied(),
            task: index,
            ids: TaskIds {
                id,
                app: self.app_range,
            },
        };
        let age = self.app_age.or(task.started_ms);

        for sp in &mut self.ports {
            let addr = match task.host_ports.get(sp.index) {
                Some(&hp) => ctx.agent_ip.map(|ip| (ip, hp)),
                None if task.host_ports.is_empty() => {
                    task.netinfo_ips.first().copied().zip(sp.container_port)
                }
                None => None,
            };
            if let Some((ip, port)) = addr {
                sp.cands.push(ctx.cand(ip, port));
            }
        }

        for port in &task.ports {
            for (key, value) in &port.labels {
                if !labels::is_vip_key(key) {
                    continue;
                }
                let label = match labels::parse_vip(value) {
                    Ok(label) => label,
                    Err(reason) => {
                        self.reject_task(task, key, value, reason);
                        continue;
                    }
                };
                let protocol = match &port.protocol {
                    Some(PortProtocol::Tcp) => Protocol::Tcp,
                    Some(PortProtocol::Udp) => Protocol::Udp,
                    Some(PortProtocol::Other(_)) | None => {
                        self.reject_task(task, key, value, RejectReason::UnknownProtocol);
                        continue;
                    }
                };
                // dcos_l4lb_mesos_poller:backends/3.
                let mut addrs = std::mem::take(&mut self.scratch);
                addrs.clear();
                if let Some(host_port) = port.host_port {
                    addrs.extend(ctx.agent_ip.map(|ip| (ip, host_port)));
                } else if let Some(number) = port.port {
                    if task.netinfo_ips.is_empty() {
                        addrs.extend(ctx.agent_ip.map(|ip| (ip, number)));
                    } else {
                        addrs.extend(task.netinfo_ips.iter().map(|&ip| (ip, number)));
                    }
                }
                self.add(task, &ctx, age, protocol, label, &addrs, key, value);
                self.scratch = addrs;
            }
        }

        for (key, value) in &task.labels {
            let Some(parsed) = labels::parse_legacy_vip(key, value) else {
                continue;
            };
            let legacy = match parsed {
                Ok(legacy) => legacy,
                Err(reason) => {
                    self.reject_task(task, key, value, reason);
                    continue;
                }
            };
            let Some(&host_port) = task.host_ports.get(legacy.index) else {
                self.reject_task(task, key, value, RejectReason::BadPortIndex);
                continue;
            };
            let addrs: &[(IpAddr, u16)] = match ctx.agent_ip {
                Some(ip) => &[(ip, host_port)],
                None => &[],
            };
            self.add(
                task,
                &ctx,
                age,
                legacy.protocol,
                legacy.label,
                addrs,
                key,
                value,
            );
        }
    }

    /// Files the backends of one parsed label under its IP VIP or named VIP.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        task: &'s Task,
        ctx: &TaskCtx,
        age: Option<i64>,
        protocol: Protocol,
        label: VipLabel<'s>,
        addrs: &[(IpAddr, u16)],
        key: &'s str,
        value: &'s str,
    ) {
        match label.host {
            VipHost::Ip(vip_ip) => {
                // validate_backend_ip/3 with IPv6 enabled: same family only.
                let same_family = |a: &&(IpAddr, u16)| a.0.is_ipv4() == vip_ip.is_ipv4();
                if !addrs.iter().any(|a| same_family(&a)) {
                    return;
                }
                let k = VipKey {
                    protocol,
                    ip: vip_ip,
                    port: label.port,
                };
                self.ip_vips.entry(k).or_default().extend(
                    addrs
                        .iter()
                        .filter(same_family)
                        .map(|&(ip, port)| ctx.cand(ip, port)),
                );
            }
            VipHost::Name(name) => {
                let framework = self.framework_name(task);
                let acc = self
                    .named
                    .entry((name, framework))
                    .or_insert_with(|| NamedAcc {
                        base: vip::vip_base_name(name, framework),
                        age_ms: None,
                        ports: Vec::new(),
                        first: None,
                    });
                if acc.base.is_none() {
                    self.reject_task(task, key, value, RejectReason::BadFormat);
                    return;
                }
                if addrs.is_empty() {
                    return;
                }
                acc.age_ms = min_age(acc.age_ms, age);
                acc.first.get_or_insert((task, key, value));
                let pk = (protocol, label.port);
                let slot = match acc.ports.iter().position(|(k, _)| *k == pk) {
                    Some(i) => i,
                    None => {
                        acc.ports.push((pk, Vec::new()));
                        acc.ports.len() - 1
                    }
                };
                if let Some((_, backends)) = acc.ports.get_mut(slot) {
                    backends.extend(addrs.iter().map(|&(ip, port)| ctx.cand(ip, port)));
                }
            }
        }
    }

    fn finish(mut self, app: Option<&App>) -> OwnerOut {
        let ids = Ids {
            buf: Arc::from(std::mem::take(&mut self.ids)),
        };
        let mut services = Vec::with_capacity(self.ports.len());
        if let Some(app) = app {
            for sp in std::mem::take(&mut self.ports) {
                let mut push = |protocol: Protocol, backends: Vec<Backend>| {
                    services.push(Arc::new(Service {
                        app_id: app.id.clone(),
                        port_index: sp.index,
                        service_port: sp.service_port,
                        protocol,
                        backends,
                    }));
                };
                let finish = |cands, protocol| {
                    let mut bs = finish_backends(cands, protocol, &ids);
                    lift_draining(&mut bs);
                    bs
                };
                match (sp.tcp, sp.udp) {
                    (true, true) => {
                        let tcp = finish(sp.cands, Protocol::Tcp);
                        let mut udp = tcp.clone();
                        for b in &mut udp {
                            b.id = backend_id(Protocol::Udp, b.ip, b.port);
                        }
                        push(Protocol::Tcp, tcp);
                        push(Protocol::Udp, udp);
                    }
                    (false, true) => push(Protocol::Udp, finish(sp.cands, Protocol::Udp)),
                    _ => push(Protocol::Tcp, finish(sp.cands, Protocol::Tcp)),
                }
            }
        }
        let ip_vips = std::mem::take(&mut self.ip_vips)
            .into_iter()
            .map(|(k, cands)| (k, finish_backends(cands, k.protocol, &ids)))
            .collect();
        let mut named = Vec::new();
        for ((name, framework), acc) in std::mem::take(&mut self.named) {
            let (Some(base), Some((task, k, v))) = (acc.base, acc.first) else {
                continue;
            };
            if acc.ports.is_empty() {
                continue;
            }
            let mut ports: Vec<((Protocol, u16), Vec<Backend>)> = acc
                .ports
                .into_iter()
                .map(|(pk, cands)| (pk, finish_backends(cands, pk.0, &ids)))
                .collect();
            ports.sort_unstable_by_key(|p| p.0);
            named.push((
                NamedVipKey {
                    name: name.to_string(),
                    framework: framework.to_string(),
                },
                NamedPart {
                    base,
                    age_ms: acc.age_ms,
                    ports,
                    first: Rejection {
                        app_id: task.app_id.clone(),
                        task_id: task.id.clone(),
                        label: labels::label_text(k, v),
                        reason: RejectReason::RangeExhausted,
                    },
                },
            ));
        }
        // (name, framework) tuples and `NamedVipKey`s sort alike (fields in that order).
        OwnerOut {
            ids: Some(ids.buf),
            tasks: self.task_ranges,
            services,
            rejected: self.rejected,
            ip_vips,
            named,
        }
    }
}

/// Sorts by (ip, port), keeps one backend per (ip, port) (the highest weight, then the first
/// task in id order) and makes the `Backend`s. Weights stay as given (see [`lift_draining`]).
fn finish_backends(mut cands: Vec<Cand>, protocol: Protocol, ids: &Ids) -> Vec<Backend> {
    // Task indexes follow task id order, so they break ties as task ids would.
    cands.sort_unstable_by_key(|c| (c.ip, c.port, Reverse(c.weight), c.task));
    cands.dedup_by(|later, kept| later.ip == kept.ip && later.port == kept.port);
    let mut out = Vec::with_capacity(cands.len());
    out.extend(cands.into_iter().map(|c| Backend {
        id: backend_id(protocol, c.ip, c.port),
        ip: c.ip,
        port: c.port,
        weight: c.weight,
        task_id: ids.slice(c.ids.id),
        app_id: c.ids.app.map(|r| ids.slice(r)),
        agent_ip: c.agent_ip,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::{Agent, AppPort, Framework, TaskPort};
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    /// Agents a1 (10.0.0.1) and a2 (10.0.0.2), framework fw named `marathon`.
    fn base_state() -> ClusterState {
        let mut s = ClusterState::default();
        s.frameworks.insert(
            "fw".into(),
            Framework {
                id: "fw".into(),
                name: "marathon".into(),
                ..Framework::default()
            },
        );
        for (id, addr) in [("a1", "10.0.0.1"), ("a2", "10.0.0.2")] {
            s.agents.insert(
                id.into(),
                Agent {
                    id: id.into(),
                    hostname: addr.into(),
                    ip: Some(ip(addr)),
                    port: Some(5051),
                },
            );
        }
        s
    }

    fn task(id: &str, agent: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            name: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            state,
            ..Task::default()
        }
    }

    fn port(
        protocol: PortProtocol,
        host_port: Option<u16>,
        port: Option<u16>,
        labels: &[(&str, &str)],
    ) -> TaskPort {
        TaskPort {
            name: None,
            protocol: Some(protocol),
            port,
            host_port,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn tcp_host(host_port: u16, labels: &[(&str, &str)]) -> TaskPort {
        port(PortProtocol::Tcp, Some(host_port), None, labels)
    }

    fn add(s: &mut ClusterState, t: Task) {
        s.tasks.insert(t.id.clone(), Arc::new(t));
    }

    fn build(s: ClusterState) -> Snapshot {
        Snapshot::build(&Arc::new(s), &Config::default(), &Snapshot::empty())
    }

    fn vip_key(protocol: Protocol, addr: &str, port: u16) -> VipKey {
        VipKey {
            protocol,
            ip: ip(addr),
            port,
        }
    }

    /// (ip, port, weight) of each backend of a VIP.
    fn backends(snap: &Snapshot, key: &VipKey) -> Vec<(IpAddr, u16, u32)> {
        snap.vip(key)
            .unwrap_or_else(|| panic!("no VIP {key}"))
            .backends
            .iter()
            .map(|b| (b.ip, b.port, b.weight))
            .collect()
    }

    fn rejection(app: Option<&str>, task: &str, label: &str, reason: RejectReason) -> Rejection {
        Rejection {
            app_id: app.map(str::to_string),
            task_id: task.into(),
            label: label.into(),
            reason,
        }
    }

    #[test]
    fn ip_vip_on_a_host_port_is_agent_ip_and_host_port() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.netinfo_ips = vec![ip("9.0.1.29")];
        t.ports = vec![tcp_host(12049, &[("VIP_0", "1.2.3.4:5000")])];
        add(&mut s, t);
        let snap = build(s);
        let key = vip_key(Protocol::Tcp, "1.2.3.4", 5000);
        assert_eq!(snap.vips.len(), 1);
        assert_eq!(backends(&snap, &key), vec![(ip("10.0.0.1"), 12049, 1)]);
        let v = snap.vip(&key).expect("vip");
        assert_eq!(v.name, None);
        assert_eq!(v.label, None);
        let b = &v.backends[0];
        assert_eq!(&*b.task_id, "t1");
        assert_eq!(b.agent_ip, Some(ip("10.0.0.1")));
        assert_eq!(b.id, backend_id(Protocol::Tcp, ip("10.0.0.1"), 12049));
        assert_eq!(snap.version, 1);
        assert!(snap.rejected.is_empty());
    }

    #[test]
    fn container_ports_use_every_task_ip_or_the_agent_ip() {
        let mut s = base_state();
        let mut t1 = task("t1", "a1", TaskState::Running);
        t1.netinfo_ips = vec![ip("9.0.1.29"), ip("9.0.1.30")];
        t1.ports = vec![port(
            PortProtocol::Tcp,
            None,
            Some(80),
            &[("VIP_0", "1.2.3.4:80")],
        )];
        add(&mut s, t1);
        let mut t2 = task("t2", "a2", TaskState::Running);
        t2.ports = vec![port(
            PortProtocol::Tcp,
            None,
            Some(8080),
            &[("VIP_0", "1.2.3.4:80")],
        )];
        add(&mut s, t2);
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Tcp, "1.2.3.4", 80)),
            vec![
                (ip("9.0.1.29"), 80, 1),
                (ip("9.0.1.30"), 80, 1),
                (ip("10.0.0.2"), 8080, 1),
            ]
        );
    }

    #[test]
    fn named_vips_get_their_fqdn_and_hashed_address() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.ports = vec![tcp_host(31000, &[("VIP_0", "/grp/app:80")])];
        add(&mut s, t);
        let snap = build(s);
        let key = NamedVipKey {
            name: "/grp/app".into(),
            framework: "marathon".into(),
        };
        let nv = &snap.named[&key];
        // SHA-1 slot worked out in vip::tests: 11.201.44.61.
        assert_eq!(nv.ipv4, Ipv4Addr::new(11, 201, 44, 61));
        assert_eq!(nv.ipv6, None);
        assert_eq!(nv.fqdn, "grpapp.marathon.l4lb.thisdcos.directory");
        let vk = vip_key(Protocol::Tcp, "11.201.44.61", 80);
        let v = snap.vip(&vk).expect("named vip");
        assert_eq!(
            v.name.as_deref(),
            Some("grpapp.marathon.l4lb.thisdcos.directory")
        );
        assert_eq!(v.label.as_ref(), Some(&key));
        assert_eq!(backends(&snap, &vk), vec![(ip("10.0.0.1"), 31000, 1)]);
    }

    #[test]
    fn families_are_filtered_per_vip() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.netinfo_ips = vec![ip("9.0.0.5"), ip("fd01:b::5")];
        t.ports = vec![port(
            PortProtocol::Udp,
            None,
            Some(53),
            &[
                ("VIP_0", "1.2.3.4:53"),
                ("VIP_1", "fd01::1:53"),
                ("vip_2", "/dns:53"),
            ],
        )];
        add(&mut s, t);
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Udp, "1.2.3.4", 53)),
            vec![(ip("9.0.0.5"), 53, 1)]
        );
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Udp, "fd01::1", 53)),
            vec![(ip("fd01:b::5"), 53, 1)]
        );
        let nv = &snap.named[&NamedVipKey {
            name: "/dns".into(),
            framework: "marathon".into(),
        }];
        let v6 = nv.ipv6.expect("an IPv6 address for IPv6 backends");
        assert!(
            "fd01:c::/64"
                .parse::<ipnet::Ipv6Net>()
                .expect("net")
                .contains(&v6)
        );
        assert_eq!(
            backends(
                &snap,
                &VipKey {
                    protocol: Protocol::Udp,
                    ip: IpAddr::V4(nv.ipv4),
                    port: 53
                }
            ),
            vec![(ip("9.0.0.5"), 53, 1)]
        );
        assert_eq!(
            backends(
                &snap,
                &VipKey {
                    protocol: Protocol::Udp,
                    ip: IpAddr::V6(v6),
                    port: 53
                }
            ),
            vec![(ip("fd01:b::5"), 53, 1)]
        );
        assert_eq!(snap.counts.vips, 4);
        assert_eq!(snap.counts.backends, 4);
    }

    #[test]
    fn an_ip_vip_without_backends_of_its_family_is_not_published() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.ports = vec![tcp_host(31000, &[("VIP_0", "fd01::1:80")])];
        add(&mut s, t);
        let snap = build(s);
        assert!(snap.vips.is_empty());
        assert!(snap.rejected.is_empty());
    }

    #[test]
    fn weights_drain_killing_and_unhealthy_tasks() {
        let mut s = base_state();
        let cases: [(&str, TaskState, Option<bool>, bool); 7] = [
            ("t1-running", TaskState::Running, None, false),
            ("t2-healthy", TaskState::Running, Some(true), true),
            ("t3-unhealthy", TaskState::Running, Some(false), true),
            ("t4-no-verdict", TaskState::Running, None, true),
            ("t5-killing", TaskState::Killing, Some(true), false),
            ("t6-staging", TaskState::Staging, None, false),
            ("t7-killed", TaskState::Killed, None, false),
        ];
        for (i, (id, state, healthy, checked)) in cases.into_iter().enumerate() {
            let mut t = task(id, "a1", state);
            t.healthy = healthy;
            t.has_health_check = checked;
            t.ports = vec![tcp_host(31000 + i as u16, &[("VIP_0", "1.2.3.4:80")])];
            add(&mut s, t);
        }
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Tcp, "1.2.3.4", 80)),
            vec![
                (ip("10.0.0.1"), 31000, 1),
                (ip("10.0.0.1"), 31001, 1),
                (ip("10.0.0.1"), 31002, 0),
                (ip("10.0.0.1"), 31003, 0),
                (ip("10.0.0.1"), 31004, 0),
            ]
        );
    }

    #[test]
    fn a_vip_whose_backends_all_drain_serves_with_all_of_them() {
        let mut s = base_state();
        let mut t1 = task("t1", "a1", TaskState::Killing);
        t1.ports = vec![tcp_host(31000, &[("VIP_0", "1.2.3.4:80")])];
        add(&mut s, t1);
        let mut t2 = task("t2", "a2", TaskState::Running);
        t2.healthy = Some(false);
        t2.ports = vec![tcp_host(31001, &[("VIP_0", "1.2.3.4:80")])];
        add(&mut s, t2);
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Tcp, "1.2.3.4", 80)),
            vec![(ip("10.0.0.1"), 31000, 1), (ip("10.0.0.2"), 31001, 1)]
        );
    }

    #[test]
    fn duplicate_backends_keep_the_highest_weight() {
        let mut s = base_state();
        // Two tasks reporting the same agent port (a stale killing task and its replacement).
        let mut old = task("t1", "a1", TaskState::Killing);
        old.ports = vec![tcp_host(31000, &[("VIP_0", "1.2.3.4:80")])];
        add(&mut s, old);
        let mut new = task("t2", "a1", TaskState::Running);
        new.ports = vec![tcp_host(
            31000,
            &[("VIP_0", "1.2.3.4:80"), ("VIP_1", "1.2.3.4:80")],
        )];
        add(&mut s, new);
        let snap = build(s);
        let v = snap
            .vip(&vip_key(Protocol::Tcp, "1.2.3.4", 80))
            .expect("vip");
        assert_eq!(v.backends.len(), 1);
        assert_eq!(v.backends[0].weight, 1);
        assert_eq!(&*v.backends[0].task_id, "t2");
    }

    #[test]
    fn legacy_vip_port_labels_use_the_task_host_ports() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.app_id = Some("/app".into());
        t.host_ports = vec![31000, 31001];
        t.labels = vec![
            ("vip_PORT1".into(), "udp://1.2.3.4:5000".into()),
            ("VIP_PORT2".into(), "tcp://1.2.3.5:5000".into()),
            ("vip_port0".into(), "merp:5000".into()),
        ];
        add(&mut s, t);
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Udp, "1.2.3.4", 5000)),
            vec![(ip("10.0.0.1"), 31001, 1)]
        );
        assert_eq!(snap.vips.len(), 1);
        assert_eq!(
            snap.rejected,
            vec![
                rejection(
                    Some("/app"),
                    "t1",
                    "VIP_PORT2=tcp://1.2.3.5:5000",
                    RejectReason::BadPortIndex
                ),
                rejection(
                    Some("/app"),
                    "t1",
                    "vip_port0=merp:5000",
                    RejectReason::BadFormat
                ),
            ]
        );
    }

    #[test]
    fn bad_labels_are_rejected_one_by_one() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.ports = vec![
            tcp_host(
                31000,
                &[
                    ("Vip_0", "not a vip"),
                    ("VIP_0", "foo"),
                    ("VIP_1", "1.2.3.4:70000"),
                    ("VIP_2", "/name:abc"),
                    ("VIP_3", "/:80"),
                    ("VIP_4", "1.2.3.4:80"),
                    ("network-scope", "host"),
                ],
            ),
            port(
                PortProtocol::Other("sctp".into()),
                Some(31001),
                None,
                &[("VIP_0", "1.2.3.4:81")],
            ),
        ];
        add(&mut s, t);
        // A second task with the same bad label: one rejection each.
        let mut t2 = task("t2", "a1", TaskState::Running);
        t2.ports = vec![tcp_host(31002, &[("VIP_0", "foo")])];
        add(&mut s, t2);
        let snap = build(s);
        assert_eq!(
            backends(&snap, &vip_key(Protocol::Tcp, "1.2.3.4", 80)),
            vec![(ip("10.0.0.1"), 31000, 1)]
        );
        assert_eq!(snap.vips.len(), 1);
        assert_eq!(
            snap.rejected,
            vec![
                rejection(
                    None,
                    "t1",
                    "VIP_0=1.2.3.4:81",
                    RejectReason::UnknownProtocol
                ),
                rejection(None, "t1", "VIP_0=foo", RejectReason::BadFormat),
                rejection(None, "t1", "VIP_1=1.2.3.4:70000", RejectReason::BadPort),
                rejection(None, "t1", "VIP_2=/name:abc", RejectReason::BadPort),
                rejection(None, "t1", "VIP_3=/:80", RejectReason::BadFormat),
                rejection(None, "t2", "VIP_0=foo", RejectReason::BadFormat),
            ]
        );
    }

    #[test]
    fn rejections_are_deduplicated() {
        let mut s = base_state();
        let mut t = task("t1", "a1", TaskState::Running);
        t.ports = vec![
            tcp_host(31000, &[("VIP_0", "foo")]),
            tcp_host(31001, &[("VIP_0", "foo")]),
        ];
        add(&mut s, t);
        let snap = build(s);
        assert_eq!(
            snap.rejected,
            vec![rejection(None, "t1", "VIP_0=foo", RejectReason::BadFormat)]
        );
    }

    /// One app `/web` with two port definitions (tcp 10000, udp,tcp 10001) and a third without
    /// a service port; task t1 on a1 with host ports, t2 IP-per-task, t3 staging.
    fn web_state() -> ClusterState {
        let mut s = base_state();
        let app = App {
            id: "/web".into(),
            version_ms: Some(1000),
            ports: vec![
                AppPort {
                    protocol: "tcp".into(),
                    container_port: Some(80),
                    service_port: Some(10000),
                    ..AppPort::default()
                },
                AppPort {
                    protocol: "udp,tcp".into(),
                    container_port: Some(53),
                    service_port: Some(10001),
                    ..AppPort::default()
                },
                AppPort {
                    protocol: "tcp".into(),
                    service_port: Some(0),
                    ..AppPort::default()
                },
            ],
            ..App::default()
        };
        s.apps.insert(app.id.clone(), Arc::new(app));
        let mut t1 = task("web.1", "a1", TaskState::Running);
        t1.app_id = Some("/web".into());
        t1.host_ports = vec![31000, 31001, 31002];
        add(&mut s, t1);
        let mut t2 = task("web.2", "a2", TaskState::Running);
        t2.app_id = Some("/web".into());
        t2.netinfo_ips = vec![ip("9.0.0.7")];
        t2.healthy = Some(false);
        add(&mut s, t2);
        let mut t3 = task("web.3", "a2", TaskState::Staging);
        t3.app_id = Some("/web".into());
        t3.host_ports = vec![31005, 31006, 31007];
        add(&mut s, t3);
        s
    }

    type ServiceView = (u16, Protocol, usize, Vec<(IpAddr, u16, u32)>);

    fn service_view(snap: &Snapshot) -> Vec<ServiceView> {
        snap.services
            .iter()
            .map(|s| {
                (
                    s.service_port,
                    s.protocol,
                    s.port_index,
                    s.backends
                        .iter()
                        .map(|b| (b.ip, b.port, b.weight))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn services_per_app_port_and_protocol() {
        let snap = build(web_state());
        assert_eq!(
            service_view(&snap),
            vec![
                (
                    10000,
                    Protocol::Tcp,
                    0,
                    vec![(ip("9.0.0.7"), 80, 0), (ip("10.0.0.1"), 31000, 1)]
                ),
                (
                    10001,
                    Protocol::Tcp,
                    1,
                    vec![(ip("9.0.0.7"), 53, 0), (ip("10.0.0.1"), 31001, 1)]
                ),
                (
                    10001,
                    Protocol::Udp,
                    1,
                    vec![(ip("9.0.0.7"), 53, 0), (ip("10.0.0.1"), 31001, 1)]
                ),
            ]
        );
        assert_eq!(
            snap.counts,
            Counts {
                apps: 1,
                tasks: 3,
                services: 3,
                backends: 6,
                vips: 0,
            }
        );
    }

    #[test]
    fn haproxy_port_labels_override_the_service_port() {
        let mut s = web_state();
        let app = Arc::make_mut(s.apps.get_mut("/web").expect("app"));
        app.labels.insert("HAPROXY_0_PORT".into(), "9000".into());
        app.labels.insert("HAPROXY_1_PORT".into(), "nope".into());
        app.labels.insert("HAPROXY_2_PORT".into(), "9002".into());
        let snap = build(s);
        let ports: Vec<(u16, Protocol, usize)> = snap
            .services
            .iter()
            .map(|s| (s.service_port, s.protocol, s.port_index))
            .collect();
        assert_eq!(
            ports,
            vec![
                (9000, Protocol::Tcp, 0),
                (9002, Protocol::Tcp, 2),
                (10001, Protocol::Tcp, 1),
                (10001, Protocol::Udp, 1),
            ]
        );
        // Port index 2 has no container port: only the host-port task is a backend.
        assert_eq!(snap.services[1].backends.len(), 1);
        assert_eq!(
            snap.rejected,
            vec![rejection(
                Some("/web"),
                "",
                "HAPROXY_1_PORT=nope",
                RejectReason::BadPort
            )]
        );
    }

    #[test]
    fn build_is_deterministic_and_versions_follow_prev() {
        let mut s = web_state();
        for i in 0..50u16 {
            let mut t = task(
                &format!("x{i:02}"),
                if i % 2 == 0 { "a1" } else { "a2" },
                TaskState::Running,
            );
            t.app_id = Some("/web".into());
            t.started_ms = Some(i64::from(i));
            t.host_ports = vec![32000 + i];
            t.ports = vec![tcp_host(
                32000 + i,
                &[
                    ("VIP_0", &format!("/svc-{}:80", i % 7)),
                    ("VIP_1", "1.2.3.4:80"),
                ],
            )];
            add(&mut s, t);
        }
        let state = Arc::new(s);
        let config = Config::default();
        let a = Snapshot::build(&state, &config, &Snapshot::empty());
        let b = Snapshot::build(&state, &config, &Snapshot::empty());
        let c = Snapshot::build(&state, &config, &a);
        assert_eq!(a.version, 1);
        assert_eq!(c.version, 2);
        for other in [&b, &c] {
            assert_eq!(a.vips, other.vips);
            assert_eq!(a.named, other.named);
            assert_eq!(a.services, other.services);
            assert_eq!(a.rejected, other.rejected);
            assert_eq!(a.counts, other.counts);
        }
        assert_eq!(a.named.len(), 7);
        let mut keys: Vec<VipKey> = a.vips.iter().map(|v| v.key).collect();
        keys.sort();
        assert_eq!(keys, a.vips.iter().map(|v| v.key).collect::<Vec<_>>());
        assert!(a.vips.iter().all(|v| {
            v.backends
                .windows(2)
                .all(|w| (w[0].ip, w[0].port) < (w[1].ip, w[1].port))
        }));
    }

    #[test]
    fn named_vip_age_is_the_app_version_or_the_earliest_start() {
        let mut s = web_state();
        let mut t = task("m1", "a1", TaskState::Running);
        t.app_id = Some("/web".into());
        t.started_ms = Some(5);
        t.ports = vec![tcp_host(31000, &[("VIP_0", "/a:80")])];
        add(&mut s, t);
        for (id, started) in [("n1", 700), ("n2", 300)] {
            let mut t = task(id, "a2", TaskState::Running);
            t.started_ms = Some(started);
            t.ports = vec![tcp_host(31000, &[("VIP_0", "/b:80")])];
            add(&mut s, t);
        }
        let snap = build(s);
        let age = |n: &str| {
            snap.named[&NamedVipKey {
                name: n.into(),
                framework: "marathon".into(),
            }]
                .age_ms
        };
        assert_eq!(age("/a"), Some(1000));
        assert_eq!(age("/b"), Some(300));
    }

    #[test]
    fn a_live_named_vip_keeps_its_address_across_builds() {
        let config = Config::default();
        // Build 1: only /b exists.
        let mut s = base_state();
        let mut tb = task("tb", "a1", TaskState::Running);
        tb.started_ms = Some(100);
        tb.ports = vec![tcp_host(31000, &[("VIP_0", "/b:80")])];
        add(&mut s, tb.clone());
        let first = Snapshot::build(&Arc::new(s.clone()), &config, &Snapshot::empty());
        let key_b = NamedVipKey {
            name: "/b".into(),
            framework: "marathon".into(),
        };
        let b_ip = first.named[&key_b].ipv4;
        // Build 2: pretend the previous allocation put /b somewhere else in range; it stays there.
        let mut prev = first.clone();
        prev.named.get_mut(&key_b).expect("b").ipv4 = Ipv4Addr::new(11, 0, 0, 9);
        let mut ta = task("ta", "a2", TaskState::Running);
        ta.started_ms = Some(1);
        ta.ports = vec![tcp_host(31000, &[("VIP_0", "/a:80")])];
        add(&mut s, ta);
        let second = Snapshot::build(&Arc::new(s), &config, &prev);
        assert_eq!(second.named[&key_b].ipv4, Ipv4Addr::new(11, 0, 0, 9));
        assert!(
            second
                .vip(&vip_key(Protocol::Tcp, "11.0.0.9", 80))
                .is_some()
        );
        assert_ne!(b_ip, Ipv4Addr::new(11, 0, 0, 9));
        // With no backends left the name is released.
        let third = Snapshot::build(&Arc::new(base_state()), &config, &second);
        assert!(third.named.is_empty());
        assert!(third.vips.is_empty());
    }

    #[test]
    fn an_exhausted_range_rejects_the_youngest_name() {
        let mut config = Config::default();
        config.l4.vip_range = "10.9.9.0/30".parse().expect("net");
        let mut s = base_state();
        for (i, name) in ["/a", "/b", "/c"].into_iter().enumerate() {
            let mut t = task(&format!("t{i}"), "a1", TaskState::Running);
            t.started_ms = Some(i as i64);
            t.ports = vec![tcp_host(
                31000 + i as u16,
                &[("VIP_0", &format!("{name}:80"))],
            )];
            add(&mut s, t);
        }
        let snap = Snapshot::build(&Arc::new(s), &config, &Snapshot::empty());
        assert_eq!(snap.named.len(), 2);
        assert_eq!(snap.vips.len(), 2);
        assert_eq!(
            snap.rejected,
            vec![rejection(
                None,
                "t2",
                "VIP_0=/c:80",
                RejectReason::RangeExhausted
            )]
        );
    }

    #[test]
    fn framework_name_scopes_named_vips() {
        let mut s = base_state();
        s.frameworks.insert(
            "fw2".into(),
            Framework {
                id: "fw2".into(),
                name: "My_Framework".into(),
                ..Framework::default()
            },
        );
        let mut t1 = task("t1", "a1", TaskState::Running);
        t1.ports = vec![tcp_host(31000, &[("VIP_0", "merp:5000")])];
        add(&mut s, t1);
        let mut t2 = task("t2", "a1", TaskState::Running);
        t2.framework_id = "fw2".into();
        t2.ports = vec![tcp_host(31001, &[("VIP_0", "merp:5000")])];
        add(&mut s, t2);
        let snap = build(s);
        let fqdns: Vec<&str> = snap.named.values().map(|n| n.fqdn.as_str()).collect();
        assert_eq!(
            fqdns,
            vec![
                "merp.my-framework.l4lb.thisdcos.directory",
                "merp.marathon.l4lb.thisdcos.directory"
            ]
        );
        assert_eq!(snap.vips.len(), 2);
        assert!(snap.vips.iter().all(|v| v.backends.len() == 1));
    }

    #[test]
    fn backend_ids_are_stable_and_distinct() {
        let a = backend_id(Protocol::Tcp, ip("10.0.0.1"), 80);
        assert_eq!(a, backend_id(Protocol::Tcp, ip("10.0.0.1"), 80));
        assert_ne!(a, backend_id(Protocol::Udp, ip("10.0.0.1"), 80));
        assert_ne!(a, backend_id(Protocol::Tcp, ip("10.0.0.1"), 81));
        assert_ne!(a, backend_id(Protocol::Tcp, ip("::ffff:10.0.0.1"), 80));
        // FNV-1a 64 of [6, 10, 0, 0, 1, 0, 80], computed independently.
        assert_eq!(a, BackendId(0xb8b5_fece_7a4c_9900));
    }
    // === property test: incremental = from scratch ===

    /// One random change to a small cluster: three apps and app-less tasks on three agents (one
    /// IPv6), named VIPs (more names than a tiny range has addresses), IP VIPs (one inside the
    /// named range), bad labels, legacy labels, unhealthy and killing tasks.
    fn mutate(s: &mut ClusterState, rng: &mut rand_chacha::ChaCha8Rng, next_id: &mut u32) {
        use rand::Rng;
        use rand::seq::IndexedRandom;
        const VIPS: [&str; 12] = [
            "/n0:80",
            "/n1:80",
            "/n2:81",
            "/n3:80",
            "n4:80",
            "/n5:80",
            "/n6:80",
            "10.9.9.1:80",
            "1.2.3.4:80",
            "fd00::5:80",
            "foo",
            "/n0:81",
        ];
        let apps = ["/a0", "/a1", "/a2"];
        let ids: Vec<String> = s.tasks.keys().cloned().collect();
        match rng.random_range(0..100) {
            // Add a task.
            0..=34 => {
                *next_id += 1;
                let agent = *["a1", "a2", "a3"].choose(rng).expect("agents");
                let state = match rng.random_range(0..10) {
                    0 => TaskState::Killing,
                    1 => TaskState::Staging,
                    _ => TaskState::Running,
                };
                let app = rng
                    .random_bool(0.7)
                    .then(|| *apps.choose(rng).expect("apps"));
                let mut t = task(&format!("t{:03}", *next_id), agent, state);
                t.app_id = app.map(str::to_string);
                t.healthy = [None, Some(true), Some(false)]
                    .choose(rng)
                    .copied()
                    .flatten();
                t.has_health_check = rng.random_bool(0.3);
                t.started_ms = rng.random_bool(0.8).then(|| rng.random_range(0..5));
                if rng.random_bool(0.5) {
                    t.host_ports = vec![31000 + rng.random_range(0..4u16)];
                }
                if rng.random_bool(0.5) {
                    let n = rng.random_range(0..3u8);
                    t.netinfo_ips = vec![IpAddr::from([9, 0, 0, n])];
                    if rng.random_bool(0.3) {
                        t.netinfo_ips.push(ip(&format!("fd00::9:{n}")));
                    }
                }
                for _ in 0..rng.random_range(0..3) {
                    let label = *VIPS.choose(rng).expect("vips");
                    let proto = if rng.random_bool(0.8) {
                        PortProtocol::Tcp
                    } else {
                        PortProtocol::Udp
                    };
                    let host_port = t
                        .host_ports
                        .first()
                        .copied()
                        .filter(|_| rng.random_bool(0.5));
                    t.ports
                        .push(port(proto, host_port, Some(8080), &[("VIP_0", label)]));
                }
                if rng.random_bool(0.1) {
                    t.labels = vec![("vip_PORT0".into(), "tcp://1.2.3.5:90".into())];
                }
                add(s, t);
            }
            // Remove a task.
            35..=49 => {
                if let Some(id) = ids.choose(rng) {
                    s.tasks.remove(id);
                }
            }
            // Change a task's state or health.
            50..=79 => {
                if let Some(id) = ids.choose(rng)
                    && let Some(t) = s.tasks.get_mut(id)
                {
                    let t = Arc::make_mut(t);
                    match rng.random_range(0..3) {
                        0 => {
                            t.healthy = [None, Some(true), Some(false)]
                                .choose(rng)
                                .copied()
                                .flatten()
                        }
                        1 => {
                            t.state = [TaskState::Running, TaskState::Killing, TaskState::Staging]
                                .choose(rng)
                                .cloned()
                                .expect("states")
                        }
                        _ => {
                            t.app_id = rng
                                .random_bool(0.7)
                                .then(|| apps.choose(rng).expect("apps").to_string())
                        }
                    }
                }
            }
            // Change an app: its labels, version or service ports.
            80..=94 => {
                let id = *apps.choose(rng).expect("apps");
                let app = Arc::make_mut(s.apps.get_mut(id).expect("app"));
                match rng.random_range(0..3) {
                    0 => {
                        if app.labels.remove("HAPROXY_0_PORT").is_none() {
                            let v = ["9000", "9001", "nope"].choose(rng).expect("ports");
                            app.labels.insert("HAPROXY_0_PORT".into(), v.to_string());
                        }
                    }
                    1 => app.version_ms = rng.random_bool(0.8).then(|| rng.random_range(0..5)),
                    _ => {
                        let p = app.ports.first_mut().expect("port");
                        p.protocol = ["tcp", "udp", "udp,tcp"]
                            .choose(rng)
                            .expect("p")
                            .to_string();
                    }
                }
            }
            // Move an agent.
            _ => {
                let a2 = s.agents.get_mut("a2").expect("a2");
                a2.ip = Some(if a2.ip == Some(ip("10.0.0.2")) {
                    ip("10.0.0.22")
                } else {
                    ip("10.0.0.2")
                });
            }
        }
    }

    #[test]
    fn incremental_builds_equal_builds_from_scratch() {
        use rand::SeedableRng;
        let mut config = Config::default();
        // 6 IPv4 and 7 IPv6 addresses for 8 names: collisions and exhaustion.
        config.l4.vip_range = "10.9.9.0/29".parse().expect("net");
        config.l4.vip_range6 = "fd01::/125".parse().expect("net");
        let mut reused = 0usize;
        for seed in 0..60u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut s = base_state();
            s.agents.insert(
                "a3".into(),
                Agent {
                    id: "a3".into(),
                    hostname: "fd00::3".into(),
                    ip: Some(ip("fd00::3")),
                    port: Some(5051),
                },
            );
            for (i, id) in ["/a0", "/a1", "/a2"].into_iter().enumerate() {
                let app = App {
                    id: id.into(),
                    version_ms: Some(i as i64),
                    ports: vec![AppPort {
                        protocol: "tcp".into(),
                        container_port: Some(8080),
                        service_port: Some(10000 + i as u16),
                        ..AppPort::default()
                    }],
                    ..App::default()
                };
                s.apps.insert(app.id.clone(), Arc::new(app));
            }
            let mut state = Arc::new(s);
            let mut prev = Snapshot::empty();
            let mut next_id = 0;
            for step in 0..60 {
                let mut next = state.clone();
                for _ in 0..(1 + step % 3) {
                    mutate(Arc::make_mut(&mut next), &mut rng, &mut next_id);
                }
                if step % 7 == 6 {
                    // A full answer: equal tasks and apps, but none the same `Arc`.
                    let st = Arc::make_mut(&mut next);
                    st.tasks = st
                        .tasks
                        .iter()
                        .map(|(k, t)| (k.clone(), Arc::new(Task::clone(t))))
                        .collect();
                    st.apps = st
                        .apps
                        .iter()
                        .map(|(k, a)| (k.clone(), Arc::new(App::clone(a))))
                        .collect();
                }
                state = next;
                let inc = Snapshot::build(&state, &config, &prev);
                let given = Snapshot {
                    version: prev.version,
                    named: prev.named.clone(),
                    ..Snapshot::empty()
                };
                let scratch = Snapshot::build(&state, &config, &given);
                let at = format!("seed {seed} step {step}");
                assert_eq!(inc.vips, scratch.vips, "{at}");
                assert_eq!(inc.named, scratch.named, "{at}");
                assert_eq!(inc.services, scratch.services, "{at}");
                assert_eq!(inc.rejected, scratch.rejected, "{at}");
                assert_eq!(inc.counts, scratch.counts, "{at}");
                assert_eq!(inc.version, scratch.version, "{at}");
                reused += inc
                    .vips
                    .iter()
                    .filter(|v| prev.vips.iter().any(|p| Arc::ptr_eq(p, v)))
                    .count();
                prev = inc;
            }
        }
        // The incremental path really shared untouched VIPs.
        assert!(reused > 0);
    }
}
