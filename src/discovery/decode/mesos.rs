//! Mesos decoders: master `GET /master/state`, agent `GET /slave(1)/state` and the v1 operator
//! API `GET_STATE` answer → [`ClusterState`] (`StateKind::Mesos`).
//!
//! Normalisation follows dcos-net `dcos_net_mesos_listener`:
//! - statuses: the latest status by timestamp gives `healthy` (`handle_task_status`,
//!   `handle_task_healthy`); IPs (`container_status.network_infos[].ip_addresses[]`, plus the
//!   pre-1.0 `ip_address` field Mesos-DNS also reads) and the `*.NetworkSettings.IPAddress` labels
//!   come from the latest `TASK_RUNNING` status (Mesos-DNS `statusIPs`), else the latest status;
//! - ports (`handle_task_ports`): port mappings (`DOCKER`: `container.docker.port_mappings`;
//!   `MESOS` or no container: `container.network_infos[].port_mappings`, else the latest status's
//!   network infos) → `{protocol, port: container_port, host_port}`; DiscoveryInfo ports →
//!   `{name, protocol, labels}` with the number in `host_port` for `network-scope=host`, else in
//!   `port`, number 0 skipped; merged by `merge_task_ports`, then `merge_host_ports`
//!   (see `super`). The legacy `vip_PORT<n>` task labels are left to the model (it reads
//!   `Task::labels` and `Task::host_ports`).
//! - agents: IP from the libprocess pid (`slave(1)@10.0.1.248:5051`), else the hostname when it is
//!   an IP (never resolved here).
//!
//! Completed frameworks are skipped (as Mesos-DNS does); active frameworks' `completed_tasks` are
//! kept (they are terminal, so the model gives them no backends).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    DecodeError, List, MesosId, Obj, Val, is_host_scope, merge_host_ports, merge_task_ports, parse,
    parse_pid, ports_per_protocol, seconds_to_ms,
};
use crate::model::state::{
    Agent, ClusterState, DiscoveryInfo, DiscoveryPort, Framework, Master, StateKind, Task,
    TaskPort, TaskState,
};

/// Most host ports one task's `ports` resource may expand to (the whole port space).
const MAX_HOST_PORTS: usize = 65_536;

// === public decoders ===

/// Decodes a Mesos master `GET /master/state` response.
///
/// Agents from `slaves[]`, frameworks from `frameworks[]` (their `tasks`, `unreachable_tasks` and
/// `completed_tasks`), plus `orphan_tasks`; the leader from `leader` (`master@IP:PORT`) with the
/// hostname of `leader_info`, or of the answering master when it is the leader.
pub fn mesos_state(body: &[u8]) -> Result<ClusterState, DecodeError> {
    let doc: StateDoc = parse(body)?;
    let Some(frameworks) = doc.frameworks.as_ref() else {
        return Err(DecodeError::MissingField {
            expected: "Mesos /master/state",
            field: "frameworks",
        });
    };
    let mut state = ClusterState {
        kind: StateKind::Mesos,
        ..ClusterState::default()
    };
    for agent in doc.slaves.iter().flatten().filter_map(Obj::ok) {
        if let Some(a) = agent_from_state(agent) {
            state.agents.insert(a.id.clone(), a);
        }
    }
    state.leader = leader(&doc);
    let mut tasks = TaskSink::default();
    for fw in frameworks.iter().filter_map(Obj::ok) {
        let Some(framework) = framework_from_state(fw) else {
            continue;
        };
        for t in fw
            .completed_tasks
            .iter()
            .chain(fw.unreachable_tasks.iter())
            .chain(fw.tasks.iter())
            .filter_map(Obj::ok)
        {
            tasks.push(t, &framework.id, "");
        }
        state.frameworks.insert(framework.id.clone(), framework);
    }
    for t in doc.orphan_tasks.iter().filter_map(Obj::ok) {
        tasks.push(t, "", "");
    }
    tasks.finish(&mut state);
    Ok(state)
}

/// Decodes a Mesos agent `GET /slave(1)/state` (or `/state`) response.
///
/// The one agent comes from the top-level `id`, `hostname` and `pid`; tasks from
/// `frameworks[].executors[]` and `frameworks[].completed_executors[]` (`tasks`, `queued_tasks`,
/// `completed_tasks`). No leader (an agent only knows its master's hostname).
pub fn mesos_agent_state(body: &[u8]) -> Result<ClusterState, DecodeError> {
    let doc: StateDoc = parse(body)?;
    let Some(frameworks) = doc.frameworks.as_ref() else {
        return Err(DecodeError::MissingField {
            expected: "Mesos agent /state",
            field: "frameworks",
        });
    };
    let mut state = ClusterState {
        kind: StateKind::Mesos,
        ..ClusterState::default()
    };
    let me = AgentDoc {
        id: doc.id.clone(),
        hostname: doc.hostname.clone(),
        pid: doc.pid.clone(),
        ..AgentDoc::default()
    };
    let agent_id = agent_from_state(&me).map(|a| {
        let id = a.id.clone();
        state.agents.insert(id.clone(), a);
        id
    });
    let agent_id = agent_id.unwrap_or_default();
    let mut tasks = TaskSink::default();
    for fw in frameworks.iter().filter_map(Obj::ok) {
        let Some(framework) = framework_from_state(fw) else {
            continue;
        };
        for ex in fw
            .completed_executors
            .iter()
            .chain(fw.executors.iter())
            .filter_map(Obj::ok)
        {
            for t in ex
                .completed_tasks
                .iter()
                .chain(ex.queued_tasks.iter())
                .chain(ex.tasks.iter())
                .filter_map(Obj::ok)
            {
                tasks.push(t, &framework.id, &agent_id);
            }
        }
        // Some agent versions also list tasks directly under the framework.
        for t in fw.tasks.iter().filter_map(Obj::ok) {
            tasks.push(t, &framework.id, &agent_id);
        }
        state.frameworks.insert(framework.id.clone(), framework);
    }
    tasks.finish(&mut state);
    Ok(state)
}

