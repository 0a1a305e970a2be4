//! `ClusterState`: what a source saw, normalised so that a Marathon `/v2/apps?embed=apps.tasks`
//! answer and a Mesos `/master/state` answer look the same to `Snapshot::build`.
//!
//! Decoders (`discovery/`) fill it in; nothing here does I/O. Maps are `BTreeMap` so that iteration
//! order, and therefore every snapshot, is deterministic.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// Which upstream shape the state was decoded from. DNS naming differs slightly between them
/// (a Marathon source has no Mesos leader/master records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    #[default]
    Marathon,
    Mesos,
}

/// Cluster task state as one source saw it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub kind: StateKind,
    /// Frameworks by framework ID. A Marathon source has one: id and name `marathon`.
    pub frameworks: BTreeMap<String, Framework>,
    /// Agents by agent ID.
    pub agents: BTreeMap<String, Agent>,
    /// Marathon apps by app id (`/group/app`). Empty for a Mesos source. A persistent map of
    /// shared apps (see `tasks`); change one with `Arc::make_mut`.
    pub apps: OrdMap<String, Arc<App>>,
    /// Tasks by task ID, in every state the source reported (the model filters). A persistent
    /// map (`imbl::OrdMap`, ordered like a `BTreeMap`) of shared tasks: cloning the state to
    /// patch it is O(1), a patch copies only the tree nodes on its path, and `Snapshot::build`
    /// reuses its work for every task that is the same `Arc`.
    pub tasks: OrdMap<String, Arc<Task>>,
    /// The leading Mesos master, when the source knows it.
    pub leader: Option<Master>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Framework {
    pub id: String,
    pub name: String,
    /// Scheduler host (Mesos `hostname`), used for the `framework.domain` record.
    pub hostname: String,
    /// Scheduler IP and port from the libprocess `pid` (`scheduler-…@10.0.7.247:40733`).
    pub pid_ip: Option<IpAddr>,
    pub pid_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    /// The agent's IP: from its `pid` (`slave(1)@10.0.1.248:5051`) for Mesos; for Marathon, the
    /// task `host` when it is an IP, else what the discovery layer resolved (never resolved here).
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Master {
    pub hostname: String,
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// A Marathon app (the parts the data paths use).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    /// Marathon `version` (RFC 3339), the app's age for VIP slot collisions.
    pub version: String,
    /// `version` as milliseconds since the epoch, when it parses.
    pub version_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// Service ports in port order (`portDefinitions[].port`, `portMappings[].servicePort`,
    /// legacy `ports`).
    pub service_ports: Vec<u16>,
    /// Port definitions or mappings, in port index order.
    pub ports: Vec<AppPort>,
    pub health_checks: Vec<HealthCheck>,
    pub instances: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppPort {
    pub name: Option<String>,
    /// Raw protocol string (`tcp`, `udp`, `udp,tcp`).
    pub protocol: String,
    pub container_port: Option<u16>,
    pub host_port: Option<u16>,
    pub service_port: Option<u16>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `MESOS_HTTP`, `MESOS_TCP`, `COMMAND`, …
    pub protocol: String,
    pub path: Option<String>,
    pub port_index: Option<u32>,
    pub port: Option<u16>,
    pub interval_seconds: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub max_consecutive_failures: Option<u32>,
}

/// Mesos task states (`TASK_*`). Unknown strings are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Lost,
    Error,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    #[default]
    Unknown,
    Other(String),
}

impl TaskState {
    /// Parses `TASK_RUNNING` and friends (case-insensitive; the `TASK_` prefix is optional).
    pub fn parse(s: &str) -> TaskState {
        let up = s.trim().to_ascii_uppercase();
        match up.strip_prefix("TASK_").unwrap_or(&up) {
            "STAGING" => TaskState::Staging,
            "STARTING" => TaskState::Starting,
            "RUNNING" => TaskState::Running,
            "KILLING" => TaskState::Killing,
            "FINISHED" => TaskState::Finished,
            "FAILED" => TaskState::Failed,
            "KILLED" => TaskState::Killed,
            "LOST" => TaskState::Lost,
            "ERROR" => TaskState::Error,
            "DROPPED" => TaskState::Dropped,
            "UNREACHABLE" => TaskState::Unreachable,
            "GONE" => TaskState::Gone,
            "GONE_BY_OPERATOR" => TaskState::GoneByOperator,
            "UNKNOWN" => TaskState::Unknown,
            _ => TaskState::Other(s.to_string()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }
}

/// Transport protocol of a port. A port that says `udp,tcp` is decoded as two `TaskPort`s.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortProtocol {
    Tcp,
    Udp,
    /// Anything else, kept verbatim so the model can reject VIP labels on it with a reason.
    Other(String),
}

impl PortProtocol {
    /// Splits a protocol string such as `tcp`, `UDP` or `udp,tcp` into its protocols.
    pub fn parse_list(s: &str) -> Vec<PortProtocol> {
        s.split(',')
            .map(|p| match p.trim().to_ascii_lowercase().as_str() {
                "tcp" => PortProtocol::Tcp,
                "udp" => PortProtocol::Udp,
                _ => PortProtocol::Other(p.trim().to_string()),
            })
            .collect()
    }
}

/// One port of a task, already merged as dcos-net merges Docker/Mesos port mappings, `ports`
/// resources and DiscoveryInfo ports (`dcos_net_mesos_listener:handle_task_ports`).
///
/// Backend address rule (dcos-net `dcos_l4lb_mesos_poller:backends`): with `host_port` set, the
/// backend is agent IP + `host_port`; otherwise one backend per task IP + `port`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskPort {
    pub name: Option<String>,
    pub protocol: Option<PortProtocol>,
    /// Container-side (or discovery) port number; for `network-scope=container` ports.
    pub port: Option<u16>,
    /// Host port on the agent; set for `network-scope=host` ports and merged port mappings.
    pub host_port: Option<u16>,
    /// All labels of the port, in source order (`VIP_0`, `network-scope`, …).
    pub labels: Vec<(String, String)>,
}

/// A Mesos DiscoveryInfo port (for Mesos-DNS SRV records).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u16,
    pub name: Option<String>,
    pub protocol: String,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    pub name: Option<String>,
    pub visibility: Option<String>,
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// Mesos task name; from Marathon, the app path reversed (`/group/app` → `app.group`).
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    /// Marathon app id, when the task belongs to a Marathon app.
    pub app_id: Option<String>,
    pub state: TaskState,
    /// Latest health verdict: Mesos status `healthy`; Marathon: all `healthCheckResults` alive.
    /// `None` = no verdict reported.
    pub healthy: Option<bool>,
    /// The task (or its app) defines a health check.
    pub has_health_check: bool,
    /// Task start, milliseconds since the epoch (Marathon `startedAt`, Mesos first RUNNING status).
    pub started_ms: Option<i64>,
    /// IPs of the latest running status's `container_status.network_infos` (Marathon `ipAddresses`).
    pub netinfo_ips: Vec<IpAddr>,
    /// Status label `MesosContainerizer.NetworkSettings.IPAddress`.
    pub mesos_ip: Option<IpAddr>,
    /// Status label `Docker.NetworkSettings.IPAddress`.
    pub docker_ip: Option<IpAddr>,
    /// The task's `ports` resource in order (Marathon task `ports`).
    pub host_ports: Vec<u16>,
    /// Merged ports that may carry VIP labels.
    pub ports: Vec<TaskPort>,
    /// Task labels (Marathon copies app labels here), for the legacy `vip_portN` form.
    pub labels: Vec<(String, String)>,
    pub discovery: Option<DiscoveryInfo>,
}

