//! `Snapshot` → `Records`: the names Mesos-DNS (`records/generator.go`) and dcos-dns would serve
//! for the same cluster state, as plain maps. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::config::Config;
use crate::model::Snapshot;

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

impl Records {
    /// The record set for `snapshot` under `config` (`dns.*`, and `discovery.mesos` for the
    /// `masterN` records).
    pub fn build(snapshot: &Snapshot, config: &Config) -> Records {
        let _ = config;
        Records {
            serial: snapshot.version,
            ..Records::default()
        }
    }
}
