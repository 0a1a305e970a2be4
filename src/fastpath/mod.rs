//! The eBPF fast path: socket-level VIP balancing in the kernel (`ebpf/sock_lb.c`, cgroup
//! connect/sendmsg/recvmsg/getpeername hooks), loaded with aya and kept in step with the snapshot.
//!
//! - [`layout`]: `#[repr(C)]` mirrors of `ebpf/sock_lb.h` (with a test against the C layout).
//! - [`sync`]: the desired map contents from a snapshot and health, and the diff that writes only
//!   what changed, in an order where no lookup sees a zero count or an empty slot.
//! - [`loader`]: bpffs, cgroup, load/adopt/pin/attach, the layout-version check, cleanup.
//! - [`selftest`]: `auto` mode's proof that a connect to a test VIP is rewritten.
//! - [`maps`]: [`MapOps`] over the pinned maps.
//! - [`run`]: start (load, attach, self-test) and the sync loop; [`stats`]: its metrics.
//!
//! May import `model`, `config`, `balance`, `health` and the `metrics` leaf; never another data
//! path.

mod batch;
pub mod layout;
pub mod loader;
pub mod maps;
pub mod run;
pub mod selftest;
pub mod stats;
pub mod sync;

/// The compiled `ebpf/sock_lb.o`, when build.rs could build it (`cfg(ferryman_bpf)`).
#[cfg(ferryman_bpf)]
pub static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/sock_lb.o"
)));
#[cfg(not(ferryman_bpf))]
pub static OBJECT: Option<&[u8]> = None;

/// Why the fast path is not in use (when it is not), for the log, `/v1/vips` and metrics.
pub const NOT_BUILT: &str =
    "built without the eBPF fast path (clang or libbpf-dev missing at build time)";

/// Map writes [`sync`] issues, in the order it issues them. Implemented over the pinned BPF maps
/// by [`loader`] and by a model in the sync tests that checks, after every single write, what a
/// concurrent BPF lookup could see.
pub trait MapOps {
    type Error: std::error::Error + Send + Sync + 'static;
    fn set_backend(
        &mut self,
        key: layout::BackendKey,
        value: layout::Backend,
    ) -> Result<(), Self::Error>;
    fn delete_backend(&mut self, key: layout::BackendKey) -> Result<(), Self::Error>;
    fn set_service(
        &mut self,
        key: layout::ServiceKey,
        value: layout::Service,
    ) -> Result<(), Self::Error>;
    fn delete_service(&mut self, key: layout::ServiceKey) -> Result<(), Self::Error>;
    /// Writes ring `ring` (`layout::MAGLEV_M` slot numbers, each below the service's count).
    fn set_ring(&mut self, ring: u32, slots: &[u32]) -> Result<(), Self::Error>;
    /// Zeroes the per-CPU counters of service id `id` (before an id is reused).
    fn reset_stats(&mut self, id: u32) -> Result<(), Self::Error>;
    /// Issues writes an implementation buffered (see `maps::Batched`); called at the end of
    /// every apply. Unbuffered implementations have nothing to do.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Which path serves VIPs for local clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// The BPF programs are attached and synced.
    Ebpf,
    /// The user-space proxy only (mode `userspace`, or `auto` after a failed load or self-test).
    Userspace,
    /// `l4.mode = "off"`.
    Off,
}

/// The fast path's state as the admin API and metrics show it. Published whole (see [`status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub path: Path,
    /// Why the path is not `Ebpf` (load, attach or self-test error; not built; mode).
    pub reason: Option<String>,
    /// VIPs the maps could not take (over `l4.max_services` / `l4.max_backends`): user space
    /// serves them.
    pub refused: std::collections::BTreeSet<layout::ServiceKey>,
}

static STATUS: std::sync::LazyLock<arc_swap::ArcSwap<Status>> = std::sync::LazyLock::new(|| {
    arc_swap::ArcSwap::from_pointee(Status {
        path: Path::Userspace,
        reason: Some("the fast path has not started".into()),
        refused: Default::default(),
    })
});

/// The current [`Status`] (lock-free read).
pub fn status() -> std::sync::Arc<Status> {
    STATUS.load_full()
}

/// Publishes a new [`Status`].
pub fn set_status(status: Status) {
    STATUS.store(std::sync::Arc::new(status));
}
