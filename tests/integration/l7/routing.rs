//! Routing and request handling on the plain listeners: vhosts, paths, proxypass, forwarded
//! headers, sticky sessions, network ACLs, basic auth, WebSocket, http-mode service ports and
//! HTTP/2 with prior knowledge.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::{Backend, Edge, WsBackend, app, apps, curl, send, vhost_app};
use crate::harness::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_route_by_host_without_case_or_port() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let list = apps(vec![
        vhost_app("/a", "a.example.com", &[&a], json!({})),
        // Comma-separated vhosts, mixed case in the label (Marathon-LB lowercases it).
        vhost_app("/b", "B.example.com, www.b.example.com", &[&b], json!({})),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("a.example.com", "/", "a").await;
    for host in [
        "a.example.com",
        "A.EXAMPLE.com",
        "a.example.com:80",
        "a.Example.COM:12345",
    ] {
        let r = edge.get(host, "/x").await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        let e = r.expect_echo();
        assert_eq!((e.backend.as_str(), e.path.as_str()), ("a", "/x"), "{host}");
    }
    for host in [
        "b.example.com",
        "www.b.example.com",
        "WWW.B.EXAMPLE.COM:8080",
    ] {
        assert_eq!(
            edge.get(host, "/").await.expect_echo().backend,
            "b",
            "{host}"
        );
    }
    // No vhost matches: HAProxy without a default backend answers 503; no backend is asked.
    let before = a.hits() + b.hits();
    for host in ["c.example.com", "example.com", "a.example.com.evil"] {
        let r = edge.get(host, "/").await;
        assert_eq!(r.status, 503, "{host}: {r:?}");
    }
    assert_eq!(
        a.hits() + b.hits(),
        before,
        "an unrouted request reached a backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_route_by_longest_prefix_and_proxypass_strips_its_prefix() {
    let root = Backend::start("root").await;
    let api = Backend::start("api").await;
    let v2 = Backend::start("api-v2").await;
    let svc = Backend::start("svc").await;
    let host = "paths.example.com";
    let list = apps(vec![
        vhost_app("/root", host, &[&root], json!({})),
        vhost_app("/api", host, &[&api], json!({"HAPROXY_0_PATH": "/api"})),
        // Upstream would try `/api` (app id order) first; the longer prefix wins here.
        vhost_app(
            "/zz-api-v2",
            host,
            &[&v2],
            json!({"HAPROXY_0_PATH": "/api/v2"}),
        ),
        vhost_app(
            "/svc",
            host,
            &[&svc],
            json!({"HAPROXY_0_PATH": "/svc", "HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH": "/svc",
                   "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/svc/"}),
        ),
        vhost_app(
            "/redir",
            "redir.example.com",
            &[&root],
            json!({"HAPROXY_0_HTTP_BACKEND_REDIR": "/my/content"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend(host, "/svc/", "svc").await;
    let cases = [
        ("/", "root", "/"),
        ("/other/api", "root", "/other/api"),
        ("/api", "api", "/api"),
        ("/api/v1/users?id=3", "api", "/api/v1/users?id=3"),
        // path_beg is a plain prefix, as HAProxy's.
        ("/apix", "api", "/apix"),
        ("/api/v2", "api-v2", "/api/v2"),
        ("/api/v2/users", "api-v2", "/api/v2/users"),
        // HTTP_BACKEND_PROXYPASS_GLUE: `reqirep "^([^ :]*)\ /svc/?(.*)" "\1\ /\2"`.
        ("/svc/hello?x=1", "svc", "/hello?x=1"),
        ("/svc/a/b", "svc", "/a/b"),
        ("/svc", "svc", "/"),
        ("/svc/", "svc", "/"),
        ("/svc?x=1", "svc", "/?x=1"),
        // The glue's `/?` makes the slash optional: `/svcfoo` becomes `/foo` upstream.
        ("/svcfoo", "svc", "/foo"),
    ];
    for (path, backend, seen) in cases {
        let r = edge.get(host, path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let e = r.expect_echo();
        assert_eq!(
            (e.backend.as_str(), e.path.as_str()),
            (backend, seen),
            "{path}"
        );
        // The proxypass glue also sets Host to the vhost.
        assert_eq!(e.header("host"), Some(host), "{path}");
    }
    // HTTP_BACKEND_REVPROXY_GLUE: `rspirep "^Location: (https?://{hostname}(:[0-9]+)?)?(/.*)"
    // "Location: {rootpath}"` (upstream's template keeps the root path only).
    let r = edge.get(host, "/svc/302").await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.expect_echo().path, "/302");
    assert_eq!(r.header("location"), Some("/svc/"), "{r:?}");
    // A backend without the label keeps its Location.
    let r = edge.get(host, "/302").await;
    assert_eq!(r.header("location"), Some("/login"), "{r:?}");

    // HTTP_BACKEND_REDIR: `redirect code 301 location {redirpath} if is_domain is_root`.
    let r = edge
        .wait_for("redir.example.com", "/", |r| r.status == 301)
        .await;
    assert_eq!(r.header("location"), Some("/my/content"), "{r:?}");
    let r = edge.get("redir.example.com", "/my/content").await;
    assert_eq!(r.expect_echo().path, "/my/content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_reach_the_backend_and_hop_by_hop_headers_do_not() {
    let b = Backend::start("fwd").await;
    let list = apps(vec![vhost_app("/fwd", "fwd.example.com", &[&b], json!({}))]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("fwd.example.com", "/", "fwd").await;
    let r = edge
        .request(
            "fwd.example.com",
            "/h",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-custom", "kept"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "dropped"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
            ],
        )
        .await;
    let e = r.expect_echo();
    // `option forwardfor` appends the client; Marathon-LB's BACKEND_HTTP_OPTIONS set the port.
    assert_eq!(
        e.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1"),
        "{e:?}"
    );
    let port = edge.http.port().to_string();
    assert_eq!(e.header("x-forwarded-port"), Some(port.as_str()), "{e:?}");
    assert_eq!(e.header("x-forwarded-proto"), Some("http"), "{e:?}");
    let forwarded = e
        .header("forwarded")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        forwarded.contains("for=127.0.0.1") || forwarded.contains("for=\"127.0.0.1\""),
        "Forwarded: {forwarded:?}"
    );
    assert!(forwarded.contains("proto=http"), "Forwarded: {forwarded:?}");
    assert_eq!(e.header("host"), Some("fwd.example.com"));
    assert_eq!(e.header("x-custom"), Some("kept"));
    for hop in ["x-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(
            e.header(hop),
            None,
            "hop-by-hop {hop} reached the backend: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_a_client_on_its_server() {
    let backends = [
        Backend::start("s1").await,
        Backend::start("s2").await,
        Backend::start("s3").await,
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let host = "sticky.example.com";
    let list = apps(vec![vhost_app(
        "/sticky",
        host,
        &refs,
        json!({"HAPROXY_0_STICKY": "true"}),
    )]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_for(host, "/", |r| r.status == 200).await;

    // Without a cookie, round robin spreads requests, and each answer sets the cookie
    // (BACKEND_STICKY_OPTIONS: `cookie mesosphere_server_id insert indirect nocache`).
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let r = edge.get(host, "/").await;
        assert_eq!(r.status, 200, "{r:?}");
        let cookie = r
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("mesosphere_server_id="))
            .unwrap_or_else(|| panic!("no mesosphere_server_id cookie set: {r:?}"))
            .to_string();
        let value = cookie
            .trim_start_matches("mesosphere_server_id=")
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        seen.insert(r.expect_echo().backend, value);
    }
    assert!(
        seen.len() >= 2,
        "round robin without a cookie used one server only: {seen:?}"
    );
    let values: std::collections::BTreeSet<&String> = seen.values().collect();
    assert_eq!(
        values.len(),
        seen.len(),
        "servers share a cookie value: {seen:?}"
    );

    // With a server's cookie every request goes to that server, other cookies pass through.
    for (server, value) in &seen {
        let cookie = format!("theme=dark; mesosphere_server_id={value}");
        for _ in 0..5 {
            let r = edge.request(host, "/", &[("cookie", &cookie)]).await;
            let e = r.expect_echo();
            assert_eq!(&e.backend, server, "cookie {value} left its server");
            assert!(
                e.header("cookie")
                    .unwrap_or_default()
                    .contains("theme=dark"),
                "the client's other cookies were lost: {e:?}"
            );
            // `indirect`: the server never sees the edge's cookie, and no new one is set.
            assert!(
                !e.header("cookie")
                    .unwrap_or_default()
                    .contains("mesosphere_server_id"),
                "the sticky cookie reached the server: {e:?}"
            );
            assert!(
                r.headers.get("set-cookie").is_none(),
                "a valid cookie was set again: {r:?}"
            );
        }
    }
    // A cookie naming no server is ignored: the request is balanced and gets a fresh cookie.
    let r = edge
        .request(host, "/", &[("cookie", "mesosphere_server_id=nonsense")])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers.get_all("set-cookie").iter().any(|v| v
            .to_str()
            .is_ok_and(|v| v.starts_with("mesosphere_server_id="))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_acl_refuses_clients_outside_the_networks() {
    let one = Backend::start("one").await;
    let lo = Backend::start("lo").await;
    let far = Backend::start("far").await;
    let list = apps(vec![
        vhost_app(
            "/one",
            "one.example.com",
            &[&one],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "127.0.0.1/32"}),
        ),
        vhost_app(
            "/lo",
            "lo.example.com",
            &[&lo],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "127.0.0.0/8"}),
        ),
        vhost_app(
            "/far",
            "far.example.com",
            &[&far],
            json!({"HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8 192.168.0.0/16"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("lo.example.com", "/", "lo").await;
    let main: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let cases = [
        (main, "one.example.com", 200),
        (other, "one.example.com", 403),
        (main, "lo.example.com", 200),
        (other, "lo.example.com", 200),
        (main, "far.example.com", 403),
        (other, "far.example.com", 403),
    ];
    for (source, host, want) in cases {
        let hits = one.hits() + lo.hits() + far.hits();
        let r = send(edge.http, Some(source), "GET", host, "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{host} from {source}: {e}"));
        assert_eq!(r.status, want, "{host} from {source}: {r:?}");
        let reached = one.hits() + lo.hits() + far.hits() - hits;
        assert_eq!(
            reached,
            u64::from(want == 200),
            "{host} from {source}: backend requests"
        );
    }
    // The ACL is on the connection's source (HAProxy's `src`), not on what a client claims.
    for claim in [
        ("x-forwarded-for", "127.0.0.1"),
        ("forwarded", "for=127.0.0.1"),
    ] {
        let r = send(
            edge.http,
            Some(other),
            "GET",
            "one.example.com",
            "/",
            &[claim],
        )
        .await
        .expect("answer");
        assert_eq!(r.status, 403, "{claim:?} from {other}: {r:?}");
    }
}

/// `openssl passwd -6 -salt ferrysalt 's3cret!'` and `openssl passwd -5 …` (SHA-512 and
/// SHA-256 crypt, the hashes Marathon-LB users put in `HAPROXY_0_AUTH`).
const SHA512_HASH: &str = "$6$ferrysalt$oc1wK80qnjB3IZ.kYZeozv/shJ/9Jr9Egr6JuQbjzY8U7otFLNumAGbwuuLAKSY5WqCP37lOR2tgEHprKGOUY0";
const SHA256_HASH: &str = "$5$ferrysalt$uI8U2h.dX3hXxCLKVnEhVcY3WKhucg82h24UAc6GLK1";
const PASSWORD: &str = "s3cret!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_crypt_hashes() {
    if crate::harness::tool("curl").is_none() {
        return;
    }
    let bcrypt_hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt hash");
    let b = Backend::start("private").await;
    let hashes = [
        ("sha512", SHA512_HASH.to_string()),
        ("sha256", SHA256_HASH.to_string()),
        ("bcrypt", bcrypt_hash),
    ];
    let list = apps(
        hashes
            .iter()
            .map(|(kind, hash)| {
                vhost_app(
                    &format!("/{kind}"),
                    &format!("{kind}.example.com"),
                    &[&b],
                    json!({"HAPROXY_0_AUTH": format!("Realm {kind}:alice:{hash}")}),
                )
            })
            .collect(),
    );
    let edge = Edge::start("", "", &list).await;
    edge.wait_for("sha512.example.com", "/", |r| r.status == 401)
        .await;
    let url = format!("http://{}/secret", edge.http);
    for (kind, _) in &hashes {
        let host = format!("Host: {kind}.example.com");
        let before = b.hits();
        let none = curl(&["-H", &host, &url]).await.expect("curl");
        assert_eq!(none.status, 401, "{kind} without credentials: {none:?}");
        let challenge = none.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Basic")
                && challenge.contains(&format!("realm=\"Realm {kind}\"")),
            "{kind}: WWW-Authenticate {challenge:?}"
        );
        for bad in ["alice:wrong", "bob:s3cret!", "alice:", "alice:s3cret"] {
            let r = curl(&["-u", bad, "-H", &host, &url]).await.expect("curl");
            assert_eq!(r.status, 401, "{kind} with {bad}: {r:?}");
        }
        assert_eq!(
            b.hits(),
            before,
            "{kind}: a refused request reached the backend"
        );
        let ok = curl(&["-u", &format!("alice:{PASSWORD}"), "-H", &host, &url])
            .await
            .expect("curl");
        assert_eq!(ok.status, 200, "{kind} with the password: {ok:?}");
        assert!(ok.body.contains("\"backend\":\"private\""), "{ok:?}");
        assert_eq!(b.hits(), before + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_vhost_router() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let ws = WsBackend::start("ws-backend").await;
    let list = apps(vec![app(
        "/ws",
        free_port(),
        &[ws.addr.port()],
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "ws.example.com"}),
    )]);
    let edge = Edge::start("", "", &list).await;
    // The route is up once a plain request gets past routing (the backend refuses non-WebSocket
    // requests with 400; 503 means no route yet).
    edge.wait_for("ws.example.com", "/", |r| r.status != 503)
        .await;

    let request = "ws://ws.example.com/chat"
        .into_client_request()
        .expect("request");
    let stream = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("connect");
    let (mut client, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("handshake in time")
    .expect("WebSocket handshake through the edge");
    assert_eq!(response.status(), 101);
    for i in 0..20 {
        client
            .send(Message::text(format!("ping {i}")))
            .await
            .expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("an answer in time")
            .expect("a message")
            .expect("a good frame");
        assert_eq!(got, Message::text(format!("ws-backend:ping {i}")));
    }
    let big = vec![7u8; 200_000];
    client
        .send(Message::binary(big.clone()))
        .await
        .expect("send binary");
    let got = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("a good frame");
    assert_eq!(got.into_data().as_ref(), &big[..]);
    client.close(None).await.expect("close");
    assert_eq!(ws.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_service_port_serves_every_host_and_tcp_mode_is_not_l7() {
    let web = Backend::start("svc-http").await;
    let tcp = Backend::start("svc-tcp").await;
    let (http_port, tcp_port) = (free_port(), free_port());
    let list = apps(vec![
        app(
            "/svc-http",
            0,
            &[web.port()],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_PORT": http_port.to_string(),
                   "HAPROXY_0_MODE": "http"}),
        ),
        // No vhost, no mode, no HTTP health check: tcp, the L4 balancer's (off here).
        app(
            "/svc-tcp",
            tcp_port,
            &[tcp.port()],
            json!({"HAPROXY_GROUP": "external"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    let addr = format!("127.0.0.1:{http_port}").parse().unwrap();
    super::wait_for_at(
        addr,
        "anything.example.com",
        "/p",
        |r| r.status == 200,
        &edge.f,
    )
    .await;
    for host in ["x.example.com", "127.0.0.1", "svc-http.example.com:9"] {
        let r = send(addr, None, "GET", host, "/q?1", &[])
            .await
            .expect("service port answers");
        let e = r.expect_echo();
        assert_eq!((e.backend.as_str(), e.path.as_str()), ("svc-http", "/q?1"));
        assert_eq!(
            e.header("x-forwarded-port"),
            Some(http_port.to_string().as_str())
        );
    }
    // The vhost router knows nothing of them.
    assert_eq!(edge.get("x.example.com", "/").await.status, 503);
    let tcp_addr: std::net::SocketAddr = format!("127.0.0.1:{tcp_port}").parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(tcp_addr).await.is_err(),
        "a tcp-mode service port has an L7 listener"
    );
    assert_eq!(tcp.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_the_plain_listener() {
    let b = Backend::start("h2c").await;
    let list = apps(vec![vhost_app("/h2c", "h2c.example.com", &[&b], json!({}))]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("h2c.example.com", "/", "h2c").await;
    let url = format!("http://{}/over/h2?x=1", edge.http);
    let Some(r) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: h2c.example.com",
        &url,
    ])
    .await
    else {
        return;
    };
    assert_eq!(
        (r.code, r.status, r.version.as_str()),
        (0, 200, "2"),
        "{r:?}"
    );
    assert!(r.body.contains("\"path\":\"/over/h2?x=1\""), "{r:?}");
    // The :authority is the vhost; the backend is spoken to in HTTP/1.1
    // (`l7.backend_protocol` default).
    let echo = super::Reply {
        status: r.status,
        headers: http::HeaderMap::new(),
        body: r.body.clone(),
    }
    .expect_echo();
    assert_eq!(echo.backend, "h2c");
    assert_eq!(echo.version, "HTTP/1.1");
    // HTTP/1.1 on the same listener still works.
    let r = curl(&["--http1.1", "-H", "Host: h2c.example.com", &url])
        .await
        .expect("curl");
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_template_labels_and_h2_backends() {
    let plain = Backend::start("plain").await;
    let internal = Backend::start("internal").await;
    let port_group = Backend::start("port-group").await;
    let h2 = Backend::start("h2-backend").await;
    let list = apps(vec![
        // Raw HAProxy templates cannot apply: warned about and counted, the app still served.
        vhost_app(
            "/templated",
            "plain.example.com",
            &[&plain],
            json!({"HAPROXY_0_FRONTEND_HEAD": "frontend x\n", "HAPROXY_0_BACKEND_HEAD": "y"}),
        ),
        // Another Marathon-LB group: not this edge's.
        app(
            "/internal",
            free_port(),
            &[internal.port()],
            json!({"HAPROXY_GROUP": "internal", "HAPROXY_0_VHOST": "internal.example.com"}),
        ),
        // The port's group takes precedence over the app's.
        app(
            "/port-group",
            free_port(),
            &[port_group.port()],
            json!({"HAPROXY_GROUP": "internal", "HAPROXY_0_GROUP": "external",
                   "HAPROXY_0_VHOST": "port-group.example.com"}),
        ),
        // HTTP/2 (prior knowledge) to this app's servers.
        vhost_app(
            "/h2",
            "h2.example.com",
            &[&h2],
            json!({"FERRYMAN_L7_BACKEND_PROTOCOL": "h2"}),
        ),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_backend("plain.example.com", "/", "plain").await;
    edge.wait_backend("port-group.example.com", "/", "port-group")
        .await;
    let r = edge.get("internal.example.com", "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(internal.hits(), 0);

    let e = edge.wait_backend("h2.example.com", "/", "h2-backend").await;
    assert_eq!(e.expect_echo().version, "HTTP/2.0");
    let e = edge.get("plain.example.com", "/").await.expect_echo();
    assert_eq!(e.version, "HTTP/1.1");

    let warned: Vec<String> = edge
        .f
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("/templated"))
        .map(str::to_string)
        .collect();
    assert_eq!(warned.len(), 1, "warn once about /templated: {warned:?}");
    assert!(
        warned[0].contains("HAPROXY_0_FRONTEND_HEAD")
            && warned[0].contains("HAPROXY_0_BACKEND_HEAD"),
        "{warned:?}"
    );
    let metrics = edge.f.get("/metrics").await.body;
    assert_eq!(
        super::metric_sum(
            &metrics,
            "ferryman_l7_unsupported_labels",
            &[("app", "/templated")]
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabled_balance_weight_and_path_lists() {
    let off = Backend::start("off").await;
    let (src1, src2, src3) = (
        Backend::start("src-1").await,
        Backend::start("src-2").await,
        Backend::start("src-3").await,
    );
    let heavy = Backend::start("heavy").await;
    let light = Backend::start("light").await;
    let multi = Backend::start("multi").await;
    let catch = Backend::start("catch").await;
    let list = apps(vec![
        vhost_app(
            "/off",
            "off.example.com",
            &[&off],
            json!({"HAPROXY_0_ENABLED": "false"}),
        ),
        vhost_app(
            "/source",
            "source.example.com",
            &[&src1, &src2, &src3],
            json!({"HAPROXY_0_BALANCE": "source"}),
        ),
        // BACKEND_WEIGHT orders routes before path length: the weighted catch-all wins.
        vhost_app(
            "/heavy",
            "weight.example.com",
            &[&heavy],
            json!({"HAPROXY_0_BACKEND_WEIGHT": "10"}),
        ),
        vhost_app(
            "/light",
            "weight.example.com",
            &[&light],
            json!({"HAPROXY_0_PATH": "/light"}),
        ),
        // Several path_beg prefixes, case-insensitive with -i.
        vhost_app(
            "/multi",
            "paths.example.com",
            &[&multi],
            json!({"HAPROXY_0_PATH": "-i /One /two"}),
        ),
        vhost_app("/catch", "paths.example.com", &[&catch], json!({})),
    ]);
    let edge = Edge::start("", "", &list).await;
    edge.wait_for("source.example.com", "/", |r| r.status == 200)
        .await;
    assert_eq!(edge.get("off.example.com", "/").await.status, 503);
    assert_eq!(off.hits(), 0);

    // `balance source`: one client address, one server.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        seen.insert(
            edge.get("source.example.com", "/")
                .await
                .expect_echo()
                .backend,
        );
    }
    assert_eq!(seen.len(), 1, "balance source spread one client: {seen:?}");

    for path in ["/", "/light", "/light/x"] {
        let e = edge.get("weight.example.com", path).await.expect_echo();
        assert_eq!(e.backend, "heavy", "{path}");
    }
    assert_eq!(light.hits(), 0);

    for (path, backend) in [
        ("/one/a", "multi"),
        ("/ONE", "multi"),
        ("/Two/b", "multi"),
        ("/three", "catch"),
        ("/", "catch"),
    ] {
        let e = edge.get("paths.example.com", path).await.expect_echo();
        assert_eq!(e.backend, backend, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_follow_route_changes() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    let b = Backend::start("mover").await;
    let (old_port, new_port) = (free_port(), free_port());
    let mover = |vhost: &str, port: u16| {
        app(
            "/mover",
            port,
            &[b.port()],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": vhost}),
        )
    };
    let edge = Edge::start("", "", &apps(vec![mover("old.example.com", old_port)])).await;
    edge.wait_backend("old.example.com", "/", "mover").await;

    let stream = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut ask = async |method: &str, host: &str, path: &str| {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        // hyper's sender takes a request only once the previous exchange has finished.
        sender.ready().await.expect("same connection still open");
        let resp = sender.send_request(req).await.expect("same connection");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts, body)
    };
    // HEAD and response hop-by-hop fields on the way.
    let (head, body) = ask("HEAD", "old.example.com", "/").await;
    assert_eq!(head.status, 200);
    assert!(body.is_empty());
    let (hop, _) = ask("GET", "old.example.com", "/hop").await;
    assert_eq!(
        hop.headers.get("x-keep").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(hop.headers.get("x-drop").is_none(), "{:?}", hop.headers);

    // The vhost and the service port move; the open connection sees the new routes.
    edge.set_apps(&apps(vec![mover("new.example.com", new_port)]));
    let deadline = std::time::Instant::now() + super::ROUTE_WITHIN;
    loop {
        let (parts, _) = ask("GET", "new.example.com", "/").await;
        if parts.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new vhost not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (old, _) = ask("GET", "old.example.com", "/").await;
    assert_eq!(old.status, 503);
    let new_addr = format!("127.0.0.1:{new_port}").parse().unwrap();
    super::wait_for_at(new_addr, "any", "/", |r| r.status == 200, &edge.f).await;
    let old_addr: std::net::SocketAddr = format!("127.0.0.1:{old_port}").parse().unwrap();
    let deadline = std::time::Instant::now() + super::ROUTE_WITHIN;
    while tokio::net::TcpStream::connect(old_addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old service port still listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_port_listens_on_its_bind_addr() {
    let b = Backend::start("bound").await;
    let sp = free_port();
    let list = apps(vec![app(
        "/bound",
        sp,
        &[b.port()],
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http",
               "HAPROXY_0_BIND_ADDR": "127.0.0.2"}),
    )]);
    let edge = Edge::start("", "", &list).await;
    let on: std::net::SocketAddr = format!("127.0.0.2:{sp}").parse().unwrap();
    super::wait_for_at(on, "any", "/", |r| r.status == 200, &edge.f).await;
    let off: std::net::SocketAddr = format!("127.0.0.1:{sp}").parse().unwrap();
    assert!(
        tokio::net::TcpStream::connect(off).await.is_err(),
        "HAPROXY_0_BIND_ADDR=127.0.0.2 also listens on 127.0.0.1"
    );
}
