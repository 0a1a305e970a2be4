//! The edge on real loopback sockets with a stub handler (no proxy): listener reconcile,
//! hyper's limits and ours, the framing guard, the watchdog, `max_connections`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Edge, Handler, TlsConfig, conn};
use crate::config::Config;
use crate::health::{HealthPolicy, Registry};
use crate::l7::stats::Stats;
use crate::l7::{ConnInfo, Frontend, Table, proxy};
use crate::model::{App, ClusterState, Snapshot};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Answers `<frontend> tls=<bool> <path>`; `/slow` after 300 ms. Counts calls (a request the
/// edge refused must not reach it).
#[derive(Default)]
struct Stub {
    calls: AtomicUsize,
}

impl Handler for Stub {
    fn handle(
        &self,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<proxy::Body>> + Send + 'static {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let path = req.uri().path().to_string();
        if path == "/echo" {
            return futures_util::future::Either::Left(upgrade_to_echo(req));
        }
        futures_util::future::Either::Right(async move {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let text = format!("{:?} tls={} {path}", conn.frontend, conn.tls);
            Response::new(
                Full::new(Bytes::from(text))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        })
    }
}

/// Answers 101 and echoes the upgraded stream (what a WebSocket tunnel does to the edge).
async fn upgrade_to_echo(mut req: Request<Incoming>) -> Response<proxy::Body> {
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("echo"),
    );
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    r
}

fn config() -> Config {
    let mut c = Config::default();
    c.l4.bind = LOCALHOST;
    c.l7.http = Some(SocketAddr::new(LOCALHOST, 0));
    c.l7.https = None;
    c.l7.header_read_timeout = Duration::from_secs(5);
    c.l7.idle_timeout = Duration::from_secs(30);
    c
}

struct Running {
    edge: Edge<Stub>,
    stub: Arc<Stub>,
    shutdown: CancellationToken,
}

impl Running {
    fn start(config: &Config) -> Running {
        Self::start_tls(config, None)
    }

    /// With statistics of its own (tests that read a process-wide gauge).
    fn start_private(config: &Config) -> Running {
        Self::start_with(config, None, Stats::private())
    }

    fn start_tls(config: &Config, tls: Option<TlsConfig>) -> Running {
        Self::start_with(config, tls, Stats::new())
    }

    fn start_with(config: &Config, tls: Option<TlsConfig>, stats: Stats) -> Running {
        let stub = Arc::new(Stub::default());
        let shutdown = CancellationToken::new();
        let edge = Edge::start(config, stats, tls, stub.clone(), &shutdown)
            .expect("edge starts on 127.0.0.1:0");
        Running {
            edge,
            stub,
            shutdown,
        }
    }

    fn http(&self) -> SocketAddr {
        self.edge.local_addr(Frontend::Http).expect("l7.http bound")
    }

    fn calls(&self) -> usize {
        self.stub.calls.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        // Idle and handshaking connections go at once; only in-flight requests are waited for.
        tokio::time::timeout(Duration::from_secs(3), self.edge.shutdown())
            .await
            .expect("edge shuts down");
    }
}

fn app(id: &str, port: u16, labels: &[(&str, &str)]) -> App {
    App {
        id: id.to_string(),
        service_ports: vec![port],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..App::default()
    }
}

fn state(apps: Vec<App>) -> ClusterState {
    let mut state = ClusterState::default();
    for a in apps {
        state.apps.insert(a.id.clone(), Arc::new(a));
    }
    state
}

const HTTP_APP: &[(&str, &str)] = &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_MODE", "http")];

/// A table serving http-mode apps on `ports` (no servers: the listeners are what matters).
fn table(config: &Config, ports: &[u16]) -> Table {
    let apps = ports
        .iter()
        .map(|&p| app(&format!("/app{p}"), p, HTTP_APP))
        .collect();
    let snapshot = Snapshot {
        version: 1,
        state: Arc::new(state(apps)),
        ..Snapshot::default()
    };
    let registry = Registry::private(HealthPolicy::from_config(&config.l4));
    let (t, errors) = Table::build(&snapshot, config, &registry, &Stats::new(), &|_| Ok(()));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(t.routes.ports().collect::<Vec<_>>(), ports);
    t
}

/// Free loopback ports (bound and released; the tests bind them again at once).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect();
    ports.sort_unstable();
    ports
}

