//! In-process tests of the request path: a real hyper listener calling [`handle`] and real
//! hyper backends, all on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::{ConnInfo, Frontend, Shared, Table};
use super::{STICKY_COOKIE, handle, sticky_value};
use crate::config::Config;
use crate::model::{App, BackendId, ClusterState, Protocol, Service, Snapshot};

/// Waits at most this long for any one step.
const STEP: Duration = Duration::from_secs(10);

/// A backend: answers `GET /...` with a body describing what it received (`port`, `path`,
/// selected headers); `/status/<n>` answers `n`; `/sleep` waits 2 s; `/location` sets a
/// `Location` (`/location?to=<url>`: that one); an `Upgrade` request gets 101 and an echo tunnel.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| answer(addr.port(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    port: u16,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(http::header::UPGRADE, "echo".parse().unwrap());
        r.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        return Ok(r);
    }
    let version = format!("{:?}", req.version());
    let mut desc = format!("port={port} path={path} version={version}\n");
    if let Some(a) = req.uri().authority() {
        desc.push_str(&format!("authority: {a}\n"));
    }
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
        "forwarded",
        "cookie",
        "x-secret",
    ] {
        for v in req.headers().get_all(name) {
            desc.push_str(&format!("{name}: {}\n", v.to_str().unwrap_or("?")));
        }
    }
    let body = req.into_body().collect().await.map(|c| c.to_bytes());
    desc.push_str(&format!("body={}\n", body.map(|b| b.len()).unwrap_or(0)));
    let mut r = Response::new(Full::new(Bytes::from(desc)));
    if let Some(code) = path.strip_prefix("/status/") {
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
    }
    if path == "/sleep" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if path == "/location" {
        r.headers_mut().insert(
            http::header::LOCATION,
            "http://app.example/somewhere".parse().unwrap(),
        );
    }
    if let Some(to) = path.strip_prefix("/location?to=") {
        r.headers_mut()
            .insert(http::header::LOCATION, to.parse().unwrap());
    }
    r.headers_mut().insert(
        http::header::SET_COOKIE,
        format!("{STICKY_COOKIE}=fake").parse().unwrap(),
    );
    Ok(r)
}