/// Decodes a Mesos v1 operator API `GET_STATE` answer: `{"type": "GET_STATE", "get_state": {…}}`,
/// a bare `{"get_state": {…}}`, or the first event of a `SUBSCRIBE` stream
/// (`{"type": "SUBSCRIBED", "subscribed": {"get_state": {…}}}`).
///
/// Tasks from `get_tasks.tasks`, then `launched_tasks` (ids not seen yet), `unreachable_tasks` and
/// `completed_tasks`; agents from `get_agents.agents[]` (`agent_info`, IP from `pid`, else from an
/// IP `hostname`); frameworks from `get_frameworks.frameworks[].framework_info`. No leader.
pub fn mesos_operator_state(body: &[u8]) -> Result<ClusterState, DecodeError> {
    let doc: OperatorDoc = parse(body)?;
    let get_state = match (doc.get_state, doc.subscribed) {
        (Some(gs), _) => gs,
        (
            None,
            Some(Subscribed {
                get_state: Some(gs),
            }),
        ) => gs,
        _ => {
            return Err(DecodeError::MissingField {
                expected: "Mesos operator GET_STATE",
                field: "get_state",
            });
        }
    };
    let mut state = ClusterState {
        kind: StateKind::Mesos,
        ..ClusterState::default()
    };
    let agents = get_state.get_agents.and_then(|g| g.agents);
    for a in agents.iter().flatten().filter_map(Obj::ok) {
        let Some(info) = a.agent_info.ok() else {
            tracing::warn!(
                source = "mesos",
                "operator API agent without agent_info skipped"
            );
            continue;
        };
        let doc = AgentDoc {
            id: info.id.clone(),
            hostname: info.hostname.clone(),
            pid: a.pid.clone(),
            port: info.port.clone(),
        };
        if let Some(agent) = agent_from_state(&doc) {
            state.agents.insert(agent.id.clone(), agent);
        }
    }
    let frameworks = get_state.get_frameworks.and_then(|g| g.frameworks);
    for f in frameworks.iter().flatten().filter_map(Obj::ok) {
        let Some(info) = f.framework_info.ok() else {
            continue;
        };
        let doc = FrameworkDoc {
            id: info.id.clone(),
            name: info.name.clone(),
            hostname: info.hostname.clone(),
            pid: f.pid.clone(),
            ..FrameworkDoc::default()
        };
        if let Some(fw) = framework_from_state(&doc) {
            state.frameworks.insert(fw.id.clone(), fw);
        }
    }
    let mut tasks = TaskSink::default();
    if let Some(gt) = get_state.get_tasks.as_ref() {
        // Later lists only add ids not seen yet: `tasks` and `launched_tasks` overlap.
        tasks.first_wins = true;
        for list in [
            &gt.tasks,
            &gt.launched_tasks,
            &gt.unreachable_tasks,
            &gt.completed_tasks,
        ] {
            for t in list.iter().flatten().filter_map(Obj::ok) {
                tasks.push(t, "", "");
            }
        }
    }
    tasks.finish(&mut state);
    Ok(state)
}

// === documents ===

