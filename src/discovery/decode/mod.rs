//! Decoders: upstream JSON → [`ClusterState`].
//!
//! Owns the translation of four upstream answers into the normalised contract of
//! `model::state` (see its doc comments):
//! - Marathon `GET /v2/apps?embed=apps.tasks` ([`marathon_apps`], module `marathon`);
//! - Mesos master `GET /master/state` ([`mesos_state`]), agent `GET /slave(1)/state`
//!   ([`mesos_agent_state`]) and the v1 operator API `GET_STATE` answer
//!   ([`mesos_operator_state`]), module `mesos`;
//! - [`detect`], which tells them apart by content (for `discovery.file`).
//!
//! May import `model` types only; does no I/O and never resolves DNS. Port handling follows
//! dcos-net's `dcos_net_mesos_listener` (see `mesos.rs` for the exact rules).
//!
//! Robustness: a body that is not JSON, or whose top-level shape is wrong (`apps` not an array,
//! `frameworks` not an array, ...) is a [`DecodeError`]. Below the top level every field is decoded
//! leniently (the wrappers in this file): a single malformed app, task or port is skipped with a
//! `tracing::warn!` naming it, unknown fields are ignored, and nothing here panics on input.

mod marathon;
mod mesos;

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::model::ClusterState;
use crate::model::state::{PortProtocol, TaskPort, TaskState};

pub use marathon::marathon_apps;
pub use mesos::{mesos_agent_state, mesos_operator_state, mesos_state};

/// A response that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is empty or only whitespace.
    #[error("empty response body")]
    Empty,
    /// The body is not JSON (syntax error, truncated, trailing garbage, HTML error page, ...).
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is JSON but its top-level shape is not the expected one (`apps` not an array, ...).
    #[error("unexpected JSON shape at `{path}`: {source}")]
    Shape {
        /// Dotted path of the offending value (`apps`, `get_state.get_tasks.tasks`, `.` = top level).
        path: String,
        source: serde_json::Error,
    },
    /// The body is a JSON object without the field that makes it the expected answer.
    #[error("not a {expected} response: no `{field}` field")]
    MissingField {
        expected: &'static str,
        field: &'static str,
    },
    /// [`detect`] recognised none of the supported shapes.
    #[error(
        "neither a Marathon /v2/apps nor a Mesos /master/state, agent /state or operator GET_STATE response"
    )]
    UnknownShape,
}

/// Detects the shape by content and decodes it:
/// - `{"apps": [...]}` or `{"app": {...}}` → [`marathon_apps`];
/// - `{"get_state": ...}`, `{"type": "GET_STATE", ...}` or a `SUBSCRIBED` event →
///   [`mesos_operator_state`];
/// - `{"frameworks": ...}` from an agent (`pid` `slave(1)@…`, or no `slaves` but a
///   `master_hostname`) → [`mesos_agent_state`];
/// - any other `{"frameworks": ...}` → [`mesos_state`].
pub fn detect(body: &[u8]) -> Result<ClusterState, DecodeError> {
    let probe: Probe = parse(body)?;
    if probe.apps.is_some() || probe.app.is_some() {
        return marathon_apps(body);
    }
    let kind = probe.r#type.ok().map(String::as_str);
    if probe.get_state.is_some()
        || probe.subscribed.is_some()
        || matches!(kind, Some("GET_STATE" | "SUBSCRIBED"))
    {
        return mesos_operator_state(body);
    }
    if probe.frameworks.is_some() {
        let agent_pid = probe.pid.ok().is_some_and(|pid| pid.starts_with("slave"));
        if agent_pid || (probe.slaves.is_none() && probe.master_hostname.is_some()) {
            return mesos_agent_state(body);
        }
        return mesos_state(body);
    }
    Err(DecodeError::UnknownShape)
}

