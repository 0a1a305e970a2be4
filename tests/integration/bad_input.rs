//! Bad input end to end: one app with malformed `VIP` labels among good apps (each bad label is
//! skipped with a warning naming the app and the label, counted by reason; every other app is
//! published), and a file source that turns to garbage (the last good state keeps serving).

use std::time::Duration;

use serde_json::json;

use crate::harness::{Ferryman, write_file};

const READY_WITHIN: Duration = Duration::from_secs(20);

fn app(id: &str, port: u16, vip: &str) -> serde_json::Value {
    json!({
        "id": id, "version": "2024-01-01T00:00:00.000Z", "instances": 1,
        "portDefinitions": [{"port": 0, "protocol": "tcp", "labels": {"VIP_0": vip}}],
        "tasks": [{
            "id": format!("{}.1", id.trim_start_matches('/')), "appId": id, "host": "127.0.0.1",
            "slaveId": "agent-1", "ports": [port], "state": "TASK_RUNNING",
            "startedAt": "2024-01-01T00:00:01.000Z"
        }]
    })
}

fn vip_ports(body: &str) -> Vec<(String, u64)> {
    let vips: serde_json::Value = serde_json::from_str(body).expect("/v1/vips is JSON");
    let mut out: Vec<(String, u64)> = vips
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            (
                v["ip"].as_str().unwrap_or("").to_string(),
                v["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

fn metric(body: &str, line_prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_labels_are_skipped_by_app_and_the_rest_is_published() {
    let answer = json!({"apps": [
        app("/good-a", 8001, "10.1.0.1:80"),
        app("/bad-format", 8002, "foo"),
        app("/bad-port", 8003, "10.1.0.3:70000"),
        app("/bad-named-port", 8004, "/name:abc"),
        app("/good-b", 8005, "10.1.0.5:90"),
    ]});
    let f = Ferryman::start_with(
        "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\n",
        &[("apps.json", answer.to_string().as_bytes())],
    );
    f.wait_ready(READY_WITHIN).await;
    let r = f.get("/v1/vips").await;
    assert_eq!(
        vip_ports(&r.body),
        vec![("10.1.0.1".to_string(), 80), ("10.1.0.5".to_string(), 90)]
    );
    let logs = f.logs();
    for (app_id, label) in [
        ("/bad-format", "VIP_0=foo"),
        ("/bad-port", "VIP_0=10.1.0.3:70000"),
        ("/bad-named-port", "VIP_0=/name:abc"),
    ] {
        assert!(
            logs.lines().any(|l| l.contains("label skipped")
                && l.contains(app_id)
                && l.contains(label)
                && l.contains("WARN")),
            "no warning naming {app_id} and {label}:\n{logs}"
        );
    }
    let m = f.get("/metrics").await.body;
    assert_eq!(
        metric(
            &m,
            "ferryman_model_labels_rejected_total{reason=\"bad_format\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ferryman_model_labels_rejected_total{reason=\"bad_port\"}"
        ),
        Some(2.0),
        "{m}"
    );
}

async fn decode_errors(f: &Ferryman) -> f64 {
    let m = f.get("/metrics").await.body;
    metric(
        &m,
        "ferryman_discovery_errors_total{kind=\"decode\",source=\"file\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_file_keeps_the_last_good_state() {
    let good = json!({"apps": [app("/good-a", 8001, "10.1.0.1:80")]}).to_string();
    let f = Ferryman::start_with(
        "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\npoll_interval = \"100ms\"\n",
        &[("apps.json", good.as_bytes())],
    );
    f.wait_ready(READY_WITHIN).await;
    let before = f.get("/v1/vips").await.body;
    assert_eq!(vip_ports(&before), vec![("10.1.0.1".to_string(), 80)]);

    for garbage in [
        &b"{\"apps\": [ {\"id\": \"/x\", "[..],
        b"<html>502 Bad Gateway</html>",
        b"",
    ] {
        let errors_before = decode_errors(&f).await;
        write_file(f.dir.path(), "apps.json", garbage);
        // The watcher (or the poller) sees it and fails to decode it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while decode_errors(&f).await <= errors_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no decode error counted for {garbage:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            f.get("/v1/vips").await.body,
            before,
            "state kept after {garbage:?}"
        );
    }
    let r = f.get("/readyz").await;
    assert_eq!(r.status, 200);
}
