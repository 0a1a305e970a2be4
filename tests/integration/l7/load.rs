//! Route changes under `wrk` load: a Marathon-LB blue/green switch (the `zdd_apps.json`
//! fixture's two colours) and 500 vhost changes, each with 0 errors and no listener restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Backend, Edge, apps, metric_sum, spawn_wrk, vhost_app, wait_for_at, wrk_result};
use crate::harness::free_port;

/// Marathon-LB's blue/green deployment of `nginx` mid-switch, as `zdd.py` leaves it: `/nginx-green`
/// (older `HAPROXY_DEPLOYMENT_STARTED_AT`: the colour being replaced) and `/nginx-blue` (the new
/// one, on the `HAPROXY_DEPLOYMENT_ALT_PORT` service port), both `HAPROXY_0_PORT=10000`.
const ZDD_APPS: &str = include_str!("../../fixtures/marathon/zdd_apps.json");

/// The fixture's app `id`, moved onto this test's ports and backends: `HAPROXY_0_PORT` →
/// `port`, the alternate port → `alt`, bound to 127.0.0.1, one task per backend on 127.0.0.1
/// (the fixture's first task as the template, healthy).
fn zdd_colour(id: &str, port: u16, alt: u16, backends: &[&Backend]) -> Value {
    let all: Value = serde_json::from_str(ZDD_APPS).expect("fixture JSON");
    let mut app = all["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} in the fixture"))
        .clone();
    let labels = app["labels"].as_object_mut().expect("labels");
    labels.insert("HAPROXY_0_PORT".into(), json!(port.to_string()));
    labels.insert("HAPROXY_DEPLOYMENT_ALT_PORT".into(), json!(alt.to_string()));
    labels.insert("HAPROXY_0_BIND_ADDR".into(), json!("127.0.0.1"));
    // The Marathon service port: 10000 for the old colour, the alternate port for the new one.
    let renumber = |v: &mut Value| {
        if v == &json!(10000) {
            *v = json!(port);
        } else if v == &json!(10001) {
            *v = json!(alt);
        }
    };
    if let Some(ports) = app["ports"].as_array_mut() {
        ports.iter_mut().for_each(renumber);
    }
    if let Some(defs) = app["portDefinitions"].as_array_mut() {
        defs.iter_mut().for_each(|d| renumber(&mut d["port"]));
    }
    if let Some(maps) = app["container"]["docker"]["portMappings"].as_array_mut() {
        maps.iter_mut()
            .for_each(|m| renumber(&mut m["servicePort"]));
    }
    let template = app["tasks"][0].clone();
    let tasks: Vec<Value> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut t = template.clone();
            let task_id = format!("{}.test-{i}", id.trim_start_matches('/'));
            t["id"] = json!(task_id);
            t["host"] = json!("127.0.0.1");
            t["ports"] = json!([b.port()]);
            t.as_object_mut().expect("task").remove("ipAddresses");
            t["healthCheckResults"] = json!([{
                "alive": true, "consecutiveFailures": 0, "taskId": task_id,
                "firstSuccess": "2016-02-01T22:58:02.405Z", "lastFailure": null,
                "lastSuccess": "2016-02-01T23:10:31.356Z",
            }]);
            t
        })
        .collect();
    app["instances"] = json!(backends.len());
    app["tasks"] = json!(tasks);
    app
}

fn hits(backends: &[&Backend]) -> u64 {
    backends.iter().map(|b| b.hits()).sum()
}

