//! Marathon-LB's compatibility endpoints on `admin.listen` (`/_haproxy_health_check`,
//! `/haproxy?stats;csv` read the way `zdd.py` reads it) and per-backend L7 metrics.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Backend, Edge, apps, metric_sum, vhost_app};

/// HAProxy's `show stat` CSV as captured from a Marathon-LB node (fixture source in
/// `tests/fixtures/README.md`).
const STATS_FIXTURE: &str = include_str!("../../fixtures/marathon/haproxy_stats.csv");

/// One data row of the CSV by column name, parsed as `zdd.py`'s `parse_haproxy_stats` does:
/// the heading is the first line without `# ` and the trailing comma; each row drops its last
/// (empty) field and must then have exactly as many fields as there are headings (upstream
/// builds a namedtuple from it).
pub fn parse_stats(csv: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut lines = csv.lines();
    let head = lines.next().ok_or("empty CSV")?;
    let headings: Vec<&str> = head
        .trim_start_matches("# ")
        .trim_end_matches(',')
        .split(',')
        .collect();
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != headings.len() + 1 || fields.last() != Some(&"") {
            return Err(format!(
                "row has {} fields, want {} and a trailing comma: {line}",
                fields.len(),
                headings.len() + 1
            ));
        }
        rows.push(
            headings
                .iter()
                .zip(&fields)
                .map(|(h, f)| (h.to_string(), f.to_string()))
                .collect(),
        );
    }
    Ok(rows)
}

#[test]
fn the_fixture_parses_as_zdd_reads_it() {
    let rows = parse_stats(STATS_FIXTURE).expect("fixture parses");
    assert!(rows.iter().any(|r| r["svname"] == "FRONTEND"));
    assert!(rows.iter().any(|r| r["svname"] == "BACKEND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_health_check_stats_csv_and_metrics_name_backends_and_servers() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let web = vhost_app("/team/web", "web.example.com", &[&one, &two], json!({}));
    let service_port = web["portDefinitions"][0]["port"].as_u64().expect("port");
    let backend = format!("team_web_{service_port}");
    let edge = Edge::start("", "", &apps(vec![web])).await;
    edge.wait_for("web.example.com", "/", |r| r.status == 200)
        .await;

    let health = edge.f.get("/_haproxy_health_check").await;
    assert_eq!(health.status, 200, "{health:?}");

    // Counters before the measured requests (the wait above made some).
    let metrics_before = edge.f.get("/metrics").await.body;
    let requests_before = metric_sum(
        &metrics_before,
        "ferryman_l7_requests_total",
        &[("backend", &backend)],
    );
    let csv_before = parse_stats(&edge.f.get("/haproxy?stats;csv").await.body).unwrap_or_default();
    let twoxx_before: u64 = csv_before
        .iter()
        .find(|r| r["pxname"] == backend && r["svname"] == "BACKEND")
        .and_then(|r| r["hrsp_2xx"].parse().ok())
        .unwrap_or(0);
    const N: u64 = 20;
    let before = one.hits() + two.hits();
    for i in 0..N {
        assert_eq!(
            edge.get("web.example.com", &format!("/{i}")).await.status,
            200
        );
    }
    // Plus requests that the edge answers itself, counted apart from 2xx.
    assert_eq!(edge.get("nowhere.example.com", "/").await.status, 503);
    assert_eq!(one.hits() + two.hits() - before, N);

    let csv = edge.f.get("/haproxy?stats;csv").await;
    assert_eq!(csv.status, 200, "{csv:?}");
    let fixture_head = STATS_FIXTURE.lines().next().expect("fixture heading");
    assert_eq!(
        csv.body.lines().next(),
        Some(fixture_head),
        "the CSV heading differs from HAProxy's"
    );
    let rows = parse_stats(&csv.body).unwrap_or_else(|e| panic!("{e}\n{}", csv.body));
    let mine: Vec<&BTreeMap<String, String>> =
        rows.iter().filter(|r| r["pxname"] == backend).collect();
    let servers: Vec<&str> = mine
        .iter()
        .map(|r| r["svname"].as_str())
        .filter(|s| *s != "BACKEND" && *s != "FRONTEND")
        .collect();
    let mut want = vec![
        format!("127_0_0_1_{}", one.port()),
        format!("127_0_0_1_{}", two.port()),
    ];
    want.sort();
    let mut got: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want, "server rows of {backend}:\n{}", csv.body);
    for r in mine
        .iter()
        .filter(|r| r["svname"] != "BACKEND" && r["svname"] != "FRONTEND")
    {
        assert_eq!(r["status"], "UP", "{r:?}");
        // zdd.py's `_has_pending_requests` int()s these.
        for col in ["qcur", "scur"] {
            assert!(
                r[col].is_empty() || r[col].parse::<u64>().is_ok(),
                "{col} {r:?}"
            );
        }
    }
    let backend_row = mine
        .iter()
        .find(|r| r["svname"] == "BACKEND")
        .unwrap_or_else(|| panic!("no BACKEND row for {backend}:\n{}", csv.body));
    assert_eq!(
        backend_row["hrsp_2xx"].parse::<u64>().ok(),
        Some(twoxx_before + N),
        "{backend_row:?}"
    );
    let server_total: u64 = mine
        .iter()
        .filter(|r| r["svname"] != "BACKEND" && r["svname"] != "FRONTEND")
        .map(|r| r["stot"].parse::<u64>().unwrap_or(0))
        .sum();
    assert!(server_total >= N, "stot of the servers: {server_total}");
    assert!(
        rows.iter().any(|r| r["svname"] == "FRONTEND"),
        "no FRONTEND row:\n{}",
        csv.body
    );

    let metrics = edge.f.get("/metrics").await.body;
    let requests = metric_sum(
        &metrics,
        "ferryman_l7_requests_total",
        &[("backend", &backend)],
    );
    assert_eq!(
        requests - requests_before,
        N as f64,
        "requests of {backend}:\n{metrics}"
    );
    assert!(
        metrics.contains(&format!("backend=\"{backend}\"")) && metrics.contains("ferryman_l7_"),
        "{metrics}"
    );
}
