//! `Snapshot::build`: placeholder until the VIP rules land.

use super::snapshot::Snapshot;
use super::state::ClusterState;
use crate::config::Config;
use std::sync::Arc;

impl Snapshot {
    /// Builds the snapshot that follows `prev` from `state`. Pure and deterministic.
    pub fn build(state: &Arc<ClusterState>, _config: &Config, prev: &Snapshot) -> Snapshot {
        Snapshot {
            version: prev.version + 1,
            state: state.clone(),
            ..Snapshot::default()
        }
    }
}
