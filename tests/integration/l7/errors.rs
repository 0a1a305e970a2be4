//! Backend failures become 502/503/504 with a metric, never a hang; idempotent requests are
//! retried on connect failures only; bodies stream instead of being buffered whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Backend, Edge, app, apps, metric_sum, vhost_app};
use crate::harness::free_port;

/// A backend that reads a request head and closes the connection without answering; counts
/// the requests it read.
async fn rude_backend() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, count)
}

/// A backend answering every request with a chunked body: `first` at once, `last` after
/// `gap`. Written by hand so that the gap is on the wire.
async fn trickling_backend(gap: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                          Connection: close\r\n\r\n6\r\nfirst\n\r\n",
                    )
                    .await;
                tokio::time::sleep(gap).await;
                let _ = s.write_all(b"5\r\nlast\n\r\n0\r\n\r\n").await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_are_502_503_504_and_never_hang() {
    let live = Backend::start("live").await;
    let slow = Backend::start("slow").await;
    let (rude_port, rude_count) = rude_backend().await;
    let dead_port = free_port();
    let group = || json!({"HAPROXY_GROUP": "external"});
    let with_vhost = |vhost: &str| {
        let mut l = group();
        l["HAPROXY_0_VHOST"] = json!(vhost);
        l
    };
    let (dead_sp, empty_sp, rude_sp) = (free_port(), free_port(), free_port());
    let list = apps(vec![
        app(
            "/dead",
            dead_sp,
            &[dead_port],
            with_vhost("dead.example.com"),
        ),
        app("/empty", empty_sp, &[], with_vhost("empty.example.com")),
        app(
            "/rude",
            rude_sp,
            &[rude_port],
            with_vhost("rude.example.com"),
        ),
        vhost_app("/slow", "slow.example.com", &[&slow], json!({})),
        // One live and one dead server: GETs are retried on the live one.
        app(
            "/half",
            free_port(),
            &[live.port(), dead_port],
            with_vhost("half.example.com"),
        ),
    ]);
    let edge = Edge::start(
        "request_timeout = \"1s\"\nconnect_timeout = \"1s\"",
        "",
        &list,
    )
    .await;
    edge.wait_backend("slow.example.com", "/", "slow").await;

    let timed = |want: u16, host: &'static str, path: &'static str, within: Duration| {
        let edge = &edge;
        async move {
            let t = Instant::now();
            let r = edge.get(host, path).await;
            assert_eq!(r.status, want, "{host}{path}: {r:?}");
            assert!(
                t.elapsed() < within,
                "{host}{path}: {want} after {:?}",
                t.elapsed()
            );
        }
    };
    timed(502, "dead.example.com", "/", Duration::from_secs(4)).await;
    timed(503, "empty.example.com", "/", Duration::from_secs(1)).await;
    // l7.request_timeout = 1s, the backend answers /slow after 5 s.
    timed(504, "slow.example.com", "/slow", Duration::from_secs(3)).await;
    // A reset after the request was sent is not a connect failure: no retry.
    for i in 1..=3 {
        timed(502, "rude.example.com", "/", Duration::from_secs(3)).await;
        assert_eq!(
            rude_count.load(Ordering::SeqCst),
            i,
            "a request that reached a backend was retried"
        );
    }
    for _ in 0..10 {
        timed(200, "half.example.com", "/", Duration::from_secs(3)).await;
    }
    assert_eq!(live.hits(), 10);

    let metrics = edge.f.get("/metrics").await.body;
    for (backend, reason) in [
        (format!("dead_{dead_sp}"), "connect_failed"),
        (format!("empty_{empty_sp}"), "no_server"),
        (format!("rude_{rude_sp}"), "bad_gateway"),
    ] {
        let n = metric_sum(
            &metrics,
            "ferryman_l7_local_replies_total",
            &[("backend", &backend), ("reason", reason)],
        );
        assert!(n >= 1.0, "{backend} {reason}: {n}\n{metrics}");
    }
    let timeouts = metric_sum(
        &metrics,
        "ferryman_l7_local_replies_total",
        &[("reason", "timeout")],
    );
    assert!(timeouts >= 1.0, "{metrics}");
    let fivexx = metric_sum(
        &metrics,
        "ferryman_l7_requests_total",
        &[("backend", &format!("dead_{dead_sp}")), ("code", "5xx")],
    );
    assert!(fivexx >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_the_edge() {
    let gap = Duration::from_millis(1500);
    let trickle = trickling_backend(gap).await;
    let echo = Backend::start("sink").await;
    let list = apps(vec![
        app(
            "/trickle",
            free_port(),
            &[trickle],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "trickle.example.com"}),
        ),
        vhost_app("/sink", "sink.example.com", &[&echo], json!({})),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("sink.example.com", "/", "sink").await;
    edge.wait_for("trickle.example.com", "/", |r| r.status == 200)
        .await;

    // The first chunk reaches the client while the backend still holds the rest.
    let stream = TcpStream::connect(edge.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let t = Instant::now();
    let req = hyper::Request::get("/")
        .header("host", "trickle.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response head");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a first frame in time")
        .expect("a frame")
        .expect("a good frame");
    let first_at = t.elapsed();
    assert_eq!(first.data_ref().map(|b| b.as_ref()), Some(&b"first\n"[..]));
    assert!(
        first_at < gap - Duration::from_millis(500),
        "the first chunk came after {first_at:?}: the response was buffered"
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the rest in time")
        .expect("the rest")
        .to_bytes();
    assert_eq!(&rest[..], b"last\n");
    assert!(t.elapsed() >= gap - Duration::from_millis(100));

    // A large upload arrives whole (chunked from the client, without a length).
    let stream = TcpStream::connect(edge.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    const SIZE: usize = 8 << 20;
    let chunks = futures_util::stream::iter((0..SIZE / 65536).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 65536])))
    }));
    let req = hyper::Request::post("/upload")
        .header("host", "sink.example.com")
        .body(http_body_util::StreamBody::new(chunks))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("upload in time")
        .expect("upload answered");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(v["body_len"], SIZE, "{v}");
    assert_eq!(v["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_when_their_app_goes_and_on_shutdown() {
    let b = Backend::start("leaving").await;
    let stay = Backend::start("staying").await;
    let sp = free_port();
    let leaving = app(
        "/leaving",
        sp,
        &[b.port()],
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "leaving.example.com"}),
    );
    let staying = vhost_app("/staying", "staying.example.com", &[&stay], json!({}));
    let mut edge = Edge::start("", "", &apps(vec![leaving, staying.clone()])).await;
    edge.wait_backend("leaving.example.com", "/", "leaving")
        .await;
    let port_addr: std::net::SocketAddr = format!("127.0.0.1:{sp}").parse().unwrap();
    super::wait_for_at(port_addr, "x", "/", |r| r.status == 200, &edge.f).await;

    // Slow requests through the vhost router and through the app's own service port.
    let started = Instant::now();
    let (http, host) = (edge.http, "leaving.example.com");
    let via_vhost = tokio::spawn(super::send(http, None, "GET", host, "/slow/v", &[]));
    let via_port = tokio::spawn(super::send(port_addr, None, "GET", host, "/slow/p", &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The app is removed (its route and its service-port listener go) while they run.
    edge.set_apps(&apps(vec![staying]));
    edge.wait_for("leaving.example.com", "/", |r| r.status == 503)
        .await;
    for (what, task) in [("vhost", via_vhost), ("service port", via_port)] {
        let r = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("{what}: in-flight request dropped: {e}"));
        assert_eq!(r.status, 200, "{what}: {r:?}");
    }
    assert!(started.elapsed() >= super::SLOW_BACKEND - Duration::from_millis(600));

    // SIGTERM: a request in flight is finished before the process exits.
    let in_flight = tokio::spawn(super::send(
        http,
        None,
        "GET",
        "staying.example.com",
        "/slow/shutdown",
        &[],
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::block_in_place(|| edge.f.terminate(Duration::from_secs(30)));
    let r = in_flight
        .await
        .expect("task")
        .expect("the in-flight request is answered during shutdown");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after a graceful shutdown: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_off_both_ways() {
    let stalling = trickling_backend(Duration::from_secs(60)).await;
    let sink = Backend::start("sink").await;
    let list = apps(vec![
        app(
            "/stalling",
            free_port(),
            &[stalling],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "stall.example.com"}),
        ),
        vhost_app("/sink", "sink.example.com", &[&sink], json!({})),
    ]);
    let edge = Edge::start("request_timeout = \"1s\"", "", &list).await;
    edge.wait_backend("sink.example.com", "/", "sink").await;

    // A response body that stops after its first chunk: the client sees the end (an error)
    // within about l7.request_timeout, not after the backend's 60 s.
    let stream = TcpStream::connect(edge.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "stall.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let t = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("a response head in time")
        .expect("a response head");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(6), resp.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "a stalled response body was not cut off: {:?} after {:?}",
        body.map(|b| b.map(|b| b.to_bytes())),
        t.elapsed()
    );

    // An upload that stops half way: the edge gives up (answer or close) instead of waiting.
    let mut s = TcpStream::connect(edge.http).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: sink.example.com\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // l7.request_timeout (1 s) bounds a body that stops moving.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a stalled upload held its connection 5 s; got {:?}",
        String::from_utf8_lossy(&got)
    );
}