/// Waits (at most `within`) until `cond` holds, polling every 50 ms.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switch_under_load_has_no_errors() {
    if crate::harness::tool("wrk").is_none() {
        return;
    }
    let (g1, g2) = (
        Backend::start("green-1").await,
        Backend::start("green-2").await,
    );
    let (b1, b2) = (
        Backend::start("blue-1").await,
        Backend::start("blue-2").await,
    );
    let (old, new) = ([&g1, &g2], [&b1, &b2]);
    let (port, alt) = (free_port(), free_port());
    let green = || zdd_colour("/nginx-green", port, alt, &old);
    let blue = || zdd_colour("/nginx-blue", port, alt, &new);

    let edge = Edge::start("", "", &apps(vec![green()])).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // An HTTP health check makes the port http (Marathon-LB: no VHOST needed).
    wait_for_at(addr, "nginx", "/", |r| r.status == 200, &edge.f).await;

    const SECS: u32 = 8;
    let wrk = spawn_wrk(addr, "nginx", "/", 8, SECS).expect("wrk (checked above)");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(hits(&old) > 0 && hits(&new) == 0);

    // Both colours: zdd.py waits until the stats list old + new instances, UP.
    edge.set_apps(&apps(vec![green(), blue()]));
    assert!(
        until(Duration::from_secs(5), || hits(&new) > 0).await,
        "the new colour got no traffic"
    );
    let pxname = format!("nginx_{port}");
    let csv = edge.f.get("/haproxy?stats;csv").await.body;
    let rows = super::admin::parse_stats(&csv).unwrap_or_else(|e| panic!("{e}\n{csv}"));
    let up = rows
        .iter()
        .filter(|r| r["pxname"] == pxname && r["status"] == "UP")
        // zdd.py's `_if_app_listener`: server rows only.
        .filter(|r| r["svname"] != "BACKEND" && r["svname"] != "FRONTEND")
        .count();
    assert_eq!(up, 4, "UP servers of {pxname} mid-switch:\n{csv}");
    let (o, n) = (hits(&old), hits(&new));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hits(&old) > o && hits(&new) > n,
        "both colours must serve during the switch: old {o} → {}, new {n} → {}",
        hits(&old),
        hits(&new)
    );

    // The new colour's Marathon service port (the alternate port) is not a frontend:
    // HAPROXY_0_PORT replaces it (`set_port`).
    let alt_addr: SocketAddr = format!("127.0.0.1:{alt}").parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(alt_addr).await.is_err(),
        "the alternate port {alt} has a listener"
    );

    // zdd.py deletes the old app.
    edge.set_apps(&apps(vec![blue()]));
    let mut last = hits(&old);
    let drained = until(Duration::from_secs(5), || {
        let now = hits(&old);
        let quiet = now == last;
        last = now;
        quiet
    })
    .await;
    assert!(drained, "the old colour still gets requests");
    let n = hits(&new);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hits(&new) > n, "the new colour stopped getting requests");
    assert!(
        started.elapsed() < Duration::from_secs(u64::from(SECS) - 1),
        "the switch outlasted the load ({:?})",
        started.elapsed()
    );

    let result = wrk_result(wrk, SECS).await;
    assert!(result.requests > 100, "{}", result.output);
    assert_eq!(result.non_2xx_3xx, 0, "{}", result.output);
    assert_eq!(result.socket_errors, 0, "{}", result.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_route_changes_under_load_keep_the_listener() {
    if crate::harness::tool("wrk").is_none() {
        return;
    }
    let main = Backend::start("main").await;
    let churn = Backend::start("churn").await;
    let churn_port = free_port();
    let main_app = vhost_app("/main", "main.example.com", &[&main], json!({}));
    let churn_app = |i: usize| {
        // Every change moves the churn app's routes: a new vhost, and a path route on every
        // other change.
        let mut labels = json!({
            "HAPROXY_GROUP": "external",
            "HAPROXY_0_VHOST": format!("churn-{i}.example.com"),
        });
        if i % 2 == 1 {
            labels["HAPROXY_0_VHOST"] = json!(format!("churn-{i}.example.com,main.example.com"));
            labels["HAPROXY_0_PATH"] = json!(format!("/churn-{i}"));
        }
        super::app("/churn", churn_port, &[churn.port()], labels)
    };
    let edge = Edge::start("", "", &apps(vec![main_app.clone(), churn_app(0)])).await;
    edge.wait_backend("main.example.com", "/", "main").await;
    edge.wait_backend("churn-0.example.com", "/", "churn").await;

    const SECS: u32 = 5;
    const CHANGES: usize = 500;
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut wrk = spawn_wrk(edge.http, "main.example.com", "/", 4, SECS).expect("wrk");
    let mut runs = Vec::new();
    let started = Instant::now();
    for i in 1..=CHANGES {
        edge.set_apps(&apps(vec![main_app.clone(), churn_app(i)]));
        let host = format!("churn-{i}.example.com");
        let path = if i % 2 == 1 {
            format!("/churn-{i}/")
        } else {
            "/".to_string()
        };
        loop {
            let r = super::send(edge.http, None, "GET", &host, &path, &[]).await;
            if r.as_ref().is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {i} not applied in time (last {r:?}); {:?} since the first change",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i % 2 == 1 {
            // The path route of this change takes /churn-i on main's vhost.
            let r = edge.get("main.example.com", &format!("/churn-{i}/x")).await;
            assert_eq!(r.expect_echo().backend, "churn", "change {i}");
        }
        if matches!(wrk.try_wait(), Ok(Some(_))) {
            runs.push(wrk_result(wrk, SECS).await);
            wrk = spawn_wrk(edge.http, "main.example.com", "/", 4, SECS).expect("wrk");
        }
    }
    let elapsed = started.elapsed();
    runs.push(wrk_result(wrk, SECS).await);

    let total: u64 = runs.iter().map(|r| r.requests).sum();
    for r in &runs {
        assert_eq!(r.non_2xx_3xx, 0, "{}", r.output);
        assert_eq!(r.socket_errors, 0, "{}", r.output);
    }
    assert!(total > 1000, "only {total} requests under load");
    // The main route never moved.
    assert_eq!(
        edge.get("main.example.com", "/")
            .await
            .expect_echo()
            .backend,
        "main"
    );
    // One snapshot per change, and the http listener never closed and bound again.
    let metrics = edge.f.get("/metrics").await.body;
    let version = metric_sum(&metrics, "ferryman_snapshot_version", &[]);
    assert!(
        version >= (CHANGES + 1) as f64,
        "snapshot version {version} after {CHANGES} changes"
    );
    assert!(
        edge.http_listener_kept(),
        "the l7.http listening socket was replaced"
    );
    eprintln!(
        "{CHANGES} route changes in {elapsed:?} under load: {total} requests over {} wrk runs",
        runs.len()
    );
}
