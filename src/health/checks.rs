//! Active TCP connect checks (opt-in), one tokio task per checked backend.
//!
//! Every node would run them against every backend (Marathon-LB warns about that load), so they
//! are off unless `l4.active_checks = true` or the app has the label
//! `FERRYMAN_L4_ACTIVE_CHECKS=true` (`=false` turns them off for that app when the config turns
//! them on). Interval, timeout and fall default to the app's first Marathon health check
//! (`intervalSeconds`, `timeoutSeconds`, `maxConsecutiveFailures`) when it has one (for a
//! service port, the check on that port index first), else to `l4.check_*`; rise is
//! `l4.check_rise`.
//!
//! [`Checker`] holds the set of running checks and reconciles it from each snapshot by diff: a
//! task starts or stops only when its backend enters or leaves the set or its [`CheckSpec`]
//! changes. A check is a connect bounded by its timeout; connects in flight are capped for the
//! whole set. A backend is marked down ([`BackendState::set_check_down`]) after `fall` failures
//! in a row and up again after `rise` successes in a row; checks start with the backend up.
//! Stopping a check (the backend left the set) clears its verdict; a restarted one keeps it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BackendState, Registry};
use crate::config::L4Config;
use crate::model::state::App;
use crate::model::{Backend, BackendId, Protocol, Snapshot};

/// App label that turns active checks on (`true`) or off (`false`) for one app.
pub const ACTIVE_CHECKS_LABEL: &str = "FERRYMAN_L4_ACTIVE_CHECKS";

/// Connects in flight at once across all checks.
pub const MAX_CONCURRENT_CHECKS: usize = 256;

/// Shortest interval and timeout a check runs with (guards against a zero in the input).
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// How one backend is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec {
    pub addr: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that mark a down backend up (≥ 1).
    pub rise: u32,
    /// Failures in a row that mark an up backend down (≥ 1).
    pub fall: u32,
}

impl CheckSpec {
    /// The spec with the config's defaults.
    pub fn from_config(addr: SocketAddr, l4: &L4Config) -> CheckSpec {
        CheckSpec {
            addr,
            interval: l4.check_interval,
            timeout: l4.check_timeout,
            rise: l4.check_rise,
            fall: l4.check_fall,
        }
        .clamped()
    }

    /// The spec for a backend of `app`: the config's defaults, overridden by the app's Marathon
    /// health check (the one for `port_index` first, else the first).
    pub fn for_app(
        addr: SocketAddr,
        l4: &L4Config,
        app: Option<&App>,
        port_index: Option<usize>,
    ) -> CheckSpec {
        let mut spec = CheckSpec::from_config(addr, l4);
        let Some(app) = app else {
            return spec;
        };
        let by_port = port_index.and_then(|i| {
            app.health_checks.iter().find(|h| {
                h.port_index
                    .and_then(|p| usize::try_from(p).ok())
                    .is_some_and(|p| p == i)
            })
        });
        let Some(hc) = by_port.or_else(|| app.health_checks.first()) else {
            return spec;
        };
        if let Some(s) = hc.interval_seconds.filter(|s| *s > 0) {
            spec.interval = Duration::from_secs(u64::from(s));
        }
        if let Some(s) = hc.timeout_seconds.filter(|s| *s > 0) {
            spec.timeout = Duration::from_secs(u64::from(s));
        }
        // Marathon's 0 means "never kill": keep the config's fall then.
        if let Some(n) = hc.max_consecutive_failures.filter(|n| *n > 0) {
            spec.fall = n;
        }
        spec.clamped()
    }

    fn clamped(mut self) -> CheckSpec {
        self.interval = self.interval.max(MIN_PERIOD);
        self.timeout = self.timeout.max(MIN_PERIOD);
        self.rise = self.rise.max(1);
        self.fall = self.fall.max(1);
        self
    }
}

