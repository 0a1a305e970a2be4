//! Host state of the fast path: the cgroup v2 mount, bpffs, loading `sock_lb.o` with its maps
//! pinned under `l4.bpf_pin_dir`, attaching the eight cgroup hooks as pinned links, the
//! layout-version check of maps a previous run left, and cleanup.
//!
//! Pins are what keeps forwarding alive while Ferryman is down or being upgraded: maps are pinned
//! by name (`<pin_dir>/fm_*`), links as `<pin_dir>/link_<program>`. Ferryman's normal shutdown
//! leaves them in place. A restart attaches the new programs first (pinned as
//! `link_<program>_next`), then removes the old link pins (their programs detach) and renames the
//! new ones, so there is never a moment without a program nor two copies of one for long.
//! `l4.mode = "off"` and `ferryman cleanup` remove the pins: links first (programs detach), then
//! maps.

use std::fs::File;
use std::mem::size_of;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, MapInfo, MapType};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink};

use super::layout::{self, LAYOUT_VERSION, MAGLEV_M};
use super::maps::Maps;
use crate::config::{Balance, L4Config};

/// `BPF_FS_MAGIC` (statfs f_type of bpffs).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// Where bpffs is mounted by convention (and where we mount it when it is absent).
const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Entries of `fm_rev` (sockets remembered for recvmsg/getpeername; LRU).
pub const REV_ENTRIES: u32 = 262_144;
/// Maglev rings when the default balancer is not Maglev (an app label may still ask for it).
pub const RINGS_DEFAULT: u32 = 32;
/// Upper bound of the per-service Maglev rings sized from `l4.max_services`.
const RINGS_MAX_SERVICES: usize = 256;
/// Prefix of link pins; the program name follows.
const LINK_PREFIX: &str = "link_";
/// Suffix of link pins of the run in progress, renamed once the old ones are gone (bpffs
/// refuses names with a dot).
const NEW_SUFFIX: &str = "_next";

/// A loader failure: what was being done, and the underlying error with its whole chain of
/// sources (aya's errors name the map or program, their sources the errno). Its text is the
/// `reason` Ferryman reports (log, `/v1/vips`, metrics) when it falls back to user space.
#[derive(Debug)]
pub struct Error {
    context: String,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)?;
        let mut shown = self.cause.to_string();
        let mut next = self.cause.source();
        while let Some(e) = next {
            let text = e.to_string();
            // Some errors repeat their source's text in their own.
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(
        context: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error {
            context: context.into(),
            cause: cause.into(),
        }
    }
}

/// Where and how big: everything the loader needs, resolved from [`L4Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cgroup v2 directory the hooks attach to.
    pub cgroup: PathBuf,
    pub pin_dir: PathBuf,
    pub max_services: u32,
    pub max_backends: u32,
    /// Maglev rings in `fm_maglev` (each [`MAGLEV_M`] entries).
    pub rings: u32,
}

