use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::checks::{self, CheckDiff, CheckSpec, Checker};
use super::*;
use crate::config::{Config, L4Config};
use crate::model::{
    App, Backend, ClusterState, HealthCheck, Protocol, Service, SharedStr, Snapshot, Vip, VipKey,
};

const POLICY: HealthPolicy = HealthPolicy {
    outlier_failures: 3,
    base_ejection_ms: 1_000,
    max_ejection_ms: 8_000,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port)
}

fn state(policy: HealthPolicy) -> BackendState {
    BackendState::with_policy(BackendId(1), addr(80), policy)
}

// === passive outlier detection ===

#[test]
fn ejects_after_n_consecutive_failures() {
    let s = state(POLICY);
    s.report_connect_failure_at(100);
    s.report_connect_failure_at(100);
    assert_eq!(s.health_at(100), Health::Up);
    s.report_connect_failure_at(100);
    assert_eq!(s.health_at(100), Health::Ejected);
    assert!(!s.is_up_at(1_099));
    assert_eq!(s.ejected_until(), Some(1_100));
    assert_eq!(s.health_at(1_100), Health::Probing);
    assert!(s.is_up_at(1_100));
    assert_eq!(s.connect_failures.load(Ordering::Relaxed), 3);
    assert_eq!(s.ejections.load(Ordering::Relaxed), 1);
    // Failures while ejected change nothing but the counter.
    s.report_connect_failure_at(500);
    assert_eq!(s.ejected_until(), Some(1_100));
    assert_eq!(s.ejections.load(Ordering::Relaxed), 1);
    assert_eq!(s.connect_failures.load(Ordering::Relaxed), 4);
}

#[test]
fn probe_failures_double_the_ejection_up_to_the_cap() {
    let s = state(POLICY);
    for _ in 0..3 {
        s.report_connect_failure_at(1);
    }
    let mut now = 1;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let until = s.ejected_until().expect("ejected");
        seen.push(until - now);
        now = until; // the ejection ended: probing
        assert_eq!(s.health_at(now), Health::Probing);
        s.report_connect_failure_at(now); // the probe fails: one failure re-ejects
        assert_eq!(s.health_at(now), Health::Ejected);
    }
    assert_eq!(seen, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    assert_eq!(s.ejection_streak(), 7);
    assert_eq!(s.ejections.load(Ordering::Relaxed), 7);
}

#[test]
fn a_successful_probe_lets_the_backend_back_and_clears_the_streak() {
    let s = state(POLICY);
    for _ in 0..3 {
        s.report_connect_failure_at(10);
    }
    s.report_connect_failure_at(1_010); // failed probe: 2 s
    assert_eq!(s.ejected_until(), Some(3_010));
    // An established connection before the ejection ended (begun earlier, or panic mode) does
    // not end it.
    s.report_connect_ok_at(2_000);
    assert_eq!(s.health_at(2_000), Health::Ejected);
    s.report_connect_ok_at(3_010); // the probe gets through
    assert_eq!(s.health_at(3_010), Health::Up);
    assert_eq!(s.ejection_streak(), 0);
    assert_eq!(s.ejected_until(), None);
    // Next time, N failures again and the base ejection.
    s.report_connect_failure_at(4_000);
    s.report_connect_failure_at(4_000);
    assert_eq!(s.health_at(4_000), Health::Up);
    s.report_connect_failure_at(4_000);
    assert_eq!(s.ejected_until(), Some(5_000));
}

#[test]
fn a_success_resets_the_failure_count() {
    let s = state(POLICY);
    for round in 0..10 {
        s.report_connect_failure_at(round);
        s.report_connect_failure_at(round);
        s.report_connect_ok_at(round);
    }
    assert_eq!(s.health_at(100), Health::Up);
    assert_eq!(s.ejections.load(Ordering::Relaxed), 0);
}

#[test]
fn resets_mid_stream_count_as_failures() {
    // A backend that accepts every connection and resets it is ejected.
    let s = state(POLICY);
    for _ in 0..3 {
        s.report_connect_ok_at(5);
        s.report_reset_at(5);
    }
    assert_eq!(s.health_at(5), Health::Ejected);
    assert_eq!(s.connect_failures.load(Ordering::Relaxed), 0);

    // Two connections in a row with no reset between them clear the count.
    let s = state(POLICY);
    for _ in 0..10 {
        s.report_connect_ok_at(5);
        s.report_reset_at(5);
        s.report_connect_ok_at(5);
        s.report_connect_ok_at(5);
    }
    assert_eq!(s.health_at(5), Health::Up);
}

