//! Ferryman: per-node L4/L7 load balancer and Mesos-DNS compatible DNS for Mesos/Marathon.
//!
//! # Layout
//! - [`config`]: TOML → validated runtime config.
//! - [`model`]: `ClusterState` → `Snapshot` (pure), published via `ArcSwap` + `watch`.
//! - [`discovery`]: sources (file, Marathon REST + SSE, Mesos master) that decode into `ClusterState`.
//! - [`dns`]: Mesos-DNS compatible DNS server, forwarding and HTTP API.
//! - [`balance`], [`health`], [`l4`]: the user-space L4 load balancer.
//! - [`admin`]: admin HTTP API (`/v1/vips`, `/metrics`, health).
//! - [`metrics`]: the Prometheus registry and metric names.
//!
//! Arrows point downward only: `model` imports no data path or source.

#![deny(
    unsafe_code,
    rust_2018_idioms,
    clippy::disallowed_methods,
    clippy::disallowed_types
)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod discovery;
pub mod dns;
pub mod fastpath;
pub mod health;
pub mod l4;
pub mod l7;
pub mod metrics;
pub mod model;
