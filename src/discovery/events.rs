//! Marathon events (`/v2/events`): typed parsing of the SSE payloads we subscribe to, and applying
//! them as patches to a `ClusterState`.
//!
//! Pure: no I/O, no clock. Hostname resolution is passed in as a cache look-up so a patch never
//! waits on DNS. What a patch cannot do exactly (a task of an unknown app, a task we cannot build
//! ports for) is left to the full re-fetch that every event schedules.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::sse::SseEvent;
use crate::model::{Agent, App, ClusterState, PortProtocol, Task, TaskPort, TaskState};

/// Event types we ask Marathon for (the `event_type` filter of `/v2/events`).
pub const SUBSCRIBED: [&str; 3] = [
    "status_update_event",
    "health_status_changed_event",
    "api_post_event",
];

/// A Marathon event, as far as we use it.
#[derive(Debug, Clone, PartialEq)]
pub enum MarathonEvent {
    StatusUpdate(StatusUpdate),
    HealthChanged(HealthChanged),
    /// An app was created or changed through the API: only the re-fetch can tell what.
    ApiPost,
    /// Anything else (`event_stream_attached`, …), by type.
    Other(String),
}

impl MarathonEvent {
    /// The `event_type` metric label: subscribed types by name, everything else `other`
    /// (bounded cardinality whatever the server sends).
    pub fn metric_label(&self) -> &'static str {
        match self {
            MarathonEvent::StatusUpdate(_) => "status_update_event",
            MarathonEvent::HealthChanged(_) => "health_status_changed_event",
            MarathonEvent::ApiPost => "api_post_event",
            MarathonEvent::Other(t) if t == "event_stream_attached" => "event_stream_attached",
            MarathonEvent::Other(t) if t == "event_stream_detached" => "event_stream_detached",
            MarathonEvent::Other(_) => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `status_update_event`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub task_id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    pub task_status: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub slave_id: Option<String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub ip_addresses: Option<Vec<IpAddress>>,
    #[serde(default)]
    pub version: Option<String>,
}

/// `health_status_changed_event` (Marathon < 1.4 sends `taskId`, later ones `instanceId`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthChanged {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub alive: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event data is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("data-only event without an eventType")]
    NoType,
}

/// Parses one SSE event. The type comes from the `event:` line, or from `eventType` in the JSON
/// for data-only events.
pub fn parse(sse: &SseEvent) -> Result<MarathonEvent, EventError> {
    let value: serde_json::Value = serde_json::from_str(&sse.data)?;
    let event_type = if !sse.event.is_empty() && sse.event != "message" {
        sse.event.clone()
    } else {
        value
            .get("eventType")
            .and_then(|t| t.as_str())
            .ok_or(EventError::NoType)?
            .to_string()
    };
    Ok(match event_type.as_str() {
        "status_update_event" => MarathonEvent::StatusUpdate(serde_json::from_value(value)?),
        "health_status_changed_event" => {
            MarathonEvent::HealthChanged(serde_json::from_value(value)?)
        }
        "api_post_event" => MarathonEvent::ApiPost,
        _ => MarathonEvent::Other(event_type),
    })
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The state changed.
    Changed,
    /// Already true in the state (or nothing to do).
    Unchanged,
    /// Could not be applied from the event alone; the full re-fetch will bring it.
    Deferred,
}

