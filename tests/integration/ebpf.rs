//! The eBPF fast path end to end (issue 7, "Tests"): the real binary loads `ebpf/sock_lb.c` into a
//! child cgroup of the test's own ([`cgroup::CgroupGuard`]), pins under a pin directory of its own
//! ([`cgroup::PinDir`]) and syncs the VIPs of a file-source state. Clients run inside that cgroup
//! *and* inside a network namespace of the test's with only `lo` up, so a socket the programs do
//! not rewrite cannot reach anything: a VIP (11.0.0.0/8) has no route there (ENETUNREACH), and no
//! packet can leave the machine.
//!
//! Backends are python3 processes in the same namespace on 127.0.0.x (fd00:1::x for IPv6): TCP
//! answers any request with `HTTP/1.1 200` and the body `<tag> <peer port>`, UDP echoes
//! `<tag>:<datagram>`. The peer port tells how a connection arrived: equal to the client's own
//! local port means the client's socket was sent straight to the backend (the eBPF path),
//! different means a proxy connected on its behalf (the user-space path).
//!
//! Ferryman runs in the test namespace (`nsenter --net`, keeping the host's mounts so it sees the
//! cgroup and bpf file systems), outside the cgroup. Each test removes everything it made (cgroup,
//! namespace, pins) on drop and then checks that it is gone ([`Env::finish`]).
//!
//! Needs root, `ip`, `nsenter`, `python3`, `curl`, `bpftool`, a cgroup v2 mount and a build with
//! the BPF object; without them a test skips, or fails under `FERRYMAN_REQUIRE_ALL=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cgroup::{self, CgroupGuard, PinDir};
use crate::harness::{self, Ferryman};
use crate::netns::{Netns, Proc};

/// How long ferryman may take to load, sync, or follow a change of the state file.
const CONVERGE: Duration = Duration::from_secs(20);
/// Upper bound of one client process.
const CLIENT_WITHIN: Duration = Duration::from_secs(60);
/// How long a backend process may take to bind.
const BACKEND_START: Duration = Duration::from_secs(10);

/// The IP VIP of the web app.
const WEB_VIP: &str = "11.1.0.1:80";
/// The named VIP of the web app (label value) and its name.
const WEB_NAMED_LABEL: &str = "/web:80";
const WEB_NAME: &str = "web.marathon.l4lb.thisdcos.directory";
/// The UDP echo app's IP VIP.
const ECHO_VIP: &str = "11.1.0.2:9000";
/// Port of every backend's TCP and UDP server.
const HTTP_PORT: u16 = 80;
const UDP_PORT: u16 = 9000;
/// Programs ferryman attaches to the cgroup: 8.
const PROGRAMS: usize = ferryman::fastpath::layout::PROGRAMS.len();
/// errno values the clients print.
const ECONNREFUSED: i64 = 111;

/// The address of backend `i`: 127.0.0.<i+2> (inside the test namespace).
fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(i + 2).expect("few backends"))
}

/// The IPv6 address of backend `i` of an IPv6 test: fd00:1::<i+2> (added to the namespace's
/// `lo` by [`Env::add_v6_addresses`]).
fn backend_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        1,
        0,
        0,
        0,
        0,
        0,
        u16::try_from(i + 2).expect("few backends"),
    )
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// A plain-thread pause (the tests here are synchronous).
#[allow(clippy::disallowed_methods)]
fn sleep(d: Duration) {
    std::thread::sleep(d);
}

// === availability ===

/// Whether these tests can run here: root, the tools, a cgroup v2 mount, bpffs (mounted when
/// missing) and a binary built with the BPF object. Anything missing skips (`false`), or panics
/// under `FERRYMAN_REQUIRE_ALL=1`.
fn available() -> bool {
    use std::os::unix::fs::MetadataExt;
    let require_all = std::env::var("FERRYMAN_REQUIRE_ALL").as_deref() == Ok("1");
    let missing = |what: &str| -> bool {
        if require_all {
            panic!("eBPF tests: {what} and FERRYMAN_REQUIRE_ALL=1");
        }
        eprintln!("skipped: eBPF tests: {what}");
        false
    };
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return missing("not root");
    }
    if !["ip", "nsenter", "python3", "curl", "bpftool", "setpriv"]
        .iter()
        .all(|t| harness::tool(t).is_some())
    {
        return false;
    }
    if cgroup::cgroup2_mount().is_none() {
        return missing("no cgroup v2 mount in /proc/self/mountinfo");
    }
    if let Err(e) = cgroup::ensure_bpffs() {
        return missing(&format!("no bpffs: {e}"));
    }
    if ferryman::fastpath::OBJECT.is_none() {
        return missing("ferryman was built without the BPF object (clang-19 / libbpf-dev)");
    }
    true
}

// === apps.json ===

/// One task of an app: backend address and Marathon health result (`None`: no health check).
#[derive(Clone, Debug)]
struct Task {
    ip: IpAddr,
    port: u16,
    alive: Option<bool>,
}

/// One Marathon app with one port carrying the label `VIP_0 = vip`.
#[derive(Clone, Debug)]
struct App {
    id: String,
    protocol: &'static str,
    vip: String,
    tasks: Vec<Task>,
}

impl App {
    /// A TCP app on port 80 of backends `indices`, all healthy, no health check.
    fn tcp(id: &str, vip: &str, indices: &[usize]) -> App {
        App {
            id: id.into(),
            protocol: "tcp",
            vip: vip.into(),
            tasks: indices
                .iter()
                .map(|&i| Task {
                    ip: backend_ip(i).into(),
                    port: HTTP_PORT,
                    alive: None,
                })
                .collect(),
        }
    }

    /// The app's tasks on `ips` instead (same ports).
    fn at(mut self, ips: &[IpAddr]) -> App {
        let port = self.tasks.first().map_or(HTTP_PORT, |t| t.port);
        self.tasks = ips
            .iter()
            .map(|&ip| Task {
                ip,
                port,
                alive: None,
            })
            .collect();
        self
    }

    /// A UDP app on port [`UDP_PORT`] of backends `indices`.
    fn udp(id: &str, vip: &str, indices: &[usize]) -> App {
        let mut app = App::tcp(id, vip, indices);
        app.protocol = "udp";
        for t in &mut app.tasks {
            t.port = UDP_PORT;
        }
        app
    }

    /// Gives every task a Marathon health result (`alive`), which adds a health check.
    fn with_health(mut self, alive: bool) -> App {
        for t in &mut self.tasks {
            t.alive = Some(alive);
        }
        self
    }

    fn json(&self) -> Value {
        let with_health = self.tasks.iter().any(|t| t.alive.is_some());
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let id = format!(
                    "{}.task-{k}",
                    self.id.trim_start_matches('/').replace('/', "_")
                );
                let mut v = json!({
                    "id": id, "appId": self.id, "host": t.ip.to_string(),
                    "slaveId": format!("agent-{k}"), "ports": [t.port],
                    "ipAddresses": [{"ipAddress": t.ip.to_string(),
                                     "protocol": if t.ip.is_ipv4() { "IPv4" } else { "IPv6" }}],
                    "state": "TASK_RUNNING",
                    "stagedAt": "2026-01-12T09:30:01.000Z",
                    "startedAt": "2026-01-12T09:30:03.000Z",
                    "version": "2026-01-12T09:30:00.000Z",
                });
                if let Some(alive) = t.alive {
                    v["healthCheckResults"] = json!([{
                        "alive": alive, "consecutiveFailures": if alive { 0 } else { 3 },
                        "taskId": id,
                    }]);
                }
                v
            })
            .collect();
        let health_checks = if with_health {
            json!([{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 30,
                    "intervalSeconds": 10, "timeoutSeconds": 5, "maxConsecutiveFailures": 3}])
        } else {
            json!([])
        };
        json!({
            "id": self.id,
            "instances": self.tasks.len(),
            "labels": {},
            "portDefinitions": [{
                "port": 0, "protocol": self.protocol, "name": "main",
                "labels": {"VIP_0": self.vip},
            }],
            "healthChecks": health_checks,
            "version": "2026-01-12T09:30:00.000Z",
            "tasks": tasks,
        })
    }
}

fn apps_json(apps: &[App]) -> Vec<u8> {
    let doc = json!({"apps": apps.iter().map(App::json).collect::<Vec<_>>()});
    serde_json::to_vec(&doc).expect("JSON serialises")
}

// === backends ===

/// A backend server: `argv[1]` tag, then `tcp:IP:PORT` / `udp:IP:PORT` listeners. TCP: reads a
/// request head, answers `200` with body `<tag> <peer port>` and closes. UDP: echoes
/// `<tag>:<datagram>`. Prints `ready` once every socket is bound.
const BACKEND_PY: &str = r#"import socket,sys,threading
tag=sys.argv[1]
def conn(c):
    try:
        c.settimeout(5)
        data=b''
        while b'\r\n\r\n' not in data and len(data)<65536:
            d=c.recv(4096)
            if not d: break
            data+=d
        if b'\r\n\r\n' in data:
            body=('%s %d\n'%(tag,c.getpeername()[1])).encode()
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n'%len(body)+body)
    except OSError:
        pass
    finally:
        c.close()
