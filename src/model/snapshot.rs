//! `Snapshot`: the routing state every data path reads, built by a pure function from a
//! `ClusterState` and the config. Never mutated after it is built; published whole (see `publish`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::Serialize;

use super::state::ClusterState;

/// L4 protocol of a VIP or service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VIP is keyed by (protocol, address, port), as dcos-net keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VipKey {
    pub protocol: Protocol,
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{}://{}:{}", self.protocol, ip, self.port),
            IpAddr::V6(ip) => write!(f, "{}://[{}]:{}", self.protocol, ip, self.port),
        }
    }
}

/// A named VIP label (`/name`, `merp`) within its framework.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NamedVipKey {
    /// The label's host part as written (`/foo`, `merp`).
    pub name: String,
    /// Framework name (`marathon`).
    pub framework: String,
}

/// Where a named VIP lives: its DNS name and its deterministic addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedVip {
    /// `name.framework.l4lb.thisdcos.directory`.
    pub fqdn: String,
    /// Allocated for every live name. A name with only IPv6 backends has no IPv4 `Vip` in
    /// `Snapshot::vips` (publish an A record only when that VIP exists).
    pub ipv4: Ipv4Addr,
    /// Allocated when the VIP has IPv6 backends.
    pub ipv6: Option<Ipv6Addr>,
    /// Age used to settle slot collisions (older keeps the slot); milliseconds since the epoch.
    pub age_ms: Option<i64>,
}

/// A stable backend identity, carried across snapshots (health overlay key): a hash of the
/// protocol, address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendId(pub u64);

/// A string that lives in a buffer shared by many values: the task and app ids of one snapshot
/// are stored once, back to back, and each backend holds a slice of that buffer. Cloning is a
/// reference-count increment on one (hot) allocation instead of an allocation per id. Compares,
/// hashes, prints and serialises as the string it holds.
#[derive(Clone)]
pub struct SharedStr {
    buf: Arc<str>,
    start: usize,
    end: usize,
}

impl SharedStr {
    /// A slice of `buf`. Not checked here (that would touch the buffer once per value); a range
    /// that is out of bounds or not on character boundaries reads as `""`.
    pub fn new(buf: Arc<str>, range: std::ops::Range<usize>) -> SharedStr {
        SharedStr {
            buf,
            start: range.start,
            end: range.end,
        }
    }

    pub fn as_str(&self) -> &str {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr {
            buf: Arc::from(s),
            start: 0,
            end: s.len(),
        }
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr::from(s.as_str())
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &SharedStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, other: &SharedStr) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, other: &SharedStr) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub id: BackendId,
    pub ip: IpAddr,
    pub port: u16,
    /// 1 = takes new connections; 0 = draining (killing or unhealthy), still listed.
    pub weight: u32,
    /// A slice of the snapshot's shared id buffer (cheap to clone).
    pub task_id: SharedStr,
    pub app_id: Option<SharedStr>,
    pub agent_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub key: VipKey,
    /// DNS name of a named VIP; `None` for an IP VIP.
    pub name: Option<String>,
    pub label: Option<NamedVipKey>,
    /// Sorted by (ip, port); unique by (ip, port).
    pub backends: Vec<Backend>,
}

/// A Marathon service port (`servicePort`, or `HAPROXY_n_PORT`) with its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub app_id: String,
    pub port_index: usize,
    pub service_port: u16,
    pub protocol: Protocol,
    pub backends: Vec<Backend>,
}

/// Why a label was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not `HOST:PORT` (or `tcp://HOST:PORT` for `vip_portN`).
    BadFormat,
    /// Port missing, zero, not a number or above 65535.
    BadPort,
    /// The port's protocol is neither tcp nor udp.
    UnknownProtocol,
    /// `vip_portN` names a port index the task does not have.
    BadPortIndex,
    /// The named-VIP range is full.
    RangeExhausted,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadFormat => "bad_format",
            RejectReason::BadPort => "bad_port",
            RejectReason::UnknownProtocol => "unknown_protocol",
            RejectReason::BadPortIndex => "bad_port_index",
            RejectReason::RangeExhausted => "range_exhausted",
        }
    }
}

/// A label that was skipped, with what a log line needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Rejection {
    pub app_id: Option<String>,
    pub task_id: String,
    /// `KEY=VALUE` as written.
    pub label: String,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub apps: usize,
    pub tasks: usize,
    pub services: usize,
    pub backends: usize,
    pub vips: usize,
}

/// Immutable routing state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// 0 = the empty snapshot before anything was published; each build is the previous + 1.
    pub version: u64,
    #[serde(skip)]
    pub state: Arc<ClusterState>,
    /// Sorted by key. Shared with the next snapshot when unchanged.
    pub vips: Vec<Arc<Vip>>,
    /// Named VIP allocations (every live named VIP). A persistent map (`imbl`, ordered like a
    /// `BTreeMap`): the next snapshot shares it when no allocation changed.
    pub named: imbl::OrdMap<NamedVipKey, NamedVip>,
    /// Sorted by (service_port, protocol, app_id). Shared with the next snapshot when unchanged.
    pub services: Vec<Arc<Service>>,
    /// Labels skipped in this build, sorted.
    pub rejected: Vec<Rejection>,
    pub counts: Counts,
    /// Per-owner build results the next `Snapshot::build` reuses (see `model::build`).
    #[serde(skip)]
    pub(crate) index: Option<Arc<super::build::Index>>,
}

impl Snapshot {
    /// The snapshot before the first build.
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// Looks a VIP up by key (binary search; `vips` is sorted).
    pub fn vip(&self, key: &VipKey) -> Option<&Vip> {
        self.vips
            .binary_search_by(|v| v.key.cmp(key))
            .ok()
            .and_then(|i| self.vips.get(i))
            .map(|v| &**v)
    }

    /// Total number of backends across VIPs and services (the guard's measure).
    pub fn backend_total(&self) -> usize {
        self.counts.backends
    }
}