impl Settings {
    /// Resolves `l4.cgroup` (unset = the cgroup v2 mount from `/proc/self/mountinfo`) and sizes
    /// the maps from `l4.max_services`, `l4.max_backends` and `l4.balance`.
    pub fn from_config(l4: &L4Config) -> Result<Settings, Error> {
        let cgroup = match &l4.cgroup {
            Some(c) => c.clone(),
            None => {
                let info = std::fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| Error::new("l4.cgroup: cannot read /proc/self/mountinfo", e))?;
                cgroup2_mount(&info).ok_or_else(|| {
                    Error::new(
                        "l4.cgroup",
                        "no cgroup v2 mount in /proc/self/mountinfo (set l4.cgroup)",
                    )
                })?
            }
        };
        let to_u32 = |key: &str, v: usize| {
            u32::try_from(v).map_err(|_| Error::new(key.to_string(), "too large"))
        };
        Ok(Settings {
            cgroup,
            pin_dir: l4.bpf_pin_dir.clone(),
            // One more stats slot than services: id == max_services is the self-test's.
            max_services: to_u32("l4.max_services", l4.max_services)?.clamp(1, u32::MAX - 1),
            max_backends: to_u32("l4.max_backends", l4.max_backends)?.max(1),
            rings: rings_for(l4.max_services, l4.balance),
        })
    }

    /// The service id the self-test uses (the sync never does).
    pub fn selftest_id(&self) -> u32 {
        self.max_services
    }

    /// What each map must look like: name, type, key size, value size, max entries.
    fn expected_maps(&self) -> [(&'static str, MapType, u32, u32, u32); 6] {
        fn sz<T>() -> u32 {
            size_of::<T>() as u32
        }
        [
            (
                layout::MAP_SERVICES,
                MapType::Hash,
                sz::<layout::ServiceKey>(),
                sz::<layout::Service>(),
                self.max_services,
            ),
            (
                layout::MAP_BACKENDS,
                MapType::Hash,
                sz::<layout::BackendKey>(),
                sz::<layout::Backend>(),
                self.max_backends,
            ),
            (
                layout::MAP_MAGLEV,
                MapType::Array,
                sz::<u32>(),
                sz::<u32>(),
                self.maglev_entries(),
            ),
            (
                layout::MAP_REV,
                MapType::LruHash,
                sz::<layout::RevKey>(),
                sz::<layout::Rev>(),
                REV_ENTRIES,
            ),
            (
                layout::MAP_STATS,
                MapType::PerCpuArray,
                sz::<u32>(),
                sz::<layout::Stats>(),
                self.max_services + 1,
            ),
            (
                layout::MAP_META,
                MapType::Array,
                sz::<u32>(),
                sz::<layout::Meta>(),
                1,
            ),
        ]
    }

    fn maglev_entries(&self) -> u32 {
        MAGLEV_M.saturating_mul(self.rings)
    }
}

/// Maglev rings: two per service (tables swap banks) for up to 256 services when Maglev is the
/// default balancer, else [`RINGS_DEFAULT`] for apps that ask for it by label.
pub fn rings_for(max_services: usize, balance: Balance) -> u32 {
    if balance == Balance::Maglev {
        2 * max_services.clamp(1, RINGS_MAX_SERVICES) as u32
    } else {
        RINGS_DEFAULT
    }
}

/// The mount point of the first cgroup2 filesystem in a `/proc/self/mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent major:minor root mount-point options [optional...] - fstype source super"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| u64::try_from(s.f_type).ok() == Some(BPF_FS_MAGIC))
}

/// Makes sure `pin_dir` is on bpffs: when it is under `/sys/fs/bpf` and bpffs is not mounted
/// there, mounts it (as systemd would); a pin dir elsewhere must already be on bpffs.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) {
        if !is_bpffs(root) {
            rustix::mount::mount("bpf", root, "bpf", rustix::mount::MountFlags::empty(), None)
                .map_err(|e| Error::new(format!("cannot mount bpffs at {BPFFS_ROOT}"), e))?;
            tracing::info!("mounted bpffs at {BPFFS_ROOT}");
        }
        return Ok(());
    }
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        Ok(())
    } else {
        Err(Error::new(
            format!("l4.bpf_pin_dir {}", pin_dir.display()),
            "not on a bpf filesystem (mount -t bpf bpf <dir>)",
        ))
    }
}

/// What a previous run left in the pin dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinned {
    /// No `fm_meta` pin: nothing to adopt (stray pins are replaced).
    Absent,
    /// Same layout version and map shapes: the maps are reused and their contents adopted.
    Compatible,
    /// Must be replaced; the reason says why.
    Incompatible(String),
}

