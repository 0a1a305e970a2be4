//! DNS against the real binary with real `dig`: Mesos-DNS names for the Mesos fixture
//! `mesos-master/state6.json` and for a Marathon answer, DC/OS VIP names, SOA/NS, NXDOMAIN and
//! NODATA with the SOA, truncation and TCP retry, forwarding to a real `unbound`, SERVFAIL before
//! the first snapshot, and the Mesos-DNS HTTP API.
//!
//! Expected values are worked out from the fixtures by hand, following Mesos-DNS's
//! `records/generator.go`. Canonical names carry the first 5 characters of the z-base-32 encoding
//! of SHA-1(task ID), computed independently in Python (whose encoder gives Mesos-DNS's own test
//! vector, `hashString("test") == "iffe9"`):
//!
//! ```text
//! A = "ybndrfg8ejkmcpqxot1uwisza345h769"
//! bits = ''.join(f'{x:08b}' for x in hashlib.sha1(task_id).digest())
//! ''.join(A[int(bits[i:i+5].ljust(5, '0'), 2)] for i in range(0, len(bits), 5))[:5]
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Ferryman, free_port, tool};

const READY_WITHIN: Duration = Duration::from_secs(20);
/// Bound on one `dig` run (it is also given `+time=2 +tries=1`).
const DIG_TIMEOUT: Duration = Duration::from_secs(10);

const STATE6: &[u8] = include_bytes!("../fixtures/mesos-master/state6.json");
const DEMO_APPS: &[u8] = include_bytes!("../../config/apps.json");

/// One parsed `dig` answer.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: BTreeSet<String>,
    /// (name, ttl, type, data) per record.
    answer: Vec<(String, u32, String, String)>,
    authority: Vec<(String, u32, String, String)>,
    additional: Vec<(String, u32, String, String)>,
    /// dig said it retried over TCP after a truncated UDP answer.
    retried_tcp: bool,
    raw: String,
}

impl Dig {
    /// The data of every answer of type `rtype`, sorted.
    fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.2 == rtype)
            .map(|r| r.3.clone())
            .collect();
        v.sort();
        v
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(flag)
    }
}

fn parse_dig(out: &str) -> Dig {
    let mut d = Dig {
        raw: out.to_string(),
        ..Dig::default()
    };
    let mut section = "";
    for line in out.lines() {
        if let Some(rest) = line.split_once("status: ").map(|(_, r)| r) {
            d.status = rest.split(',').next().unwrap_or("").trim().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if line.contains("Truncated, retrying in TCP mode") {
            d.retried_tcp = true;
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = "";
            }
        } else if !section.is_empty() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let rec = (
                    f[0].to_string(),
                    f[1].parse().unwrap_or(u32::MAX),
                    f[3].to_string(),
                    f[4..].join(" "),
                );
                match section {
                    "answer" => d.answer.push(rec),
                    "authority" => d.authority.push(rec),
                    _ => d.additional.push(rec),
                }
            }
        }
    }
    d
}

/// Runs `dig @server -p port +time=2 +tries=1 <args>` and parses what it printed.
async fn dig(server: std::net::SocketAddr, args: &[&str]) -> Dig {
    let dig = tool("dig").expect("callers check for dig first");
    let mut cmd = tokio::process::Command::new(dig);
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=2", "+tries=1"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DIG_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("dig {args:?} did not finish within {DIG_TIMEOUT:?}"))
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_dig(&text)
}

/// Ferryman on `state6.json` with two configured masters (the leader 192.168.65.90 and
/// 192.168.65.91) and TTL 30.
async fn start_state6(extra: &str) -> Ferryman {
    let config = format!(
        r#"
[discovery]
source = "file"
file = "state.json"
mesos = ["http://192.168.65.90:5050", "http://192.168.65.91:5050"]

[dns]
ttl = 30
{extra}
"#
    );
    let f = Ferryman::start_with(&config, &[("state.json", STATE6)]);
    f.wait_ready(READY_WITHIN).await;
    f
}

