//! Network-namespace topologies for tests that need real addresses (VIPs, several hosts): a
//! client namespace, a node namespace (where ferryman runs) and backend namespaces, joined by
//! veth pairs that are created directly inside the namespaces (nothing is ever added to the
//! host's own namespace). No namespace has a default route, and none is linked to the host's
//! namespace, so no packet can leave the machine.
//!
//! ```text
//!   client ──(10.200.0.2/16 ─ 10.200.0.1/16)── node ──(10.201.i.1/24 ─ 10.201.i.2/24)── backend i
//!   client routes 11.0.0.0/8 (the VIP range) via 10.200.0.1
//! ```
//!
//! Names carry the test process id and a counter (`fm-<pid>-<n>-<role>`), so tests run in
//! parallel. [`Topology`] removes everything on `Drop` (also while unwinding from a panic): the
//! processes it started, then every process still inside its namespaces, then the namespaces
//! (which takes the veths and any link ferryman created with them). Namespaces left by a test
//! process that was killed outright are swept by the next [`Topology::new`].
//!
//! Threads enter a namespace with `setns(2)` ([`Netns::enter`], [`Netns::block_on`]): sockets a
//! thread opens there belong to that namespace, so the test talks to ferryman and the backends
//! in-process, without one `ip netns exec` per request.
//!
//! Needs root and `ip` (iproute2); [`Topology::available`] says whether the test can run.

#![allow(dead_code)] // Not every test uses every helper.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness;

/// Prefix of every namespace these helpers create.
const PREFIX: &str = "fm-";
/// How long a started server may take to answer.
const SERVER_START: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();
static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The node's address on the client link (where service ports bind and VIPs are routed).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The client's own address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The VIP range the client routes to the node.
pub const VIP_ROUTE: &str = "11.0.0.0/8";
/// Port of the HTTP server in every backend.
pub const HTTP_PORT: u16 = 80;
/// Port of the UDP echo server in every backend.
pub const UDP_ECHO_PORT: u16 = 9000;

/// The address of backend `i`.
pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, u8::try_from(i).expect("< 256 backends"), 2)
}

// === impl Netns ===

