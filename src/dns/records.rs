//! `Snapshot` → `Records`: the names Mesos-DNS (`records/generator.go`) and dcos-dns would serve
//! for the same cluster state, as plain maps. Pure: no I/O, no clock.
//!
//! Record families, in the order Mesos-DNS inserts them (`InsertState`; the order decides which
//! task an `/v1/enumerate` record is listed under when two tasks make the same record):
//! 1. **Frameworks** (`frameworkRecords`): `framework.domain.` → the scheduler IP (the libprocess
//!    `pid` IP, else `hostname` when it is an IP; Mesos-DNS would resolve a DNS name, a pure build
//!    cannot); `_framework._tcp.framework.domain.` → `framework.domain.:pid-port`.
//! 2. **Agents** (`slaveRecords`): `slave.domain.` → every agent IP; `_slave._tcp.domain.` →
//!    `slave.domain.:agent-port`.
//! 3. **This server** (`listenerRecord`): `dns.soa_mname` → the IP of `dns.listen`. An unspecified
//!    listen address (`0.0.0.0`, `::`) gives no record: Mesos-DNS lists the host's interface
//!    addresses there, which a pure build cannot see.
//! 4. **Masters** (`masterRecord`, only with a leader in the state): `leader.domain.`,
//!    `master.domain.` (leader and every `discovery.mesos` host that is an IP), `masterN.domain.`
//!    (the `discovery.mesos` hosts in order, the leader appended when it is not among them),
//!    `_leader._tcp|_udp.domain.` → `leader.domain.:port`.
//! 5. **Tasks** (`taskRecords`): every `TASK_RUNNING` task of a known framework on a known agent.
//!    See [`Records::build`] for the names.
//!
//! Then, beyond Mesos-DNS's generator: dcos-dns names (`dcos_dns_mesos`: `autoip`, `agentip`,
//! `containerip`, and `leader`/`master` in `dcos.thisdcos.directory.`), named-VIP names
//! (`dcos_l4lb_lashup_vip_listener`: `l4lb.thisdcos.directory.`) and PTRs.
//!
//! Sets dedupe exactly as Mesos-DNS's `rrs` does: a (name, value) pair is stored once, and only
//! its first insertion is listed in the enumeration. A name that is not a valid DNS name (an empty
//! label, a label over 63 bytes, over 253 characters, a byte that is not printable ASCII, or a
//! backslash; only odd input makes one, such as a framework named `$$$` or a raw DiscoveryInfo
//! name with spaces) is skipped where Mesos-DNS would insert it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use serde::Serialize;

use super::names::{self, LabelSpec};
use crate::config::{Config, IpSource};
use crate::model::{ClusterState, Snapshot, Task, TaskState};

/// The zone of named VIPs (dcos-net `?L4LB_ZONE_NAME`), absolute.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory.";
/// The zone of dcos-dns's task names (`?DCOS_DOMAIN`), absolute.
pub const DCOS_ZONE: &str = "dcos.thisdcos.directory.";

/// One SRV answer: target host (absolute, with the trailing dot) and port. Priority and weight
/// are 0, as Mesos-DNS sends them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Srv {
    pub target: String,
    pub port: u16,
}

/// The record set of one snapshot.
///
/// Every name is absolute with its trailing dot and lowercase (`web.marathon.mesos.`), except the
/// legacy un-sanitised DiscoveryInfo names Mesos-DNS also inserts (served case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Records {
    /// Snapshot version, the SOA serial.
    pub serial: u64,
    /// Zones we are authoritative for, absolute with the trailing dot (`mesos.`,
    /// `l4lb.thisdcos.directory.`, …). Unknown names under these get NXDOMAIN; other names are
    /// forwarded.
    pub zones: Vec<String>,
    /// A and AAAA records by name (Mesos-DNS `As` and `AAAAs`).
    pub hosts: BTreeMap<String, BTreeSet<IpAddr>>,
    /// SRV records by name (Mesos-DNS `SRVs`).
    pub srvs: BTreeMap<String, BTreeSet<Srv>>,
    /// PTR records: task and VIP IPs → names (beyond Mesos-DNS).
    pub ptrs: BTreeMap<IpAddr, BTreeSet<String>>,
    /// `/v1/enumerate`, in Mesos-DNS's shape.
    pub enumeration: Enumeration,
}

/// Mesos-DNS `EnumerationData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enumeration {
    pub frameworks: Vec<EnumerableFramework>,
}

/// Mesos-DNS `EnumerableFramework` (field order as Mesos-DNS serialises it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumerableFramework {
    pub tasks: Vec<EnumerableTask>,
    pub name: String,
}

/// Mesos-DNS `EnumerableTask`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumerableTask {
    pub name: String,
    pub id: String,
    pub records: Vec<EnumerableRecord>,
}

/// Mesos-DNS `EnumerableRecord`: one record a task produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnumerableRecord {
    pub name: String,
    pub host: String,
    pub rtype: String,
}

// === impl Records ===

impl Records {
    /// The record set for `snapshot` under `config` (`dns.*`, and `discovery.mesos` for the
    /// `masterN` records).
    ///
    /// **Task names** (Mesos-DNS `taskRecord`), with `task` the task name made one label
    /// ([`names::label`]; the DiscoveryInfo name instead when it has one), `framework` the
    /// framework name as a [`names::domain_frag`] and `canonical` =
    /// `task-<hash>-<agent tail>.framework` ([`names::push_canonical_label`]):
    /// - A/AAAA `task.framework.domain.` and `canonical.domain.` → the task IPs: those of the
    ///   first `dns.ip_sources` entry that yields any (`netinfo`, `mesos`, `docker`, `host` =
    ///   the agent IP);
    /// - A/AAAA `task.framework.slave.domain.` and `canonical.slave.domain.` → the agent IP;
    /// - SRV per `ports` resource port: `_task._tcp|_udp.framework.slave.domain.`, and without
    ///   `.slave` when the task has no DiscoveryInfo → `canonical.slave.domain.:port`;
    /// - SRV per DiscoveryInfo port (`chains.go`): `_task._proto.framework.domain.` (`proto` the
    ///   port's protocol as a label; both `_tcp` and `_udp` when that is empty), and
    ///   `_name._task._proto.framework.domain.` when the port has a name →
    ///   `canonical.domain.:number`.
    /// - With a DiscoveryInfo name, Mesos-DNS first inserts every record with the raw name
    ///   (`LEGACY`), then with the sanitised one; so does this (the two coincide for a name that
    ///   is already a clean label).
    ///
    /// **dcos-dns** (`dcos_dns_mesos:task_records`), for the same tasks when their agent has an
    /// IP, with `name` = the DiscoveryInfo name else the task name and `framework` the framework
    /// name, each made one label by [`names::dcos_label`] (framework dots become `-` here):
    /// `name.framework.agentip.dcos.thisdcos.directory.` → agent IP;
    /// `name.framework.containerip.…` → the `network_infos` IPs; `name.framework.autoip.…` → the
    /// agent IP if any port has a host port (a port mapping), else the `network_infos` IPs.
    /// When the state has a leader, `leader.dcos.thisdcos.directory.` → leader IP and
    /// `master.dcos.thisdcos.directory.` → the `master.domain.` addresses.
    ///
    /// **Named VIPs**: `name.framework.l4lb.thisdcos.directory.` (the model's FQDN) → its IPv4
    /// address (A) when a VIP with that address is published, its IPv6 address (AAAA) likewise.
    ///
    /// **PTR** (beyond Mesos-DNS): each task IP that is not its agent's IP → the task's canonical
    /// name `canonical.domain.` (the name whose A/AAAA records give that IP back; several tasks
    /// sharing a pod's IP give several names); each named-VIP address → its FQDN. Agent IPs get
    /// no PTR: they would point at every task on the agent, and their reverse names belong to the
    /// site's own DNS, to which such queries are forwarded.
    ///
    /// **Order.** Mesos-DNS walks frameworks and tasks in the order of the master's JSON;
    /// `ClusterState` keeps them by ID, so this walks frameworks by ID and each framework's
    /// tasks by task ID. The record sets are the same; only which of two tasks making the same
    /// record lists it in the enumeration can differ.
    pub fn build(snapshot: &Snapshot, config: &Config) -> Records {
        let state: &ClusterState = &snapshot.state;
        let mut g = Gen::new(config, state.tasks.len());
        let frameworks = g.framework_records(state);
        g.slave_records(state);
        g.listener_record(config);
        let leader = g.master_records(state, &config.discovery.mesos);
        let enumeration = g.task_records(state, &frameworks);
        if let Some(leader) = leader {
            g.dcos_master_records(leader);
        }
        g.vip_records(snapshot);
        Records {
            serial: snapshot.version,
            zones: vec![
                format!("{}.", config.dns.domain),
                L4LB_ZONE.to_string(),
                DCOS_ZONE.to_string(),
            ],
            hosts: sorted_map(g.maps.hosts),
            srvs: sorted_map(g.maps.srvs),
            ptrs: g.maps.ptrs,
            enumeration,
        }
    }
}

