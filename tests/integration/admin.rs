//! Admin API against the real binary: `/v1/vips` for the README demo's Marathon answer, `/metrics`
//! through `promtool check metrics` and a real Prometheus scrape, `/v1/config` redaction,
//! `/v1/version`, `/healthz`, 404/405.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Ferryman, free_port, http_request, tool};

/// The README demo's Marathon answer; the test serves it from a file source.
const DEMO_APPS: &[u8] = include_bytes!("../../config/apps.json");

/// Address of the named VIP `/web` in the default `l4.vip_range` 11.0.0.0/8, worked out by hand
/// from the allocation rule (`model::vip::allocate`): h = first 8 bytes of SHA-1("web.marathon")
/// as a big-endian u64; slot = h mod (2^24 - 2); address = 11.0.0.1 + slot. In Python:
/// `hashlib.sha1(b"web.marathon").digest()[:8]` → slot 12933292 → 11.197.88.173.
const WEB_VIP_IP: &str = "11.197.88.173";

const READY_WITHIN: Duration = Duration::from_secs(20);

/// Starts ferryman on the demo answer, with a password configured (for the redaction check).
async fn start_demo() -> Ferryman {
    let ferryman = Ferryman::start_with(
        r#"
[discovery]
source = "file"
file = "apps.json"
username = "ferryman"
password = "correct horse battery staple"
"#,
        &[("apps.json", DEMO_APPS)],
    );
    ferryman.wait_ready(READY_WITHIN).await;
    ferryman
}

