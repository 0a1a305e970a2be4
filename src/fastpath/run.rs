//! Starting the fast path (load, attach, self-test) and keeping its maps in step with the
//! snapshot and health.
//!
//! [`start`] is blocking (BPF syscalls, the self-test's child process): run it on a blocking
//! thread. [`run`] applies [`Desired`] on every new snapshot and on a 1 s tick (health changes
//! have no event of their own), each apply on a blocking thread so that ten thousand map writes
//! never stall the async workers. A tick whose desired state equals the last applied one writes
//! nothing. Shutdown leaves the programs attached and the maps pinned: forwarding goes on while
//! Ferryman is down or being upgraded, and the next start adopts the maps.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::layout::ServiceKey;
use super::loader::{self, Settings};
use super::maps::Maps;
use super::sync::{Desired, Limits, SyncReport, Syncer};
use super::{OBJECT, Path, Status, selftest, set_status, stats};
use crate::config::{Config, L4Config};
use crate::health::Registry;
use crate::model::Snapshots;

/// How often health is re-read into the maps.
const TICK: Duration = Duration::from_secs(1);

/// A loaded, attached and self-tested fast path, ready for [`run`].
pub struct Started {
    pub settings: Settings,
    maps: Maps,
    syncer: Syncer,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Loads and attaches the programs (adopting a previous run's maps), then proves with the
/// self-test that a connect is rewritten. Blocking. `Err` is the reason, for the log,
/// `/v1/vips` and the info metric; whatever was attached stays attached (see [`fallback`]).
pub fn start(l4: &L4Config) -> Result<Started, String> {
    start_with(l4, selftest::ferryman_child)
}

/// [`start`] with the self-test's client command given (tests use their own binary).
pub fn start_with(
    l4: &L4Config,
    child: impl FnOnce(std::net::SocketAddr) -> std::process::Command,
) -> Result<Started, String> {
    let object = OBJECT.ok_or(super::NOT_BUILT)?;
    let settings = Settings::from_config(l4).map_err(|e| e.to_string())?;
    let loader::Attached {
        mut maps,
        services,
        backends,
        replaced,
        restarted,
        fresh_maps,
    } = loader::load_and_attach(&settings, object).map_err(|e| e.to_string())?;
    selftest::run(&mut maps, settings.selftest_id(), &settings.cgroup, child)?;
    tracing::info!(
        cgroup = %settings.cgroup.display(),
        pin_dir = %settings.pin_dir.display(),
        adopted_services = services.len(),
        adopted_backends = backends.len(),
        restarted,
        replaced = replaced.as_deref().unwrap_or(""),
        "fast path attached and self-tested"
    );
    // Fresh maps hold nothing to adopt and zeroed counters (no reset per new service id).
    let syncer = if fresh_maps && services.is_empty() && backends.is_empty() {
        Syncer::new(limits(&settings))
    } else {
        Syncer::adopt(limits(&settings), services, backends)
    };
    Ok(Started {
        settings,
        maps,
        syncer,
    })
}

fn limits(s: &Settings) -> Limits {
    Limits {
        max_services: s.max_services as usize,
        max_backends: s.max_backends as usize,
        rings: s.rings,
    }
}

/// After a failed [`start`] (or with `l4.mode = "off"`): removes whatever is attached or pinned
/// under `l4.bpf_pin_dir`, so that nothing half-working stays in the kernel. Blocking; logs
/// what it did.
pub fn remove(l4: &L4Config) {
    match loader::cleanup(l4) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => tracing::info!(
            pin_dir = %l4.bpf_pin_dir.display(),
            removed = removed.join(","),
            "fast path: removed pinned programs and maps"
        ),
        Err(e) => tracing::warn!(error = %e, "fast path: cannot remove the pins"),
    }
    stats::clear();
}

/// Publishes the status of a fast path that does not serve VIPs.
pub fn set_not_serving(path: Path, reason: impl Into<String>) {
    set_status(Status {
        path,
        reason: Some(reason.into()),
        refused: Default::default(),
    });
}

/// The apply side: owned by one blocking task at a time.
struct Worker {
    maps: Maps,
    syncer: Syncer,
    /// The desired state of the last successful apply (a tick that would write the same is
    /// skipped).
    last: Option<Desired>,
    limits: Limits,
}

/// What one apply did.
struct Outcome {
    report: Option<Result<SyncReport, String>>,
    elapsed: Duration,
    /// CPU time of the applying thread (`elapsed` also counts waiting for a core).
    cpu: Duration,
    refused: BTreeSet<ServiceKey>,
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Worker {
    /// Rebuilds the syncer from the maps' contents (after a failed apply). When even reading
    /// fails, the syncer is kept: the next apply retries and fails again, visibly.
    fn readopt(&mut self) {
        match (self.maps.services(), self.maps.backends()) {
            (Ok(services), Ok(backends)) => {
                self.syncer = Syncer::adopt(self.limits, services, backends);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "fast path: cannot re-read the maps after a failed sync");
            }
        }
    }