// === impl Gen ===

/// Mesos-DNS's record types, as `/v1/enumerate` names them.
fn rtype_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "A" } else { "AAAA" }
}

/// A framework as the task pass needs it: its names, computed once.
struct FrameworkNames<'s> {
    id: &'s str,
    name: &'s str,
    /// Mesos-DNS name (`DomainFrag`), e.g. `marathon`, `marathon.prod`.
    frag: String,
    /// dcos-dns label (`mesos_state:label`), e.g. `marathon-prod`.
    dcos: String,
}

/// The maps being filled: hash maps while generating (keyed with [`FxHasher`]), sorted into
/// `BTreeMap`s at the end.
#[derive(Default)]
struct Maps {
    hosts: HashMap<String, BTreeSet<IpAddr>, Fx>,
    srvs: HashMap<String, BTreeSet<Srv>, Fx>,
    ptrs: BTreeMap<IpAddr, BTreeSet<String>>,
}

impl Maps {
    /// Mesos-DNS `insertRR` (`rrs.add`) for A/AAAA: true when (name, ip) is new. A new name
    /// that is not a valid DNS name is refused.
    fn insert_ip(&mut self, name: &str, ip: IpAddr) -> bool {
        if let Some(set) = self.hosts.get_mut(name) {
            return set.insert(ip);
        }
        if !valid_name(name) {
            return false;
        }
        self.hosts.insert(name.to_string(), BTreeSet::from([ip]));
        true
    }

    /// Mesos-DNS `insertRR` for SRV: true when (name, target, port) is new. Callers pass only
    /// valid targets ([`valid_name`]).
    fn insert_srv(&mut self, name: &str, target: &str, port: u16) -> bool {
        let srv = Srv {
            target: target.to_string(),
            port,
        };
        if let Some(set) = self.srvs.get_mut(name) {
            return set.insert(srv);
        }
        if !valid_name(name) {
            return false;
        }
        self.srvs.insert(name.to_string(), BTreeSet::from([srv]));
        true
    }

    /// `insertTaskRR` for an address record (`text` is `ip` as text).
    fn task_ip(&mut self, name: &str, ip: IpAddr, text: &str, out: &mut Vec<EnumerableRecord>) {
        if self.insert_ip(name, ip) {
            out.push(EnumerableRecord {
                name: name.to_string(),
                host: text.to_string(),
                rtype: rtype_of(ip).to_string(),
            });
        }
    }

    /// `insertTaskRR` for an SRV record.
    fn task_srv(&mut self, name: &str, target: &str, port: u16, out: &mut Vec<EnumerableRecord>) {
        if self.insert_srv(name, target, port) {
            let mut host = String::with_capacity(target.len() + 6);
            host.push_str(target);
            host.push(':');
            push_u16(&mut host, port);
            out.push(EnumerableRecord {
                name: name.to_string(),
                host,
                rtype: "SRV".to_string(),
            });
        }
    }
}

/// Reused buffers: names are built here and copied only when they are stored.
#[derive(Default)]
struct Scratch {
    /// The record name being built.
    name: String,
    /// `canonical.domain.`
    canon: String,
    /// `canonical.slave.domain.`
    slave: String,
    /// Sanitised labels: task name, DiscoveryInfo protocol, port name.
    label: String,
    proto: String,
    port_name: String,
    /// The task IPs and their text (`ip_texts[..ips.len()]`), the agent IP as text.
    ips: Vec<IpAddr>,
    ip_texts: Vec<String>,
    agent_text: String,
    /// The last dcos-dns task name and its label.
    dcos_raw: String,
    dcos_label: String,
}

/// The record generator.
struct Gen<'c> {
    config: &'c Config,
    spec: LabelSpec,
    /// `.domain.`
    tail: String,
    /// `.slave.domain.`
    slave_tail: String,
    maps: Maps,
    sc: Scratch,
}

