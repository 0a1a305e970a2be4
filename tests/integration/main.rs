//! Ferryman's integration tests: one test binary, one `mod` per area. Each test starts the real
//! `ferryman` binary through [`harness::Ferryman`] with its own config and 127.0.0.1:0 listeners,
//! and talks to it with real clients (`curl`, `promtool`, `prometheus`, `dig`, `unbound`).
//!
//! External tools are optional unless `FERRYMAN_REQUIRE_ALL=1` (CI sets it): a test whose tool is
//! missing prints `skipped: <tool> missing` and passes.

mod harness;

mod admin;
mod bad_input;
mod cgroup;
mod cli;
mod discovery;
mod dns;
mod ebpf;
mod fixture_vips;
mod l4;
mod l4_netns;
mod l7;
mod netns;