/// `/master/state` and agent `/state` (the same struct; each decoder reads its own fields).
#[derive(Deserialize)]
struct StateDoc {
    #[serde(default)]
    frameworks: Option<Vec<Obj<FrameworkDoc>>>,
    #[serde(default)]
    slaves: Option<Vec<Obj<AgentDoc>>>,
    #[serde(default)]
    orphan_tasks: List<Obj<TaskDoc>>,
    #[serde(default)]
    leader: Val<String>,
    #[serde(default)]
    leader_info: Obj<LeaderInfo>,
    #[serde(default)]
    id: MesosId,
    #[serde(default)]
    hostname: Val<String>,
    #[serde(default)]
    pid: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeaderInfo {
    hostname: Val<String>,
    port: Val<u16>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct AgentDoc {
    id: MesosId,
    hostname: Val<String>,
    pid: Val<String>,
    port: Val<u16>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FrameworkDoc {
    id: MesosId,
    name: Val<String>,
    hostname: Val<String>,
    pid: Val<String>,
    tasks: List<Obj<TaskDoc>>,
    unreachable_tasks: List<Obj<TaskDoc>>,
    completed_tasks: List<Obj<TaskDoc>>,
    executors: List<Obj<ExecutorDoc>>,
    completed_executors: List<Obj<ExecutorDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExecutorDoc {
    tasks: List<Obj<TaskDoc>>,
    queued_tasks: List<Obj<TaskDoc>>,
    completed_tasks: List<Obj<TaskDoc>>,
}

#[derive(Deserialize)]
struct OperatorDoc {
    #[serde(default)]
    get_state: Option<GetState>,
    #[serde(default)]
    subscribed: Option<Subscribed>,
}

#[derive(Deserialize)]
struct Subscribed {
    #[serde(default)]
    get_state: Option<GetState>,
}

#[derive(Deserialize)]
struct GetState {
    #[serde(default)]
    get_tasks: Option<GetTasks>,
    #[serde(default)]
    get_agents: Option<GetAgents>,
    #[serde(default)]
    get_frameworks: Option<GetFrameworks>,
}

#[derive(Deserialize)]
struct GetTasks {
    #[serde(default)]
    tasks: Option<Vec<Obj<TaskDoc>>>,
    #[serde(default)]
    launched_tasks: Option<Vec<Obj<TaskDoc>>>,
    #[serde(default)]
    unreachable_tasks: Option<Vec<Obj<TaskDoc>>>,
    #[serde(default)]
    completed_tasks: Option<Vec<Obj<TaskDoc>>>,
}

#[derive(Deserialize)]
struct GetAgents {
    #[serde(default)]
    agents: Option<Vec<Obj<V1Agent>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Agent {
    agent_info: Obj<V1AgentInfo>,
    pid: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1AgentInfo {
    id: MesosId,
    hostname: Val<String>,
    port: Val<u16>,
}

#[derive(Deserialize)]
struct GetFrameworks {
    #[serde(default)]
    frameworks: Option<Vec<Obj<V1Framework>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Framework {
    framework_info: Obj<V1FrameworkInfo>,
    pid: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct V1FrameworkInfo {
    id: MesosId,
    name: Val<String>,
    hostname: Val<String>,
}

/// A Mesos task in either the `/master/state` form (`id`, `slave_id`, label arrays, `resources`
/// map) or the v1 form (`task_id.value`, `agent_id.value`, `labels.labels`, `resources` list).
#[derive(Deserialize, Default)]
#[serde(default)]
struct TaskDoc {
    id: MesosId,
    task_id: MesosId,
    name: Val<String>,
    framework_id: MesosId,
    slave_id: MesosId,
    agent_id: MesosId,
    state: Val<String>,
    statuses: List<Obj<StatusDoc>>,
    labels: Labels,
    resources: Resources,
    discovery: Obj<DiscoveryDoc>,
    container: Obj<ContainerDoc>,
    health_check: Obj<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusDoc {
    state: Val<String>,
    timestamp: Val<f64>,
    healthy: Val<bool>,
    labels: Labels,
    container_status: Obj<ContainerStatusDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerStatusDoc {
    network_infos: List<Obj<NetworkInfoDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NetworkInfoDoc {
    /// Pre-1.0 single address.
    ip_address: Val<String>,
    ip_addresses: List<Obj<IpAddressDoc>>,
    port_mappings: List<Obj<PortMappingDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IpAddressDoc {
    ip_address: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PortMappingDoc {
    host_port: Val<u16>,
    container_port: Val<u16>,
    protocol: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerDoc {
    r#type: Val<String>,
    docker: Obj<DockerDoc>,
    /// `None` when the key is absent: dcos-net then falls back to the status's network infos.
    network_infos: Option<List<Obj<NetworkInfoDoc>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerDoc {
    port_mappings: List<Obj<PortMappingDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryDoc {
    name: Val<String>,
    visibility: Val<String>,
    ports: Obj<DiscoveryPortsDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryPortsDoc {
    ports: List<Obj<DiscoveryPortDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryPortDoc {
    number: Val<u16>,
    name: Val<String>,
    protocol: Val<String>,
    labels: Labels,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelDoc {
    key: Val<String>,
    value: Val<String>,
}

/// Mesos labels: an array of `{key, value}` (`/master/state`) or `{"labels": [...]}` (v1, and
/// DiscoveryInfo ports everywhere). Labels without a string key or with a non-string value are
/// counted in `bad`; a missing value is `""`.
#[derive(Debug, Default, Clone)]
struct Labels {
    pairs: Vec<(String, String)>,
    bad: usize,
}

impl Labels {
    fn from_list(list: List<Obj<LabelDoc>>) -> Labels {
        let mut out = Labels {
            pairs: Vec::with_capacity(list.items.len()),
            bad: usize::from(list.bad.is_some()),
        };
        for item in list.items {
            let Obj::Ok(l) = item else {
                out.bad += usize::from(matches!(item, Obj::Bad(_)));
                continue;
            };
            match (l.key, l.value) {
                (Val::Ok(k), Val::Ok(v)) => out.pairs.push((k, v)),
                (Val::Ok(k), Val::Absent) => out.pairs.push((k, String::new())),
                _ => out.bad += 1,
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LabelsVisitor)
    }
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mesos labels")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Labels, A::Error> {
        let list = List::<Obj<LabelDoc>>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Labels::from_list(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let mut out = Labels::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "labels" {
                out = Labels::from_list(map.next_value::<List<Obj<LabelDoc>>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Labels, E> {
        Ok(Labels::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Labels, E> {
        Ok(Labels {
            pairs: Vec::new(),
            bad: 1,
        })
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Labels, E> {
        self.visit_bool(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Labels, E> {
        self.visit_bool(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Labels, E> {
        self.visit_bool(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Labels, E> {
        self.visit_bool(false)
    }
}

/// A task's resources: `{"ports": "[31000-31001]", …}` (`/master/state`) or a list of
/// `{"name": "ports", "type": "RANGES", "ranges": {"range": [{begin, end}]}}` (v1).
#[derive(Default)]
struct Resources {
    /// The `/master/state` ranges string.
    text: Val<String>,
    /// The v1 resource list.
    list: Vec<Obj<ResourceDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResourceDoc {
    name: Val<String>,
    r#type: Val<String>,
    ranges: Obj<RangesDoc>,
    scalar: Obj<ScalarDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RangesDoc {
    range: List<Obj<RangeDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RangeDoc {
    begin: Val<u64>,
    end: Val<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ScalarDoc {
    value: Val<f64>,
}

impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ResourcesVisitor)
    }
}

struct ResourcesVisitor;

impl<'de> Visitor<'de> for ResourcesVisitor {
    type Value = Resources;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mesos resources")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resources, A::Error> {
        let mut out = Resources::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == "ports" {
                out.text = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Resources, A::Error> {
        let list =
            List::<Obj<ResourceDoc>>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Resources {
            text: Val::Absent,
            list: list.items,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Resources, E> {
        Ok(Resources::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Resources, E> {
        Ok(Resources::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Resources, E> {
        Ok(Resources::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Resources, E> {
        Ok(Resources::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Resources, E> {
        Ok(Resources::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Resources, E> {
        Ok(Resources::default())
    }
}

// === conversion ===

fn agent_from_state(a: &AgentDoc) -> Option<Agent> {
    let Some(id) = a.id.0.clone().filter(|s| !s.is_empty()) else {
        tracing::warn!(source = "mesos", "Mesos agent without an id skipped");
        return None;
    };
    let hostname = a.hostname.str().unwrap_or_default().to_string();
    let (pid_ip, pid_port) = a.pid.str().map(parse_pid).unwrap_or_default();
    Some(Agent {
        ip: pid_ip.or_else(|| hostname.parse().ok()),
        port: pid_port.or(a.port.get()),
        hostname,
        id,
    })
}

fn framework_from_state(f: &FrameworkDoc) -> Option<Framework> {
    let Some(id) = f.id.0.clone().filter(|s| !s.is_empty()) else {
        tracing::warn!(source = "mesos", "Mesos framework without an id skipped");
        return None;
    };
    let (pid_ip, pid_port) = f.pid.str().map(parse_pid).unwrap_or_default();
    Some(Framework {
        name: f.name.str().unwrap_or_default().to_string(),
        hostname: f.hostname.str().unwrap_or_default().to_string(),
        pid_ip,
        pid_port,
        id,
    })
}

fn leader(doc: &StateDoc) -> Option<Master> {
    let pid = doc.leader.str().filter(|s| !s.is_empty())?;
    let (ip, port) = parse_pid(pid);
    let hostname = doc
        .leader_info
        .ok()
        .and_then(|li| li.hostname.str())
        .or_else(|| {
            (doc.pid.str() == Some(pid))
                .then(|| doc.hostname.str())
                .flatten()
        })
        .map(str::to_string)
        .or_else(|| ip.map(|ip| ip.to_string()))
        .unwrap_or_default();
    let port = port
        .or_else(|| doc.leader_info.ok().and_then(|li| li.port.get()))
        .unwrap_or(5050);
    Some(Master { hostname, ip, port })
}

/// Collects decoded tasks; tasks are converted at [`TaskSink::finish`], once every agent is known
/// (the agent IP decides `merge_host_ports`).
#[derive(Default)]
struct TaskSink<'a> {
    docs: Vec<(&'a TaskDoc, String, String)>,
    /// When set, a task id seen before keeps its first entry; otherwise later entries win.
    first_wins: bool,
}

impl<'a> TaskSink<'a> {
    fn push(&mut self, doc: &'a TaskDoc, framework_id: &str, agent_id: &str) {
        self.docs
            .push((doc, framework_id.to_string(), agent_id.to_string()));
    }

    fn finish(self, state: &mut ClusterState) {
        for (doc, fw, agent) in self.docs {
            let Some(task) = task_from_doc(doc, &fw, &agent, &state.agents) else {
                continue;
            };
            if self.first_wins && state.tasks.contains_key(&task.id) {
                continue;
            }
            if let Some(prev) = state.tasks.get(&task.id)
                && prev.framework_id != task.framework_id
            {
                tracing::warn!(
                    source = "mesos",
                    task_id = %task.id,
                    "task id reported by two frameworks; keeping the later one"
                );
            }
            state.tasks.insert(task.id.clone(), Arc::new(task));
        }
    }
}

/// The latest status by timestamp (ties: the later in the list), optionally only of one state.
fn latest_status<'a>(
    statuses: &[&'a StatusDoc],
    only: Option<&TaskState>,
) -> Option<&'a StatusDoc> {
    let mut best: Option<(&StatusDoc, f64)> = None;
    for s in statuses {
        if let Some(want) = only
            && s.state.str().map(TaskState::parse).as_ref() != Some(want)
        {
            continue;
        }
        let ts = s.timestamp.get().filter(|t| t.is_finite()).unwrap_or(0.0);
        if best.is_none_or(|(_, b)| ts >= b) {
            best = Some((s, ts));
        }
    }
    best.map(|(s, _)| s)
}

fn task_from_doc(
    doc: &TaskDoc,
    parent_framework: &str,
    parent_agent: &str,
    agents: &BTreeMap<String, Agent>,
) -> Option<Task> {
    let Some(id) = doc
        .id
        .0
        .clone()
        .or_else(|| doc.task_id.0.clone())
        .filter(|s| !s.is_empty())
    else {
        tracing::warn!(source = "mesos", "Mesos task without an id skipped");
        return None;
    };
    let framework_id = doc
        .framework_id
        .0
        .clone()
        .unwrap_or_else(|| parent_framework.to_string());
    let agent_id = doc
        .slave_id
        .0
        .clone()
        .or_else(|| doc.agent_id.0.clone())
        .unwrap_or_else(|| parent_agent.to_string());

    let statuses: Vec<&StatusDoc> = doc.statuses.iter().filter_map(Obj::ok).collect();
    let latest = latest_status(&statuses, None);
    let latest_running = latest_status(&statuses, Some(&TaskState::Running));
    let ip_status = latest_running.or(latest);

    let state = match (doc.state.str(), latest.and_then(|s| s.state.str())) {
        (Some(s), _) | (None, Some(s)) => TaskState::parse(s),
        (None, None) => TaskState::Unknown,
    };
    let started_ms = statuses
        .iter()
        .filter(|s| s.state.str().map(TaskState::parse) == Some(TaskState::Running))
        .filter_map(|s| s.timestamp.get().and_then(seconds_to_ms))
        .min();

    let mut netinfo_ips: Vec<IpAddr> = Vec::new();
    let mut mesos_ip = None;
    let mut docker_ip = None;
    if let Some(st) = ip_status {
        if let Some(cs) = st.container_status.ok() {
            for ni in cs.network_infos.iter().filter_map(Obj::ok) {
                let addrs = ni
                    .ip_addresses
                    .iter()
                    .filter_map(Obj::ok)
                    .map(|a| &a.ip_address)
                    .chain(std::iter::once(&ni.ip_address));
                for ip in addrs
                    .filter_map(|a| a.str())
                    .filter_map(|a| a.trim().parse().ok())
                {
                    if !netinfo_ips.contains(&ip) {
                        netinfo_ips.push(ip);
                    }
                }
            }
        }
        for (k, v) in &st.labels.pairs {
            let slot = match k.as_str() {
                "MesosContainerizer.NetworkSettings.IPAddress" => &mut mesos_ip,
                "Docker.NetworkSettings.IPAddress" => &mut docker_ip,
                _ => continue,
            };
            if slot.is_none() {
                *slot = v.trim().parse().ok();
            }
        }
    }

    let host_ports = host_ports(&doc.resources, &id);
    if doc.labels.bad > 0 {
        tracing::warn!(source = "mesos", task_id = %id, bad = doc.labels.bad, "malformed task labels skipped");
    }
    let discovery = doc.discovery.ok().map(|d| discovery_info(d, &id));
    let mappings = port_mappings(doc, latest, &id);
    let discovery_ports = discovery
        .as_ref()
        .map(discovery_task_ports)
        .unwrap_or_default();
    let ports = merge_task_ports(mappings, discovery_ports);
    let agent_ip = agents.get(&agent_id).and_then(|a| a.ip);
    let ports = merge_host_ports(&state, &netinfo_ips, agent_ip, ports);

    Some(Task {
        name: doc.name.str().unwrap_or_default().to_string(),
        framework_id,
        agent_id,
        app_id: None,
        healthy: latest.and_then(|s| s.healthy.get()),
        has_health_check: doc.health_check.is_ok(),
        started_ms,
        netinfo_ips,
        mesos_ip,
        docker_ip,
        host_ports,
        ports,
        labels: doc.labels.pairs.clone(),
        discovery,
        state,
        id,
    })
}

/// The task's `ports` resource, expanded in order.
fn host_ports(res: &Resources, task_id: &str) -> Vec<u16> {
    let mut out = Vec::new();
    let push_range = |begin: u64, end: u64, out: &mut Vec<u16>| {
        let (Ok(b), Ok(e)) = (u16::try_from(begin), u16::try_from(end)) else {
            tracing::warn!(
                source = "mesos",
                task_id,
                begin,
                end,
                "port range outside 0-65535 skipped"
            );
            return;
        };
        if b > e {
            tracing::warn!(
                source = "mesos",
                task_id,
                begin,
                end,
                "inverted port range skipped"
            );
            return;
        }
        for p in b..=e {
            if out.len() >= MAX_HOST_PORTS {
                return;
            }
            out.push(p);
        }
    };
    match &res.text {
        Val::Ok(text) => {
            let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
            for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (b, e) = part.split_once('-').unwrap_or((part, part));
                match (b.trim().parse::<u64>(), e.trim().parse::<u64>()) {
                    (Ok(b), Ok(e)) => push_range(b, e, &mut out),
                    _ => tracing::warn!(
                        source = "mesos",
                        task_id,
                        range = part,
                        "malformed port range skipped"
                    ),
                }
            }
        }
        Val::Bad(v) => {
            tracing::warn!(source = "mesos", task_id, value = %v, "malformed ports resource skipped");
        }
        Val::Absent => {}
    }
    for r in res.list.iter().filter_map(Obj::ok) {
        if r.name.str() != Some("ports") {
            continue;
        }
        match r.r#type.str() {
            Some("RANGES") => {
                for range in r
                    .ranges
                    .ok()
                    .into_iter()
                    .flat_map(|rs| rs.range.iter())
                    .filter_map(Obj::ok)
                {
                    match (range.begin.get(), range.end.get()) {
                        (Some(b), Some(e)) => push_range(b, e, &mut out),
                        _ => tracing::warn!(
                            source = "mesos",
                            task_id,
                            "malformed port range skipped"
                        ),
                    }
                }
            }
            Some("SCALAR") => {
                let v = r.scalar.ok().and_then(|s| s.value.get());
                match v.filter(|v| v.fract() == 0.0 && (0.0..=65535.0).contains(v)) {
                    Some(v) => push_range(v as u64, v as u64, &mut out),
                    None => tracing::warn!(
                        source = "mesos",
                        task_id,
                        "malformed scalar ports resource skipped"
                    ),
                }
            }
            _ => {}
        }
    }
    out
}

fn discovery_info(d: &DiscoveryDoc, task_id: &str) -> DiscoveryInfo {
    let mut ports = Vec::new();
    for p in d
        .ports
        .ok()
        .into_iter()
        .flat_map(|ps| ps.ports.iter())
        .filter_map(Obj::ok)
    {
        let number = match &p.number {
            Val::Ok(n) => *n,
            Val::Bad(v) => {
                tracing::warn!(source = "mesos", task_id, number = %v, "discovery port with an invalid number skipped");
                continue;
            }
            Val::Absent => {
                tracing::warn!(
                    source = "mesos",
                    task_id,
                    "discovery port without a number skipped"
                );
                continue;
            }
        };
        if p.labels.bad > 0 {
            tracing::warn!(
                source = "mesos",
                task_id,
                bad = p.labels.bad,
                "malformed discovery port labels skipped"
            );
        }
        ports.push(DiscoveryPort {
            number,
            name: p.name.ok().cloned(),
            protocol: p.protocol.ok().cloned().unwrap_or_default(),
            labels: p.labels.pairs.clone(),
        });
    }
    DiscoveryInfo {
        name: d.name.ok().cloned(),
        visibility: d.visibility.ok().cloned(),
        ports,
    }
}

/// dcos-net `handle_task_discovery_ports`: number into `host_port` (scope host) or `port`; number 0
/// skipped; one port per protocol (none when the protocol is missing).
fn discovery_task_ports(d: &DiscoveryInfo) -> Vec<TaskPort> {
    let mut out = Vec::new();
    for p in d.ports.iter().filter(|p| p.number != 0) {
        let host = is_host_scope(&p.labels);
        let template = TaskPort {
            name: p.name.clone(),
            protocol: None,
            port: (!host).then_some(p.number),
            host_port: host.then_some(p.number),
            labels: p.labels.clone(),
        };
        let proto = (!p.protocol.trim().is_empty()).then_some(p.protocol.as_str());
        out.extend(ports_per_protocol(proto, template));
    }
    out
}

/// dcos-net `handle_task_port_mappings`: Docker or Mesos (UCR) port mappings as
/// `{protocol, port: container_port, host_port}`; a missing protocol is `tcp` (Docker's default).
fn port_mappings(doc: &TaskDoc, latest: Option<&StatusDoc>, task_id: &str) -> Vec<TaskPort> {
    let container = doc.container.ok();
    let kind = container.and_then(|c| c.r#type.str()).unwrap_or("MESOS");
    let mut raw: Vec<&PortMappingDoc> = Vec::new();
    match kind.to_ascii_uppercase().as_str() {
        "DOCKER" => {
            if let Some(d) = container.and_then(|c| c.docker.ok()) {
                raw.extend(d.port_mappings.iter().filter_map(Obj::ok));
            }
        }
        "MESOS" => {
            let infos = match container.and_then(|c| c.network_infos.as_ref()) {
                Some(infos) => infos,
                None => match latest.and_then(|s| s.container_status.ok()) {
                    Some(cs) => &cs.network_infos,
                    None => return Vec::new(),
                },
            };
            for ni in infos.iter().filter_map(Obj::ok) {
                raw.extend(ni.port_mappings.iter().filter_map(Obj::ok));
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    for m in raw {
        let (Val::Ok(container_port), Val::Ok(host_port)) = (&m.container_port, &m.host_port)
        else {
            tracing::warn!(
                source = "mesos",
                task_id,
                container_port = ?m.container_port,
                host_port = ?m.host_port,
                "port mapping without valid container_port and host_port skipped"
            );
            continue;
        };
        let template = TaskPort {
            name: None,
            protocol: None,
            port: Some(*container_port),
            host_port: Some(*host_port),
            labels: Vec::new(),
        };
        out.extend(ports_per_protocol(
            Some(m.protocol.str().unwrap_or("tcp")),
            template,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::decode::test_support::{fixture, ip, labels};

    fn tcp(port: Option<u16>, host_port: Option<u16>) -> TaskPort {
        TaskPort {
            protocol: Some(crate::model::state::PortProtocol::Tcp),
            port,
            host_port,
            ..TaskPort::default()
        }
    }

    #[test]
    fn overlay_docker_user_network_task() {
        let s = mesos_state(&fixture("mesos-master/overlay.json")).expect("decodes");
        assert_eq!(s.kind, StateKind::Mesos);
        let t = &s.tasks["http-1.57d78934-81b7-11e6-a58a-36c411325d20"];
        assert_eq!(t.name, "http-1");
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.framework_id, "c17b14a7-c3d1-4dcf-920a-685b85b2ed67-0000");
        assert_eq!(s.framework_name(t), "marathon");
        assert_eq!(t.agent_id, "c17b14a7-c3d1-4dcf-920a-685b85b2ed67-S0");
        assert_eq!(s.agent_ip(t), Some(ip("10.0.1.248")));
        assert_eq!(t.netinfo_ips, vec![ip("9.0.1.130")]);
        assert_eq!(t.docker_ip, Some(ip("9.0.1.130")));
        assert_eq!(t.mesos_ip, None);
        assert_eq!(t.started_ms, Some(1_474_653_525_766));
        assert_eq!(t.healthy, None);
        assert!(!t.has_health_check);
        assert!(t.host_ports.is_empty());
        assert_eq!(
            t.ports,
            vec![TaskPort {
                name: Some("http".into()),
                labels: labels(&[("VIP_0", "1.2.3.4:5000"), ("network-scope", "container")]),
                ..tcp(Some(80), None)
            }]
        );
        let d = t.discovery.as_ref().expect("discovery info");
        assert_eq!(d.name.as_deref(), Some("http-1"));
        assert_eq!(d.visibility.as_deref(), Some("FRAMEWORK"));
        assert_eq!(d.ports.len(), 1);
        assert_eq!(d.ports[0].number, 80);
        assert_eq!(d.ports[0].protocol, "tcp");

        // The finished host-network task: discovery ports without a scope label stay `port`.
        let b = &s.tasks["http-bridge.7c107465-81b7-11e6-a58a-36c411325d20"];
        assert_eq!(b.state, TaskState::Finished);
        assert_eq!(b.host_ports, vec![20839, 20840]);
        assert_eq!(b.started_ms, Some(1_474_653_575_018));
        assert_eq!(
            b.ports,
            vec![
                TaskPort {
                    name: Some("http".into()),
                    labels: labels(&[("VIP_0", "http-bridge:80")]),
                    ..tcp(Some(20839), None)
                },
                TaskPort {
                    name: Some("https".into()),
                    ..tcp(Some(20840), None)
                },
            ]
        );

        assert_eq!(s.frameworks.len(), 2);
        let m = &s.frameworks["c17b14a7-c3d1-4dcf-920a-685b85b2ed67-0000"];
        assert_eq!(
            (m.pid_ip, m.pid_port),
            (Some(ip("10.0.7.247")), Some(40733))
        );
        assert_eq!(
            s.leader,
            Some(Master {
                hostname: "10.0.7.247".into(),
                ip: Some(ip("10.0.7.247")),
                port: 5050
            })
        );
    }

    #[test]
    fn docker_bridge_port_mappings_and_legacy_vip_label() {
        let s = mesos_state(&fixture("mesos-master/docker.json")).expect("decodes");
        assert_eq!(s.tasks.len(), 5);
        let t = &s.tasks["test.6579d29b-a5be-11e5-b87a-0aaf95d09f0f"];
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.host_ports, vec![28027]);
        assert_eq!(t.labels, labels(&[("vip_PORT0", "tcp://1.2.3.4:5000")]));
        // Docker BRIDGE mapping 80 → 28027; no discovery info, so no labels on the port.
        assert_eq!(t.ports, vec![tcp(Some(80), Some(28027))]);
        // The status carries both the legacy `ip_address` and `ip_addresses`: one IP.
        assert_eq!(t.netinfo_ips, vec![ip("172.17.0.5")]);
        assert_eq!(s.agent_ip(t), Some(ip("10.0.2.4")));
        let states: Vec<&TaskState> = s.tasks.values().map(|t| &t.state).collect();
        assert_eq!(states.iter().filter(|st| st.is_terminal()).count(), 4);
    }

    #[test]
    fn state6_skips_completed_frameworks() {
        let s = mesos_state(&fixture("mesos-master/state6.json")).expect("decodes");
        // 83 tasks in active frameworks (tasks + completed_tasks); 5 more in completed frameworks.
        assert_eq!(s.tasks.len(), 83);
        assert_eq!(s.frameworks.len(), 4);
        assert_eq!(
            s.tasks
                .values()
                .filter(|t| t.state == TaskState::Running)
                .count(),
            10
        );
    }

    #[test]
    fn agent_state_ucr_and_docker_bridge() {
        let s = mesos_agent_state(&fixture("mesos-agent/ucr-bridge-mode.json")).expect("decodes");
        assert_eq!(s.kind, StateKind::Mesos);
        assert_eq!(s.leader, None);
        let agent = &s.agents["384d6e5b-d578-433c-a7b2-691508695dbe-S0"];
        assert_eq!((agent.ip, agent.port), (Some(ip("10.0.2.5")), Some(5051)));
        assert_eq!(agent.hostname, "10.0.2.5");
        assert_eq!(
            s.frameworks["384d6e5b-d578-433c-a7b2-691508695dbe-0001"].name,
            "marathon"
        );

        let docker = &s.tasks["foo-1.272b2208-6b16-11e7-b302-3edf0088f09a"];
        assert_eq!(docker.netinfo_ips, vec![ip("172.17.0.2")]);
        assert_eq!(docker.host_ports, vec![21768]);
        // Mapping {80, 21768} merged with the host-scope discovery port 21768.
        assert_eq!(
            docker.ports,
            vec![TaskPort {
                labels: labels(&[("VIP_0", "/foo-1:5000"), ("network-scope", "host")]),
                ..tcp(Some(80), Some(21768))
            }]
        );

        let ucr = &s.tasks["foo.296ecd47-6b12-11e7-b302-3edf0088f09a"];
        assert_eq!(ucr.netinfo_ips, vec![ip("172.31.254.2")]);
        assert_eq!(
            ucr.ports,
            vec![TaskPort {
                labels: labels(&[("VIP_0", "/foo:5000"), ("network-scope", "host")]),
                ..tcp(Some(80), Some(29025))
            }]
        );
    }

    #[test]
    fn agent_state_named_vips_includes_completed_executor_tasks() {
        let s = mesos_agent_state(&fixture("mesos-agent/named-base-vips.json")).expect("decodes");
        assert_eq!(s.tasks.len(), 2);
        let t = &s.tasks["catsmeow.6e53a5c1-1f27-11e6-bc04-4e40412869d8"];
        assert_eq!(t.state, TaskState::Running);
        // Host networking: the task's only IP is the agent's, so the host port becomes `port`.
        assert_eq!(t.netinfo_ips, vec![ip("10.0.0.243")]);
        assert_eq!(s.agent_ip(t), Some(ip("10.0.0.243")));
        assert_eq!(
            t.ports,
            vec![TaskPort {
                name: Some("http".into()),
                labels: labels(&[("VIP_0", "merp:5000")]),
                ..tcp(Some(12049), None)
            }]
        );
        assert_eq!(
            s.tasks["catsmeow.1d28d7c0-1f1c-11e6-bc04-4e40412869d8"].state,
            TaskState::Killed
        );
    }

    #[test]
    fn operator_get_state_tcp_and_udp() {
        let s =
            mesos_operator_state(&fixture("mesos-operator-v1/tcp-and-udp.json")).expect("decodes");
        assert_eq!(s.tasks.len(), 1);
        let t = &s.tasks["app.80eefa01-d956-11e8-8b68-70b3d5800002"];
        assert_eq!(t.agent_id, "0e559f52-e43a-497a-90b8-11688d98f60c-S0");
        assert_eq!(s.agent_ip(t), Some(ip("172.17.0.3")));
        assert_eq!(s.framework_name(t), "marathon");
        assert_eq!(t.healthy, Some(true));
        assert_eq!(t.host_ports, vec![6416, 6417]);
        // Host network, task IP == agent IP: host ports folded into `port`, sorted (tcp first).
        let udp = |port, name: &str, l: &[(&str, &str)]| TaskPort {
            name: Some(name.into()),
            protocol: Some(crate::model::state::PortProtocol::Udp),
            port: Some(port),
            host_port: None,
            labels: labels(l),
        };
        assert_eq!(
            t.ports,
            vec![
                TaskPort {
                    name: Some("http".into()),
                    labels: labels(&[("VIP_0", "/app:80")]),
                    ..tcp(Some(6416), None)
                },
                TaskPort {
                    name: Some("foobar".into()),
                    ..tcp(Some(6417), None)
                },
                udp(6416, "http", &[("VIP_0", "/app:80")]),
                udp(6417, "foobar", &[]),
            ]
        );
    }

    #[test]
    fn operator_get_state_unhealthy_and_launched_tasks() {
        let s =
            mesos_operator_state(&fixture("mesos-operator-v1/unhealthy.json")).expect("decodes");
        let t = s.tasks.values().next().expect("one task");
        assert!(t.has_health_check);
        assert_eq!(t.healthy, None);
        assert_eq!(t.netinfo_ips, vec![ip("9.0.1.6")]);

        let s =
            mesos_operator_state(&fixture("mesos-operator-v1/vip-labels.json")).expect("decodes");
        let t = &s.tasks["app.c9e19be4-6a94-11e8-bfc9-70b3d5800002"];
        assert_eq!(
            t.labels,
            labels(&[("vip_port0", "tcp://def:80"), ("vip_port1", "tcp://jkl:80")])
        );
        assert_eq!(t.host_ports, vec![9999, 10000, 10001, 10002]);
        assert_eq!(t.ports.len(), 4);
        assert_eq!(
            t.ports[0].labels,
            labels(&[("VIP_0", "/abc:80"), ("VIP_1", "/cbd:80")])
        );
    }

    #[test]
    fn operator_subscribed_event_first_line() {
        let body = fixture("mesos-operator-v1/operator-api.json");
        let first = body.split(|b| *b == b'\n').next().expect("a first line");
        let s = mesos_operator_state(first).expect("SUBSCRIBED event decodes");
        assert_eq!(s.kind, StateKind::Mesos);
        assert!(!s.frameworks.is_empty());
        assert!(!s.agents.is_empty());
    }

    #[test]
    fn host_ports_parse_ranges_and_skip_bad_ones() {
        let body = br#"{"frameworks":[{"id":"f","tasks":[
            {"id":"t","resources":{"ports":"[31000-31002, 31005-31005, 5-2, x-y, 70000-70001]"}}]}]}"#;
        let s = mesos_state(body).expect("decodes");
        assert_eq!(s.tasks["t"].host_ports, vec![31000, 31001, 31002, 31005]);
    }

    #[test]
    fn malformed_task_pieces_are_skipped_not_fatal() {
        let body = br#"{"frameworks":[{"id":"f","tasks":[
            5,
            {"name":"no id"},
            {"id":"t","state":"TASK_RUNNING","labels":[{"key":"a","value":"b"},{"key":7}],
             "discovery":{"ports":{"ports":[{"number":70000,"protocol":"tcp"},{"number":-1},
                {"number":0,"protocol":"tcp"},{"number":8080,"protocol":"udp,tcp"}]}},
             "container":{"type":"DOCKER","docker":{"port_mappings":[{"container_port":"x","host_port":1}]}},
             "statuses":"nope"}]}],
            "slaves":[{"pid":"slave(1)@10.0.0.1:5051"},{"id":"a","pid":"garbage"}]}"#;
        let s = mesos_state(body).expect("decodes");
        assert_eq!(s.tasks.len(), 1);
        let t = &s.tasks["t"];
        assert_eq!(t.framework_id, "f");
        assert_eq!(t.labels, labels(&[("a", "b")]));
        // Only the 8080 discovery port survives, once per protocol.
        let protos: Vec<_> = t
            .ports
            .iter()
            .map(|p| (p.protocol.clone(), p.port))
            .collect();
        assert_eq!(
            protos,
            vec![
                (Some(crate::model::state::PortProtocol::Udp), Some(8080)),
                (Some(crate::model::state::PortProtocol::Tcp), Some(8080)),
            ]
        );
        assert_eq!(t.discovery.as_ref().map(|d| d.ports.len()), Some(2));
        // The agent without an id is skipped; the one with a bad pid has no IP.
        assert_eq!(s.agents.len(), 1);
        assert_eq!(s.agents["a"].ip, None);
    }

    #[test]
    fn wrong_top_level_shapes_are_errors() {
        assert!(matches!(
            mesos_state(br#"{"frameworks": 5}"#),
            Err(DecodeError::Shape { ref path, .. }) if path == "frameworks"
        ));
        assert!(matches!(
            mesos_state(br#"{"frameworks": [], "slaves": {}}"#),
            Err(DecodeError::Shape { ref path, .. }) if path == "slaves"
        ));
        assert!(matches!(
            mesos_state(br#"{"leader": "master@1.2.3.4:5050"}"#),
            Err(DecodeError::MissingField {
                field: "frameworks",
                ..
            })
        ));
        assert!(matches!(
            mesos_operator_state(br#"{"type": "GET_STATE", "get_state": {"get_tasks": {"tasks": 1}}}"#),
            Err(DecodeError::Shape { ref path, .. }) if path == "get_state.get_tasks.tasks"
        ));
        assert!(matches!(
            mesos_operator_state(br#"{"type": "GET_STATE"}"#),
            Err(DecodeError::MissingField {
                field: "get_state",
                ..
            })
        ));
    }

    #[test]
    fn latest_status_wins_by_timestamp_not_position() {
        let body =
            br#"{"frameworks":[{"id":"f","tasks":[{"id":"t","slave_id":"a","state":"TASK_RUNNING",
            "health_check":{},
            "statuses":[
              {"state":"TASK_RUNNING","timestamp":30,"healthy":false,
               "container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"10.0.0.3"}]}]}},
              {"state":"TASK_RUNNING","timestamp":10,"healthy":true,
               "labels":[{"key":"MesosContainerizer.NetworkSettings.IPAddress","value":"10.0.0.1"}],
               "container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"10.0.0.1"}]}]}},
              {"state":"TASK_STARTING","timestamp":5}]}]}]}"#;
        let s = mesos_state(body).expect("decodes");
        let t = &s.tasks["t"];
        assert_eq!(t.healthy, Some(false));
        assert_eq!(t.netinfo_ips, vec![ip("10.0.0.3")]);
        assert_eq!(t.mesos_ip, None);
        assert_eq!(t.started_ms, Some(10_000));
        assert!(t.has_health_check);
    }
}
