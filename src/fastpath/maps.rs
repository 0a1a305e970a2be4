//! The pinned BPF maps, opened from `l4.bpf_pin_dir`, and [`MapOps`] over them (the writes
//! `sync` issues). Every map syscall is short but blocking: callers run them off the async
//! workers.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};

use std::os::fd::AsFd;

use super::MapOps;
use super::batch;
use super::layout::{self, Backend, BackendKey, Meta, Service, ServiceKey, Stats};

/// A failed map operation: which operation on which map, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{op} {map}: {cause}")]
pub struct MapsError {
    pub op: &'static str,
    pub map: &'static str,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl MapsError {
    fn new(
        op: &'static str,
        map: &'static str,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> MapsError {
        MapsError {
            op,
            map,
            cause: cause.into(),
        }
    }
}

/// Whether a map error is the kernel's ENOENT (a delete of a key that is not there).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Typed handles on the pinned maps (each holds its own fd; the pins outlive them).
pub struct Maps {
    services: HashMap<MapData, ServiceKey, Service>,
    backends: HashMap<MapData, BackendKey, Backend>,
    maglev: Array<MapData, u32>,
    stats: PerCpuArray<MapData, Stats>,
    meta: Array<MapData, Meta>,
    /// Possible CPUs (the per-CPU value count).
    cpus: usize,
    /// The same maps again as plain fds, for batch writes (see [`Batched`]).
    raw: Raw,
}

struct Raw {
    services: MapData,
    backends: MapData,
    maglev: MapData,
    stats: MapData,
}

fn open<T>(dir: &Path, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let data = MapData::from_pin(dir.join(name)).map_err(|e| MapsError::new("open", name, e))?;
    let map = Map::from_map_data(data).map_err(|e| MapsError::new("open", name, e))?;
    T::try_from(map).map_err(|e| MapsError::new("open", name, e))
}

fn open_raw(dir: &Path, name: &'static str) -> Result<MapData, MapsError> {
    MapData::from_pin(dir.join(name)).map_err(|e| MapsError::new("open", name, e))
}

impl Maps {
    /// Opens the maps pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Maps, MapsError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, e)| MapsError::new("read", "possible CPUs", format!("{path}: {e}")))?;
        Ok(Maps {
            services: open(dir, layout::MAP_SERVICES)?,
            backends: open(dir, layout::MAP_BACKENDS)?,
            maglev: open(dir, layout::MAP_MAGLEV)?,
            stats: open(dir, layout::MAP_STATS)?,
            meta: open(dir, layout::MAP_META)?,
            cpus,
            raw: Raw {
                services: open_raw(dir, layout::MAP_SERVICES)?,
                backends: open_raw(dir, layout::MAP_BACKENDS)?,
                maglev: open_raw(dir, layout::MAP_MAGLEV)?,
                stats: open_raw(dir, layout::MAP_STATS)?,
            },
        })
    }

    /// A writer that turns runs of writes of one kind into batch syscalls (see [`Batched`]).
    pub fn batched(&mut self) -> Batched<'_> {
        Batched {
            maps: self,
            pending: Pending::default(),
        }
    }

    /// Writes `fm_meta[0]`.
    pub fn set_version(&mut self, version: u32) -> Result<(), MapsError> {
        self.meta
            .set(0, Meta { version, pad: 0 }, 0)
            .map_err(|e| MapsError::new("write", layout::MAP_META, e))
    }

    /// Every entry of `fm_services`.
    pub fn services(&self) -> Result<Vec<(ServiceKey, Service)>, MapsError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| MapsError::new("read", layout::MAP_SERVICES, e))
    }

    /// Every entry of `fm_backends`.
    pub fn backends(&self) -> Result<Vec<(BackendKey, Backend)>, MapsError> {
        self.backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| MapsError::new("read", layout::MAP_BACKENDS, e))
    }

    /// Deletes every service with id `id` and that id's backend slots (both banks).
    pub fn remove_service_id(&mut self, id: u32) -> Result<(), MapsError> {
        for (k, s) in self.services()? {
            if s.id == id {
                self.delete_service(k)?;
            }
        }
        for (k, _) in self.backends()? {
            if k.id == id {
                self.delete_backend(k)?;
            }
        }
        Ok(())
    }

    /// Counters of service id `id`, summed over CPUs.
    pub fn stats(&self, id: u32) -> Result<Stats, MapsError> {
        let per_cpu = self
            .stats
            .get(&id, 0)
            .map_err(|e| MapsError::new("read", layout::MAP_STATS, e))?;
        Ok(sum(per_cpu.iter()))
    }
}

