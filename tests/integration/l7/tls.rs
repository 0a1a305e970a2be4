//! The TLS listener: SNI picks the certificate (`HAPROXY_0_SSL_CERT`, `[l7.tls]` dir and
//! default), ALPN h2, forwarded headers over TLS, redirect to HTTPS, HSTS, certificate reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Backend, Certs, Curl, Edge, apps, curl, resolve, vhost_app};
use crate::harness::free_port;

/// Certificates for a.example.com (served from an app's `HAPROXY_0_SSL_CERT`), b.example.com
/// (in `[l7.tls] dir`) and default.example.net (`[l7.tls] cert`), and the `[l7]`/`[l7.tls]`
/// config for an https listener on a free port.
struct Tls {
    certs: Certs,
    l7_keys: String,
    sections: String,
}

fn tls_setup() -> Tls {
    let certs = Certs::generate(&["a.example.com", "b.example.com", "default.example.net"]);
    let dir = certs.path("dir");
    std::fs::create_dir_all(&dir).expect("cert dir");
    std::fs::rename(
        certs.path("b.example.com.pem"),
        dir.join("b.example.com.pem"),
    )
    .expect("move b into the dir");
    let l7_keys = format!("https = \"127.0.0.1:{}\"", free_port());
    let sections = format!(
        "[l7.tls]\ncert = \"{}\"\ndir = \"{}\"\n",
        certs.path("default.example.net.pem").display(),
        dir.display()
    );
    Tls {
        certs,
        l7_keys,
        sections,
    }
}

/// `curl --cacert CA --resolve NAME:PORT:127.0.0.1 https://NAME:PORT<path>` plus `args`.
async fn curl_tls(tls: &Tls, https: SocketAddr, name: &str, path: &str, args: &[&str]) -> Curl {
    let url = format!("https://{name}:{}{path}", https.port());
    let ca = tls.certs.ca();
    let mut all = vec!["--cacert", &ca, "--resolve"];
    let resolve = resolve(name, https);
    all.push(&resolve);
    all.extend_from_slice(args);
    all.push(&url);
    curl(&all).await.expect("curl (checked by the caller)")
}