/// One HTTP/1.1 response: status, headers (lowercased names) and a `Content-Length` body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Reads exactly one response (byte by byte up to the end of the head, so that a pipelined
/// next response stays in the socket).
async fn read_reply(s: &mut TcpStream) -> Option<Reply> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(Duration::from_secs(5), s.read_u8())
            .await
            .ok()?
            .ok()?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Whether the peer closed the connection within `within` (EOF or reset on read).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn get(s: &mut TcpStream, path: &str) -> Option<Reply> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    read_reply(s).await
}

/// Connects once `addr` listens (within 5 s).
async fn connect_eventually(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "{addr} never listened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn reconcile_opens_and_closes_ports_without_touching_others() {
    let config = config();
    let mut run = Running::start(&config);
    let [p1, p2, p3] = free_ports(3)[..] else {
        unreachable!()
    };
    run.edge.reconcile(&table(&config, &[p1, p2])).await;
    assert_eq!(run.edge.ports().collect::<Vec<_>>(), [p1, p2]);
    let mut on_p1 = connect(SocketAddr::new(LOCALHOST, p1)).await;
    let mut on_p2 = connect(SocketAddr::new(LOCALHOST, p2)).await;
    let r = get(&mut on_p2, "/x").await.expect("p2 answers");
    assert_eq!(r.body, format!("Port({p2}) tls=false /x"));

    // A request in flight on p1 when p1 goes.
    on_p1
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    run.edge.reconcile(&table(&config, &[p2, p3])).await;
    assert_eq!(run.edge.ports().collect::<Vec<_>>(), [p2, p3]);

    let r = read_reply(&mut on_p1)
        .await
        .expect("in-flight request finishes");
    assert_eq!(
        (r.status, r.body),
        (200, format!("Port({p1}) tls=false /slow"))
    );
    assert!(
        closed_within(&mut on_p1, Duration::from_secs(2)).await,
        "the connection of a removed listener closes after its request"
    );
    assert!(
        TcpStream::connect((LOCALHOST, p1)).await.is_err(),
        "p1 no longer listens"
    );
    // p2's listener was left alone: its keep-alive connection is still served.
    let r = get(&mut on_p2, "/y")
        .await
        .expect("p2 keeps its connection");
    assert_eq!(r.body, format!("Port({p2}) tls=false /y"));
    let mut on_p3 = connect(SocketAddr::new(LOCALHOST, p3)).await;
    let r = get(&mut on_p3, "/z").await.expect("p3 answers");
    assert_eq!(r.body, format!("Port({p3}) tls=false /z"));
    run.stop().await;
}

#[tokio::test]
async fn vhost_listener_keeps_its_socket_across_100_table_changes() {
    let config = config();
    let mut run = Running::start(&config);
    let addr = run.http();
    let mut kept = connect(addr).await;
    assert_eq!(get(&mut kept, "/").await.expect("served").status, 200);
    let ports = free_ports(4);
    for i in 0..100 {
        let set = if i % 2 == 0 { &ports[..2] } else { &ports[1..] };
        run.edge.reconcile(&table(&config, set)).await;
        assert_eq!(run.edge.local_addr(Frontend::Http), Some(addr));
    }
    // The connection opened before the changes is still served by the same listener.
    let r = get(&mut kept, "/after")
        .await
        .expect("kept connection served");
    assert_eq!(r.body, "Http tls=false /after");
    assert_eq!(run.edge.ports().collect::<Vec<_>>(), &ports[1..]);
    run.stop().await;
}

#[tokio::test]
async fn oversize_head_and_too_many_headers_get_431_and_close() {
    let mut config = config();
    config.l7.max_header_bytes = 4096;
    config.l7.max_headers = 10;
    let run = Running::start(&config);

    let mut s = connect(run.http()).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    s.write_all(big.as_bytes()).await.expect("write");
    assert_eq!(read_reply(&mut s).await.expect("reply").status, 431);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);

    // Never completed: 431 as soon as the limit is passed.
    let mut s = connect(run.http()).await;
    let partial = format!("GET / HTTP/1.1\r\nX-Big: {}", "b".repeat(5000));
    s.write_all(partial.as_bytes()).await.expect("write");
    assert_eq!(read_reply(&mut s).await.expect("reply").status, 431);

    let mut s = connect(run.http()).await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..10 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    s.write_all(many.as_bytes()).await.expect("write");
    assert_eq!(read_reply(&mut s).await.expect("reply").status, 431);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    assert_eq!(run.calls(), 0, "no request reached the handler");

    // Within both limits: served.
    let mut s = connect(run.http()).await;
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(3000)
    );
    s.write_all(ok.as_bytes()).await.expect("write");
    assert_eq!(read_reply(&mut s).await.expect("reply").status, 200);
    run.stop().await;
}

