//! The user-space L4 load balancer: TCP and UDP listeners on VIPs (addresses on `l4.link`) and on
//! Marathon service ports (`l4.bind`), reconciled from each snapshot by diff.
//!
//! - [`link`]: the VIP link and its addresses (netlink).
//! - [`listeners`]: which listeners a snapshot asks for, the diff against the running ones, and
//!   each listener's [`listeners::Pool`] (backends + balancer, swapped whole when they change).
//! - [`tcp`]: the TCP proxy (connect with retry, half-close, idle timeout, drain).
//! - [`udp`]: the UDP proxy (per-client flows, idle timeout, bounded flow table).
//!
//! May import `model`, `config`, `balance`, `health` and the `metrics` leaf; never another data
//! path. Owns every task it spawns: listener tasks stop when their listener is removed or at
//! shutdown; connection tasks are tracked and end at shutdown.

pub mod link;
pub mod listeners;
pub mod tcp;
pub mod udp;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Balance, Config, L4Config};
use crate::health::Registry;
use crate::health::checks::Checker;
use crate::metrics::metrics;
use crate::model::Snapshots;

pub use listeners::Listeners;

/// What the L4 data path needs from the config, copied once at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub balance: Balance,
    pub bind: IpAddr,
    /// Marathon-LB group served on service ports (`l7.group`; `*` = every group).
    pub group: String,
    pub connect_timeout: Duration,
    pub connect_retries: u32,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub udp_idle_timeout: Duration,
    pub udp_max_flows: usize,
}

impl Settings {
    pub fn from_config(l4: &L4Config, group: &str) -> Settings {
        Settings {
            balance: l4.balance,
            bind: l4.bind,
            group: group.to_string(),
            connect_timeout: l4.connect_timeout,
            connect_retries: l4.connect_retries,
            idle_timeout: l4.idle_timeout,
            max_connections: l4.max_connections,
            drain_timeout: l4.drain_timeout,
            udp_idle_timeout: l4.udp_idle_timeout,
            udp_max_flows: l4.udp_max_flows,
        }
    }
}

/// Failures that stop the L4 subsystem (none do today: a listener that cannot bind or a link
/// that cannot be managed is logged and retried on the next snapshot).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Link(#[from] link::Error),
}

/// Runs the user-space L4 balancer until `shutdown`: sets up the VIP link (when `l4.link` is
/// set and permitted), then reconciles listeners from every published snapshot.
pub async fn run(
    config: Arc<Config>,
    snapshots: Snapshots,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let settings = Arc::new(Settings::from_config(&config.l4, &config.l7.group));
    let vip_link = match config.l4.link.as_deref() {
        None => None,
        Some(name) => match link::Link::ensure(name).await {
            Ok(l) => Some(l),
            Err(e) if e.is_permission() => {
                tracing::warn!(
                    link = name,
                    "no CAP_NET_ADMIN: VIP addresses cannot be added, so VIP listeners are skipped \
                     (service ports still work); see ferryman_l4_vip_listeners_skipped"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, link = name, "cannot set up the VIP link; VIP listeners are skipped");
                None
            }
        },
    };
    // The addresses on the link: learned once, then kept up to date by diff (no netlink dump
    // per snapshot). Stale ones from an earlier run are removed with the first snapshot.
    let mut on_link = match &vip_link {
        Some(l) => match l.addresses().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the VIP link's addresses");
                BTreeSet::new()
            }
        },
        None => BTreeSet::new(),
    };
    let mut listeners = Listeners::new(settings, registry.clone(), shutdown.child_token());
    // Active checks (opt-in) for the backends the registry holds after each reconcile.
    let mut checker = Checker::new(&shutdown);
    let mut rx = snapshots.subscribe();
    let mut snapshot = snapshots.load();
    loop {
        if snapshot.version > 0 {
            apply(&mut listeners, vip_link.as_ref(), &mut on_link, &snapshot).await;
            checker.reconcile(&snapshot, &config.l4, &registry);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    // The publisher is gone: keep serving the last snapshot until shutdown.
                    shutdown.cancelled().await;
                    break;
                }
                snapshot = rx.borrow_and_update().clone();
            }
        }
    }
    checker.shutdown().await;
    listeners.shutdown().await;
    Ok(())
}

/// One reconcile step: new VIP addresses go on the link first (so that VIP listeners can bind),
/// then listeners are reconciled, then addresses of removed VIPs leave the link. `on_link`: the
/// addresses on the link, kept up to date.
async fn apply(
    listeners: &mut Listeners,
    vip_link: Option<&link::Link>,
    on_link: &mut BTreeSet<IpAddr>,
    snapshot: &crate::model::Snapshot,
) {
    let want = listeners::vip_addresses(snapshot);
    if let Some(l) = vip_link {
        for ip in want.difference(&on_link.clone()) {
            match l.add(*ip).await {
                Ok(()) => {
                    on_link.insert(*ip);
                }
                Err(e) => tracing::warn!(error = %e, vip = %ip, "cannot add a VIP address"),
            }
        }
    }
    let skipped = if vip_link.is_some() {
        0
    } else {
        snapshot.vips.len()
    };
    metrics().l4_vip_listeners_skipped.set(skipped as i64);
    let done = listeners.reconcile(snapshot, vip_link.is_some());
    if let Some(l) = vip_link {
        let stale: Vec<IpAddr> = on_link
            .difference(&want)
            .copied()
            // IPv6 link-local addresses the kernel adds itself stay.
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .collect();
        for ip in stale {
            match l.remove(ip).await {
                Ok(()) => {
                    on_link.remove(&ip);
                    tracing::info!(link = l.name(), vip = %ip, "removed a VIP address");
                }
                Err(e) => tracing::warn!(error = %e, vip = %ip, "cannot remove a VIP address"),
            }
        }
    }
    if done.added + done.removed + done.rebuilt > 0 {
        tracing::info!(
            snapshot_version = snapshot.version,
            added = done.added,
            removed = done.removed,
            pools_rebuilt = done.rebuilt,
            listeners = listeners.len(),
            "l4 listeners reconciled"
        );
    }
}

/// `ferryman cleanup`: removes the VIP link (and its addresses). Returns whether it existed.
pub async fn cleanup(config: &L4Config) -> Result<bool, link::Error> {
    match config.link.as_deref() {
        Some(name) => link::remove_link(name).await,
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests;