#[test]
fn outlier_failures_zero_never_ejects() {
    let s = state(HealthPolicy::OFF);
    for t in 0..1_000 {
        s.report_connect_failure_at(t);
        s.report_reset_at(t);
    }
    assert!(s.is_up_at(1_000));
    assert!(s.is_up());
    assert_eq!(s.ejections.load(Ordering::Relaxed), 0);
    assert_eq!(s.connect_failures.load(Ordering::Relaxed), 1_000);
}

#[test]
fn racing_reporters_eject_once() {
    let s = Arc::new(state(POLICY));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let s = s.clone();
            scope.spawn(move || {
                for _ in 0..1_000 {
                    s.report_connect_failure_at(50);
                }
            });
        }
    });
    assert_eq!(s.ejections.load(Ordering::Relaxed), 1);
    assert_eq!(s.ejected_until(), Some(1_050));
}

#[test]
fn ejection_length_saturates() {
    let p = HealthPolicy {
        outlier_failures: 1,
        base_ejection_ms: 10_000,
        max_ejection_ms: u64::MAX,
    };
    assert_eq!(p.ejection_ms(1), 10_000);
    assert_eq!(p.ejection_ms(3), 40_000);
    assert_eq!(p.ejection_ms(200), u64::MAX);
    assert_eq!(POLICY.ejection_ms(0), 1_000);
    let cfg = Config::parse("").expect("defaults").l4;
    assert_eq!(HealthPolicy::from_config(&cfg), HealthPolicy::default());
}

#[test]
fn real_clock_and_active_verdict() {
    let s = state(POLICY);
    assert!(s.is_up());
    for _ in 0..3 {
        s.report_connect_failure();
    }
    assert!(!s.is_up(), "ejected for 1 s from now");
    assert_eq!(s.health(), Health::Ejected);

    let s = state(POLICY);
    assert!(s.set_check_down(true));
    assert!(!s.set_check_down(true));
    assert!(!s.is_up());
    assert_eq!(s.health(), Health::CheckFailed);
    assert!(s.set_check_down(false));
    assert!(s.is_up());
}

// === registry ===

#[test]
fn registry_reconcile_keeps_drops_and_drains() {
    let r = Registry::new(POLICY);
    let b = |i: u64| (BackendId(i), addr(i as u16));
    assert_eq!(
        r.reconcile([b(1), b(2), b(3), b(3)]),
        Reconciled {
            added: 3,
            removed: 0,
            kept: 0
        }
    );
    let one = r.get(BackendId(1)).expect("1");
    let three = r.get(BackendId(3)).expect("3");
    three.active.fetch_add(1, Ordering::Relaxed);
    assert_eq!(one.policy(), POLICY);

    let done = r.reconcile([b(1), b(2), b(4)]);
    assert_eq!(
        done,
        Reconciled {
            added: 1,
            removed: 1,
            kept: 2
        }
    );
    assert!(Arc::ptr_eq(&one, &r.get(BackendId(1)).expect("1 kept")));
    assert!(r.get(BackendId(3)).is_none());
    // A held Arc drains on: its counters are still there.
    assert_eq!(three.active(), 1);
    assert_eq!(Arc::strong_count(&three), 1);
    assert_eq!(r.len(), 3);

    // Same id, new address: a fresh state.
    let done = r.reconcile([(BackendId(1), addr(9)), b(2), b(4)]);
    assert_eq!((done.added, done.removed, done.kept), (1, 1, 2));
    assert!(!Arc::ptr_eq(&one, &r.get(BackendId(1)).expect("1 new")));

    let view = r.snapshot_view();
    assert_eq!(view.backends.len(), 3);
    assert_eq!(view.get(BackendId(2)).expect("2").health, Health::Up);
    assert!(r.reconcile([]).removed == 3 && r.is_empty());
}

#[test]
fn snapshot_view_shows_health_and_active() {
    let r = Registry::new(POLICY);
    r.reconcile([(BackendId(1), addr(1)), (BackendId(2), addr(2))]);
    let s = r.get(BackendId(2)).expect("2");
    s.active.fetch_add(3, Ordering::Relaxed);
    for _ in 0..3 {
        s.report_connect_failure();
    }
    let v = r.snapshot_view();
    let two = v.get(BackendId(2)).expect("2");
    assert_eq!(
        (two.health, two.active, two.ejections),
        (Health::Ejected, 3, 1)
    );
    assert_eq!(v.get(BackendId(1)).expect("1").health, Health::Up);
    let json = serde_json::to_value(two).expect("json");
    assert_eq!(json["health"], "ejected");
}