/// The top-level keys [`detect`] looks at; values other than `type` and `pid` are skipped unread.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    apps: Option<IgnoredAny>,
    #[serde(default)]
    app: Option<IgnoredAny>,
    #[serde(default)]
    frameworks: Option<IgnoredAny>,
    #[serde(default)]
    slaves: Option<IgnoredAny>,
    #[serde(default)]
    master_hostname: Option<IgnoredAny>,
    #[serde(default)]
    get_state: Option<IgnoredAny>,
    #[serde(default)]
    subscribed: Option<IgnoredAny>,
    #[serde(default)]
    r#type: Val<String>,
    #[serde(default)]
    pid: Val<String>,
}

/// Parses a whole body into `T`, telling syntax errors ([`DecodeError::Json`]) from shape errors
/// ([`DecodeError::Shape`], with the path of the offending value).
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            DecodeError::Shape {
                path,
                source: inner,
            }
        } else {
            DecodeError::Json(inner)
        }
    })?;
    de.end()?;
    Ok(value)
}

// === shared normalisation helpers ===

/// Parses a libprocess PID (`slave(1)@10.0.1.248:5051`, `master@[fd01::1]:5050`) into IP and port.
/// Either part is `None` when it does not parse.
pub(super) fn parse_pid(pid: &str) -> (Option<IpAddr>, Option<u16>) {
    let addr = pid.rsplit_once('@').map_or(pid, |(_, a)| a);
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, p.parse::<u16>().ok()),
        _ => (addr, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.parse::<IpAddr>().ok(), port)
}

/// Milliseconds since the epoch of an RFC 3339 time (`2017-07-19T17:34:41.967Z`).
pub(super) fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// Milliseconds since the epoch of a Mesos status timestamp (seconds, as a float).
pub(super) fn seconds_to_ms(s: f64) -> Option<i64> {
    let ms = (s * 1000.0).round();
    // i64 covers ±292 million years; reject NaN, infinities and absurd values.
    (ms.is_finite() && ms.abs() < 9.0e15).then_some(ms as i64)
}

/// dcos-net `handle_port_scope`: `network-scope=host` puts a discovery port's number into
/// `host_port`, `container` (or no label) into `port`. Returns `true` for host scope.
pub(super) fn is_host_scope(labels: &[(String, String)]) -> bool {
    labels
        .iter()
        .rev()
        .find(|(k, _)| k == "network-scope")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("host"))
}

/// One `TaskPort` per protocol of `protocol` (`udp,tcp` → two); `None` → one port without a
/// protocol.
pub(super) fn ports_per_protocol(protocol: Option<&str>, template: TaskPort) -> Vec<TaskPort> {
    match protocol {
        None => vec![template],
        Some(p) => PortProtocol::parse_list(p)
            .into_iter()
            .map(|proto| TaskPort {
                protocol: Some(proto),
                ..template.clone()
            })
            .collect(),
    }
}

/// Appends to `into` the labels of `from` that it lacks (dcos-net unions the VIP labels; we keep
/// all labels, each `(key, value)` pair once).
fn union_labels(into: &mut Vec<(String, String)>, from: &[(String, String)]) {
    for l in from {
        if !into.contains(l) {
            into.push(l.clone());
        }
    }
}

/// dcos-net `match_task_port`: same protocol, and the same `port` or the same `host_port`.
fn ports_match(a: &TaskPort, b: &TaskPort) -> bool {
    a.protocol == b.protocol
        && ((a.port.is_some() && a.port == b.port)
            || (a.host_port.is_some() && a.host_port == b.host_port))
}

/// dcos-net `merge_task_ports`: each port mapping is merged into the first discovery port it
/// matches (the mapping's numbers win, names fall back to the discovery port's, labels are united),
/// or appended when none matches. Discovery ports keep their order; unmatched mappings follow.
pub(super) fn merge_task_ports(mappings: Vec<TaskPort>, discovery: Vec<TaskPort>) -> Vec<TaskPort> {
    let mut out = discovery;
    for m in mappings {
        match out.iter_mut().find(|p| ports_match(&m, p)) {
            Some(p) => {
                p.port = m.port.or(p.port);
                p.host_port = m.host_port.or(p.host_port);
                p.name = m.name.or(p.name.take());
                union_labels(&mut p.labels, &m.labels);
            }
            None => out.push(m),
        }
    }
    out
}

