//! Discovery sources through the library API (`ferryman::discovery::run` with a `Publisher`),
//! against test servers in this process: a fake Marathon (`/v2/apps` + an SSE `/v2/events` the
//! test pushes events into) and fake Mesos masters, all on 127.0.0.1. Every wait is bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferryman::config::Config;
use ferryman::metrics::metrics;
use ferryman::model::{ClusterState, Publisher, Snapshot, Snapshots, TaskState};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::Ferryman;

/// How long a change may take to show up in the published snapshot.
const CHANGE_WITHIN: Duration = Duration::from_secs(1);
/// How long a first snapshot or a recovery may take.
const READY_WITHIN: Duration = Duration::from_secs(5);

// === fake Marathon ===

/// What `/v2/apps` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppsMode {
    Normal,
    Status500,
    Html,
    Truncated,
    /// Accepts the request and never answers.
    Hang,
}

type SseTx = mpsc::UnboundedSender<Bytes>;

struct Shared {
    apps: Mutex<Vec<u8>>,
    mode: Mutex<AppsMode>,
    apps_hits: AtomicUsize,
    events_hits: AtomicUsize,
    sse: Mutex<Vec<SseTx>>,
    auth: Mutex<Vec<(String, Option<String>)>>,
    /// Mesos: `/master/state` body.
    mesos: Mutex<Vec<u8>>,
    mesos_hits: AtomicUsize,
}

struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeServer {
    async fn start(apps: Vec<u8>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        FakeServer::serve(listener, Arc::new(Shared::new(apps)))
    }

    /// Serves on `addr` again (after [`FakeServer::kill`]) with the same shared state.
    async fn restart(addr: SocketAddr, shared: Arc<Shared>) -> FakeServer {
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(l) => return FakeServer::serve(l, shared),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {addr} again: {last:?}");
    }

    fn serve(listener: TcpListener, shared: Arc<Shared>) -> FakeServer {
        let addr = listener.local_addr().expect("local addr");
        let sh = shared.clone();
        let accept = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the accept task closes them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sh = sh.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(sh.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FakeServer {
            addr,
            shared,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and closes every connection (the SSE stream breaks).
    async fn kill(self) -> (SocketAddr, Arc<Shared>) {
        let addr = self.addr;
        let shared = self.shared.clone();
        self.accept.abort();
        shared.sse.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (addr, shared)
    }

    fn set_apps(&self, body: Vec<u8>) {
        *self.shared.apps.lock().unwrap() = body;
    }

    fn set_mode(&self, mode: AppsMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    fn apps_hits(&self) -> usize {
        self.shared.apps_hits.load(Ordering::SeqCst)
    }

    /// Waits until no `/v2/apps` fetch happened for 800 ms (the coalesced re-fetches are done).
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let mut seen = self.apps_hits();
        loop {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let now = self.apps_hits();
            if now == seen {
                return;
            }
            seen = now;
            assert!(
                tokio::time::Instant::now() < deadline,
                "fetches never settled"
            );
        }
    }

    /// Waits until `n` event streams are open.
    async fn wait_sse(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            {
                let mut list = self.shared.sse.lock().unwrap();
                list.retain(|tx| !tx.is_closed());
                if list.len() >= n {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event stream connected within {READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends raw SSE text to every open stream.
    fn push_raw(&self, text: &str) {
        let list = self.shared.sse.lock().unwrap();
        for tx in list.iter() {
            let _ = tx.send(Bytes::from(text.to_string()));
        }
    }

    /// Sends one named event.
    fn push(&self, event_type: &str, data: &serde_json::Value) {
        self.push_raw(&format!("event: {event_type}\ndata: {data}\n\n"));
    }

    /// Ends every open event stream (the server stays up).
    fn break_streams(&self) {
        self.shared.sse.lock().unwrap().clear();
    }
}

impl Shared {
    fn new(apps: Vec<u8>) -> Shared {
        Shared {
            apps: Mutex::new(apps),
            mode: Mutex::new(AppsMode::Normal),
            apps_hits: AtomicUsize::new(0),
            events_hits: AtomicUsize::new(0),
            sse: Mutex::new(Vec::new()),
            auth: Mutex::new(Vec::new()),
            mesos: Mutex::new(Vec::new()),
            mesos_hits: AtomicUsize::new(0),
        }
    }
}

/// An SSE body fed by a channel.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

fn full(status: u16, ctype: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .expect("response")
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    sh.auth.lock().unwrap().push((path.clone(), auth));
    match path.as_str() {
        "/v2/apps" => {
            sh.apps_hits.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                req.uri().query(),
                Some("embed=apps.tasks&embed=apps.readiness")
            );
            let mode = *sh.mode.lock().unwrap();
            let body = sh.apps.lock().unwrap().clone();
            Ok(match mode {
                AppsMode::Normal => full(200, "application/json", body),
                AppsMode::Status500 => full(500, "text/plain", "boom"),
                AppsMode::Html => full(
                    200,
                    "text/html",
                    "<html><body>Marathon is starting</body></html>",
                ),
                AppsMode::Truncated => {
                    let cut = body.len() / 2;
                    full(200, "application/json", body[..cut].to_vec())
                }
                AppsMode::Hang => std::future::pending().await,
            })
        }
        "/v2/events" => {
            sh.events_hits.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                req.headers().get("accept").and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            assert_eq!(
                req.uri().query(),
                Some(
                    "event_type=status_update_event&event_type=health_status_changed_event&event_type=api_post_event"
                )
            );
            let (tx, rx) = mpsc::unbounded_channel();
            // A comment first, as proxies' keepalives look.
            let _ = tx.send(Bytes::from_static(b": hello\n\n"));
            sh.sse.lock().unwrap().push(tx);
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(ChannelBody(rx).boxed())
                .expect("response"))
        }
        "/master/state" => {
            sh.mesos_hits.fetch_add(1, Ordering::SeqCst);
            let body = sh.mesos.lock().unwrap().clone();
            Ok(full(200, "application/json", body))
        }
        _ => Ok(full(404, "text/plain", "not found")),
    }
}

// === Marathon answers ===

const APP_VERSION: &str = "2024-01-01T00:00:00.000Z";

/// A task of the app `/web` in the `/v2/apps` answer.
#[derive(Clone)]
struct T {
    id: &'static str,
    host: &'static str,
    port: u16,
    alive: bool,
}

fn t(id: &'static str, host: &'static str, port: u16) -> T {
    T {
        id,
        host,
        port,
        alive: true,
    }
}

/// `/v2/apps?embed=apps.tasks` with one app `/web` (one port definition, service port 10000,
/// a TCP health check) and `tasks`, each running on agent `agent-<host>`.
fn apps_answer(tasks: &[T]) -> Vec<u8> {
    apps_answer_with(tasks, json!({}))
}

/// [`apps_answer`] with `port_labels` on the port definition (e.g. `VIP_0`).
fn apps_answer_with(tasks: &[T], port_labels: serde_json::Value) -> Vec<u8> {
    let tasks: Vec<serde_json::Value> = tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "appId": "/web", "host": t.host,
                "slaveId": format!("agent-{}", t.host), "ports": [t.port],
                "state": "TASK_RUNNING", "startedAt": "2024-01-01T00:00:01.000Z",
                "stagedAt": "2024-01-01T00:00:00.500Z", "version": APP_VERSION,
                "healthCheckResults": [{"alive": t.alive, "taskId": t.id}]
            })
        })
        .collect();
    serde_json::to_vec(&json!({"apps": [{
        "id": "/web", "instances": tasks.len(), "version": APP_VERSION,
        "labels": {"team": "a"},
        "portDefinitions": [{"port": 10000, "protocol": "tcp", "name": "http", "labels": port_labels}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 5}],
        "tasks": tasks
    }]}))
    .expect("json")
}