impl<'c> Gen<'c> {
    /// A generator for about `tasks` tasks (the maps are sized for them up front: no rehash).
    fn new(config: &'c Config, tasks: usize) -> Gen<'c> {
        let domain = &config.dns.domain;
        Gen {
            config,
            spec: LabelSpec::from_enforce_rfc952(config.dns.enforce_rfc952),
            tail: format!(".{domain}."),
            slave_tail: format!(".slave.{domain}."),
            maps: Maps {
                // About 4 distinct names per task (the canonical names and the dcos-dns ones;
                // task names and SRV names are shared by a service's tasks).
                hosts: HashMap::with_capacity_and_hasher(tasks * 4 + 64, Fx::default()),
                srvs: HashMap::with_capacity_and_hasher(tasks + 64, Fx::default()),
                ptrs: BTreeMap::new(),
            },
            sc: Scratch::default(),
        }
    }

    /// `frameworkRecords`. Returns every framework's names, in ID order, for the task pass.
    fn framework_records<'s>(&mut self, state: &'s ClusterState) -> Vec<FrameworkNames<'s>> {
        let mut out = Vec::with_capacity(state.frameworks.len());
        for (id, fw) in &state.frameworks {
            let frag = names::domain_frag(&fw.name, self.spec);
            // `HostPort`: the pid's host and port, else the hostname without a port.
            let host = fw.pid_ip.or_else(|| fw.hostname.trim().parse().ok());
            if let Some(ip) = host.map(|ip| ip.to_canonical()) {
                let a = format!("{frag}{}", self.tail);
                self.maps.insert_ip(&a, ip);
                if let Some(port) = fw.pid_port.filter(|_| valid_name(&a)) {
                    self.maps
                        .insert_srv(&format!("_framework._tcp.{a}"), &a, port);
                }
            }
            out.push(FrameworkNames {
                id,
                name: &fw.name,
                dcos: names::dcos_label(&fw.name),
                frag,
            });
        }
        out
    }

    /// `slaveRecords`. An agent without an IP gets none (Mesos-DNS would resolve its hostname).
    fn slave_records(&mut self, state: &ClusterState) {
        let a = format!("slave{}", self.tail);
        let srv = format!("_slave._tcp{}", self.tail);
        for agent in state.agents.values() {
            let Some(ip) = agent.ip.map(|ip| ip.to_canonical()) else {
                continue;
            };
            self.maps.insert_ip(&a, ip);
            if let Some(port) = agent.port {
                self.maps.insert_srv(&srv, &a, port);
            }
        }
    }

    /// `listenerRecord`: `dns.soa_mname` → the listen IP, unless it is unspecified.
    fn listener_record(&mut self, config: &Config) {
        let ip = config.dns.listen.ip().to_canonical();
        if ip.is_unspecified() {
            return;
        }
        let ns = format!("{}.", config.dns.soa_mname.trim_end_matches('.'));
        self.maps.insert_ip(&ns, ip);
    }

    /// `masterRecord`. Returns the leader's IP when there is one.
    fn master_records(&mut self, state: &ClusterState, masters: &[String]) -> Option<IpAddr> {
        let leader = state.leader.as_ref()?;
        let ip = leader.ip?.to_canonical();
        let port = leader.port;
        let t = &self.tail;
        let (leader_name, all) = (format!("leader{t}"), format!("master{t}"));
        let (tcp, udp) = (format!("_leader._tcp{t}"), format!("_leader._udp{t}"));
        let maps = &mut self.maps;
        maps.insert_ip(&leader_name, ip);
        maps.insert_ip(&all, ip);
        maps.insert_srv(&tcp, &leader_name, port);
        maps.insert_srv(&udp, &leader_name, port);

        let mut added_leader = false;
        let mut idx = 0usize;
        for (m_ip, m_port) in masters.iter().filter_map(|m| master_addr(m)) {
            let is_leader = m_ip == ip && m_port == port;
            if !is_leader && !maps.insert_ip(&all, m_ip) {
                continue; // a duplicate master
            }
            if is_leader && added_leader {
                continue; // the leader listed twice
            }
            maps.insert_ip(&format!("master{idx}{t}"), m_ip);
            idx += 1;
            added_leader |= is_leader;
        }
        if !added_leader {
            maps.insert_ip(&format!("master{idx}{t}"), ip);
        }
        Some(ip)
    }

    /// dcos-dns `leader_record` and `master_records` for `dcos.thisdcos.directory.`.
    fn dcos_master_records(&mut self, leader: IpAddr) {
        self.maps.insert_ip(&format!("leader.{DCOS_ZONE}"), leader);
        let all = format!("master{}", self.tail);
        let ips: Vec<IpAddr> = self
            .maps
            .hosts
            .get(&all)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let name = format!("master.{DCOS_ZONE}");
        for ip in ips {
            self.maps.insert_ip(&name, ip);
        }
    }

    /// `taskRecords` and dcos-dns's task records; returns the enumeration.
    fn task_records(
        &mut self,
        state: &ClusterState,
        frameworks: &[FrameworkNames<'_>],
    ) -> Enumeration {
        // Running tasks on known agents, grouped by framework (each group in task-ID order).
        let mut by_fw: HashMap<&str, Vec<&Task>, Fx> = HashMap::default();
        for task in state.tasks.values() {
            if task.state == TaskState::Running && state.agents.contains_key(&task.agent_id) {
                by_fw.entry(&task.framework_id).or_default().push(task);
            }
        }
        let mut enumeration = Enumeration {
            frameworks: Vec::with_capacity(frameworks.len()),
        };
        for fw in frameworks {
            let tasks = by_fw.remove(fw.id).unwrap_or_default();
            let mut efw = EnumerableFramework {
                tasks: Vec::with_capacity(tasks.len()),
                name: fw.name.to_string(),
            };
            for task in tasks {
                let agent_ip = state
                    .agents
                    .get(&task.agent_id)
                    .and_then(|a| a.ip)
                    .map(|ip| ip.to_canonical());
                let mut et = EnumerableTask {
                    name: task.name.clone(),
                    id: task.id.clone(),
                    records: Vec::with_capacity(16),
                };
                self.task_record(task, fw, agent_ip, &mut et.records);
                self.dcos_task_records(task, fw, agent_ip);
                efw.tasks.push(et);
            }
            enumeration.frameworks.push(efw);
        }
        enumeration
    }

    /// `taskRecord`: the legacy pass with the raw DiscoveryInfo name, then the sanitised pass;
    /// then the PTRs of the task's container IPs.
    fn task_record(
        &mut self,
        task: &Task,
        fw: &FrameworkNames<'_>,
        agent_ip: Option<IpAddr>,
        out: &mut Vec<EnumerableRecord>,
    ) {
        let sc = &mut self.sc;
        task_ips(task, agent_ip, &self.config.dns.ip_sources, &mut sc.ips);
        while sc.ip_texts.len() < sc.ips.len() {
            sc.ip_texts.push(String::new());
        }
        for (ip, text) in sc.ips.iter().zip(sc.ip_texts.iter_mut()) {
            text.clear();
            let _ = write!(text, "{ip}");
        }
        sc.agent_text.clear();
        if let Some(ip) = agent_ip {
            let _ = write!(sc.agent_text, "{ip}");
        }
        let di_name = task
            .discovery
            .as_ref()
            .and_then(|d| d.name.as_deref())
            .filter(|n| !n.is_empty());
        let pass = Pass {
            task,
            fw,
            agent_ip,
            has_di: di_name.is_some(),
        };
        let mut label = std::mem::take(&mut self.sc.label);
        label.clear();
        names::push_label(&mut label, di_name.unwrap_or(&task.name), self.spec);
        if let Some(raw) = di_name
            && raw != label
        {
            // A raw name that is already its label makes exactly the same records twice: the
            // second pass would add nothing.
            self.task_context_record(&pass, raw, out);
        }
        self.task_context_record(&pass, &label, out);
        self.sc.label = label;

        // `canonical.domain.` of the sanitised pass is still in `sc.canon`.
        let (sc, maps) = (&self.sc, &mut self.maps);
        if valid_name(&sc.canon) {
            for &ip in sc.ips.iter().filter(|&&ip| Some(ip) != agent_ip) {
                let names = maps.ptrs.entry(ip).or_default();
                if !names.contains(&sc.canon) {
                    names.insert(sc.canon.clone());
                }
            }
        }
    }

    /// `taskContextRecord` for one task name. Leaves `canonical.domain.` in `sc.canon`.
    fn task_context_record(&mut self, p: &Pass<'_>, name: &str, out: &mut Vec<EnumerableRecord>) {
        let Gen {
            spec,
            tail,
            slave_tail,
            maps,
            sc,
            ..
        } = self;
        let (tail, slave_tail, spec) = (tail.as_str(), slave_tail.as_str(), *spec);
        let frag = p.fw.frag.as_str();
        sc.canon.clear();
        names::push_canonical_label(&mut sc.canon, name, &p.task.id, &p.task.agent_id);
        sc.canon.push('.');
        sc.canon.push_str(frag);
        sc.slave.clear();
        sc.slave.push_str(&sc.canon);
        sc.slave.push_str(slave_tail);
        sc.canon.push_str(tail);

        // A/AAAA: `task.framework.domain.` and `canonical.domain.` → the task IPs.
        if !sc.ips.is_empty() {
            set(&mut sc.name, &[name, ".", frag, tail]);
            for (&ip, text) in sc.ips.iter().zip(&sc.ip_texts) {
                maps.task_ip(&sc.name, ip, text, out);
                maps.task_ip(&sc.canon, ip, text, out);
            }
        }
        // `….slave.domain.` → the agent IP.
        if let Some(ip) = p.agent_ip {
            set(&mut sc.name, &[name, ".", frag, slave_tail]);
            maps.task_ip(&sc.name, ip, &sc.agent_text, out);
            maps.task_ip(&sc.slave, ip, &sc.agent_text, out);
        }

        // SRV per host port: `_task._tcp|_udp.framework.slave.domain.` (and without `.slave`
        // when there is no DiscoveryInfo) → `canonical.slave.domain.:port`.
        if !p.task.host_ports.is_empty() && valid_name(&sc.slave) {
            let tails: &[&str] = if p.has_di {
                &[slave_tail]
            } else {
                &[slave_tail, tail]
            };
            for &port in &p.task.host_ports {
                for t in tails {
                    for proto in ["tcp", "udp"] {
                        set(&mut sc.name, &["_", name, "._", proto, ".", frag, t]);
                        maps.task_srv(&sc.name, &sc.slave, port, out);
                    }
                }
            }
        }

        // SRV per DiscoveryInfo port (`withProtocol`, then `withNamedPort`: first the names
        // without the port name, then with it) → `canonical.domain.:number`.
        let Some(di) = p.task.discovery.as_ref().filter(|_| p.has_di) else {
            return;
        };
        if !valid_name(&sc.canon) {
            return;
        }
        for port in &di.ports {
            sc.proto.clear();
            names::push_label(&mut sc.proto, &port.protocol, spec);
            sc.port_name.clear();
            names::push_label(&mut sc.port_name, port.name.as_deref().unwrap_or(""), spec);
            let protos: [&str; 2] = if sc.proto.is_empty() {
                ["tcp", "udp"]
            } else {
                [sc.proto.as_str(), ""]
            };
            let prefixes: [&str; 2] = ["", sc.port_name.as_str()];
            for (i, prefix) in prefixes.iter().enumerate() {
                if i == 1 && prefix.is_empty() {
                    continue;
                }
                for proto in protos.iter().filter(|p| !p.is_empty()) {
                    let (pre, dot) = if prefix.is_empty() {
                        ("", "")
                    } else {
                        ("_", ".")
                    };
                    set(
                        &mut sc.name,
                        &[pre, prefix, dot, "_", name, "._", proto, ".", frag, tail],
                    );
                    maps.task_srv(&sc.name, &sc.canon, port.number, out);
                }
            }
        }
    }

    /// dcos-dns `task_agentip`, `task_containerip`, `task_autoip`. dcos-net publishes a task
    /// only once its agent's IP is known.
    fn dcos_task_records(
        &mut self,
        task: &Task,
        fw: &FrameworkNames<'_>,
        agent_ip: Option<IpAddr>,
    ) {
        let Some(agent_ip) = agent_ip else {
            return;
        };
        let raw = task
            .discovery
            .as_ref()
            .and_then(|d| d.name.as_deref())
            .unwrap_or(&task.name);
        let sc = &mut self.sc;
        // Tasks of one service come one after another (task IDs start with the service name):
        // the last label is usually the one needed.
        if sc.dcos_raw != raw {
            sc.dcos_raw.clear();
            sc.dcos_raw.push_str(raw);
            sc.dcos_label = names::dcos_label(raw);
        }
        if sc.dcos_label.is_empty() || fw.dcos.is_empty() {
            return;
        }
        let maps = &mut self.maps;
        let base = [sc.dcos_label.as_str(), ".", &fw.dcos, "."];
        set(&mut sc.name, &base);
        sc.name.push_str("agentip.");
        sc.name.push_str(DCOS_ZONE);
        maps.insert_ip(&sc.name, agent_ip);
        set(&mut sc.name, &base);
        sc.name.push_str("containerip.");
        sc.name.push_str(DCOS_ZONE);
        for &ip in &task.netinfo_ips {
            maps.insert_ip(&sc.name, ip.to_canonical());
        }
        set(&mut sc.name, &base);
        sc.name.push_str("autoip.");
        sc.name.push_str(DCOS_ZONE);
        if task.ports.iter().any(|p| p.host_port.is_some()) {
            maps.insert_ip(&sc.name, agent_ip);
        } else {
            for &ip in &task.netinfo_ips {
                maps.insert_ip(&sc.name, ip.to_canonical());
            }
        }
    }

    /// Named-VIP names and their PTRs.
    fn vip_records(&mut self, snapshot: &Snapshot) {
        let published: HashSet<IpAddr, Fx> = snapshot.vips.iter().map(|v| v.key.ip).collect();
        for nv in snapshot.named.values() {
            let name = format!("{}.", nv.fqdn.trim_end_matches('.'));
            let v4 = IpAddr::V4(nv.ipv4);
            for ip in std::iter::once(v4).chain(nv.ipv6.map(IpAddr::V6)) {
                if published.contains(&ip) && self.maps.insert_ip(&name, ip) {
                    self.maps.ptrs.entry(ip).or_default().insert(name.clone());
                }
            }
        }
    }
}

