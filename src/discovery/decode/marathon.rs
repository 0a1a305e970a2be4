//! Marathon decoder: `GET /v2/apps?embed=apps.tasks` (or a single `GET /v2/apps/{id}` answer,
//! `{"app": {…}}`) → [`ClusterState`] (`StateKind::Marathon`).
//!
//! One framework (id and name `marathon`); one agent per `slaveId`, its hostname the task `host`
//! and its IP that host when it is an IP literal (never resolved here). Apps keep their port
//! definitions or mappings ([`AppPort`]); each task gets the ports Marathon would have described to
//! Mesos, already merged as dcos-net merges them ([`TaskPort`]):
//! - networking mode as marathon-lb `get_app_networking_mode` decides it: `host`, `container/bridge`
//!   (Docker `BRIDGE` or `networks[].mode`), `container` (`ipAddress`, Docker `USER`, `networks`);
//! - container modes with port mappings (`container.docker.portMappings`, else
//!   `container.portMappings`): a mapping with a host port (a `hostPort` field, implied in
//!   bridge mode) → `{port: containerPort, host_port: the task's next allocated port}`, one without
//!   → `{port: containerPort}`;
//! - container mode with `ipAddress.discovery.ports` (1.4 IP-per-task) → `{port: number}`;
//! - otherwise `portDefinitions[i]` (or the legacy `ports`) → `{host_port: task.ports[i]}`;
//! - a `network-scope` port label moves a single number between `port` (`container`) and
//!   `host_port` (`host`), as dcos-net's `handle_port_scope` does; names, labels and the protocols
//!   (`udp,tcp` → two ports) come from the port; then `merge_host_ports` (see `super`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::{
    DecodeError, List, Obj, Val, is_host_scope, merge_host_ports, parse, ports_per_protocol,
    rfc3339_ms,
};
use crate::model::state::{
    Agent, App, AppPort, ClusterState, Framework, HealthCheck, StateKind, Task, TaskPort, TaskState,
};

/// Framework id and name of every Marathon task.
const FRAMEWORK: &str = "marathon";

/// Decodes a Marathon `/v2/apps?embed=apps.tasks` response (also accepts `{"app": {…}}`).
pub fn marathon_apps(body: &[u8]) -> Result<ClusterState, DecodeError> {
    let doc: AppsDoc = parse(body)?;
    let apps: Vec<Obj<AppDoc>> = match (doc.apps, doc.app) {
        (Some(apps), _) => apps,
        (None, Some(app)) => vec![app],
        (None, None) => {
            return Err(DecodeError::MissingField {
                expected: "Marathon /v2/apps",
                field: "apps",
            });
        }
    };
    let mut state = ClusterState {
        kind: StateKind::Marathon,
        ..ClusterState::default()
    };
    state.frameworks.insert(
        FRAMEWORK.to_string(),
        Framework {
            id: FRAMEWORK.to_string(),
            name: FRAMEWORK.to_string(),
            ..Framework::default()
        },
    );
    for (index, app) in apps.iter().enumerate() {
        let app = match app {
            Obj::Ok(app) => app,
            Obj::Bad(what) => {
                tracing::warn!(
                    source = "marathon",
                    index,
                    found = what,
                    "app that is not an object skipped"
                );
                continue;
            }
            Obj::Absent => continue,
        };
        let Some(id) = app.id.str().filter(|s| !s.is_empty()) else {
            tracing::warn!(source = "marathon", index, id = ?app.id, "app without a string id skipped");
            continue;
        };
        decode_app(id, app, &mut state);
    }
    Ok(state)
}

// === documents ===

#[derive(Deserialize)]
struct AppsDoc {
    #[serde(default)]
    apps: Option<Vec<Obj<AppDoc>>>,
    #[serde(default)]
    app: Option<Obj<AppDoc>>,
}