fn status_event(task_id: &str, status: &str, host: &str, port: u16) -> serde_json::Value {
    json!({
        "eventType": "status_update_event", "timestamp": "2024-01-01T00:01:00.000Z",
        "slaveId": format!("agent-{host}"), "taskId": task_id, "taskStatus": status,
        "appId": "/web", "host": host, "ports": [port], "version": APP_VERSION
    })
}

// === harness ===

/// A Marathon source config; `extra` may set `resync_after` (default here 5 s) and more keys.
fn marathon_config(urls: &[String], extra: &str) -> Arc<Config> {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let resync = if extra.contains("resync_after") {
        ""
    } else {
        "resync_after = \"5s\"\n"
    };
    let text = format!(
        "[discovery]\nsource = \"marathon\"\nmarathon = [{}]\npoll_interval = \"200ms\"\n\
         {resync}connect_timeout = \"200ms\"\nrequest_timeout = \"500ms\"\n{extra}",
        list.join(", ")
    );
    Arc::new(Config::parse(&text).expect("test config"))
}

/// A running `discovery::run`.
struct Running {
    snapshots: Snapshots,
    token: CancellationToken,
    handle: JoinHandle<Result<(), ferryman::discovery::Error>>,
}

impl Running {
    fn start(config: Arc<Config>) -> Running {
        let (publisher, snapshots) = Publisher::new(config.clone());
        let token = CancellationToken::new();
        let handle = tokio::spawn(ferryman::discovery::run(config, publisher, token.clone()));
        Running {
            snapshots,
            token,
            handle,
        }
    }

    /// Waits until the published snapshot satisfies `pred`.
    async fn wait(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        let mut rx = self.snapshots.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                return s;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!(
                    "{what}: not seen within {within:?}; last snapshot v{} has tasks {:?}",
                    s.version,
                    task_ids(&s.state)
                ),
            }
        }
    }

    /// Cancels and checks that `run` returns promptly and cleanly.
    async fn stop(self) {
        self.token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), self.handle)
            .await
            .expect("discovery::run returns within 2 s of shutdown")
            .expect("no panic");
        assert!(r.is_ok(), "{r:?}");
    }
}

