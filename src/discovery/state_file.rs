//! The optional state file (`discovery.state_file`): the last good `ClusterState` as JSON,
//! written atomically (temp file in the same directory, fsync, rename, fsync of the directory)
//! after snapshots are published, and loaded at start when the source is unreachable, so a
//! restart during an outage still serves.
//!
//! Writes run on the blocking pool from one writer task that always writes the newest state and
//! at most once per [`MIN_INTERVAL`] (a burst of events does not become a burst of fsyncs); on
//! shutdown it writes what is still pending.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::ClusterState;

/// Minimum time between two writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a saved state: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a saved state.
pub fn load(path: &Path) -> Result<ClusterState, StateFileError> {
    let bytes = std::fs::read(path).map_err(|source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StateFileError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `state` to `path` atomically.
pub fn save(path: &Path, state: &ClusterState) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec(state).map_err(|source| StateFileError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every filesystem allows syncing a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The handle sources use to hand published states to the writer task.
#[derive(Clone)]
pub struct StateWriter {
    tx: watch::Sender<Option<Arc<ClusterState>>>,
}

impl StateWriter {
    /// Starts the writer task on `tracker`; it stops when `token` is cancelled, after writing
    /// the last pending state.
    pub fn spawn(path: PathBuf, tracker: &TaskTracker, token: CancellationToken) -> StateWriter {
        let (tx, rx) = watch::channel(None);
        tracker.spawn(writer(path, rx, token, tracker.clone()));
        StateWriter { tx }
    }

    /// Queues `state` for writing (replacing any state not yet written).
    pub fn offer(&self, state: Arc<ClusterState>) {
        self.tx.send_replace(Some(state));
    }
}

async fn writer(
    path: PathBuf,
    mut rx: watch::Receiver<Option<Arc<ClusterState>>>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
        let state = rx.borrow_and_update().clone();
        if let Some(state) = state {
            write(&path, state, &tracker, &mut failing).await;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
    }
    if rx.has_changed().unwrap_or(false) {
        let state = rx.borrow_and_update().clone();
        if let Some(state) = state {
            write(&path, state, &tracker, &mut failing).await;
        }
    }
}

async fn write(path: &Path, state: Arc<ClusterState>, tracker: &TaskTracker, failing: &mut bool) {
    let p = path.to_path_buf();
    let result = tracker.spawn_blocking(move || save(&p, &state)).await;
    match result {
        Ok(Ok(())) => {
            if std::mem::take(failing) {
                tracing::info!(path = %path.display(), "state file written again");
            }
            tracing::debug!(path = %path.display(), "state file written");
        }
        Ok(Err(e)) => {
            if !std::mem::replace(failing, true) {
                tracing::warn!(error = %e, "cannot write the state file");
            }
        }
        Err(e) => tracing::warn!(error = %e, "state file writer failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Task, TaskState};

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = ClusterState::default();
        s.tasks.insert(
            "t1".into(),
            Task {
                id: "t1".into(),
                state: TaskState::Running,
                ..Default::default()
            }
            .into(),
        );
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["state.json".to_string()]);
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Json { .. })));
    }
}