/// dcos-net `merge_host_ports`: for a running (or killing) task whose only IP is its agent's IP,
/// a host port and a container port are the same socket, so every `host_port` moves into `port`
/// and ports with the same (protocol, port) merge (the first one's name wins, labels are united).
/// The result is sorted by (protocol, port). Other tasks' ports are returned unchanged.
pub(super) fn merge_host_ports(
    state: &TaskState,
    task_ips: &[IpAddr],
    agent_ip: Option<IpAddr>,
    ports: Vec<TaskPort>,
) -> Vec<TaskPort> {
    let live = matches!(state, TaskState::Running | TaskState::Killing);
    let only_agent_ip = match (task_ips, agent_ip) {
        ([ip], Some(agent)) => *ip == agent,
        _ => false,
    };
    if !live || !only_agent_ip {
        return ports;
    }
    let mut out: Vec<TaskPort> = Vec::with_capacity(ports.len());
    for mut p in ports {
        if let Some(hp) = p.host_port.take() {
            p.port = Some(hp);
        }
        match out
            .iter_mut()
            .find(|q| q.protocol == p.protocol && q.port == p.port)
        {
            Some(q) => {
                if q.name.is_none() {
                    q.name = p.name;
                }
                union_labels(&mut q.labels, &p.labels);
            }
            None => out.push(p),
        }
    }
    out.sort_by(|a, b| (&a.protocol, a.port).cmp(&(&b.protocol, b.port)));
    out
}

/// A short rendering of a rejected JSON value for warnings.
fn describe(v: &serde_json::Value) -> String {
    let mut s = v.to_string();
    if s.len() > 64 {
        let mut cut = 61;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

// === lenient field wrappers ===

/// The scalar `visit_*` methods of a lenient visitor: each yields `$bad("a …")`.
macro_rules! scalar_visits {
    ($bad:path) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($bad("a boolean"))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($bad("a number"))
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($bad("a number"))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($bad("a number"))
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($bad("a string"))
        }
    };
}

/// A leaf field (string, number, boolean): `null` or a missing field is [`Val::Absent`]; a value
/// that does not convert to `T` (wrong type, `70000` or `-1` for a `u16`, an object) is
/// [`Val::Bad`] with a short rendering of it. Never fails on well-formed JSON and never buffers.
#[derive(Debug, Clone, Default)]
pub(super) enum Val<T> {
    #[default]
    Absent,
    Ok(T),
    Bad(String),
}

impl<T> Val<T> {
    pub(super) fn ok(&self) -> Option<&T> {
        match self {
            Val::Ok(t) => Some(t),
            _ => None,
        }
    }
}

impl<T: Copy> Val<T> {
    pub(super) fn get(&self) -> Option<T> {
        self.ok().copied()
    }
}

impl Val<String> {
    pub(super) fn str(&self) -> Option<&str> {
        self.ok().map(String::as_str)
    }
}

/// A JSON scalar as a leaf visitor saw it.
pub(super) enum Scalar<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
    String(String),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::I64(n) => n.to_string(),
            Scalar::U64(n) => n.to_string(),
            Scalar::F64(n) => n.to_string(),
            Scalar::Str(s) => describe(&serde_json::Value::String((*s).to_string())),
            Scalar::String(s) => describe(&serde_json::Value::String(s.clone())),
        }
    }
}