// === metrics ===

fn scrape_text(registries: &[Registry]) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&collector::families(registries), &mut buf)
        .expect("encode");
    String::from_utf8(buf).expect("utf-8")
}

#[test]
fn collector_exports_per_vip_and_backend() {
    let r = Registry::new(POLICY);
    r.reconcile([(BackendId(1), addr(1)), (BackendId(2), addr(2))]);
    r.set_membership(vec![
        (
            "tcp://11.0.0.1:80".into(),
            vec![BackendId(1), BackendId(2), BackendId(7)],
        ),
        ("tcp://127.0.0.1:10000".into(), vec![BackendId(2)]),
    ]);
    let one = r.get(BackendId(1)).expect("1");
    one.total.fetch_add(5, Ordering::Relaxed);
    one.active.fetch_add(2, Ordering::Relaxed);
    one.bytes_in.fetch_add(100, Ordering::Relaxed);
    one.bytes_out.fetch_add(2_000, Ordering::Relaxed);
    for _ in 0..3 {
        one.report_connect_failure();
    }
    let text = scrape_text(std::slice::from_ref(&r));
    for line in [
        r#"ferryman_l4_backend_connections_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 5"#,
        r#"ferryman_l4_backend_active_connections{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 2"#,
        r#"ferryman_l4_backend_in_bytes_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 100"#,
        r#"ferryman_l4_backend_out_bytes_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 2000"#,
        r#"ferryman_l4_backend_connect_failures_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 3"#,
        r#"ferryman_l4_backend_up{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 0"#,
        r#"ferryman_l4_backend_up{vip="tcp://11.0.0.1:80",backend="10.0.0.1:2"} 1"#,
        r#"ferryman_l4_backend_up{vip="tcp://127.0.0.1:10000",backend="10.0.0.1:2"} 1"#,
        r#"ferryman_l4_backend_ejections_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // Backend 7 is not in the registry: no series.
    assert!(!text.contains("10.0.0.1:7"));
    assert_eq!(text.matches("ferryman_l4_backend_up{").count(), 3);

    // The collector is registered in the process registry and sees this registry.
    let all = crate::metrics::metrics().render();
    assert!(all.contains(
        r#"ferryman_l4_backend_connections_total{vip="tcp://11.0.0.1:80",backend="10.0.0.1:1"} 5"#
    ));

    if let Some(out) = promtool_check(&text) {
        assert!(out.status.success(), "promtool: {:?}", out);
    }
}

/// Runs `promtool check metrics` on `text` when promtool is installed.
fn promtool_check(text: &str) -> Option<std::process::Output> {
    use std::io::Write;
    let path = std::path::Path::new("/usr/bin/promtool");
    if !path.exists() {
        eprintln!("promtool not installed: skipped");
        return None;
    }
    let mut child = std::process::Command::new(path)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    Some(child.wait_with_output().expect("promtool output"))
}

// === active checks ===

fn l4() -> L4Config {
    Config::parse("").expect("defaults").l4
}

fn spec(addr: SocketAddr, interval_ms: u64) -> CheckSpec {
    CheckSpec {
        addr,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 3,
    }
}

/// Polls `f` every 10 ms until it is true or `limit` passes; returns the time it took.
async fn wait_until(limit: Duration, f: impl Fn() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Accepts and drops connections until the task is aborted.
fn serve(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }
    })
}