/// Sums per-CPU counters.
pub fn sum<'a>(values: impl Iterator<Item = &'a Stats>) -> Stats {
    values.fold(Stats::default(), |a, v| Stats {
        connect: a.connect.wrapping_add(v.connect),
        sendmsg: a.sendmsg.wrapping_add(v.sendmsg),
        refused: a.refused.wrapping_add(v.refused),
        errors: a.errors.wrapping_add(v.errors),
    })
}

impl MapOps for Maps {
    type Error = MapsError;

    fn set_backend(&mut self, key: BackendKey, value: Backend) -> Result<(), MapsError> {
        self.backends
            .insert(key, value, 0)
            .map_err(|e| MapsError::new("write", layout::MAP_BACKENDS, e))
    }

    fn delete_backend(&mut self, key: BackendKey) -> Result<(), MapsError> {
        match self.backends.remove(&key) {
            Err(e) if !is_not_found(&e) => {
                Err(MapsError::new("delete from", layout::MAP_BACKENDS, e))
            }
            _ => Ok(()),
        }
    }

    fn set_service(&mut self, key: ServiceKey, value: Service) -> Result<(), MapsError> {
        self.services
            .insert(key, value, 0)
            .map_err(|e| MapsError::new("write", layout::MAP_SERVICES, e))
    }

    fn delete_service(&mut self, key: ServiceKey) -> Result<(), MapsError> {
        match self.services.remove(&key) {
            Err(e) if !is_not_found(&e) => {
                Err(MapsError::new("delete from", layout::MAP_SERVICES, e))
            }
            _ => Ok(()),
        }
    }

    fn set_ring(&mut self, ring: u32, slots: &[u32]) -> Result<(), MapsError> {
        let base = ring
            .checked_mul(layout::MAGLEV_M)
            .ok_or_else(|| MapsError::new("write", layout::MAP_MAGLEV, "ring index overflow"))?;
        for (i, slot) in slots.iter().enumerate() {
            self.maglev
                .set(base + i as u32, slot, 0)
                .map_err(|e| MapsError::new("write", layout::MAP_MAGLEV, e))?;
        }
        Ok(())
    }

    fn reset_stats(&mut self, id: u32) -> Result<(), MapsError> {
        let zero = PerCpuValues::try_from(vec![Stats::default(); self.cpus])
            .map_err(|e| MapsError::new("write", layout::MAP_STATS, e))?;
        self.stats
            .set(id, zero, 0)
            .map_err(|e| MapsError::new("write", layout::MAP_STATS, e))
    }
}

/// Which kind of write a [`Pending`] run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SetBackend,
    DeleteBackend,
    SetService,
    DeleteService,
    ResetStats,
}

/// One run of consecutive writes of one kind, not yet issued.
#[derive(Default)]
struct Pending {
    kind: Option<Kind>,
    backend_keys: Vec<BackendKey>,
    backends: Vec<Backend>,
    service_keys: Vec<ServiceKey>,
    services: Vec<Service>,
    ids: Vec<u32>,
}

/// [`MapOps`] over [`Maps`] that buffers each run of consecutive writes of one kind (say, the
/// slots of ten thousand new services, then their service entries) and issues it as one
/// `BPF_MAP_*_BATCH` syscall when a write of another kind comes or at [`MapOps::flush`]. The
/// kernel applies a batch element by element in order, so BPF lookups see exactly the sequence
/// of states the single writes would give; only the syscall count changes (a sync of 10 000
/// new VIPs: a handful instead of ~30 000). A write reported `Ok` may still fail when its run is
/// issued: the error then comes from the next write of another kind or from `flush`, and the
/// caller must re-read the maps (`Syncer::adopt`) rather than trust its own record.
pub struct Batched<'a> {
    maps: &'a mut Maps,
    pending: Pending,
}