/// Polls until `name` resolves (the zone is swapped in just after the snapshot is published).
async fn wait_for_name(f: &Ferryman, name: &str) {
    for _ in 0..100 {
        if dig(f.dns, &[name, "A"]).await.status == "NOERROR" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never resolved; logs:\n{}", f.logs());
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesos_task_names_as_mesos_dns_makes_them() {
    if tool("dig").is_none() {
        return;
    }
    let f = start_state6("").await;
    wait_for_name(&f, "leader.mesos.").await;
    let s = f.dns;

    // Task `test-mesos-cni` (marathon, agent ...-S1 at 192.168.65.111): its container IP from
    // the running status's network_infos (ip_sources default: netinfo first).
    let d = dig(s, &["test-mesos-cni.marathon.mesos", "A", "+norecurse"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.has_flag("aa"), "authoritative: {}", d.raw);
    assert_eq!(d.data("A"), strs(&["192.168.246.11"]), "{}", d.raw);
    assert_eq!(d.answer[0].1, 30, "dns.ttl: {}", d.raw);
    // `.slave.`: the agent's IP.
    let d = dig(s, &["test-mesos-cni.marathon.slave.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.111"]), "{}", d.raw);
    // Canonical name: name-hash-agenttail, hash of "test-mesos-cni.ff2019e6-…" = "hyt7i".
    let d = dig(s, &["test-mesos-cni-hyt7i-s1.marathon.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.246.11"]), "{}", d.raw);
    // Case does not matter; over TCP the same.
    let d = dig(s, &["TEST-Mesos-CNI.Marathon.MESOS", "A", "+tcp"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.246.11"]), "{}", d.raw);

    // `etcd` (marathon) has DiscoveryInfo ports 24618-24620/tcp: SRV without `.slave` to the
    // canonical name and the discovery port; hash of "etcd.28b78f68-…" = "ije4c".
    let d = dig(s, &["_etcd._tcp.marathon.mesos", "SRV"]).await;
    assert_eq!(
        d.data("SRV"),
        strs(&[
            "0 0 24618 etcd-ije4c-s1.marathon.mesos.",
            "0 0 24619 etcd-ije4c-s1.marathon.mesos.",
            "0 0 24620 etcd-ije4c-s1.marathon.mesos.",
        ]),
        "{}",
        d.raw
    );
    // The SRV targets' addresses ride along in the additional section.
    assert!(
        d.additional
            .iter()
            .any(|r| r.0 == "etcd-ije4c-s1.marathon.mesos." && r.3 == "192.168.65.111"),
        "{}",
        d.raw
    );
    // Its `ports` resource: `_etcd._udp` and `_tcp` under `.slave` (protocol unknown → both) to
    // the host ports; with DiscoveryInfo there is no such record without `.slave`.
    let d = dig(s, &["_etcd._udp.marathon.slave.mesos", "SRV"]).await;
    assert_eq!(
        d.data("SRV"),
        strs(&[
            "0 0 24618 etcd-ije4c-s1.marathon.slave.mesos.",
            "0 0 24619 etcd-ije4c-s1.marathon.slave.mesos.",
            "0 0 24620 etcd-ije4c-s1.marathon.slave.mesos.",
        ]),
        "{}",
        d.raw
    );
    let d = dig(s, &["_etcd._udp.marathon.mesos", "SRV"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    // A DiscoveryInfo port with protocol "client" gets `_client`, as Mesos-DNS's chains do.
    let d = dig(s, &["_etcd-server._client.etcd.mesos", "SRV"]).await;
    assert_eq!(d.answer.len(), 1, "{}", d.raw);
    assert!(
        d.answer[0].3.starts_with("0 0 1026 etcd-server-"),
        "{}",
        d.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesos_cluster_names_soa_ns_and_negative_answers() {
    if tool("dig").is_none() {
        return;
    }
    let f = start_state6("").await;
    wait_for_name(&f, "leader.mesos.").await;
    let s = f.dns;

    let d = dig(s, &["leader.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.90"]), "{}", d.raw);
    // masterN in the order of discovery.mesos; master = all of them.
    let d = dig(s, &["master0.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.90"]), "{}", d.raw);
    let d = dig(s, &["master1.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.91"]), "{}", d.raw);
    let d = dig(s, &["master.mesos", "A"]).await;
    assert_eq!(
        d.data("A"),
        strs(&["192.168.65.90", "192.168.65.91"]),
        "{}",
        d.raw
    );
    let d = dig(s, &["_leader._tcp.mesos", "SRV"]).await;
    assert_eq!(
        d.data("SRV"),
        strs(&["0 0 5050 leader.mesos."]),
        "{}",
        d.raw
    );
    let d = dig(s, &["_leader._udp.mesos", "SRV"]).await;
    assert_eq!(
        d.data("SRV"),
        strs(&["0 0 5050 leader.mesos."]),
        "{}",
        d.raw
    );
    // Agents.
    let d = dig(s, &["slave.mesos", "A"]).await;
    assert_eq!(
        d.data("A"),
        strs(&["192.168.65.111", "192.168.65.60"]),
        "{}",
        d.raw
    );
    let d = dig(s, &["_slave._tcp.mesos", "SRV"]).await;
    assert_eq!(d.data("SRV"), strs(&["0 0 5051 slave.mesos."]), "{}", d.raw);
    // Framework: scheduler host and libprocess port from its pid.
    let d = dig(s, &["marathon.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.90"]), "{}", d.raw);
    let d = dig(s, &["_framework._tcp.marathon.mesos", "SRV"]).await;
    assert_eq!(
        d.data("SRV"),
        strs(&["0 0 60390 marathon.mesos."]),
        "{}",
        d.raw
    );

    // SOA and NS of the zone, Mesos-DNS's defaults.
    let d = dig(s, &["mesos", "SOA"]).await;
    let soa = d.data("SOA");
    assert_eq!(soa.len(), 1, "{}", d.raw);
    let fields: Vec<&str> = soa[0].split_whitespace().collect();
    assert_eq!(fields[0], "ns1.mesos.", "{}", d.raw);
    assert_eq!(fields[1], "root.ns1.mesos.", "{}", d.raw);
    assert!(fields[2].parse::<u64>().unwrap() >= 1, "serial: {}", d.raw);
    assert_eq!(&fields[3..], ["60", "600", "86400", "60"], "{}", d.raw);
    let d = dig(s, &["mesos", "NS"]).await;
    assert_eq!(d.data("NS"), strs(&["ns1.mesos."]), "{}", d.raw);

    // Unknown name in our zone: NXDOMAIN, authoritative, SOA in authority.
    let d = dig(s, &["nope.marathon.mesos", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);
    assert_eq!(d.authority.len(), 1, "{}", d.raw);
    assert_eq!(
        (d.authority[0].0.as_str(), d.authority[0].2.as_str()),
        ("mesos.", "SOA"),
        "{}",
        d.raw
    );
    // A name that exists, asked for a type it lacks: NODATA with the SOA.
    let d = dig(s, &["leader.mesos", "AAAA"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);
    assert_eq!(d.authority.first().map(|r| r.2.as_str()), Some("SOA"));
    // Outside our zones with no resolvers: REFUSED.
    let d = dig(s, &["example.com", "A"]).await;
    assert_eq!(d.status, "REFUSED", "{}", d.raw);

    // The queries are counted by type and rcode.
    let m = f.get("/metrics").await.body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("ferryman_dns_queries_total{")
                && l.contains("qtype=\"A\"")
                && l.contains("rcode=\"NXDOMAIN\"")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_names_and_vip_names() {
    if tool("dig").is_none() {
        return;
    }
    let f = Ferryman::start_with(
        "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\n",
        &[("apps.json", DEMO_APPS)],
    );
    f.wait_ready(READY_WITHIN).await;
    wait_for_name(&f, "web.marathon.mesos.").await;
    let s = f.dns;

    // Framework `marathon`; the task name is the app path reversed, one label:
    // /batch/cleanup → `cleanup.batch` → `cleanup-batch`.
    let d = dig(s, &["web.marathon.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["127.0.0.1"]), "{}", d.raw);
    let d = dig(s, &["cleanup-batch.marathon.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["127.0.0.1"]), "{}", d.raw);
    // No DiscoveryInfo: SRV both with and without `.slave`, to the host ports.
    // Hashes: "web.4a1c2e3f-…" = "ttxem", "web.4a1c5550-…" = "uhixb"; agent tail "s0".
    for name in ["_web._tcp.marathon.mesos", "_web._tcp.marathon.slave.mesos"] {
        let d = dig(s, &[name, "SRV"]).await;
        assert_eq!(
            d.data("SRV"),
            strs(&[
                "0 0 8001 web-ttxem-s0.marathon.slave.mesos.",
                "0 0 8002 web-uhixb-s0.marathon.slave.mesos.",
            ]),
            "{name}: {}",
            d.raw
        );
    }
    // No leader or master records from a Marathon source.
    let d = dig(s, &["leader.mesos", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);

    // The named VIP `/web:80` (address worked out in admin.rs's WEB_VIP_IP).
    let d = dig(s, &["web.marathon.l4lb.thisdcos.directory", "A"]).await;
    assert_eq!(d.data("A"), strs(&["11.197.88.173"]), "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    // And its reverse name.
    let d = dig(s, &["-x", "11.197.88.173"]).await;
    assert_eq!(
        d.data("PTR"),
        strs(&["web.marathon.l4lb.thisdcos.directory."]),
        "{}",
        d.raw
    );

    // The Mesos-DNS HTTP API.
    let r = f.get("/v1/hosts/web.marathon.mesos").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"host": "web.marathon.mesos.", "ip": "127.0.0.1"}]),
        "{}",
        r.body
    );
    let r = f.get("/v1/hosts/nothing.marathon.mesos").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!([{"host": "", "ip": ""}]), "{}", r.body);
    let r = f.get("/v1/services/_web._tcp.marathon.mesos").await;
    let mut v: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
    v.sort_by_key(|e| e["port"].as_str().unwrap_or("").to_string());
    assert_eq!(
        serde_json::Value::Array(v),
        serde_json::json!([
            {"service": "_web._tcp.marathon.mesos", "host": "web-ttxem-s0.marathon.slave.mesos.",
             "ip": "127.0.0.1", "port": "8001"},
            {"service": "_web._tcp.marathon.mesos", "host": "web-uhixb-s0.marathon.slave.mesos.",
             "ip": "127.0.0.1", "port": "8002"},
        ]),
        "{}",
        r.body
    );
    let r = f.get("/v1/enumerate").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let fw = &v["frameworks"][0];
    assert_eq!(fw["name"], "marathon", "{}", r.body);
    assert!(
        fw["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "web.4a1c2e3f-efd0-11f0-9a61-0242ac110002"),
        "{}",
        r.body
    );
    let r = f.get("/v1/axfr").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["Domain"], "mesos", "{}", r.body);
    assert_eq!(
        v["Records"]["As"]["web.marathon.mesos."],
        serde_json::json!(["127.0.0.1"]),
        "{}",
        r.body
    );
}

/// A Mesos state with running tasks of the apps `(name, n)` on one agent, task i of app k at
/// 10.k.(i/250).(i%250+1).
fn big_state(apps: &[(&str, usize)]) -> Vec<u8> {
    let mut tasks = Vec::new();
    for (k, (name, n)) in apps.iter().enumerate() {
        for i in 0..*n {
            let ip = task_ip(k, i);
            tasks.push(serde_json::json!({
                "id": format!("{name}.{i:08}-0000-0000-0000-000000000000"),
                "name": name,
                "framework_id": "fw-1",
                "slave_id": "agent-S0",
                "state": "TASK_RUNNING",
                "resources": {"ports": "[31000-31000]"},
                "statuses": [{
                    "state": "TASK_RUNNING",
                    "timestamp": 1.0,
                    "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}
                }]
            }));
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "leader": "master@10.0.0.1:5050",
        "frameworks": [{
            "id": "fw-1", "name": "marathon", "hostname": "10.0.0.1",
            "pid": "scheduler-1@10.0.0.1:40000", "tasks": tasks
        }],
        "slaves": [{"id": "agent-S0", "hostname": "10.0.0.2", "pid": "slave(1)@10.0.0.2:5051"}]
    }))
    .unwrap()
}

fn task_ip(app: usize, i: usize) -> String {
    format!("10.{}.{}.{}", app + 1, i / 250, i % 250 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_truncate_over_udp_and_complete_over_tcp() {
    if tool("dig").is_none() {
        return;
    }
    let f = Ferryman::start_with(
        "[discovery]\nsource = \"file\"\nfile = \"state.json\"\nmesos = []\n",
        &[("state.json", &big_state(&[("big", 100), ("mid", 50)]))],
    );
    f.wait_ready(READY_WITHIN).await;
    wait_for_name(&f, "big.marathon.mesos.").await;
    let s = f.dns;
    let all: BTreeSet<String> = (0..100).map(|i| task_ip(0, i)).collect();
    let mids: BTreeSet<String> = (0..50).map(|i| task_ip(1, i)).collect();

    // 50 A records (~850 bytes): over plain UDP (512 bytes, no EDNS) TC is set and fewer come;
    // an advertised EDNS payload of 1232 bytes carries them all.
    let d = dig(s, &["mid.marathon.mesos", "A", "+noedns", "+ignore"]).await;
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.len() < 50, "{}", d.raw);
    let d = dig(s, &["mid.marathon.mesos", "A", "+bufsize=1232", "+ignore"]).await;
    assert!(!d.has_flag("tc"), "{}", d.raw);
    assert_eq!(d.data("A").into_iter().collect::<BTreeSet<_>>(), mids);
    // 100 A records (~1.7 kB) do not fit in 1232 bytes, our largest UDP answer (DNS Flag Day
    // 2020; an advertised 4096 is clamped to it): TC.
    let d = dig(s, &["big.marathon.mesos", "A", "+bufsize=4096", "+ignore"]).await;
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.len() < 100, "{}", d.raw);
    // dig's default: it sees TC and retries over TCP, which carries all 100.
    let d = dig(s, &["big.marathon.mesos", "A"]).await;
    assert!(d.retried_tcp, "{}", d.raw);
    assert_eq!(d.data("A").into_iter().collect::<BTreeSet<_>>(), all);
    let d = dig(s, &["big.marathon.mesos", "A", "+noedns"]).await;
    assert!(d.retried_tcp, "{}", d.raw);
    assert_eq!(d.answer.len(), 100, "{}", d.raw);
    // +tcp directly.
    let d = dig(s, &["big.marathon.mesos", "A", "+tcp"]).await;
    assert_eq!(d.data("A").into_iter().collect::<BTreeSet<_>>(), all);

    // Answers for one name rotate between queries: the first record is not always the same.
    let mut firsts = BTreeSet::new();
    for _ in 0..6 {
        let d = dig(s, &["mid.marathon.mesos", "A", "+bufsize=1232"]).await;
        firsts.insert(d.answer[0].3.clone());
    }
    assert!(firsts.len() > 1, "answers never rotated: {firsts:?}");
    let m = f.get("/metrics").await.body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("ferryman_dns_truncated_total ") && !l.ends_with(" 0")),
        "{m}"
    );
}

/// A running `unbound` on 127.0.0.1:`port`, authoritative for `example.test.` only
/// (`local-zone: static`), killed on drop.
struct Unbound {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Unbound {
    fn start(unbound: &Path) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-ip6: no
  num-threads: 1
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  local-zone: "example.test." static
  local-data: "www.example.test. 300 IN A 192.0.2.7"
remote-control:
  control-enable: no
"#,
            dir = dir.path().display()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(unbound)
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound");
        Unbound {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_to_unbound() {
    let (Some(_), Some(unbound)) = (tool("dig"), tool("unbound")) else {
        return;
    };
    let upstream = Unbound::start(&unbound);
    let up_addr: std::net::SocketAddr = format!("127.0.0.1:{}", upstream.port).parse().unwrap();
    // Wait until unbound answers.
    let mut up = false;
    for _ in 0..100 {
        if dig(up_addr, &["www.example.test", "A"]).await.status == "NOERROR" {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "unbound did not come up on {up_addr}");

    let f = start_state6(&format!("resolvers = [\"{up_addr}\"]\n")).await;
    wait_for_name(&f, "leader.mesos.").await;
    let s = f.dns;
    let d = dig(s, &["www.example.test", "A"]).await;
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.data("A"), strs(&["192.0.2.7"]), "{}", d.raw);
    assert!(
        d.has_flag("ra"),
        "recursion available with resolvers: {}",
        d.raw
    );
    // (The upstream's flags pass through: unbound is authoritative for its local zone, so `aa`
    // is set, and Mesos-DNS's forwarder passes it on too.)
    assert!(d.answer[0].1 <= 300, "{}", d.raw);
    // Over TCP too.
    let d = dig(s, &["www.example.test", "A", "+tcp"]).await;
    assert_eq!(d.data("A"), strs(&["192.0.2.7"]), "{}", d.raw);
    // unbound's own negative answer comes back as it gave it.
    let d = dig(s, &["nope.example.test", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    // Our names are still ours.
    let d = dig(s, &["leader.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.90"]), "{}", d.raw);
    assert!(d.has_flag("aa") && d.has_flag("ra"), "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_gives_servfail_and_the_server_keeps_answering() {
    if tool("dig").is_none() {
        return;
    }
    // A UDP socket nobody reads: every forwarded query times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let f = start_state6(&format!(
        "resolvers = [\"{addr}\"]\nforward_timeout = \"300ms\"\n"
    ))
    .await;
    wait_for_name(&f, "leader.mesos.").await;
    let started = std::time::Instant::now();
    let d = dig(f.dns, &["example.org", "A"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(started.elapsed() < Duration::from_secs(2), "{d:?}");
    let d = dig(f.dns, &["leader.mesos", "A"]).await;
    assert_eq!(d.data("A"), strs(&["192.168.65.90"]), "{}", d.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_before_the_first_snapshot() {
    if tool("dig").is_none() {
        return;
    }
    // A Marathon source that is never reachable: nothing is ever published.
    let port = free_port();
    let f = Ferryman::start(&format!(
        "[discovery]\nsource = \"marathon\"\nmarathon = [\"http://127.0.0.1:{port}\"]\n"
    ));
    let d = dig(f.dns, &["leader.mesos", "A"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    let d = dig(f.dns, &["leader.mesos", "A", "+tcp"]).await;
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
}
