//! Builds the eBPF fast path (`ebpf/sock_lb.c`) with clang into `$OUT_DIR/sock_lb.o`, which
//! `src/fastpath` embeds, and a layout probe (`$OUT_DIR/layout_c.rs`: sizes and offsets of the
//! structs in `ebpf/sock_lb.h` as the C compiler lays them out) for the layout test.
//!
//! Without clang (or libbpf's headers) the crate still builds, without the fast path
//! (`cfg(ferryman_bpf)` unset), and Ferryman says so at start-up. With `FERRYMAN_REQUIRE_ALL=1`
//! (CI) a missing compiler is an error instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Structs of `sock_lb.h` and their fields, probed with `sizeof`/`offsetof`.
const LAYOUT: &[(&str, &[&str])] = &[
    ("fm_service_key", &["addr", "port", "proto", "family"]),
    ("fm_service", &["id", "count", "ring", "bank"]),
    ("fm_backend_key", &["id", "slot"]),
    ("fm_backend", &["addr", "port", "family", "pad"]),
    ("fm_rev_key", &["cookie", "addr", "port", "family", "pad"]),
    ("fm_rev", &["addr", "port", "family", "pad"]),
    ("fm_stats", &["connect", "sendmsg", "refused", "errors"]),
    ("fm_meta", &["version", "pad"]),
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ferryman_bpf)");
    println!("cargo::rerun-if-changed=ebpf");
    println!("cargo::rerun-if-env-changed=FERRYMAN_REQUIRE_ALL");
    println!("cargo::rerun-if-env-changed=CLANG");
    let require = env::var("FERRYMAN_REQUIRE_ALL").is_ok_and(|v| v == "1");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    match build_bpf(&out) {
        Ok(()) => println!("cargo::rustc-cfg=ferryman_bpf"),
        Err(e) if require => {
            panic!("FERRYMAN_REQUIRE_ALL=1 and the eBPF fast path cannot be built: {e}")
        }
        Err(e) => println!("cargo::warning=building without the eBPF fast path: {e}"),
    }
    match probe_layout(&out) {
        Ok(()) => {}
        Err(e) if require => panic!("FERRYMAN_REQUIRE_ALL=1 and the layout probe failed: {e}"),
        Err(e) => {
            println!("cargo::warning=no C layout probe (the layout test will skip): {e}");
            std::fs::write(
                out.join("layout_c.rs"),
                "pub const C_LAYOUT: Option<&[(&str, usize, &[(&str, usize)])]> = None;\n",
            )
            .expect("write layout_c.rs");
        }
    }
}

fn clang() -> Result<String, String> {
    let candidates: Vec<String> = match env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => ["clang-19", "clang"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for c in &candidates {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no clang found (tried {}; install clang-19 and libbpf-dev)",
        candidates.join(", ")
    ))
}

/// The multiarch include dir holding `asm/types.h` (`/usr/include/x86_64-linux-gnu`).
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => return Some(PathBuf::from(format!("/usr/include/{other}-linux-gnu"))),
    };
    Some(PathBuf::from("/usr/include").join(triple))
}

fn build_bpf(out: &Path) -> Result<(), String> {
    let clang = clang()?;
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c"])
        .arg("ebpf/sock_lb.c")
        .arg("-o")
        .arg(out.join("sock_lb.o"));
    if let Some(dir) = multiarch_include() {
        cmd.arg("-I").arg(dir);
    }
    let o = cmd.output().map_err(|e| format!("{clang}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{clang} failed on ebpf/sock_lb.c (is libbpf-dev installed?):\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

/// Compiles and runs a C program printing the layout of every struct in `LAYOUT`, as Rust.
fn probe_layout(out: &Path) -> Result<(), String> {
    let cc = ["cc", "gcc", "clang-19", "clang"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or("no C compiler for the layout probe")?;
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"sock_lb.h\"\nint main(void) {\n\
         printf(\"pub const C_LAYOUT: Option<&[(&str, usize, &[(&str, usize)])]> = Some(&[\\n\");\n",
    );
    for (name, fields) in LAYOUT {
        c.push_str(&format!(
            "printf(\"    (\\\"{name}\\\", %zu, &[\", sizeof(struct {name}));\n"
        ));
        for f in *fields {
            c.push_str(&format!(
                "printf(\"(\\\"{f}\\\", %zu), \", offsetof(struct {name}, {f}));\n"
            ));
        }
        c.push_str("printf(\"]),\\n\");\n");
    }
    c.push_str("printf(\"]);\\n\");\nreturn 0;\n}\n");
    let src = out.join("layout_probe.c");
    let bin = out.join("layout_probe");
    std::fs::write(&src, c).map_err(|e| e.to_string())?;
    let o = Command::new(cc)
        .arg("-Iebpf")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .map_err(|e| format!("{cc}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cc} failed on the layout probe:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let o = Command::new(&bin).output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err("the layout probe failed".into());
    }
    std::fs::write(out.join("layout_c.rs"), o.stdout).map_err(|e| e.to_string())
}