fn task_ids(s: &ClusterState) -> Vec<String> {
    s.tasks.keys().cloned().collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn errors(source: &str, kind: &str) -> u64 {
    metrics()
        .discovery_errors
        .with_label_values(&[source, kind])
        .get()
}

/// Waits until `f()` is true.
async fn eventually(within: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === tests ===

/// (1) first snapshot, (2) patches from status and health events arrive at once (before any
/// re-fetch), including a data-only event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_first_snapshot_then_events_patch_at_once() {
    let server = FakeServer::start(apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "localhost", 31002),
    ]))
    .await;
    let run = Running::start(marathon_config(&[server.url()], ""));

    let s = run
        .wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.1", "web.2"]));
    let w1 = &s.state.tasks["web.1"];
    assert_eq!(w1.app_id.as_deref(), Some("/web"));
    assert_eq!(w1.state, TaskState::Running);
    assert_eq!(w1.host_ports, vec![31001]);
    assert_eq!(w1.healthy, Some(true));
    // The agent named `localhost` was resolved in the discovery layer.
    assert_eq!(
        s.state.agents["agent-localhost"].ip,
        Some("127.0.0.1".parse().unwrap())
    );
    server.wait_sse(1).await;

    // TASK_KILLED removes web.1 before any re-fetch can have run.
    server.settle().await;
    server.set_apps(apps_answer(&[t("web.2", "localhost", 31002)]));
    let hits = server.apps_hits();
    server.push(
        "status_update_event",
        &status_event("web.1", "TASK_KILLED", "127.0.0.1", 31001),
    );
    run.wait(CHANGE_WITHIN, "web.1 removed", |s| {
        !s.state.tasks.contains_key("web.1")
    })
    .await;
    assert_eq!(
        server.apps_hits(),
        hits,
        "applied as a patch, not by a re-fetch"
    );

    // A new TASK_RUNNING task appears with its host port, also as a patch.
    server.settle().await;
    server.set_apps(apps_answer(&[
        t("web.2", "localhost", 31002),
        t("web.3", "127.0.0.1", 31003),
    ]));
    let hits = server.apps_hits();
    server.push(
        "status_update_event",
        &status_event("web.3", "TASK_RUNNING", "127.0.0.1", 31003),
    );
    let s = run
        .wait(CHANGE_WITHIN, "web.3 added", |s| {
            s.state.tasks.contains_key("web.3")
        })
        .await;
    assert_eq!(
        server.apps_hits(),
        hits,
        "applied as a patch, not by a re-fetch"
    );
    let w3 = &s.state.tasks["web.3"];
    assert_eq!(w3.host_ports, vec![31003]);
    assert_eq!(w3.agent_id, "agent-127.0.0.1");
    assert_eq!(w3.state, TaskState::Running);
    assert_eq!(
        s.state.agents["agent-127.0.0.1"].ip,
        Some("127.0.0.1".parse().unwrap())
    );

    // Health, by legacy instance id `web.marathon-2` → task `web.2`, sent data-only (old Marathon).
    server.settle().await;
    let mut sick = t("web.2", "localhost", 31002);
    sick.alive = false;
    server.set_apps(apps_answer(&[sick, t("web.3", "127.0.0.1", 31003)]));
    let hits = server.apps_hits();
    let health = json!({"eventType": "health_status_changed_event", "appId": "/web",
        "instanceId": "web.marathon-2", "version": APP_VERSION, "alive": false});
    server.push_raw(&format!("data: {health}\r\n\r\n"));
    run.wait(CHANGE_WITHIN, "web.2 unhealthy", |s| {
        s.state
            .tasks
            .get("web.2")
            .is_some_and(|t| t.healthy == Some(false))
    })
    .await;
    assert_eq!(
        server.apps_hits(),
        hits,
        "applied as a patch, not by a re-fetch"
    );

    // TASK_KILLING marks the task.
    server.settle().await;
    server.push(
        "status_update_event",
        &status_event("web.3", "TASK_KILLING", "127.0.0.1", 31003),
    );
    run.wait(CHANGE_WITHIN, "web.3 killing", |s| {
        s.state
            .tasks
            .get("web.3")
            .is_some_and(|t| t.state == TaskState::Killing)
    })
    .await;
    run.stop().await;
}

/// (3) a burst of 1000 events costs a handful of `/v2/apps` fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_event_burst_is_coalesced() {
    let server = FakeServer::start(apps_answer(&[t("web.1", "127.0.0.1", 31001)])).await;
    let run = Running::start(marathon_config(&[server.url()], ""));
    run.wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
        .await;
    server.wait_sse(1).await;
    // Let the start-up fetches (initial + after the stream connected) finish.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = server.apps_hits();
    let ev = status_event("web.1", "TASK_RUNNING", "127.0.0.1", 31001);
    for _ in 0..1000 {
        server.push("status_update_event", &ev);
    }
    eventually(Duration::from_secs(2), "a re-fetch after the burst", || {
        server.apps_hits() > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fetches = server.apps_hits() - before;
    eprintln!("1000 events -> {fetches} /v2/apps fetches");
    assert!(
        (1..10).contains(&fetches),
        "1000 events caused {fetches} fetches"
    );
    run.stop().await;
}

/// (4) the server dies: the last state stays and errors are counted; it comes back on the same
/// port: changes arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_outage_keeps_state_and_resumes() {
    let server = FakeServer::start(apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "127.0.0.1", 31002),
    ]))
    .await;
    let run = Running::start(marathon_config(&[server.url()], "resync_after = \"300ms\""));
    let first = run
        .wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
        .await;
    server.wait_sse(1).await;

    let connect_before = errors("marathon", "connect");
    let stream_before = errors("marathon", "stream");
    let (addr, shared) = server.kill().await;
    eventually(Duration::from_secs(3), "errors counted while down", || {
        errors("marathon", "connect") > connect_before
            && errors("marathon", "stream") > stream_before
    })
    .await;
    let now = run.snapshots.load();
    assert_eq!(
        task_ids(&now.state),
        task_ids(&first.state),
        "last good state kept"
    );

    *shared.apps.lock().unwrap() = apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "127.0.0.1", 31002),
        t("web.4", "127.0.0.1", 31004),
    ]);
    let server = FakeServer::restart(addr, shared).await;
    run.wait(READY_WITHIN, "resumed after restart", |s| {
        s.state.tasks.contains_key("web.4")
    })
    .await;
    // And events flow again on the new stream.
    server.wait_sse(1).await;
    server.push(
        "status_update_event",
        &status_event("web.1", "TASK_KILLED", "127.0.0.1", 31001),
    );
    run.wait(CHANGE_WITHIN, "event after restart", |s| {
        !s.state.tasks.contains_key("web.1")
    })
    .await;
    run.stop().await;
}

