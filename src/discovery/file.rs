//! The file source: `discovery.file` holds a saved Marathon `/v2/apps?embed=apps.tasks` answer or
//! a Mesos `/master/state` answer (told apart by [`decode::detect`]).
//!
//! Loaded at start, reloaded on change. Changes are seen by a `notify` watcher on the parent
//! directory (so an editor's write-to-temp-then-rename is seen too) and, as a backstop and as the
//! fallback when the watcher cannot start, by a check of the file's mtime, length and inode every
//! `poll_interval`. Content that does not decode keeps the last good state, counts an error and is
//! logged once per distinct content.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::FetchError;
use super::report::{Health, fetch_done};
use super::resolve::Resolver;
use super::{Error, Sink, decode};
use crate::config::Config;
use crate::model::{ClusterState, Outcome, UpdateKind};

const SOURCE: &str = "file";
/// Quiet time after a change notification before reading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// After the shrink guard held an answer, the file is read again this soon: the same content a
/// second time confirms the shrink (a file caught half-written will not read the same).
const CONFIRM_DELAY: Duration = Duration::from_millis(250);

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

async fn signature(path: &Path) -> Option<Signature> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Signature {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// Runs the file source until `token` is cancelled.
pub async fn run(
    config: Arc<Config>,
    mut sink: Sink,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> Result<(), Error> {
    let path = config.discovery.file.clone();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let _watcher = match watch(&path, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                source = SOURCE,
                path = %path.display(),
                error = %e,
                poll_interval = ?config.discovery.poll_interval,
                "cannot watch the file; polling for changes instead"
            );
            None
        }
    };
    let mut loader = Loader {
        path,
        health: Health::new(SOURCE, "load"),
        resolver: Resolver::new(),
        tracker: tracker.clone(),
        last_sig: None,
        last_hash: None,
        confirm_pending: false,
    };
    loader.load(&mut sink, true).await;
    sink_first_fallback(&mut sink, &loader);

    let mut tick = tokio::time::interval(config.discovery.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            Some(()) = rx.recv() => {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                while rx.try_recv().is_ok() {}
                loader.load(&mut sink, true).await;
            }
            _ = tick.tick() => {
                loader.load(&mut sink, false).await;
            }
            _ = tokio::time::sleep(CONFIRM_DELAY), if loader.confirm_pending => {
                loader.confirm_pending = false;
                loader.load(&mut sink, true).await;
            }
        }
    }
    Ok(())
}

fn sink_first_fallback(sink: &mut Sink, loader: &Loader) {
    if loader.health.failing() {
        sink.fall_back_to_state_file();
    }
}

/// Watches the file's directory; every event about the file (or an overflow) wakes the loop.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            Ok(ev) if is_read_only(&ev.kind) => false,
            Ok(ev) => {
                ev.paths.is_empty()
                    || ev
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            }
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Opening or reading the file (inotify IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE) changes nothing, and
/// every reload opens it: reacting would re-read it in a loop (about 20 reads a second: 9 % of a
/// core for a 10 MB file). A close after a write is a change.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

struct Loader {
    path: PathBuf,
    health: Health,
    resolver: Resolver,
    tracker: TaskTracker,
    last_sig: Option<Signature>,
    /// Hash of the last content read (good or bad), so the same content is not decoded and
    /// reported again.
    last_hash: Option<u64>,
    /// The shrink guard held the last answer: read again after [`CONFIRM_DELAY`].
    confirm_pending: bool,
}

impl Loader {
    /// Reloads if the file changed. `force` reads it even when the signature is unchanged (a
    /// watcher event); the content hash still skips identical content.
    async fn load(&mut self, sink: &mut Sink, force: bool) {
        let sig = signature(&self.path).await;
        if !force && sig == self.last_sig && self.last_hash.is_some() {
            return;
        }
        if !force && sig.is_none() && self.last_sig.is_none() && self.health.failing() {
            return; // still missing; already reported
        }
        self.last_sig = sig;
        let url = self.path.display().to_string();
        let started = std::time::Instant::now();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                fetch_done(SOURCE, false, started.elapsed());
                self.last_hash = None;
                self.health.failure(&FetchError::Io {
                    url,
                    detail: e.to_string(),
                });
                return;
            }
        };
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        if self.last_hash == Some(hash) {
            return;
        }
        self.last_hash = Some(hash);
        let decoded = self
            .tracker
            .spawn_blocking(move || decode::detect(&bytes))
            .await;
        let result: Result<ClusterState, FetchError> = match decoded {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(source)) => Err(FetchError::Decode { url, source }),
            Err(e) => Err(FetchError::Invalid {
                url,
                detail: format!("decoder failed: {e}"),
            }),
        };
        fetch_done(SOURCE, result.is_ok(), started.elapsed());
        match result {
            Ok(mut state) => {
                self.health.success();
                self.resolver.fill_agents(&mut state).await;
                let outcome = sink.publish(Arc::new(state), UpdateKind::Full);
                // Held: read the same content again soon; a second answer confirms.
                self.confirm_pending = outcome == Outcome::Held;
                if self.confirm_pending {
                    self.last_hash = None;
                }
                tracing::info!(source = SOURCE, path = %self.path.display(), ?outcome, "file loaded");
            }
            Err(e) => self.health.failure(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to `within` for a wake-up from the watcher; drains any others.
    async fn woken(rx: &mut mpsc::Receiver<()>, within: Duration) -> bool {
        let got = matches!(tokio::time::timeout(within, rx.recv()).await, Ok(Some(())));
        while rx.try_recv().is_ok() {}
        got
    }

    /// Reading the file (as every reload does) must not wake the loop, or it reloads forever;
    /// writing it must.
    #[tokio::test]
    async fn watcher_ignores_reads_and_sees_writes() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("apps.json");
        std::fs::write(&path, b"{\"apps\": []}").expect("write apps.json");
        let (tx, mut rx) = mpsc::channel(1);
        let _watcher = watch(&path, tx).expect("an inotify watcher");
        woken(&mut rx, Duration::from_millis(200)).await;
        for _ in 0..3 {
            std::fs::read(&path).expect("read apps.json");
        }
        assert!(
            !woken(&mut rx, Duration::from_millis(500)).await,
            "reading the file woke the loop"
        );
        std::fs::write(&path, b"{\"apps\": [ ]}").expect("rewrite apps.json");
        assert!(
            woken(&mut rx, Duration::from_secs(5)).await,
            "a write did not wake the loop"
        );
    }
}
