//! Host state of one eBPF test, each piece removed on `Drop` (also while unwinding from a panic):
//!
//! - [`CgroupGuard`]: a child cgroup of the cgroup v2 hierarchy (`<mount>/ferryman-it-<pid>-<n>`),
//!   the only cgroup a test lets ferryman attach its programs to. Never the root: a program
//!   attached there would rewrite every socket on the machine.
//! - [`PinDir`]: a directory of the BPF filesystem (`/sys/fs/bpf/ferryman-it-<pid>-<n>`) for
//!   `l4.bpf_pin_dir`, mounting bpffs at `/sys/fs/bpf` first when it is not mounted.
//!
//! Names carry the test process id and a counter, so tests run in parallel. Leftovers of a test
//! process that was killed outright (its pid gone) are swept by the next guard of any process.
//!
//! Clients that dial VIPs start through [`CgroupGuard::command`]: the shell moves itself into the
//! cgroup, then execs `ip netns exec <ns> <program>`, so the program's sockets are subject to the
//! test's programs and live in a namespace with no route off the machine.

#![allow(dead_code)] // Not every test uses every helper.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every cgroup and pin directory the guards create.
pub const PREFIX: &str = "ferryman-it-";
/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// How long removal may wait for the processes of a cgroup to die.
const KILL_WITHIN: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();
static MOUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A fresh `ferryman-it-<pid>-<n>` name (unique in this process).
pub fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The mount points in `/proc/self/mountinfo` with file system type `fstype`.
pub fn mounts_of_type(fstype: &str) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            // `id parent major:minor root mountpoint options [optional…] - fstype source super`
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            (right.split(' ').next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a
/// hybrid one), if any.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mounts_of_type("cgroup2").into_iter().next()
}

/// Mounts bpffs at [`BPFFS`] unless a bpf file system is mounted there already.
pub fn ensure_bpffs() -> Result<(), String> {
    let _serial = MOUNT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if mounts_of_type("bpf").iter().any(|m| m == Path::new(BPFFS)) {
        return Ok(());
    }
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -t bpf bpf {BPFFS}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A pause on a plain thread (tests here are synchronous).
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

// === impl CgroupGuard ===

/// A child cgroup of the cgroup v2 hierarchy, removed on drop after killing every process in it.
#[derive(Debug)]
pub struct CgroupGuard {
    pub path: PathBuf,
}

impl CgroupGuard {
    /// Creates `<cgroup v2 mount>/ferryman-it-<pid>-<n>`.
    pub fn create() -> CgroupGuard {
        let mount = cgroup2_mount().expect("a cgroup v2 mount (checked by the caller)");
        SWEEP.call_once(sweep_stale);
        let path = mount.join(unique_name());
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        CgroupGuard { path }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("write {pid} to {}: {e}", procs.display()));
    }

    /// The processes in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        read_procs(&self.path)
    }

    /// A command that runs `program` inside the cgroup and network namespace `netns`: a shell
    /// writes its own pid to `cgroup.procs`, then execs `ip netns exec <netns> <program>` (exec
    /// all the way: the child's pid is the program's). Arguments added by the caller go to the
    /// program.
    pub fn command(&self, netns: &str, program: impl AsRef<OsStr>) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec ip netns exec '{netns}' \"$0\" \"$@\"",
                procs.display()
            ))
            .arg(program)
            .stdin(Stdio::null());
        c
    }

    /// The argument list of [`CgroupGuard::command`] as a prefix for a program appended later
    /// (the harness's `Ferryman::start_with_prefix`), entering `netns` with `nsenter --net`
    /// instead of `ip netns exec`: the program keeps the host's mounts, so it sees the cgroup v2
    /// and bpf file systems (`ip netns exec` remounts `/sys`).
    pub fn nsenter_prefix(&self, netns: &str) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > '{}' && exec nsenter --net=/var/run/netns/{netns} \"$0\" \"$@\"",
                self.path.join("cgroup.procs").display()
            ),
        ]
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup(&self.path) {
            eprintln!("warning: {e}");
        }
    }
}

/// The pids in `<cgroup>/cgroup.procs`.
fn read_procs(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in `cgroup` (`cgroup.kill`, else one SIGKILL per pid), waits until it is
/// empty (bounded), and removes it (and any child cgroup a test made in it).
fn remove_cgroup(cgroup: &Path) -> Result<(), String> {
    if !cgroup.exists() {
        return Ok(());
    }
    // Children first (depth-first), so that rmdir of this one can succeed.
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path())?;
            }
        }
    }
    let deadline = Instant::now() + KILL_WITHIN;
    loop {
        let procs = read_procs(cgroup);
        if procs.is_empty() {
            match std::fs::remove_dir(cgroup) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // EBUSY while a just-killed process is still being torn down.
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("remove cgroup {}: {e}", cgroup.display()));
                }
                Err(_) => {}
            }
        } else if std::fs::write(cgroup.join("cgroup.kill"), "1").is_err() {
            for pid in procs {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "cgroup {} still holds processes {:?} after {KILL_WITHIN:?}",
                cgroup.display(),
                read_procs(cgroup)
            ));
        }
        pause(Duration::from_millis(20));
    }
}

// === impl PinDir ===

/// A pin directory on bpffs for `l4.bpf_pin_dir`: not created here (ferryman creates it; a test
/// may pre-create it to plant stale maps), removed with everything in it on drop. Removing a
/// pinned link releases it, so once ferryman is gone this detaches its programs.
#[derive(Debug)]
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    /// Mounts bpffs if needed and reserves `/sys/fs/bpf/ferryman-it-<pid>-<n>`.
    pub fn new() -> Result<PinDir, String> {
        ensure_bpffs()?;
        SWEEP.call_once(sweep_stale);
        Ok(PinDir {
            path: Path::new(BPFFS).join(unique_name()),
        })
    }

    /// The names in the directory (empty when it does not exist).
    pub fn entries(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: remove {}: {e}", self.path.display()),
        }
    }
}

/// Removes cgroups and pin directories `ferryman-it-<pid>-…` of test processes that no longer
/// exist (killed before their drops ran).
fn sweep_stale() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    };
    let dirs = cgroup2_mount()
        .into_iter()
        .map(|m| (m, true))
        .chain(std::iter::once((PathBuf::from(BPFFS), false)));
    for (dir, is_cgroup) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !stale(&name) {
                continue;
            }
            if is_cgroup {
                let _ = remove_cgroup(&e.path());
            } else {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[test]
fn mountinfo_escapes_are_undone() {
    assert_eq!(unescape("/a\\040b"), "/a b");
    assert_eq!(unescape("/plain"), "/plain");
    assert_eq!(unescape("/odd\\x"), "/odd\\x");
}
