//! The command-line contract: `check-config`, `--version`, refusing bad config, and graceful
//! shutdown on SIGTERM/SIGINT.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferryman");

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("ferryman.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn check_config(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run ferryman check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_config_of_the_demo() {
    let (code, out, err) = check_config(&repo_file("config/ferryman.toml"));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("[discovery]"), "{out}");
    assert!(out.contains("source = \"file\""), "{out}");
    assert!(out.contains("mode = \"userspace\""), "{out}");
    // Defaults appear in the effective config even when the file omits them.
    assert!(out.contains("vip_range = \"11.0.0.0/8\""), "{out}");
}

#[test]
fn check_config_names_the_offending_key_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, key) in [
        (
            "[dns]\nlistne = \"127.0.0.1:53\"\n",
            "dns.listne: unknown key",
        ),
        ("[admin]\nlisten = \"nowhere\"\n", "admin.listen:"),
        (
            "[discovery]\npoll_interval = \"soon\"\n",
            "discovery.poll_interval:",
        ),
    ] {
        let path = write_config(&dir, text);
        let (code, out, err) = check_config(&path);
        assert_eq!(code, 1, "{text:?}: stdout {out}");
        assert!(
            err.contains(key),
            "{text:?}: stderr {err:?} should name {key}"
        );
    }
}

#[test]
fn an_unreadable_config_file_is_named() {
    let (code, _, err) = check_config(std::path::Path::new("/nonexistent/ferryman.toml"));
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ferryman.toml"), "{err}");
}

#[test]
fn version_flag_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("ferryman {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn running_with_a_bad_config_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "[l4]\nmode = \"warp\"\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("l4.mode:"));
}

/// Starts the binary on the demo apps with loopback port-0 listeners, waits for the admin line,
/// sends `signal` and expects a clean exit within the shutdown deadline.
fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let apps = repo_file("config/apps.json");
    let path = write_config(
        &dir,
        &format!(
            "[discovery]\nsource = \"file\"\nfile = {:?}\n[dns]\nlisten = \"127.0.0.1:0\"\n\
             [l4]\nmode = \"userspace\"\nlink = \"\"\n[l7]\nhttp = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            apps.display().to_string()
        ),
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start ferryman");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.contains("published snapshot");
                seen.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no snapshot published within 20 s; log:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let stop_deadline = Instant::now() + Duration::from_secs(8);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("ferryman did not stop within 8 s of SIG{signal}");
        }
        #[allow(clippy::disallowed_methods)] // a plain test thread, not a runtime worker
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let log: Vec<String> = rx.try_iter().collect();
    assert!(exit.success(), "exit {exit:?}; log:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("shutting down"))
            && log.iter().any(|l| l.contains("stopped")),
        "log after signal:\n{}",
        log.join("\n")
    );
}

#[test]
fn sigterm_stops_every_subsystem_and_exits_0() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_every_subsystem_and_exits_0() {
    stops_cleanly_on("INT");
}
