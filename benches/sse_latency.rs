//! Marathon event → published snapshot latency, with the 10 000-app / 100 000-task synthetic
//! cluster behind a fake Marathon (goal: p99 ≤ 50 ms), and the time of a full fetch of that
//! answer (fetch + decode + build + publish).
//!
//! `cargo bench --bench sse_latency`. Environment: `FERRYMAN_BENCH_TASKS` (default 100000),
//! `FERRYMAN_BENCH_EVENTS` (default 200). Prints percentiles; not a criterion bench because the
//! figure of interest is a latency distribution, not a mean.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferryman::config::Config;
use ferryman::model::{Publisher, Snapshot, Snapshots, TaskState};
use tokio_util::sync::CancellationToken;

#[path = "support/marathon.rs"]
mod marathon;
#[path = "support/synth.rs"]
mod synth;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_for(url: &str) -> Arc<Config> {
    let text = format!(
        "[discovery]\nsource = \"marathon\"\nmarathon = [\"{url}\"]\nresync_after = \"10m\"\n\
         request_timeout = \"60s\"\n[l4]\nmode = \"off\"\nlink = \"\"\n"
    );
    Arc::new(Config::parse(&text).expect("bench config"))
}

async fn wait_for(snaps: &Snapshots, pred: impl Fn(&Snapshot) -> bool, limit: Duration) -> bool {
    let mut rx = snaps.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if pred(&rx.borrow_and_update()) {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn bench() {
    let tasks = env_usize("FERRYMAN_BENCH_TASKS", 100_000);
    let events = env_usize("FERRYMAN_BENCH_EVENTS", 200);
    let shape = synth::Shape {
        apps: tasks / 10,
        tasks,
        ..synth::Shape::LARGE
    };
    let body = Bytes::from(serde_json::to_vec(&synth::marathon_apps(shape)).expect("json"));
    println!(
        "synthetic Marathon answer: {} apps, {} tasks, {:.1} MiB",
        shape.apps,
        tasks,
        body.len() as f64 / 1048576.0
    );
    let server = marathon::FakeMarathon::start(body).await;
    let config = config_for(&server.url());

    // Full fetch: start a fresh source five times and time the first publish.
    let mut full = Vec::new();
    for _ in 0..5 {
        let (publisher, snaps) = Publisher::new(config.clone());
        let token = CancellationToken::new();
        let started = Instant::now();
        let run = tokio::spawn(ferryman::discovery::run(
            config.clone(),
            publisher,
            token.clone(),
        ));
        assert!(
            wait_for(&snaps, |s| s.version > 0, Duration::from_secs(120)).await,
            "no first snapshot"
        );
        full.push(started.elapsed());
        token.cancel();
        let _ = run.await;
    }
    full.sort();
    println!(
        "full fetch+decode+build+publish of {tasks} tasks: median {}, min {}, max {} (5 runs)",
        ms(percentile(&full, 0.5)),
        ms(full[0]),
        ms(full[full.len() - 1])
    );

    // Event latency.
    let (publisher, snaps) = Publisher::new(config.clone());
    let token = CancellationToken::new();
    let run = tokio::spawn(ferryman::discovery::run(
        config.clone(),
        publisher,
        token.clone(),
    ));
    assert!(wait_for(&snaps, |s| s.version > 0, Duration::from_secs(120)).await);
    let first = snaps.load();
    let victims: Vec<(String, String)> = first
        .state
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Running)
        .take(events)
        .map(|t| (t.id.clone(), t.app_id.clone().unwrap_or_default()))
        .collect();
    let fetches_before = server.fetch_count();
    let mut lat = Vec::with_capacity(victims.len());
    for (task_id, app_id) in &victims {
        let data = format!(
            "{{\"eventType\":\"status_update_event\",\"timestamp\":\"2024-01-01T00:00:00.000Z\",\
             \"slaveId\":\"x\",\"taskId\":\"{task_id}\",\"taskStatus\":\"TASK_KILLING\",\"appId\":\"{app_id}\",\
             \"host\":\"10.0.0.1\",\"ports\":[],\"version\":\"2024-01-01T00:00:00.000Z\"}}"
        );
        let sent = Instant::now();
        server.send("status_update_event", &data);
        let id = task_id.clone();
        let seen = wait_for(
            &snaps,
            move |s| {
                s.state
                    .tasks
                    .get(&id)
                    .is_none_or(|t| t.state == TaskState::Killing)
            },
            Duration::from_secs(10),
        )
        .await;
        if seen {
            lat.push(sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    token.cancel();
    let _ = run.await;
    lat.sort();
    println!(
        "status_update_event → published snapshot ({} of {} events seen): p50 {}, p90 {}, p99 {}, max {}; \
         /v2/apps re-fetches during the run: {}",
        lat.len(),
        victims.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        server.fetch_count() - fetches_before
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}