/// (5) bad answers (500, HTML, truncated JSON, a hanging server, a broken event stream) keep the
/// last good state and count the right kind of error; a good answer then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_bad_answers_keep_last_good_state() {
    let server = FakeServer::start(apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "127.0.0.1", 31002),
    ]))
    .await;
    let run = Running::start(marathon_config(&[server.url()], "resync_after = \"200ms\""));
    let first = run
        .wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
        .await;
    let good = task_ids(&first.state);

    // The stream is silent: the 200 ms resync re-fetches, and each re-fetch meets a bad answer.
    for (mode, kind) in [
        (AppsMode::Status500, "http_status"),
        (AppsMode::Html, "decode"),
        (AppsMode::Truncated, "decode"),
        (AppsMode::Hang, "timeout"),
    ] {
        let before = errors("marathon", kind);
        server.set_mode(mode);
        eventually(
            Duration::from_secs(4),
            &format!("{mode:?} counted as {kind}"),
            || errors("marathon", kind) > before,
        )
        .await;
        assert_eq!(
            task_ids(&run.snapshots.load().state),
            good,
            "{mode:?}: last good state kept"
        );
    }

    // A broken event stream is counted and reconnected.
    server.set_mode(AppsMode::Normal);
    server.wait_sse(1).await;
    let before = errors("marathon", "stream");
    let opened = server.shared.events_hits.load(Ordering::SeqCst);
    server.push_raw("event: status_update_event\ndata: {\"taskId\": \"web.1\", \"tr");
    server.break_streams();
    eventually(
        Duration::from_secs(3),
        "stream break counted and reconnected",
        || {
            errors("marathon", "stream") > before
                && server.shared.events_hits.load(Ordering::SeqCst) > opened
        },
    )
    .await;
    assert_eq!(task_ids(&run.snapshots.load().state), good);

    // Good again: a change is picked up.
    server.set_apps(apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "127.0.0.1", 31002),
        t("web.5", "127.0.0.1", 31005),
    ]));
    run.wait(READY_WITHIN, "recovered", |s| {
        s.state.tasks.contains_key("web.5")
    })
    .await;
    run.stop().await;
}

/// (6) the first URL is down: the second serves, and stays preferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_fails_over_to_the_next_url() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let server = FakeServer::start(apps_answer(&[t("web.9", "127.0.0.1", 31009)])).await;
    let before = errors("marathon", "connect");
    let run = Running::start(marathon_config(
        &[format!("http://{dead}"), server.url()],
        "",
    ));
    let s = run
        .wait(READY_WITHIN, "served by the second URL", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.9"]));
    assert!(errors("marathon", "connect") > before);
    // The event stream also uses the working URL.
    server.wait_sse(1).await;
    server.push(
        "status_update_event",
        &status_event("web.9", "TASK_KILLED", "127.0.0.1", 31009),
    );
    run.wait(CHANGE_WITHIN, "event via the second URL", |s| {
        s.state.tasks.is_empty()
    })
    .await;
    run.stop().await;
}