#[tokio::test]
async fn conflicting_framing_and_bad_request_lines_get_400_and_close() {
    let run = Running::start(&config());
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "HELLO\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
    ] {
        let mut s = connect(run.http()).await;
        s.write_all(head.as_bytes()).await.expect("write");
        let r = read_reply(&mut s).await.expect("reply");
        assert_eq!(r.status, 400, "{head:?}");
        assert_eq!(
            r.headers.get("connection").map(String::as_str),
            Some("close"),
            "{head:?}"
        );
        assert!(
            closed_within(&mut s, Duration::from_secs(2)).await,
            "{head:?}: connection closed"
        );
    }
    assert_eq!(run.calls(), 0, "no request reached the handler");

    // Behind a good request and a chunked one on the same connection: those two are served,
    // the conflicting third is refused.
    let mut s = connect(run.http()).await;
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nab\r\n\r\n0\r\n\r\n\
          POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
    )
    .await
    .expect("write");
    let statuses = [
        read_reply(&mut s).await.expect("1").status,
        read_reply(&mut s).await.expect("2").status,
        read_reply(&mut s).await.expect("3").status,
    ];
    assert_eq!(statuses, [200, 200, 400]);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    assert_eq!(run.calls(), 2);
    run.stop().await;
}

/// Writes `head` one byte per 100 ms until the server closes; returns when it closed.
async fn trickle(mut s: TcpStream, head: &'static [u8]) -> Option<Instant> {
    for &b in head.iter().cycle().take(200) {
        if s.write_all(&[b]).await.is_err() {
            return Some(Instant::now());
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn slowloris_is_closed_after_header_read_timeout_while_others_are_served() {
    let mut config = config();
    config.l7.header_read_timeout = Duration::from_secs(1);
    let run = Running::start(&config);
    let addr = run.http();
    let start = Instant::now();
    // First request of a connection (the edge's deadline), and after a served request
    // (hyper's header timer).
    let first = tokio::spawn(trickle(
        connect(addr).await,
        b"GET / HTTP/1.1\r\nX-A: aaaaaaaa",
    ));
    let mut second = connect(addr).await;
    assert_eq!(get(&mut second, "/").await.expect("served").status, 200);
    let second_start = Instant::now();
    let second = tokio::spawn(trickle(second, b"GET / HTTP/1.1\r\nX-A: aaaaaaaa"));
    // Meanwhile another client is served, on new and kept connections.
    let mut other = connect(addr).await;
    for _ in 0..6 {
        let t = Instant::now();
        assert_eq!(get(&mut other, "/").await.expect("served").status, 200);
        assert!(t.elapsed() < Duration::from_millis(500));
        let mut fresh = connect(addr).await;
        assert_eq!(get(&mut fresh, "/").await.expect("served").status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let closed = first
        .await
        .expect("task")
        .expect("first slow client closed");
    let took = closed - start;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "first: {took:?}"
    );
    let closed = second
        .await
        .expect("task")
        .expect("second slow client closed");
    let took = closed - second_start;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "second: {took:?}"
    );
    run.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    let mut config = config();
    config.l7.header_read_timeout = Duration::from_millis(500);
    let run = Running::start(&config);
    let mut s = connect(run.http()).await;
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    run.stop().await;
}

#[tokio::test]
async fn max_connections_holds_until_a_connection_ends() {
    let mut config = config();
    config.l7.max_connections = 2;
    let mut run = Running::start(&config);
    let [port] = free_ports(1)[..] else {
        unreachable!()
    };
    run.edge.reconcile(&table(&config, &[port])).await;
    // The limit is over every listener.
    let mut a = connect(run.http()).await;
    let mut b = connect(SocketAddr::new(LOCALHOST, port)).await;
    assert_eq!(get(&mut a, "/").await.expect("a").status, 200);
    assert_eq!(get(&mut b, "/").await.expect("b").status, 200);
    let mut c = connect(run.http()).await;
    c.write_all(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(400), c.read(&mut buf))
            .await
            .is_err(),
        "a third connection waits"
    );
    assert_eq!(run.calls(), 2);
    drop(a);
    let r = read_reply(&mut c).await.expect("served once a slot frees");
    assert_eq!(r.body, "Http tls=false /c");
    run.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_idle_timeout() {
    let mut config = config();
    config.l7.idle_timeout = Duration::from_millis(400);
    let run = Running::start(&config);
    let mut s = connect(run.http()).await;
    assert_eq!(get(&mut s, "/").await.expect("served").status, 200);
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(350), "{took:?}");
    // A long request is not idle time.
    let mut config = config.clone();
    config.l7.idle_timeout = Duration::from_millis(200);
    let run2 = Running::start(&config);
    let mut s = connect(run2.http()).await;
    assert_eq!(get(&mut s, "/slow").await.expect("served").status, 200);
    run.stop().await;
    run2.stop().await;
}

/// Waits up to `within` for `n` parked connections.
async fn parked_becomes(run: &Running, n: i64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while run.edge.ctx.stats.parked_now() != n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn idle_http1_connections_park_and_wake_for_the_next_request() {
    let config = config();
    let run = Running::start_private(&config);
    let mut s = connect(run.http()).await;
    let t = Instant::now();
    assert_eq!(get(&mut s, "/1").await.expect("served").status, 200);
    assert!(
        parked_becomes(&run, 1, Duration::from_secs(3)).await,
        "parked"
    );
    assert!(t.elapsed() >= conn::PARK_AFTER, "not before PARK_AFTER");

    // A request with a body wakes it; hyper takes over the same socket.
    s.write_all(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let r = read_reply(&mut s).await.expect("served after parking");
    assert_eq!((r.status, r.body.as_str()), (200, "Http tls=false /2"));
    assert!(parked_becomes(&run, 0, Duration::from_millis(500)).await);
    assert!(
        parked_becomes(&run, 1, Duration::from_secs(3)).await,
        "parked again"
    );

    // A head that arrives in pieces is read whole.
    s.write_all(b"GET /3 HTTP/1.1\r\nHo").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"st: a\r\n\r\n").await.expect("write");
    let r = read_reply(&mut s).await.expect("served");
    assert_eq!((r.status, r.body.as_str()), (200, "Http tls=false /3"));

    // The framing guard follows the connection across parks: the fourth request, conflicting,
    // is refused and the connection closed.
    assert!(parked_becomes(&run, 1, Duration::from_secs(3)).await);
    s.write_all(
        b"POST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    assert_eq!(read_reply(&mut s).await.expect("reply").status, 400);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    assert_eq!(run.calls(), 3);
    assert_eq!(run.edge.ctx.stats.parked_now(), 0);
    run.stop().await;

    // A parked connection still closes at the idle timeout.
    let mut config = config.clone();
    config.l7.idle_timeout = Duration::from_millis(1600);
    let run = Running::start_private(&config);
    let mut s = connect(run.http()).await;
    let t = Instant::now();
    assert_eq!(get(&mut s, "/").await.expect("served").status, 200);
    assert!(parked_becomes(&run, 1, Duration::from_secs(3)).await);
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(parked_becomes(&run, 0, Duration::from_millis(500)).await);
    run.stop().await;
}

/// HTTP/2 with prior knowledge on the plain listener, through hyper's client.
#[tokio::test]
async fn http2_prior_knowledge_is_served_and_idles_out() {
    let mut config = config();
    config.l7.idle_timeout = Duration::from_millis(500);
    let run = Running::start(&config);
    let io = hyper_util::rt::TokioIo::new(connect(run.http()).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    for path in ["/a", "/b"] {
        let req = Request::get(format!("http://a{path}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 response");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("Http tls=false {path}"));
    }
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the idle h2 connection is closed by the edge")
        .expect("task")
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    run.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let run = Running::start(&config());
    let mut s = connect(run.http()).await;
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = run.http();
    let stub = run.stub.clone();
    let stopping = tokio::spawn(run.stop());
    let r = read_reply(&mut s)
        .await
        .expect("in-flight request finishes");
    assert_eq!(r.status, 200);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    stopping.await.expect("stopped");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
    assert_eq!(stub.calls.load(Ordering::SeqCst), 1);
}

/// A server configuration for `edge.test` (ALPN h2, http/1.1, as `tls::Certs` sets it) and a
/// client configuration trusting it that offers `alpn`.
fn tls_configs(alpn: &[&[u8]]) -> (TlsConfig, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["edge.test".to_string()])
        .expect("self-signed certificate");
    let cert = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = Arc::new(server);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tls: TlsConfig = Arc::new(move || server.clone());
    (tls, Arc::new(client))
}

async fn tls_connect(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = rustls_pki_types::ServerName::try_from("edge.test").expect("name");
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(client).connect(name, connect(addr).await),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

#[tokio::test]
async fn https_speaks_h2_by_alpn_and_http1_otherwise() {
    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
        (&[][..], http::Version::HTTP_11),
    ] {
        let mut config = config();
        config.l7.https = Some(SocketAddr::new(LOCALHOST, 0));
        let (tls, client) = tls_configs(alpn);
        let run = Running::start_tls(&config, Some(tls));
        let https = run.edge.local_addr(Frontend::Https).expect("https bound");

        // A client that fails its handshake, and one that never starts it, change nothing.
        let mut junk = connect(https).await;
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        assert!(closed_within(&mut junk, Duration::from_secs(2)).await);
        let _silent = connect(https).await;

        let io = hyper_util::rt::TokioIo::new(tls_connect(https, client).await);
        let req = Request::get("https://edge.test/t")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = if version == http::Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("response")
        };
        assert_eq!(resp.version(), version, "ALPN {alpn:?}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, "Https tls=true /t");
        assert_eq!(run.calls(), 1);
        run.stop().await;
    }
}

#[tokio::test]
async fn tls_handshake_is_bounded_by_header_read_timeout() {
    let mut config = config();
    config.l7.https = Some(SocketAddr::new(LOCALHOST, 0));
    config.l7.header_read_timeout = Duration::from_millis(400);
    let (tls, _) = tls_configs(&[]);
    let run = Running::start_tls(&config, Some(tls));
    let mut s = connect(run.edge.local_addr(Frontend::Https).expect("bound")).await;
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    run.stop().await;
}

#[tokio::test]
async fn a_taken_vhost_address_fails_start_naming_the_key() {
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let mut config = config();
    config.l7.http = Some(taken.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let err = Edge::start(
        &config,
        Stats::new(),
        None,
        Arc::new(Stub::default()),
        &shutdown,
    )
    .err()
    .expect("bind fails");
    assert!(
        format!("{err:#}").starts_with("l7.http 127.0.0.1:"),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_service_port_that_cannot_bind_is_retried_with_the_next_table() {
    let config = config();
    let mut run = Running::start(&config);
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let [other] = free_ports(1)[..] else {
        unreachable!()
    };
    let mut ports = [port, other];
    ports.sort_unstable();
    let t = table(&config, &ports);
    run.edge.reconcile(&t).await;
    assert_eq!(run.edge.ports().collect::<Vec<_>>(), [other]);
    drop(taken);
    run.edge.reconcile(&t).await;
    assert_eq!(run.edge.ports().collect::<Vec<_>>(), ports);
    let mut s = connect(SocketAddr::new(LOCALHOST, port)).await;
    assert_eq!(get(&mut s, "/").await.expect("served").status, 200);
    run.stop().await;
}

#[test]
fn control_logs_skipped_apps_and_template_labels_once() {
    let config = Arc::new(config());
    let shared = crate::l7::Shared::new(config.clone()).expect("shared state");
    let mut control = super::Control::default();
    let bad = app(
        "/bad",
        10001,
        &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_PORT", "abc")],
    );
    let templated = |group: &'static str| {
        app(
            if group == "external" {
                "/tpl"
            } else {
                "/other"
            },
            10002,
            &[
                ("HAPROXY_GROUP", group),
                ("HAPROXY_0_MODE", "http"),
                ("HAPROXY_0_FRONTEND_HEAD", "x"),
                ("HAPROXY_0_BACKEND_HEAD", "y"),
            ],
        )
    };
    let snapshot = |version, apps| Snapshot {
        version,
        state: Arc::new(state(apps)),
        ..Snapshot::default()
    };
    let s1 = snapshot(
        1,
        vec![bad.clone(), templated("external"), templated("internal")],
    );
    let (_, errors) = Table::build(&s1, &config, &shared.registry, &shared.stats, &|_| Ok(()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(control.log_skipped(&errors), 1);
    assert_eq!(
        control.log_skipped(&errors),
        0,
        "same errors: nothing logged"
    );
    assert_eq!(control.log_skipped(&[]), 0);
    assert_eq!(control.log_skipped(&errors), 1, "back again: logged again");

    assert_eq!(
        control.unsupported_labels(&s1, "external"),
        [("/tpl".to_string(), 2)],
        "counted per app in the group"
    );
    assert!(control.warned.contains("/tpl") && !control.warned.contains("/other"));
    let s2 = snapshot(2, vec![bad]);
    assert!(control.unsupported_labels(&s2, "external").is_empty());
    assert!(control.warned.is_empty(), "apps gone are forgotten");

    let table = control.apply(&shared, &s1);
    assert_eq!(shared.table.load().version, 1);
    assert_eq!(table.routes.ports().collect::<Vec<_>>(), [10002]);
}

/// `run` end to end with the real proxy: a service port opens with its first snapshot, a
/// route change elsewhere leaves it and the vhost listener alone, and shutdown ends `run`.
#[tokio::test]
async fn run_follows_snapshots_without_restarting_listeners() {
    let [port, vhost] = free_ports(2)[..] else {
        unreachable!()
    };
    let mut c = config();
    c.l7.http = Some(SocketAddr::new(LOCALHOST, vhost));
    let config = Arc::new(c);
    let shared = crate::l7::Shared::new(config.clone()).expect("shared state");
    let (mut publisher, snapshots) = crate::model::Publisher::new(config.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(super::run(shared.clone(), snapshots, shutdown.clone()));
    let mut kept = connect_eventually(SocketAddr::new(LOCALHOST, vhost)).await;
    // No route yet: the proxy answers itself.
    let r = get(&mut kept, "/").await.expect("vhost answers");
    assert_eq!(r.status, 503);

    publisher.update(
        Arc::new(state(vec![app("/web", port, HTTP_APP)])),
        crate::model::UpdateKind::Full,
    );
    let mut on_port = connect_eventually(SocketAddr::new(LOCALHOST, port)).await;
    // Routed to the app's backend, which has no server.
    assert_eq!(
        get(&mut on_port, "/").await.expect("port answers").status,
        503
    );

    for i in 0..20u16 {
        let mut apps = vec![app("/web", port, HTTP_APP)];
        apps.push(app(
            "/vhosted",
            20000 + i,
            &[("HAPROXY_GROUP", "external"), ("HAPROXY_0_VHOST", "v.test")],
        ));
        publisher.update(Arc::new(state(apps)), crate::model::UpdateKind::Full);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both connections opened before the changes are still served.
    assert_eq!(get(&mut on_port, "/").await.expect("port kept").status, 503);
    assert_eq!(get(&mut kept, "/").await.expect("vhost kept").status, 503);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run returns at shutdown")
        .expect("task")
        .expect("run ok");
}

#[tokio::test]
async fn an_upgraded_connection_is_opaque_and_keeps_its_slot() {
    let mut config = config();
    config.l7.max_connections = 1;
    config.l7.idle_timeout = Duration::from_millis(300);
    let run = Running::start(&config);
    let mut ws = connect(run.http()).await;
    ws.write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_reply(&mut ws).await.expect("101").status, 101);
    // Bytes that would be a conflicting head on HTTP/1 are tunnel data now; the tunnel
    // outlives l7.idle_timeout (no HTTP request is in flight, but it is not HTTP any more).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let data = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    ws.write_all(data).await.expect("write");
    let mut echoed = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(2), ws.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echoed[..], &data[..]);

    // The tunnel holds the only slot.
    let mut next = connect(run.http()).await;
    next.write_all(b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next.read(&mut buf))
            .await
            .is_err(),
        "waits while the tunnel is open"
    );
    drop(ws);
    let r = read_reply(&mut next)
        .await
        .expect("served after the tunnel closed");
    assert_eq!(r.body, "Http tls=false /n");
    run.stop().await;
}

/// HTTP/2: a header list over `l7.max_header_bytes` is refused by the h2 layer with 431 for
/// that stream; the connection and its other streams go on.
#[tokio::test]
async fn http2_oversize_header_list_gets_431() {
    let mut config = config();
    config.l7.max_header_bytes = 4096;
    let run = Running::start(&config);
    let io = hyper_util::rt::TokioIo::new(connect(run.http()).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("http://a/big")
        .header("x-big", "b".repeat(8000))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 431);
    let req = Request::get("http://a/small")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(run.calls(), 1, "only the small request reached the handler");
    run.stop().await;
}
