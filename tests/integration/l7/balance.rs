//! Balancing and health through the edge: passive detection of 5xx answers, blue/green
//! colours weighted by their running instances, a sticky cookie of a server that left, and
//! HTTP/2 multiplexing under `h2load`.

use std::time::Duration;

use serde_json::json;

use super::{Backend, Edge, apps, metric_sum, vhost_app};
use crate::harness::tool;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_5xx_is_ejected() {
    let good = Backend::start("good").await;
    let broken = Backend::start_with_status("broken", 500).await;
    let app = vhost_app("/flaky", "flaky.example.com", &[&good, &broken], json!({}));
    let sp = app["portDefinitions"][0]["port"].as_u64().expect("port");
    let edge = Edge::start("", "", &apps(vec![app])).await;
    edge.wait_backend("flaky.example.com", "/", "good").await;
    // l4.outlier_failures = 5 (default) consecutive failures eject for 10 s; l7.passive_5xx.
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(edge.get("flaky.example.com", &format!("/{i}")).await.status);
    }
    assert!(
        broken.hits() <= 8,
        "the broken server kept getting requests: {} of 40 ({statuses:?})",
        broken.hits()
    );
    assert!(
        statuses[20..].iter().all(|s| *s == 200),
        "5xx after the ejection: {statuses:?}"
    );
    let csv = edge.f.get("/haproxy?stats;csv").await.body;
    let rows = super::admin::parse_stats(&csv).unwrap_or_else(|e| panic!("{e}"));
    let broken_row = rows
        .iter()
        .find(|r| {
            r["pxname"] == format!("flaky_{sp}")
                && r["svname"].ends_with(&broken.port().to_string())
        })
        .unwrap_or_else(|| panic!("no row for the broken server:\n{csv}"));
    assert_eq!(broken_row["status"], "DOWN", "{broken_row:?}");
    let metrics = edge.f.get("/metrics").await.body;
    let up = metric_sum(
        &metrics,
        "ferryman_l7_server_up",
        &[("server", &format!("127_0_0_1_{}", broken.port()))],
    );
    assert_eq!(up, 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_colours_share_traffic_by_running_instances() {
    let old: Vec<Backend> = vec![
        Backend::start("old-1").await,
        Backend::start("old-2").await,
        Backend::start("old-3").await,
    ];
    let new = Backend::start("new-1").await;
    let sp = crate::harness::free_port();
    let colour = |id: &str, colour: &str, started: &str, backends: &[&Backend]| {
        super::app(
            id,
            sp,
            &backends.iter().map(|b| b.port()).collect::<Vec<_>>(),
            json!({
                "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "bg.example.com",
                "HAPROXY_0_PORT": sp.to_string(), "HAPROXY_DEPLOYMENT_GROUP": "bg",
                "HAPROXY_DEPLOYMENT_COLOUR": colour, "HAPROXY_DEPLOYMENT_STARTED_AT": started,
                "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "3",
            }),
        )
    };
    let old_refs: Vec<&Backend> = old.iter().collect();
    let list = apps(vec![
        colour("/bg-blue", "blue", "2024-01-01T00:00:00", &old_refs),
        colour("/bg-green", "green", "2024-01-02T00:00:00", &[&new]),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("bg.example.com", "/", "new-1").await;
    let before_new = new.hits();
    let before_old: u64 = old.iter().map(|b| b.hits()).sum();
    for _ in 0..80 {
        assert_eq!(edge.get("bg.example.com", "/").await.status, 200);
    }
    let to_new = new.hits() - before_new;
    let to_old = old.iter().map(|b| b.hits()).sum::<u64>() - before_old;
    assert_eq!(to_new + to_old, 80);
    // 1 of 4 running instances is the new colour.
    assert!(
        (12..=28).contains(&to_new),
        "new colour got {to_new} of 80 (want about 20)"
    );
    for b in &old {
        assert!(b.hits() > 0, "an old instance got nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_of_a_removed_server_is_rebalanced() {
    let (s1, s2) = (Backend::start("s1").await, Backend::start("s2").await);
    let host = "stick.example.com";
    let sp = crate::harness::free_port();
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": host,
                        "HAPROXY_0_STICKY": "true"});
    let both = apps(vec![super::app(
        "/stick",
        sp,
        &[s1.port(), s2.port()],
        labels.clone(),
    )]);
    let edge = Edge::start("", "", &both).await;
    let cookie_of = |r: &super::Reply| {
        r.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("mesosphere_server_id="))
            .map(|v| v.split(';').next().unwrap_or_default().to_string())
    };
    let r = edge.wait_backend(host, "/", "s2").await;
    let s2_cookie = cookie_of(&r).expect("a sticky cookie");
    edge.set_apps(&apps(vec![super::app("/stick", sp, &[s1.port()], labels)]));
    let cookie = format!("mesosphere_server_id={s2_cookie}");
    let deadline = std::time::Instant::now() + super::ROUTE_WITHIN;
    loop {
        let r = edge.request(host, "/", &[("cookie", &cookie)]).await;
        if r.echo().is_some_and(|e| e.backend == "s1") {
            let fresh = cookie_of(&r);
            assert!(
                fresh.as_ref().is_some_and(|c| *c != s2_cookie),
                "a request rebalanced away from a removed server gets a new cookie: {r:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still on s2: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_multiplexed_streams_all_succeed() {
    let Some(h2load) = tool("h2load") else {
        return;
    };
    let (a, b) = (Backend::start("m1").await, Backend::start("m2").await);
    let list = apps(vec![vhost_app(
        "/mux",
        "mux.example.com",
        &[&a, &b],
        json!({}),
    )]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_for("mux.example.com", "/", |r| r.status == 200)
        .await;
    let before = a.hits() + b.hits();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(h2load)
            .args([
                "-n",
                "600",
                "-c",
                "3",
                "-m",
                "20",
                "-H",
                ":authority: mux.example.com",
            ])
            .arg(format!("http://{}/mux", edge.http))
            .output(),
    )
    .await
    .expect("h2load ends")
    .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("600 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 600 2xx"), "{text}");
    assert_eq!(a.hits() + b.hits() - before, 600);
    assert!(a.hits() > 0 && b.hits() > 0);
}