#[test]
fn rise_and_fall_count_results_in_a_row() {
    let (rise, fall) = (2, 3);
    let mut st = checks::Streaks::default();
    let mut down = false;
    let mut run = |results: &[bool]| -> Vec<Option<bool>> {
        results
            .iter()
            .map(|ok| {
                let flip = st.record(*ok, down, rise, fall);
                if let Some(d) = flip {
                    down = d;
                }
                flip
            })
            .collect()
    };
    // Two failures, a success, two failures: never 3 in a row.
    assert!(
        run(&[false, false, true, false, false])
            .iter()
            .all(Option::is_none)
    );
    // The third in a row: down.
    assert_eq!(run(&[false]), [Some(true)]);
    assert_eq!(run(&[false, false]), [None, None]);
    // One success, a failure, then two successes: up on the second.
    assert_eq!(
        run(&[true, false, true, true, true]),
        [None, None, None, Some(false), None]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_follow_a_real_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("addr");
    let server = serve(listener);

    let registry = Registry::new(HealthPolicy::OFF);
    registry.reconcile([(BackendId(1), backend)]);
    let state = registry.get(BackendId(1)).expect("state");
    let token = tokio_util::sync::CancellationToken::new();
    let mut checker = Checker::new(&token);
    let interval = 50;
    let s = spec(backend, interval);
    checker.reconcile_specs([(BackendId(1), (s, state.clone()))]);

    // Healthy while the listener is up (a few intervals).
    tokio::time::sleep(Duration::from_millis(4 * interval)).await;
    assert!(state.is_up());

    // Close it: down after `fall` failures (refused), within the jitter plus fall intervals.
    server.abort();
    let _ = server.await;
    let limit = Duration::from_millis(interval * (u64::from(s.fall) + 2) + 1_000);
    let took = wait_until(limit, || !state.is_up()).await;
    assert!(took.is_some(), "not down within {limit:?}");
    assert_eq!(state.health(), Health::CheckFailed);
    eprintln!(
        "down after {took:?} (interval {interval} ms, fall {})",
        s.fall
    );

    // Reopen the same port: up after `rise` successes.
    let listener = tokio::net::TcpListener::bind(backend)
        .await
        .expect("rebind");
    let server = serve(listener);
    let limit = Duration::from_millis(interval * (u64::from(s.rise) + 2) + 1_000);
    let took = wait_until(limit, || state.is_up()).await;
    assert!(took.is_some(), "not up within {limit:?}");
    eprintln!("up after {took:?} (rise {})", s.rise);

    checker.shutdown().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_counts_as_a_failure() {
    // 192.0.2.0/24 (TEST-NET-1) is not routed: the connect hangs (or fails at once when there
    // is no route at all); either way a failure.
    let backend: SocketAddr = "192.0.2.1:9".parse().expect("addr");
    let state = Arc::new(BackendState::with_policy(
        BackendId(9),
        backend,
        HealthPolicy::OFF,
    ));
    let token = tokio_util::sync::CancellationToken::new();
    let mut checker = Checker::new(&token);
    let mut s = spec(backend, 20);
    s.timeout = Duration::from_millis(30);
    s.fall = 2;
    checker.reconcile_specs([(BackendId(9), (s, state.clone()))]);
    let took = wait_until(Duration::from_secs(2), || state.check_down()).await;
    assert!(took.is_some(), "not down");
    // Cancelling the parent token stops everything.
    token.cancel();
    let gone = wait_until(Duration::from_secs(2), || checker.tasks() == 0).await;
    assert!(gone.is_some(), "tasks left: {}", checker.tasks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_diff_starts_and_stops_only_changes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("addr");
    let server = serve(listener);
    let alive_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let registry = Registry::new(HealthPolicy::OFF);
    let ids: Vec<BackendId> = (1..=4).map(BackendId).collect();
    registry.reconcile(ids.iter().map(|id| (*id, backend)));
    let st = |i: u64| registry.get(BackendId(i)).expect("state");
    let want = |list: &[(u64, u64)]| {
        list.iter()
            .map(|(i, interval)| (BackendId(*i), (spec(backend, *interval), st(*i))))
            .collect::<Vec<_>>()
    };
    let token = tokio_util::sync::CancellationToken::new();
    let mut checker = Checker::new(&token);

    let d = checker.reconcile_specs(want(&[(1, 1_000), (2, 1_000), (3, 1_000)]));
    assert_eq!(
        d,
        CheckDiff {
            started: 3,
            stopped: 0,
            restarted: 0
        }
    );
    assert_eq!((checker.len(), checker.tasks()), (3, 3));

    let d = checker.reconcile_specs(want(&[(1, 1_000), (2, 1_000), (3, 1_000)]));
    assert_eq!(d, CheckDiff::default());
    assert_eq!(checker.tasks(), 3);

    // 3 leaves, 4 comes, 2 changes its interval.
    let d = checker.reconcile_specs(want(&[(1, 1_000), (2, 500), (4, 1_000)]));
    assert_eq!(
        d,
        CheckDiff {
            started: 1,
            stopped: 1,
            restarted: 1
        }
    );
    assert_eq!(checker.len(), 3);
    let settled = wait_until(Duration::from_secs(2), || checker.tasks() == 3).await;
    assert!(settled.is_some(), "tasks: {}", checker.tasks());

    // A stopped check clears its verdict; the set empties without leaks.
    st(4).set_check_down(true);
    let d = checker.reconcile_specs(Vec::new());
    assert_eq!(
        d,
        CheckDiff {
            started: 0,
            stopped: 3,
            restarted: 0
        }
    );
    let settled = wait_until(Duration::from_secs(2), || checker.tasks() == 0).await;
    assert!(settled.is_some(), "tasks: {}", checker.tasks());
    assert!(!st(4).check_down());
    checker.shutdown().await;
    let alive_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive_after, alive_before, "tasks leaked");
    server.abort();
}

fn backend(i: u8, port: u16, app: &str) -> Backend {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, i));
    Backend {
        id: crate::model::build::backend_id(Protocol::Tcp, ip, port),
        ip,
        port,
        weight: 1,
        task_id: SharedStr::from(format!("task{i}")),
        app_id: Some(SharedStr::from(app)),
        agent_ip: None,
    }
}