#[test]
fn demo_config_is_valid_and_changes_nothing_on_the_host() {
    use ferryman::config::{Config, L4Mode, SourceKind};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ferryman.toml");
    let c = Config::load(&path).expect("config/ferryman.toml is valid");
    assert_eq!(c.discovery.source, SourceKind::File);
    assert_eq!(c.discovery.file, Path::new("config/apps.json"));
    assert_eq!(c.l4.mode, L4Mode::Userspace);
    assert_eq!(c.l4.link, None);
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.dns.listen, "127.0.0.1:8053".parse().unwrap());
    assert_eq!(c.l7.http, Some("127.0.0.1:10080".parse().unwrap()));
    assert_eq!(c.l7.https, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vips_of_the_demo_answer() {
    let ferryman = start_demo().await;
    let r = ferryman.get("/v1/vips").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let got: serde_json::Value = serde_json::from_str(&r.body).expect("/v1/vips is JSON");
    // By (protocol, ip, port): the IP VIP 10.10.0.1 sorts before the 11.0.0.0/8 named VIP.
    // /api's one task on 127.0.0.1 host port 8003; /web's two tasks on host ports 8001 and 8002,
    // both healthy (weight 1). /batch/cleanup has no ports and no VIP.
    // The harness runs with `l4.mode = "off"`: every VIP says so, with the reason.
    let want = serde_json::json!([
        {"protocol": "tcp", "ip": "10.10.0.1", "port": 5000, "name": null,
         "backends": [
            {"ip": "127.0.0.1", "port": 8003, "weight": 1, "health": "up", "active": 0}],
         "path": "off", "path_reason": "l4.mode = off"},
        {"protocol": "tcp", "ip": WEB_VIP_IP, "port": 80,
         "name": "web.marathon.l4lb.thisdcos.directory",
         "backends": [
            {"ip": "127.0.0.1", "port": 8001, "weight": 1, "health": "up", "active": 0},
            {"ip": "127.0.0.1", "port": 8002, "weight": 1, "health": "up", "active": 0}],
         "path": "off", "path_reason": "l4.mode = off"}
    ]);
    assert_eq!(got, want, "body: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_config_and_errors() {
    let Some(curl) = tool("curl") else { return };
    let ferryman = start_demo().await;

    // Real client: curl.
    assert_eq!(
        curl_get(&curl, &ferryman.url("/healthz")),
        (200, "ok\n".into())
    );
    let (status, body) = curl_get(&curl, &ferryman.url("/v1/version"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "Service": "ferryman",
            "Version": env!("CARGO_PKG_VERSION"),
            "URL": ferryman::admin::PROJECT_URL,
        })
    );

    let r = ferryman.get("/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));

    let r = ferryman.get("/v1/config").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("correct horse"), "{}", r.body);
    let c: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(c["discovery"]["password"], "<redacted>");
    assert_eq!(c["discovery"]["username"], "ferryman");
    assert_eq!(c["discovery"]["file"], "apps.json");
    assert_eq!(c["admin"]["listen"], "127.0.0.1:0");
    assert_eq!(c["l4"]["mode"], "off");

    assert_eq!(ferryman.get("/nope").await.status, 404);
    assert_eq!(ferryman.get("/v1/vips/extra").await.status, 404);
    let r = http_request(ferryman.admin, "POST", "/v1/vips").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_are_ours() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let ferryman = start_demo().await;
    let r = ferryman.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));

    let names = metric_names(&r.body);
    assert!(
        names.iter().any(|n| n == "ferryman_snapshot_version"),
        "{names:?}"
    );
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with("ferryman_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "metrics not named ferryman_*: {foreign:?}"
    );
    // The first snapshot is published (readyz said so).
    let version = sample_value(&r.body, "ferryman_snapshot_version").expect("a version sample");
    assert!(version >= 1.0, "{version}");

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(r.body.as_bytes())
            .expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- body ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_us() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let ferryman = start_demo().await;
    let prom = Prometheus::start(&prometheus, &ferryman.admin.to_string());

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(r) = crate::harness::try_http_request(prom.addr, "GET", "/api/v1/targets").await
            && r.status == 200
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                let ours = v["data"]["activeTargets"]
                    .as_array()
                    .and_then(|ts| {
                        ts.iter()
                            .find(|t| t["labels"]["job"] == "ferryman")
                            .cloned()
                    })
                    .unwrap_or_default();
                if ours["health"] == "up" {
                    assert_eq!(
                        ours["scrapeUrl"],
                        format!("http://{}/metrics", ferryman.admin)
                    );
                    assert_eq!(ours["lastError"], "");
                    return;
                }
            }
            last = r.body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "Prometheus did not report our target up within 30 s; last /api/v1/targets: {last}\n\
         --- prometheus log ---\n{}",
        prom.log()
    );
}

// === helpers ===

/// `curl -sS URL`: (status, body).
fn curl_get(curl: &Path, url: &str) -> (u16, String) {
    let out = Command::new(curl)
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 answer");
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    (code.parse().expect("numeric status"), body.to_string())
}

/// Metric family names in a text exposition: from `# TYPE`/`# HELP` lines and sample lines
/// (histogram samples keep their `_bucket`/`_sum`/`_count` suffix).
fn metric_names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = body
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l
                .strip_prefix("# TYPE ")
                .or_else(|| l.strip_prefix("# HELP "))
            {
                rest.split_whitespace().next().map(str::to_string)
            } else if l.is_empty() || l.starts_with('#') {
                None
            } else {
                l.split(['{', ' ']).next().map(str::to_string)
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The value of the unlabelled sample `name`.
fn sample_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// A `prometheus` server scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ferryman\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("loopback address");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn metric_names_cover_help_type_and_samples() {
    let body = "# HELP ferryman_a_total A.\n# TYPE ferryman_a_total counter\n\
                ferryman_a_total{source=\"file\"} 3\n\
                ferryman_b_seconds_bucket{le=\"0.1\"} 1\nother_metric 2\n";
    assert_eq!(
        metric_names(body),
        vec![
            "ferryman_a_total",
            "ferryman_b_seconds_bucket",
            "other_metric"
        ]
    );
    assert_eq!(sample_value("x 1\nferryman_v 7\n", "ferryman_v"), Some(7.0));
}
