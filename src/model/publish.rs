//! Publishing snapshots: one writer ([`Publisher`], owned by the discovery task) and any number of
//! readers ([`Snapshots`]). Readers `load()` the current `Arc<Snapshot>` from an `ArcSwap` (no lock)
//! or wait for the next one on a `watch` channel. The swap and the channel always carry the same
//! snapshot: it is stored in the swap first, then sent.
//!
//! The shrink guard lives here: a full answer that would remove more than half of all backends at
//! once (an empty or half-written Marathon answer) is held back until the next full answer confirms
//! it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::snapshot::{Rejection, Snapshot};
use super::state::ClusterState;
use crate::config::Config;
use crate::metrics::metrics;

/// How an update was obtained; only full answers go through the shrink guard (a status event
/// that kills the last task of a small cluster must apply at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// A complete answer from the source (fetch, poll, file load).
    Full,
    /// The last state with an event applied.
    Patch,
}

/// What `Publisher::update` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published {
        version: u64,
    },
    /// Same state as the published one: nothing to do.
    Unchanged,
    /// Held back by the shrink guard, waiting for confirmation.
    Held,
}

/// The readers' handle: cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    swap: Arc<ArcSwap<Snapshot>>,
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl Snapshots {
    /// The current snapshot (version 0 = nothing published yet).
    pub fn load(&self) -> Arc<Snapshot> {
        self.swap.load_full()
    }

    /// A receiver that sees every newly published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// True once the first snapshot is published.
    pub fn is_ready(&self) -> bool {
        self.swap.load().version > 0
    }
}

/// The single writer.
pub struct Publisher {
    config: Arc<Config>,
    swap: Arc<ArcSwap<Snapshot>>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// The state of the published snapshot, or of the last full answer equal to it: what an
    /// event patch applies to. A held (suspect) answer never becomes the base of a patch.
    last: Arc<ClusterState>,
    /// A full answer held by the guard.
    held: bool,
}

impl Publisher {
    pub fn new(config: Arc<Config>) -> (Publisher, Snapshots) {
        let empty = Arc::new(Snapshot::empty());
        let swap = Arc::new(ArcSwap::new(empty.clone()));
        let (tx, rx) = watch::channel(empty);
        let publisher = Publisher {
            config,
            swap: swap.clone(),
            tx,
            last: Arc::new(ClusterState::default()),
            held: false,
        };
        (publisher, Snapshots { swap, rx })
    }

    /// A readers' handle on what this publisher publishes.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots {
            swap: self.swap.clone(),
            rx: self.tx.subscribe(),
        }
    }

    /// The published snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.swap.load_full()
    }

    /// The state of the published snapshot: what an event patch applies to.
    pub fn published_state(&self) -> Arc<ClusterState> {
        self.swap.load().state.clone()
    }

    /// The state an event patch applies to: the last published (or confirmed-equal) state, never
    /// an answer the shrink guard holds.
    pub fn last_state(&self) -> Arc<ClusterState> {
        self.last.clone()
    }

    /// Builds and publishes a snapshot from `state`, unless it equals the published state or the
    /// shrink guard holds it.
    pub fn update(&mut self, state: Arc<ClusterState>, kind: UpdateKind) -> Outcome {
        let prev = self.swap.load_full();
        // A deep comparison costs a walk over every task: worth it for periodic full answers
        // (most are unchanged), not for patches, which always carry a change.
        if kind == UpdateKind::Full && prev.version > 0 && *prev.state == *state {
            self.held = false;
            self.last = state;
            return Outcome::Unchanged;
        }
        let started = Instant::now();
        let next = Snapshot::build(&state, &self.config, &prev);
        metrics()
            .snapshot_build_duration
            .observe(started.elapsed().as_secs_f64());

        let before = prev.backend_total();
        let after = next.backend_total();
        let shrinks = prev.version > 0 && before > 0 && after * 2 < before;
        if kind == UpdateKind::Full && shrinks && !self.held {
            self.held = true;
            metrics().guard_held.inc();
            tracing::warn!(
                backends_before = before,
                backends_after = after,
                snapshot_version = prev.version,
                "update would remove more than half of all backends; held until the next answer confirms it"
            );
            return Outcome::Held;
        }
        if self.held && shrinks {
            tracing::warn!(
                backends_before = before,
                backends_after = after,
                "shrink confirmed by a second answer; applying"
            );
        }
        self.held = false;
        self.last = state;
        Outcome::Published {
            version: self.publish(next, &prev),
        }
    }

    fn publish(&self, next: Snapshot, prev: &Snapshot) -> u64 {
        log_new_rejections(&prev.rejected, &next.rejected);
        let m = metrics();
        let version = next.version;
        m.snapshot_version.set(version as i64);
        let c = next.counts;
        for (kind, n) in [
            ("apps", c.apps),
            ("tasks", c.tasks),
            ("services", c.services),
            ("backends", c.backends),
            ("vips", c.vips),
        ] {
            m.snapshot_objects.with_label_values(&[kind]).set(n as i64);
        }
        let next = Arc::new(next);
        self.swap.store(next.clone());
        self.tx.send_replace(next);
        tracing::info!(
            snapshot_version = version,
            vips = c.vips,
            backends = c.backends,
            tasks = c.tasks,
            "published snapshot"
        );
        version
    }
}