/// Applies `ev` to `state`, cloning the state only when something changes (`Arc::make_mut`).
/// `resolve` looks up a cached IP for an agent hostname that is not an IP literal.
pub fn apply(
    state: &mut Arc<ClusterState>,
    ev: &MarathonEvent,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Effect {
    match ev {
        MarathonEvent::StatusUpdate(su) => apply_status(state, su, resolve),
        MarathonEvent::HealthChanged(h) => apply_health(state, h),
        MarathonEvent::ApiPost | MarathonEvent::Other(_) => Effect::Deferred,
    }
}

fn apply_status(
    state: &mut Arc<ClusterState>,
    su: &StatusUpdate,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Effect {
    let new_state = TaskState::parse(&su.task_status);
    let ips = parse_ips(su.ip_addresses.as_deref());
    match state.tasks.get(&su.task_id) {
        Some(_) if new_state.is_terminal() => {
            Arc::make_mut(state).tasks.remove(&su.task_id);
            Effect::Changed
        }
        None if new_state.is_terminal() => Effect::Unchanged,
        Some(task) => {
            let ips_change = !ips.is_empty() && task.netinfo_ips != ips;
            if task.state == new_state && !ips_change {
                return Effect::Unchanged;
            }
            if let Some(task) = Arc::make_mut(state).tasks.get_mut(&su.task_id) {
                let task = Arc::make_mut(task);
                task.state = new_state;
                if ips_change {
                    task.netinfo_ips = ips;
                }
            }
            Effect::Changed
        }
        None if matches!(
            new_state,
            TaskState::Running | TaskState::Staging | TaskState::Starting
        ) =>
        {
            let Some(task) = new_task(state, su, new_state, ips) else {
                return Effect::Deferred;
            };
            let agent = agent_for(su, resolve);
            let st = Arc::make_mut(state);
            if let Some(agent) = agent {
                st.agents.entry(agent.id.clone()).or_insert(agent);
            }
            st.tasks.insert(task.id.clone(), Arc::new(task));
            Effect::Changed
        }
        None => Effect::Deferred,
    }
}

/// The agent id as the decoder keys agents: `slaveId`, else the host.
fn agent_id(su: &StatusUpdate) -> Option<String> {
    su.slave_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(su.host.as_deref().filter(|s| !s.is_empty()))
        .map(str::to_string)
}

fn parse_ips(list: Option<&[IpAddress]>) -> Vec<IpAddr> {
    list.unwrap_or_default()
        .iter()
        .filter_map(|a| a.ip_address.parse().ok())
        .collect()
}

fn agent_for(su: &StatusUpdate, resolve: &dyn Fn(&str) -> Option<IpAddr>) -> Option<Agent> {
    let hostname = su.host.clone().unwrap_or_default();
    let id = agent_id(su)?;
    let ip = hostname
        .parse::<IpAddr>()
        .ok()
        .or_else(|| (!hostname.is_empty()).then(|| resolve(&hostname)).flatten());
    Some(Agent {
        id,
        hostname,
        ip,
        port: None,
    })
}

/// Builds a task from a status update for a known app. Ports are taken from a running sibling of
/// the same app (same port layout, host ports swapped for the event's), else from the app's port
/// definitions; `None` when the app is unknown.
fn new_task(
    state: &ClusterState,
    su: &StatusUpdate,
    task_state: TaskState,
    ips: Vec<IpAddr>,
) -> Option<Task> {
    let app_id = su.app_id.as_deref()?;
    let app = state.apps.get(app_id)?;
    let sibling = state
        .tasks
        .values()
        .filter(|t| t.app_id.as_deref() == Some(app_id))
        .find(|t| t.host_ports.len() == su.ports.len());
    let framework_id = sibling
        .map(|t| t.framework_id.clone())
        .or_else(|| {
            state
                .frameworks
                .values()
                .find(|f| f.name == "marathon")
                .map(|f| f.id.clone())
        })
        .unwrap_or_else(|| "marathon".to_string());
    let ports = match sibling {
        Some(s) => remap_ports(s, &su.ports),
        None => ports_from_app(app, &su.ports),
    };
    let labels = match sibling {
        Some(s) => s.labels.clone(),
        None => app
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Some(Task {
        id: su.task_id.clone(),
        name: task_name(app_id),
        framework_id,
        agent_id: agent_id(su).unwrap_or_default(),
        app_id: Some(app_id.to_string()),
        state: task_state,
        healthy: None,
        has_health_check: !app.health_checks.is_empty(),
        started_ms: None,
        netinfo_ips: ips,
        mesos_ip: None,
        docker_ip: None,
        host_ports: su.ports.clone(),
        ports,
        labels,
        discovery: None,
    })
}

/// Marathon's task name: the app path reversed (`/group/app` → `app.group`).
pub fn task_name(app_id: &str) -> String {
    let parts: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).rev().collect();
    parts.join(".")
}

/// The sibling's ports with each of its host ports replaced by the new task's port at the same
/// index of the `ports` resource (also where the decoder merged a host port into `port`).
fn remap_ports(sibling: &Task, new_host_ports: &[u16]) -> Vec<TaskPort> {
    let map: BTreeMap<u16, u16> = sibling
        .host_ports
        .iter()
        .copied()
        .zip(new_host_ports.iter().copied())
        .collect();
    sibling
        .ports
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let old_host = p.host_port;
            if let Some(hp) = old_host {
                p.host_port = map.get(&hp).copied().or(Some(hp));
            }
            // A host port merged into `port` (dcos-net `merge_host_ports`) moves with it.
            if let Some(n) = p.port
                && (old_host.is_none() || old_host == Some(n))
                && let Some(new) = map.get(&n)
            {
                p.port = Some(*new);
            }
            p
        })
        .collect()
}