impl Batched<'_> {
    /// The maps (to read them; what is still buffered is not in them yet).
    pub fn maps(&self) -> &Maps {
        self.maps
    }

    /// Starts a run of `kind`, issuing the pending run first when it is of another kind.
    fn run_of(&mut self, kind: Kind) -> Result<&mut Pending, MapsError> {
        if self.pending.kind != Some(kind) {
            self.flush()?;
            self.pending.kind = Some(kind);
        }
        Ok(&mut self.pending)
    }
}

impl MapOps for Batched<'_> {
    type Error = MapsError;

    fn set_backend(&mut self, key: BackendKey, value: Backend) -> Result<(), MapsError> {
        let p = self.run_of(Kind::SetBackend)?;
        p.backend_keys.push(key);
        p.backends.push(value);
        Ok(())
    }

    fn delete_backend(&mut self, key: BackendKey) -> Result<(), MapsError> {
        self.run_of(Kind::DeleteBackend)?.backend_keys.push(key);
        Ok(())
    }

    fn set_service(&mut self, key: ServiceKey, value: Service) -> Result<(), MapsError> {
        let p = self.run_of(Kind::SetService)?;
        p.service_keys.push(key);
        p.services.push(value);
        Ok(())
    }

    fn delete_service(&mut self, key: ServiceKey) -> Result<(), MapsError> {
        self.run_of(Kind::DeleteService)?.service_keys.push(key);
        Ok(())
    }

    fn set_ring(&mut self, ring: u32, slots: &[u32]) -> Result<(), MapsError> {
        self.flush()?;
        let base = ring
            .checked_mul(layout::MAGLEV_M)
            .ok_or_else(|| MapsError::new("write", layout::MAP_MAGLEV, "ring index overflow"))?;
        let keys: Vec<u32> = (base..).take(slots.len()).collect();
        batch::update(self.maps.raw.maglev.fd().as_fd(), &keys, slots, 1)
            .map_err(|e| MapsError::new("write", layout::MAP_MAGLEV, e))
    }

    fn reset_stats(&mut self, id: u32) -> Result<(), MapsError> {
        self.run_of(Kind::ResetStats)?.ids.push(id);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MapsError> {
        let Some(kind) = self.pending.kind.take() else {
            return Ok(());
        };
        let p = std::mem::take(&mut self.pending);
        let raw = &self.maps.raw;
        let result = match kind {
            Kind::SetBackend => {
                batch::update(raw.backends.fd().as_fd(), &p.backend_keys, &p.backends, 1)
                    .map_err(|e| MapsError::new("write", layout::MAP_BACKENDS, e))
            }
            Kind::DeleteBackend => batch::delete(raw.backends.fd().as_fd(), &p.backend_keys)
                .map_err(|e| MapsError::new("delete from", layout::MAP_BACKENDS, e)),
            Kind::SetService => {
                batch::update(raw.services.fd().as_fd(), &p.service_keys, &p.services, 1)
                    .map_err(|e| MapsError::new("write", layout::MAP_SERVICES, e))
            }
            Kind::DeleteService => batch::delete(raw.services.fd().as_fd(), &p.service_keys)
                .map_err(|e| MapsError::new("delete from", layout::MAP_SERVICES, e)),
            Kind::ResetStats => {
                let cpus = self.maps.cpus;
                let zeros = vec![Stats::default(); p.ids.len() * cpus];
                batch::update(raw.stats.fd().as_fd(), &p.ids, &zeros, cpus)
                    .map_err(|e| MapsError::new("write", layout::MAP_STATS, e))
            }
        };
        // Keep the buffers' capacity for the next run.
        let mut p = p;
        p.backend_keys.clear();
        p.backends.clear();
        p.service_keys.clear();
        p.services.clear();
        p.ids.clear();
        self.pending = p;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_counters_sum_field_by_field() {
        let cpus = [
            Stats {
                connect: 3,
                sendmsg: 1,
                refused: 0,
                errors: 0,
            },
            Stats {
                connect: 4,
                sendmsg: 0,
                refused: 2,
                errors: 1,
            },
        ];
        assert_eq!(
            sum(cpus.iter()),
            Stats {
                connect: 7,
                sendmsg: 1,
                refused: 2,
                errors: 1
            }
        );
    }

    #[test]
    fn enoent_is_not_found() {
        let e = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(2),
        });
        assert!(is_not_found(&e));
        let e = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(1),
        });
        assert!(!is_not_found(&e));
    }
}