/// What both name passes of one task share.
struct Pass<'a> {
    task: &'a Task,
    fw: &'a FrameworkNames<'a>,
    agent_ip: Option<IpAddr>,
    /// `HasDiscoveryInfo`: a DiscoveryInfo with a non-empty name.
    has_di: bool,
}

/// `Task.IPs(ipSources...)`: the IPs of the first source that yields any, into `out`.
fn task_ips(task: &Task, agent_ip: Option<IpAddr>, sources: &[IpSource], out: &mut Vec<IpAddr>) {
    out.clear();
    for src in sources {
        match src {
            IpSource::Netinfo => out.extend(task.netinfo_ips.iter().copied()),
            IpSource::Mesos => out.extend(task.mesos_ip),
            IpSource::Docker => out.extend(task.docker_ip),
            IpSource::Host => out.extend(agent_ip),
        }
        if !out.is_empty() {
            break;
        }
    }
    for ip in out.iter_mut() {
        *ip = ip.to_canonical();
    }
}

/// A master URL's host (when it is an IP) and port (the URL's, else 80 as the client uses).
fn master_addr(url: &str) -> Option<(IpAddr, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some((ip.to_canonical(), uri.port_u16().unwrap_or(80)))
}

/// The entries of `map` as a `BTreeMap`: sorted unstably (keys are unique), then bulk-built.
fn sorted_map<V>(map: HashMap<String, V, Fx>) -> BTreeMap<String, V> {
    let mut v: Vec<(String, V)> = map.into_iter().collect();
    v.sort_unstable_by(|a, b| str_cmp(&a.0, &b.0));
    v.into_iter().collect()
}

/// `a.cmp(b)`, deciding on the first 8 bytes in registers when they differ (most names of a
/// large zone do; a `memcmp` call per comparison showed in profiles).
fn str_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if let (Some(pa), Some(pb)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*pa), u64::from_be_bytes(*pb));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

/// Sets `buf` to the concatenation of `parts`.
fn set(buf: &mut String, parts: &[&str]) {
    buf.clear();
    for part in parts {
        buf.push_str(part);
    }
}