/// Ports from the app definition: each port that allocates a host port takes the next entry of
/// the task's `ports` resource; a container port without a host port keeps `host_port` empty.
fn ports_from_app(app: &App, host_ports: &[u16]) -> Vec<TaskPort> {
    let mut next_host = host_ports.iter().copied();
    let mut out = Vec::new();
    if app.ports.is_empty() {
        for hp in host_ports {
            out.push(TaskPort {
                name: None,
                protocol: Some(PortProtocol::Tcp),
                port: Some(*hp),
                host_port: Some(*hp),
                labels: Vec::new(),
            });
        }
        return out;
    }
    for ap in &app.ports {
        let host_port = if ap.host_port.is_some() || ap.container_port.is_none() {
            next_host.next()
        } else {
            None
        };
        let labels: Vec<(String, String)> = ap
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for proto in PortProtocol::parse_list(&ap.protocol) {
            out.push(TaskPort {
                name: ap.name.clone(),
                protocol: Some(proto),
                port: ap.container_port,
                host_port,
                labels: labels.clone(),
            });
        }
    }
    out
}

fn apply_health(state: &mut Arc<ClusterState>, h: &HealthChanged) -> Effect {
    let targets = health_targets(state, h);
    if targets.is_empty() {
        return Effect::Deferred;
    }
    let verdict = Some(h.alive);
    let changing: Vec<&String> = targets
        .iter()
        .filter(|id| state.tasks.get(*id).is_some_and(|t| t.healthy != verdict))
        .collect();
    if changing.is_empty() {
        return Effect::Unchanged;
    }
    let changing: Vec<String> = changing.into_iter().cloned().collect();
    let st = Arc::make_mut(state);
    for id in changing {
        if let Some(t) = st.tasks.get_mut(&id) {
            Arc::make_mut(t).healthy = verdict;
        }
    }
    Effect::Changed
}