impl ClusterState {
    /// The agent IP of a task, if its agent is known and has an IP.
    pub fn agent_ip(&self, task: &Task) -> Option<IpAddr> {
        self.agents.get(&task.agent_id).and_then(|a| a.ip)
    }

    /// The same state by value, with its `tasks` and `apps` maps rebuilt from `base`'s by
    /// applying only the differences: every task and app equal to `base`'s is `base`'s `Arc`,
    /// and the maps share `base`'s tree nodes wherever nothing changed. A full answer rebased
    /// onto the published state compares equal to it in O(1) when nothing changed, and
    /// `Snapshot::build` diffs it in time proportional to the change. Costs one comparison of
    /// the two maps (run it off the async executor).
    pub fn shared_with(mut self, base: &ClusterState) -> ClusterState {
        self.tasks = rebase_map(&base.tasks, &self.tasks);
        self.apps = rebase_map(&base.apps, &self.apps);
        self
    }

    /// Framework name of a task (falls back to the framework ID).
    pub fn framework_name<'a>(&'a self, task: &'a Task) -> &'a str {
        self.frameworks
            .get(&task.framework_id)
            .map(|f| f.name.as_str())
            .unwrap_or(task.framework_id.as_str())
    }
}

/// `new` by value, built as `base` plus the differences.
fn rebase_map<V: Clone + PartialEq>(
    base: &OrdMap<String, V>,
    new: &OrdMap<String, V>,
) -> OrdMap<String, V> {
    use imbl::ordmap::DiffItem;
    let mut out = base.clone();
    for item in base.diff(new) {
        match item {
            DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => {
                out.insert(k.clone(), v.clone());
            }
            DiffItem::Remove(k, _) => {
                out.remove(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_parse_with_and_without_prefix() {
        assert_eq!(TaskState::parse("TASK_RUNNING"), TaskState::Running);
        assert_eq!(TaskState::parse("killing"), TaskState::Killing);
        assert_eq!(
            TaskState::parse("TASK_GONE_BY_OPERATOR"),
            TaskState::GoneByOperator
        );
        assert_eq!(
            TaskState::parse("TASK_WEIRD"),
            TaskState::Other("TASK_WEIRD".into())
        );
        assert!(TaskState::Killed.is_terminal());
        assert!(!TaskState::Killing.is_terminal());
    }

    #[test]
    fn shared_with_keeps_values_and_reuses_equal_tasks() {
        let task = |id: &str, state| {
            Arc::new(Task {
                id: id.into(),
                state,
                ..Task::default()
            })
        };
        let mut base = ClusterState::default();
        for id in ["a", "b", "c"] {
            base.tasks.insert(id.into(), task(id, TaskState::Running));
        }
        let mut new = ClusterState::default();
        new.tasks.insert("a".into(), task("a", TaskState::Running));
        new.tasks.insert("b".into(), task("b", TaskState::Killing));
        new.tasks.insert("d".into(), task("d", TaskState::Staging));
        let rebased = new.clone().shared_with(&base);
        assert_eq!(rebased, new);
        assert!(Arc::ptr_eq(&rebased.tasks["a"], &base.tasks["a"]));
        assert_eq!(rebased.tasks["b"].state, TaskState::Killing);
        assert!(!rebased.tasks.contains_key("c"));
        // Nothing changed: the maps are the base's.
        let same = base.clone().shared_with(&base);
        assert!(same.tasks.ptr_eq(&base.tasks));
    }

    #[test]
    fn protocol_lists_split_and_keep_unknowns() {
        assert_eq!(
            PortProtocol::parse_list("udp,TCP"),
            vec![PortProtocol::Udp, PortProtocol::Tcp]
        );
        assert_eq!(
            PortProtocol::parse_list("sctp"),
            vec![PortProtocol::Other("sctp".into())]
        );
    }
}