/// Whether `app` is checked: its label decides when set, else the config.
fn checks_enabled(l4: &L4Config, app: Option<&App>) -> bool {
    match app.and_then(|a| a.labels.get(ACTIVE_CHECKS_LABEL)) {
        Some(v) if v.trim().eq_ignore_ascii_case("true") => true,
        Some(v) if v.trim().eq_ignore_ascii_case("false") => false,
        _ => l4.active_checks,
    }
}

/// The checks a snapshot asks for: TCP backends of VIPs and service ports whose app (or the
/// config) enables checks, by backend id (a backend listed under several keeps the first spec:
/// VIPs in key order, then service ports).
pub fn specs_from_snapshot(snapshot: &Snapshot, l4: &L4Config) -> BTreeMap<BackendId, CheckSpec> {
    let apps = &snapshot.state.apps;
    let mut specs = BTreeMap::new();
    let mut add = |b: &Backend, app: Option<&App>, port_index: Option<usize>| {
        if specs.contains_key(&b.id) || !checks_enabled(l4, app) {
            return;
        }
        let addr = SocketAddr::new(b.ip, b.port);
        specs.insert(b.id, CheckSpec::for_app(addr, l4, app, port_index));
    };
    for vip in snapshot
        .vips
        .iter()
        .filter(|v| v.key.protocol == Protocol::Tcp)
    {
        for b in &vip.backends {
            let app = b.app_id.as_ref().and_then(|id| apps.get(id.as_str()));
            add(b, app.map(|a| &**a), None);
        }
    }
    for svc in snapshot
        .services
        .iter()
        .filter(|s| s.protocol == Protocol::Tcp)
    {
        let app = apps.get(svc.app_id.as_str());
        for b in &svc.backends {
            add(b, app.map(|a| &**a), Some(svc.port_index));
        }
    }
    specs
}

/// What [`Checker::reconcile_specs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckDiff {
    pub started: usize,
    pub stopped: usize,
    /// Restarted because the spec or the backend's state changed (not in `started`/`stopped`).
    pub restarted: usize,
}

struct Running {
    spec: CheckSpec,
    state: Arc<BackendState>,
    token: CancellationToken,
    /// Set before `token` is cancelled when the backend leaves the set: the task clears the
    /// verdict as it exits (after its last write). A restarted check keeps the verdict.
    clear_on_exit: Arc<AtomicBool>,
}

impl Running {
    fn stop(self, clear: bool) {
        self.clear_on_exit.store(clear, Ordering::Relaxed);
        self.token.cancel();
    }
}

/// The set of running checks. Dropping it (or cancelling the parent token) stops them all.
pub struct Checker {
    token: CancellationToken,
    tracker: TaskTracker,
    running: HashMap<BackendId, Running>,
    permits: Arc<Semaphore>,
}

impl Checker {
    /// An empty set whose tasks stop when `parent` is cancelled. Needs a tokio runtime.
    pub fn new(parent: &CancellationToken) -> Checker {
        Checker {
            token: parent.child_token(),
            tracker: TaskTracker::new(),
            running: HashMap::new(),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        }
    }

    /// Reconciles the set with what `snapshot` asks for; states come from `registry`, which
    /// the L4 code reconciled first (a backend not in it is not checked).
    pub fn reconcile(
        &mut self,
        snapshot: &Snapshot,
        l4: &L4Config,
        registry: &Registry,
    ) -> CheckDiff {
        let specs = specs_from_snapshot(snapshot, l4);
        let wanted = specs
            .into_iter()
            .filter_map(|(id, spec)| registry.get(id).map(|s| (id, (spec, s))));
        self.reconcile_specs(wanted)
    }