/// (7) credentials: HTTP basic, or a DC/OS token, on both the REST call and the event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_sends_basic_auth_or_token() {
    for (extra, want) in [
        (
            "username = \"alice\"\npassword = \"s3cret\"",
            "Basic YWxpY2U6czNjcmV0",
        ),
        ("token = \"abc.def\"", "token=abc.def"),
    ] {
        let server = FakeServer::start(apps_answer(&[t("web.1", "127.0.0.1", 31001)])).await;
        let run = Running::start(marathon_config(&[server.url()], extra));
        run.wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
            .await;
        server.wait_sse(1).await;
        let seen = server.shared.auth.lock().unwrap().clone();
        for path in ["/v2/apps", "/v2/events"] {
            let got: Vec<_> = seen.iter().filter(|(p, _)| p == path).collect();
            assert!(!got.is_empty(), "no request to {path}");
            for (_, auth) in got {
                assert_eq!(auth.as_deref(), Some(want), "{path}");
            }
        }
        run.stop().await;
    }
}

/// (8) file source: loads, reloads on a rename-replace and on an in-place write, keeps the last
/// good state on garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_reloads_and_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.json");
    std::fs::write(&path, apps_answer(&[t("web.1", "127.0.0.1", 31001)])).unwrap();
    let config = Arc::new(
        Config::parse(&format!(
            "[discovery]\nsource = \"file\"\nfile = {:?}\npoll_interval = \"200ms\"\n",
            path.display().to_string()
        ))
        .unwrap(),
    );
    let run = Running::start(config);
    let s = run
        .wait(READY_WITHIN, "file loaded", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.1"]));

    // Editor style: write a temp file, rename over.
    let tmp = dir.path().join(".apps.json.swp");
    std::fs::write(
        &tmp,
        apps_answer(&[
            t("web.1", "127.0.0.1", 31001),
            t("web.2", "127.0.0.1", 31002),
        ]),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    run.wait(CHANGE_WITHIN, "reload after rename", |s| {
        s.state.tasks.len() == 2
    })
    .await;

    // Garbage: kept, counted.
    let before = errors("file", "decode");
    let version = run.snapshots.load().version;
    std::fs::write(&path, b"{\"apps\": [ {\"id\": ").unwrap();
    eventually(Duration::from_secs(2), "garbage counted", || {
        errors("file", "decode") > before
    })
    .await;
    let now = run.snapshots.load();
    assert_eq!(now.version, version);
    assert_eq!(task_ids(&now.state), ids(&["web.1", "web.2"]));

    // A Mesos /master/state answer in the same file is detected.
    std::fs::write(
        &path,
        mesos_answer("127.0.0.1:5050", "127.0.0.1:5050", &["m.1", "m.2"]),
    )
    .unwrap();
    run.wait(CHANGE_WITHIN, "reload as mesos", |s| {
        task_ids(&s.state) == ids(&["m.1", "m.2"])
    })
    .await;
    run.stop().await;
}

/// (8b) the watcher cannot start (the directory does not exist yet): polling every
/// `poll_interval` picks the file up once it appears, and its later changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_polls_when_the_watcher_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let path = sub.join("apps.json");
    let config = Arc::new(
        Config::parse(&format!(
            "[discovery]\nsource = \"file\"\nfile = {:?}\npoll_interval = \"100ms\"\n",
            path.display().to_string()
        ))
        .unwrap(),
    );
    let before = errors("file", "io");
    let run = Running::start(config);
    eventually(Duration::from_secs(2), "missing file counted", || {
        errors("file", "io") > before
    })
    .await;
    assert_eq!(run.snapshots.load().version, 0);
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&path, apps_answer(&[t("web.7", "127.0.0.1", 31007)])).unwrap();
    let s = run
        .wait(CHANGE_WITHIN, "file found by polling", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.7"]));
    std::fs::write(
        &path,
        apps_answer(&[
            t("web.7", "127.0.0.1", 31007),
            t("web.8", "127.0.0.1", 31008),
        ]),
    )
    .unwrap();
    run.wait(CHANGE_WITHIN, "change found by polling", |s| {
        s.state.tasks.contains_key("web.8")
    })
    .await;
    run.stop().await;
}

