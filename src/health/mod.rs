//! Backend health: an overlay by backend id, never written into the `Snapshot`.
//!
//! Every backend the data paths know has one [`BackendState`] (shared `Arc`, kept across snapshots
//! while the backend exists): its live counters and its health verdict as atomics, so the data
//! path reads them per connection without a lock or a lookup. Verdicts come from
//! - the snapshot (Marathon `healthCheckResults`, Mesos task health, `TASK_KILLING`): the snapshot's
//!   weight 0 means draining; that is the pool's business, not this module's;
//! - passive outlier detection ([`BackendState::report_connect_ok`],
//!   [`BackendState::report_connect_failure`], [`BackendState::report_reset`]):
//!   `l4.outlier_failures` consecutive connect failures or resets eject a backend for
//!   `l4.outlier_base_ejection`, doubled per ejection in a row up to `l4.outlier_max_ejection`;
//!   after that it is probed back (see [`BackendState`]);
//! - active TCP connect checks (opt-in), run by [`checks`].
//!
//! The [`Registry`] maps backend ids to states; the L4 code reconciles it once per snapshot
//! (control plane only) and tells it which backends belong to which VIP ([`Registry::set_membership`])
//! so that the per-backend metrics ([`collector`]) are read at scrape time, never per connection.
//! Per snapshot, in this order: [`Registry::reconcile`], [`Registry::set_membership`], then
//! [`checks::Checker::reconcile`] (which checks only backends the registry holds).
//!
//! May import `model` and `config` (for its policy); must not import a data path.

pub mod checks;
pub mod collector;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::config::L4Config;
use crate::model::BackendId;

// === clock ===

/// The monotonic clock health decisions use: milliseconds since the first use in this process,
/// plus one, so that 0 never is a time ("not ejected" is stored as 0).
pub mod clock {
    use std::sync::LazyLock;
    use std::time::Instant;

    static START: LazyLock<Instant> = LazyLock::new(Instant::now);