    /// Makes the running set exactly `wanted`: starts new checks, stops vanished ones, restarts
    /// those whose spec or state `Arc` changed, leaves the rest running.
    pub fn reconcile_specs(
        &mut self,
        wanted: impl IntoIterator<Item = (BackendId, (CheckSpec, Arc<BackendState>))>,
    ) -> CheckDiff {
        let mut diff = CheckDiff::default();
        let mut next: HashMap<BackendId, Running> = HashMap::with_capacity(self.running.len());
        for (id, (spec, state)) in wanted {
            if next.contains_key(&id) {
                continue;
            }
            let run = match self.running.remove(&id) {
                Some(r) if r.spec == spec && Arc::ptr_eq(&r.state, &state) => r,
                Some(r) => {
                    r.stop(false);
                    diff.restarted += 1;
                    self.start(spec, state)
                }
                None => {
                    diff.started += 1;
                    self.start(spec, state)
                }
            };
            next.insert(id, run);
        }
        for (_, r) in self.running.drain() {
            r.stop(true);
            diff.stopped += 1;
        }
        self.running = next;
        if diff != CheckDiff::default() {
            tracing::info!(
                started = diff.started,
                stopped = diff.stopped,
                restarted = diff.restarted,
                checked = self.running.len(),
                "active checks reconciled"
            );
        }
        diff
    }

    fn start(&self, spec: CheckSpec, state: Arc<BackendState>) -> Running {
        let token = self.token.child_token();
        let clear_on_exit = Arc::new(AtomicBool::new(false));
        self.tracker.spawn(run_check(
            spec,
            state.clone(),
            self.permits.clone(),
            token.clone(),
            clear_on_exit.clone(),
        ));
        Running {
            spec,
            state,
            token,
            clear_on_exit,
        }
    }

    /// Backends in the set.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Check tasks alive now (stopped ones count until they have exited).
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }

    /// Stops every check and waits until every task has exited.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        self.running.clear();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Rise/fall counting of one check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streaks {
    /// Successes in a row.
    pub oks: u32,
    /// Failures in a row.
    pub fails: u32,
}

impl Streaks {
    /// Records one result for a backend whose verdict is `down`; returns the new verdict when it
    /// flips: down after `fall` failures in a row, up after `rise` successes in a row.
    pub fn record(&mut self, ok: bool, down: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.fails = 0;
            self.oks = self.oks.saturating_add(1);
            (down && self.oks >= rise).then_some(false)
        } else {
            self.oks = 0;
            self.fails = self.fails.saturating_add(1);
            (!down && self.fails >= fall).then_some(true)
        }
    }
}

/// One backend's check loop, until `token` is cancelled. The verdict is read from the state at
/// each result, so a restarted check carries on from where the previous one left it.
async fn run_check(
    spec: CheckSpec,
    state: Arc<BackendState>,
    permits: Arc<Semaphore>,
    token: CancellationToken,
    clear_on_exit: Arc<AtomicBool>,
) {
    // Spread the first checks of a new set over one interval.
    let jitter_ms = rand::random_range(0..=u64::try_from(spec.interval.as_millis()).unwrap_or(0));
    let mut ticker = tokio::time::interval_at(
        Instant::now() + Duration::from_millis(jitter_ms),
        spec.interval,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut streaks = Streaks::default();
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let ok = tokio::select! {
            _ = token.cancelled() => break,
            ok = check_once(spec.addr, spec.timeout, &permits) => ok,
        };
        if let Some(down) = streaks.record(ok, state.check_down(), spec.rise, spec.fall) {
            state.set_check_down(down);
            let verdict = if down { "down" } else { "up" };
            tracing::info!(backend = %spec.addr, verdict, "active check verdict changed");
        }
    }
    if clear_on_exit.load(Ordering::Relaxed) {
        state.set_check_down(false);
    }
}

/// One TCP connect check, bounded by `timeout` (waiting for a permit not included).
async fn check_once(addr: SocketAddr, timeout: Duration, permits: &Semaphore) -> bool {
    let Ok(_permit) = permits.acquire().await else {
        return false;
    };
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => true,
        Ok(Err(e)) => {
            tracing::debug!(backend = %addr, error = %e, "active check failed");
            false
        }
        Err(_) => {
            tracing::debug!(backend = %addr, "active check timed out");
            false
        }
    }
}