/// The edge on 127.0.0.1 for `frontend` (HTTP/1.1 and HTTP/2 prior knowledge).
async fn edge(shared: Arc<Shared>, frontend: Frontend) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, client)) = l.accept().await else {
                return;
            };
            let conn = Arc::new(ConnInfo {
                frontend,
                client,
                local: addr,
                tls: false,
                sni: None,
            });
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(shared.clone(), conn.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One app `/app` on service port 10000 with `labels`, served by `servers` (127.0.0.1 ports).
fn shared_with(
    labels: &[(&str, &str)],
    servers: &[u16],
    tweak: impl FnOnce(&mut Config),
) -> Arc<Shared> {
    let mut config = Config::default();
    config.l7.request_timeout = Duration::from_millis(500);
    config.l7.connect_timeout = Duration::from_millis(500);
    tweak(&mut config);
    let config = Arc::new(config);
    let shared = Shared::new(config.clone()).unwrap();
    let mut state = ClusterState::default();
    let mut all = vec![("HAPROXY_GROUP", "external"), ("HAPROXY_0_MODE", "http")];
    all.extend_from_slice(labels);
    let app = App {
        id: "/app".into(),
        service_ports: vec![10000],
        labels: all
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..App::default()
    };
    state.apps.insert("/app".into(), Arc::new(app));
    let service = Service {
        app_id: "/app".into(),
        port_index: 0,
        service_port: 10000,
        protocol: Protocol::Tcp,
        backends: servers
            .iter()
            .map(|&port| crate::model::Backend {
                id: BackendId(u64::from(port)),
                ip: "127.0.0.1".parse().unwrap(),
                port,
                weight: 1,
                task_id: format!("app.{port}").into(),
                app_id: Some("/app".into()),
                agent_ip: None,
            })
            .collect(),
    };
    let snapshot = Snapshot {
        version: 1,
        state: Arc::new(state),
        services: vec![Arc::new(service)],
        ..Snapshot::default()
    };
    let (table, errors) =
        Table::build(&snapshot, &config, &shared.registry, &shared.stats, &|_| {
            Ok(())
        });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(table.routes.backends().len(), 1);
    shared.table.store(Arc::new(table));
    shared
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get(edge: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    request(edge, "GET", path, headers, "").await
}

async fn request(
    edge: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{edge}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(STEP, client().request(req))
        .await
        .expect("edge answers in time")
        .expect("edge answers");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn vhost_request_is_forwarded_with_headers_rewritten() {
    let b = backend().await;
    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example"),
            ("HAPROXY_0_USE_HSTS", "true"),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/api"),
            ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/api/"),
        ],
        &[b.port()],
        |_| {},
    );
    let e = edge(shared.clone(), Frontend::Http).await;
    let got = get(
        e,
        "/api/users?x=1",
        &[
            ("host", "App.Example:80"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert!(
        got.body.contains(&format!(
            "port={} path=/users?x=1 version=HTTP/1.1",
            b.port()
        )),
        "{}",
        got.body
    );
    // HTTP_BACKEND_PROXYPASS_GLUE: `Host` is the app's vhost.
    assert!(got.body.contains("host: app.example\n"), "{}", got.body);
    assert!(
        got.body.contains("x-forwarded-for: 127.0.0.1\n"),
        "{}",
        got.body
    );
    assert!(
        got.body.contains("x-forwarded-proto: http\n"),
        "{}",
        got.body
    );
    assert!(
        got.body
            .contains(&format!("x-forwarded-port: {}\n", e.port())),
        "{}",
        got.body
    );
    assert!(
        got.body
            .contains("forwarded: for=127.0.0.1;proto=http;host=\"App.Example:80\"\n"),
        "{}",
        got.body
    );
    assert!(!got.body.contains("x-secret"), "{}", got.body);
    assert_eq!(got.headers["strict-transport-security"], "max-age=15768000");

    // REVPROXY: a Location at the app's host becomes the root path.
    let got = get(e, "/api/location", &[("host", "app.example")]).await;
    assert_eq!(got.headers["location"], "/api/");

    // No route for another host.
    let got = get(e, "/", &[("host", "other.example")]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.body.contains("no backend"), "{}", got.body);

    // The server counted the request.
    let t = shared.table.load();
    let st = &t.backends[0].states[0];
    assert_eq!(st.total.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(st.active(), 0);
    assert!(st.bytes_out.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn http2_client_reaches_http1_backend_with_host() {
    let b = backend().await;
    let shared = shared_with(&[("HAPROXY_0_VHOST", "h2.example")], &[b.port()], |_| {});
    let e = edge(shared, Frontend::Http).await;
    let c: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    // The URI authority is the edge's address; `Host` is what HTTP/2 clients send as
    // `:authority` when they go through a name: give it explicitly.
    let req = Request::builder()
        .uri(format!("http://{e}/h2?q"))
        .header("host", "h2.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(STEP, c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("path=/h2?q version=HTTP/1.1"), "{body}");
    assert!(body.contains("host: h2.example"), "{body}");
}

#[tokio::test]
async fn port_frontend_posts_stream_and_retries_on_connect_failure() {
    let b = backend().await;
    // A port nothing listens on: bind, read the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // No ejection: the dead server stays in the rotation.
    let shared = shared_with(&[], &[b.port(), dead], |c| c.l4.outlier_failures = 0);
    let e = edge(shared.clone(), Frontend::Port(10000)).await;
    for _ in 0..6 {
        let got = get(e, "/x", &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    }
    let t = shared.table.load();
    let dead_state = t.backends[0]
        .states
        .iter()
        .find(|s| s.addr.port() == dead)
        .unwrap();
    assert!(
        dead_state
            .connect_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // A POST body is streamed, never replayed: its turns on the dead server fail with 502.
    let mut saw_502 = false;
    let mut saw_ok = false;
    for _ in 0..8 {
        let got = request(e, "POST", "/p", &[], "hello body").await;
        match got.status {
            StatusCode::OK => {
                assert!(got.body.contains("body=10"), "{}", got.body);
                saw_ok = true;
            }
            StatusCode::BAD_GATEWAY => saw_502 = true,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(saw_ok && saw_502);
}

#[tokio::test]
async fn h2_backend_by_label() {
    let b = backend().await;
    let shared = shared_with(
        &[("FERRYMAN_L7_BACKEND_PROTOCOL", "h2")],
        &[b.port()],
        |_| {},
    );
    let e = edge(shared, Frontend::Port(10000)).await;
    for _ in 0..3 {
        let got = request(e, "POST", "/two", &[("host", "x.example")], "abc").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(
            got.body.contains("path=/two version=HTTP/2.0"),
            "{}",
            got.body
        );
        assert!(got.body.contains("body=3"), "{}", got.body);
        // The client's host travels as `:authority`, without a second `Host`.
        assert!(got.body.contains("authority: x.example\n"), "{}", got.body);
        assert!(!got.body.contains("host:"), "{}", got.body);
    }
}

#[tokio::test]
async fn all_connects_failing_is_502_and_no_server_is_503() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let shared = shared_with(&[], &[dead], |_| {});
    let e = edge(shared, Frontend::Port(10000)).await;
    let got = get(e, "/", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.body.contains("connect"), "{}", got.body);

    let shared = shared_with(&[], &[], |_| {});
    let e = edge(shared, Frontend::Port(10000)).await;
    let got = get(e, "/", &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.body.contains("no server"), "{}", got.body);
}

#[tokio::test]
async fn slow_backend_is_504() {
    let b = backend().await;
    let shared = shared_with(&[], &[b.port()], |_| {});
    let e = edge(shared, Frontend::Port(10000)).await;
    let t0 = std::time::Instant::now();
    let got = get(e, "/sleep", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(t0.elapsed() < Duration::from_millis(1900));
}

#[tokio::test]
async fn sticky_cookie_pins_the_server_and_stays_hidden() {
    let b1 = backend().await;
    let b2 = backend().await;
    let shared = shared_with(
        &[("HAPROXY_0_STICKY", "true")],
        &[b1.port(), b2.port()],
        |_| {},
    );
    let e = edge(shared, Frontend::Port(10000)).await;
    let got = get(e, "/", &[]).await;
    let set: Vec<String> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set.len(), 1, "the server's own cookie is removed: {set:?}");
    assert_eq!(got.headers["cache-control"], "private");
    let port: u16 = got.body["port=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let value = sticky_value(&format!("127_0_0_1_{port}"));
    let value = std::str::from_utf8(&value).unwrap();
    assert_eq!(set[0], format!("{STICKY_COOKIE}={value}; path=/"));

    let cookie = format!("a=1; {STICKY_COOKIE}={value}");
    for _ in 0..4 {
        let got = get(e, "/", &[("cookie", &cookie)]).await;
        assert!(
            got.body.starts_with(&format!("port={port} ")),
            "{}",
            got.body
        );
        assert!(got.body.contains("cookie: a=1\n"), "{}", got.body);
        assert!(!got.headers.contains_key("set-cookie"), "{:?}", got.headers);
    }
    // An unknown value is replaced.
    let got = get(
        e,
        "/",
        &[("cookie", &format!("{STICKY_COOKIE}=ffffffffff"))],
    )
    .await;
    assert!(got.headers.contains_key("set-cookie"));
    assert!(!got.body.contains("cookie:"), "{}", got.body);
}

#[tokio::test]
async fn acl_redirects_and_auth() {
    let b = backend().await;
    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example"),
            ("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/8"),
        ],
        &[b.port()],
        |_| {},
    );
    let e = edge(shared, Frontend::Http).await;
    let got = get(e, "/", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);

    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
        ],
        &[b.port()],
        |c| c.l7.https = Some("127.0.0.1:8443".parse().unwrap()),
    );
    let e = edge(shared, Frontend::Http).await;
    let got = get(e, "/a?b=c", &[("host", "app.example:80")]).await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(got.headers["location"], "https://app.example:8443/a?b=c");

    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/my/content"),
            ("HAPROXY_0_AUTH", "my realm:user:$6$salt$hash"),
        ],
        &[b.port()],
        |_| {},
    );
    let e = edge(shared, Frontend::Http).await;
    let got = get(e, "/", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(got.headers["www-authenticate"], "Basic realm=\"my realm\"");
}

#[tokio::test]
async fn root_redirect() {
    let b = backend().await;
    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/my/content"),
        ],
        &[b.port()],
        |_| {},
    );
    let e = edge(shared, Frontend::Http).await;
    let got = get(e, "/", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(got.headers["location"], "/my/content");
    let got = get(e, "/other", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn upgrade_tunnels_bytes_both_ways() {
    let b = backend().await;
    let shared = shared_with(&[], &[b.port()], |_| {});
    let e = edge(shared.clone(), Frontend::Port(10000)).await;
    let mut s = TcpStream::connect(e).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(STEP, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    drop(s);
    // The tunnel ends and releases the server's active count.
    let t = shared.table.load();
    let st = t.backends[0].states[0].clone();
    for _ in 0..100 {
        if st.active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(st.active(), 0);
    assert_eq!(st.bytes_in.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn passive_detection_counts_5xx_and_timeouts_when_configured() {
    let b = backend().await;
    let failures = Config::default().l4.outlier_failures;
    assert!(failures > 0 && failures < 10);
    for (passive, path) in [
        (true, "/status/500"),
        (false, "/status/500"),
        (true, "/sleep"),
    ] {
        let shared = shared_with(&[], &[b.port()], |c| {
            c.l7.request_timeout = Duration::from_millis(200);
            c.l7.passive_5xx = passive;
            c.l7.passive_timeouts = passive;
        });
        let e = edge(shared.clone(), Frontend::Port(10000)).await;
        for _ in 0..failures {
            let got = get(e, path, &[]).await;
            assert!(got.status.is_server_error(), "{}", got.status);
        }
        let t = shared.table.load();
        let st = &t.backends[0].states[0];
        assert_eq!(st.is_up(), !passive, "{path} passive={passive}");
        // Counted as failed requests, not as failed connects.
        assert_eq!(
            st.connect_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}

#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_cut_off() {
    let b = backend().await;
    let shared = shared_with(&[], &[b.port()], |c| {
        c.l7.request_timeout = Duration::from_millis(400);
    });
    let e = edge(shared, Frontend::Port(10000)).await;
    let mut s = TcpStream::connect(e).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    for part in [b"cd", b"ef"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(part).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("body=") {
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("body=6"), "{got}");
}

/// A hand-written HTTP/1.1 backend: reads a request head, answers a chunked 200 with `chunks`
/// chunks of `abc` sent `every` apart, then the last chunk; with `stall`, it stops after the
/// first chunk and holds the connection open instead.
async fn chunked_backend(chunks: usize, every: Duration, stall: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
                    .await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                for _ in 1..chunks {
                    tokio::time::sleep(every).await;
                    if s.write_all(b"3\r\nabc\r\n").await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                // Keep-alive: wait for the edge to close or reuse.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

/// The count of the backend's `eresp` column in the stats CSV.
fn eresp(shared: &Shared) -> String {
    shared.stats.publish(&shared.table.load_full());
    let csv = shared.stats.csv();
    let row = csv
        .lines()
        .find(|l| l.starts_with("app_10000,BACKEND,"))
        .unwrap_or_else(|| panic!("no BACKEND row: {csv}"));
    row.split(',').nth(14).unwrap().to_string()
}

#[tokio::test]
async fn a_stalled_response_body_is_aborted_after_request_timeout() {
    let b = chunked_backend(1, Duration::ZERO, true).await;
    let timeout = Duration::from_millis(500);
    for http2 in [false, true] {
        let shared = shared_with(&[], &[b.port()], |c| {
            c.l7.request_timeout = timeout;
            c.l7.passive_timeouts = false;
        });
        let e = edge(shared.clone(), Frontend::Port(10000)).await;
        let c: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http();
        let req = Request::builder()
            .uri(format!("http://{e}/stall"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(STEP, c.request(req))
            .await
            .expect("head in time")
            .expect("head");
        assert_eq!(resp.status(), StatusCode::OK);
        let t0 = std::time::Instant::now();
        let mut body = resp.into_body();
        // The first chunk arrives, then the body fails: never a clean end.
        let first = tokio::time::timeout(STEP, body.frame())
            .await
            .expect("first chunk in time")
            .expect("a frame")
            .expect("first chunk");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"abc"[..]));
        let end = tokio::time::timeout(STEP, body.frame())
            .await
            .expect("the stalled body ends in time");
        assert!(
            matches!(end, Some(Err(_))),
            "http2={http2}: the body must fail, not end cleanly: {end:?}"
        );
        let took = t0.elapsed();
        assert!(
            took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(2),
            "http2={http2}: aborted after {took:?}"
        );
        assert_eq!(eresp(&shared), "1", "counted once");
        // Not a failed connect, and not passive detection (off here).
        let t = shared.table.load();
        let st = &t.backends[0].states[0];
        assert!(st.is_up());
        for _ in 0..100 {
            if st.active() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(st.active(), 0, "the request's gauges are released");
    }
}

#[tokio::test]
async fn a_slow_but_steady_response_body_is_not_cut() {
    // 10 chunks 200 ms apart: 2 s in all, with a 1 s inactivity limit.
    let b = chunked_backend(10, Duration::from_millis(200), false).await;
    let shared = shared_with(&[], &[b.port()], |c| {
        c.l7.request_timeout = Duration::from_secs(1);
    });
    let e = edge(shared.clone(), Frontend::Port(10000)).await;
    let t0 = std::time::Instant::now();
    let got = get(e, "/steady", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "abc".repeat(10));
    assert!(t0.elapsed() >= Duration::from_millis(1800));
    assert_eq!(eresp(&shared), "0");
}

#[tokio::test]
async fn proxypass_sets_host_to_the_apps_first_vhost() {
    let b = backend().await;
    for h2 in ["http1", "h2"] {
        let shared = shared_with(
            &[
                ("HAPROXY_0_VHOST", "App.Example,www.example"),
                ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/api"),
                ("FERRYMAN_L7_BACKEND_PROTOCOL", h2),
            ],
            &[b.port()],
            |_| {},
        );
        let want = if h2 == "h2" {
            "authority: app.example\n"
        } else {
            "host: app.example\n"
        };
        let vhosts = edge(shared.clone(), Frontend::Http).await;
        let got = get(vhosts, "/api/x", &[("host", "www.example:80")]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert!(got.body.contains("path=/x "), "{}", got.body);
        assert!(got.body.contains(want), "{h2}: {}", got.body);
        // On the service port too (the template is in the backend).
        let port = edge(shared, Frontend::Port(10000)).await;
        let got = get(port, "/api/y", &[("host", "10.0.0.1:10000")]).await;
        assert!(got.body.contains(want), "{h2}: {}", got.body);
    }

    // Without PROXYPASS the client's host goes through.
    let shared = shared_with(&[("HAPROXY_0_VHOST", "app.example")], &[b.port()], |_| {});
    let port = edge(shared, Frontend::Port(10000)).await;
    let got = get(port, "/", &[("host", "10.0.0.1:10000")]).await;
    assert!(got.body.contains("host: 10.0.0.1:10000\n"), "{}", got.body);
}

#[tokio::test]
async fn root_redirect_applies_only_to_the_apps_domain() {
    let b = backend().await;
    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example,www.example"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/my/content"),
        ],
        &[b.port()],
        |_| {},
    );
    let vhosts = edge(shared.clone(), Frontend::Http).await;
    let got = get(vhosts, "/", &[("host", "APP.example:80")]).await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(got.headers["location"], "/my/content");
    // `is_domain` is the first vhost only: the second one is forwarded.
    let got = get(vhosts, "/", &[("host", "www.example")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    // A service-port request for another host is forwarded, one for the domain redirected.
    let port = edge(shared, Frontend::Port(10000)).await;
    let got = get(port, "/", &[("host", "10.0.0.1:10000")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let got = get(port, "/", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::MOVED_PERMANENTLY);

    // Without a vhost there is no domain: never redirected (upstream: `hdr(host) -i None`).
    let shared = shared_with(
        &[("HAPROXY_0_HTTP_BACKEND_REDIR", "/my/content")],
        &[b.port()],
        |_| {},
    );
    let port = edge(shared, Frontend::Port(10000)).await;
    let got = get(port, "/", &[("host", "app.example")]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
}

#[tokio::test]
async fn revproxy_rewrites_locations_at_the_apps_first_vhost() {
    let b = backend().await;
    let shared = shared_with(
        &[
            ("HAPROXY_0_VHOST", "app.example,www.example"),
            ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/r/"),
        ],
        &[b.port()],
        |_| {},
    );
    let vhosts = edge(shared.clone(), Frontend::Http).await;
    // Asked through the second vhost: a Location at the app's hostname is rewritten...
    let got = get(vhosts, "/location", &[("host", "www.example")]).await;
    assert_eq!(got.headers["location"], "/r/");
    // ...one at the host the client used (not the app's hostname) is not.
    let got = get(
        vhosts,
        "/location?to=http://www.example/x",
        &[("host", "www.example")],
    )
    .await;
    assert_eq!(got.headers["location"], "http://www.example/x");
    // On the service port, whatever the client's host.
    let port = edge(shared, Frontend::Port(10000)).await;
    let got = get(port, "/location", &[("host", "10.0.0.1:10000")]).await;
    assert_eq!(got.headers["location"], "/r/");
    let got = get(port, "/location?to=/abs", &[]).await;
    assert_eq!(got.headers["location"], "/r/");
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_after_request_timeout() {
    // The server answers at once and streams a byte every 100 ms for 3 s without reading the
    // upload: only the upload's inactivity limit can end the exchange early.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = l.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let shared = shared_with(&[], &[b.port()], |c| {
        c.l7.request_timeout = Duration::from_millis(500);
    });
    let e = edge(shared, Frontend::Port(10000)).await;
    let mut s = TcpStream::connect(e).await.unwrap();
    // 2 bytes of 6, then nothing.
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(STEP, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no end in time: {}", String::from_utf8_lossy(&got)),
        }
    }
    let took = t0.elapsed();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "truncated, not completed: {got}"
    );
    assert!(took < Duration::from_millis(2500), "cut after {took:?}");
}

#[tokio::test]
async fn stalled_response_bodies_eject_the_server_with_passive_timeouts() {
    let b = chunked_backend(1, Duration::ZERO, true).await;
    let failures = Config::default().l4.outlier_failures;
    assert!(failures > 0 && failures < 10);
    let shared = shared_with(&[], &[b.port()], |c| {
        c.l7.request_timeout = Duration::from_millis(150);
        c.l7.passive_timeouts = true;
    });
    let e = edge(shared.clone(), Frontend::Port(10000)).await;
    for _ in 0..failures {
        let req = Request::builder()
            .uri(format!("http://{e}/stall"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(STEP, client().request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = tokio::time::timeout(STEP, resp.into_body().collect()).await;
        assert!(matches!(body, Ok(Err(_))), "aborted");
    }
    let t = shared.table.load();
    let st = &t.backends[0].states[0];
    assert!(!st.is_up(), "ejected after {failures} stalled bodies");
    assert_eq!(eresp(&shared), failures.to_string());
}