/// Task ids an health event is about: its `taskId`; or its `instanceId` as a task id, mapped from
/// the legacy instance form `app.marathon-UUID` to the task id `app.UUID`, or as the prefix of the
/// instance's task ids (`app.instance-UUID._app.1`).
fn health_targets(state: &ClusterState, h: &HealthChanged) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(id) = &h.task_id
        && state.tasks.contains_key(id)
    {
        out.push(id.clone());
    }
    if let Some(inst) = &h.instance_id {
        if state.tasks.contains_key(inst) {
            out.push(inst.clone());
        }
        if let Some((app, uuid)) = inst.rsplit_once(".marathon-") {
            let id = format!("{app}.{uuid}");
            if state.tasks.contains_key(&id) {
                out.push(id);
            }
        }
        let prefix = format!("{inst}.");
        out.extend(
            state
                .tasks
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone()),
        );
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppPort, Framework};

    fn sse(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    fn no_dns(_: &str) -> Option<IpAddr> {
        None
    }

    fn base_state() -> Arc<ClusterState> {
        let mut s = ClusterState::default();
        s.frameworks.insert(
            "fw-1".into(),
            Framework {
                id: "fw-1".into(),
                name: "marathon".into(),
                ..Default::default()
            },
        );
        let mut labels = BTreeMap::new();
        labels.insert("VIP_0".to_string(), "/web:80".to_string());
        s.apps.insert(
            "/shop/web".into(),
            App {
                id: "/shop/web".into(),
                ports: vec![AppPort {
                    name: Some("http".into()),
                    protocol: "udp,tcp".into(),
                    container_port: Some(8080),
                    host_port: Some(0),
                    service_port: Some(10000),
                    labels,
                }],
                instances: 2,
                ..Default::default()
            }
            .into(),
        );
        s.tasks.insert(
            "shop_web.1".into(),
            Task {
                id: "shop_web.1".into(),
                app_id: Some("/shop/web".into()),
                framework_id: "fw-1".into(),
                agent_id: "a1".into(),
                state: TaskState::Running,
                host_ports: vec![31000],
                ports: vec![TaskPort {
                    name: Some("http".into()),
                    protocol: Some(PortProtocol::Tcp),
                    port: Some(8080),
                    host_port: Some(31000),
                    labels: vec![("VIP_0".into(), "/web:80".into())],
                }],
                ..Default::default()
            }
            .into(),
        );
        Arc::new(s)
    }

    #[test]
    fn parses_named_and_data_only_events_from_the_marathon_docs() {
        let named = sse(
            "status_update_event",
            r#"{"slaveId":"S6","taskId":"foo.06","taskStatus":"TASK_FAILED","appId":"/foo","host":"srv5","ports":[31776],"version":"v","eventType":"status_update_event"}"#,
        );
        let MarathonEvent::StatusUpdate(su) = parse(&named).unwrap() else {
            panic!("not a status update");
        };
        assert_eq!(su.task_id, "foo.06");
        assert_eq!(su.ports, vec![31776]);
        assert_eq!(su.slave_id.as_deref(), Some("S6"));

        let data_only = sse("", r#"{"groupId":"/","eventType":"group_change_success"}"#);
        assert_eq!(
            parse(&data_only).unwrap(),
            MarathonEvent::Other("group_change_success".into())
        );
        let health = sse(
            "",
            r#"{"eventType":"health_status_changed_event","appId":"/my-app","instanceId":"my-app.instance-c7","alive":true}"#,
        );
        assert!(matches!(
            parse(&health).unwrap(),
            MarathonEvent::HealthChanged(HealthChanged { alive: true, .. })
        ));
        assert!(parse(&sse("", "{\"x\":1}")).is_err());
        assert!(parse(&sse("status_update_event", "{not json")).is_err());
    }

    #[test]
    fn terminal_status_removes_and_killing_marks() {
        let mut s = base_state();
        let before = s.clone();
        let kill = |id: &str, st: &str| {
            MarathonEvent::StatusUpdate(StatusUpdate {
                task_id: id.into(),
                app_id: Some("/shop/web".into()),
                task_status: st.into(),
                host: None,
                slave_id: None,
                ports: vec![],
                ip_addresses: None,
                version: None,
            })
        };
        assert_eq!(
            apply(&mut s, &kill("shop_web.1", "TASK_KILLING"), &no_dns),
            Effect::Changed
        );
        assert_eq!(s.tasks["shop_web.1"].state, TaskState::Killing);
        assert_eq!(
            before.tasks["shop_web.1"].state,
            TaskState::Running,
            "copy on write"
        );
        assert_eq!(
            apply(&mut s, &kill("shop_web.1", "TASK_KILLING"), &no_dns),
            Effect::Unchanged
        );
        assert_eq!(
            apply(&mut s, &kill("shop_web.1", "TASK_KILLED"), &no_dns),
            Effect::Changed
        );
        assert!(s.tasks.is_empty());
        assert_eq!(
            apply(&mut s, &kill("shop_web.1", "TASK_KILLED"), &no_dns),
            Effect::Unchanged
        );
        assert_eq!(
            apply(&mut s, &kill("other.9", "TASK_KILLING"), &no_dns),
            Effect::Deferred
        );
    }

    #[test]
    fn new_running_task_copies_the_sibling_layout() {
        let mut s = base_state();
        let ev = MarathonEvent::StatusUpdate(StatusUpdate {
            task_id: "shop_web.2".into(),
            app_id: Some("/shop/web".into()),
            task_status: "TASK_RUNNING".into(),
            host: Some("agent-2.example".into()),
            slave_id: Some("a2".into()),
            ports: vec![31555],
            ip_addresses: Some(vec![IpAddress {
                ip_address: "9.0.0.7".into(),
                protocol: Some("IPv4".into()),
            }]),
            version: None,
        });
        let resolve = |h: &str| (h == "agent-2.example").then(|| "10.0.0.2".parse().unwrap());
        assert_eq!(apply(&mut s, &ev, &resolve), Effect::Changed);
        let t = &s.tasks["shop_web.2"];
        assert_eq!(t.name, "web.shop");
        assert_eq!(t.framework_id, "fw-1");
        assert_eq!(t.agent_id, "a2");
        assert_eq!(t.host_ports, vec![31555]);
        assert_eq!(t.ports.len(), 1);
        assert_eq!(t.ports[0].host_port, Some(31555));
        assert_eq!(t.ports[0].port, Some(8080));
        assert_eq!(t.ports[0].labels, vec![("VIP_0".into(), "/web:80".into())]);
        assert_eq!(t.netinfo_ips, vec!["9.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.agents["a2"].ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(s.agents["a2"].hostname, "agent-2.example");
    }

    #[test]
    fn new_task_without_sibling_uses_app_ports_and_unknown_app_defers() {
        let mut s = base_state();
        Arc::make_mut(&mut s).tasks.clear();
        let mk = |app: &str| {
            MarathonEvent::StatusUpdate(StatusUpdate {
                task_id: "t.3".into(),
                app_id: Some(app.into()),
                task_status: "TASK_RUNNING".into(),
                host: Some("10.0.0.3".into()),
                slave_id: Some("a3".into()),
                ports: vec![31001],
                ip_addresses: None,
                version: None,
            })
        };
        assert_eq!(apply(&mut s, &mk("/nope"), &no_dns), Effect::Deferred);
        assert_eq!(apply(&mut s, &mk("/shop/web"), &no_dns), Effect::Changed);
        let t = &s.tasks["t.3"];
        // `udp,tcp` is two ports, both mapped to host port 31001.
        assert_eq!(t.ports.len(), 2);
        assert_eq!(t.ports[0].protocol, Some(PortProtocol::Udp));
        assert_eq!(t.ports[1].protocol, Some(PortProtocol::Tcp));
        assert!(
            t.ports
                .iter()
                .all(|p| p.host_port == Some(31001) && p.port == Some(8080))
        );
        assert_eq!(s.agents["a3"].ip, Some("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn health_by_task_id_legacy_and_new_instance_ids() {
        let mut s = base_state();
        {
            let st = Arc::make_mut(&mut s);
            let mut t = (*st.tasks["shop_web.1"]).clone();
            t.id = "shop_web.instance-abc._app.1".into();
            st.tasks.insert(t.id.clone(), Arc::new(t));
        }
        let h = |task: Option<&str>, inst: Option<&str>, alive| {
            MarathonEvent::HealthChanged(HealthChanged {
                app_id: Some("/shop/web".into()),
                task_id: task.map(Into::into),
                instance_id: inst.map(Into::into),
                alive,
            })
        };
        assert_eq!(
            apply(&mut s, &h(Some("shop_web.1"), None, false), &no_dns),
            Effect::Changed
        );
        assert_eq!(s.tasks["shop_web.1"].healthy, Some(false));
        assert_eq!(
            apply(&mut s, &h(None, Some("shop_web.marathon-1"), true), &no_dns),
            Effect::Changed
        );
        assert_eq!(s.tasks["shop_web.1"].healthy, Some(true));
        assert_eq!(
            apply(
                &mut s,
                &h(None, Some("shop_web.instance-abc"), false),
                &no_dns
            ),
            Effect::Changed
        );
        assert_eq!(s.tasks["shop_web.instance-abc._app.1"].healthy, Some(false));
        assert_eq!(s.tasks["shop_web.1"].healthy, Some(true));
        assert_eq!(
            apply(
                &mut s,
                &h(None, Some("shop_web.instance-abc"), false),
                &no_dns
            ),
            Effect::Unchanged
        );
        assert_eq!(
            apply(&mut s, &h(None, Some("gone.marathon-x"), false), &no_dns),
            Effect::Deferred
        );
    }

    #[test]
    fn task_names_reverse_the_app_path() {
        assert_eq!(task_name("/a/b/c"), "c.b.a");
        assert_eq!(task_name("/web"), "web");
    }
}
