//! Bad input (issue 8, "Bad input"): malformed requests are answered 400/431 and the
//! connection closed without a backend being asked; apps with bad label values are skipped with a
//! warning naming them while the others are served; slow clients and a slow backend do not hold
//! up other requests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, Certs, Edge, app, apps, vhost_app};
use crate::harness::free_port;

/// Writes `request` on a new connection and reads until the edge closes it (EOF or reset), at
/// most 5 s. Returns what was read and whether the connection was closed in time. Write errors
/// are ignored: the edge may answer and close before reading an oversize request whole.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Reads from `s` until what was read contains `needle`, EOF or `within`; what was read.
async fn read_until(s: &mut TcpStream, needle: &str, within: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends each `(what, request, status)` on its own connection; the failures to answer with
/// that status and close without asking `b`, one line each.
async fn refused(edge: &Edge, b: &Backend, cases: Vec<(&str, Vec<u8>, u16)>) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, request, want) in cases {
        let before = b.hits();
        let (answer, closed) = raw_exchange(edge.http, &request).await;
        let status = status_of(&answer);
        let reached = b.hits() - before;
        if status != Some(want) || !closed || reached != 0 {
            failures.push(format!(
                "{what}: want {want} and close, got status {status:?}, closed {closed}, \
                 backend requests {reached}; answer {:?}",
                answer.chars().take(700).collect::<String>()
            ));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_never_reach_a_backend() {
    let b = Backend::start("victim").await;
    let list = apps(vec![vhost_app(
        "/victim",
        "v.example.com",
        &[&b],
        json!({}),
    )]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("v.example.com", "/", "victim").await;

    let big = "a".repeat(20_000);
    let many: String = (0..150).map(|i| format!("X-H-{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "space in the request target",
            b"GET /a b HTTP/1.1\r\nHost: v.example.com\r\n\r\n".to_vec(),
            400,
        ),
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "bad header name",
            b"GET / HTTP/1.1\r\nHost: v.example.com\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length then Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: v.example.com\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\
              Host: v.example.com\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Transfer-Encoding then Content-Length",
            b"POST / HTTP/1.1\r\nHost: v.example.com\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "two different Content-Length",
            b"POST / HTTP/1.1\r\nHost: v.example.com\r\nContent-Length: 1\r\n\
              Content-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: v.example.com\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
        ),
        // RFC 9112 5.2: obsolete line folding, rejected or replaced; 5.1: no whitespace between
        // a field name and the colon ("MUST reject ... with 400").
        (
            "whitespace before the colon",
            b"GET / HTTP/1.1\r\nHost: v.example.com\r\nTransfer-Encoding : chunked\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "a 20 kB header (l7.max_header_bytes 16384)",
            format!("GET / HTTP/1.1\r\nHost: v.example.com\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "150 headers (l7.max_headers 100)",
            format!("GET / HTTP/1.1\r\nHost: v.example.com\r\n{many}\r\n").into_bytes(),
            431,
        ),
    ];
    let failures = refused(&edge, &b, cases).await;
    // The listener is still fine, and a large head within the limits passes.
    assert_eq!(edge.get("v.example.com", "/after").await.status, 200);
    let cookie = format!("c={}", "x".repeat(12_000));
    let r = edge
        .request("v.example.com", "/big-but-fine", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 200, "a 12 kB cookie was refused");

    // Two requests pipelined on one connection are answered in order.
    let (answer, _) = raw_exchange(
        edge.http,
        b"GET /first HTTP/1.1\r\nHost: v.example.com\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: v.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (first, second) = (answer.find("/first"), answer.find("/second"));
    assert!(
        first.is_some() && second.is_some() && first < second,
        "pipelined answers: {answer:?}"
    );
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer:?}");

    // HTTP/1.0 is answered, and the connection closed after the answer.
    let (answer, closed) = raw_exchange(
        edge.http,
        b"GET /ten HTTP/1.0\r\nHost: v.example.com\r\n\r\n",
    )
    .await;
    assert!(
        answer.contains(" 200 ") && answer.contains("/ten") && closed,
        "{answer:?}"
    );

    // Expect: 100-continue gets its 100 (or the final answer) without the body being sent.
    let mut s = TcpStream::connect(edge.http).await.expect("connect");
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: v.example.com\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("an interim or final answer to Expect: 100-continue")
        .expect("read");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 100"), "{first:?}");
    s.write_all(b"hello").await.expect("body");
    let rest = read_until(&mut s, "\"body_len\":5", Duration::from_secs(5)).await;
    assert!(
        rest.contains(" 200 ") && rest.contains("\"body_len\":5"),
        "{first}{rest}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field and to any request message that contains
/// more than one Host header field line". Two Host lines are routed by one and may be read by
/// the backend by the other (vhost confusion past the routed vhost's ACL and auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_exactly_one_host_are_refused() {
    let b = Backend::start("victim").await;
    let list = apps(vec![vhost_app(
        "/victim",
        "v.example.com",
        &[&b],
        json!({}),
    )]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("v.example.com", "/", "victim").await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: v.example.com\r\nHost: other.example.com\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two equal Host headers",
            b"GET / HTTP/1.1\r\nHost: v.example.com\r\nHost: v.example.com\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
    ];
    let failures = refused(&edge, &b, cases).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_with_bad_labels_are_skipped_with_a_warning_and_others_served() {
    let certs = Certs::generate(&["default.example.net"]);
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    let list = apps(vec![
        vhost_app("/good", "good.example.com", &[&good], json!({})),
        vhost_app(
            "/bad-port",
            "bad-port.example.com",
            &[&bad],
            json!({"HAPROXY_0_PORT": "abc"}),
        ),
        vhost_app(
            "/bad-cidr",
            "bad-cidr.example.com",
            &[&bad],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/33"}),
        ),
        vhost_app(
            "/bad-cert",
            "bad-cert.example.com",
            &[&bad],
            json!({"HAPROXY_0_SSL_CERT": certs.path("missing.pem")}),
        ),
    ]);
    let l7 = format!("https = \"127.0.0.1:{}\"", free_port());
    let tls = format!(
        "[l7.tls]\ncert = \"{}\"\n",
        certs.path("default.example.net.pem").display()
    );
    let edge = Edge::start(&l7, &tls, &list).await;
    edge.wait_backend("good.example.com", "/", "good").await;
    for (app_id, label) in [
        ("/bad-port", "HAPROXY_0_PORT"),
        ("/bad-cidr", "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL"),
        ("/bad-cert", "HAPROXY_0_SSL_CERT"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let logs = edge.f.logs();
            let line = logs
                .lines()
                .find(|l| l.contains("WARN") && l.contains(app_id) && l.contains(label))
                .map(str::to_string);
            if line.is_some() || Instant::now() >= deadline {
                break line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            found.is_some(),
            "no warning naming {app_id} and {label}; stderr:\n{}",
            edge.f.logs()
        );
        let host = format!("{}.example.com", app_id.trim_start_matches('/'));
        let r = edge.get(&host, "/").await;
        assert_eq!(r.status, 503, "skipped app {app_id} is routed: {r:?}");
    }
    assert_eq!(bad.hits(), 0, "a skipped app's backend was asked");
    assert_eq!(edge.get("good.example.com", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_do_not_block_others() {
    let b = Backend::start("steady").await;
    let list = apps(vec![vhost_app(
        "/steady",
        "s.example.com",
        &[&b],
        json!({}),
    )]);
    let edge = Edge::start("header_read_timeout = \"2s\"", "", &list).await;
    edge.wait_backend("s.example.com", "/", "steady").await;

    // 30 slowloris connections: a request head trickled one byte every 200 ms, never finished.
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..30 {
        let addr = edge.http;
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: s.example.com\r\nX-Slow: ")
                .await
                .expect("write");
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            // Trickle for at most 10 s; the edge must close before.
            for _ in 0..50 {
                tokio::select! {
                    n = s.read(&mut buf) => match n {
                        Ok(0) | Err(_) => return (i, true, got),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b"a").await.is_err() {
                            return (i, true, got);
                        }
                    }
                }
            }
            (i, false, got)
        }));
    }
    // Meanwhile ordinary requests are served promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..10 {
        let t = Instant::now();
        let r = edge.get("s.example.com", &format!("/fast/{i}")).await;
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "request {i} took {:?} beside slow clients",
            t.elapsed()
        );
    }
    for task in slow {
        let (i, closed, got) = task.await.expect("slow client task");
        let answer = String::from_utf8_lossy(&got);
        assert!(
            closed,
            "slow client {i} still open after {:?} (l7.header_read_timeout = 2s)",
            started.elapsed()
        );
        assert!(
            got.is_empty() || status_of(&answer) == Some(408),
            "slow client {i} got {answer:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow clients cut off after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_does_not_block_other_requests() {
    let b = Backend::start("sometimes-slow").await;
    let list = apps(vec![app(
        "/slowish",
        free_port(),
        &[b.port()],
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "slow.example.com"}),
    )]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("slow.example.com", "/", "sometimes-slow")
        .await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..4 {
        let addr = edge.http;
        slow.push(tokio::spawn(async move {
            super::send(
                addr,
                None,
                "GET",
                "slow.example.com",
                &format!("/slow/{i}"),
                &[],
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let t = Instant::now();
        let r = edge.get("slow.example.com", &format!("/fast/{i}")).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a fast request took {:?} while the backend sat on slow ones",
            t.elapsed()
        );
    }
    assert!(
        started.elapsed() < super::SLOW_BACKEND,
        "the fast requests waited for the slow ones"
    );
    for task in slow {
        let r = task.await.expect("task").expect("slow request answered");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.expect_echo().path.starts_with("/slow/"));
    }
    assert!(started.elapsed() >= super::SLOW_BACKEND - Duration::from_millis(500));
}

/// RFC 9113 8.3.1: a server SHOULD treat as malformed an HTTP/2 request whose `Host` differs
/// from its `:authority`. Whatever it does, the backend must see the host the request was
/// routed (and its ACL and auth checked) by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_and_authority_cannot_disagree() {
    let public = Backend::start("public").await;
    let private = Backend::start("private").await;
    let list = apps(vec![
        vhost_app("/public", "public.example.com", &[&public], json!({})),
        vhost_app(
            "/private",
            "private.example.com",
            &[&private],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("public.example.com", "/", "public").await;
    let stream = TcpStream::connect(edge.http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 prior knowledge");
    tokio::spawn(conn);
    let req = hyper::Request::get("http://public.example.com/h2")
        .header("host", "private.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer in time");
    assert_eq!(private.hits(), 0, "routed past the private vhost's ACL");
    if let Ok(resp) = resp
        && resp.status() == 200
    {
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("echo");
        assert_eq!(
            v["headers"]["host"], "public.example.com",
            "the backend of public.example.com saw another Host: {v}"
        );
    }
}

/// An absolute-form request target names a host of its own (RFC 9112 3.2.2: it wins over
/// `Host`). Whichever the edge routes by, the backend must see that same host, and a private
/// vhost's ACL must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_cannot_confuse_the_vhost() {
    let public = Backend::start("public").await;
    let private = Backend::start("private").await;
    let list = apps(vec![
        vhost_app("/public", "public.example.com", &[&public], json!({})),
        vhost_app(
            "/private",
            "private.example.com",
            &[&private],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("public.example.com", "/", "public").await;
    for request in [
        &b"GET http://private.example.com/x HTTP/1.1\r\nHost: public.example.com\r\n\
           Connection: close\r\n\r\n"[..],
        &b"GET http://public.example.com/x HTTP/1.1\r\nHost: private.example.com\r\n\
           Connection: close\r\n\r\n"[..],
    ] {
        let (answer, _) = raw_exchange(edge.http, request).await;
        assert_eq!(
            private.hits(),
            0,
            "the private vhost's ACL was bypassed: {answer}"
        );
        if status_of(&answer) == Some(200) {
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(body).expect("echo");
            assert_eq!(
                v["headers"]["host"], "public.example.com",
                "public's backend saw another host: {v}"
            );
        }
    }
}