/// Logs each rejection that the previous snapshot did not already have (so a bad label is reported
/// once, not on every rebuild) and counts it.
fn log_new_rejections(prev: &[Rejection], next: &[Rejection]) {
    let old: BTreeSet<&Rejection> = prev.iter().collect();
    for r in next.iter().filter(|r| !old.contains(r)) {
        metrics()
            .labels_rejected
            .with_label_values(&[r.reason.as_str()])
            .inc();
        tracing::warn!(
            app_id = r.app_id.as_deref().unwrap_or("-"),
            task_id = %r.task_id,
            label = %r.label,
            reason = r.reason.as_str(),
            "label skipped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::{Agent, Framework, PortProtocol, Task, TaskPort, TaskState};

    /// A Mesos-shaped state with `n` running tasks, each one backend of the IP VIP 1.2.3.4:80.
    fn state_with(n: usize) -> Arc<ClusterState> {
        let mut s = ClusterState::default();
        s.frameworks.insert(
            "fw".into(),
            Framework {
                id: "fw".into(),
                name: "marathon".into(),
                ..Framework::default()
            },
        );
        s.agents.insert(
            "a1".into(),
            Agent {
                id: "a1".into(),
                hostname: "10.0.0.1".into(),
                ip: Some("10.0.0.1".parse().expect("ip")),
                port: Some(5051),
            },
        );
        for i in 0..n {
            let id = format!("t{i}");
            s.tasks.insert(
                id.clone(),
                Task {
                    id,
                    name: "web".into(),
                    framework_id: "fw".into(),
                    agent_id: "a1".into(),
                    state: TaskState::Running,
                    host_ports: vec![31000 + i as u16],
                    ports: vec![TaskPort {
                        protocol: Some(PortProtocol::Tcp),
                        host_port: Some(31000 + i as u16),
                        labels: vec![("VIP_0".into(), "1.2.3.4:80".into())],
                        ..TaskPort::default()
                    }],
                    ..Task::default()
                }
                .into(),
            );
        }
        Arc::new(s)
    }

    fn publisher() -> (Publisher, Snapshots) {
        Publisher::new(Arc::new(Config::default()))
    }

    #[test]
    fn first_update_publishes_version_one_to_swap_and_channel() {
        let (mut p, snaps) = publisher();
        assert!(!snaps.is_ready());
        let rx = snaps.subscribe();
        assert_eq!(
            p.update(state_with(4), UpdateKind::Full),
            Outcome::Published { version: 1 }
        );
        assert!(snaps.is_ready());
        assert_eq!(snaps.load().version, 1);
        assert_eq!(rx.borrow().version, 1);
        assert_eq!(snaps.load().backend_total(), 4);
    }

    #[test]
    fn an_equal_state_is_not_republished() {
        let (mut p, snaps) = publisher();
        p.update(state_with(4), UpdateKind::Full);
        assert_eq!(
            p.update(state_with(4), UpdateKind::Full),
            Outcome::Unchanged
        );
        assert_eq!(snaps.load().version, 1);
    }

    #[test]
    fn a_full_answer_removing_more_than_half_is_held_until_confirmed() {
        let (mut p, snaps) = publisher();
        p.update(state_with(10), UpdateKind::Full);
        let held_before = metrics().guard_held.get();
        // An empty answer: held, the published snapshot keeps its 10 backends.
        assert_eq!(p.update(state_with(0), UpdateKind::Full), Outcome::Held);
        assert_eq!(snaps.load().backend_total(), 10);
        assert!(metrics().guard_held.get() > held_before);
        // The next answer confirms it: applied.
        assert_eq!(
            p.update(state_with(0), UpdateKind::Full),
            Outcome::Published { version: 2 }
        );
        assert_eq!(snaps.load().backend_total(), 0);
    }

    #[test]
    fn a_shrink_followed_by_a_normal_answer_never_applies_the_shrink() {
        let (mut p, snaps) = publisher();
        p.update(state_with(10), UpdateKind::Full);
        assert_eq!(p.update(state_with(2), UpdateKind::Full), Outcome::Held);
        assert_eq!(
            p.update(state_with(9), UpdateKind::Full),
            Outcome::Published { version: 2 }
        );
        assert_eq!(snaps.load().backend_total(), 9);
        // The guard is re-armed: a new shrink is held again.
        assert_eq!(p.update(state_with(1), UpdateKind::Full), Outcome::Held);
    }

    #[test]
    fn removing_exactly_half_or_a_patch_is_applied_at_once() {
        let (mut p, snaps) = publisher();
        p.update(state_with(10), UpdateKind::Full);
        assert_eq!(
            p.update(state_with(5), UpdateKind::Full),
            Outcome::Published { version: 2 }
        );
        assert_eq!(
            p.update(state_with(1), UpdateKind::Patch),
            Outcome::Published { version: 3 }
        );
        assert_eq!(snaps.load().backend_total(), 1);
    }

    #[test]
    fn patches_apply_to_the_published_state_not_to_a_held_answer() {
        let (mut p, _snaps) = publisher();
        p.update(state_with(10), UpdateKind::Full);
        assert_eq!(p.update(state_with(0), UpdateKind::Full), Outcome::Held);
        assert_eq!(p.last_state().tasks.len(), 10);
    }
}