/// A leaf type a [`Val`] can hold: converts a scalar, or rejects it (the caller renders it).
pub(super) trait FromScalar: Sized {
    /// The value, or the scalar back when it does not convert.
    fn from_scalar(s: Scalar<'_>) -> Result<Self, Scalar<'_>>;
}

impl FromScalar for String {
    fn from_scalar(s: Scalar<'_>) -> Result<Self, Scalar<'_>> {
        match s {
            Scalar::Str(s) => Ok(s.to_string()),
            Scalar::String(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl FromScalar for bool {
    fn from_scalar(s: Scalar<'_>) -> Result<Self, Scalar<'_>> {
        match s {
            Scalar::Bool(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl FromScalar for f64 {
    fn from_scalar(s: Scalar<'_>) -> Result<Self, Scalar<'_>> {
        match s {
            Scalar::F64(n) => Ok(n),
            Scalar::I64(n) => Ok(n as f64),
            Scalar::U64(n) => Ok(n as f64),
            other => Err(other),
        }
    }
}

macro_rules! integer_from_scalar {
    ($($t:ty),*) => {$(
        impl FromScalar for $t {
            fn from_scalar(s: Scalar<'_>) -> Result<Self, Scalar<'_>> {
                match s {
                    Scalar::U64(n) => <$t>::try_from(n).map_err(|_| Scalar::U64(n)),
                    Scalar::I64(n) => <$t>::try_from(n).map_err(|_| Scalar::I64(n)),
                    // Some encoders write integers as `80.0`.
                    Scalar::F64(n) if n.fract() == 0.0 && n >= 0.0 && n <= <$t>::MAX as f64 => {
                        Ok(n as $t)
                    }
                    other => Err(other),
                }
            }
        }
    )*};
}
integer_from_scalar!(u16, u32, u64);

impl<'de, T: FromScalar> Deserialize<'de> for Val<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor(PhantomData))
    }
}

struct ValVisitor<T>(PhantomData<T>);

impl<T: FromScalar> ValVisitor<T> {
    fn scalar(s: Scalar<'_>) -> Val<T> {
        match T::from_scalar(s) {
            Ok(t) => Val::Ok(t),
            Err(s) => Val::Bad(s.describe()),
        }
    }
}

impl<'de, T: FromScalar> Visitor<'de> for ValVisitor<T> {
    type Value = Val<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::I64(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::U64(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::F64(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::Str(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<T>, E> {
        Ok(Self::scalar(Scalar::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<T>, E> {
        Ok(Val::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Val<T>, E> {
        Ok(Val::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Val<T>, A::Error> {
        drain_seq(seq)?;
        Ok(Val::Bad("an array".to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Val<T>, A::Error> {
        drain_map(map)?;
        Ok(Val::Bad("an object".to_string()))
    }
}

/// An object field decoded in place (no buffering) into `T`, whose own fields must all be lenient.
/// `null`/missing is [`Obj::Absent`]; a non-object is [`Obj::Bad`] naming what it was.
#[derive(Debug, Clone, Default)]
pub(super) enum Obj<T> {
    #[default]
    Absent,
    Ok(T),
    Bad(&'static str),
}

impl<T> Obj<T> {
    pub(super) fn ok(&self) -> Option<&T> {
        match self {
            Obj::Ok(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn is_ok(&self) -> bool {
        matches!(self, Obj::Ok(_))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Obj::Ok)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
        Ok(Obj::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Obj<T>, E> {
        Ok(Obj::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Obj<T>, A::Error> {
        drain_seq(seq)?;
        Ok(Obj::Bad("an array"))
    }

    scalar_visits!(Obj::Bad);
}

/// An array field decoded in place; each element is a lenient `T` (`Obj<_>` or `Val<_>`).
/// `null`/missing is empty; a non-array is empty with `bad` naming what it was.
#[derive(Debug, Clone)]
pub(super) struct List<T> {
    pub(super) items: Vec<T>,
    pub(super) bad: Option<&'static str>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            items: Vec::new(),
            bad: None,
        }
    }
}

impl<T> List<T> {
    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    fn bad(what: &'static str) -> Self {
        List {
            items: Vec::new(),
            bad: Some(what),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
        // The size hint comes from the input: cap it so a lying hint cannot reserve much.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<T>()? {
            items.push(item);
        }
        Ok(List { items, bad: None })
    }

    fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
        Ok(List::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<List<T>, E> {
        Ok(List::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<T>, A::Error> {
        drain_map(map)?;
        Ok(List::bad("an object"))
    }

    scalar_visits!(List::bad);
}

/// A Mesos identifier: a plain string (`/master/state`: `"framework_id": "…-0000"`) or a v1
/// operator API object (`"framework_id": {"value": "…-0000"}`).
#[derive(Debug, Clone, Default)]
pub(super) struct MesosId(pub(super) Option<String>);

impl<'de> Deserialize<'de> for MesosId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MesosIdVisitor)
    }
}

struct MesosIdVisitor;

impl<'de> Visitor<'de> for MesosIdVisitor {
    type Value = MesosId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an object with a string `value`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MesosId, E> {
        Ok(MesosId(Some(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<MesosId, E> {
        Ok(MesosId(Some(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MesosId, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "value" {
                if let Val::Ok(v) = map.next_value::<Val<String>>()? {
                    id = Some(v);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(MesosId(id))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MesosId, A::Error> {
        drain_seq(seq)?;
        Ok(MesosId(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<MesosId, E> {
        Ok(MesosId(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MesosId, E> {
        Ok(MesosId(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MesosId, E> {
        Ok(MesosId(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MesosId, E> {
        Ok(MesosId(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MesosId, E> {
        Ok(MesosId(None))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Helpers shared by the decoders' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::IpAddr;

    /// A file under `tests/fixtures/`.
    pub fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
    }

    pub fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP literal")
    }

    pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::fixture;
    use super::*;
    use crate::model::state::StateKind;

    const MARATHON_APPS: &[&str] = &[
        "marathon/marathon15_apps.json",
        "marathon/zdd_apps.json",
        "marathon/zdd_app_blue.json",
        "marathon/zdd_app_blue_marathon1.5.json",
        "marathon/marathon-docs/v2-apps.json",
        "marathon/marathon-docs/v2-apps-toggle.json",
    ];

    const MESOS_MASTER: &[&str] = &[
        "mesos-master/empty.json",
        "mesos-master/docker.json",
        "mesos-master/state_di.json",
        "mesos-master/two-healthcheck-free-vips-state.json",
        "mesos-master/state-overlay.json",
        "mesos-master/state6.json",
        "mesos-master/overlay.json",
        "mesos-master/invalid-port.json",
        "mesos-master/missing-port.json",
    ];

    const MESOS_AGENT: &[&str] = &[
        "mesos-agent/named-base-vips.json",
        "mesos-agent/ucr-bridge-mode.json",
    ];

    const MESOS_OPERATOR: &[&str] = &[
        "mesos-operator-v1/tcp-and-udp.json",
        "mesos-operator-v1/unhealthy.json",
        "mesos-operator-v1/vip-labels.json",
    ];

    type Decoder = fn(&[u8]) -> Result<ClusterState, DecodeError>;

    #[test]
    fn every_fixture_decodes_and_detect_agrees() {
        let groups: [(&[&str], Decoder, StateKind); 4] = [
            (MARATHON_APPS, marathon_apps, StateKind::Marathon),
            (MESOS_MASTER, mesos_state, StateKind::Mesos),
            (MESOS_AGENT, mesos_agent_state, StateKind::Mesos),
            (MESOS_OPERATOR, mesos_operator_state, StateKind::Mesos),
        ];
        for (files, decode, kind) in groups {
            for f in files {
                let body = fixture(f);
                let direct = decode(&body).unwrap_or_else(|e| panic!("{f}: {e}"));
                assert_eq!(direct.kind, kind, "{f}");
                let detected = detect(&body).unwrap_or_else(|e| panic!("{f} via detect: {e}"));
                assert_eq!(direct, detected, "{f}: detect chose another decoder");
            }
        }
    }

    #[test]
    fn every_operator_stream_starts_with_a_decodable_subscribed_event() {
        for f in [
            "mesos-operator-v1/operator-api.json",
            "mesos-operator-v1/hello-overlay.json",
            "mesos-operator-v1/pod-tasks.json",
        ] {
            let body = fixture(f);
            let first = body.split(|b| *b == b'\n').next().expect("a first line");
            let s = detect(first).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(s.kind, StateKind::Mesos, "{f}");
            assert!(!s.frameworks.is_empty(), "{f}");
            // The whole stream is several JSON documents: not one answer.
            assert!(matches!(detect(&body), Err(DecodeError::Json(_))), "{f}");
        }
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(matches!(detect(b""), Err(DecodeError::Empty)));
        assert!(matches!(marathon_apps(b" \n"), Err(DecodeError::Empty)));
        assert!(matches!(detect(b"{"), Err(DecodeError::Json(_))));
        assert!(matches!(mesos_state(b"{"), Err(DecodeError::Json(_))));
        assert!(matches!(detect(b"<html>"), Err(DecodeError::Json(_))));
        assert!(matches!(detect(b"{} trailing"), Err(DecodeError::Json(_))));
        assert!(matches!(
            detect(br#"{"apps": 5}"#),
            Err(DecodeError::Shape { ref path, .. }) if path == "apps"
        ));
        assert!(matches!(detect(b"{}"), Err(DecodeError::UnknownShape)));
        assert!(matches!(detect(b"[1, 2]"), Err(DecodeError::Shape { .. })));
        assert!(matches!(detect(b"42"), Err(DecodeError::Shape { .. })));
        // Deep nesting: the decoded schema has no recursive type, and skipped values (unknown
        // fields, values of the wrong type) are walked without recursion: no stack overflow.
        let nest = |field: &str| {
            format!(
                r#"{{"apps":[{{"id":"/a","{field}":{}{}}}]}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
        };
        assert!(detect(nest("unknown").as_bytes()).is_ok());
        let s = detect(nest("version").as_bytes()).expect("bad version skipped");
        assert_eq!(s.apps["/a"].version, "");
        let deep_obj = format!(
            r#"{{"apps":[{{"id":"/a","container":{}{{}}{}}}]}}"#,
            r#"{"docker":"#.repeat(100_000),
            "}".repeat(100_000)
        );
        assert!(detect(deep_obj.as_bytes()).is_ok());
        // A task that is a deep array is skipped (drained without recursion).
        let s = detect(nest("tasks").as_bytes()).expect("bad task skipped");
        assert!(s.tasks.is_empty());
        // Errors name what was wrong.
        let e = detect(br#"{"apps": 5}"#).expect_err("shape error");
        assert!(e.to_string().contains("`apps`"), "{e}");
    }

    #[test]
    fn a_bad_port_skips_the_port_not_the_answer() {
        let s = detect(br#"{"apps":[{"id":"/a","tasks":[{"id":"t","ports":[70000]}]}]}"#)
            .expect("decodes");
        assert!(s.tasks["t"].host_ports.is_empty());
        assert!(s.apps.contains_key("/a"));
    }

    #[test]
    fn detect_tells_master_from_agent_by_pid() {
        let agent = br#"{"id":"S1","pid":"slave(1)@10.0.0.2:5051","hostname":"h","frameworks":[]}"#;
        let s = detect(agent).expect("agent state");
        assert_eq!(s.agents["S1"].ip, Some("10.0.0.2".parse().expect("ip")));
        let master = br#"{"pid":"master@10.0.0.1:5050","leader":"master@10.0.0.1:5050",
            "hostname":"m1","frameworks":[],"slaves":[]}"#;
        let s = detect(master).expect("master state");
        assert!(s.agents.is_empty());
        let leader = s.leader.expect("leader");
        assert_eq!(leader.hostname, "m1");
        assert_eq!(leader.port, 5050);
    }

    #[test]
    fn pids_parse() {
        let v4 = "10.0.1.248".parse().ok();
        assert_eq!(parse_pid("slave(1)@10.0.1.248:5051"), (v4, Some(5051)));
        assert_eq!(parse_pid("10.0.1.248:5051"), (v4, Some(5051)));
        assert_eq!(
            parse_pid("master@[fd01::1]:5050"),
            ("fd01::1".parse().ok(), Some(5050))
        );
        assert_eq!(parse_pid("scheduler@host.example:99999"), (None, None));
        assert_eq!(parse_pid(""), (None, None));
    }

    #[test]
    fn times_convert() {
        assert_eq!(
            rfc3339_ms("2017-07-19T17:34:41.967Z"),
            Some(1_500_485_681_967)
        );
        assert_eq!(rfc3339_ms("not a time"), None);
        assert_eq!(seconds_to_ms(1_474_653_525.766_06), Some(1_474_653_525_766));
        assert_eq!(seconds_to_ms(f64::NAN), None);
        assert_eq!(seconds_to_ms(1e300), None);
    }

    fn p(
        proto: PortProtocol,
        port: Option<u16>,
        host_port: Option<u16>,
        l: &[(&str, &str)],
    ) -> TaskPort {
        TaskPort {
            name: None,
            protocol: Some(proto),
            port,
            host_port,
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn merge_task_ports_matches_by_protocol_and_either_number() {
        use PortProtocol::{Tcp, Udp};
        let mappings = vec![
            p(Tcp, Some(80), Some(31000), &[]),
            p(Tcp, Some(81), Some(31001), &[]),
            p(Udp, Some(53), Some(31002), &[]),
        ];
        let discovery = vec![
            p(
                Tcp,
                None,
                Some(31000),
                &[("VIP_0", "/a:80"), ("network-scope", "host")],
            ),
            p(Tcp, Some(81), None, &[("VIP_1", "/b:81")]),
            p(Tcp, None, Some(31002), &[("VIP_2", "/c:53")]),
        ];
        let merged = merge_task_ports(mappings, discovery);
        assert_eq!(
            merged,
            vec![
                p(
                    Tcp,
                    Some(80),
                    Some(31000),
                    &[("VIP_0", "/a:80"), ("network-scope", "host")]
                ),
                p(Tcp, Some(81), Some(31001), &[("VIP_1", "/b:81")]),
                // Same host port, other protocol: no match.
                p(Tcp, None, Some(31002), &[("VIP_2", "/c:53")]),
                p(Udp, Some(53), Some(31002), &[]),
            ]
        );
    }

    #[test]
    fn merge_host_ports_only_for_live_tasks_on_the_agent_ip() {
        use PortProtocol::Tcp;
        let agent: IpAddr = "10.0.0.1".parse().expect("ip");
        let ports = vec![
            p(Tcp, None, Some(31000), &[("VIP_0", "/a:80")]),
            p(Tcp, Some(31000), None, &[("VIP_1", "/b:80")]),
            p(Tcp, Some(8080), None, &[]),
        ];
        let merged = merge_host_ports(&TaskState::Running, &[agent], Some(agent), ports.clone());
        assert_eq!(
            merged,
            vec![
                p(Tcp, Some(8080), None, &[]),
                p(
                    Tcp,
                    Some(31000),
                    None,
                    &[("VIP_0", "/a:80"), ("VIP_1", "/b:80")]
                ),
            ]
        );
        let other: IpAddr = "9.0.0.1".parse().expect("ip");
        assert_eq!(
            merge_host_ports(&TaskState::Running, &[other], Some(agent), ports.clone()),
            ports
        );
        assert_eq!(
            merge_host_ports(&TaskState::Staging, &[agent], Some(agent), ports.clone()),
            ports
        );
        assert_eq!(
            merge_host_ports(
                &TaskState::Running,
                &[agent, other],
                Some(agent),
                ports.clone()
            ),
            ports
        );
    }
}