    /// Now, in clock milliseconds (≥ 1).
    pub fn now_ms() -> u64 {
        u64::try_from(START.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

// === impl HealthPolicy ===

/// Passive outlier detection settings (from `l4.outlier_*`), held by every [`BackendState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures (connect failures or resets) that eject a backend; 0 = passive
    /// detection off (never ejects).
    pub outlier_failures: u32,
    /// First ejection, in milliseconds.
    pub base_ejection_ms: u64,
    /// Longest ejection, in milliseconds.
    pub max_ejection_ms: u64,
}

impl Default for HealthPolicy {
    /// The config defaults: 5 failures, 10 s, at most 5 min.
    fn default() -> HealthPolicy {
        HealthPolicy {
            outlier_failures: 5,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
        }
    }
}

impl HealthPolicy {
    /// Passive detection off.
    pub const OFF: HealthPolicy = HealthPolicy {
        outlier_failures: 0,
        base_ejection_ms: 0,
        max_ejection_ms: 0,
    };

    pub fn from_config(l4: &L4Config) -> HealthPolicy {
        HealthPolicy {
            outlier_failures: l4.outlier_failures,
            base_ejection_ms: millis(l4.outlier_base_ejection),
            max_ejection_ms: millis(l4.outlier_max_ejection),
        }
    }

    /// Length of the `streak`-th ejection in a row (1-based): base × 2^(streak − 1), capped.
    pub fn ejection_ms(&self, streak: u32) -> u64 {
        let factor = 1u64
            .checked_shl(streak.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.base_ejection_ms
            .saturating_mul(factor)
            .min(self.max_ejection_ms)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// === impl Health ===

/// A backend's health verdict, as `/v1/vips` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    /// The ejection ended; the next connection is the probe that lets it back in or re-ejects it.
    /// Takes connections.
    Probing,
    /// Ejected by passive outlier detection; takes no new connections until the ejection ends.
    Ejected,
    /// Marked down by active checks (`check_fall` failures in a row).
    CheckFailed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Probing => "probing",
            Health::Ejected => "ejected",
            Health::CheckFailed => "check_failed",
        }
    }

    /// Whether a backend in this state takes new connections.
    pub fn is_up(self) -> bool {
        matches!(self, Health::Up | Health::Probing)
    }
}

// === impl BackendState ===

/// Live state of one backend: counters the data path bumps and the health verdict, all atomics.
///
/// Passive outlier detection (when the policy's `outlier_failures` N > 0):
/// - a *failure* is a connect failure or a reset mid-stream; a *success* is an established
///   connection with no reset reported since the previous established one (so a backend that
///   accepts and then resets every connection keeps counting up);
/// - N failures in a row eject the backend until now + base × 2^(k − 1), capped at max, where k
///   counts ejections in a row;
/// - when the ejection ends the backend is *probing*: it takes connections again and the next
///   result decides: an established connection lets it back in and clears k; a failure ejects it
///   again at once for the doubled time.
///
/// Reports while ejected (connections begun before, or panic mode) change nothing but counters.
#[derive(Debug)]
pub struct BackendState {
    pub id: BackendId,
    pub addr: SocketAddr,
    /// Connections (or UDP flows) open now.
    pub active: AtomicU32,
    /// Connections (or UDP flows) ever opened.
    pub total: AtomicU64,
    /// Bytes from clients, sent to this backend (HAProxy's `bin`).
    pub bytes_in: AtomicU64,
    /// Bytes from this backend, sent to clients (HAProxy's `bout`).
    pub bytes_out: AtomicU64,
    /// Failed connects; [`BackendState::report_connect_failure`] counts them here.
    pub connect_failures: AtomicU64,
    /// Ejections by passive outlier detection so far.
    pub ejections: AtomicU64,
    policy: HealthPolicy,
    /// Failures in a row (see the type's doc).
    failures: AtomicU32,
    /// A reset was reported since the last established connection.
    reset_since_ok: AtomicBool,
    /// 0 = not ejected; else the clock time the ejection ends (from then on: probing).
    ejected_until: AtomicU64,
    /// Ejections in a row (cleared by a successful probe).
    streak: AtomicU32,
    /// Marked down by active checks.
    check_down: AtomicBool,
}

impl BackendState {
    /// A state with the default [`HealthPolicy`].
    pub fn new(id: BackendId, addr: SocketAddr) -> BackendState {
        BackendState::with_policy(id, addr, HealthPolicy::default())
    }

    pub fn with_policy(id: BackendId, addr: SocketAddr, policy: HealthPolicy) -> BackendState {
        BackendState {
            id,
            addr,
            active: AtomicU32::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            policy,
            failures: AtomicU32::new(0),
            reset_since_ok: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            check_down: AtomicBool::new(false),
        }
    }

    pub fn policy(&self) -> HealthPolicy {
        self.policy
    }

    /// Whether the backend may take new connections as far as health goes (not ejected, not
    /// failed by active checks). Two atomic loads; the clock is read only while ejected.
    pub fn is_up(&self) -> bool {
        if self.check_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || clock::now_ms() >= until
    }

    /// [`BackendState::is_up`] at clock time `now` (ms, see [`clock`]).
    pub fn is_up_at(&self, now: u64) -> bool {
        self.health_at(now).is_up()
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The verdict now.
    pub fn health(&self) -> Health {
        self.health_at(clock::now_ms())
    }

    /// The verdict at clock time `now`.
    pub fn health_at(&self, now: u64) -> Health {
        if self.check_down.load(Ordering::Relaxed) {
            return Health::CheckFailed;
        }
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => Health::Up,
            until if now >= until => Health::Probing,
            _ => Health::Ejected,
        }
    }

    /// Clock time the current ejection ends (`None` when not ejected nor probing).
    pub fn ejected_until(&self) -> Option<u64> {
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Ejections in a row so far (0 once a probe succeeded).
    pub fn ejection_streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    /// A connection to the backend was established. Reads the clock only while the backend is
    /// ejected or probing.
    pub fn report_connect_ok(&self) {
        self.connect_ok(clock::now_ms)
    }

    /// A connect failed (refused, timed out, unreachable): counted in `connect_failures` and as
    /// a failure for outlier detection.
    pub fn report_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.failure(clock::now_ms)
    }

    /// An established connection was reset by the backend (or failed with an error) mid-stream:
    /// a failure for outlier detection.
    pub fn report_reset(&self) {
        self.reset(clock::now_ms)
    }

    /// [`BackendState::report_connect_ok`] at clock time `now`.
    pub fn report_connect_ok_at(&self, now: u64) {
        self.connect_ok(|| now)
    }

    /// [`BackendState::report_connect_failure`] at clock time `now`.
    pub fn report_connect_failure_at(&self, now: u64) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.failure(|| now)
    }

    /// [`BackendState::report_reset`] at clock time `now`.
    pub fn report_reset_at(&self, now: u64) {
        self.reset(|| now)
    }

    // The reports take the clock as a function so that the common paths (not ejected) never
    // read it.

    fn connect_ok(&self, now: impl FnOnce() -> u64) {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 && now() >= until {
            // The probe got through: let the backend back in.
            if self
                .ejected_until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.streak.store(0, Ordering::Relaxed);
                self.failures.store(0, Ordering::Relaxed);
                self.reset_since_ok.store(false, Ordering::Relaxed);
                tracing::info!(backend = %self.addr, "backend back in after a successful probe");
            }
            return;
        }
        // Loads first: no write to a shared cache line on the common path.
        if self.reset_since_ok.load(Ordering::Relaxed) {
            self.reset_since_ok.store(false, Ordering::Relaxed);
        } else if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn reset(&self, now: impl FnOnce() -> u64) {
        if self.policy.outlier_failures == 0 {
            return;
        }
        if !self.reset_since_ok.load(Ordering::Relaxed) {
            self.reset_since_ok.store(true, Ordering::Relaxed);
        }
        self.failure(now);
    }

    fn failure(&self, now: impl FnOnce() -> u64) {
        let n = self.policy.outlier_failures;
        if n == 0 {
            return;
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 {
            let now = now();
            if now >= until {
                // The probe failed: eject again for the doubled time.
                self.eject(now, until);
            }
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= n {
            self.eject(now(), 0);
        }
    }

    /// Ejects the backend if `ejected_until` still holds `expected` (one racing reporter wins).
    fn eject(&self, now: u64, expected: u64) {
        let streak = self.streak.load(Ordering::Relaxed).saturating_add(1);
        let ms = self.policy.ejection_ms(streak);
        let until = now.saturating_add(ms).max(1);
        if self
            .ejected_until
            .compare_exchange(expected, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.streak.store(streak, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                backend = %self.addr,
                ejection_ms = ms,
                in_a_row = streak,
                "backend ejected by outlier detection"
            );
        }
    }

    /// Whether active checks marked the backend down.
    pub fn check_down(&self) -> bool {
        self.check_down.load(Ordering::Relaxed)
    }

    /// Sets the active checks' verdict; returns whether it changed. Called by [`checks`].
    pub fn set_check_down(&self, down: bool) -> bool {
        self.check_down.swap(down, Ordering::Relaxed) != down
    }
}

// === impl Registry ===

/// Backend id → shared [`BackendState`], reconciled once per snapshot by the L4 code.
///
/// States of backends that vanish from the snapshot leave the registry but live on in the `Arc`s
/// that open connections hold (draining). Control plane only: a mutex, never taken per connection.
/// Cheap to clone (one `Arc`). Every registry is exported by the per-backend metrics collector
/// (see [`collector`]) while it lives; a process normally has one.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
pub(crate) struct RegistryInner {
    policy: HealthPolicy,
    states: Mutex<HashMap<BackendId, Arc<BackendState>>>,
    membership: Mutex<Arc<Vec<Membership>>>,
}

/// Which backends serve one VIP or service port, for metric labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The `vip` label: `tcp://11.0.0.1:80`, `udp://[fd01:c::1]:53`, `tcp://127.0.0.1:10000`.
    pub vip: String,
    pub backends: Vec<BackendId>,
}

/// What [`Registry::reconcile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// An empty registry whose new states get `policy`; exported to the metrics collector.
    pub fn new(policy: HealthPolicy) -> Registry {
        let registry = Registry {
            inner: Arc::new(RegistryInner {
                policy,
                states: Mutex::new(HashMap::new()),
                membership: Mutex::new(Arc::new(Vec::new())),
            }),
        };
        collector::export(&registry.inner);
        registry
    }

    /// A registry that the L4 per-backend collector does not export (the L7 proxy keeps its
    /// own backends' health here and exports them under its own metric names).
    pub fn private(policy: HealthPolicy) -> Registry {
        Registry {
            inner: Arc::new(RegistryInner {
                policy,
                states: Mutex::new(HashMap::new()),
                membership: Mutex::new(Arc::new(Vec::new())),
            }),
        }
    }

    pub fn policy(&self) -> HealthPolicy {
        self.inner.policy
    }

    /// Makes the registry hold exactly `backends`: a known id keeps its `Arc` (and so its health
    /// and counters), a new one gets a fresh state, a vanished one is dropped from the registry
    /// (connections holding its `Arc` keep it alive until they close). An id seen again with a
    /// different address gets a fresh state. Duplicate ids are fine.
    pub fn reconcile(
        &self,
        backends: impl IntoIterator<Item = (BackendId, SocketAddr)>,
    ) -> Reconciled {
        let mut states = lock(&self.inner.states);
        let mut next: HashMap<BackendId, Arc<BackendState>> = HashMap::with_capacity(states.len());
        let mut done = Reconciled::default();
        for (id, addr) in backends {
            if next.contains_key(&id) {
                continue;
            }
            let state = match states.remove(&id) {
                Some(s) if s.addr == addr => {
                    done.kept += 1;
                    s
                }
                old => {
                    done.added += 1;
                    done.removed += usize::from(old.is_some());
                    Arc::new(BackendState::with_policy(id, addr, self.inner.policy))
                }
            };
            next.insert(id, state);
        }
        done.removed += states.len();
        *states = next;
        done
    }

    pub fn get(&self, id: BackendId) -> Option<Arc<BackendState>> {
        lock(&self.inner.states).get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.inner.states).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the metrics collector which backends serve which VIP or service port (replaces the
    /// previous set; call once per snapshot, after [`Registry::reconcile`]). A backend in several
    /// is exported under each, with the same (per-backend) values.
    pub fn set_membership(&self, membership: Vec<(String, Vec<BackendId>)>) {
        let membership = membership
            .into_iter()
            .map(|(vip, backends)| Membership { vip, backends })
            .collect();
        *lock(&self.inner.membership) = Arc::new(membership);
    }

    /// The membership set by [`Registry::set_membership`].
    pub fn membership(&self) -> Arc<Vec<Membership>> {
        lock(&self.inner.membership).clone()
    }

    /// Every state now (for the admin API and the collector); the lock is held only to copy
    /// the `Arc`s.
    pub fn states(&self) -> Vec<Arc<BackendState>> {
        lock(&self.inner.states).values().cloned().collect()
    }

    /// Health and counters of every backend now, for `/v1/vips`.
    pub fn snapshot_view(&self) -> HealthView {
        let now = clock::now_ms();
        let backends = self
            .states()
            .into_iter()
            .map(|s| (s.id, BackendView::read(&s, now)))
            .collect();
        HealthView { backends }
    }
}

// === impl HealthView ===

/// A copy of the registry's health and counters at one moment (admin API).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthView {
    pub backends: HashMap<BackendId, BackendView>,
}

impl HealthView {
    pub fn get(&self, id: BackendId) -> Option<&BackendView> {
        self.backends.get(&id)
    }
}

/// One backend in a [`HealthView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendView {
    pub addr: SocketAddr,
    pub health: Health,
    pub active: u32,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_failures: u64,
    pub ejections: u64,
}

impl BackendView {
    pub fn read(s: &BackendState, now: u64) -> BackendView {
        BackendView {
            addr: s.addr,
            health: s.health_at(now),
            active: s.active(),
            total: s.total.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            ejections: s.ejections.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
