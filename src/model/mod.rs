//! The model: `ClusterState` (what sources saw) → `Snapshot::build` (pure) → published `Snapshot`.
//!
//! Imports only `config` (and the `metrics` leaf for the publisher). No sockets, no clock in the
//! build, no data path.

pub mod build;
pub mod haproxy;
pub mod labels;
pub mod publish;
pub mod snapshot;
pub mod state;
pub mod vip;

pub use publish::{Outcome, Publisher, Snapshots, UpdateKind};
pub use snapshot::{
    Backend, BackendId, Counts, NamedVip, NamedVipKey, Protocol, RejectReason, Rejection, Service,
    SharedStr, Snapshot, Vip, VipKey,
};
pub use state::{
    Agent, App, AppPort, ClusterState, DiscoveryInfo, DiscoveryPort, Framework, HealthCheck,
    Master, PortProtocol, StateKind, Task, TaskPort, TaskState,
};