/// The shape of a pinned map as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub map_type: Option<MapType>,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The decision on pinned state: `version` is `fm_meta[0].version` (`Err` = unreadable),
/// `found` each map's shape (`None` = not pinned), against what `settings` would create.
pub fn judge(
    settings: &Settings,
    version: Option<Result<u32, String>>,
    found: &dyn Fn(&str) -> Option<Result<Shape, String>>,
) -> Pinned {
    let version = match version {
        None => return Pinned::Absent,
        Some(Err(e)) => return Pinned::Incompatible(format!("unreadable fm_meta ({e})")),
        Some(Ok(v)) => v,
    };
    if version != LAYOUT_VERSION {
        return Pinned::Incompatible(format!(
            "layout version {version} (this build uses {LAYOUT_VERSION})"
        ));
    }
    for (name, map_type, key_size, value_size, max_entries) in settings.expected_maps() {
        let want = Shape {
            map_type: Some(map_type),
            key_size,
            value_size,
            max_entries,
        };
        match found(name) {
            None => return Pinned::Incompatible(format!("{name} is not pinned")),
            Some(Err(e)) => return Pinned::Incompatible(format!("{name} unreadable ({e})")),
            Some(Ok(got)) if got != want => {
                return Pinned::Incompatible(format!(
                    "{name} has {:?} key {} value {} max_entries {}, this config needs {:?} key {} \
                     value {} max_entries {}",
                    got.map_type,
                    got.key_size,
                    got.value_size,
                    got.max_entries,
                    want.map_type,
                    want.key_size,
                    want.value_size,
                    want.max_entries
                ));
            }
            Some(Ok(_)) => {}
        }
    }
    Pinned::Compatible
}

/// Inspects the pin dir (see [`judge`]).
pub fn inspect(settings: &Settings) -> Pinned {
    let dir = &settings.pin_dir;
    let meta_path = dir.join(layout::MAP_META);
    let version = meta_path.exists().then(|| read_version(&meta_path));
    let found = |name: &str| -> Option<Result<Shape, String>> {
        let p = dir.join(name);
        p.exists().then(|| {
            MapInfo::from_pin(&p)
                .map(|i| Shape {
                    map_type: i.map_type().ok(),
                    key_size: i.key_size(),
                    value_size: i.value_size(),
                    max_entries: i.max_entries(),
                })
                .map_err(|e| e.to_string())
        })
    };
    judge(settings, version, &found)
}

fn read_version(meta_path: &Path) -> Result<u32, String> {
    let data = MapData::from_pin(meta_path).map_err(|e| e.to_string())?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    let meta: Array<MapData, layout::Meta> = map.try_into().map_err(|e| format!("{e}"))?;
    meta.get(&0, 0)
        .map(|m| m.version)
        .map_err(|e| e.to_string())
}

/// Removes every pin in `dir` (links first, so programs detach before their maps go) but not
/// the dir. Returns the names removed. A missing dir is not an error.
pub fn remove_pins(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::new(format!("cannot list {}", dir.display()), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Links before maps; otherwise by name, for a stable report.
    names.sort_by_key(|n| (!n.starts_with(LINK_PREFIX), n.clone()));
    let mut removed = Vec::new();
    for name in names {
        let p = dir.join(&name);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::new(format!("cannot remove {}", p.display()), e)),
        }
    }
    Ok(removed)
}

/// `l4.mode = "off"` and `ferryman cleanup`: removes the pins (programs detach, maps go) and
/// the pin dir. Idempotent; returns what it removed. bpffs is never mounted just for this.
pub fn cleanup(l4: &L4Config) -> Result<Vec<String>, Error> {
    let dir = &l4.bpf_pin_dir;
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let removed = remove_pins(dir)?;
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // /sys/fs/bpf itself (a pin dir that is the bpffs root) cannot be removed: fine.
        Err(e) if dir == Path::new(BPFFS_ROOT) => {
            tracing::debug!(error = %e, "kept {BPFFS_ROOT}")
        }
        Err(e) => return Err(Error::new(format!("cannot remove {}", dir.display()), e)),
    }
    Ok(removed)
}

/// The result of [`load_and_attach`].
pub struct Attached {
    pub maps: Maps,
    /// Map contents found (empty on a fresh start), for `Syncer::adopt`.
    pub services: Vec<(layout::ServiceKey, layout::Service)>,
    pub backends: Vec<(layout::BackendKey, layout::Backend)>,
    /// Why pinned state of a previous run was replaced, if it was.
    pub replaced: Option<String>,
    /// Whether links of a previous run were found and replaced by this run's.
    pub restarted: bool,
    /// Whether this load created the maps (nothing pinned was reused): they are empty and their
    /// counters zero.
    pub fresh_maps: bool,
}

