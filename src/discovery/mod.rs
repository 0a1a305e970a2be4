//! Discovery: the sources that feed the model's [`Publisher`] with [`ClusterState`].
//!
//! Owns the configured source's life: [`run`] drives one of `file` (watch + reload), `marathon`
//! (REST + SSE events applied as patches) or `mesos` (`/master/state` polling), the shared HTTP
//! client ([`http`]), agent hostname resolution ([`resolve`]) and the optional state file
//! ([`state_file`]). Every source keeps the last good state when its upstream fails, retries with
//! jittered backoff and reports freshness through the `ferryman_discovery_*` metrics.
//!
//! May import `model` types, `config` and `metrics`; never a data path. Every task it spawns is
//! tracked and stops with the shutdown token; nothing outlives [`run`].

pub mod backoff;
pub mod decode;
pub mod events;
pub mod file;
pub mod http;
pub mod marathon;
pub mod mesos;
pub mod report;
pub mod resolve;
pub mod sse;
pub mod state_file;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SourceKind};
use crate::model::{ClusterState, Outcome, Publisher, UpdateKind};
use state_file::StateWriter;

/// Why discovery stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key}: no URL configured")]
    NoUrls { key: &'static str },
    #[error("{what} stopped unexpectedly")]
    TaskEnded { what: &'static str },
}

/// Runs the configured source until `shutdown` is cancelled, publishing every new state through
/// `publisher`. Returns once every task it spawned has finished.
pub async fn run(
    config: Arc<Config>,
    publisher: Publisher,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let token = shutdown.child_token();
    let tracker = TaskTracker::new();
    let writer = config
        .discovery
        .state_file
        .clone()
        .map(|p| StateWriter::spawn(p, &tracker, token.clone()));
    let sink = Sink {
        publisher,
        writer,
        state_file: config.discovery.state_file.clone(),
        tried_state_file: false,
    };
    tracing::info!(source = ?config.discovery.source, "discovery starting");
    let result = match config.discovery.source {
        SourceKind::File => file::run(config.clone(), sink, &tracker, token.clone()).await,
        SourceKind::Marathon => marathon::run(config.clone(), sink, &tracker, token.clone()).await,
        SourceKind::Mesos => mesos::run(config.clone(), sink, &tracker, token.clone()).await,
    };
    token.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("discovery stopped");
    result
}

// === impl Sink ===

/// Where a source hands its states: the publisher, plus the state file writer.
pub struct Sink {
    publisher: Publisher,
    writer: Option<StateWriter>,
    state_file: Option<PathBuf>,
    tried_state_file: bool,
}

impl Sink {
    /// Publishes `state`; a published state is also queued for the state file.
    ///
    /// Called directly on the source's task, not under `tokio::task::block_in_place`: every
    /// build after the first is incremental (a few milliseconds for an event, about 15 ms for
    /// a full answer with changes, O(1) for an unchanged one; full answers are decoded and
    /// rebased in a blocking task), and handing the worker over costs more than that when the
    /// cores are busy. Measured with `cargo bench --bench sse_latency` on 2 cores, event →
    /// snapshot p99: 72-80 ms with `block_in_place` on every publish, 50-68 ms on full answers
    /// only, 73-78 ms on the first (from-scratch) build only, 5-8 ms without.
    pub fn publish(&mut self, state: Arc<ClusterState>, kind: UpdateKind) -> Outcome {
        let outcome = self.publisher.update(state.clone(), kind);
        if let (Outcome::Published { .. }, Some(w)) = (outcome, &self.writer) {
            w.offer(state);
        }
        outcome
    }

    /// The state an event patch applies to.
    pub fn last_state(&self) -> Arc<ClusterState> {
        self.publisher.last_state()
    }

    /// A readers' handle on the published snapshots (for a source to rebase full answers on
    /// the published state off the loop, see `ClusterState::shared_with`).
    pub fn snapshots(&self) -> crate::model::Snapshots {
        self.publisher.snapshots()
    }

    /// Called when the source's first attempt failed: if nothing is published yet and a state
    /// file is configured, publishes the saved state (once).
    pub fn fall_back_to_state_file(&mut self) {
        if std::mem::replace(&mut self.tried_state_file, true) {
            return;
        }
        let Some(path) = &self.state_file else {
            return;
        };
        if self.publisher.current().version > 0 {
            return;
        }
        match state_file::load(path) {
            Ok(state) => {
                tracing::warn!(
                    path = %path.display(),
                    tasks = state.tasks.len(),
                    "source unreachable at start; serving the saved state"
                );
                self.publisher.update(Arc::new(state), UpdateKind::Full);
            }
            Err(e) => {
                tracing::warn!(error = %e, "source unreachable at start and no usable saved state")
            }
        }
    }
}

// === impl Urls ===

/// A failover list of base URLs that sticks with the one that last worked.
#[derive(Debug)]
pub struct Urls {
    list: Vec<String>,
    preferred: AtomicUsize,
}

impl Urls {
    pub fn new(key: &'static str, list: &[String]) -> Result<Urls, Error> {
        if list.is_empty() {
            return Err(Error::NoUrls { key });
        }
        Ok(Urls {
            list: list
                .iter()
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .collect(),
            preferred: AtomicUsize::new(0),
        })
    }

    /// Every URL with its index, starting at the preferred one.
    pub fn order(&self) -> Vec<(usize, String)> {
        let n = self.list.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|k| (start + k) % n)
            .filter_map(|i| self.list.get(i).map(|u| (i, u.clone())))
            .collect()
    }

    /// Remembers that `index` worked.
    pub fn prefer(&self, index: usize) {
        let old = self.preferred.swap(index, Ordering::Relaxed);
        if old != index
            && let Some(url) = self.list.get(index)
        {
            tracing::info!(url = %url, "discovery switched to another URL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_rotate_from_the_preferred_one() {
        let u = Urls::new(
            "discovery.marathon",
            &["http://a/".into(), "http://b".into(), "http://c".into()],
        )
        .unwrap();
        let names = |u: &Urls| u.order().into_iter().map(|(_, s)| s).collect::<Vec<_>>();
        assert_eq!(names(&u), ["http://a", "http://b", "http://c"]);
        u.prefer(2);
        assert_eq!(names(&u), ["http://c", "http://a", "http://b"]);
        assert!(Urls::new("discovery.mesos", &[]).is_err());
    }
}