/// Polls until `name` is served over TLS with status 200 (the route and its certificate
/// appear with the snapshot).
async fn wait_tls(tls: &Tls, edge: &Edge, name: &str, extra: &[&str]) -> Curl {
    let https = edge.https.expect("https configured");
    let deadline = Instant::now() + super::ROUTE_WITHIN;
    loop {
        let r = curl_tls(tls, https, name, "/", extra).await;
        if r.status == 200 || Instant::now() >= deadline {
            assert_eq!(r.status, 200, "{name} over TLS: {r:?}\n{}", edge.f.logs());
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_offers_h2() {
    if crate::harness::tool("curl").is_none() {
        return;
    }
    let tls = tls_setup();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let list = apps(vec![
        vhost_app(
            "/a",
            "a.example.com",
            &[&a],
            json!({"HAPROXY_0_SSL_CERT": tls.certs.path("a.example.com.pem")}),
        ),
        vhost_app("/b", "b.example.com", &[&b], json!({})),
    ]);
    let edge = Edge::start(&tls.l7_keys, &tls.sections, &list).await;
    let https = edge.https.expect("https");
    wait_tls(&tls, &edge, "a.example.com", &[]).await;

    for (name, backend) in [("a.example.com", "a"), ("b.example.com", "b")] {
        // --cacert without -k: the handshake only succeeds when the served certificate is
        // valid for `name`.
        let r = curl_tls(&tls, https, name, "/tls?x=1", &["--http2"]).await;
        assert_eq!((r.code, r.status), (0, 200), "{name}: {r:?}");
        assert_eq!(r.subject(), Some(format!("CN={name}").as_str()), "{name}");
        assert_eq!(r.version, "2", "{name}: ALPN did not select h2: {r:?}");
        let echo: serde_json::Value = serde_json::from_str(&r.body).expect("backend JSON");
        assert_eq!(echo["backend"], backend);
        assert_eq!(echo["path"], "/tls?x=1");
        let h = &echo["headers"];
        assert_eq!(h["x-forwarded-proto"], "https", "{name}: {h}");
        assert_eq!(
            h["x-forwarded-port"],
            https.port().to_string(),
            "{name}: {h}"
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{name}: {h}");
        assert!(
            h["forwarded"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("proto=https"),
            "{name}: {h}"
        );
        // HTTP/1.1 when the client offers only that.
        let r = curl_tls(&tls, https, name, "/", &["--http1.1"]).await;
        assert_eq!(
            (r.status, r.version.as_str()),
            (200, "1.1"),
            "{name}: {r:?}"
        );
    }
    // Names are case-insensitive, in SNI as in Host.
    let r = curl_tls(&tls, https, "A.Example.COM", "/", &[]).await;
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
    assert_eq!(r.subject(), Some("CN=a.example.com"), "{r:?}");
    assert!(r.body.contains("\"backend\":\"a\""), "{r:?}");
    // An unknown name gets the default certificate (and no route: 503).
    let r = curl_tls(&tls, https, "c.example.com", "/", &["-k"]).await;
    assert_eq!(r.subject(), Some("CN=default.example.net"), "{r:?}");
    assert_eq!(r.status, 503, "{r:?}");
    // So does a client that sends no SNI (an IP address).
    let url = format!("https://127.0.0.1:{}/", https.port());
    let r = curl(&["-k", &url]).await.expect("curl");
    assert_eq!(r.subject(), Some("CN=default.example.net"), "{r:?}");
    // TLS 1.2 is accepted as well as 1.3.
    let r = curl_tls(&tls, https, "a.example.com", "/", &["--tls-max", "1.2"]).await;
    assert_eq!(r.status, 200, "TLS 1.2: {r:?}");
    assert!(r.stderr.contains("TLSv1.2"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_https_and_hsts() {
    if crate::harness::tool("curl").is_none() {
        return;
    }
    let tls = tls_setup();
    let r_backend = Backend::start("redirected").await;
    let h_backend = Backend::start("hsts").await;
    let list = apps(vec![
        vhost_app(
            "/redirected",
            "r.example.com",
            &[&r_backend],
            json!({"HAPROXY_0_REDIRECT_TO_HTTPS": "true"}),
        ),
        vhost_app(
            "/hsts",
            "h.example.com",
            &[&h_backend],
            json!({"HAPROXY_0_USE_HSTS": "true"}),
        ),
    ]);
    let edge = Edge::start(&tls.l7_keys, &tls.sections, &list).await;
    let https = edge.https.expect("https");
    // BACKEND_REDIRECT_HTTP_TO_HTTPS: `redirect scheme https code 301 if !{ ssl_fc }`.
    let r = edge
        .wait_for("r.example.com", "/some/path?q=1", |r| r.status == 301)
        .await;
    // Upstream's TLS frontend is on 443, where `redirect scheme https` leads; ours may be
    // elsewhere, so the location names its port when it is not 443.
    let location = format!("https://r.example.com:{}/some/path?q=1", https.port());
    assert_eq!(r.header("location"), Some(location.as_str()), "{r:?}");
    assert_eq!(r_backend.hits(), 0, "the redirect reached the backend");
    // Over TLS the same request is served (no certificate for r.example.com: the default, -k).
    let over_tls = wait_tls(&tls, &edge, "r.example.com", &["-k"]).await;
    assert!(
        over_tls.body.contains("\"backend\":\"redirected\""),
        "{over_tls:?}"
    );

    // BACKEND_HSTS_OPTIONS: `rspadd Strict-Transport-Security: max-age=15768000`.
    let r = curl_tls(&tls, https, "h.example.com", "/", &["-k"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=15768000"),
        "{r:?}"
    );
    // An app without USE_HSTS has none.
    let r = curl_tls(&tls, https, "r.example.com", "/", &["-k"]).await;
    assert_eq!(r.header("strict-transport-security"), None, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    if crate::harness::tool("curl").is_none() {
        return;
    }
    let tls = tls_setup();
    let a = Backend::start("a").await;
    let label_cert = tls.certs.path("a.example.com.pem");
    let list = apps(vec![vhost_app(
        "/a",
        "a.example.com",
        &[&a],
        json!({"HAPROXY_0_SSL_CERT": label_cert}),
    )]);
    let edge = Edge::start(&tls.l7_keys, &tls.sections, &list).await;
    let https = edge.https.expect("https");
    let first = wait_tls(&tls, &edge, "a.example.com", &[]).await;
    assert_eq!(first.subject(), Some("CN=a.example.com"));

    // A new certificate for the same name, from a new CA: the old CA must stop verifying.
    let fresh = Certs::generate(&["a.example.com"]);
    let tmp = label_cert.with_extension("tmp");
    std::fs::copy(fresh.path("a.example.com.pem"), &tmp).expect("copy");
    std::fs::rename(&tmp, &label_cert).expect("replace the certificate");
    let deadline = Instant::now() + super::ROUTE_WITHIN;
    let ca = fresh.ca();
    let resolve = resolve("a.example.com", https);
    let url = format!("https://a.example.com:{}/", https.port());
    loop {
        let r = curl(&["--cacert", &ca, "--resolve", &resolve, &url])
            .await
            .expect("curl");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced certificate was not served within {:?}: {r:?}",
            super::ROUTE_WITHIN
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A certificate file added to [l7.tls] dir is served too.
    let more = Certs::generate(&["c.example.com"]);
    std::fs::copy(
        more.path("c.example.com.pem"),
        tls.certs.path("dir").join("c.example.com.pem"),
    )
    .expect("add to the dir");
    loop {
        let r = curl_tls(&tls, https, "c.example.com", "/", &["-k"]).await;
        if r.subject() == Some("CN=c.example.com") {
            break;
        }
        assert!(
            Instant::now() < deadline + super::ROUTE_WITHIN,
            "a certificate added to the dir is not served: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        edge.http_listener_kept(),
        "the l7.http listening socket was replaced"
    );
    let https_sockets: Vec<_> = super::listening_sockets(edge.f.pid())
        .into_iter()
        .filter(|(a, _)| *a == https)
        .collect();
    assert_eq!(https_sockets.len(), 1, "{https_sockets:?}");
}

/// Marathon-LB routes its TLS frontend by SNI (`HTTPS_FRONTEND_ACL`: `use_backend {backend}
/// if { ssl_fc_sni {hostname} }`), so a connection opened for a.example.com never reaches
/// b.example.com's backend, whatever Host it sends (RFC 9110 15.5.20: 421 Misdirected
/// Request is the answer for a request the connection's server is not authoritative for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_for_one_name_cannot_reach_another_vhost() {
    if crate::harness::tool("curl").is_none() {
        return;
    }
    let tls = tls_setup();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let list = apps(vec![
        vhost_app(
            "/a",
            "a.example.com",
            &[&a],
            json!({"HAPROXY_0_SSL_CERT": tls.certs.path("a.example.com.pem")}),
        ),
        vhost_app("/b", "b.example.com", &[&b], json!({})),
    ]);
    let edge = Edge::start(&tls.l7_keys, &tls.sections, &list).await;
    let https = edge.https.expect("https");
    wait_tls(&tls, &edge, "b.example.com", &[]).await;
    let before = b.hits();
    for version in ["--http1.1", "--http2"] {
        let r = curl_tls(
            &tls,
            https,
            "a.example.com",
            "/fronted",
            &[version, "-H", "Host: b.example.com"],
        )
        .await;
        assert!(
            r.status == 421 || (r.status == 200 && r.body.contains("\"backend\":\"a\"")),
            "SNI a.example.com with Host b.example.com ({version}): {r:?}"
        );
    }
    assert_eq!(
        b.hits(),
        before,
        "b.example.com reached through a.example.com's TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_and_behind_basic_auth() {
    use futures_util::{SinkExt, StreamExt};
    use rustls_pki_types::pem::PemObject;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let tls = tls_setup();
    let ws = super::WsBackend::start("wss-backend").await;
    let hash = bcrypt::hash("s3cret!", 4).expect("hash");
    let list = apps(vec![
        super::app(
            "/wss",
            free_port(),
            &[ws.addr.port()],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "a.example.com",
                   "HAPROXY_0_SSL_CERT": tls.certs.path("a.example.com.pem")}),
        ),
        super::app(
            "/ws-private",
            free_port(),
            &[ws.addr.port()],
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "private.example.com",
                   "HAPROXY_0_AUTH": format!("ws:alice:{hash}")}),
        ),
    ]);
    let edge = Edge::start(&tls.l7_keys, &tls.sections, &list).await;
    let https = edge.https.expect("https");
    edge.wait_for("private.example.com", "/", |r| r.status == 401)
        .await;

    // wss:// through the TLS listener (ALPN http/1.1: WebSocket upgrades are HTTP/1.1).
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(tls.certs.path("ca.pem"))
        .expect("read ca.pem")
    {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    // The process default provider (ring, the only one the crate features enable).
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let deadline = Instant::now() + super::ROUTE_WITHIN;
    let (mut client, response) = loop {
        let tcp = tokio::net::TcpStream::connect(https)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("a.example.com").expect("name");
        let attempt = async {
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let request = "wss://a.example.com/secure"
                .into_client_request()
                .map_err(|e| e.to_string())?;
            tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(done)) => break done,
            other => assert!(
                Instant::now() < deadline,
                "wss handshake through the edge: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.status(), 101);
    client.send(Message::text("over tls")).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("a good frame");
    assert_eq!(got, Message::text("wss-backend:over tls"));
    client.close(None).await.expect("close");

    // HAPROXY_0_AUTH applies to the upgrade request too.
    let handshakes = ws.handshakes.load(std::sync::atomic::Ordering::SeqCst);
    let tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("connect");
    let refused = tokio_tungstenite::client_async(
        "ws://private.example.com/"
            .into_client_request()
            .expect("request"),
        tcp,
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("an unauthenticated upgrade: {:?}", other.map(|(_, r)| r)),
    }
    let mut request = "ws://private.example.com/"
        .into_client_request()
        .expect("request");
    use base64::Engine as _;
    let creds = base64::engine::general_purpose::STANDARD.encode("alice:s3cret!");
    request.headers_mut().insert(
        "authorization",
        format!("Basic {creds}").parse().expect("header value"),
    );
    let tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("connect");
    let (mut client, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("an authenticated upgrade");
    client.send(Message::text("let me in")).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("a good frame");
    assert_eq!(got, Message::text("wss-backend:let me in"));
    assert_eq!(
        ws.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        handshakes + 1,
        "the refused upgrade reached the backend"
    );
}