fn app(id: &str, label: Option<&str>, checks: Vec<HealthCheck>) -> Arc<App> {
    let mut a = App {
        id: id.into(),
        health_checks: checks,
        ..App::default()
    };
    if let Some(v) = label {
        a.labels
            .insert(checks::ACTIVE_CHECKS_LABEL.into(), v.into());
    }
    Arc::new(a)
}

#[test]
fn specs_come_from_labels_config_and_marathon_checks() {
    let mut state = ClusterState::default();
    let hc = |port_index, interval, timeout, fails| HealthCheck {
        protocol: "TCP".into(),
        port_index: Some(port_index),
        interval_seconds: Some(interval),
        timeout_seconds: Some(timeout),
        max_consecutive_failures: Some(fails),
        ..HealthCheck::default()
    };
    state.apps.insert(
        "/on".into(),
        app("/on", Some("true"), vec![hc(0, 7, 3, 4), hc(1, 9, 5, 6)]),
    );
    state
        .apps
        .insert("/off".into(), app("/off", Some("false"), vec![]));
    state
        .apps
        .insert("/plain".into(), app("/plain", None, vec![]));
    let vip = |port, protocol, backends| {
        Arc::new(Vip {
            key: VipKey {
                protocol,
                ip: IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1)),
                port,
            },
            name: None,
            label: None,
            backends,
        })
    };
    let snap = Snapshot {
        state: Arc::new(state),
        vips: vec![
            vip(
                80,
                Protocol::Tcp,
                vec![backend(1, 8080, "/on"), backend(2, 8080, "/off")],
            ),
            vip(53, Protocol::Udp, vec![backend(5, 53, "/on")]),
            vip(81, Protocol::Tcp, vec![backend(3, 8080, "/plain")]),
        ],
        services: vec![Arc::new(Service {
            app_id: "/on".into(),
            port_index: 1,
            service_port: 10000,
            protocol: Protocol::Tcp,
            backends: vec![backend(4, 31000, "/on"), backend(1, 8080, "/on")],
        })],
        ..Snapshot::default()
    };

    let mut cfg = l4();
    let specs = checks::specs_from_snapshot(&snap, &cfg);
    // Only /on (label), TCP: backend 1 (VIP: first check), backend 4 (service: port index 1).
    assert_eq!(specs.len(), 2, "{specs:?}");
    let s1 = specs[&backend(1, 8080, "/on").id];
    assert_eq!(
        (s1.interval, s1.timeout, s1.fall, s1.rise),
        (
            Duration::from_secs(7),
            Duration::from_secs(3),
            4,
            cfg.check_rise
        )
    );
    let s4 = specs[&backend(4, 31000, "/on").id];
    assert_eq!((s4.interval, s4.fall), (Duration::from_secs(9), 6));
    assert_eq!(s4.addr, "10.0.1.4:31000".parse().expect("addr"));

    // Config on: /plain too, with the config's defaults; /off's label still says no.
    cfg.active_checks = true;
    let specs = checks::specs_from_snapshot(&snap, &cfg);
    assert_eq!(specs.len(), 3, "{specs:?}");
    let s3 = specs[&backend(3, 8080, "/plain").id];
    assert_eq!(
        (s3.interval, s3.timeout),
        (cfg.check_interval, cfg.check_timeout)
    );
    assert!(!specs.contains_key(&backend(2, 8080, "/off").id));
}
