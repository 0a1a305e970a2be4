//! Test harness: starts the real `ferryman` binary with a config written to a temporary directory,
//! learns its admin address from the start-up log line, and kills it on `Drop`. Also: a minimal
//! HTTP/1.1 client over `TcpStream`, a free-port helper and [`tool`] for external programs.
//!
//! Every wait here is bounded in time.

#![allow(dead_code)] // Not every area uses every helper.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the binary may take to log its admin address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The log text `main.rs` prints once the admin listener is bound.
const ADMIN_LINE: &str = "admin listening on ";
/// The log text `main.rs` prints once the DNS sockets are bound (after the admin line).
const DNS_LINE: &str = "dns listening on ";

/// A running `ferryman` process.
pub struct Ferryman {
    child: Child,
    /// The bound admin address (from the log).
    pub admin: SocketAddr,
    /// The bound DNS address, UDP and TCP (from the log).
    pub dns: SocketAddr,
    /// Working directory of the process; holds `ferryman.toml` and any files the test wrote.
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Ferryman {
    /// Starts `ferryman --config <dir>/ferryman.toml` with `config_toml`, after forcing
    /// `admin.listen`, `dns.listen` and `l7.http` to `127.0.0.1:0` and, unless the config sets
    /// them, `l4.mode = "off"`, `l4.link = ""` and `l4.bpf_pin_dir` in the temporary directory (a test changes nothing on the host and binds no
    /// fixed service ports unless it asks to). The process runs in the temporary directory, so a
    /// relative `discovery.file` names a file written there.
    pub fn start(config_toml: &str) -> Ferryman {
        Ferryman::start_with(config_toml, &[])
    }

    /// Like [`Ferryman::start`], first writing `files` (relative path, contents) into the directory.
    pub fn start_with(config_toml: &str, files: &[(&str, &[u8])]) -> Ferryman {
        Ferryman::start_prefixed(&[], config_toml, files)
    }

    /// Like [`Ferryman::start_with`], run inside network namespace `netns` (`ip netns exec`, which
    /// execs the binary, so killing the child kills ferryman). Its 127.0.0.1 listeners are that
    /// namespace's loopback: reach them from a thread inside it (`netns::Netns::block_on`).
    pub fn start_in_netns(netns: &str, config_toml: &str, files: &[(&str, &[u8])]) -> Ferryman {
        Ferryman::start_prefixed(&["ip", "netns", "exec", netns], config_toml, files)
    }

    /// Starts the binary as the last argument of `prefix` (a command that execs it).
    fn start_prefixed(prefix: &[&str], config_toml: &str, files: &[(&str, &[u8])]) -> Ferryman {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        for (name, contents) in files {
            write_file(dir.path(), name, contents);
        }
        let config = loopback_config(config_toml, dir.path());
        let config_path = dir.path().join("ferryman.toml");
        std::fs::write(&config_path, config).expect("write ferryman.toml");

        let mut child = ferryman_command(prefix, &config_path, dir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the ferryman binary");

        // Read stderr (and stdout, in case logs go there) on threads for the life of the process:
        // keep every line for diagnostics and hand the admin address over once it is logged.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        spawn_reader(stderr, logs.clone(), tx.clone());
        spawn_reader(stdout, logs.clone(), tx);

        let deadline = Instant::now() + START_TIMEOUT;
        let (mut admin, mut dns) = (None, None);
        while admin.is_none() || dns.is_none() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Logged::Admin(addr)) => admin = Some(addr),
                Ok(Logged::Dns(addr)) => dns = Some(addr),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let logs = logs.lock().expect("log lock").join("\n");
                    panic!(
                        "ferryman did not log `{ADMIN_LINE}ADDR` and `{DNS_LINE}ADDR` within \
                         {START_TIMEOUT:?} (exit status {status:?}); its stderr:\n{logs}"
                    );
                }
            }
        }
        let (Some(admin), Some(dns)) = (admin, dns) else {
            unreachable!("the loop ends only when both are set")
        };
        Ferryman {
            child,
            admin,
            dns,
            dir,
            logs,
        }
    }

    /// Everything the process logged (stderr and stdout) so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    /// `http://ADMIN` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// GET on the admin listener.
    pub async fn get(&self, path: &str) -> HttpResponse {
        http_request(self.admin, "GET", path).await
    }

    /// Polls `/readyz` until it answers 200 (at most `within`), panicking with the logs if not.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            match try_http_request(self.admin, "GET", "/readyz").await {
                Ok(r) if r.status == 200 => return,
                other => last = Some(other),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "/readyz not 200 within {within:?} (last: {last:?}); ferryman's stderr:\n{}",
            self.logs()
        );
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Like [`Ferryman::start_with`], run as the last argument of `prefix` (a command that execs
    /// it, e.g. `nsenter --net=…`, or a shell that moves itself into a cgroup first).
    pub fn start_with_prefix(
        prefix: &[&str],
        config_toml: &str,
        files: &[(&str, &[u8])],
    ) -> Ferryman {
        Ferryman::start_prefixed(prefix, config_toml, files)
    }

    /// The process id (of `prefix`'s program until it execs the binary).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful shutdown) and waits at most `within` for the exit; `None` if it
    /// did not exit in time (it is then killed on drop).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => pause(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Waits at most `within` until a log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .logs
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            pause(Duration::from_millis(20));
        }
    }
}