/// One named network namespace (`ip netns add`), deleted on drop after killing every process
/// still inside it.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Netns {
        run(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "dev", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args…`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs it: the
    /// child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread inside the namespace and returns its result (a panic in `f` is
    /// re-raised here).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                enter_netns(&self.name);
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs the future `f()` makes on a current-thread tokio runtime inside the namespace.
    pub fn block_on<F: Future>(&self, f: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f())
        })
    }

    /// Starts `program args…` inside the namespace, killed when the returned [`Proc`] drops.
    pub fn spawn(&self, program: &str, args: &[&str], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("create a process log");
        let err = out.try_clone().expect("clone the log file");
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {}: {e}", self.name));
        Proc {
            child,
            what: format!("{program} in {}", self.name),
            log: log.to_path_buf(),
        }
    }

    /// The kernel's TCP counters (`/proc/net/snmp`, `Tcp:` lines) of this namespace.
    pub fn tcp_counters(&self) -> TcpCounters {
        self.enter(|| {
            let text = std::fs::read_to_string("/proc/thread-self/net/snmp")
                .expect("read /proc/thread-self/net/snmp");
            TcpCounters::parse(&text).expect("a Tcp: section in /proc/net/snmp")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread into namespace `name`.
pub fn enter_netns(name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("open netns {name}: {e}"));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
}

/// SIGKILLs every process in namespace `name` (`ip netns pids`).
fn kill_all_in(name: &str) {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// The `Tcp:` counters this test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Connections accepted (SYN → established) by listeners.
    pub passive_opens: u64,
    /// Resets sent: one per SYN to a closed port, among others.
    pub out_rsts: u64,
}

impl TcpCounters {
    fn parse(snmp: &str) -> Option<TcpCounters> {
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let names: Vec<&str> = tcp.next()?.split_whitespace().collect();
        let values: Vec<&str> = tcp.next()?.split_whitespace().collect();
        let get = |name: &str| -> Option<u64> {
            let i = names.iter().position(|n| *n == name)?;
            values.get(i)?.parse().ok()
        };
        Some(TcpCounters {
            passive_opens: get("PassiveOpens")?,
            out_rsts: get("OutRsts")?,
        })
    }
}

// === impl Proc ===

/// A process started in a namespace; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// SIGKILL and reap (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// === impl Backend ===

/// One backend namespace with an nginx HTTP server on port 80 answering `200 b<i>\n` and a
/// python3 UDP echo server on port 9000 answering `b<i>:` + the datagram.
pub struct Backend {
    pub index: usize,
    pub ip: Ipv4Addr,
    http: Option<Proc>,
    udp: Option<Proc>,
    dir: tempfile::TempDir,
    pub ns: Netns,
}

impl Backend {
    /// Its tag in answers: `b<i>`.
    pub fn tag(&self) -> String {
        format!("b{}", self.index)
    }

    /// Its HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), HTTP_PORT)
    }

    /// Starts (or restarts) nginx and waits until it accepts connections.
    pub fn start_http(&mut self) {
        if let Some(mut p) = self.http.take() {
            p.kill();
        }
        let dir = self.dir.path();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, &self.tag())).expect("write nginx.conf");
        let proc = self.ns.spawn(
            "nginx",
            &[
                "-p",
                &dir.display().to_string(),
                "-e",
                &dir.join("error.log").display().to_string(),
                "-c",
                &conf.display().to_string(),
            ],
            &dir.join("nginx.out"),
        );
        self.http = Some(proc);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, HTTP_PORT));
        let ready = self.ns.enter(|| wait_tcp(addr, SERVER_START));
        if !ready {
            let log = self.http.as_ref().map(Proc::log).unwrap_or_default();
            let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!(
                "nginx in {} did not listen within {SERVER_START:?}: {log}\n{errors}",
                self.ns.name
            );
        }
    }

    /// SIGKILLs nginx: new connections to it are refused (RST) from now on.
    pub fn kill_http(&mut self) {
        if let Some(mut p) = self.http.take() {
            p.kill();
        }
    }

    /// Starts the UDP echo server and waits until it answers.
    pub fn start_udp_echo(&mut self) {
        let python = harness::tool("python3").expect("python3 (checked by Topology::available)");
        let proc = self.ns.spawn(
            &python.display().to_string(),
            &[
                "-u",
                "-c",
                UDP_ECHO_PY,
                &UDP_ECHO_PORT.to_string(),
                &self.tag(),
            ],
            &self.dir.path().join("udp-echo.out"),
        );
        self.udp = Some(proc);
        let tag = self.tag();
        let ok = self.ns.enter(|| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
            s.set_read_timeout(Some(Duration::from_millis(100))).ok();
            let deadline = Instant::now() + SERVER_START;
            let mut buf = [0u8; 64];
            while Instant::now() < deadline {
                let _ = s.send_to(b"ping", ("127.0.0.1", UDP_ECHO_PORT));
                if let Ok(n) = s.recv(&mut buf) {
                    return buf.get(..n) == Some(format!("{tag}:ping").as_bytes());
                }
            }
            false
        });
        if !ok {
            let log = self.udp.as_ref().map(Proc::log).unwrap_or_default();
            panic!("UDP echo in {} did not answer: {log}", self.ns.name);
        }
    }
}

/// nginx: one process (no master, no daemon, so the child we hold is the server), every path in
/// `dir`, keep-alive connections kept open as long as a load generator wants them.
fn nginx_conf(dir: &Path, tag: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  default_type text/plain;\n  keepalive_requests 10000000;\n\
         \x20 keepalive_timeout 300s;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n    listen {HTTP_PORT} reuseport backlog=4096;\n    location / {{ return 200 \"{tag}\\n\"; }}\n  }}\n}}\n"
    )
}

/// A UDP echo server: `argv[1]` port, `argv[2]` tag; answers `tag:` + datagram to the sender.
const UDP_ECHO_PY: &str = "import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind(('0.0.0.0',int(sys.argv[1])))
t=sys.argv[2].encode()+b':'
while True:
    d,a=s.recvfrom(65535)
    s.sendto(t+d,a)
";

/// A pause on a plain thread (never in async code): polling a server that is starting up.
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Polls a TCP connect to `addr` (from the calling thread's namespace) until it succeeds.
fn wait_tcp(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        pause(Duration::from_millis(20));
    }
    false
}

// === impl Topology ===

/// Client, node and backend namespaces wired as the module docs draw them. Drop order: the
/// backends' processes and namespaces, then the node and client namespaces.
pub struct Topology {
    /// `fm-<pid>-<n>`: the prefix of this topology's namespace names.
    pub tag: String,
    /// Short and unique per topology: usable as a link name (`l4.link`).
    pub short: String,
    pub backends: Vec<Backend>,
    pub node: Netns,
    pub client: Netns,
}

impl Topology {
    /// Whether namespace tests can run here: root, `ip`, `nginx` and `python3` (each missing
    /// tool skips, or fails under `FERRYMAN_REQUIRE_ALL=1`, through [`harness::tool`]).
    pub fn available() -> bool {
        use std::os::unix::fs::MetadataExt;
        // `/proc/self` belongs to the process's effective uid.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            if std::env::var("FERRYMAN_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("network namespace tests need root and FERRYMAN_REQUIRE_ALL=1");
            }
            eprintln!("skipped: network namespace tests need root");
            return false;
        }
        ["ip", "nginx", "python3"]
            .iter()
            .all(|t| harness::tool(t).is_some())
    }

    /// Builds a topology with `backends` backend namespaces (no servers started yet).
    pub fn new(backends: usize) -> Topology {
        SWEEP.call_once(sweep_stale);
        // `ip netns add` mounts /run/netns on first use; concurrent first uses can race.
        let _serial = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}-{n}");
        let short = format!("fm{:x}x{n}", pid & 0xff_ffff);
        let client = Netns::create(&format!("{tag}-client"));
        let node = Netns::create(&format!("{tag}-node"));
        let mut topo = Topology {
            tag: tag.clone(),
            short,
            backends: Vec::new(),
            node,
            client,
        };
        veth(&topo.node, "to-client", &topo.client, "to-node");
        topo.node
            .ip(&["addr", "add", &format!("{NODE_IP}/16"), "dev", "to-client"]);
        topo.node.ip(&["link", "set", "dev", "to-client", "up"]);
        topo.client
            .ip(&["addr", "add", &format!("{CLIENT_IP}/16"), "dev", "to-node"]);
        topo.client.ip(&["link", "set", "dev", "to-node", "up"]);
        topo.client
            .ip(&["route", "add", VIP_ROUTE, "via", &NODE_IP.to_string()]);
        // Short connections at full speed: the whole port range, TIME_WAIT reuse (these are
        // per-namespace settings).
        for ns in [&topo.client, &topo.node] {
            run(ns.command("sysctl").args([
                "-q",
                "-w",
                "net.ipv4.ip_local_port_range=1024 65535",
                "net.ipv4.tcp_tw_reuse=1",
            ]));
        }
        for i in 0..backends {
            let ns = Netns::create(&format!("{tag}-b{i}"));
            let link = format!("to-b{i}");
            veth(&topo.node, &link, &ns, "to-node");
            topo.node
                .ip(&["addr", "add", &format!("10.201.{i}.1/24"), "dev", &link]);
            topo.node.ip(&["link", "set", "dev", &link, "up"]);
            let ip = backend_ip(i);
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "to-node"]);
            ns.ip(&["link", "set", "dev", "to-node", "up"]);
            topo.backends.push(Backend {
                index: i,
                ip,
                http: None,
                udp: None,
                dir: tempfile::tempdir().expect("a temporary directory"),
                ns,
            });
        }
        topo
    }

    /// Starts nginx in every backend.
    pub fn start_http(&mut self) {
        for b in &mut self.backends {
            b.start_http();
        }
    }

    /// Starts the UDP echo server in every backend.
    pub fn start_udp_echo(&mut self) {
        for b in &mut self.backends {
            b.start_udp_echo();
        }
    }

    /// Adds `n` more /32 addresses to the client (10.202.0.1, …; at most 65 534), for balancers
    /// that hash the client address, and routes 10.202.0.0/16 from the node via the client (one
    /// neighbour entry, not one per address). Returns them.
    pub fn add_client_addresses(&self, n: usize) -> Vec<Ipv4Addr> {
        assert!(n < 65_535, "10.202.0.0/16 holds the extra client addresses");
        self.node.ip(&[
            "route",
            "replace",
            "10.202.0.0/16",
            "via",
            &CLIENT_IP.to_string(),
        ]);
        let base = u32::from(Ipv4Addr::new(10, 202, 0, 0));
        let addrs: Vec<Ipv4Addr> = (1..=n)
            .map(|k| Ipv4Addr::from(base + u32::try_from(k).expect("few addresses")))
            .collect();
        let batch: String = addrs
            .iter()
            .map(|a| format!("addr add {a}/32 dev to-node\n"))
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", &self.client.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start ip -batch");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin is piped");
            stdin
                .write_all(batch.as_bytes())
                .expect("write the ip batch");
        }
        let status = child.wait().expect("wait for ip -batch");
        assert!(status.success(), "ip -batch addr add failed: {status}");
        addrs
    }

    /// The names of this topology's namespaces that exist now.
    pub fn existing_namespaces(tag: &str) -> Vec<String> {
        list_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{tag}-")))
            .collect()
    }
}

/// A veth pair created directly in two namespaces: `a_name` in `a`, `b_name` in `b`.
fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    run(Command::new("ip").args([
        "link", "add", "name", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name,
        "netns", &b.name,
    ]));
}

/// Every namespace name (`ip netns list`, first word of each line).
fn list_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Removes namespaces left by test processes that no longer exist (killed before their drops
/// ran): `fm-<pid>-…` where `/proc/<pid>` is gone.
fn sweep_stale() {
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            drop(Netns { name });
        }
    }
}

/// Runs a command, panicking with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn tcp_counters_parse_proc_net_snmp() {
    let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
                Tcp: 1 200 120000 -1 10 7 0 0 1 100 90 0 0 3 0\n";
    assert_eq!(
        TcpCounters::parse(snmp),
        Some(TcpCounters {
            passive_opens: 7,
            out_rsts: 3
        })
    );
}

/// The helper itself: namespaces come up, a client reaches a backend's server only through the
/// node (not at all here, as the node does not forward), and drop leaves nothing behind.
#[test]
fn topology_is_built_and_removed() {
    if !Topology::available() {
        return;
    }
    let tag;
    {
        let mut topo = Topology::new(2);
        tag = topo.tag.clone();
        assert_eq!(Topology::existing_namespaces(&tag).len(), 4);
        topo.start_http();
        // The node reaches both backends' nginx; each answers with its tag.
        let bodies = topo.node.block_on(|| async {
            let mut out = Vec::new();
            for i in 0..2 {
                let addr = SocketAddr::new(IpAddr::V4(backend_ip(i)), HTTP_PORT);
                out.push(harness::http_request(addr, "GET", "/").await.body);
            }
            out
        });
        assert_eq!(bodies, ["b0\n", "b1\n"]);
        // The client has no route to the backends (and none off the machine).
        let reach = topo.client.enter(|| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::new(IpAddr::V4(backend_ip(0)), HTTP_PORT),
                Duration::from_millis(500),
            )
            .map_err(|e| e.kind())
        });
        assert_eq!(
            reach.err(),
            Some(std::io::ErrorKind::NetworkUnreachable),
            "the client must not reach a backend directly"
        );
        // Killing a server closes its port: the backend answers SYNs with RSTs.
        let before = topo.backends[0].ns.tcp_counters();
        topo.backends[0].kill_http();
        let refused = topo.node.enter(|| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::new(IpAddr::V4(backend_ip(0)), HTTP_PORT),
                Duration::from_millis(500),
            )
            .map_err(|e| e.kind())
        });
        assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));
        let after = topo.backends[0].ns.tcp_counters();
        assert_eq!(
            after.out_rsts - before.out_rsts,
            1,
            "one RST per refused SYN"
        );
        topo.backends[0].start_http();
    }
    assert!(
        Topology::existing_namespaces(&tag).is_empty(),
        "drop removes every namespace of the topology"
    );
}