def tcp(s):
    while True:
        c,_=s.accept()
        threading.Thread(target=conn,args=(c,),daemon=True).start()
def udp(s):
    while True:
        d,a=s.recvfrom(65535)
        s.sendto(tag.encode()+b':'+d,a)
work=[]
for spec in sys.argv[2:]:
    kind,rest=spec.split(':',1); ip,port=rest.rsplit(':',1)
    fam=socket.AF_INET6 if ':' in ip else socket.AF_INET
    if kind=='tcp':
        s=socket.socket(fam,socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
        s.bind((ip,int(port)))
        s.listen(4096)
        work.append((tcp,s))
    else:
        s=socket.socket(fam,socket.SOCK_DGRAM)
        s.bind((ip,int(port)))
        work.append((udp,s))
for f,s in work:
    threading.Thread(target=f,args=(s,),daemon=True).start()
print('ready',flush=True)
threading.Event().wait()
"#;

// === clients ===

/// `total` HTTP requests with `Connection: close` (a new connection each), sequentially, to
/// `argv[2]` (`ip:port`, or several separated by `,` used in turn), at most `argv[3]` seconds in
/// all. Prints one JSON object: `answers` `[[tag, backend-seen peer port, own local port], …]`,
/// `errors` `[[errno, text], …]`.
const HTTP_CLIENT_PY: &str = r#"import socket,sys,json,time,errno
total=int(sys.argv[1]); targets=[(t.rsplit(':',1)[0].strip('[]'),int(t.rsplit(':',1)[1])) for t in sys.argv[2].split(',')]
deadline=time.time()+float(sys.argv[3])
answers=[]; errors=[]
for k in range(total):
    if time.time()>deadline: break
    t=targets[k%len(targets)]
    s=socket.socket(socket.AF_INET6 if ':' in t[0] else socket.AF_INET,socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect(t)
        local=s.getsockname()[1]
        s.sendall(b'GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        raw=b''
        while True:
            d=s.recv(4096)
            if not d: break
            raw+=d
        body=raw.split(b'\r\n\r\n',1)[1].decode().split()
        answers.append([body[0],int(body[1]),local])
    except OSError as e:
        errors.append([e.errno or 0,str(e)])
    except Exception as e:
        errors.append([0,repr(e)])
    finally:
        s.close()
print(json.dumps({'answers':answers,'errors':errors}))
"#;

/// Outcome of [`HTTP_CLIENT_PY`].
#[derive(Debug, Default)]
struct Tally {
    /// Answers per backend tag.
    by_tag: BTreeMap<String, usize>,
    /// Answers whose backend saw another peer port than the client's own (proxied).
    proxied: usize,
    /// `(errno, text)` of failed requests.
    errors: Vec<(i64, String)>,
}

impl Tally {
    fn parse(out: &str) -> Tally {
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {out}"));
        let mut t = Tally::default();
        for a in v["answers"].as_array().into_iter().flatten() {
            let tag = a[0].as_str().unwrap_or("?").to_string();
            *t.by_tag.entry(tag).or_default() += 1;
            if a[1] != a[2] {
                t.proxied += 1;
            }
        }
        for e in v["errors"].as_array().into_iter().flatten() {
            t.errors.push((
                e[0].as_i64().unwrap_or(0),
                e[1].as_str().unwrap_or("").into(),
            ));
        }
        t
    }

    fn count(&self, tag: &str) -> usize {
        self.by_tag.get(tag).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.by_tag.values().sum()
    }

    /// No error, only `tags`, each within `tolerance` (relative) of an even share, and every
    /// connection straight from the client to the backend.
    fn assert_even(&self, what: &str, tags: &[&str], tolerance: f64) {
        assert!(self.errors.is_empty(), "{what}: failed: {:?}", self.errors);
        let total = self.total() as f64;
        let even = 1.0 / tags.len() as f64;
        for tag in tags {
            let share = self.count(tag) as f64 / total;
            assert!(
                (share - even).abs() <= even * tolerance,
                "{what}: {tag} has {share:.3} of {total} answers, want {even:.3} ± {:.0} % ({:?})",
                tolerance * 100.0,
                self.by_tag
            );
        }
        let known: usize = tags.iter().map(|t| self.count(t)).sum();
        assert_eq!(
            known,
            self.total(),
            "{what}: unknown backends: {:?}",
            self.by_tag
        );
        assert_eq!(
            self.proxied, 0,
            "{what}: connections that did not come straight from the client (proxied)"
        );
    }
}

/// Connects to `argv[1]` (`ip:port`, IPv4 or `[v6]:port`) and prints JSON: `errno` (0 on
/// success), `ms` (time to the connect's outcome), `peer` (getpeername), `local` port, and for a
/// success the backend's answer `[tag, peer port]`.
const CONNECT_PY: &str = r#"import socket,sys,json,time
t=sys.argv[1]; host,port=t.rsplit(':',1); host=host.strip('[]')
fam=socket.AF_INET6 if ':' in host else socket.AF_INET
s=socket.socket(fam,socket.SOCK_STREAM); s.settimeout(3)
out={'errno':0}
t0=time.monotonic()
try:
    s.connect((host,int(port)))
    out['ms']=(time.monotonic()-t0)*1000
    p=s.getpeername(); out['peer']=[p[0],p[1]]; out['local']=s.getsockname()[1]
    try:
        s.sendall(b'GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        raw=b''
        while True:
            d=s.recv(4096)
            if not d: break
            raw+=d
        b=raw.split(b'\r\n\r\n',1)[1].decode().split()
        out['answer']=[b[0],int(b[1])]
    except Exception as e:
        out['answer_error']=repr(e)
except socket.timeout:
    out['ms']=(time.monotonic()-t0)*1000; out['errno']=-1; out['error']='timeout'
except OSError as e:
    out['ms']=(time.monotonic()-t0)*1000; out['errno']=e.errno; out['error']=str(e)
print(json.dumps(out))
"#;

/// UDP through `argv[1]`: `argv[2]` unconnected sockets, each sending two datagrams with
/// `sendto` and printing where each answer came from (recvfrom), then one connected socket
/// (`send`/`recv`, getpeername). JSON: `unconnected` `[[socket, n, answer, from ip, from port]]`,
/// `connected` `[answer, peer ip, peer port]`.
const UDP_CLIENT_PY: &str = r#"import socket,sys,json
host,port=sys.argv[1].rsplit(':',1); host=host.strip('[]'); vip=(host,int(port)); n=int(sys.argv[2])
fam=socket.AF_INET6 if ':' in host else socket.AF_INET
un=[]
for i in range(n):
    s=socket.socket(fam,socket.SOCK_DGRAM); s.settimeout(3)
    for k in range(2):
        p=('s%d-%d'%(i,k)).encode()
        s.sendto(p,vip)
        d,a=s.recvfrom(2048)
        un.append([i,k,d.decode(),a[0],a[1]])
    s.close()
s=socket.socket(fam,socket.SOCK_DGRAM); s.settimeout(3)
s.connect(vip); s.send(b'c'); d=s.recv(2048); p=s.getpeername()
print(json.dumps({'unconnected':un,'connected':[d.decode(),p[0],p[1]]}))
"#;

/// One connect to each `ip:port` line of file `argv[1]`, sending a request and reading the
/// backend's tag, which must equal the line's second word. JSON: `ok`, `failed`, first `errors`,
/// `seconds`.
const MANY_CONNECTS_PY: &str = r#"import socket,sys,json,time
lines=[l.split() for l in open(sys.argv[1]) if l.strip()]
ok=0; errors=[]; t0=time.monotonic()
for target,want in lines:
    host,port=target.rsplit(':',1)
    s=socket.socket(socket.AF_INET,socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((host,int(port)))
        s.sendall(b'GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        raw=b''
        while True:
            d=s.recv(4096)
            if not d: break
            raw+=d
        tag=raw.split(b'\r\n\r\n',1)[1].decode().split()[0]
        if tag==want: ok+=1
        else: errors.append([target,'answered by %s, want %s'%(tag,want)])
    except Exception as e:
        errors.append([target,repr(e)])
    finally:
        s.close()
print(json.dumps({'ok':ok,'failed':len(errors),'errors':errors[:20],'seconds':time.monotonic()-t0}))
"#;

/// A started command whose output is collected on threads; killed on drop unless waited for.
struct Running {
    child: std::process::Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped")));
        let err = drain(Box::new(child.stderr.take().expect("piped")));
        Running {
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    /// Waits at most `within` (then kills it): (status, stdout, stderr).
    fn wait_within(mut self, within: Duration) -> (Option<ExitStatus>, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        (status, join(self.out.take()), join(self.err.take()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `cmd` with piped output for at most `within` (then kills it): (status, stdout, stderr).
fn output_within(cmd: Command, within: Duration) -> (Option<ExitStatus>, String, String) {
    Running::spawn(cmd).wait_within(within)
}

// === bpftool ===

/// `bpftool -j <args>` as JSON (panics with its stderr on failure).
fn bpftool_json(args: &[&str]) -> Value {
    let mut c = Command::new("bpftool");
    c.arg("-j").args(args);
    let (status, out, err) = output_within(c, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "bpftool {args:?} failed ({status:?}): {err}{out}"
    );
    if out.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool {args:?}: not JSON ({e}): {out}"))
}

/// `bpftool` without JSON, panicking on failure.
fn bpftool(args: &[&str]) -> String {
    let mut c = Command::new("bpftool");
    c.args(args);
    let (status, out, err) = output_within(c, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "bpftool {args:?} failed ({status:?}): {err}{out}"
    );
    out
}

/// Programs attached to exactly this cgroup (`bpftool cgroup show`): (name, attach type).
fn attached(cg: &CgroupGuard) -> Vec<(String, String)> {
    let path = cg.path.display().to_string();
    let v = bpftool_json(&["cgroup", "show", &path]);
    let mut list: Vec<(String, String)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                p["attach_type"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    list.sort();
    list
}

// === impl Env ===

/// One test's world. Field order is drop order: ferryman, backends, namespace, pins, cgroup.
struct Env {
    fm: Option<Ferryman>,
    /// Backend `i` (python3 [`BACKEND_PY`], tag `b<i>`) on [`backend_ip`]`(i)`, TCP on
    /// [`HTTP_PORT`] and UDP on [`UDP_PORT`].
    backends: Vec<Proc>,
    ns: Netns,
    pins: PinDir,
    cg: CgroupGuard,
    /// Holds `apps.json` (absolute path in the config, so a restarted ferryman reads the same
    /// file) and logs.
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl Env {
    /// The cgroup, namespace and pin directory; `None` (skip) when the tests cannot run here.
    fn new() -> Option<Env> {
        if !available() {
            return None;
        }
        let cg = CgroupGuard::create();
        let pins = PinDir::new().expect("bpffs (checked by available)");
        // `fm-<pid>-…`: netns.rs sweeps namespaces of dead test processes by this pattern.
        let name = cgroup::unique_name();
        let n = name.rsplit('-').next().unwrap_or("0");
        let ns = Netns::create(&format!("fm-{}-e{n}", std::process::id()));
        Some(Env {
            fm: None,
            backends: Vec::new(),
            ns,
            pins,
            cg,
            dir: tempfile::tempdir().expect("a temporary directory"),
            python: harness::tool("python3").expect("checked by available"),
        })
    }

    /// Starts backends `b0…b{n-1}` on 127.0.0.2… (TCP and UDP).
    fn start_backends(&mut self, n: usize) {
        let ips: Vec<IpAddr> = (0..n).map(|i| backend_ip(i).into()).collect();
        self.start_backends_at(&ips);
    }

    /// Adds fd00:1::2… (`n` of them, [`backend_ip6`]) to the namespace's `lo`.
    fn add_v6_addresses(&self, n: usize) {
        for i in 0..n {
            let a = format!("{}/128", backend_ip6(i));
            self.ns.ip(&["-6", "addr", "add", &a, "dev", "lo", "nodad"]);
        }
    }

    /// Starts backend `b<i>` on `ips[i]` (TCP and UDP).
    fn start_backends_at(&mut self, ips: &[IpAddr]) {
        for (i, ip) in ips.iter().enumerate() {
            let tag = format!("b{i}");
            let log = self.dir.path().join(format!("{tag}.log"));
            let proc = self.ns.spawn(
                &self.python.display().to_string(),
                &[
                    "-u",
                    "-c",
                    BACKEND_PY,
                    &tag,
                    &format!("tcp:{ip}:{HTTP_PORT}"),
                    &format!("udp:{ip}:{UDP_PORT}"),
                ],
                &log,
            );
            let deadline = Instant::now() + BACKEND_START;
            while !proc.log().contains("ready") {
                assert!(
                    Instant::now() < deadline,
                    "backend {tag} did not start: {}",
                    proc.log()
                );
                sleep(Duration::from_millis(20));
            }
            self.backends.push(proc);
        }
    }

    /// Kills backend `i`'s process: connections to it are refused from now on.
    fn kill_backend(&mut self, i: usize) {
        self.backends[i].kill();
    }

    fn apps_path(&self) -> PathBuf {
        self.dir.path().join("apps.json")
    }

    /// Replaces the state file (a temporary name, then rename: never half a file).
    fn write_apps(&self, apps: &[App]) {
        self.write_apps_raw(&apps_json(apps));
    }

    fn write_apps_raw(&self, bytes: &[u8]) {
        let tmp = self.dir.path().join("apps.json.tmp");
        std::fs::write(&tmp, bytes).expect("write apps.json.tmp");
        std::fs::rename(&tmp, self.apps_path()).expect("rename apps.json");
    }

    /// The config: file source, `l4.mode = mode` on this test's cgroup and pin directory, no VIP
    /// link, plus `l4_extra` lines.
    fn config(&self, mode: &str, l4_extra: &str) -> String {
        format!(
            "[discovery]\nsource = \"file\"\nfile = \"{}\"\n\n[l4]\nmode = \"{mode}\"\n\
             cgroup = \"{}\"\nbpf_pin_dir = \"{}\"\nlink = \"\"\n{l4_extra}\n",
            self.apps_path().display(),
            self.cg.path.display(),
            self.pins.path.display()
        )
    }

    /// [`Env::config`] with a VIP link ([`Env::link_name`]) in the test namespace: the user-space
    /// path listens on the VIP addresses there (for VIPs the maps refused), and its pools hold
    /// the VIP backends (which active checks need).
    fn config_with_link(&self, mode: &str, l4_extra: &str) -> String {
        let plain = self.config(mode, l4_extra);
        let linked = plain.replace(
            "link = \"\"\n",
            &format!("link = \"{}\"\n", self.link_name()),
        );
        assert_ne!(plain, linked);
        linked
    }

    /// `nsenter --net=<ns>`: ferryman in the test namespace with the host's mounts.
    fn nsenter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/var/run/netns/{}", self.ns.name),
        ]
    }

    /// Starts ferryman with `config` (see [`Env::config`]) in the test namespace and waits until
    /// it is ready.
    fn start(&mut self, config: &str) {
        let prefix = self.nsenter();
        self.start_prefixed(&prefix, config);
    }

    fn start_prefixed(&mut self, prefix: &[String], config: &str) {
        assert!(self.fm.is_none(), "ferryman already runs");
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let fm = Ferryman::start_with_prefix(&prefix, config, &[]);
        self.ns.block_on(|| fm.wait_ready(CONVERGE));
        self.fm = Some(fm);
    }

    fn fm(&self) -> &Ferryman {
        self.fm.as_ref().expect("ferryman runs")
    }

    fn logs(&self) -> String {
        self.fm.as_ref().map(Ferryman::logs).unwrap_or_default()
    }

    /// Stops ferryman gracefully (SIGTERM), asserting a clean exit within 15 s; returns its logs.
    fn stop(&mut self) -> String {
        let mut fm = self.fm.take().expect("ferryman runs");
        let status = fm.terminate(Duration::from_secs(15));
        let logs = fm.logs();
        assert!(
            status.is_some_and(|s| s.success()),
            "ferryman did not exit cleanly on SIGTERM ({status:?}):\n{logs}"
        );
        logs
    }

    /// GET on ferryman's admin listener (inside the namespace).
    fn admin(&self, path: &str) -> harness::HttpResponse {
        let fm = self.fm();
        self.ns.block_on(|| fm.get(path))
    }

    fn metrics(&self) -> String {
        self.admin("/metrics").body
    }

    /// The sample value of `series` (a metric name with its label set, as printed, or a prefix
    /// ending inside the braces).
    fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// `/v1/vips` as JSON.
    fn vips(&self) -> Vec<Value> {
        let body = self.admin("/v1/vips").body;
        let v: Value = serde_json::from_str(&body).expect("/v1/vips is JSON");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The `/v1/vips` entry of `protocol` `vip`.
    fn vip(&self, protocol: &str, vip: SocketAddr) -> Option<Value> {
        find_vip(&self.vips(), protocol, vip)
    }

    /// Polls `/v1/vips` until `pred` holds (at most [`CONVERGE`]).
    fn wait_vips(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let vips = self.vips();
            if pred(&vips) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/v1/vips never showed {what} within {CONVERGE:?}; last: {}\nferryman:\n{}",
                serde_json::to_string_pretty(&vips).unwrap_or_default(),
                self.logs()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/v1/vips` says `vip` is served by the eBPF path.
    fn wait_ebpf(&self, protocol: &str, vip: SocketAddr) {
        self.wait_vips(&format!("{protocol} {vip} with \"path\": \"ebpf\""), |v| {
            find_vip(v, protocol, vip).is_some_and(|e| e["path"] == "ebpf")
        });
    }

    /// A command running `program` in the cgroup and the namespace.
    fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.cg.command(&self.ns.name, program);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// Runs python3 `script args…` in the cgroup and the namespace; its stdout (panics, with
    /// ferryman's log, when it fails or outlives [`CLIENT_WITHIN`]).
    fn py(&self, script: &str, args: &[&str]) -> String {
        let mut c = self.client_command(&self.python);
        c.arg("-c").arg(script).args(args);
        let (status, out, err) = output_within(c, CLIENT_WITHIN);
        assert!(
            status.is_some_and(|s| s.success()),
            "client failed ({status:?}): {err}{out}\nferryman:\n{}",
            self.logs()
        );
        out
    }

    /// Starts python3 `script args…` in the cgroup and the namespace (see [`Env::py`]).
    fn spawn_py(&self, script: &str, args: &[&str]) -> Running {
        let mut c = self.client_command(&self.python);
        c.arg("-c").arg(script).args(args);
        Running::spawn(c)
    }

    /// `total` HTTP requests, a new connection each, to `targets` in turn.
    fn http_load(&self, targets: &[SocketAddr], total: usize) -> Tally {
        let list: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
        Tally::parse(&self.py(HTTP_CLIENT_PY, &[&total.to_string(), &list.join(","), "50"]))
    }

    /// One connect to `target` from the cgroup ([`CONNECT_PY`]).
    fn connect(&self, target: &str) -> Value {
        serde_json::from_str(self.py(CONNECT_PY, &[target]).trim()).expect("client JSON")
    }

    /// Polls single connects until one to `target` is answered by a backend (at most
    /// [`CONVERGE`]).
    fn wait_serving(&self, target: &str) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let r = self.connect(target);
            if r["answer"].is_array() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{target} not served from the cgroup within {CONVERGE:?}: {r}\nferryman:\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Drops everything (ferryman, backends, namespace, pins, cgroup) and checks that nothing
    /// of it is left.
    fn finish(self) {
        let (ns, pins, cg) = (
            self.ns.name.clone(),
            self.pins.path.clone(),
            self.cg.path.clone(),
        );
        drop(self);
        assert!(
            !pins.exists(),
            "pin directory {} left behind",
            pins.display()
        );
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
        assert!(
            !Path::new(&format!("/var/run/netns/{ns}")).exists(),
            "namespace {ns} left behind"
        );
    }
}

/// The `/v1/vips` entry of `protocol` `vip` in `vips`.
fn find_vip(vips: &[Value], protocol: &str, vip: SocketAddr) -> Option<Value> {
    vips.iter()
        .find(|v| {
            v["protocol"] == protocol && v["ip"] == vip.ip().to_string() && v["port"] == vip.port()
        })
        .cloned()
}

/// The value of the first sample line of `body` starting with `series` (`name{labels…` or a
/// bare name).
fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(series)
                && (series.contains('{') || l[series.len()..].starts_with([' ', '{']))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

// === tests ===

/// The infrastructure itself: a process started through the guard runs in the child cgroup and
/// the namespace; dropping the guards (here while unwinding from a panic) kills it and removes
/// the cgroup, the namespace and the pin directory.
#[test]
fn guards_create_move_and_remove_even_on_panic() {
    if !available() {
        return;
    }
    let cg = CgroupGuard::create();
    let pins = PinDir::new().expect("bpffs");
    let ns = Netns::create(&format!("fm-{}-eguard", std::process::id()));
    let (cg_path, pin_path, ns_name) = (cg.path.clone(), pins.path.clone(), ns.name.clone());
    assert!(cg_path.starts_with(cgroup::cgroup2_mount().expect("cgroup2")));
    assert_ne!(
        Some(cg_path.as_path()),
        cgroup::cgroup2_mount().as_deref(),
        "never the root cgroup"
    );
    std::fs::create_dir(&pin_path).expect("mkdir on bpffs");
    std::fs::create_dir(pin_path.join("sub")).expect("mkdir on bpffs");

    let mut child = cg
        .command(&ns.name, "sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cg.procs().contains(&pid) {
        assert!(Instant::now() < deadline, "sleep never joined the cgroup");
        sleep(Duration::from_millis(10));
    }
    // Same network namespace as the named one (inode of /proc/<pid>/ns/net); the pid is
    // sleep's own once `ip netns exec` has exec'd it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ns_ino = std::fs::metadata(format!("/var/run/netns/{ns_name}")).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "sleep") {
            break;
        }
        assert!(Instant::now() < deadline, "sleep never exec'd: {exe:?}");
        sleep(Duration::from_millis(10));
    }
    let proc_ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(
        proc_ino.ok(),
        ns_ino.ok(),
        "the client runs in the test namespace"
    );
    let cgroup_line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let leaf = cg_path
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    assert!(
        cgroup_line
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&leaf)),
        "the client runs in the test cgroup: {cgroup_line}"
    );

    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guards = (ns, pins, cg);
        panic!("a failing test (this panic is expected)");
    }));
    assert!(unwound.is_err());
    let _ = child.wait();
    assert!(!cg_path.exists(), "cgroup removed");
    assert!(!pin_path.exists(), "pin directory removed");
    assert!(
        !Path::new(&format!("/var/run/netns/{ns_name}")).exists(),
        "namespace removed"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the client was killed"
    );
}

/// A client in the cgroup and namespace that dials a VIP while no program is attached gets
/// ENETUNREACH at once: nothing leaves the namespace when a rewrite is missing.
#[test]
fn without_programs_a_vip_is_unreachable_from_the_client() {
    let Some(env) = Env::new() else { return };
    let r = env.connect(WEB_VIP);
    assert_eq!(r["errno"], 101, "ENETUNREACH expected: {r}");
    assert!(attached(&env.cg).is_empty());
    env.finish();
}

// === helpers of the tests below ===

/// Tolerance of a random pick's share (relative to the even share): 3 backends and 600
/// connections give a standard deviation of 11.5 around 200, so ±25 % is more than 4 σ.
const SHARE_TOLERANCE: f64 = 0.25;

/// `/v1/vips`' `path` of each VIP.
const PATH_EBPF: &str = "ebpf";
const PATH_USERSPACE: &str = "userspace";
/// Metric names (the loader's).
const METRIC_INFO: &str = "ferryman_l4_fastpath_info";
const METRIC_REFUSED: &str = "ferryman_l4_fastpath_refused_services";
const METRIC_SERVICES: &str = "ferryman_l4_fastpath_services";
/// The log line of a sync that changed the maps (with `added=`, `elapsed_ms=`).
const SYNCED_LINE: &str = "fastpath synced";
/// The log line of `auto` falling back to user space.
const FALLBACK_LINE: &str = "the eBPF fast path is unavailable";

impl Env {
    /// The named VIP's address once `/v1/vips` lists it.
    fn named_vip(&self, name: &str) -> SocketAddr {
        self.wait_vips(&format!("the named VIP {name}"), |v| {
            v.iter().any(|e| e["name"] == name)
        });
        let vips = self.vips();
        let e = vips
            .iter()
            .find(|e| e["name"] == name)
            .expect("listed (waited for)");
        let ip = e["ip"].as_str().expect("ip is a string");
        let port = e["port"].as_u64().expect("port is a number");
        sock(&format!("{ip}:{port}"))
    }

    /// `curl` in the cgroup: `total` GETs of `http://target/` with `Connection: close` in one
    /// process. Per transfer: (backend tag and the peer port it saw, curl's own local port);
    /// a failed transfer has no answer.
    fn curl(&self, target: SocketAddr, total: usize) -> Vec<(Option<(String, u16)>, u16)> {
        let curl = harness::tool("curl").expect("checked by available");
        let mut c = self.client_command(curl);
        c.args([
            "-s",
            "-g",
            "--noproxy",
            "*",
            "-m",
            "5",
            "-H",
            "Connection: close",
            "-w",
            "\n|%{local_port}\n",
        ]);
        let url = format!("http://{target}/");
        c.args(std::iter::repeat_n(url.as_str(), total));
        let (status, out, err) = output_within(c, CLIENT_WITHIN);
        assert!(status.is_some(), "curl did not finish: {err}");
        let mut transfers = Vec::new();
        let mut answer = None;
        for line in out.lines() {
            if let Some(port) = line.strip_prefix('|') {
                transfers.push((answer.take(), port.trim().parse().unwrap_or(0)));
            } else if let Some((tag, port)) = line.split_once(' ') {
                answer = Some((tag.to_string(), port.trim().parse().unwrap_or(0)));
            }
        }
        assert_eq!(
            transfers.len(),
            total,
            "curl ran every transfer ({status:?}): {err}{out}"
        );
        transfers
    }

    /// Probes with rounds of 30 connections until none lands on `tag` (or fails), at most
    /// [`CONVERGE`]; returns how long that took.
    fn wait_until_avoided(&self, target: SocketAddr, tag: &str) -> Duration {
        let t0 = Instant::now();
        loop {
            let t = self.http_load(&[target], 30);
            if t.count(tag) == 0 && t.errors.is_empty() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < CONVERGE,
                "{tag} still gets new connections to {target} {CONVERGE:?} after the change: \
                 {t:?}\nferryman:\n{}",
                self.logs()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits at most `within` until the maps hold `services` VIPs ([`METRIC_SERVICES`]).
    fn wait_synced(&self, services: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(METRIC_SERVICES) != Some(services as f64) {
            assert!(
                Instant::now() < deadline,
                "{METRIC_SERVICES} never reached {services} (last {:?})\nferryman:\n{}",
                self.metric(METRIC_SERVICES),
                last_lines(&self.logs(), 40)
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// The `l4.link` name for this test (≤ 15 characters, unique).
    fn link_name(&self) -> String {
        let n = self.ns.name.rsplit('e').next().unwrap_or("0");
        format!("fme{:x}x{n}", std::process::id() & 0xf_ffff)
    }
}

/// Tags `b0…b{n-1}`.
fn tags(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("b{i}")).collect()
}

/// Counts per tag of curl transfers, asserting each came straight from curl (the backend saw
/// curl's own local port: the eBPF path, not a proxy) on a connection of its own (the backend
/// closes after each answer; a reused connection would repeat the previous backend and port).
fn curl_tally(what: &str, transfers: &[(Option<(String, u16)>, u16)]) -> BTreeMap<String, usize> {
    let failed = transfers.iter().filter(|t| t.0.is_none()).count();
    assert_eq!(failed, 0, "{what}: {failed} curl transfers failed");
    let mut by_tag = BTreeMap::new();
    let mut previous = None;
    for (answer, local) in transfers {
        let (tag, seen) = answer.as_ref().expect("checked above");
        assert_eq!(
            seen, local,
            "{what}: the backend saw peer port {seen}, curl's socket had {local}: not the client's \
             own connection"
        );
        let this = Some((tag, *local));
        assert_ne!(
            previous, this,
            "{what}: two transfers in a row on one connection"
        );
        previous = this;
        *by_tag.entry(tag.clone()).or_insert(0) += 1;
    }
    by_tag
}

/// Every one of `tags` has a share within ±`tolerance` of an even share, and no other tag
/// answered.
fn assert_even(what: &str, by_tag: &BTreeMap<String, usize>, tags: &[String], tolerance: f64) {
    let total: usize = by_tag.values().sum();
    let even = total as f64 / tags.len() as f64;
    for tag in tags {
        let n = by_tag.get(tag).copied().unwrap_or(0) as f64;
        assert!(
            (n - even).abs() <= even * tolerance,
            "{what}: {tag} got {n} of {total}, want {even:.0} ± {:.0} % ({by_tag:?})",
            tolerance * 100.0
        );
    }
    let known: usize = tags.iter().filter_map(|t| by_tag.get(t)).sum();
    assert_eq!(
        known, total,
        "{what}: answers from other backends: {by_tag:?}"
    );
}

// === the fast path's tests ===

/// Acceptance 1: `curl` from the cgroup to an IP VIP and to a named VIP reaches the three
/// backends directly (each connection is curl's own, rewritten at connect time), spread evenly.
#[test]
fn curl_through_ip_and_named_vips_spreads_over_backends() {
    const REQUESTS: usize = 600;
    let Some(mut env) = Env::new() else { return };
    env.start_backends(3);
    env.write_apps(&[
        App::tcp("/web", WEB_NAMED_LABEL, &[0, 1, 2]),
        App::tcp("/ipweb", WEB_VIP, &[0, 1, 2]),
    ]);
    env.start(&env.config("ebpf", ""));
    let named = env.named_vip(WEB_NAME);
    for vip in [sock(WEB_VIP), named] {
        env.wait_ebpf("tcp", vip);
        env.wait_serving(&vip.to_string());
    }
    for (what, vip) in [("IP VIP", sock(WEB_VIP)), ("named VIP", named)] {
        let what = format!("curl via the {what} {vip}");
        let by_tag = curl_tally(&what, &env.curl(vip, REQUESTS));
        eprintln!("{what}: {by_tag:?}");
        assert_even(&what, &by_tag, &tags(3), SHARE_TOLERANCE);
    }
    assert_eq!(
        env.metric(&format!("{METRIC_INFO}{{path=\"{PATH_EBPF}\"")),
        Some(1.0),
        "{METRIC_INFO} says ebpf"
    );
    env.finish();
}

/// Acceptance 2: unconnected UDP through a VIP (sendmsg rewrite): every answer's source is the
/// VIP (recvmsg rewrite), each socket stays on one backend, sockets spread over the backends; a
/// connected UDP socket's peer is the VIP.
#[test]
fn udp_through_a_vip_answers_from_the_vip() {
    const SOCKETS: usize = 120;
    let Some(mut env) = Env::new() else { return };
    env.start_backends(3);
    env.write_apps(&[App::udp("/echo", ECHO_VIP, &[0, 1, 2])]);
    env.start(&env.config("ebpf", ""));
    let vip = sock(ECHO_VIP);
    env.wait_ebpf("udp", vip);
    let out = env.py(UDP_CLIENT_PY, &[ECHO_VIP, &SOCKETS.to_string()]);
    let v: Value = serde_json::from_str(out.trim()).expect("client JSON");
    let mut per_socket: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in v["unconnected"].as_array().expect("a list") {
        let (socket, n) = (a[0].as_u64().unwrap_or(0), a[1].as_u64().unwrap_or(0));
        let answer = a[2].as_str().unwrap_or("");
        let from = sock(&format!("{}:{}", a[3].as_str().unwrap_or("?"), a[4]));
        assert_eq!(
            from, vip,
            "socket {socket}: the answer's source is the VIP: {a}"
        );
        let (tag, echoed) = answer.split_once(':').expect("tag:payload");
        assert_eq!(echoed, format!("s{socket}-{n}"), "the datagram is echoed");
        per_socket
            .entry(socket)
            .or_default()
            .insert(tag.to_string());
    }
    assert_eq!(per_socket.len(), SOCKETS, "every socket got its answers");
    let mut by_tag = BTreeMap::new();
    for (socket, tags) in &per_socket {
        assert_eq!(
            tags.len(),
            1,
            "socket {socket} stays on one backend: {tags:?}"
        );
        let tag = tags.iter().next().expect("one").clone();
        *by_tag.entry(tag).or_insert(0) += 1;
    }
    eprintln!("UDP sockets per backend: {by_tag:?}");
    // 120 sockets: σ ≈ 5.2 around 40; ±50 % is almost 4 σ.
    assert_even("UDP sockets per backend", &by_tag, &tags(3), 0.5);
    let c = &v["connected"];
    assert!(
        c[0].as_str().is_some_and(|a| a.ends_with(":c")),
        "connected UDP is answered: {c}"
    );
    assert_eq!(
        sock(&format!("{}:{}", c[1].as_str().unwrap_or("?"), c[2])),
        vip,
        "a connected UDP socket's peer is the VIP"
    );
    env.finish();
}

/// Acceptance 3: getpeername() of a TCP socket connected to the VIP shows the VIP, from an
/// IPv4 socket and from a dual-stack IPv6 socket dialling the v4-mapped VIP.
#[test]
fn getpeername_shows_the_vip() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(2);
    env.write_apps(&[App::tcp("/web", WEB_VIP, &[0, 1])]);
    env.start(&env.config("ebpf", ""));
    env.wait_ebpf("tcp", sock(WEB_VIP));
    env.wait_serving(WEB_VIP);
    let mapped = format!("[::ffff:{}]:{}", sock(WEB_VIP).ip(), sock(WEB_VIP).port());
    for (target, want_peer) in [
        (WEB_VIP.to_string(), json!(["11.1.0.1", 80])),
        (mapped.clone(), json!(["::ffff:11.1.0.1", 80])),
    ] {
        let r = env.connect(&target);
        assert_eq!(r["errno"], 0, "connect to {target}: {r}");
        assert_eq!(
            r["peer"], want_peer,
            "getpeername of a socket connected to {target}"
        );
        assert_eq!(
            r["answer"][1], r["local"],
            "{target}: the backend saw this very socket (no proxy): {r}"
        );
    }
    env.finish();
}

/// Acceptance 4 (state file): a backend removed from the state file, then one whose Marathon
/// health result turns false, gets no new connection once the change is applied: 150
/// connections after it, none to it.
#[test]
fn removed_or_unhealthy_backend_gets_no_new_connection() {
    const AFTER: usize = 150;
    let Some(mut env) = Env::new() else { return };
    env.start_backends(3);
    let web = App::tcp("/web", WEB_VIP, &[0, 1, 2]).with_health(true);
    env.write_apps(std::slice::from_ref(&web));
    env.start(&env.config("ebpf", ""));
    let vip = sock(WEB_VIP);
    env.wait_ebpf("tcp", vip);
    env.wait_serving(WEB_VIP);
    let all = env.http_load(&[vip], AFTER);
    all.assert_even("before the changes", &["b0", "b1", "b2"], 0.4);

    // b2 leaves the state file.
    let mut two = web.clone();
    two.tasks.truncate(2);
    env.write_apps(std::slice::from_ref(&two));
    let b2 = format!("{}:{HTTP_PORT}", backend_ip(2));
    env.wait_vips("b2 gone", |v| {
        find_vip(v, "tcp", vip).is_some_and(|e| {
            e["backends"].as_array().is_some_and(|b| {
                b.len() == 2
                    && !b
                        .iter()
                        .any(|b| format!("{}:{}", b["ip"].as_str().unwrap_or(""), b["port"]) == b2)
            })
        })
    });
    let took = env.wait_until_avoided(vip, "b2");
    eprintln!("removed b2: no new connection to it {took:?} after /v1/vips showed the change");
    let t = env.http_load(&[vip], AFTER);
    assert_eq!(t.count("b2"), 0, "removed b2 got connections: {t:?}");
    t.assert_even("after b2 left", &["b0", "b1"], 0.4);

    // b1's Marathon health check fails.
    let mut sick = two.clone();
    sick.tasks[1].alive = Some(false);
    env.write_apps(std::slice::from_ref(&sick));
    let b1 = format!("{}:{HTTP_PORT}", backend_ip(1));
    env.wait_vips("b1 with weight 0", |v| {
        find_vip(v, "tcp", vip).is_some_and(|e| {
            e["backends"].as_array().is_some_and(|b| {
                b.iter().any(|b| {
                    format!("{}:{}", b["ip"].as_str().unwrap_or(""), b["port"]) == b1
                        && b["weight"] == 0
                })
            })
        })
    });
    let took = env.wait_until_avoided(vip, "b1");
    eprintln!("unhealthy b1: no new connection to it {took:?} after /v1/vips showed the change");
    let t = env.http_load(&[vip], AFTER);
    assert!(t.errors.is_empty(), "{t:?}");
    assert_eq!(
        t.by_tag,
        BTreeMap::from([("b0".to_string(), AFTER)]),
        "only b0 is left"
    );
    assert_eq!(t.proxied, 0);
    env.finish();
}

/// Active checks of every backend, quick enough for a test.
const ACTIVE_CHECKS: &str = "active_checks = true\ncheck_interval = \"300ms\"\n\
                             check_timeout = \"200ms\"\ncheck_rise = 2\ncheck_fall = 2";

/// Acceptance 4 (active checks), with a VIP link (the default deployment: the user-space path
/// listens on the VIPs too): b1's server dies; once the checks mark it down, no new connection
/// from the cgroup goes to it (a connection to it would be refused): 150 connections, all
/// answered by b0 and b2, each straight from the client.
#[test]
fn backend_failing_active_checks_gets_no_new_connection() {
    active_check_scenario(true);
}

/// The same without a VIP link (`l4.link = ""`: the fast path alone serves the VIPs).
#[test]
fn backend_failing_active_checks_gets_no_new_connection_without_a_vip_link() {
    active_check_scenario(false);
}

fn active_check_scenario(with_link: bool) {
    const AFTER: usize = 150;
    let Some(mut env) = Env::new() else { return };
    env.start_backends(3);
    env.write_apps(&[App::tcp("/web", WEB_VIP, &[0, 1, 2])]);
    let config = if with_link {
        env.config_with_link("ebpf", ACTIVE_CHECKS)
    } else {
        env.config("ebpf", ACTIVE_CHECKS)
    };
    env.start(&config);
    let vip = sock(WEB_VIP);
    env.wait_ebpf("tcp", vip);
    env.wait_serving(WEB_VIP);
    env.http_load(&[vip], AFTER)
        .assert_even("before the kill", &["b0", "b1", "b2"], 0.4);

    let killed = Instant::now();
    env.kill_backend(1);
    let b1 = format!("{}:{HTTP_PORT}", backend_ip(1));
    env.wait_vips("b1 down", |v| {
        find_vip(v, "tcp", vip).is_some_and(|e| {
            e["backends"].as_array().is_some_and(|b| {
                b.iter().any(|b| {
                    format!("{}:{}", b["ip"].as_str().unwrap_or(""), b["port"]) == b1
                        && b["health"] != "up"
                })
            })
        })
    });
    let took = env.wait_until_avoided(vip, "b1");
    eprintln!(
        "b1 killed: marked down and avoided {:?} after the kill ({took:?} after /v1/vips)",
        killed.elapsed()
    );
    let t = env.http_load(&[vip], AFTER);
    assert!(
        t.errors.is_empty(),
        "connections went to the dead b1 (refused): {:?}",
        t.errors
    );
    t.assert_even("after b1 died", &["b0", "b2"], 0.4);
    env.finish();
}

/// Acceptance 5: 10 000 VIPs (one app each, on four backends) load, and a connect from the
/// cgroup to every one of them reaches the backend of its app. Prints the sync time ferryman
/// logged for them.
#[test]
fn ten_thousand_vips_load_and_each_resolves() {
    const VIPS: usize = 10_000;
    let Some(mut env) = Env::new() else { return };
    env.start_backends(4);
    let vip_of = |i: usize| format!("11.2.{}.{}:80", i / 250, i % 250 + 1);
    let apps: Vec<App> = (0..VIPS)
        .map(|i| App::tcp(&format!("/svc/s{i}"), &vip_of(i), &[i % 4]))
        .collect();
    env.write_apps(&apps);
    let list: String = (0..VIPS)
        .map(|i| format!("{} b{}\n", vip_of(i), i % 4))
        .collect();
    let list_path = env.dir.path().join("vips.txt");
    std::fs::write(&list_path, list).expect("write the VIP list");

    let started = Instant::now();
    env.start(&env.config("ebpf", "max_services = 10240"));
    env.wait_synced(VIPS, Duration::from_secs(60));
    eprintln!(
        "{VIPS} VIPs in the maps {:?} after start",
        started.elapsed()
    );
    let synced: Vec<String> = env
        .logs()
        .lines()
        .filter(|l| l.contains(SYNCED_LINE))
        .map(str::to_string)
        .collect();
    eprintln!("ferryman's sync log lines:\n{}", synced.join("\n"));
    let big = synced
        .iter()
        .find(|l| l.contains(&format!("added={VIPS}")))
        .unwrap_or_else(|| panic!("no `{SYNCED_LINE}` line with added={VIPS}: {synced:?}"));
    let ms: f64 = big
        .split_once("elapsed_ms=")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed_ms in {big}"));
    eprintln!("SYNC TIME for {VIPS} services: {ms:.1} ms (goal <= 100 ms)");
    let on_ebpf = env.vips().iter().filter(|e| e["path"] == PATH_EBPF).count();
    assert_eq!(on_ebpf, VIPS, "/v1/vips: every VIP on the eBPF path");

    let out = env.py(MANY_CONNECTS_PY, &[&list_path.display().to_string()]);
    let r: Value = serde_json::from_str(out.trim()).expect("client JSON");
    eprintln!(
        "{VIPS} connects through {VIPS} VIPs: {} ok, {} failed, {:.1} s",
        r["ok"],
        r["failed"],
        r["seconds"].as_f64().unwrap_or(0.0)
    );
    assert_eq!(r["ok"], VIPS, "every VIP reaches its backend: {r}");
    env.finish();
}

/// Acceptance 6: after a graceful stop the programs stay attached and a VIP keeps working;
/// a restart adopts the pins: still exactly one set of 8 programs on the cgroup, and a change
/// of the state file is applied.
#[test]
fn restart_keeps_vips_working_and_attaches_once() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(3);
    let web = App::tcp("/web", WEB_VIP, &[0, 1, 2]);
    env.write_apps(std::slice::from_ref(&web));
    let config = env.config("ebpf", "");
    env.start(&config);
    let vip = sock(WEB_VIP);
    env.wait_ebpf("tcp", vip);
    env.wait_serving(WEB_VIP);
    let first = attached(&env.cg);
    assert_eq!(first.len(), PROGRAMS, "one set of programs: {first:?}");

    let logs = env.stop();
    assert_eq!(
        attached(&env.cg),
        first,
        "a graceful stop leaves the programs attached"
    );
    let t = env.http_load(&[vip], 60);
    assert!(
        t.errors.is_empty() && t.total() == 60 && t.proxied == 0,
        "the VIP works while ferryman is stopped: {t:?}\nferryman's last run:\n{logs}"
    );

    env.start(&config);
    env.wait_ebpf("tcp", vip);
    let again = attached(&env.cg);
    assert_eq!(
        again.len(),
        PROGRAMS,
        "a restart attaches one set, not two: {again:?}"
    );
    let names: BTreeSet<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    let want: BTreeSet<&str> = ferryman::fastpath::layout::PROGRAMS.into_iter().collect();
    assert_eq!(names, want, "each of the 8 programs once: {again:?}");

    // A change after the restart is applied: b2 leaves, a new VIP appears.
    let mut two = web.clone();
    two.tasks.truncate(2);
    let added = App::tcp("/added", "11.1.0.3:80", &[2]);
    env.write_apps(&[two, added]);
    env.wait_ebpf("tcp", sock("11.1.0.3:80"));
    env.wait_serving("11.1.0.3:80");
    env.wait_until_avoided(vip, "b2");
    let t = env.http_load(&[vip], 90);
    assert_eq!(t.count("b2"), 0, "{t:?}");
    t.assert_even("after the restart and change", &["b0", "b1"], 0.5);

    // A crash (SIGKILL) and a start again, under a client's load: no request fails, the adopted
    // maps keep the last state (b2 stays out), one set of programs again.
    let load = env.spawn_py(HTTP_CLIENT_PY, &["100000", WEB_VIP, "4"]);
    sleep(Duration::from_millis(500));
    drop(env.fm.take());
    sleep(Duration::from_millis(500));
    env.start(&config);
    env.wait_ebpf("tcp", vip);
    let (status, out, err) = load.wait_within(CLIENT_WITHIN);
    assert!(status.is_some_and(|s| s.success()), "{err}");
    let t = Tally::parse(&out);
    eprintln!("load across a crash and restart: {t:?}");
    assert!(t.total() >= 50, "the load ran across the restart: {t:?}");
    assert!(
        t.errors.is_empty(),
        "requests failed across the restart: {t:?}"
    );
    assert_eq!(t.count("b2"), 0, "the adopted maps keep b2 out: {t:?}");
    assert_eq!(t.proxied, 0);
    let after_crash = attached(&env.cg);
    assert_eq!(
        after_crash.len(),
        PROGRAMS,
        "a start after a crash attaches one set: {after_crash:?}"
    );
    env.finish();
}

/// Acceptance 7: `l4.mode = "off"` detaches every program and removes the pin directory; so
/// does `ferryman cleanup`.
#[test]
fn mode_off_and_cleanup_detach_and_remove_pins() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(1);
    env.write_apps(&[App::tcp("/web", WEB_VIP, &[0])]);
    let ebpf = env.config("ebpf", "");
    env.start(&ebpf);
    env.wait_ebpf("tcp", sock(WEB_VIP));
    env.wait_serving(WEB_VIP);
    assert_eq!(attached(&env.cg).len(), PROGRAMS);
    env.stop();

    env.start(&env.config("off", ""));
    let deadline = Instant::now() + CONVERGE;
    while env.pins.path.exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    assert!(
        !env.pins.path.exists(),
        "mode off removes the pin directory (left: {:?})\nferryman:\n{}",
        env.pins.entries(),
        env.logs()
    );
    assert_eq!(
        attached(&env.cg),
        Vec::new(),
        "mode off detaches every program"
    );
    assert_eq!(
        env.connect(WEB_VIP)["errno"],
        101,
        "no rewrite: ENETUNREACH"
    );
    env.stop();

    // Again, removed by `ferryman cleanup` this time.
    env.start(&ebpf);
    env.wait_serving(WEB_VIP);
    assert_eq!(attached(&env.cg).len(), PROGRAMS);
    env.stop();
    let config_path = env.dir.path().join("cleanup.toml");
    std::fs::write(&config_path, &ebpf).expect("write the config");
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferryman"));
    c.arg("cleanup").arg("--config").arg(&config_path);
    let (status, out, err) = output_within(c, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "ferryman cleanup failed ({status:?}): {err}{out}"
    );
    assert!(
        !env.pins.path.exists(),
        "cleanup removes the pin directory: {err}"
    );
    assert_eq!(
        attached(&env.cg),
        Vec::new(),
        "cleanup detaches every program"
    );
    env.finish();
}

/// Acceptance 8 (map full) and 9: with `l4.max_services = 3`, 3 of 5 VIPs go to the maps and 2
/// are refused: logged, counted, `"path": "userspace"` in `/v1/vips`, and served by the
/// user-space proxy (on the VIP link) while the other 3 go straight to the backends. `/metrics`
/// passes `promtool check metrics` with the fast path active.
#[test]
fn vips_over_max_services_stay_on_user_space() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(2);
    let vips: Vec<String> = (1..=5).map(|i| format!("11.3.0.{i}:80")).collect();
    let apps: Vec<App> = vips
        .iter()
        .enumerate()
        .map(|(i, v)| App::tcp(&format!("/app{i}"), v, &[0, 1]))
        .collect();
    env.write_apps(&apps);
    env.start(&env.config_with_link("auto", "max_services = 3"));
    env.wait_vips("5 VIPs, 3 on the eBPF path", |v| {
        let ours: Vec<&Value> = vips
            .iter()
            .filter_map(|s| v.iter().find(|e| e["ip"] == sock(s).ip().to_string()))
            .collect();
        ours.len() == 5 && ours.iter().filter(|e| e["path"] == PATH_EBPF).count() == 3
    });
    let listed = env.vips();
    let (mut kernel, mut user) = (Vec::new(), Vec::new());
    for v in &vips {
        let e = find_vip(&listed, "tcp", sock(v)).expect("listed");
        if e["path"] == PATH_EBPF {
            kernel.push(sock(v));
        } else {
            assert_eq!(e["path"], PATH_USERSPACE, "{e}");
            assert!(
                e["path_reason"].as_str().is_some_and(|r| !r.is_empty()),
                "a refused VIP says why: {e}"
            );
            user.push(sock(v));
        }
    }
    assert_eq!((kernel.len(), user.len()), (3, 2), "{listed:?}");
    env.wait_synced(3, CONVERGE);
    assert_eq!(env.metric(METRIC_REFUSED), Some(2.0), "{METRIC_REFUSED}");
    assert!(
        env.logs().to_lowercase().contains("refus"),
        "the refusal is logged:\n{}",
        env.logs()
    );

    for v in &kernel {
        env.wait_serving(&v.to_string());
        let t = env.http_load(&[*v], 20);
        assert!(
            t.errors.is_empty() && t.proxied == 0,
            "{v} (in the maps) goes straight to a backend: {t:?}"
        );
    }
    for v in &user {
        env.wait_serving(&v.to_string());
        let t = env.http_load(&[*v], 20);
        assert!(
            t.errors.is_empty() && t.proxied == t.total() && t.total() == 20,
            "{v} (refused by the maps) is served by the user-space proxy: {t:?}"
        );
    }

    // Acceptance 9: the metrics with the fast path active are valid exposition text.
    let body = env.metrics();
    assert!(body.contains(METRIC_INFO), "{body}");
    if let Some(promtool) = harness::tool("promtool") {
        let path = env.dir.path().join("metrics.txt");
        std::fs::write(&path, &body).expect("write metrics");
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "'{}' check metrics < '{}'",
            promtool.display(),
            path.display()
        ));
        let (status, out, err) = output_within(c, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "promtool check metrics: {out}{err}\n{body}"
        );
    }
    env.finish();
}

/// Acceptance 8 (no BPF permission): without capabilities, `auto` starts on user space and
/// says why (log, `/v1/vips`, metric); `ebpf` exits non-zero naming the reason. Nothing is
/// attached or pinned either way.
#[test]
fn without_bpf_permission_auto_falls_back_and_ebpf_exits() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(1);
    env.write_apps(&[App::tcp("/web", WEB_VIP, &[0])]);
    let mut prefix = env.nsenter();
    prefix.extend(["setpriv", "--bounding-set=-all", "--inh-caps=-all"].map(String::from));

    env.start_prefixed(&prefix, &env.config("auto", ""));
    assert!(
        env.fm().wait_log(FALLBACK_LINE, CONVERGE).is_some(),
        "no `{FALLBACK_LINE}` line within {CONVERGE:?}:\n{}",
        env.logs()
    );
    env.wait_vips("the VIP on user space", |v| {
        find_vip(v, "tcp", sock(WEB_VIP)).is_some_and(|e| e["path"] == PATH_USERSPACE)
    });
    let e = env.vip("tcp", sock(WEB_VIP)).expect("listed");
    let reason = e["path_reason"].as_str().unwrap_or("").to_string();
    assert!(!reason.is_empty(), "/v1/vips says why: {e}");
    eprintln!("auto without permission: path_reason = {reason:?}");
    assert!(
        env.logs().contains(&reason) || env.logs().to_lowercase().contains("permi"),
        "the log says why:\n{}",
        env.logs()
    );
    assert_eq!(
        env.metric(&format!("{METRIC_INFO}{{path=\"{PATH_USERSPACE}\"")),
        Some(1.0),
        "{METRIC_INFO}:\n{}",
        env.metrics()
    );
    assert_eq!(attached(&env.cg), Vec::new(), "nothing attached");
    assert_eq!(env.pins.entries(), Vec::<String>::new(), "nothing pinned");
    env.stop();

    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let (status, out) =
        harness::run_to_exit(&prefix, &env.config("ebpf", ""), Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "l4.mode = ebpf without permission exits non-zero ({status:?}):\n{out}"
    );
    let lower = out.to_lowercase();
    assert!(
        lower.contains("permi") || lower.contains("eperm"),
        "the exit names the reason:\n{out}"
    );
    eprintln!(
        "ebpf without permission: {status:?}, last lines:\n{}",
        last_lines(&out, 5)
    );
    assert_eq!(attached(&env.cg), Vec::new(), "nothing attached");
    assert_eq!(env.pins.entries(), Vec::<String>::new(), "nothing pinned");
    env.finish();
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `bpftool map show pinned <path>` as JSON.
fn map_info(path: &Path) -> Value {
    bpftool_json(&["map", "show", "pinned", &path.display().to_string()])
}

/// `fm_meta[0].version` of the pinned map.
fn pinned_version(pins: &PinDir) -> u32 {
    let v = bpftool_json(&[
        "map",
        "lookup",
        "pinned",
        &pins.path.join("fm_meta").display().to_string(),
        "key",
        "0",
        "0",
        "0",
        "0",
    ]);
    let bytes: Vec<u8> = v["value"]
        .as_array()
        .expect("value bytes")
        .iter()
        .map(|b| {
            let s = b.as_str().unwrap_or("0x0").trim_start_matches("0x");
            u8::from_str_radix(s, 16).unwrap_or(0)
        })
        .collect();
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// Acceptance 8 (older layout): maps pinned by an older layout (an `fm_meta` saying version 0,
/// an `fm_services` with another key size) are replaced, and the VIP works; later, maps of the
/// right shape whose `fm_meta` says version 0 are replaced too.
#[test]
fn pinned_maps_of_an_older_layout_are_replaced() {
    let Some(mut env) = Env::new() else { return };
    env.start_backends(2);
    env.write_apps(&[App::tcp("/web", WEB_VIP, &[0, 1])]);
    std::fs::create_dir(&env.pins.path).expect("create the pin directory");
    let meta = env.pins.path.join("fm_meta");
    let services = env.pins.path.join("fm_services");
    for args in [
        [
            &meta.display().to_string(),
            "array",
            "4",
            "8",
            "1",
            "fm_meta",
        ],
        [
            &services.display().to_string(),
            "hash",
            "8",
            "16",
            "16",
            "fm_services",
        ],
    ] {
        bpftool(&[
            "map", "create", args[0], "type", args[1], "key", args[2], "value", args[3], "entries",
            args[4], "name", args[5],
        ]);
    }
    assert_eq!(pinned_version(&env.pins), 0);
    let config = env.config("ebpf", "");
    env.start(&config);
    env.wait_ebpf("tcp", sock(WEB_VIP));
    env.wait_serving(WEB_VIP);
    assert_eq!(
        pinned_version(&env.pins),
        1,
        "fm_meta rewritten by this build"
    );
    assert_eq!(
        map_info(&services)["bytes_key"],
        std::mem::size_of::<ferryman::fastpath::layout::ServiceKey>(),
        "fm_services recreated with this build's key"
    );
    assert!(
        env.fm()
            .wait_log("replacing pinned BPF state", Duration::ZERO)
            .is_some(),
        "the replacement is logged:\n{}",
        env.logs()
    );
    env.stop();

    // Right shapes, older version number.
    let old_id = map_info(&services)["id"].clone();
    bpftool(&[
        "map",
        "update",
        "pinned",
        &meta.display().to_string(),
        "key",
        "0",
        "0",
        "0",
        "0",
        "value",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
    ]);
    env.start(&config);
    env.wait_ebpf("tcp", sock(WEB_VIP));
    env.wait_serving(WEB_VIP);
    assert_ne!(map_info(&services)["id"], old_id, "fm_services replaced");
    assert_eq!(pinned_version(&env.pins), 1);
    assert!(
        env.fm()
            .wait_log("layout version 0", Duration::ZERO)
            .is_some(),
        "the reason is logged:\n{}",
        env.logs()
    );
    let t = env.http_load(&[sock(WEB_VIP)], 30);
    assert!(t.errors.is_empty() && t.proxied == 0, "{t:?}");
    assert_eq!(attached(&env.cg).len(), PROGRAMS);
    env.finish();
}

/// Acceptance 8 (no healthy backend): a connect to a VIP whose backends are all down (active
/// checks fail: the backends are unroutable addresses) fails at once with ECONNREFUSED. A
/// missed refusal could not look the same: unrewritten, the connect reaches the user-space
/// listener on the VIP link (it succeeds); rewritten to a backend, it fails with ENETUNREACH.
/// (Marathon health results cannot make every backend unhealthy: when all are, the model gives
/// them all weight 1 again, as dcos-net does.)
#[test]
fn vip_without_healthy_backend_refuses_at_once() {
    let Some(mut env) = Env::new() else { return };
    let dead_vip = sock("11.4.0.1:80");
    let dead = App {
        id: "/dead".into(),
        protocol: "tcp",
        vip: dead_vip.to_string(),
        tasks: (1..=2)
            .map(|i| Task {
                ip: Ipv4Addr::new(10, 255, 0, i).into(),
                port: 80,
                alive: None,
            })
            .collect(),
    };
    env.write_apps(&[dead]);
    env.start(&env.config_with_link("ebpf", ACTIVE_CHECKS));
    env.wait_ebpf("tcp", dead_vip);
    env.wait_vips("both backends down", |v| {
        find_vip(v, "tcp", dead_vip).is_some_and(|e| {
            e["backends"]
                .as_array()
                .is_some_and(|b| b.len() == 2 && b.iter().all(|b| b["health"] != "up"))
        })
    });
    // The sync follows the verdicts within its tick.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let r = env.connect(&dead_vip.to_string());
        if r["errno"] == ECONNREFUSED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a connect to {dead_vip} is not refused {CONVERGE:?} after its backends went down:              {r}\nferryman:\n{}",
            env.logs()
        );
        sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let r = env.connect(&dead_vip.to_string());
        assert_eq!(r["errno"], ECONNREFUSED, "ECONNREFUSED: {r}");
        let ms = r["ms"].as_f64().unwrap_or(f64::MAX);
        assert!(
            ms < 200.0,
            "refused at once (well under 1 s), took {ms} ms: {r}"
        );
    }
    let refused = env.metric(&format!(
        "ferryman_l4_fastpath_refused_connections_total{{vip=\"tcp://{dead_vip}\"}}"
    ));
    assert!(
        refused.is_some_and(|n| n >= 6.0),
        "refusals counted: {refused:?}"
    );
    env.finish();
}

/// IPv6: an IPv6 IP VIP (`VIP_0 = fd01:c::10:80`, TCP and UDP) on IPv6 backends; curl reaches
/// both backends straight (connect6), getpeername shows the VIP (getpeername6), UDP answers come
/// from the VIP (sendmsg6/recvmsg6).
#[test]
fn ipv6_vip_reaches_ipv6_backends() {
    let Some(mut env) = Env::new() else { return };
    env.add_v6_addresses(2);
    let ips: Vec<IpAddr> = (0..2).map(|i| backend_ip6(i).into()).collect();
    env.start_backends_at(&ips);
    let tcp_vip: SocketAddr = "[fd01:c::10]:80".parse().expect("v6");
    let udp_vip: SocketAddr = "[fd01:c::11]:9000".parse().expect("v6");
    env.write_apps(&[
        App::tcp("/web6", "fd01:c::10:80", &[0]).at(&ips),
        App::udp("/echo6", "fd01:c::11:9000", &[0]).at(&ips),
    ]);
    env.start(&env.config("ebpf", ""));
    env.wait_ebpf("tcp", tcp_vip);
    env.wait_ebpf("udp", udp_vip);
    env.wait_serving(&tcp_vip.to_string());

    let what = format!("curl via the IPv6 VIP {tcp_vip}");
    let by_tag = curl_tally(&what, &env.curl(tcp_vip, 200));
    eprintln!("{what}: {by_tag:?}");
    // 200 connections over 2: σ ≈ 7 around 100; ±30 % is over 4 σ.
    assert_even(&what, &by_tag, &tags(2), 0.3);

    let r = env.connect(&tcp_vip.to_string());
    assert_eq!(r["errno"], 0, "{r}");
    assert_eq!(
        r["peer"],
        json!(["fd01:c::10", 80]),
        "getpeername shows the VIP"
    );

    let out = env.py(UDP_CLIENT_PY, &[&udp_vip.to_string(), "20"]);
    let v: Value = serde_json::from_str(out.trim()).expect("client JSON");
    let answers = v["unconnected"].as_array().expect("a list");
    assert_eq!(answers.len(), 40, "{v}");
    for a in answers {
        assert_eq!(
            (a[3].as_str(), a[4].as_u64()),
            (Some("fd01:c::11"), Some(9000)),
            "the answer's source is the VIP: {a}"
        );
    }
    assert_eq!(v["connected"][1], "fd01:c::11", "{v}");
    env.finish();
}