    fn apply(
        &mut self,
        snapshot: &crate::model::Snapshot,
        registry: &Registry,
        config: &Config,
    ) -> Outcome {
        let t = Instant::now();
        let cpu = thread_cpu();
        let desired = Desired::from_snapshot(
            snapshot,
            |id| registry.get(id).is_none_or(|s| s.is_up()),
            config.l4.balance,
        );
        if self.last.as_ref() == Some(&desired) {
            return Outcome {
                report: None,
                elapsed: t.elapsed(),
                cpu: thread_cpu().saturating_sub(cpu),
                refused: self.syncer.refused().clone(),
            };
        }
        let result = self.syncer.apply(&desired, &mut self.maps.batched());
        let elapsed = t.elapsed();
        if result.is_err() {
            // A batched write reported `Ok` may have failed with its batch: start again from
            // what the maps really hold.
            self.readopt();
        }
        self.last = result.is_ok().then_some(desired);
        let (s, b, r) = self.syncer.occupancy();
        stats::publish(
            self.syncer.ids().collect(),
            [s as u64, b as u64, u64::from(r)],
            [
                self.limits.max_services as u64,
                self.limits.max_backends as u64,
                u64::from(self.limits.rings),
            ],
        );
        Outcome {
            report: Some(result.map_err(|e| e.to_string())),
            elapsed,
            cpu: thread_cpu().saturating_sub(cpu),
            refused: self.syncer.refused().clone(),
        }
    }
}

/// Keeps the maps in step with the snapshot and health until `shutdown`, leaving the programs
/// attached when it ends.
pub async fn run(
    started: Started,
    config: Arc<Config>,
    snapshots: Snapshots,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Started {
        settings,
        maps,
        syncer,
    } = started;
    stats::export_stats(&settings.pin_dir);
    set_status(Status {
        path: Path::Ebpf,
        reason: None,
        refused: Default::default(),
    });
    tracing::info!(
        cgroup = %settings.cgroup.display(),
        "VIPs are served by the eBPF fast path for local clients (the user-space proxy serves service ports and clients outside the cgroup)"
    );
    let limits = limits(&settings);
    let mut worker = Some(Worker {
        maps,
        syncer,
        last: None,
        limits,
    });
    let mut rx = snapshots.subscribe();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refused_count = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    // The publisher is gone: the maps keep the last state until shutdown.
                    shutdown.cancelled().await;
                    break;
                }
            }
            _ = tick.tick() => {}
        }
        let snapshot = snapshots.load();
        // Version 0 is the empty snapshot before discovery's first answer: applying it would
        // empty the maps a previous run left (and that still forward).
        if snapshot.version == 0 {
            continue;
        }
        let mut w = worker.take().context("the fast path worker was lost")?;
        let (registry, config) = (registry.clone(), config.clone());
        let version = snapshot.version;
        let (w, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = w.apply(&snapshot, &registry, &config);
            (w, outcome)
        })
        .await
        .context("the fast path sync panicked")?;
        worker = Some(w);
        let Some(report) = outcome.report else {
            continue;
        };
        let m = stats::sync_metrics();
        m.seconds.observe(outcome.elapsed.as_secs_f64());
        match report {
            Ok(r) => {
                if r.added + r.removed + r.changed + r.writes > 0 || r.refused != refused_count {
                    tracing::info!(
                        snapshot_version = version,
                        added = r.added,
                        removed = r.removed,
                        changed = r.changed,
                        unchanged = r.unchanged,
                        writes = r.writes,
                        refused = r.refused,
                        ringless = r.ringless,
                        elapsed_ms = outcome.elapsed.as_secs_f64() * 1e3,
                        cpu_ms = outcome.cpu.as_secs_f64() * 1e3,
                        "fastpath synced"
                    );
                }
                if r.refused != refused_count && r.refused > 0 {
                    tracing::warn!(
                        refused = r.refused,
                        max_services = limits.max_services,
                        max_backends = limits.max_backends,
                        "VIPs refused by the fast path (over l4.max_services or l4.max_backends): served by the user-space path"
                    );
                }
                refused_count = r.refused;
                set_status(Status {
                    path: Path::Ebpf,
                    reason: None,
                    refused: outcome.refused,
                });
            }
            Err(e) => {
                m.errors.inc();
                tracing::warn!(error = %e, snapshot_version = version, "fastpath sync failed; retrying at the next tick");
            }
        }
    }
    tracing::info!("fast path: programs stay attached and maps pinned while ferryman is down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::loader::smoke::Fixture;

    /// A failed self-test is an `Err` naming it, and [`remove`] then leaves nothing attached or
    /// pinned; a good start twice (a restart) keeps one set of programs and adopts the maps.
    #[test]
    fn failed_selftest_is_reported_and_removed_and_restart_adopts() {
        let Some(f) = Fixture::new() else { return };
        let l4 = f.l4();
        let err = start_with(&l4, |_| std::process::Command::new("false")).unwrap_err();
        assert!(err.starts_with("self-test:"), "{err}");
        f.assert_attached(1); // still attached until removed
        remove(&l4);
        assert!(!f.settings.pin_dir.exists());
        f.assert_attached(0);

        let first = start_with(&l4, Fixture::child).unwrap();
        assert_eq!(first.syncer.occupancy().0, 0);
        drop(first);
        let again = start_with(&l4, Fixture::child).unwrap();
        assert_eq!(again.settings, Settings::from_config(&l4).unwrap());
        f.assert_attached(1);
    }
}