/// Appends `n` in decimal.
fn push_u16(out: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Whether `name` (absolute, with the trailing dot) can be served: 1 to 63 bytes per label,
/// at most 253 characters without the final dot, printable ASCII other than `\`. One pass.
fn valid_name(name: &str) -> bool {
    let Some((b'.', body)) = name.as_bytes().split_last() else {
        return false;
    };
    if body.is_empty() || body.len() > 253 {
        return false;
    }
    let mut label = 0usize;
    for &c in body {
        if c == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if c.is_ascii_graphic() && c != b'\\' && label < 63 {
            label += 1;
        } else {
            return false;
        }
    }
    label > 0
}

// === impl FxHasher ===

/// The hasher of the generator's maps: rustc's Fx hash (multiply-rotate over 8-byte words), a
/// few times faster than SipHash on the short names hashed here (it showed at 8% of a build).
/// Not collision-resistant against crafted keys: names come from the cluster's own frameworks
/// and tasks, and a collision costs time, never correctness.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

type Fx = BuildHasherDefault<FxHasher>;

impl FxHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::discovery::decode::test_support::{fixture, ip};
    use crate::discovery::decode::{marathon_apps, mesos_operator_state, mesos_state};
    use crate::model::{Agent, DiscoveryInfo, DiscoveryPort, Framework, Master, StateKind};

    // === helpers ===

    fn config(domain: &str, sources: &[IpSource], rfc952: bool, masters: &[&str]) -> Config {
        let mut c = Config::default();
        c.dns.domain = domain.into();
        c.dns.ip_sources = sources.to_vec();
        c.dns.enforce_rfc952 = rfc952;
        c.discovery.mesos = masters.iter().map(|m| m.to_string()).collect();
        c
    }

    fn snapshot(state: ClusterState) -> Snapshot {
        Snapshot {
            version: 7,
            state: Arc::new(state),
            ..Snapshot::empty()
        }
    }

    /// The A (IPv4) values of `name`, sorted, as text.
    fn a(r: &Records, name: &str) -> Vec<String> {
        addrs(r, name, true)
    }

    /// The AAAA (IPv6) values of `name`, sorted, as text.
    fn aaaa(r: &Records, name: &str) -> Vec<String> {
        addrs(r, name, false)
    }

    fn addrs(r: &Records, name: &str, v4: bool) -> Vec<String> {
        let mut v: Vec<String> = r
            .hosts
            .get(name)
            .into_iter()
            .flatten()
            .filter(|ip| ip.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        v.sort();
        v
    }

    /// The SRV values of `name` as Mesos-DNS writes them (`target:port`), sorted.
    fn srv(r: &Records, name: &str) -> Vec<String> {
        let mut v: Vec<String> = r
            .srvs
            .get(name)
            .into_iter()
            .flatten()
            .map(|s| format!("{}:{}", s.target, s.port))
            .collect();
        v.sort();
        v
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    use IpSource::{Docker, Host, Mesos, Netinfo};

    /// `generator_test.go` `testRecordGenerator`: `factories/fake.json` with the leader
    /// `master@144.76.157.37:5050`, masters `[144.76.157.37:5050]`, SOA mname
    /// `mesos-dns.mesos.`, listener 127.0.0.1, RFC 952. `drop_big_dog` removes the second task
    /// that shares the ID `liquor-store.b8db9f73-…` (our state keys tasks by ID, so of the two
    /// the later one, `big.dog2`, is kept otherwise). Every task's `framework_id` is set to its
    /// enclosing framework's ID (see below).
    fn fake(sources: &[IpSource], drop_big_dog: bool) -> Records {
        let mut c = config("mesos", sources, true, &["http://144.76.157.37:5050"]);
        c.dns.soa_mname = "mesos-dns.mesos".into();
        c.dns.listen = "127.0.0.1:53".parse().unwrap();
        Records::build(&snapshot(fake_state(drop_big_dog)), &c)
    }

    fn fake_state(drop_big_dog: bool) -> ClusterState {
        let mut doc: Value = serde_json::from_slice(&fixture("mesos-dns/fake.json")).unwrap();
        for fw in doc["frameworks"].as_array_mut().unwrap() {
            let fw_id = fw["id"].clone();
            let tasks = fw["tasks"].as_array_mut().unwrap();
            if drop_big_dog {
                tasks.retain(|t| t["name"] != "big.dog2");
            }
            // Mesos-DNS files a task under the framework it is listed in; our decoder uses the
            // task's `framework_id`, which fake.json gets wrong for `some-box` (`…-5348-000`).
            for t in tasks {
                t["framework_id"] = fw_id.clone();
            }
        }
        let mut state = mesos_state(&serde_json::to_vec(&doc).unwrap()).unwrap();
        state.leader = Some(Master {
            hostname: "144.76.157.37".into(),
            ip: Some(ip("144.76.157.37")),
            port: 5050,
        });
        state
    }

    // === Mesos-DNS generator_test.go ===

    #[test]
    fn fake_state_matches_generator_test_insert_state() {
        let rg = fake(&[Netinfo, Docker, Mesos, Host], false);
        let none: Vec<String> = Vec::new();
        assert_eq!(a(&rg, "big-dog.marathon.mesos."), ["10.3.0.1"]);
        // Mesos-DNS: [10.3.0.1, 10.3.0.2]; 10.3.0.1 is the task whose ID `big.dog2` reuses
        // (checked with `drop_big_dog` below).
        assert_eq!(a(&rg, "liquor-store.marathon.mesos."), ["10.3.0.2"]);
        assert_eq!(a(&rg, "liquor-store.marathon.slave.mesos."), ["1.2.3.12"]);
        assert_eq!(a(&rg, "car-store.marathon.slave.mesos."), ["1.2.3.11"]);
        assert_eq!(a(&rg, "nginx.marathon.mesos."), ["10.3.0.3"]);
        assert_eq!(a(&rg, "poseidon.marathon.mesos."), none);
        assert_eq!(a(&rg, "poseidon.marathon.slave.mesos."), none);
        assert_eq!(a(&rg, "master.mesos."), ["144.76.157.37"]);
        assert_eq!(a(&rg, "master0.mesos."), ["144.76.157.37"]);
        assert_eq!(a(&rg, "leader.mesos."), ["144.76.157.37"]);
        assert_eq!(a(&rg, "slave.mesos."), ["1.2.3.10", "1.2.3.11", "1.2.3.12"]);
        // The framework name is sanitised too (RFC 952: 24 characters).
        assert_eq!(
            a(&rg, "some-box.chronoswithaspaceandmixe.mesos."),
            ["1.2.3.11"]
        );
        assert_eq!(a(&rg, "marathon.mesos."), ["1.2.3.11"]);

        assert_eq!(
            aaaa(&rg, "toy-store.ipv6-framework.mesos."),
            ["fd01:b::1:8000:2"]
        );
        assert_eq!(
            aaaa(&rg, "toy-store.ipv6-framework.slave.mesos."),
            ["2001:db8::1"]
        );
        assert_eq!(aaaa(&rg, "ipv6-framework.mesos."), ["2001:db8::1"]);
        assert_eq!(aaaa(&rg, "slave.mesos."), ["2001:db8::1"]);

        assert_eq!(
            srv(&rg, "_big-dog._tcp.marathon.mesos."),
            sorted(&[
                "big-dog-4dfjd-0.marathon.mesos.:80",
                "big-dog-4dfjd-0.marathon.mesos.:443"
            ])
        );
        assert_eq!(srv(&rg, "_poseidon._tcp.marathon.mesos."), none);
        assert_eq!(srv(&rg, "_leader._tcp.mesos."), ["leader.mesos.:5050"]);
        assert_eq!(
            srv(&rg, "_liquor-store._tcp.marathon.mesos."),
            sorted(&[
                "liquor-store-zasmd-1.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ])
        );
        assert_eq!(srv(&rg, "_liquor-store._udp.marathon.mesos."), none);
        assert_eq!(srv(&rg, "_liquor-store.marathon.mesos."), none);
        assert_eq!(
            srv(&rg, "_https._liquor-store._tcp.marathon.mesos."),
            ["liquor-store-zasmd-1.marathon.mesos.:443"]
        );
        assert_eq!(
            srv(&rg, "_http._liquor-store._tcp.marathon.mesos."),
            ["liquor-store-zasmd-1.marathon.mesos.:80"]
        );
        let car = sorted(&[
            "car-store-zinaz-0.marathon.slave.mesos.:31364",
            "car-store-zinaz-0.marathon.slave.mesos.:31365",
        ]);
        assert_eq!(srv(&rg, "_car-store._tcp.marathon.mesos."), car);
        assert_eq!(srv(&rg, "_car-store._udp.marathon.mesos."), car);
        assert_eq!(srv(&rg, "_slave._tcp.mesos."), ["slave.mesos.:5051"]);
        assert_eq!(
            srv(&rg, "_framework._tcp.marathon.mesos."),
            ["marathon.mesos.:25501"]
        );

        // The SOA mname listener record.
        assert_eq!(a(&rg, "mesos-dns.mesos."), ["127.0.0.1"]);
    }

    #[test]
    fn fake_state_without_the_duplicate_id_matches_every_liquor_store_expectation() {
        let rg = fake(&[Netinfo, Docker, Mesos, Host], true);
        assert_eq!(
            a(&rg, "liquor-store.marathon.mesos."),
            ["10.3.0.1", "10.3.0.2"]
        );
        assert_eq!(
            a(&rg, "liquor-store.marathon.slave.mesos."),
            ["1.2.3.11", "1.2.3.12"]
        );
        assert_eq!(
            srv(&rg, "_liquor-store._tcp.marathon.mesos."),
            sorted(&[
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ])
        );
        assert_eq!(
            srv(&rg, "_https._liquor-store._tcp.marathon.mesos."),
            sorted(&[
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ])
        );
        assert_eq!(
            srv(&rg, "_http._liquor-store._tcp.marathon.mesos."),
            sorted(&[
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:80",
            ])
        );

        let slave = fake(&[Host], true);
        assert_eq!(
            a(&slave, "liquor-store.marathon.mesos."),
            ["1.2.3.11", "1.2.3.12"]
        );
        let docker = fake(&[Docker, Host], true);
        assert_eq!(
            a(&docker, "liquor-store.marathon.mesos."),
            ["10.3.0.1", "10.3.0.2"]
        );
        let mesos = fake(&[Mesos, Host], true);
        assert_eq!(
            a(&mesos, "liquor-store.marathon.mesos."),
            ["1.2.3.11", "1.2.3.12"]
        );
    }

    #[test]
    fn fake_state_ip_sources_match_generator_test() {
        let slave = fake(&[Host], false);
        assert_eq!(a(&slave, "nginx.marathon.mesos."), ["1.2.3.11"]);
        assert_eq!(a(&slave, "car-store.marathon.slave.mesos."), ["1.2.3.11"]);
        assert_eq!(
            aaaa(&slave, "toy-store.ipv6-framework.mesos."),
            ["2001:db8::1"]
        );
        assert_eq!(
            aaaa(&slave, "toy-store.ipv6-framework.slave.mesos."),
            ["2001:db8::1"]
        );

        let mesos = fake(&[Mesos, Host], false);
        assert_eq!(a(&mesos, "nginx.marathon.mesos."), ["10.3.0.3"]);
        assert_eq!(a(&mesos, "car-store.marathon.slave.mesos."), ["1.2.3.11"]);
        assert_eq!(
            aaaa(&mesos, "toy-store.ipv6-framework.mesos."),
            ["2001:db8::1"]
        );
        assert_eq!(
            aaaa(&mesos, "toy-store.ipv6-framework.slave.mesos."),
            ["2001:db8::1"]
        );

        let netinfo = fake(&[Netinfo], false);
        assert_eq!(
            a(&netinfo, "toy-store.ipv6-framework.mesos."),
            ["12.0.1.2", "12.0.1.3"]
        );
        assert_eq!(
            aaaa(&netinfo, "toy-store.ipv6-framework.mesos."),
            ["fd01:b::1:8000:2"]
        );
        assert_eq!(
            aaaa(&netinfo, "toy-store.ipv6-framework.slave.mesos."),
            ["2001:db8::1"]
        );

        let docker = fake(&[Docker, Host], false);
        assert_eq!(a(&docker, "nginx.marathon.mesos."), ["1.2.3.11"]);
        assert_eq!(a(&docker, "car-store.marathon.slave.mesos."), ["1.2.3.11"]);
        assert_eq!(
            aaaa(&docker, "toy-store.ipv6-framework.mesos."),
            ["2001:db8::1"]
        );
        assert_eq!(
            aaaa(&docker, "toy-store.ipv6-framework.slave.mesos."),
            ["2001:db8::1"]
        );
    }

    #[test]
    fn legacy_discovery_names_are_inserted_raw_too() {
        // generator.go inserts every record once with the raw DiscoveryInfo name (`LEGACY`).
        let rg = fake(&[Netinfo, Docker, Mesos, Host], true);
        assert_eq!(
            a(&rg, "liquor.store.marathon.mesos."),
            ["10.3.0.1", "10.3.0.2"]
        );
        assert_eq!(
            srv(&rg, "_http._liquor.store._tcp.marathon.mesos."),
            sorted(&[
                "liquor.store-4dfjd-0.marathon.mesos.:80",
                "liquor.store-zasmd-1.marathon.mesos.:80",
            ])
        );
    }

    #[test]
    fn rfc1123_keeps_longer_framework_names() {
        let mut c = config("mesos", &[Host], false, &[]);
        c.dns.listen = "0.0.0.0:53".parse().unwrap();
        let r = Records::build(&snapshot(fake_state(false)), &c);
        // `chronos with a space AND MIXED CASE-2.0.1`: spaces dropped, the dots kept.
        assert_eq!(
            a(&r, "some-box.chronoswithaspaceandmixedcase-2.0.1.mesos."),
            ["1.2.3.11"]
        );
        assert!(
            !r.hosts
                .contains_key("some-box.chronoswithaspaceandmixe.mesos.")
        );
        // An unspecified listen address gives the SOA mname no record.
        assert!(!r.hosts.contains_key("ns1.mesos."));
    }

    /// generator_test.go TestMasterRecord, with master URLs for `IP:port` pairs.
    #[test]
    fn master_records_match_generator_test() {
        type Case<'a> = (
            &'a [&'a str],
            Option<(&'a str, u16)>,
            &'a [(&'a str, &'a str)],
        );
        let leader_srv: &[(&str, &str)] = &[
            ("_leader._tcp.foo.com.", "leader.foo.com.:7"),
            ("_leader._udp.foo.com.", "leader.foo.com.:7"),
        ];
        let cases: &[Case<'_>] = &[
            (&[], None, &[]),
            (
                &[],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.6"),
                ],
            ),
            (
                &[],
                Some(("2001:db8::1", 7)),
                &[
                    ("leader.foo.com.", "2001:db8::1"),
                    ("master.foo.com.", "2001:db8::1"),
                    ("master0.foo.com.", "2001:db8::1"),
                ],
            ),
            // single master: leader and fallback
            (
                &["http://0.0.0.6:7"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.6"),
                ],
            ),
            // leader not in fallback list
            (
                &["http://0.0.0.8:9"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.8"),
                ],
            ),
            // duplicate fallback masters, leader not in fallback list
            (
                &["http://0.0.0.8:9", "http://0.0.0.8:9"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.8"),
                ],
            ),
            // leader that's also listed in the fallback list (at the end)
            (
                &["http://0.0.0.8:9", "http://0.0.0.6:7"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.8"),
                ],
            ),
            // duplicate leading masters in the fallback list
            (
                &["http://0.0.0.8:9", "http://0.0.0.6:7", "http://0.0.0.6:7"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master0.foo.com.", "0.0.0.8"),
                ],
            ),
            // leader that's also listed in the fallback list (in the middle)
            (
                &["http://0.0.0.8:9", "http://0.0.0.6:7", "http://0.0.0.7:0"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master.foo.com.", "0.0.0.7"),
                    ("master0.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master2.foo.com.", "0.0.0.7"),
                ],
            ),
            (
                &[
                    "http://0.0.0.8:9",
                    "http://0.0.0.6:7",
                    "http://[2001:db8::1]:0",
                ],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master.foo.com.", "2001:db8::1"),
                    ("master0.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                    ("master2.foo.com.", "2001:db8::1"),
                ],
            ),
            // Not in generator_test.go: a master that is not an IP is skipped, unnumbered.
            (
                &["http://master.example:5050", "http://0.0.0.8:9"],
                Some(("0.0.0.6", 7)),
                &[
                    ("leader.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.6"),
                    ("master.foo.com.", "0.0.0.8"),
                    ("master0.foo.com.", "0.0.0.8"),
                    ("master1.foo.com.", "0.0.0.6"),
                ],
            ),
        ];
        for (i, (masters, leader, want)) in cases.iter().enumerate() {
            let mut c = config("foo.com", &[Host], false, masters);
            c.dns.listen = "[::]:53".parse().unwrap();
            let state = ClusterState {
                kind: StateKind::Mesos,
                leader: leader.map(|(l, port)| Master {
                    hostname: String::new(),
                    ip: Some(ip(l)),
                    port,
                }),
                ..ClusterState::default()
            };
            let r = Records::build(&snapshot(state), &c);
            let mut want_hosts: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
            for (name, addr) in *want {
                want_hosts
                    .entry(name.to_string())
                    .or_default()
                    .insert(ip(addr));
            }
            let mesos_hosts: BTreeMap<String, BTreeSet<IpAddr>> = r
                .hosts
                .clone()
                .into_iter()
                .filter(|(n, _)| n.ends_with(".foo.com."))
                .collect();
            assert_eq!(mesos_hosts, want_hosts, "case {}", i + 1);
            let want_srvs: BTreeMap<String, BTreeSet<Srv>> = if leader.is_some() {
                leader_srv
                    .iter()
                    .map(|(n, _)| {
                        let t = Srv {
                            target: "leader.foo.com.".into(),
                            port: 7,
                        };
                        (n.to_string(), BTreeSet::from([t]))
                    })
                    .collect()
            } else {
                BTreeMap::new()
            };
            assert_eq!(r.srvs, want_srvs, "case {}", i + 1);
        }
    }

    #[test]
    fn soa_mname_gets_the_listen_address() {
        // generator_test.go TestParseState_SOAMname.
        for (mname, listen, want) in [
            ("jdef123.mesos.", "4.5.6.7:53", "4.5.6.7"),
            ("ack456.mesos", "[2001:db8::1]:53", "2001:db8::1"),
            ("ns1.mesos", "127.0.0.1:8053", "127.0.0.1"),
        ] {
            let mut c = config("mesos", &[Host], false, &[]);
            c.dns.soa_mname = mname.into();
            c.dns.listen = listen.parse::<SocketAddr>().unwrap();
            let r = Records::build(&snapshot(ClusterState::default()), &c);
            let name = format!("{}.", mname.trim_end_matches('.'));
            assert_eq!(r.hosts[&name], BTreeSet::from([ip(want)]), "{mname}");
        }
    }

    // === docs/docs/http.md ===

    /// The cluster of the `/v1/enumerate` example in docs/docs/http.md: Metronome without tasks,
    /// and Marathon running `nginx` with a DiscoveryInfo port `nginx` (tcp 7564) on agent `S1`.
    fn docs_cluster() -> ClusterState {
        let agent = "20161012-091009-1208001546-5050-1-S1";
        let mut state = ClusterState {
            kind: StateKind::Mesos,
            ..ClusterState::default()
        };
        for (id, name) in [("fw-0001", "metronome"), ("fw-0002", "marathon")] {
            let fw = Framework {
                id: id.into(),
                name: name.into(),
                ..Framework::default()
            };
            state.frameworks.insert(id.into(), fw);
        }
        let a = Agent {
            id: agent.into(),
            hostname: "10.10.0.93".into(),
            ip: Some(ip("10.10.0.93")),
            port: Some(5051),
        };
        state.agents.insert(agent.into(), a);
        let task = Task {
            id: "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001".into(),
            name: "nginx".into(),
            framework_id: "fw-0002".into(),
            agent_id: agent.into(),
            state: TaskState::Running,
            host_ports: vec![7564],
            discovery: Some(DiscoveryInfo {
                name: Some("nginx".into()),
                visibility: Some("FRAMEWORK".into()),
                ports: vec![DiscoveryPort {
                    number: 7564,
                    name: Some("nginx".into()),
                    protocol: "tcp".into(),
                    labels: vec![],
                }],
            }),
            ..Task::default()
        };
        state.tasks.insert(task.id.clone(), Arc::new(task));
        state
    }

    #[test]
    fn enumeration_matches_the_http_md_example() {
        let c = config("mesos", &[Netinfo, Mesos, Host], false, &[]);
        let r = Records::build(&snapshot(docs_cluster()), &c);
        let want: Value = serde_json::from_str(
            r#"{
  "frameworks": [
    {
      "tasks": [],
      "name": "metronome"
    },
    {
      "tasks": [
        {
          "name": "nginx",
          "id": "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001",
          "records": [
            {
              "name": "nginx.marathon.mesos.",
              "host": "10.10.0.93",
              "rtype": "A"
            },
            {
              "name": "nginx-jhy6r-s1.marathon.mesos.",
              "host": "10.10.0.93",
              "rtype": "A"
            },
            {
              "name": "nginx.marathon.slave.mesos.",
              "host": "10.10.0.93",
              "rtype": "A"
            },
            {
              "name": "nginx-jhy6r-s1.marathon.slave.mesos.",
              "host": "10.10.0.93",
              "rtype": "A"
            },
            {
              "name": "_nginx._tcp.marathon.slave.mesos.",
              "host": "nginx-jhy6r-s1.marathon.slave.mesos.:7564",
              "rtype": "SRV"
            },
            {
              "name": "_nginx._udp.marathon.slave.mesos.",
              "host": "nginx-jhy6r-s1.marathon.slave.mesos.:7564",
              "rtype": "SRV"
            },
            {
              "name": "_nginx._tcp.marathon.mesos.",
              "host": "nginx-jhy6r-s1.marathon.mesos.:7564",
              "rtype": "SRV"
            },
            {
              "name": "_nginx._nginx._tcp.marathon.mesos.",
              "host": "nginx-jhy6r-s1.marathon.mesos.:7564",
              "rtype": "SRV"
            }
          ]
        }
      ],
      "name": "marathon"
    }
  ]
}"#,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&r.enumeration).unwrap(), want);
        // Agent IP == task IP: no PTR for it.
        assert!(r.ptrs.is_empty());
        assert_eq!(r.serial, 7);
        assert_eq!(
            r.zones,
            [
                "mesos.",
                "l4lb.thisdcos.directory.",
                "dcos.thisdcos.directory."
            ]
        );
    }

    #[test]
    fn srv_rules_follow_the_naming_md_table() {
        // naming.md: without DiscoveryInfo `_task._proto.framework.domain` targets
        // `task.framework.slave.domain` at the host port; with it, `task.framework.domain` at
        // the DiscoveryInfo port; `_task._proto.framework.slave.domain` always the host port.
        let c = config("mesos", &[Netinfo, Host], false, &[]);
        let mut state = docs_cluster();
        let mut no_di = (*state.tasks["nginx.48dccce7-90bc-11e6-ae70-70b3d5800001"]).clone();
        no_di.id = "web.1".into();
        no_di.name = "web".into();
        no_di.discovery = None;
        no_di.netinfo_ips = vec![ip("9.0.0.5")];
        let canon = {
            let mut s = String::new();
            names::push_canonical_label(&mut s, "web", "web.1", &no_di.agent_id);
            s
        };
        state.tasks.insert("web.1".into(), Arc::new(no_di));
        let r = Records::build(&snapshot(state), &c);
        let slave_target = format!("{canon}.marathon.slave.mesos.:7564");
        assert_eq!(
            srv(&r, "_web._tcp.marathon.mesos."),
            std::slice::from_ref(&slave_target)
        );
        assert_eq!(
            srv(&r, "_web._udp.marathon.mesos."),
            std::slice::from_ref(&slave_target)
        );
        assert_eq!(srv(&r, "_web._tcp.marathon.slave.mesos."), [slave_target]);
        assert_eq!(a(&r, &format!("{canon}.marathon.mesos.")), ["9.0.0.5"]);
        assert_eq!(
            a(&r, &format!("{canon}.marathon.slave.mesos.")),
            ["10.10.0.93"]
        );
        // With DiscoveryInfo: no `_nginx._udp.marathon.mesos.` (its port is tcp).
        assert_eq!(
            srv(&r, "_nginx._tcp.marathon.mesos."),
            ["nginx-jhy6r-s1.marathon.mesos.:7564"]
        );
        assert!(!r.srvs.contains_key("_nginx._udp.marathon.mesos."));
        // The container IP points back at the canonical name.
        assert_eq!(
            r.ptrs[&ip("9.0.0.5")],
            BTreeSet::from([format!("{canon}.marathon.mesos.")])
        );
    }

    #[test]
    fn discovery_ports_without_protocol_get_tcp_and_udp() {
        // chains.go withProtocol: an empty protocol means both.
        let c = config("mesos", &[Host], false, &[]);
        let mut state = docs_cluster();
        let id = "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001";
        let mut t = (*state.tasks[id]).clone();
        t.discovery = Some(DiscoveryInfo {
            name: Some("Front End".into()),
            visibility: None,
            ports: vec![DiscoveryPort {
                number: 80,
                name: Some("HTTP_port".into()),
                protocol: String::new(),
                labels: vec![],
            }],
        });
        state.tasks.insert(id.into(), Arc::new(t));
        let r = Records::build(&snapshot(state), &c);
        let target = "frontend-jhy6r-s1.marathon.mesos.:80";
        for n in [
            "_frontend._tcp.marathon.mesos.",
            "_frontend._udp.marathon.mesos.",
            "_http-port._frontend._tcp.marathon.mesos.",
            "_http-port._frontend._udp.marathon.mesos.",
        ] {
            assert_eq!(srv(&r, n), [target], "{n}");
        }
        // The raw name `Front End` is not a valid DNS name: no legacy records.
        assert!(r.hosts.keys().all(|n| !n.contains(' ')));
        assert_eq!(a(&r, "frontend.marathon.mesos."), ["10.10.0.93"]);
    }

    // === Marathon source ===

    #[test]
    fn marathon_state_has_framework_marathon_and_no_master_records() {
        let state = marathon_apps(&fixture("marathon/marathon15_apps.json")).unwrap();
        let task = state.tasks.values().next().unwrap().clone();
        assert_eq!(task.name, "pywebserver");
        let c = config(
            "mesos",
            &[Netinfo, Mesos, Host],
            false,
            &["http://10.0.0.1:5050"],
        );
        let r = Records::build(&snapshot(state), &c);
        assert_eq!(a(&r, "pywebserver.marathon.mesos."), ["172.17.0.2"]);
        assert_eq!(a(&r, "pywebserver.marathon.slave.mesos."), ["10.0.2.148"]);
        assert_eq!(a(&r, "slave.mesos."), ["10.0.2.148"]);
        for n in ["leader.mesos.", "master.mesos.", "master0.mesos."] {
            assert!(!r.hosts.contains_key(n), "{n}");
        }
        assert!(!r.srvs.contains_key("_leader._tcp.mesos."));
        assert!(!r.hosts.contains_key("leader.dcos.thisdcos.directory."));
        let mut canon = String::new();
        names::push_canonical_label(&mut canon, "pywebserver", &task.id, &task.agent_id);
        let slave_target = format!("{canon}.marathon.slave.mesos.");
        let want: Vec<String> = task
            .host_ports
            .iter()
            .map(|p| format!("{slave_target}:{p}"))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(srv(&r, "_pywebserver._tcp.marathon.mesos."), want);
        assert_eq!(r.enumeration.frameworks.len(), 1);
        assert_eq!(r.enumeration.frameworks[0].name, "marathon");
        assert_eq!(r.enumeration.frameworks[0].tasks[0].id, task.id);
        assert_eq!(
            a(
                &r,
                "pywebserver.marathon.containerip.dcos.thisdcos.directory."
            ),
            ["172.17.0.2"]
        );
    }

    // === dcos-dns (dcos_dns_mesos_tests.erl) ===

    /// Folds a Mesos operator API event stream (as dcos-net's listener does) into one
    /// `SUBSCRIBED` document: `TASK_ADDED` adds the task, `TASK_UPDATED` sets its state and
    /// appends the status, `FRAMEWORK_ADDED` / `FRAMEWORK_UPDATED` add the framework (a later
    /// entry with the same ID replaces an earlier one in the decoded state).
    fn fold_stream(path: &str) -> ClusterState {
        let body = fixture(path);
        let mut lines = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        let mut doc: Value = serde_json::from_slice(lines.next().unwrap()).unwrap();
        let mut tasks: Vec<Value> = Vec::new();
        let mut frameworks: Vec<Value> = Vec::new();
        for line in lines {
            let e: Value = serde_json::from_slice(line).unwrap();
            match e["type"].as_str().unwrap() {
                "TASK_ADDED" => tasks.push(e["task_added"]["task"].clone()),
                "TASK_UPDATED" => {
                    let u = &e["task_updated"];
                    let id = &u["status"]["task_id"]["value"];
                    let t = tasks
                        .iter_mut()
                        .find(|t| &t["task_id"]["value"] == id)
                        .unwrap();
                    t["state"] = u["state"].clone();
                    if !t["statuses"].is_array() {
                        t["statuses"] = Value::Array(vec![]);
                    }
                    t["statuses"]
                        .as_array_mut()
                        .unwrap()
                        .push(u["status"].clone());
                }
                // dcos-net handles both alike (`handle_framework_added`).
                "FRAMEWORK_ADDED" => frameworks.push(e["framework_added"]["framework"].clone()),
                "FRAMEWORK_UPDATED" => frameworks.push(e["framework_updated"]["framework"].clone()),
                _ => {}
            }
        }
        let st = &mut doc["subscribed"]["get_state"];
        st["get_tasks"]["tasks"] = Value::Array(tasks);
        let fws = st["get_frameworks"]["frameworks"].as_array_mut().unwrap();
        fws.extend(frameworks);
        mesos_operator_state(&serde_json::to_vec(&doc).unwrap()).unwrap()
    }

    /// `name.framework.kind.dcos.thisdcos.directory.`'s addresses of the family of `want`
    /// (the Erlang tests query A, or AAAA for the IPv6 case), as text.
    fn dcos(r: &Records, app: &str, fw: &str, kind: &str, want: &str) -> Vec<String> {
        let name = format!("{app}.{fw}.{kind}.{DCOS_ZONE}");
        addrs(r, &name, ip(want).is_ipv4())
    }

    #[test]
    fn dcos_names_match_dcos_dns_mesos_tests() {
        let c = config("mesos", &[Netinfo, Mesos, Host], false, &[]);
        let r = Records::build(
            &snapshot(fold_stream("mesos-operator-v1/operator-api.json")),
            &c,
        );
        // (app, agentip, autoip, containerip), from dcos_dns_mesos_tests.erl basic_test_.
        let cases = [
            ("none-on-host", "172.17.0.4", "172.17.0.4", "172.17.0.4"),
            ("none-on-dcos", "172.17.0.4", "9.0.2.5", "9.0.2.5"),
            ("ucr-on-host", "172.17.0.3", "172.17.0.3", "172.17.0.3"),
            ("ucr-on-bridge", "172.17.0.3", "172.17.0.3", "172.31.254.3"),
            ("ucr-on-dcos", "172.17.0.3", "9.0.1.6", "9.0.1.6"),
            ("docker-on-host", "172.17.0.4", "172.17.0.4", "172.17.0.4"),
            ("docker-on-bridge", "172.17.0.4", "172.17.0.4", "172.18.0.2"),
            ("docker-on-dcos", "172.17.0.4", "9.0.2.130", "9.0.2.130"),
            (
                "docker-on-ipv6",
                "172.17.0.4",
                "fd01:b::2:8000:0:2",
                "fd01:b::2:8000:0:2",
            ),
            ("pod-on-host", "172.17.0.4", "172.17.0.4", "172.17.0.4"),
            ("pod-on-bridge", "172.17.0.3", "172.17.0.3", "172.31.254.4"),
            ("pod-on-dcos", "172.17.0.3", "9.0.1.3", "9.0.1.3"),
        ];
        for (app, agent, auto, container) in cases {
            assert_eq!(
                dcos(&r, app, "marathon", "agentip", agent),
                [agent],
                "{app} agentip"
            );
            assert_eq!(
                dcos(&r, app, "marathon", "autoip", auto),
                [auto],
                "{app} autoip"
            );
            assert_eq!(
                dcos(&r, app, "marathon", "containerip", container),
                [container],
                "{app} containerip"
            );
        }

        let r = Records::build(
            &snapshot(fold_stream("mesos-operator-v1/hello-overlay.json")),
            &c,
        );
        let cases = [
            (
                "hello-world",
                "marathon",
                "10.0.0.49",
                "10.0.0.49",
                "10.0.0.49",
            ),
            (
                "hello-overlay-0-server",
                "hello-world",
                "10.0.0.49",
                "9.0.2.2",
                "9.0.2.2",
            ),
            (
                "hello-overlay-vip-0-server",
                "hello-world",
                "10.0.0.49",
                "9.0.2.3",
                "9.0.2.3",
            ),
            (
                "hello-host-vip-0-server",
                "hello-world",
                "10.0.0.49",
                "10.0.0.49",
                "10.0.0.49",
            ),
        ];
        for (app, fw, agent, auto, container) in cases {
            assert_eq!(
                dcos(&r, app, fw, "agentip", agent),
                [agent],
                "{app} agentip"
            );
            assert_eq!(dcos(&r, app, fw, "autoip", auto), [auto], "{app} autoip");
            assert_eq!(
                dcos(&r, app, fw, "containerip", container),
                [container],
                "{app} containerip"
            );
        }

        let r = Records::build(
            &snapshot(fold_stream("mesos-operator-v1/pod-tasks.json")),
            &c,
        );
        assert_eq!(
            dcos(&r, "app", "marathon", "agentip", "172.17.0.3"),
            ["172.17.0.3"]
        );
        assert_eq!(
            dcos(&r, "app", "marathon", "autoip", "9.0.0.2"),
            ["9.0.0.2"]
        );
        assert_eq!(
            dcos(&r, "app", "marathon", "containerip", "9.0.0.2"),
            ["9.0.0.2"]
        );
    }

    // === named VIPs and PTRs ===

    #[test]
    fn named_vips_get_a_and_aaaa_only_when_published() {
        use crate::model::{NamedVip, NamedVipKey, Protocol, Vip, VipKey};
        let vip = |addr: &str, name: &str| {
            Arc::new(Vip {
                key: VipKey {
                    protocol: Protocol::Tcp,
                    ip: ip(addr),
                    port: 80,
                },
                name: Some(name.into()),
                label: None,
                backends: vec![],
            })
        };
        let named = |name: &str, v4: &str, v6: Option<&str>| NamedVip {
            fqdn: format!("{name}.marathon.l4lb.thisdcos.directory"),
            ipv4: v4.parse().unwrap(),
            ipv6: v6.map(|s| s.parse().unwrap()),
            age_ms: None,
        };
        let key = |name: &str| NamedVipKey {
            name: format!("/{name}"),
            framework: "marathon".into(),
        };
        let mut snap = snapshot(ClusterState::default());
        snap.named
            .insert(key("both"), named("both", "11.0.0.1", Some("fd01:c::1")));
        snap.named.insert(
            key("v6only"),
            named("v6only", "11.0.0.2", Some("fd01:c::2")),
        );
        snap.named
            .insert(key("gone"), named("gone", "11.0.0.3", None));
        snap.vips = vec![
            vip("11.0.0.1", "both.marathon.l4lb.thisdcos.directory"),
            vip("fd01:c::1", "both.marathon.l4lb.thisdcos.directory"),
            vip("fd01:c::2", "v6only.marathon.l4lb.thisdcos.directory"),
        ];
        let r = Records::build(&snap, &config("mesos", &[Host], false, &[]));
        let both = "both.marathon.l4lb.thisdcos.directory.";
        assert_eq!(a(&r, both), ["11.0.0.1"]);
        assert_eq!(aaaa(&r, both), ["fd01:c::1"]);
        let v6only = "v6only.marathon.l4lb.thisdcos.directory.";
        assert_eq!(a(&r, v6only), Vec::<String>::new());
        assert_eq!(aaaa(&r, v6only), ["fd01:c::2"]);
        assert!(
            !r.hosts
                .contains_key("gone.marathon.l4lb.thisdcos.directory.")
        );
        assert_eq!(r.ptrs[&ip("11.0.0.1")], BTreeSet::from([both.to_string()]));
        assert_eq!(r.ptrs[&ip("fd01:c::1")], BTreeSet::from([both.to_string()]));
        assert!(!r.ptrs.contains_key(&ip("11.0.0.2")));
    }

    #[test]
    fn named_vips_from_a_real_snapshot() {
        let state =
            Arc::new(mesos_operator_state(&fixture("mesos-operator-v1/tcp-and-udp.json")).unwrap());
        let c = config("mesos", &[Netinfo, Mesos, Host], false, &[]);
        let snap = Snapshot::build(&state, &c, &Snapshot::empty());
        let nv = snap.named.values().next().expect("a named VIP").clone();
        assert_eq!(nv.fqdn, "app.marathon.l4lb.thisdcos.directory");
        let r = Records::build(&snap, &c);
        assert_eq!(
            r.hosts["app.marathon.l4lb.thisdcos.directory."],
            BTreeSet::from([IpAddr::V4(nv.ipv4)])
        );
    }

    #[test]
    fn ptrs_name_container_ips_only() {
        let c = config("mesos", &[Netinfo, Mesos, Host], false, &[]);
        let r = Records::build(
            &snapshot(fold_stream("mesos-operator-v1/operator-api.json")),
            &c,
        );
        // An overlay IP names its task's canonical name; agent IPs (host networking) get none.
        let names = &r.ptrs[&ip("9.0.2.130")];
        assert_eq!(names.len(), 1);
        let n = names.iter().next().unwrap();
        assert!(
            n.starts_with("docker-on-dcos-") && n.ends_with(".marathon.mesos."),
            "{n}"
        );
        assert_eq!(a(&r, n), ["9.0.2.130"]);
        for agent in ["172.17.0.3", "172.17.0.4"] {
            assert!(!r.ptrs.contains_key(&ip(agent)), "{agent}");
        }
        assert!(r.ptrs.contains_key(&ip("fd01:b::2:8000:0:2")));
    }

    #[test]
    fn dedupe_keeps_the_first_insertion_in_the_enumeration() {
        // Two tasks with the same name on the same agent: the shared `.slave` A record is
        // listed only under the first task (rrs.add semantics).
        let c = config("mesos", &[Host], false, &[]);
        let mut state = docs_cluster();
        let id = "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001";
        let mut t2 = (*state.tasks[id]).clone();
        t2.id = "nginx.zz".into();
        state.tasks.insert(t2.id.clone(), Arc::new(t2));
        let r = Records::build(&snapshot(state), &c);
        let tasks = &r.enumeration.frameworks[1].tasks;
        assert_eq!(tasks.len(), 2);
        let has = |i: usize, name: &str| tasks[i].records.iter().any(|rec| rec.name == name);
        assert!(has(0, "nginx.marathon.slave.mesos."));
        assert!(!has(1, "nginx.marathon.slave.mesos."));
        assert!(has(1, "_nginx._tcp.marathon.mesos."));
        assert_eq!(srv(&r, "_nginx._tcp.marathon.mesos.").len(), 2);
        assert_eq!(a(&r, "nginx.marathon.mesos."), ["10.10.0.93"]);
    }

    #[test]
    fn odd_names_never_make_invalid_records() {
        let c = config("mesos", &[Host], false, &["http://[::1]:5050", "not a url"]);
        let mut state = docs_cluster();
        let fw = state.frameworks.get_mut("fw-0002").unwrap();
        fw.name = "$$$".into();
        fw.pid_ip = Some(ip("10.0.0.9"));
        fw.pid_port = Some(8080);
        let id = "nginx.48dccce7-90bc-11e6-ae70-70b3d5800001";
        let mut t = (*state.tasks[id]).clone();
        t.framework_id = "fw-0001".into();
        t.name = "%%%".into();
        t.discovery = None;
        state.tasks.insert(id.into(), Arc::new(t));
        let r = Records::build(&snapshot(state), &c);
        for name in r.hosts.keys().chain(r.srvs.keys()) {
            assert!(valid_name(name), "{name:?}");
        }
        // The task with an empty label still has its canonical names.
        assert!(r.hosts.contains_key("-jhy6r-s1.metronome.mesos."));
        assert!(!r.hosts.contains_key(".metronome.mesos."));
    }
}