type LabelMap = Obj<BTreeMap<String, Val<String>>>;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AppDoc {
    id: Val<String>,
    version: Val<String>,
    instances: Val<u32>,
    labels: LabelMap,
    /// `None` when absent: marathon-lb then falls back to the legacy `ports`.
    port_definitions: Option<List<Obj<PortDefinitionDoc>>>,
    /// Legacy service ports.
    ports: List<Val<u16>>,
    container: Obj<ContainerDoc>,
    networks: List<Obj<NetworkDoc>>,
    ip_address: Obj<IpAddressDoc>,
    health_checks: List<Obj<HealthCheckDoc>>,
    tasks: List<Obj<TaskDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PortDefinitionDoc {
    port: Val<u16>,
    protocol: Val<String>,
    name: Val<String>,
    labels: LabelMap,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PortMappingDoc {
    container_port: Val<u16>,
    host_port: Val<u16>,
    service_port: Val<u16>,
    protocol: Val<String>,
    name: Val<String>,
    labels: LabelMap,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ContainerDoc {
    docker: Obj<DockerDoc>,
    port_mappings: List<Obj<PortMappingDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct DockerDoc {
    network: Val<String>,
    port_mappings: List<Obj<PortMappingDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NetworkDoc {
    mode: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IpAddressDoc {
    discovery: Obj<DiscoveryDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryDoc {
    ports: List<Obj<DiscoveryPortDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryPortDoc {
    number: Val<u16>,
    name: Val<String>,
    protocol: Val<String>,
    labels: LabelMap,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct HealthCheckDoc {
    protocol: Val<String>,
    path: Val<String>,
    port_index: Val<u32>,
    port: Val<u16>,
    override_port: Val<u16>,
    interval_seconds: Val<u32>,
    timeout_seconds: Val<u32>,
    max_consecutive_failures: Val<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TaskDoc {
    id: Val<String>,
    host: Val<String>,
    #[serde(alias = "agentId")]
    slave_id: Val<String>,
    state: Val<String>,
    started_at: Val<String>,
    ip_addresses: List<Obj<TaskIpDoc>>,
    ports: List<Val<u16>>,
    health_check_results: List<Obj<HealthResultDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct TaskIpDoc {
    ip_address: Val<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HealthResultDoc {
    alive: Val<bool>,
}

// === conversion ===

/// marathon-lb `get_app_networking_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Bridge,
    Container,
}

fn networking_mode(app: &AppDoc) -> Mode {
    let mut mode = Mode::Host;
    if app.ip_address.is_ok() {
        mode = Mode::Container;
    }
    let docker = app.container.ok().and_then(|c| c.docker.ok());
    match docker.and_then(|d| d.network.str()) {
        Some("USER") => mode = Mode::Container,
        Some("BRIDGE") => mode = Mode::Bridge,
        _ => {}
    }
    // Modes cannot be mixed, so the last network decides.
    for n in app.networks.iter().filter_map(Obj::ok) {
        mode = match n.mode.str() {
            Some("host") => Mode::Host,
            Some("container/bridge") => Mode::Bridge,
            _ => Mode::Container,
        };
    }
    mode
}

/// marathon-lb `get_app_port_mappings`: Docker's mappings, else the container's (1.5+ API).
fn app_port_mappings(app: &AppDoc) -> Vec<&PortMappingDoc> {
    let Some(c) = app.container.ok() else {
        return Vec::new();
    };
    let docker: Vec<&PortMappingDoc> = c
        .docker
        .ok()
        .map(|d| d.port_mappings.iter().filter_map(Obj::ok).collect())
        .unwrap_or_default();
    if !docker.is_empty() {
        return docker;
    }
    c.port_mappings.iter().filter_map(Obj::ok).collect()
}

/// String labels of a label object, in key order; others are skipped with a warning.
fn labels(map: &LabelMap, app_id: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match map {
        Obj::Ok(m) => {
            for (k, v) in m {
                match v {
                    Val::Ok(v) => {
                        out.insert(k.clone(), v.clone());
                    }
                    Val::Bad(v) => {
                        tracing::warn!(source = "marathon", app_id, label = %k, value = %v, "non-string label skipped");
                    }
                    Val::Absent => {}
                }
            }
        }
        Obj::Bad(what) => {
            tracing::warn!(
                source = "marathon",
                app_id,
                found = what,
                "labels that are not an object skipped"
            );
        }
        Obj::Absent => {}
    }
    out
}

fn label_vec(map: &LabelMap, app_id: &str) -> Vec<(String, String)> {
    labels(map, app_id).into_iter().collect()
}

/// A port number field of an app; an invalid one (`70000`, `-1`, `"x"`) is warned about and
/// treated as absent, so the port keeps its index.
fn port_field(v: &Val<u16>, app_id: &str, what: &'static str) -> Option<u16> {
    match v {
        Val::Ok(p) => Some(*p),
        Val::Absent => None,
        Val::Bad(v) => {
            tracing::warn!(source = "marathon", app_id, field = what, value = %v, "invalid port number ignored");
            None
        }
    }
}

fn decode_app(id: &str, app: &AppDoc, state: &mut ClusterState) {
    let mode = networking_mode(app);
    let mappings = app_port_mappings(app);
    let use_mappings = mode != Mode::Host && !mappings.is_empty();

    let mut ports: Vec<AppPort> = Vec::new();
    if use_mappings {
        for m in &mappings {
            ports.push(AppPort {
                name: m.name.ok().cloned(),
                protocol: m.protocol.str().unwrap_or("tcp").to_string(),
                container_port: port_field(&m.container_port, id, "containerPort"),
                host_port: port_field(&m.host_port, id, "hostPort"),
                service_port: port_field(&m.service_port, id, "servicePort"),
                labels: labels(&m.labels, id),
            });
        }
    } else if let Some(defs) = &app.port_definitions {
        for d in defs.iter().filter_map(Obj::ok) {
            ports.push(AppPort {
                name: d.name.ok().cloned(),
                protocol: d.protocol.str().unwrap_or("tcp").to_string(),
                container_port: None,
                host_port: None,
                service_port: port_field(&d.port, id, "portDefinitions.port"),
                labels: labels(&d.labels, id),
            });
        }
    } else {
        for p in app.ports.iter() {
            ports.push(AppPort {
                protocol: "tcp".to_string(),
                service_port: port_field(p, id, "ports"),
                ..AppPort::default()
            });
        }
    }

    let health_checks: Vec<HealthCheck> = app
        .health_checks
        .iter()
        .filter_map(Obj::ok)
        .map(|h| HealthCheck {
            protocol: h.protocol.str().unwrap_or("HTTP").to_string(),
            path: h.path.ok().cloned(),
            port_index: h.port_index.get(),
            port: h.port.get().or(h.override_port.get()),
            interval_seconds: h.interval_seconds.get(),
            timeout_seconds: h.timeout_seconds.get(),
            max_consecutive_failures: h.max_consecutive_failures.get(),
        })
        .collect();

    let version = app.version.str().unwrap_or_default().to_string();
    let app_labels = labels(&app.labels, id);
    let has_health_check = !health_checks.is_empty();
    let task_labels: Vec<(String, String)> = app_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = task_name(id);
    let port_plan = PortPlan::new(app, mode, &mappings, id);

    for (index, t) in app.tasks.iter().enumerate() {
        let t = match t {
            Obj::Ok(t) => t,
            Obj::Bad(what) => {
                tracing::warn!(
                    source = "marathon",
                    app_id = id,
                    index,
                    found = what,
                    "task that is not an object skipped"
                );
                continue;
            }
            Obj::Absent => continue,
        };
        let Some(task_id) = t.id.str().filter(|s| !s.is_empty()) else {
            tracing::warn!(
                source = "marathon",
                app_id = id,
                index,
                "task without a string id skipped"
            );
            continue;
        };
        let host = t.host.str().unwrap_or_default();
        let agent_id = t
            .slave_id
            .str()
            .filter(|s| !s.is_empty())
            .unwrap_or(host)
            .to_string();
        let agent_ip: Option<IpAddr> = host.trim().parse().ok();
        if !agent_id.is_empty() && !state.agents.contains_key(&agent_id) {
            state.agents.insert(
                agent_id.clone(),
                Agent {
                    id: agent_id.clone(),
                    hostname: host.to_string(),
                    ip: agent_ip,
                    port: None,
                },
            );
        }
        let started_ms = t.started_at.str().and_then(rfc3339_ms);
        let task_state = match t.state.str() {
            Some(s) => TaskState::parse(s),
            None if t.started_at.ok().is_some() => TaskState::Running,
            None => TaskState::Staging,
        };
        let results: Vec<&HealthResultDoc> =
            t.health_check_results.iter().filter_map(Obj::ok).collect();
        let healthy =
            (!results.is_empty()).then(|| results.iter().all(|r| r.alive.get() == Some(true)));
        let mut netinfo_ips: Vec<IpAddr> = Vec::new();
        for ip in t
            .ip_addresses
            .iter()
            .filter_map(Obj::ok)
            .filter_map(|a| a.ip_address.str())
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        {
            if !netinfo_ips.contains(&ip) {
                netinfo_ips.push(ip);
            }
        }
        // Positional: index i is the host port of port i; `None` = invalid (warned).
        let allocated: Vec<Option<u16>> = t
            .ports
            .iter()
            .map(|p| match p {
                Val::Ok(p) => Some(*p),
                Val::Bad(v) => {
                    tracing::warn!(source = "marathon", app_id = id, task_id, value = %v, "invalid task port skipped");
                    None
                }
                Val::Absent => None,
            })
            .collect();
        let host_ports: Vec<u16> = allocated.iter().flatten().copied().collect();
        let ports = port_plan.task_ports(&allocated, id, task_id);
        let ports = merge_host_ports(&task_state, &netinfo_ips, agent_ip, ports);
        let task = Task {
            id: task_id.to_string(),
            name: name.clone(),
            framework_id: FRAMEWORK.to_string(),
            agent_id,
            app_id: Some(id.to_string()),
            state: task_state,
            healthy,
            has_health_check,
            started_ms,
            netinfo_ips,
            mesos_ip: None,
            docker_ip: None,
            host_ports,
            ports,
            labels: task_labels.clone(),
            discovery: None,
        };
        if state
            .tasks
            .insert(task.id.clone(), Arc::new(task))
            .is_some()
        {
            tracing::warn!(
                source = "marathon",
                app_id = id,
                task_id,
                "task id listed twice; keeping the later one"
            );
        }
    }

    let model_app = App {
        id: id.to_string(),
        version_ms: rfc3339_ms(&version),
        version,
        labels: app_labels,
        service_ports: ports.iter().filter_map(|p| p.service_port).collect(),
        ports,
        health_checks,
        instances: app.instances.get().unwrap_or(0),
    };
    if state
        .apps
        .insert(id.to_string(), Arc::new(model_app))
        .is_some()
    {
        tracing::warn!(
            source = "marathon",
            app_id = id,
            "app id listed twice; keeping the later one"
        );
    }
}

/// The Mesos-style task name of a Marathon app: the path reversed (`/group/app` → `app.group`).
fn task_name(app_id: &str) -> String {
    let parts: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).rev().collect();
    parts.join(".")
}

/// One port of the app as Marathon describes it to Mesos, before the task's host ports are known.
struct PlannedPort {
    name: Option<String>,
    protocol: String,
    /// Container-side number (mapping `containerPort`, IP-per-task discovery `number`).
    port: Option<u16>,
    /// Whether this port takes the task's next allocated host port.
    takes_host_port: bool,
    /// For a single-number port (a port definition or a discovery port): `network-scope=host`
    /// puts the number into `host_port`, anything else into `port` (dcos-net `handle_port_scope`).
    single_number: bool,
    /// A port whose own number was invalid: it takes its host port but yields no `TaskPort`.
    invalid: bool,
    labels: Vec<(String, String)>,
}

/// The app's port layout, computed once and applied to each task's allocated ports.
struct PortPlan {
    ports: Vec<PlannedPort>,
    /// Legacy apps (`ports`, no `portDefinitions`): one tcp host port per allocated task port.
    legacy: bool,
}

impl PortPlan {
    fn new(app: &AppDoc, mode: Mode, mappings: &[&PortMappingDoc], app_id: &str) -> PortPlan {
        let mut ports = Vec::new();
        if mode != Mode::Host && !mappings.is_empty() {
            for m in mappings {
                // An invalid containerPort (already warned about) still takes its host port, so
                // the following mappings keep theirs; it yields no TaskPort.
                let invalid = matches!(m.container_port, Val::Bad(_));
                let container_port = m.container_port.get();
                // Bridge mode implies a (dynamic) host port; container mode only with `hostPort`.
                let takes_host_port = match &m.host_port {
                    Val::Absent => mode == Mode::Bridge,
                    _ => true,
                };
                ports.push(PlannedPort {
                    name: m.name.ok().cloned(),
                    protocol: m.protocol.str().unwrap_or("tcp").to_string(),
                    port: container_port,
                    takes_host_port,
                    single_number: false,
                    invalid,
                    labels: label_vec(&m.labels, app_id),
                });
            }
            return PortPlan {
                ports,
                legacy: false,
            };
        }
        let discovery: Vec<&DiscoveryPortDoc> = app
            .ip_address
            .ok()
            .and_then(|ip| ip.discovery.ok())
            .map(|d| d.ports.iter().filter_map(Obj::ok).collect())
            .unwrap_or_default();
        if mode == Mode::Container && !discovery.is_empty() {
            for d in discovery {
                let Some(number) =
                    port_field(&d.number, app_id, "ipAddress.discovery.ports.number")
                else {
                    continue;
                };
                ports.push(PlannedPort {
                    name: d.name.ok().cloned(),
                    protocol: d.protocol.str().unwrap_or("tcp").to_string(),
                    port: Some(number),
                    takes_host_port: false,
                    single_number: true,
                    invalid: false,
                    labels: label_vec(&d.labels, app_id),
                });
            }
            return PortPlan {
                ports,
                legacy: false,
            };
        }
        let Some(defs) = &app.port_definitions else {
            return PortPlan {
                ports,
                legacy: true,
            };
        };
        for d in defs.iter().filter_map(Obj::ok) {
            ports.push(PlannedPort {
                name: d.name.ok().cloned(),
                protocol: d.protocol.str().unwrap_or("tcp").to_string(),
                port: None,
                takes_host_port: true,
                single_number: true,
                invalid: false,
                labels: label_vec(&d.labels, app_id),
            });
        }
        PortPlan {
            ports,
            legacy: false,
        }
    }

    /// The task's ports given its allocated host ports (positional; `None` = invalid).
    fn task_ports(&self, allocated: &[Option<u16>], app_id: &str, task_id: &str) -> Vec<TaskPort> {
        let mut out = Vec::new();
        if self.legacy {
            for hp in allocated.iter().flatten() {
                out.extend(ports_per_protocol(
                    Some("tcp"),
                    TaskPort {
                        host_port: Some(*hp),
                        ..TaskPort::default()
                    },
                ));
            }
            return out;
        }
        // When the count of host-port takers disagrees with the allocation but every port got
        // one, Marathon allocated one per port.
        let takers = self.ports.iter().filter(|p| p.takes_host_port).count();
        let all_take = takers != allocated.len() && allocated.len() == self.ports.len();
        let mut next = allocated.iter();
        for p in &self.ports {
            let host_port = if p.takes_host_port || all_take {
                match next.next() {
                    Some(Some(hp)) => Some(*hp),
                    Some(None) => continue, // invalid number, already warned
                    None => {
                        tracing::debug!(
                            source = "marathon",
                            app_id,
                            task_id,
                            "no host port allocated yet; port skipped"
                        );
                        continue;
                    }
                }
            } else {
                None
            };
            if p.invalid {
                continue;
            }
            let (port, host_port) = if p.single_number {
                let number = p.port.or(host_port);
                if is_host_scope(&p.labels) || (p.port.is_none() && !has_scope(&p.labels)) {
                    (None, number)
                } else {
                    (number, None)
                }
            } else {
                (p.port, host_port)
            };
            if port.is_none() && host_port.is_none() {
                continue;
            }
            if port == Some(0) || host_port == Some(0) {
                continue;
            }
            out.extend(ports_per_protocol(
                Some(&p.protocol),
                TaskPort {
                    name: p.name.clone(),
                    protocol: None,
                    port,
                    host_port,
                    labels: p.labels.clone(),
                },
            ));
        }
        out
    }
}

/// Whether the labels carry a `network-scope` label at all.
fn has_scope(labels: &[(String, String)]) -> bool {
    labels.iter().any(|(k, _)| k == "network-scope")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::decode::test_support::{fixture, ip, labels};
    use crate::model::state::PortProtocol;

    fn port(
        proto: PortProtocol,
        port: Option<u16>,
        host_port: Option<u16>,
        name: Option<&str>,
        l: &[(&str, &str)],
    ) -> TaskPort {
        TaskPort {
            name: name.map(str::to_string),
            protocol: Some(proto),
            port,
            host_port,
            labels: labels(l),
        }
    }

    #[test]
    fn marathon15_container_port_mappings() {
        let s = marathon_apps(&fixture("marathon/marathon15_apps.json")).expect("decodes");
        assert_eq!(s.kind, StateKind::Marathon);
        assert_eq!(s.frameworks.len(), 1);
        assert_eq!(s.frameworks["marathon"].name, "marathon");
        assert_eq!(s.leader, None);

        let app = &s.apps["/pywebserver"];
        assert_eq!(app.version, "2017-07-19T17:34:41.967Z");
        assert_eq!(app.version_ms, Some(1_500_485_681_967));
        assert_eq!(app.instances, 1);
        assert_eq!(app.service_ports, vec![10101]);
        assert_eq!(
            app.ports,
            vec![AppPort {
                name: Some("test".into()),
                protocol: "tcp".into(),
                container_port: Some(80),
                host_port: Some(0),
                service_port: Some(10101),
                labels: BTreeMap::new(),
            }]
        );
        assert_eq!(app.labels["HAPROXY_0_VHOST"], "myvhost.com");
        assert!(app.health_checks.is_empty());

        assert_eq!(s.tasks.len(), 1);
        let t = &s.tasks["pywebserver.8cad6a69-6ca8-11e7-beb2-0e2beceebfcc"];
        assert_eq!(t.name, "pywebserver");
        assert_eq!(t.app_id.as_deref(), Some("/pywebserver"));
        assert_eq!(t.framework_id, "marathon");
        assert_eq!(t.agent_id, "db7b40e2-791c-445f-b373-183e2a648a86-S1");
        assert_eq!(s.agent_ip(t), Some(ip("10.0.2.148")));
        assert_eq!(s.agents[&t.agent_id].hostname, "10.0.2.148");
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.started_ms, Some(1_500_485_715_654));
        assert_eq!(t.netinfo_ips, vec![ip("172.17.0.2")]);
        assert_eq!(t.host_ports, vec![1565]);
        assert_eq!(t.healthy, None);
        assert!(!t.has_health_check);
        assert_eq!(
            t.labels,
            labels(&[
                ("HAPROXY_0_VHOST", "myvhost.com"),
                ("HAPROXY_GROUP", "external")
            ])
        );
        assert_eq!(
            t.ports,
            vec![port(
                PortProtocol::Tcp,
                Some(80),
                Some(1565),
                Some("test"),
                &[]
            )]
        );
    }

    #[test]
    fn zdd_apps_old_api_tasks_without_state() {
        let s = marathon_apps(&fixture("marathon/zdd_apps.json")).expect("decodes");
        assert_eq!(s.apps.len(), 2);
        assert_eq!(s.tasks.len(), 4);
        for t in s.tasks.values() {
            assert_eq!(t.state, TaskState::Running, "{}", t.id);
            assert_eq!(t.healthy, Some(true), "{}", t.id);
            assert!(t.has_health_check);
        }
        let blue = &s.tasks["nginx-blue.3a58a46a-c937-11e5-9836-026ee08d9f6f"];
        assert_eq!(blue.name, "nginx-blue");
        assert_eq!(blue.started_ms, Some(1_454_367_476_889));
        assert_eq!(blue.netinfo_ips, vec![ip("172.17.0.45")]);
        assert_eq!(s.agent_ip(blue), Some(ip("10.0.1.147")));
        assert_eq!(blue.host_ports, vec![25724]);
        // Docker BRIDGE portMappings (hostPort 0 → the task's allocated port).
        assert_eq!(
            blue.ports,
            vec![port(PortProtocol::Tcp, Some(8080), Some(25724), None, &[])]
        );
        let app = &s.apps["/nginx-blue"];
        assert_eq!(app.service_ports, vec![10001]);
        assert_eq!(
            app.health_checks,
            vec![HealthCheck {
                protocol: "HTTP".into(),
                path: Some("/".into()),
                port_index: Some(0),
                port: None,
                interval_seconds: Some(3),
                timeout_seconds: Some(15),
                max_consecutive_failures: Some(10),
            }]
        );
        assert_eq!(s.agents.len(), 2);
    }

    #[test]
    fn zdd_app_blue_task_without_ip_addresses() {
        let s = marathon_apps(&fixture("marathon/zdd_app_blue.json")).expect("decodes");
        let t = &s.tasks["nginx-green.23532518-c931-11e5-9836-026ee08d9f6f"];
        assert!(t.netinfo_ips.is_empty());
        assert_eq!(t.host_ports, vec![23336]);
        assert_eq!(
            t.ports,
            vec![port(PortProtocol::Tcp, Some(8080), Some(23336), None, &[])]
        );
        // Legacy `ports` plus Docker mappings: the mappings decide the service ports.
        assert_eq!(s.apps["/nginx-green"].service_ports, vec![10000]);
    }

    #[test]
    fn zdd_app_blue_marathon15_format() {
        let s = marathon_apps(&fixture("marathon/zdd_app_blue_marathon1.5.json")).expect("decodes");
        assert_eq!(s.tasks.len(), 3);
        let t = &s.tasks["nginx-green.01da9a15-68a7-11e7-a229-e6a514ca0c21"];
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.healthy, Some(true));
        assert_eq!(
            t.ports,
            vec![port(PortProtocol::Tcp, Some(8080), Some(16916), None, &[])]
        );
        assert_eq!(
            s.apps["/nginx-green"].health_checks[0].protocol,
            "MESOS_HTTP"
        );
    }

    #[test]
    fn docs_app_list_legacy_ports_and_single_app() {
        let s = marathon_apps(&fixture("marathon/marathon-docs/v2-apps.json")).expect("decodes");
        let app = &s.apps["/myapp"];
        assert_eq!(app.service_ports, vec![10013, 10015]);
        assert_eq!(app.instances, 3);
        assert!(s.tasks.is_empty());

        // `{"app": {…}}` (GET /v2/apps/toggle): tasks without slaveId get an agent per host.
        let s =
            marathon_apps(&fixture("marathon/marathon-docs/v2-apps-toggle.json")).expect("decodes");
        assert_eq!(s.tasks.len(), 2);
        let t = &s.tasks["toggle.802df2ae-3ad4-11e4-a400-56847afe9799"];
        assert_eq!(t.agent_id, "10.141.141.10");
        assert_eq!(s.agent_ip(t), Some(ip("10.141.141.10")));
        assert_eq!(t.healthy, Some(true));
        assert_eq!(t.host_ports, vec![31045]);
        assert_eq!(
            t.ports,
            vec![port(PortProtocol::Tcp, None, Some(31045), None, &[])]
        );
        let hcs = &s.apps["/toggle"].health_checks;
        assert_eq!(hcs.len(), 2);
        assert_eq!(hcs[1].port, Some(3333));
        assert_eq!(hcs[1].port_index, None);
    }

    #[test]
    fn group_paths_reverse_into_task_names() {
        assert_eq!(task_name("/group/sub/app"), "app.sub.group");
        assert_eq!(task_name("/app"), "app");
        assert_eq!(task_name("app"), "app");
    }

    #[test]
    fn port_definitions_with_labels_and_host_ip_merge() {
        // Host networking; the task's only IP is the agent's, so host ports fold into `port`.
        let body = br#"{"apps":[{"id":"/g/web","labels":{"HAPROXY_GROUP":"external","bad":5},
            "portDefinitions":[
              {"port":10000,"protocol":"udp,tcp","name":"dns","labels":{"VIP_0":"/dns:53"}},
              {"port":10001,"labels":{"network-scope":"container"}}],
            "healthChecks":[{"protocol":"TCP","portIndex":0}],
            "tasks":[
              {"id":"a","host":"10.0.0.5","slaveId":"s1","state":"TASK_RUNNING","ports":[31000,31001],
               "ipAddresses":[{"ipAddress":"10.0.0.5"}],"healthCheckResults":[{"alive":true},{"alive":false}]},
              {"id":"b","host":"agent.example","slaveId":"s2","state":"TASK_STAGING","ports":[31002]}]}]}"#;
        let s = marathon_apps(body).expect("decodes");
        let a = &s.tasks["a"];
        assert_eq!(a.name, "web.g");
        assert_eq!(a.healthy, Some(false));
        assert!(a.has_health_check);
        assert_eq!(a.labels, labels(&[("HAPROXY_GROUP", "external")]));
        assert_eq!(
            a.ports,
            vec![
                port(
                    PortProtocol::Tcp,
                    Some(31000),
                    None,
                    Some("dns"),
                    &[("VIP_0", "/dns:53")]
                ),
                port(
                    PortProtocol::Tcp,
                    Some(31001),
                    None,
                    None,
                    &[("network-scope", "container")]
                ),
                port(
                    PortProtocol::Udp,
                    Some(31000),
                    None,
                    Some("dns"),
                    &[("VIP_0", "/dns:53")]
                ),
            ]
        );
        // Not running, DNS-name host (no agent IP): ports as Marathon describes them, 2nd
        // definition has no allocated port yet.
        let b = &s.tasks["b"];
        assert_eq!(s.agents["s2"].ip, None);
        assert_eq!(s.agents["s2"].hostname, "agent.example");
        assert_eq!(
            b.ports,
            vec![
                port(
                    PortProtocol::Udp,
                    None,
                    Some(31002),
                    Some("dns"),
                    &[("VIP_0", "/dns:53")]
                ),
                port(
                    PortProtocol::Tcp,
                    None,
                    Some(31002),
                    Some("dns"),
                    &[("VIP_0", "/dns:53")]
                ),
            ]
        );
        assert_eq!(s.apps["/g/web"].service_ports, vec![10000, 10001]);
        assert_eq!(s.apps["/g/web"].ports[0].protocol, "udp,tcp");
    }

    #[test]
    fn container_network_mappings_with_and_without_host_port() {
        let body = br#"{"apps":[{"id":"/c","networks":[{"mode":"container","name":"dcos"}],
            "container":{"portMappings":[
              {"containerPort":80,"labels":{"VIP_0":"/c:80"}},
              {"containerPort":443,"hostPort":0,"servicePort":10443}]},
            "tasks":[{"id":"t","host":"10.0.0.9","slaveId":"s","state":"TASK_RUNNING","ports":[31443],
              "ipAddresses":[{"ipAddress":"9.0.0.7"}]}]}]}"#;
        let s = marathon_apps(body).expect("decodes");
        let t = &s.tasks["t"];
        assert_eq!(
            t.ports,
            vec![
                port(
                    PortProtocol::Tcp,
                    Some(80),
                    None,
                    None,
                    &[("VIP_0", "/c:80")]
                ),
                port(PortProtocol::Tcp, Some(443), Some(31443), None, &[]),
            ]
        );
    }

    #[test]
    fn ip_per_task_discovery_ports() {
        let body = br#"{"apps":[{"id":"/ippc","ipAddress":{"networkName":"dcos",
              "discovery":{"ports":[{"number":8080,"name":"http","protocol":"tcp","labels":{"VIP_0":"/ippc:80"}}]}},
            "tasks":[{"id":"t","host":"10.0.0.9","slaveId":"s","startedAt":"2017-07-19T17:35:15.654Z",
              "ipAddresses":[{"ipAddress":"9.0.0.8"}]}]}]}"#;
        let s = marathon_apps(body).expect("decodes");
        let t = &s.tasks["t"];
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(
            t.ports,
            vec![port(
                PortProtocol::Tcp,
                Some(8080),
                None,
                Some("http"),
                &[("VIP_0", "/ippc:80")]
            )]
        );
    }

    #[test]
    fn invalid_ports_are_skipped_with_the_rest_kept() {
        let s = marathon_apps(br#"{"apps":[{"id":"/a","tasks":[{"id":"t","ports":[70000]}]}]}"#)
            .expect("a bad port does not fail the answer");
        let t = &s.tasks["t"];
        assert!(t.host_ports.is_empty());
        assert!(t.ports.is_empty());
        assert_eq!(t.state, TaskState::Staging);

        let body = br#"{"apps":[5, {"tasks":[]}, {"id":"/ok","portDefinitions":[{"port":-1},{"port":10002}],
            "tasks":[{"id":"t2","ports":[-5, 31002],"state":"TASK_RUNNING"}, {"ports":[1]}, "x"]}]}"#;
        let s = marathon_apps(body).expect("decodes");
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps["/ok"].service_ports, vec![10002]);
        assert_eq!(s.tasks.len(), 1);
        let t = &s.tasks["t2"];
        assert_eq!(t.host_ports, vec![31002]);
        // Port 0's host port was invalid: only the second definition gets a TaskPort.
        assert_eq!(
            t.ports,
            vec![port(PortProtocol::Tcp, None, Some(31002), None, &[])]
        );
    }

    #[test]
    fn an_invalid_container_port_keeps_host_port_alignment() {
        let body = br#"{"apps":[{"id":"/b","container":{"docker":{"network":"BRIDGE","portMappings":[
              {"containerPort":"x","servicePort":10000},
              {"containerPort":81,"servicePort":10001,"labels":{"VIP_0":"/b:81"}}]}},
            "tasks":[{"id":"t","host":"10.0.0.9","slaveId":"s","state":"TASK_RUNNING","ports":[31000,31001],
              "ipAddresses":[{"ipAddress":"172.17.0.9"}]}]}]}"#;
        let s = marathon_apps(body).expect("decodes");
        let app = &s.apps["/b"];
        assert_eq!(app.ports.len(), 2);
        assert_eq!(app.ports[0].container_port, None);
        assert_eq!(app.service_ports, vec![10000, 10001]);
        assert_eq!(
            s.tasks["t"].ports,
            vec![port(
                PortProtocol::Tcp,
                Some(81),
                Some(31001),
                None,
                &[("VIP_0", "/b:81")]
            )]
        );
    }

    #[test]
    fn wrong_top_level_shapes_are_errors() {
        assert!(matches!(
            marathon_apps(br#"{"apps": 5}"#),
            Err(DecodeError::Shape { ref path, .. }) if path == "apps"
        ));
        assert!(matches!(
            marathon_apps(br#"{"message": "no leader"}"#),
            Err(DecodeError::MissingField { field: "apps", .. })
        ));
        assert!(matches!(
            marathon_apps(br#"[{"id": "/a"}]"#),
            Err(DecodeError::Shape { .. })
        ));
    }
}