/// (9) the state file is written after publishing, and served at start when the source is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_written_and_loaded_when_source_down() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let extra = format!("state_file = {:?}", state_path.display().to_string());
    let server = FakeServer::start(apps_answer(&[
        t("web.1", "127.0.0.1", 31001),
        t("web.2", "127.0.0.1", 31002),
    ]))
    .await;
    let run = Running::start(marathon_config(&[server.url()], &extra));
    run.wait(READY_WITHIN, "first snapshot", |s| s.version > 0)
        .await;
    eventually(Duration::from_secs(3), "state file written", || {
        std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ClusterState>(&b).ok())
            .is_some_and(|s| task_ids(&s) == ids(&["web.1", "web.2"]))
    })
    .await;
    run.stop().await;
    drop(server);

    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let run = Running::start(marathon_config(&[format!("http://{dead}")], &extra));
    let s = run
        .wait(READY_WITHIN, "saved state served", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.1", "web.2"]));
    assert_eq!(s.state.tasks["web.2"].host_ports, vec![31002]);
    run.stop().await;
}

/// A minimal Mesos `/master/state`: master `pid`, `leader`, one Marathon framework whose running
/// tasks are `tasks`, one agent.
fn mesos_answer(pid: &str, leader: &str, tasks: &[&str]) -> Vec<u8> {
    let tasks: Vec<serde_json::Value> = tasks
        .iter()
        .map(|id| {
            json!({
                "id": id, "name": "web", "framework_id": "fw-1", "executor_id": "",
                "slave_id": "s1", "state": "TASK_RUNNING",
                "resources": {"cpus": 0.1, "mem": 32, "disk": 0, "ports": "[31000-31000]"},
                "statuses": [{"state": "TASK_RUNNING", "timestamp": 1700000000.0,
                    "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": "127.0.0.1"}]}]}}],
                "labels": []
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "version": "1.0.0", "pid": format!("master@{pid}"), "leader": format!("master@{leader}"),
        "hostname": "127.0.0.1",
        "frameworks": [{"id": "fw-1", "name": "marathon", "pid": "scheduler-1@127.0.0.1:40000",
            "hostname": "127.0.0.1", "active": true, "tasks": tasks, "completed_tasks": []}],
        "slaves": [{"id": "s1", "pid": "slave(1)@127.0.0.1:5051", "hostname": "127.0.0.1"}]
    }))
    .expect("json")
}

/// (10) the Mesos source polls `/master/state` and follows the `leader` a non-leading master
/// names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesos_polls_and_follows_the_leader() {
    let leader = FakeServer::start(Vec::new()).await;
    let follower = FakeServer::start(Vec::new()).await;
    let (l, f) = (leader.addr.to_string(), follower.addr.to_string());
    *leader.shared.mesos.lock().unwrap() = mesos_answer(&l, &l, &["web.1"]);
    // The follower knows no tasks and names the leader.
    *follower.shared.mesos.lock().unwrap() = mesos_answer(&f, &l, &[]);
    let config = Arc::new(
        Config::parse(&format!(
            "[discovery]\nsource = \"mesos\"\nmesos = [{:?}]\npoll_interval = \"200ms\"\n\
             connect_timeout = \"200ms\"\nrequest_timeout = \"500ms\"\n",
            follower.url()
        ))
        .unwrap(),
    );
    let run = Running::start(config);
    let s = run
        .wait(READY_WITHIN, "state from the leader", |s| s.version > 0)
        .await;
    assert_eq!(task_ids(&s.state), ids(&["web.1"]));
    assert!(leader.shared.mesos_hits.load(Ordering::SeqCst) >= 1);

    // Polling: a change on the leader shows up within a couple of poll intervals, and the leader
    // is asked directly (the follower is not asked again while the leader answers).
    let follower_hits = follower.shared.mesos_hits.load(Ordering::SeqCst);
    *leader.shared.mesos.lock().unwrap() = mesos_answer(&l, &l, &["web.1", "web.2"]);
    run.wait(CHANGE_WITHIN, "polled change", |s| s.state.tasks.len() == 2)
        .await;
    assert_eq!(
        follower.shared.mesos_hits.load(Ordering::SeqCst),
        follower_hits
    );
    run.stop().await;
}

