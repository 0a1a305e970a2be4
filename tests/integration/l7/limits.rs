//! Connection limits and timeouts of the listeners: `l7.max_connections` (more wait in the
//! accept queue), `l7.idle_timeout` on keep-alive connections, and the first-head deadline for
//! clients that stall in the TLS handshake or the HTTP/2 preface.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, Certs, Edge, apps, vhost_app};
use crate::harness::free_port;

/// Reads until EOF or reset, at most `within`; the time it took, `None` if still open.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queue_the_next_client_until_one_closes() {
    let b = Backend::start("limited").await;
    let list = apps(vec![vhost_app(
        "/limited",
        "l.example.com",
        &[&b],
        json!({}),
    )]);
    let edge = Edge::start("max_connections = 4", "", &list).await;
    edge.wait_backend("l.example.com", "/", "limited").await;

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(edge.http).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The fifth connects (the kernel's accept queue) but is not served yet.
    let mut fifth = TcpStream::connect(edge.http).await.expect("connect");
    fifth
        .write_all(b"GET /fifth HTTP/1.1\r\nHost: l.example.com\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_secs(1), fifth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a fifth connection was served beside 4 open ones (l7.max_connections = 4): {early:?}"
    );
    assert_eq!(b.hits(), 1, "only the wait reached the backend");
    drop(held.pop());
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), fifth.read_to_end(&mut answer))
        .await
        .expect("the queued client is served once a slot frees")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("/fifth"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let b = Backend::start("idle").await;
    let list = apps(vec![vhost_app("/idle", "i.example.com", &[&b], json!({}))]);
    let edge = Edge::start("idle_timeout = \"1s\"", "", &list).await;
    edge.wait_backend("i.example.com", "/", "idle").await;

    let stream = TcpStream::connect(edge.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(conn);
    for i in 0..3 {
        let req = hyper::Request::get(format!("/{i}"))
            .header("host", "i.example.com")
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender
            .ready()
            .await
            .expect("keep-alive connection still open");
        let resp = sender.send_request(req).await.expect("keep-alive request");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("body");
        // Shorter pauses than the idle timeout keep the connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    let after = idle_from.elapsed();
    assert!(
        ended.is_ok(),
        "an idle keep-alive connection stayed open 5 s (l7.idle_timeout = 1s)"
    );
    assert!(
        after >= Duration::from_millis(300),
        "closed {after:?} after the last answer"
    );
    assert_eq!(b.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_and_h2_prefaces_are_cut_off() {
    let certs = Certs::generate(&["default.example.net"]);
    let b = Backend::start("guarded").await;
    let list = apps(vec![vhost_app(
        "/guarded",
        "g.example.com",
        &[&b],
        json!({}),
    )]);
    let https = format!("127.0.0.1:{}", free_port());
    let l7 = format!("https = \"{https}\"\nheader_read_timeout = \"2s\"");
    let tls = format!(
        "[l7.tls]\ncert = \"{}\"\n",
        certs.path("default.example.net.pem").display()
    );
    let edge = Edge::start(&l7, &tls, &list).await;
    edge.wait_backend("g.example.com", "/", "guarded").await;

    // A TCP connection to the TLS listener that never says hello.
    let mut silent_tls = TcpStream::connect(&https).await.expect("connect");
    // An HTTP/2 client that sends the preface and nothing else (no SETTINGS, no request).
    let mut stalled_h2 = TcpStream::connect(edge.http).await.expect("connect");
    stalled_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    // A plain connection that sends nothing.
    let mut silent = TcpStream::connect(edge.http).await.expect("connect");
    for (what, s) in [
        ("silent TLS client", &mut silent_tls),
        ("stalled HTTP/2 client", &mut stalled_h2),
        ("silent HTTP client", &mut silent),
    ] {
        let took = closed_within(s, Duration::from_secs(6)).await;
        assert!(
            took.is_some(),
            "{what} still connected 6 s in (l7.header_read_timeout = 2s)"
        );
    }
    assert_eq!(edge.get("g.example.com", "/").await.status, 200);
}
