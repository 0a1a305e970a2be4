//! The user-space L4 balancer end to end, through the real binary:
//! - a Marathon-LB service port (`HAPROXY_GROUP=external`) on 127.0.0.1 reaches its backends
//!   (no root: service ports only, `l4.link = ""`);
//! - as root, in a network namespace the test creates and removes: the VIP link is created (the
//!   bridge fallback where the kernel has no dummy driver), a VIP reaches its backend, `/v1/vips`
//!   shows its active connection, and `ferryman cleanup` removes the link.

use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::harness::{Ferryman, free_port, try_http_request};

const WITHIN: Duration = Duration::from_secs(20);

/// A Marathon app on `127.0.0.1:backend_port` with labels on the app and on its port.
fn app(
    id: &str,
    service_port: u16,
    backend_port: u16,
    labels: serde_json::Value,
    port_labels: serde_json::Value,
) -> serde_json::Value {
    json!({
        "id": id, "version": "2024-01-01T00:00:00.000Z", "instances": 1, "labels": labels,
        "portDefinitions": [{"port": service_port, "protocol": "tcp", "labels": port_labels}],
        "tasks": [{
            "id": format!("{}.1", id.trim_start_matches('/')), "appId": id, "host": "127.0.0.1",
            "slaveId": "agent-1", "ports": [backend_port], "state": "TASK_RUNNING",
            "startedAt": "2024-01-01T00:00:01.000Z"
        }]
    })
}

/// An echo server that greets with `tag`; runs until the test's runtime ends.
async fn echo(tag: u8) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(&[tag]).await.is_ok() {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects to `addr` until it answers (the listener appears once the snapshot is applied), sends
/// `msg`, half-closes and reads everything back.
async fn exchange(addr: &str, msg: &[u8]) -> Vec<u8> {
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            s.write_all(msg).await.expect("write");
            s.shutdown().await.expect("half-close");
            let mut got = Vec::new();
            timeout(WITHIN, s.read_to_end(&mut got))
                .await
                .expect("the exchange ends")
                .expect("read");
            if !got.is_empty() {
                return got;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_port_reaches_its_backend_through_the_binary() {
    let backend = echo(b's').await;
    let service_port = free_port();
    let answer = json!({"apps": [
        app("/web", service_port, backend.port(), json!({"HAPROXY_GROUP": "external"}), json!({})),
        // Not in the group: no listener.
        app("/other", free_port(), backend.port(), json!({"HAPROXY_GROUP": "internal"}), json!({})),
    ]});
    let f = Ferryman::start_with(
        "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\n[l4]\nmode = \"userspace\"\nlink = \"\"\n",
        &[("apps.json", answer.to_string().as_bytes())],
    );
    f.wait_ready(WITHIN).await;
    let got = exchange(&format!("127.0.0.1:{service_port}"), b"hello").await;
    assert_eq!(got, b"shello");
    let metrics = f.get("/metrics").await.body;
    assert!(
        metrics.contains("ferryman_l4_listeners{kind=\"service\",protocol=\"tcp\"} 1"),
        "{metrics}"
    );
}

// === root: a network namespace of the test's own ===

/// A network namespace, deleted on drop. `None` without the rights or `ip`.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        let caps = rustix::thread::capabilities(None).map(|c| c.effective);
        let need =
            rustix::thread::CapabilitySet::NET_ADMIN | rustix::thread::CapabilitySet::SYS_ADMIN;
        if !caps.is_ok_and(|c| c.contains(need)) {
            eprintln!("skipped: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
            return None;
        }
        let name = format!("fm-it-l4-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot create a network namespace");
            return None;
        }
        let ns = Netns(name);
        assert!(ns.ip(&["link", "set", "lo", "up"]).0);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("run ip");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs `f` on a thread inside the namespace, on a runtime of its own.
    fn block_on<T: Send, F: Future<Output = T>>(&self, f: impl FnOnce() -> F + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open the namespace");
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f())
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn vip_through_the_link_in_a_namespace_and_cleanup_removes_it() {
    let Some(ns) = Netns::new("vip") else { return };
    // The backend lives in the namespace, on a thread that serves until the test ends.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/run/netns/{}", ns.0);
    let backend_thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns_path).expect("open the namespace");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tx.send(echo(b'v').await).expect("send the address");
            let _ = stop_rx.await;
        });
    });
    let backend = rx.recv().expect("backend address");

    let answer = json!({"apps": [
        app("/vip", 0, backend.port(), json!({}), json!({"VIP_0": "10.1.0.1:80"})),
    ]});
    let config = "[discovery]\nsource = \"file\"\nfile = \"apps.json\"\n\
                  [l4]\nmode = \"userspace\"\nlink = \"fmit0\"\n";
    let f = Ferryman::start_in_netns(
        &ns.0,
        config,
        &[("apps.json", answer.to_string().as_bytes())],
    );
    let admin = f.admin;
    let vips = ns.block_on(|| async move {
        let got = exchange("10.1.0.1:80", b"hi").await;
        assert_eq!(got, b"vhi");
        // Hold one connection open: /v1/vips shows it as active on the backend.
        let mut held = TcpStream::connect("10.1.0.1:80")
            .await
            .expect("connect the VIP");
        let mut tag = [0u8; 1];
        held.read_exact(&mut tag).await.expect("greeting");
        let body = try_http_request(admin, "GET", "/v1/vips")
            .await
            .expect("GET /v1/vips")
            .body;
        drop(held);
        body
    });
    let vips: serde_json::Value = serde_json::from_str(&vips).expect("/v1/vips is JSON");
    let b = &vips[0]["backends"][0];
    assert_eq!(
        (b["health"].as_str(), b["active"].as_u64()),
        (Some("up"), Some(1)),
        "{vips}"
    );

    let (_, link) = ns.ip(&["-d", "-o", "addr", "show", "dev", "fmit0"]);
    assert!(link.contains("10.1.0.1/32"), "{link}");
    assert!(f.logs().contains("VIP link ready"), "{}", f.logs());
    // Stop ferryman first (the link stays); keep a copy of its config for `cleanup`.
    let kept = tempfile::tempdir().expect("temporary directory");
    let config_path = kept.path().join("ferryman.toml");
    std::fs::copy(f.dir.path().join("ferryman.toml"), &config_path).expect("copy the config");
    drop(f);
    assert!(
        ns.ip(&["link", "show", "fmit0"]).0,
        "the link outlives the process"
    );

    // `ferryman cleanup` removes the link with its addresses.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_ferryman")])
        .arg("--config")
        .arg(&config_path)
        .arg("cleanup")
        .output()
        .expect("run ferryman cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ns.ip(&["link", "show", "fmit0"]).0, "the link is gone");

    let _ = stop_tx.send(());
    backend_thread.join().expect("backend thread");
}