/// Loads `object`, reusing compatible pinned maps (and replacing incompatible ones), attaches
/// the eight programs to the cgroup as pinned links, then detaches a previous run's links.
/// On error, this run's new links are removed again and a previous run's stay as they were.
pub fn load_and_attach(settings: &Settings, object: &[u8]) -> Result<Attached, Error> {
    ensure_bpffs(&settings.pin_dir)?;
    std::fs::create_dir_all(&settings.pin_dir).map_err(|e| {
        Error::new(
            format!(
                "l4.bpf_pin_dir: cannot create {}",
                settings.pin_dir.display()
            ),
            e,
        )
    })?;
    let dir = &settings.pin_dir;
    // Links pinned by a run that died between attaching and renaming: attached copies with no
    // owner. The previous run's `link_<program>` pins stay attached meanwhile.
    for prog in layout::PROGRAMS {
        remove_if_exists(&new_link_pin(dir, prog))?;
    }
    let pinned = inspect(settings);
    // Maps created by this load start zeroed (fm_stats included).
    let fresh_maps = !matches!(pinned, Pinned::Compatible);
    let replaced = match pinned {
        Pinned::Compatible | Pinned::Absent => None,
        Pinned::Incompatible(why) => {
            tracing::warn!(
                pin_dir = %dir.display(),
                reason = %why,
                "replacing pinned BPF state of {why}; programs detach until the new ones attach"
            );
            remove_pins(dir)?;
            Some(why)
        }
    };

    let cgroup = File::open(&settings.cgroup).map_err(|e| {
        Error::new(
            format!("l4.cgroup: cannot open {}", settings.cgroup.display()),
            e,
        )
    })?;
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(dir)
        .map_max_entries(layout::MAP_SERVICES, settings.max_services)
        .map_max_entries(layout::MAP_BACKENDS, settings.max_backends)
        .map_max_entries(layout::MAP_STATS, settings.max_services + 1)
        .map_max_entries(layout::MAP_MAGLEV, settings.maglev_entries())
        .map_max_entries(layout::MAP_REV, REV_ENTRIES)
        .load(object)
        .map_err(|e| Error::new("cannot load the BPF object", e))?;

    let mut maps = Maps::open(dir).map_err(|e| Error::new("cannot open the pinned maps", e))?;
    maps.set_version(LAYOUT_VERSION)
        .map_err(|e| Error::new("cannot write fm_meta", e))?;

    let mut pinned_new = Vec::new();
    let attach = (|| {
        for prog in layout::PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(prog)
                .ok_or_else(|| Error::new(format!("program {prog}"), "not in the object"))?
                .try_into()
                .map_err(|e| Error::new(format!("program {prog}"), e))?;
            program
                .load()
                .map_err(|e| Error::new(format!("cannot load program {prog}"), e))?;
            // With bpf_link (kernel >= 5.7, which aya uses there) a cgroup attachment is always
            // "multi" and the kernel rejects BPF_F_ALLOW_MULTI in link_create's flags (EINVAL):
            // the flag-less mode is the one that coexists with other programs on the cgroup.
            let id = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| {
                    Error::new(
                        format!(
                            "cannot attach {prog} to cgroup {}",
                            settings.cgroup.display()
                        ),
                        e,
                    )
                })?;
            let link = program
                .take_link(id)
                .map_err(|e| Error::new(format!("program {prog}: take_link"), e))?;
            let link = FdLink::try_from(link).map_err(|e| {
                Error::new(
                    format!("program {prog}: not a bpf_link (kernel older than 5.7?)"),
                    e,
                )
            })?;
            let pin = new_link_pin(dir, prog);
            link.pin(&pin)
                .map_err(|e| Error::new(format!("cannot pin {}", pin.display()), e))?;
            pinned_new.push(pin);
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = attach {
        for pin in &pinned_new {
            let _ = std::fs::remove_file(pin);
        }
        return Err(e);
    }
    // The new programs run; now the old ones go (there may be a moment with both attached,
    // which is harmless: each rewrites only VIPs, and a rewritten address is no VIP).
    let mut restarted = false;
    for prog in layout::PROGRAMS {
        let old = link_pin(dir, prog);
        restarted |= remove_if_exists(&old)?;
        std::fs::rename(new_link_pin(dir, prog), &old)
            .map_err(|e| Error::new(format!("cannot rename the link pin of {prog}"), e))?;
    }
    drop(ebpf);

    // A self-test entry left by a run that died mid-test.
    maps.remove_service_id(settings.selftest_id())
        .map_err(|e| Error::new("cannot clear the self-test entries", e))?;
    let services = maps
        .services()
        .map_err(|e| Error::new("cannot read fm_services", e))?;
    let backends = maps
        .backends()
        .map_err(|e| Error::new("cannot read fm_backends", e))?;
    Ok(Attached {
        maps,
        services,
        backends,
        replaced,
        restarted,
        fresh_maps,
    })
}

/// `<pin_dir>/link_<program>`.
pub fn link_pin(dir: &Path, prog: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{prog}"))
}

fn new_link_pin(dir: &Path, prog: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{prog}{NEW_SUFFIX}"))
}

/// Removes a file; `Ok(false)` when it was not there.
fn remove_if_exists(p: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::new(format!("cannot remove {}", p.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            cgroup: "/sys/fs/cgroup".into(),
            pin_dir: "/sys/fs/bpf/x".into(),
            max_services: 100,
            max_backends: 1000,
            rings: 32,
        }
    }

    #[test]
    fn finds_the_cgroup2_mount_in_hybrid_and_unified_layouts() {
        let hybrid = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "28 22 0:25 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A v1-only host, and an escaped mount point.
        assert_eq!(
            cgroup2_mount("31 29 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(
            cgroup2_mount("1 2 0:1 / /mnt/my\\040cg rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn error_text_carries_the_whole_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to create map `fm_backends`")]
        struct Outer(#[source] std::io::Error);
        let e = Error::new(
            "cannot load the BPF object",
            Outer(std::io::Error::from_raw_os_error(1)),
        );
        let text = e.to_string();
        assert!(
            text.starts_with("cannot load the BPF object: failed to create map `fm_backends`: "),
            "{text}"
        );
        assert!(text.contains("Operation not permitted"), "{text}");
    }

    #[test]
    fn maglev_rings_follow_the_default_balancer() {
        assert_eq!(rings_for(65536, Balance::Maglev), 512);
        assert_eq!(rings_for(10, Balance::Maglev), 20);
        assert_eq!(rings_for(65536, Balance::Rr), RINGS_DEFAULT);
    }

    fn shapes(s: &Settings) -> impl Fn(&str) -> Option<Result<Shape, String>> + use<> {
        let expected = s.expected_maps();
        move |name: &str| {
            expected
                .iter()
                .find(|e| e.0 == name)
                .map(|&(_, t, k, v, m)| {
                    Ok(Shape {
                        map_type: Some(t),
                        key_size: k,
                        value_size: v,
                        max_entries: m,
                    })
                })
        }
    }

    #[test]
    fn pinned_state_is_adopted_only_with_the_same_version_and_shapes() {
        let s = settings();
        let same = shapes(&s);
        assert_eq!(judge(&s, None, &same), Pinned::Absent);
        assert_eq!(
            judge(&s, Some(Ok(LAYOUT_VERSION)), &same),
            Pinned::Compatible
        );

        let old = judge(&s, Some(Ok(LAYOUT_VERSION + 7)), &same);
        assert!(
            matches!(&old, Pinned::Incompatible(r) if r.starts_with(&format!("layout version {}", LAYOUT_VERSION + 7))),
            "{old:?}"
        );
        assert!(matches!(
            judge(&s, Some(Err("EPERM".into())), &same),
            Pinned::Incompatible(_)
        ));

        // Same version, but l4.max_services changed since: the maps must be recreated.
        let mut bigger = s.clone();
        bigger.max_services = 200;
        let r = judge(&bigger, Some(Ok(LAYOUT_VERSION)), &same);
        assert!(
            matches!(&r, Pinned::Incompatible(r) if r.starts_with("fm_services")),
            "{r:?}"
        );
        // A map missing from the pins.
        let missing = |name: &str| {
            if name == layout::MAP_REV {
                None
            } else {
                same(name)
            }
        };
        assert!(matches!(
            judge(&s, Some(Ok(LAYOUT_VERSION)), &missing),
            Pinned::Incompatible(r) if r.contains("fm_rev")
        ));
        // A value size from an older struct.
        let resized = |name: &str| {
            same(name).map(|r| {
                r.map(|mut sh| {
                    if name == layout::MAP_BACKENDS {
                        sh.value_size = 24;
                    }
                    sh
                })
            })
        };
        assert!(matches!(
            judge(&s, Some(Ok(LAYOUT_VERSION)), &resized),
            Pinned::Incompatible(r) if r.starts_with("fm_backends")
        ));
    }

    #[test]
    fn remove_pins_takes_links_before_maps_and_tolerates_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "fm_services",
            "link_fm_connect4",
            "fm_meta",
            "link_fm_connect6_next",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let removed = remove_pins(dir.path()).unwrap();
        assert_eq!(
            removed,
            [
                "link_fm_connect4",
                "link_fm_connect6_next",
                "fm_meta",
                "fm_services"
            ]
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        assert!(remove_pins(&dir.path().join("absent")).unwrap().is_empty());
    }
}

/// Root/BPF smoke tests: each uses its own child cgroup of the v2 mount and its own pin dir
/// (`/sys/fs/bpf/ferryman-unit-<pid>-<n>`), both removed on drop. They skip (with a message)
/// unless root and built with the BPF object; under `FERRYMAN_REQUIRE_ALL=1` they fail instead.
#[cfg(test)]
pub(crate) mod smoke {
    use super::*;
    use crate::fastpath::{MapOps, OBJECT, selftest};
    use std::os::unix::fs::MetadataExt as _;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);
    const CHILD_ENV: &str = "FERRYMAN_SELFTEST_CHILD";

    fn require_all() -> bool {
        std::env::var("FERRYMAN_REQUIRE_ALL").as_deref() == Ok("1")
    }

    /// A private cgroup and pin dir.
    pub(crate) struct Fixture {
        pub settings: Settings,
    }

    impl Fixture {
        /// `None` (test skipped) without root or without the BPF object.
        pub(crate) fn new() -> Option<Fixture> {
            if OBJECT.is_none() {
                assert!(
                    !require_all(),
                    "FERRYMAN_REQUIRE_ALL=1: no BPF object built"
                );
                eprintln!("skipped: built without the BPF object");
                return None;
            }
            if std::fs::metadata("/proc/self")
                .map(|m| m.uid())
                .unwrap_or(1)
                != 0
            {
                assert!(
                    !require_all(),
                    "FERRYMAN_REQUIRE_ALL=1: BPF tests need root"
                );
                eprintln!("skipped: not root");
                return None;
            }
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mount = cgroup2_mount(&info).expect("a cgroup v2 mount");
            let tag = format!(
                "ferryman-unit-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let cgroup = mount.join(&tag);
            std::fs::create_dir(&cgroup).unwrap();
            Some(Fixture {
                settings: Settings {
                    cgroup,
                    pin_dir: Path::new(BPFFS_ROOT).join(&tag),
                    max_services: 64,
                    max_backends: 256,
                    rings: 2,
                },
            })
        }

        pub(crate) fn load(&self) -> Attached {
            load_and_attach(&self.settings, OBJECT.unwrap()).unwrap()
        }

        /// Programs attached to the fixture's cgroup, by name (`bpftool cgroup show`), or
        /// `None` without bpftool.
        pub(crate) fn attached(&self) -> Option<std::collections::BTreeMap<String, usize>> {
            let out = match Command::new("bpftool")
                .args(["-j", "cgroup", "show"])
                .arg(&self.settings.cgroup)
                .output()
            {
                Ok(o) => o,
                Err(e) => {
                    assert!(!require_all(), "FERRYMAN_REQUIRE_ALL=1: bpftool: {e}");
                    eprintln!("bpftool missing: attachment counts not checked");
                    return None;
                }
            };
            assert!(out.status.success(), "bpftool: {:?}", out);
            let mut m = std::collections::BTreeMap::new();
            if out.stdout.trim_ascii().is_empty() {
                return Some(m); // bpftool prints nothing for a cgroup without programs
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            for p in v.as_array().unwrap() {
                *m.entry(p["name"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            Some(m)
        }

        /// Asserts each program is attached exactly `n` times.
        pub(crate) fn assert_attached(&self, n: usize) {
            if let Some(m) = self.attached() {
                for prog in layout::PROGRAMS {
                    assert_eq!(m.get(prog).copied().unwrap_or(0), n, "{prog} in {m:?}");
                }
                assert_eq!(
                    m.values().sum::<usize>(),
                    n * layout::PROGRAMS.len(),
                    "{m:?}"
                );
            }
        }

        fn pins(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.settings.pin_dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }

        pub(crate) fn l4(&self) -> L4Config {
            let mut l4 = crate::config::Config::default().l4;
            l4.bpf_pin_dir = self.settings.pin_dir.clone();
            l4.cgroup = Some(self.settings.cgroup.clone());
            l4
        }

        /// The self-test child: this test binary running [`selftest_child`].
        pub(crate) fn child(vip: std::net::SocketAddr) -> Command {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args([
                "--exact",
                "fastpath::loader::smoke::selftest_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, vip.to_string());
            c
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = remove_pins(&self.settings.pin_dir);
            let _ = std::fs::remove_dir(&self.settings.pin_dir);
            for _ in 0..100 {
                match std::fs::remove_dir(&self.settings.cgroup) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => selftest::pause(),
                    _ => break,
                }
            }
        }
    }

    /// Not a test: the self-test's child process (run by [`Fixture::child`]).
    #[test]
    #[ignore = "the self-test's child process, started by the smoke tests"]
    fn selftest_child() {
        let Ok(vip) = std::env::var(CHILD_ENV) else {
            return;
        };
        if let Err(e) = selftest::child_main(vip.parse().unwrap()) {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }

    fn svc(id: u32) -> (layout::ServiceKey, layout::Service) {
        (
            layout::ServiceKey::new("11.0.0.1".parse().unwrap(), 80, layout::IPPROTO_TCP),
            layout::Service {
                id,
                count: 1,
                ring: layout::NO_RING,
                bank: 0,
            },
        )
    }

    #[test]
    fn load_attach_pin_then_restart_adopts_without_duplicates_then_cleanup() {
        let Some(f) = Fixture::new() else { return };
        let mut first = f.load();
        assert!(first.replaced.is_none());
        assert!(!first.restarted);
        assert!(first.services.is_empty() && first.backends.is_empty());
        let mut want: Vec<String> = layout::MAPS.iter().map(|m| m.to_string()).collect();
        want.extend(layout::PROGRAMS.iter().map(|p| format!("link_{p}")));
        want.sort();
        assert_eq!(f.pins(), want);
        f.assert_attached(1);
        let (k, s) = svc(3);
        let b = layout::Backend::new("10.0.0.2".parse().unwrap(), 8080);
        first
            .maps
            .set_backend(layout::BackendKey { id: 3, slot: 0 }, b)
            .unwrap();
        first.maps.set_service(k, s).unwrap();
        drop(first); // Ferryman stops: nothing detaches.
        f.assert_attached(1);

        let second = f.load();
        assert!(second.restarted);
        assert!(second.replaced.is_none());
        assert_eq!(second.services, vec![(k, s)]);
        assert_eq!(
            second.backends,
            vec![(layout::BackendKey { id: 3, slot: 0 }, b)]
        );
        assert_eq!(f.pins(), want);
        f.assert_attached(1);

        let removed = cleanup(&f.l4()).unwrap();
        assert_eq!(removed.len(), want.len());
        assert!(removed[..8].iter().all(|n| n.starts_with("link_")));
        assert!(!f.settings.pin_dir.exists());
        f.assert_attached(0);
        assert!(cleanup(&f.l4()).unwrap().is_empty(), "idempotent");
    }

    /// `maps::Batched` against the kernel: runs of one kind become batch syscalls, a write of
    /// another kind or `flush` issues them, deletes skip absent keys, per-CPU resets zero every
    /// CPU, and a ring is written whole.
    #[test]
    fn batched_writes_reach_the_maps_in_order() {
        use crate::fastpath::MapOps;
        let Some(f) = Fixture::new() else { return };
        let mut a = f.load();
        let key = |i: u32| {
            layout::ServiceKey::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)),
                80,
                layout::IPPROTO_TCP,
            )
        };
        let be = |i: u32| {
            layout::Backend::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                8080,
            )
        };
        let n = f.settings.max_services;
        {
            let mut w = a.maps.batched();
            for i in 0..n {
                w.reset_stats(i).unwrap();
            }
            for i in 0..n {
                w.set_backend(layout::BackendKey { id: i, slot: 0 }, be(i))
                    .unwrap();
            }
            // Nothing issued yet: the run of backends is still buffered.
            assert!(w.maps().backends().unwrap().is_empty());
            for i in 0..n {
                let s = layout::Service {
                    id: i,
                    count: 1,
                    ring: layout::NO_RING,
                    bank: 0,
                };
                w.set_service(key(i), s).unwrap();
            }
            // The service run started: the backends went in first.
            assert_eq!(w.maps().backends().unwrap().len(), n as usize);
            assert!(w.maps().services().unwrap().is_empty());
            let ring: Vec<u32> = (0..layout::MAGLEV_M).map(|i| i % 7).collect();
            w.set_ring(1, &ring).unwrap();
            w.flush().unwrap();
        }
        let mut services = a.maps.services().unwrap();
        services.sort_by_key(|(_, s)| s.id);
        assert_eq!(services.len(), n as usize);
        assert!(
            services
                .iter()
                .enumerate()
                .all(|(i, (k, s))| *k == key(i as u32) && s.count == 1)
        );
        assert_eq!(a.maps.stats(5).unwrap(), layout::Stats::default());
        {
            let mut w = a.maps.batched();
            // Absent keys (id n and up) first, in the middle and at the end are skipped.
            let absent = layout::BackendKey {
                id: n + 100,
                slot: 0,
            };
            w.delete_backend(absent).unwrap();
            for i in (0..n / 2).step_by(2) {
                w.delete_backend(layout::BackendKey { id: i, slot: 0 })
                    .unwrap();
            }
            w.delete_backend(absent).unwrap();
            for i in (n / 2..n + 10).step_by(2) {
                w.delete_backend(layout::BackendKey { id: i, slot: 0 })
                    .unwrap();
            }
            for i in 0..n {
                w.delete_service(key(i)).unwrap();
            }
            w.flush().unwrap();
        }
        assert!(a.maps.services().unwrap().is_empty());
        let left = a.maps.backends().unwrap();
        assert_eq!(left.len(), n as usize / 2);
        assert!(left.iter().all(|(k, _)| k.id % 2 == 1));
    }

    #[test]
    fn maps_of_another_layout_version_are_replaced() {
        let Some(f) = Fixture::new() else { return };
        let mut first = f.load();
        let (k, s) = svc(1);
        first.maps.set_service(k, s).unwrap();
        first.maps.set_version(LAYOUT_VERSION + 1).unwrap();
        drop(first);
        assert!(matches!(inspect(&f.settings), Pinned::Incompatible(_)));
        let second = f.load();
        let why = second.replaced.expect("replaced");
        assert!(
            why.starts_with(&format!("layout version {}", LAYOUT_VERSION + 1)),
            "{why}"
        );
        assert!(second.services.is_empty(), "old contents are not adopted");
        assert_eq!(inspect(&f.settings), Pinned::Compatible);
        f.assert_attached(1);
    }

    #[test]
    fn selftest_passes_when_attached_and_fails_when_detached() {
        let Some(f) = Fixture::new() else { return };
        let mut a = f.load();
        let id = f.settings.selftest_id();
        selftest::run(&mut a.maps, id, &f.settings.cgroup, Fixture::child).unwrap();
        assert!(
            a.maps.services().unwrap().is_empty(),
            "test service removed"
        );
        assert!(
            a.maps.backends().unwrap().is_empty(),
            "test backend removed"
        );
        assert!(
            a.maps.stats(id).unwrap().connect >= 1,
            "the connect was counted"
        );
        // Programs detached (pins gone), maps still open: the connect is not rewritten.
        remove_pins(&f.settings.pin_dir).unwrap();
        let err = selftest::run(&mut a.maps, id, &f.settings.cgroup, Fixture::child).unwrap_err();
        assert!(err.contains("not redirected"), "{err}");
        assert!(
            std::fs::read_dir(&f.settings.cgroup)
                .unwrap()
                .filter_map(|e| e.ok())
                .all(|e| !e
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ferryman-selftest"))
        );
    }
}
