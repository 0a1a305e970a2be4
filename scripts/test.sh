#!/usr/bin/env bash
# Runs every check CI runs: installs the Debian packages the tests need (when missing), then
# `cargo fmt --check`, `cargo clippy -D warnings` and `cargo test`.
#
#   scripts/test.sh                  # from anywhere in the repository
#   FERRYMAN_NO_INSTALL=1 scripts/test.sh   # never call apt-get (tests whose tool is missing skip)
#   FERRYMAN_REQUIRE_ALL=1 scripts/test.sh  # a missing tool fails its test instead (.ci/run sets it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# === Packages the tests need ===
# One entry per line: "PACKAGE COMMAND". The package is installed when COMMAND is not on PATH;
# COMMAND "-" means "check with dpkg instead" (libraries, headers). To add a tool, add a line.
REQUIRED_PACKAGES=(
  "prometheus promtool"      # admin: promtool check metrics
  "prometheus prometheus"    # admin: a real Prometheus scrapes /metrics
  "dnsutils dig"             # dns: real resolver client
  "curl curl"                # admin, l7: real HTTP client (--http2, --resolve for SNI, -u)
  "unbound unbound"          # dns: forwarding to a real resolver; benches/dns_vs_unbound.sh
  "dnsperf dnsperf"          # dns: benches/dns_vs_unbound.sh load generator
  "iproute2 ip"              # l4: network namespaces and veths (tests/integration/netns.rs)
  "nginx nginx"              # l4: backend HTTP servers; benches/l4_vs_haproxy.sh, benches/l7_vs_peers.sh
  "python3 python3"          # l4: backend UDP echo servers; bench helpers
  "wrk wrk"                  # l4, l7: load during snapshot changes; benches/l4_vs_haproxy.sh, l7_vs_peers.sh
  "haproxy haproxy"          # benches/l4_vs_haproxy.sh, benches/l7_vs_peers.sh: the baseline
  "nghttp2-client h2load"    # benches/l7_vs_peers.sh: HTTP/2 load (h2load)
  "openssl openssl"          # benches/l7_vs_peers.sh: the self-signed certificate all proxies serve
  "clang-19 clang-19"        # build.rs: ebpf/sock_lb.c -> BPF object (the eBPF fast path)
  "libbpf-dev -"             # build.rs: <bpf/bpf_helpers.h>
  "bpftool bpftool"          # fastpath tests: `bpftool cgroup tree` shows what is attached
  "iptables iptables"        # benches/l4_ebpf_vs_iptables.sh: the DNAT baseline
)

missing_packages() {
  local entry pkg cmd
  for entry in "${REQUIRED_PACKAGES[@]}"; do
    read -r pkg cmd <<<"$entry"
    if [ "$cmd" = "-" ]; then
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    else
      command -v "$cmd" >/dev/null 2>&1 || echo "$pkg"
    fi
  done | sort -u
}

install_missing() {
  local missing
  mapfile -t missing < <(missing_packages)
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "test.sh: missing packages: ${missing[*]}"
  if [ "${FERRYMAN_NO_INSTALL:-0}" = "1" ]; then
    echo "test.sh: FERRYMAN_NO_INSTALL=1, not installing (tests needing them will skip or fail)"
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "test.sh: not root and no sudo; cannot install ${missing[*]}" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: no apt-get (not Debian/Ubuntu); install ${missing[*]} yourself" >&2
    return 0
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

install_missing

# === Checks (the CI gates) ===
set -x
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
