//! DNS: a Mesos-DNS compatible authoritative server for the cluster's names, DC/OS VIP names,
//! forwarding for everything else, and the Mesos-DNS HTTP API.
//!
//! Data flow: each published `Snapshot` → [`records::Records`] (the Mesos-DNS record set, as
//! `records/generator.go` makes it, plus DC/OS names and PTRs) → [`zone::Zone`] (answers
//! pre-encoded in wire format, looked up by lowercased wire name) → swapped into an `ArcSwap` that
//! the query loops read. A query never waits for the control plane and never sees half a zone.
//!
//! - [`names`]: label sanitising (`labels.go`), task hashes, canonical names.
//! - [`records`]: `Snapshot` → `Records`.
//! - [`zone`]: `Records` → `Zone`; answers one query into a buffer.
//! - [`server`]: UDP and TCP sockets and loops, the zone-update task.
//! - [`forward`]: names outside our zones, sent to `dns.resolvers`.
//! - [`api`]: `/v1/hosts`, `/v1/services`, `/v1/enumerate`, `/v1/axfr` on the admin listener.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

pub mod api;
pub mod forward;
pub mod names;
pub mod records;
pub mod server;
pub mod zone;

pub use records::Records;

/// The record set being served, for readers outside the query path (the HTTP API). `None` until
/// the first snapshot is published.
pub type RecordsHandle = Arc<ArcSwapOption<Records>>;
