//! Upstream fixtures (tests/fixtures/, provenance in its README) decoded and built into a
//! snapshot: the exact VIP set, backends, service ports and rejections, worked out by hand from
//! the JSON. Named-VIP addresses are the SHA-1 slots of `vip::allocate`, computed independently
//! (Python `hashlib`: `11.0.0.0 + 1 + int(sha1(name)[:16], 16) % (2**24 - 2)`).
//!
//! Library-level (no binary is started): `decode::detect` → `Snapshot::build`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ferryman::config::Config;
use ferryman::discovery::decode;
use ferryman::model::{ClusterState, Protocol, RejectReason, Snapshot};

fn fixture(path: &str) -> ClusterState {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let body = std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    decode::detect(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn build(path: &str) -> Snapshot {
    Snapshot::build(
        &Arc::new(fixture(path)),
        &Config::default(),
        &Snapshot::empty(),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// One VIP as (protocol, ip, port, fqdn, [(backend ip, port, weight, task id)]).
type VipView = (
    Protocol,
    IpAddr,
    u16,
    Option<String>,
    Vec<(IpAddr, u16, u32, String)>,
);

fn vips(s: &Snapshot) -> Vec<VipView> {
    s.vips
        .iter()
        .map(|v| {
            (
                v.key.protocol,
                v.key.ip,
                v.key.port,
                v.name.clone(),
                v.backends
                    .iter()
                    .map(|b| (b.ip, b.port, b.weight, b.task_id.to_string()))
                    .collect(),
            )
        })
        .collect()
}

fn named(fqdn: &str) -> Option<String> {
    Some(format!("{fqdn}.l4lb.thisdcos.directory"))
}

/// Checks the named-VIP table: (label, framework, fqdn, IPv4).
fn assert_named(s: &Snapshot, want: &[(&str, &str, &str, &str)]) {
    let got: Vec<(String, String, String, IpAddr)> = s
        .named
        .iter()
        .map(|(k, n)| {
            (
                k.name.clone(),
                k.framework.clone(),
                n.fqdn.clone(),
                IpAddr::V4(n.ipv4),
            )
        })
        .collect();
    let want: Vec<(String, String, String, IpAddr)> = want
        .iter()
        .map(|(n, f, fqdn, a)| {
            (
                n.to_string(),
                f.to_string(),
                format!("{fqdn}.l4lb.thisdcos.directory"),
                ip(a),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(s.named.values().all(|n| n.ipv6.is_none()));
}

/// Mesos 1.0.1 master: the running Docker USER-network task `http-1` on the `dcos` overlay has a
/// discovery port 80 with `VIP_0=1.2.3.4:5000` and `network-scope=container`, and its running
/// status reports 9.0.1.130, so the backend is 9.0.1.130:80 (no host port). `http-bridge`
/// (`VIP_0=http-bridge:80`) is TASK_FINISHED: no backend, so no named VIP at all.
#[test]
fn mesos_master_overlay() {
    let s = build("mesos-master/overlay.json");
    assert_eq!(
        vips(&s),
        vec![(
            Protocol::Tcp,
            ip("1.2.3.4"),
            5000,
            None,
            vec![(
                ip("9.0.1.130"),
                80,
                1,
                "http-1.57d78934-81b7-11e6-a58a-36c411325d20".into()
            )]
        )]
    );
    assert!(s.named.is_empty());
    assert!(s.rejected.is_empty());
    assert_eq!(s.counts.tasks, 2);
    assert_eq!(s.counts.backends, 1);
}

/// Mesos 0.27.1 master: task `sleep` of the second Marathon framework, on agent S0
/// (`slave(1)@10.0.2.234:5051`), host networking; its discovery port 19426 (= its `ports`
/// resource) carries `VIP_0=1.2.3.4:8080`.
#[test]
fn mesos_master_state_di() {
    let s = build("mesos-master/state_di.json");
    assert_eq!(
        vips(&s),
        vec![(
            Protocol::Tcp,
            ip("1.2.3.4"),
            8080,
            None,
            vec![(
                ip("10.0.2.234"),
                19426,
                1,
                "sleep.bf108244-ec7f-11e5-b98e-82ce0fb60967".into()
            )]
        )]
    );
    assert!(s.rejected.is_empty());
}

/// Mesos 0.27.0 master: Docker BRIDGE task `test` with the legacy task label
/// `vip_PORT0=tcp://1.2.3.4:5000`; its `ports` resource is [28027-28027] (port mapping
/// 28027 → 80), agent `slave(1)@10.0.2.4:5051`: backend 10.0.2.4:28027. The finished and killed
/// tasks give nothing.
#[test]
fn mesos_master_docker_legacy_label() {
    let s = build("mesos-master/docker.json");
    assert_eq!(
        vips(&s),
        vec![(
            Protocol::Tcp,
            ip("1.2.3.4"),
            5000,
            None,
            vec![(
                ip("10.0.2.4"),
                28027,
                1,
                "test.6579d29b-a5be-11e5-b87a-0aaf95d09f0f".into()
            )]
        )]
    );
    assert!(s.rejected.is_empty());
}

/// Mesos 0.25.0 master: 34 tasks with `vip_PORT0` labels, only four TASK_RUNNING, all on agent
/// S2 (`slave(1)@33.33.33.1:5051`): `tyler.af307469` [31362] and `tyler.af30c28b` [31634] with
/// `tcp://4.3.2.1:1234`, `greg.c92049c2` [31290] and `greg.c92070d3` [31215] with
/// `tcp://4.3.2.2:1234`. No health checks, so weight 1. Killed and lost tasks are not backends.
#[test]
fn mesos_master_two_healthcheck_free_vips() {
    let s = build("mesos-master/two-healthcheck-free-vips-state.json");
    let agent = ip("33.33.33.1");
    assert_eq!(
        vips(&s),
        vec![
            (
                Protocol::Tcp,
                ip("4.3.2.1"),
                1234,
                None,
                vec![
                    (
                        agent,
                        31362,
                        1,
                        "tyler.af307469-a5b5-11e5-8d4c-0242f982f555".into()
                    ),
                    (
                        agent,
                        31634,
                        1,
                        "tyler.af30c28b-a5b5-11e5-8d4c-0242f982f555".into()
                    ),
                ]
            ),
            (
                Protocol::Tcp,
                ip("4.3.2.2"),
                1234,
                None,
                vec![
                    (
                        agent,
                        31215,
                        1,
                        "greg.c92070d3-a5b8-11e5-8d4c-0242f982f555".into()
                    ),
                    (
                        agent,
                        31290,
                        1,
                        "greg.c92049c2-a5b8-11e5-8d4c-0242f982f555".into()
                    ),
                ]
            ),
        ]
    );
    assert_eq!(s.counts.tasks, 34);
    assert_eq!(s.counts.backends, 4);
    assert!(s.rejected.is_empty());
}

/// minuteman testdata: the running task `catsmeow` carries a malformed label. `invalid-port::1234`
/// splits (last `:`) into host `invalid-port:`, which is no address and, with its `:`, no name;
/// `missing-port` has no `:` at all. Both: no VIP, one `BadFormat` rejection, no panic.
#[test]
fn mesos_master_invalid_and_missing_port() {
    for (file, value) in [
        ("mesos-master/invalid-port.json", "invalid-port::1234"),
        ("mesos-master/missing-port.json", "missing-port"),
    ] {
        let s = build(file);
        assert!(s.vips.is_empty(), "{file}");
        assert!(s.named.is_empty(), "{file}");
        assert_eq!(s.rejected.len(), 1, "{file}");
        let r = &s.rejected[0];
        assert_eq!(r.task_id, "catsmeow.1d28d7c0-1f1c-11e6-bc04-4e40412869d8");
        assert_eq!(r.app_id, None);
        assert_eq!(r.label, format!("VIP_0={value}"));
        assert_eq!(r.reason, RejectReason::BadFormat);
    }
}

/// Mesos 0.28.1 agent state (minuteman `minuteman_mesos_poller_SUITE_data`): the killed task
/// (`VIP_0=1.2.3.4:5000`) gives nothing; the running `catsmeow.6e53a5c1` on 10.0.0.243 with host
/// port 12049 and `VIP_0=merp:5000` makes the named VIP `merp` of framework `marathon`, as in
/// dcos-net's `dcos_l4lb_mesos_poller_SUITE` (`merp:5000` → backend {AgentIP, 12049, 1}).
/// sha1("merp.marathon") → 11.217.250.187.
#[test]
fn mesos_agent_named_base_vips() {
    let s = build("mesos-agent/named-base-vips.json");
    assert_eq!(
        vips(&s),
        vec![(
            Protocol::Tcp,
            ip("11.217.250.187"),
            5000,
            named("merp.marathon"),
            vec![(
                ip("10.0.0.243"),
                12049,
                1,
                "catsmeow.6e53a5c1-1f27-11e6-bc04-4e40412869d8".into()
            )]
        )]
    );
    assert_named(
        &s,
        &[("merp", "marathon", "merp.marathon", "11.217.250.187")],
    );
    assert_eq!(
        s.named.values().next().and_then(|n| n.age_ms),
        Some(1463816489734)
    );
}

/// Mesos 1.4.0 agent: bridge-mode tasks with port mappings and `network-scope=host` VIP ports:
/// UCR `foo` (container 172.31.254.2, host port 29025, `VIP_0=/foo:5000`) and Docker `foo-1`
/// (172.17.0.2, host port 21768, `VIP_0=/foo-1:5000`), agent 10.0.2.5. A host port means agent IP
/// + host port. sha1("foo.marathon") → 11.220.146.185, sha1("foo-1.marathon") → 11.164.57.160.
#[test]
fn mesos_agent_ucr_bridge_mode() {
    let s = build("mesos-agent/ucr-bridge-mode.json");
    assert_eq!(
        vips(&s),
        vec![
            (
                Protocol::Tcp,
                ip("11.164.57.160"),
                5000,
                named("foo-1.marathon"),
                vec![(
                    ip("10.0.2.5"),
                    21768,
                    1,
                    "foo-1.272b2208-6b16-11e7-b302-3edf0088f09a".into()
                )]
            ),
            (
                Protocol::Tcp,
                ip("11.220.146.185"),
                5000,
                named("foo.marathon"),
                vec![(
                    ip("10.0.2.5"),
                    29025,
                    1,
                    "foo.296ecd47-6b12-11e7-b302-3edf0088f09a".into()
                )]
            ),
        ]
    );
    assert_named(
        &s,
        &[
            ("/foo", "marathon", "foo.marathon", "11.220.146.185"),
            ("/foo-1", "marathon", "foo-1.marathon", "11.164.57.160"),
        ],
    );
}

/// Mesos 1.8.0 GET_STATE (dcos-net `tcp_udp_test`): the ports `http` 6416 carry `VIP_0=/app:80`
/// for tcp and for udp; task IP 172.17.0.3 = agent IP, healthy. One named VIP, two protocols.
/// sha1("app.marathon") → 11.141.154.244.
#[test]
fn operator_tcp_and_udp() {
    let s = build("mesos-operator-v1/tcp-and-udp.json");
    let task = "app.80eefa01-d956-11e8-8b68-70b3d5800002".to_string();
    let backend = vec![(ip("172.17.0.3"), 6416, 1, task)];
    assert_eq!(
        vips(&s),
        vec![
            (
                Protocol::Tcp,
                ip("11.141.154.244"),
                80,
                named("app.marathon"),
                backend.clone()
            ),
            (
                Protocol::Udp,
                ip("11.141.154.244"),
                80,
                named("app.marathon"),
                backend
            ),
        ]
    );
    assert_named(
        &s,
        &[("/app", "marathon", "app.marathon", "11.141.154.244")],
    );
}

/// Mesos 1.8.0 GET_STATE (dcos-net `unhealthy_test`: `healthy => false`): the task has a health
/// check but no verdict yet, so its backend 9.0.1.6:80 (overlay, container port) has weight 0;
/// being the VIP's only backend, the all-draining rule lifts it to 1.
/// sha1("foobar.marathon") → 11.123.0.130.
#[test]
fn operator_unhealthy() {
    let s = build("mesos-operator-v1/unhealthy.json");
    assert_eq!(
        vips(&s),
        vec![(
            Protocol::Tcp,
            ip("11.123.0.130"),
            80,
            named("foobar.marathon"),
            vec![(
                ip("9.0.1.6"),
                80,
                1,
                "app.7a5a8aa6-d8be-11e8-9bf3-70b3d5800001".into()
            )]
        )]
    );
    let task = s.state.tasks.values().next().expect("one task");
    assert_eq!(
        (task.healthy, task.has_health_check),
        (None, true),
        "no verdict yet"
    );
}

/// GET_STATE with the task under `launched_tasks` (dcos-net `vip_labels_test`): port `foo` 9999
/// has `/abc:80` and `/cbd:80`, `baz` 10001 has `/xyz:443`; the legacy task labels
/// `vip_port0=tcp://def:80` and `vip_port1=tcp://jkl:80` use the `ports` resource
/// [9999, 10000, 10001, 10002] at index 0 and 1. dcos-net's expectation puts `def:80` on port 9999
/// and `jkl:80` on port 10000; agent and task IP are both 172.17.0.3.
#[test]
fn operator_vip_labels() {
    let s = build("mesos-operator-v1/vip-labels.json");
    let task = "app.c9e19be4-6a94-11e8-bfc9-70b3d5800002";
    let be = |port: u16| vec![(ip("172.17.0.3"), port, 1, task.to_string())];
    assert_eq!(
        vips(&s),
        vec![
            (
                Protocol::Tcp,
                ip("11.38.241.34"),
                80,
                named("def.marathon"),
                be(9999)
            ),
            (
                Protocol::Tcp,
                ip("11.68.236.224"),
                80,
                named("cbd.marathon"),
                be(9999)
            ),
            (
                Protocol::Tcp,
                ip("11.141.204.91"),
                80,
                named("abc.marathon"),
                be(9999)
            ),
            (
                Protocol::Tcp,
                ip("11.148.238.184"),
                80,
                named("jkl.marathon"),
                be(10000)
            ),
            (
                Protocol::Tcp,
                ip("11.224.62.195"),
                443,
                named("xyz.marathon"),
                be(10001)
            ),
        ]
    );
    assert_named(
        &s,
        &[
            ("/abc", "marathon", "abc.marathon", "11.141.204.91"),
            ("/cbd", "marathon", "cbd.marathon", "11.68.236.224"),
            ("/xyz", "marathon", "xyz.marathon", "11.224.62.195"),
            ("def", "marathon", "def.marathon", "11.38.241.34"),
            ("jkl", "marathon", "jkl.marathon", "11.148.238.184"),
        ],
    );
    assert!(s.rejected.is_empty());
}

/// (app, service port, protocol, [(backend ip, port, weight)]) for every service.
type ServiceView = (String, u16, Protocol, Vec<(IpAddr, u16, u32)>);

fn services(s: &Snapshot) -> Vec<ServiceView> {
    s.services
        .iter()
        .map(|sv| {
            (
                sv.app_id.clone(),
                sv.service_port,
                sv.protocol,
                sv.backends
                    .iter()
                    .map(|b| (b.ip, b.port, b.weight))
                    .collect(),
            )
        })
        .collect()
}

/// marathon-lb `tests/zdd_apps.json`: `/nginx-green` (servicePort 10000, 3 tasks on 10.0.6.25,
/// host ports 31184, 16916, 23336) and `/nginx-blue` (servicePort 10001 but
/// `HAPROXY_0_PORT=10000`, one task on 10.0.1.147:25724); every health check result alive. Both
/// apps serve port 10000, as Marathon-LB's blue/green deployment group does. No VIP labels.
#[test]
fn marathon_zdd_service_ports() {
    let s = build("marathon/zdd_apps.json");
    assert!(s.vips.is_empty());
    let green = ip("10.0.6.25");
    assert_eq!(
        services(&s),
        vec![
            (
                "/nginx-blue".into(),
                10000,
                Protocol::Tcp,
                vec![(ip("10.0.1.147"), 25724, 1)]
            ),
            (
                "/nginx-green".into(),
                10000,
                Protocol::Tcp,
                vec![(green, 16916, 1), (green, 23336, 1), (green, 31184, 1)]
            ),
        ]
    );
    assert_eq!(s.counts.services, 2);
    assert_eq!(s.counts.backends, 4);
}

/// marathon-lb `tests/marathon15_apps.json`: `/pywebserver` (container/bridge, servicePort 10101)
/// with one TASK_RUNNING task on 10.0.2.148, host port 1565.
#[test]
fn marathon15_service_port() {
    let s = build("marathon/marathon15_apps.json");
    assert_eq!(
        services(&s),
        vec![(
            "/pywebserver".into(),
            10101,
            Protocol::Tcp,
            vec![(ip("10.0.2.148"), 1565, 1)]
        )]
    );
    assert!(s.vips.is_empty());
}

/// Every fixture the decoder accepts builds without panicking, twice with the same result.
#[test]
fn every_fixture_builds_deterministically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut built = 0;
    for dir in [
        "mesos-master",
        "mesos-agent",
        "mesos-operator-v1",
        "marathon",
        "marathon/marathon-docs",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for path in files
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let Ok(body) = std::fs::read(&path) else {
                continue;
            };
            let Ok(state) = decode::detect(&body) else {
                continue;
            };
            let state = Arc::new(state);
            let config = Config::default();
            let a = Snapshot::build(&state, &config, &Snapshot::empty());
            let b = Snapshot::build(&state, &config, &a);
            assert_eq!(a.vips, b.vips, "{}", path.display());
            assert_eq!(a.named, b.named, "{}", path.display());
            assert_eq!(a.services, b.services, "{}", path.display());
            assert_eq!(a.rejected, b.rejected, "{}", path.display());
            assert_eq!(b.version, 2);
            built += 1;
        }
    }
    assert!(built >= 15, "only {built} fixtures decoded");
}