// === end to end: the real binary's /v1/vips ===

/// The backends `(port, weight)` of the named VIP `web.marathon.l4lb.thisdcos.directory:80` in
/// the binary's `/v1/vips`, or `None` when that VIP is not listed.
async fn web_vip_backends(f: &Ferryman) -> Option<Vec<(u64, u64)>> {
    let r = f.get("/v1/vips").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let vips: serde_json::Value = serde_json::from_str(&r.body).expect("/v1/vips is JSON");
    let vip = vips.as_array()?.iter().find(|v| {
        v["name"] == "web.marathon.l4lb.thisdcos.directory"
            && v["port"] == 80
            && v["protocol"] == "tcp"
    })?;
    let mut backends: Vec<(u64, u64)> = vip["backends"]
        .as_array()?
        .iter()
        .map(|b| {
            assert_eq!(b["ip"], "127.0.0.1", "{b}");
            (
                b["port"].as_u64().unwrap_or(0),
                b["weight"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    backends.sort_unstable();
    Some(backends)
}

/// Polls `/v1/vips` until the web VIP has exactly `want`, failing after [`CHANGE_WITHIN`].
async fn expect_web_vip(f: &Ferryman, what: &str, want: &[(u64, u64)]) {
    let deadline = tokio::time::Instant::now() + CHANGE_WITHIN;
    loop {
        let got = web_vip_backends(f).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: /v1/vips not {want:?} within {CHANGE_WITHIN:?}; last {got:?}\nlog:\n{}",
            f.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary pointed at a test Marathon: scale, kill and health events change `/v1/vips`
/// within a second each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_events_change_v1_vips_of_the_binary_within_a_second() {
    let vip = json!({"VIP_0": "/web:80"});
    let server = FakeServer::start(apps_answer_with(
        &[
            t("web.1", "127.0.0.1", 31001),
            t("web.2", "127.0.0.1", 31002),
        ],
        vip.clone(),
    ))
    .await;
    let f = Ferryman::start(&format!(
        "[discovery]\nsource = \"marathon\"\nmarathon = [{:?}]\nresync_after = \"5s\"\n",
        server.url()
    ));
    f.wait_ready(READY_WITHIN).await;
    expect_web_vip(&f, "first snapshot", &[(31001, 1), (31002, 1)]).await;
    server.wait_sse(1).await;

    // Scale up: a new task starts.
    server.set_apps(apps_answer_with(
        &[
            t("web.1", "127.0.0.1", 31001),
            t("web.2", "127.0.0.1", 31002),
            t("web.3", "127.0.0.1", 31003),
        ],
        vip.clone(),
    ));
    server.push(
        "status_update_event",
        &status_event("web.3", "TASK_RUNNING", "127.0.0.1", 31003),
    );
    expect_web_vip(&f, "scale up", &[(31001, 1), (31002, 1), (31003, 1)]).await;

    // Kill: the backend goes.
    server.set_apps(apps_answer_with(
        &[
            t("web.2", "127.0.0.1", 31002),
            t("web.3", "127.0.0.1", 31003),
        ],
        vip.clone(),
    ));
    server.push(
        "status_update_event",
        &status_event("web.1", "TASK_KILLED", "127.0.0.1", 31001),
    );
    expect_web_vip(&f, "kill", &[(31002, 1), (31003, 1)]).await;

    // Health: web.2 fails its check and drains (weight 0, still listed).
    let mut sick = t("web.2", "127.0.0.1", 31002);
    sick.alive = false;
    server.set_apps(apps_answer_with(
        &[sick, t("web.3", "127.0.0.1", 31003)],
        vip.clone(),
    ));
    let health = json!({"eventType": "health_status_changed_event", "appId": "/web",
        "taskId": "web.2", "version": APP_VERSION, "alive": false});
    server.push("health_status_changed_event", &health);
    expect_web_vip(&f, "health", &[(31002, 0), (31003, 1)]).await;
}
