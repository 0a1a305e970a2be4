//! The fast path's proof of life (`auto` and `ebpf` modes, after attaching): a process in a child
//! cgroup connects to a test VIP that only the maps know, and must reach a local listener and
//! see the VIP as its peer.
//!
//! Everything stays on loopback: the test VIP `127.255.255.254:P` goes to `127.0.0.1:P`, where
//! the parent listens. Without the rewrite the connect goes to `127.255.255.254:P` where nothing
//! listens, so a broken fast path fails fast with ECONNREFUSED rather than reaching anything.
//! The test service uses id `max_services`, which the sync never hands out.
//!
//! The child is Ferryman itself (`ferryman __fastpath-selftest <vip>`, hidden from `--help`): it
//! waits for a line on stdin (sent once it is in the child cgroup), connects, checks
//! `getpeername()`, reads the parent's token and prints `selftest-ok <token>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::MapOps;
use super::layout::{self, Backend, BackendKey, Service, ServiceKey};

/// Waits [`POLL`]. The self-test is blocking code by design: it runs on a blocking thread
/// (`spawn_blocking`) or in a test, never on an async worker.
#[allow(
    clippy::disallowed_methods,
    reason = "runs on a blocking thread, see above"
)]
pub(crate) fn pause() {
    std::thread::sleep(POLL);
}

/// The hidden subcommand that runs [`child_main`].
pub const CHILD_COMMAND: &str = "__fastpath-selftest";
/// The test VIP (a loopback address nothing listens on).
pub const TEST_VIP: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 254);
/// The child's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the parent waits for the connection, and then for the child to finish.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(10);

/// The production child: this executable (`/proc/self/exe`, which still works after the binary
/// was replaced by an upgrade) with the hidden subcommand.
pub fn ferryman_child(vip: SocketAddr) -> Command {
    let mut c = Command::new("/proc/self/exe");
    c.arg(CHILD_COMMAND).arg(vip.to_string());
    c
}

/// Runs the self-test with service id `id` through `ops`, the child (built by `child`) placed in
/// a fresh child cgroup of `cgroup`. `Err` is the reason, for the log and `/v1/vips`. The test
/// entries and the child cgroup are removed whatever happens.
pub fn run<M: MapOps>(
    ops: &mut M,
    id: u32,
    cgroup: &Path,
    child: impl FnOnce(SocketAddr) -> Command,
) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("self-test: cannot listen on 127.0.0.1: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("self-test: no local address: {e}"))?
        .port();
    let vip = SocketAddr::from((TEST_VIP, port));
    let key = ServiceKey::new(TEST_VIP.into(), port, layout::IPPROTO_TCP);
    let bkey = BackendKey { id, slot: 0 };

    let written = (|| {
        ops.reset_stats(id)?;
        ops.set_backend(bkey, Backend::new(Ipv4Addr::LOCALHOST.into(), port))?;
        ops.set_service(
            key,
            Service {
                id,
                count: 1,
                ring: layout::NO_RING,
                bank: 0,
            },
        )
    })();
    let result = match written {
        Err(e) => Err(format!("self-test: cannot write the test service: {e}")),
        Ok(()) => in_child_cgroup(cgroup, |dir| exercise(&listener, vip, dir, child)),
    };
    // The service first, so no lookup finds it with its slot gone.
    let removed = ops
        .delete_service(key)
        .and_then(|()| ops.delete_backend(bkey));
    match (result, removed) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(format!("self-test: cannot remove the test service: {e}")),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Creates `<cgroup>/ferryman-selftest-<pid>`, runs `f` with it, removes it (retrying briefly
/// while the killed child leaves it).
fn in_child_cgroup(
    cgroup: &Path,
    f: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let dir: PathBuf = cgroup.join(format!("ferryman-selftest-{}", std::process::id()));
    // Left by a previous attempt of this pid (a restart in a pid namespace): reuse it.
    if let Err(e) = std::fs::create_dir(&dir)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!(
            "self-test: cannot create the cgroup {}: {e}",
            dir.display()
        ));
    }
    let result = f(&dir);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove the self-test cgroup");
                break;
            }
            Err(_) => pause(),
        }
    }
    result
}

/// Kills and reaps the child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn exercise(
    listener: &TcpListener,
    vip: SocketAddr,
    cgroup: &Path,
    child: impl FnOnce(SocketAddr) -> Command,
) -> Result<(), String> {
    let mut cmd = child(vip);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Reaped(
        cmd.spawn()
            .map_err(|e| format!("self-test: cannot start the test client: {e}"))?,
    );
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, child.0.id().to_string()).map_err(|e| {
        format!(
            "self-test: cannot move the test client into {}: {e}",
            procs.display()
        )
    })?;
    let mut stdin = child
        .0
        .stdin
        .take()
        .ok_or("self-test: no stdin pipe to the test client")?;
    stdin
        .write_all(b"go\n")
        .map_err(|e| format!("self-test: cannot start the test client: {e}"))?;

    let token = format!("{:016x}", rand::random::<u64>());
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("self-test: {e}"))?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut conn = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("self-test: accept: {e}")),
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!(
                "self-test: a connect to {vip} was not redirected to 127.0.0.1:{} ({}; {})",
                vip.port(),
                status,
                child_output(&mut child.0)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "self-test: no connection from the test client to {vip} within {STEP_TIMEOUT:?}"
            ));
        }
        pause();
    };
    let _ = conn.set_nonblocking(false);
    conn.write_all(format!("{token}\n").as_bytes())
        .map_err(|e| format!("self-test: cannot send the token: {e}"))?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                return Err(format!(
                    "self-test: the test client did not finish within {STEP_TIMEOUT:?}"
                ));
            }
            Ok(None) => pause(),
            Err(e) => return Err(format!("self-test: waiting for the test client: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let want = format!("selftest-ok {token}");
    // `contains`: the test harness's child prints on the line that names the test.
    if status.success() && out.lines().any(|l| l.contains(&want)) {
        Ok(())
    } else {
        Err(format!(
            "self-test: the test client failed ({status}; {})",
            child_output(&mut child.0)
        ))
    }
}

/// The child's stderr (its reason), trimmed, for an error message.
fn child_output(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let err = err.trim();
    if err.is_empty() {
        "no output".into()
    } else {
        err.chars().take(500).collect()
    }
}

/// The child's side: waits for a line on stdin, connects to `vip`, checks that the peer shows as
/// the VIP (the getpeername hook), echoes the parent's token as `selftest-ok <token>`.
pub fn child_main(vip: SocketAddr) -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("stdin: {e}"))?;
    let stream = TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect to {vip}: {e}"))?;
    let peer = stream
        .peer_addr()
        .map_err(|e| format!("getpeername: {e}"))?;
    if peer != vip {
        return Err(format!(
            "getpeername() shows {peer}, not the VIP {vip} (recvmsg/getpeername hooks)"
        ));
    }
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut token = String::new();
    BufReader::new(&stream)
        .read_line(&mut token)
        .map_err(|e| format!("reading the token: {e}"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err("the connection closed without a token".into());
    }
    println!("selftest-ok {token}");
    Ok(())
}