/// A pause on a plain thread (never in async code).
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Runs `prefix… ferryman --config <dir>/ferryman.toml` (config as [`Ferryman::start`] writes
/// it) until it exits, at most `within` (then it is killed): its exit status (`None` when it was
/// killed) and everything it printed.
pub fn run_to_exit(
    prefix: &[&str],
    config_toml: &str,
    within: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let config_path = dir.path().join("ferryman.toml");
    std::fs::write(&config_path, loopback_config(config_toml, dir.path()))
        .expect("write ferryman.toml");
    let log_path = dir.path().join("out.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut child = ferryman_command(prefix, &config_path, dir.path())
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("clone the log file"))
        .stderr(log)
        .spawn()
        .expect("start the ferryman binary");
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => pause(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (
        status,
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

impl Drop for Ferryman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ferryman stderr ---\n{}\n---", self.logs());
        }
    }
}

/// A listener address the process logged.
enum Logged {
    Admin(SocketAddr),
    Dns(SocketAddr),
}

/// Reads `stream` line by line into `logs`, sending each listener address it sees on `tx`.
fn spawn_reader(
    stream: impl std::io::Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    tx: std::sync::mpsc::Sender<Logged>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = admin_addr(&line) {
                let _ = tx.send(Logged::Admin(addr));
            } else if let Some(addr) = logged_addr(&line, DNS_LINE) {
                let _ = tx.send(Logged::Dns(addr));
            }
            logs.lock().expect("log lock").push(line);
        }
    });
}

/// Writes `contents` to `dir/name`, creating parent directories.
pub fn write_file(dir: &Path, name: &str, contents: &[u8]) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent directory");
    }
    std::fs::write(&path, contents).expect("write test file");
}

/// The test's config with every listener on 127.0.0.1:0 and, unless it says otherwise, no L4.
/// `prefix… ferryman --config CONFIG` run in `dir`, without colours, stdin closed.
fn ferryman_command(prefix: &[&str], config: &Path, dir: &Path) -> Command {
    let binary = env!("CARGO_BIN_EXE_ferryman");
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

fn loopback_config(config_toml: &str, dir: &Path) -> String {
    let mut doc: toml::Table = toml::from_str(config_toml).expect("the test's config is TOML");
    let mut set = |section: &str, key: &str, value: &str, force: bool| {
        let table = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("config sections are tables");
        if force || !table.contains_key(key) {
            table.insert(key.into(), toml::Value::String(value.into()));
        }
    };
    set("admin", "listen", "127.0.0.1:0", true);
    set("dns", "listen", "127.0.0.1:0", true);
    set("l7", "http", "127.0.0.1:0", true);
    set("l4", "mode", "off", false);
    set("l4", "link", "", false);
    // Never the host's /sys/fs/bpf/ferryman: `off` and `userspace` remove pins found there.
    let pins = dir.join("bpf-pins");
    set("l4", "bpf_pin_dir", &pins.to_string_lossy(), false);
    toml::to_string(&doc).expect("a TOML table serialises")
}

/// The address in a log line containing `admin listening on ADDR`.
fn admin_addr(line: &str) -> Option<SocketAddr> {
    logged_addr(line, ADMIN_LINE)
}

/// The address after `marker` in a log line.
fn logged_addr(line: &str, marker: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(marker)?;
    // Up to whitespace; also stop at anything that cannot be in an address (an ANSI escape).
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// A free TCP port on 127.0.0.1 (bound, then released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Looks `name` up on `PATH`. When it is missing: panics if `FERRYMAN_REQUIRE_ALL=1`, else prints
/// `skipped: <name> missing` and returns `None` (the caller returns early).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    if found.is_none() {
        if std::env::var("FERRYMAN_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{name} missing and FERRYMAN_REQUIRE_ALL=1 (run scripts/test.sh to install it)");
        }
        eprintln!("skipped: {name} missing");
    }
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; panics on failure.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    match try_http_request(addr, method, path).await {
        Ok(r) => r,
        Err(e) => panic!("{method} http://{addr}{path}: {e}"),
    }
}

/// One HTTP/1.1 request with `Connection: close`, reading to EOF (bodies with `Content-Length`
/// or read-to-close; not chunked).
pub async fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<HttpResponse, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {HTTP_TIMEOUT:?}"))??;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

#[test]
fn admin_address_is_parsed_from_tracing_output() {
    let plain = "2026-11-25T19:00:00.000000Z  INFO ferryman: admin listening on 127.0.0.1:40123";
    assert_eq!(admin_addr(plain), Some("127.0.0.1:40123".parse().unwrap()));
    let coloured = "\u{1b}[32m INFO\u{1b}[0m admin listening on 127.0.0.1:9\u{1b}[0m x";
    assert_eq!(admin_addr(coloured), Some("127.0.0.1:9".parse().unwrap()));
    let with_field = "INFO admin listening on 127.0.0.1:5 snapshot_version=0";
    assert_eq!(admin_addr(with_field), Some("127.0.0.1:5".parse().unwrap()));
    assert_eq!(admin_addr("INFO dns listening on 127.0.0.1:5"), None);
    assert_eq!(
        logged_addr("INFO dns listening on 127.0.0.1:5", DNS_LINE),
        Some("127.0.0.1:5".parse().unwrap())
    );
}

#[test]
fn config_listeners_are_forced_to_loopback_port_zero() {
    let out: toml::Table = toml::from_str(&loopback_config(
        "[admin]\nlisten = \"127.0.0.1:9090\"\n[l4]\nmode = \"userspace\"\n",
        Path::new("/tmp/ferryman-test"),
    ))
    .unwrap();
    assert_eq!(out["admin"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(out["dns"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(out["l7"]["http"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(out["l4"]["mode"].as_str(), Some("userspace"));
    assert_eq!(out["l4"]["link"].as_str(), Some(""));
    assert_eq!(
        out["l4"]["bpf_pin_dir"].as_str(),
        Some("/tmp/ferryman-test/bpf-pins")
    );
}
