#!/usr/bin/env bash
# Ferryman vs unbound: the same 10 000-name zone, the same dnsperf query file, the same machine.
#
#   benches/dns_vs_unbound.sh [--runs N] [--seconds S] [--tasks T] [--clients C]
#                             [--outstanding Q] [--ferryman PATH] [--wait-idle S] [--keep]
#
# 1. benches/dns/gen_zone.py writes the zone twice: a Mesos /master/state for Ferryman
#    (discovery.source = "file") and the same names as unbound `local-data` in a
#    `local-zone: "mesos." static` (plus `local-zone: "." refuse`: nothing recurses off the
#    machine), and a dnsperf query file (60 % A hits, 20 % SRV hits, 20 % NXDOMAIN misses).
# 2. For each configuration — "1thread" (Ferryman dns.threads = 1, unbound num-threads 1, both
#    pinned with taskset to core 0) and "allcores" (one server thread per core, unbound
#    num-threads = cores with so-reuseport) — both servers are started on loopback ports and
#    checked with dig (a sample of hits and misses must answer alike), then dnsperf, pinned to
#    core 1, runs N fixed-length runs against each, alternating which server goes first.
# 3. Then one latency run per server at the same offered load (half the slower server's median
#    qps), with `dnsperf -v`, for percentiles (dnsperf 2.10 reports only average and stddev).
# 4. benches/dns/summarize.py prints per server: median and range of qps, lost queries, average
#    latency, p50/p90/p99/p99.9, and the Ferryman/unbound ratio of median qps.
#
# --wait-idle S: before each configuration, wait up to S seconds for the machine to be idle
# (>= 90 % idle CPU over 2 s), so other work (builds) does not skew the figures.
#
# Needs: unbound, dnsperf, dig (dnsutils), taskset (util-linux), python3, and at least 2 cores.
# Every process it starts is killed on exit; every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=5
SECS=10
TASKS=1250
CLIENTS=8
OUTSTANDING=100
LAT_SECS=5
FERRYMAN=""
KEEP=0
WAIT_IDLE=0

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    --tasks) TASKS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --outstanding) OUTSTANDING="$2"; shift 2 ;;
    --ferryman) FERRYMAN="$2"; shift 2 ;;
    --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$RUNS" "$SECS" "$TASKS" "$CLIENTS" "$OUTSTANDING"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive integer: $n" >&2; exit 2; }
done
[[ "$WAIT_IDLE" =~ ^[0-9]+$ ]] || { echo "not a number: $WAIT_IDLE" >&2; exit 2; }
[ "$RUNS" -le 100 ] && [ "$SECS" -le 600 ] || { echo "at most 100 runs of 600 s" >&2; exit 2; }

for tool in unbound dnsperf dig taskset python3; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install -y unbound dnsperf dnsutils util-linux python3)" >&2
    exit 1
  }
done
NCPU="$(nproc)"
[ "$NCPU" -ge 2 ] || { echo "needs at least 2 cores (server on core 0, dnsperf on core 1)" >&2; exit 1; }
CLIENT_CPU=1
if [ "$NCPU" -gt 2 ]; then
  # All cores but the client's for the "all cores" case.
  ALL_SERVER_CPUS="0,2-$((NCPU - 1))"
  ALL_THREADS=$((NCPU - 1))
else
  ALL_SERVER_CPUS="0-1"   # shared with dnsperf on a 2-core machine
  ALL_THREADS=2
fi

WORK="$(mktemp -d /tmp/ferryman-dnsbench.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# A free loopback port for UDP and TCP (bound, then released).
free_port() {
  python3 -c 'import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()'
}

# === Ferryman binary ===
if [ -z "$FERRYMAN" ]; then
  log "building ferryman (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin ferryman)
  FERRYMAN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferryman"
fi
[ -x "$FERRYMAN" ] || { echo "no ferryman binary at $FERRYMAN" >&2; exit 1; }

# === Zone and queries ===
python3 "$ROOT/benches/dns/gen_zone.py" "$WORK" --tasks "$TASKS" >&2
QUERIES="$WORK/queries.txt"

# === Servers ===
F_PID=""
U_PID=""
F_PORT=""
U_PORT=""

start_ferryman() { # threads cpus
  F_PORT="$(free_port)"
  cat >"$WORK/ferryman.toml" <<EOF
[discovery]
source = "file"
file = "$WORK/state.json"
mesos = []

[dns]
listen = "127.0.0.1:$F_PORT"
threads = $1

[l4]
mode = "off"
link = ""

[l7]
http = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
EOF
  RUST_LOG=warn NO_COLOR=1 taskset -c "$2" "$FERRYMAN" --config "$WORK/ferryman.toml" \
    >"$WORK/ferryman.log" 2>&1 &
  F_PID=$!
  PIDS+=("$F_PID")
}

start_unbound() { # threads cpus
  U_PORT="$(free_port)"
  cat >"$WORK/unbound.conf" <<EOF
server:
  interface: 127.0.0.1
  port: $U_PORT
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  num-threads: $1
  so-reuseport: yes
  module-config: "iterator"
  local-zone: "." refuse
include: "$WORK/unbound-zone.conf"
remote-control:
  control-enable: no
EOF
  taskset -c "$2" unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
  U_PID=$!
  PIDS+=("$U_PID")
}

stop_server() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Waits (at most 60 s) until `name A` on port answers with an address.
wait_answers() { # port name label pid
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$4" 2>/dev/null || { echo "$3 exited; log:" >&2; tail -20 "$WORK/$3.log" >&2; exit 1; }
    if dig +time=1 +tries=1 +short @127.0.0.1 -p "$1" "$2" A 2>/dev/null | grep -q '^[0-9]'; then
      return 0
    fi
    sleep 0.2
  done
  echo "$3 on port $1 did not answer $2 within 60 s; log:" >&2
  tail -20 "$WORK/$3.log" >&2
  exit 1
}

# rcode and answer count of one query, e.g. "NOERROR 1".
probe() { # port name type
  local out status
  out="$(dig +time=2 +tries=1 +norecurse @127.0.0.1 -p "$1" "$2" "$3" 2>/dev/null || true)"
  status="$(grep -o 'status: [A-Z]*' <<<"$out" | head -1 | cut -d' ' -f2)"
  echo "${status:-NOANSWER} $(grep -o 'ANSWER: [0-9]*' <<<"$out" | head -1 | cut -d' ' -f2)"
}

# A sample of distinct queries must get the expected rcode and answer count from both servers.
check_servers() {
  local bad=0 name type rcode n got
  while read -r name type rcode n; do
    for port in "$F_PORT" "$U_PORT"; do
      got="$(probe "$port" "$name" "$type")"
      if [ "$got" != "$rcode $n" ]; then
        echo "mismatch on port $port: $name $type: got '$got', want '$rcode $n'" >&2
        bad=$((bad + 1))
      fi
    done
  done < <(awk 'NR % 97 == 1' "$WORK/names.txt" | head -40)
  [ "$bad" -eq 0 ] || { echo "$bad sample answers differ; not measuring" >&2; exit 1; }
}

# === Measuring ===
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# One dnsperf throughput run; appends a result line.
measure() { # config server port run
  local out="$WORK/dnsperf-$1-$2-$4.txt"
  timeout $((SECS + 30)) taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$3" -d "$QUERIES" \
    -l "$SECS" -c "$CLIENTS" -q "$OUTSTANDING" -T 1 -t 2 >"$out" 2>&1 || {
    echo "dnsperf failed against $2:" >&2; tail -20 "$out" >&2; exit 1; }
  awk -v c="$1" -v s="$2" -v r="$4" '
    /Queries sent:/ {sent=$3}
    /Queries completed:/ {done=$3}
    /Queries lost:/ {lost=$3}
    /Queries per second:/ {qps=$4}
    /Average Latency/ {avg=$4}
    /Latency StdDev/ {sd=$4}
    END { if (qps == "") exit 1; printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c, s, r, qps, sent, done, lost, avg, sd }
  ' "$out" >>"$RESULTS" || { echo "cannot parse dnsperf output:" >&2; cat "$out" >&2; exit 1; }
  log "$1 $2 run $4: $(tail -1 "$RESULTS" | cut -f4) qps, lost $(tail -1 "$RESULTS" | cut -f7)," \
    "load $(cut -d' ' -f1 /proc/loadavg)"
}

# Per-query latencies at a fixed offered load (dnsperf -v prints one line per answer; written
# to a file by the pinned dnsperf and extracted afterwards, so no unpinned reader competes with
# the server for its core).
latency() { # config server port rate
  local out="$WORK/dnsperf-v-$1-$2.txt"
  timeout $((LAT_SECS + 30)) taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$3" -d "$QUERIES" \
    -l "$LAT_SECS" -c "$CLIENTS" -q "$OUTSTANDING" -T 1 -t 2 -Q "$4" -v >"$out" 2>&1 || true
  awk '/^> / {print $NF}' "$out" >"$WORK/lat-$1-$2.txt"
  log "$1 $2 latency run: $(grep -m1 'Queries per second' "$out" | awk '{print $4}') qps," \
    "lost $(grep -m1 'Queries lost' "$out" | awk '{print $3}')"
  rm -f "$out"
}

# Percent of idle CPU time over the next 2 seconds (all cpus).
idle_percent() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $(( total > 0 ? 100 * (b[4] + b[5] - a[4] - a[5]) / total : 0 ))
}

wait_idle() {
  [ "$WAIT_IDLE" -gt 0 ] || return 0
  local deadline=$((SECONDS + WAIT_IDLE)) idle
  while :; do
    idle="$(idle_percent)"
    [ "$idle" -ge 90 ] && { log "machine idle ($idle %)"; return 0; }
    [ "$SECONDS" -ge "$deadline" ] && { log "warning: still busy ($idle % idle); measuring anyway"; return 0; }
    log "waiting for an idle machine ($idle % idle)"
    sleep 3
  done
}

run_config() { # config threads cpus
  local config="$1" r
  wait_idle
  log "== $config: starting ferryman (dns.threads = $2) and unbound (num-threads $2) on cpus $3"
  start_ferryman "$2" "$3"
  start_unbound "$2" "$3"
  wait_answers "$F_PORT" app-00000.marathon.mesos ferryman "$F_PID"
  wait_answers "$U_PORT" app-00000.marathon.mesos unbound "$U_PID"
  check_servers
  for r in $(seq 1 "$RUNS"); do
    if [ $((r % 2)) -eq 1 ]; then
      measure "$config" ferryman "$F_PORT" "$r"
      measure "$config" unbound "$U_PORT" "$r"
    else
      measure "$config" unbound "$U_PORT" "$r"
      measure "$config" ferryman "$F_PORT" "$r"
    fi
  done
  local rate
  rate="$(python3 - "$RESULTS" "$config" <<'PY'
import statistics, sys
qps = {}
for line in open(sys.argv[1]):
    f = line.split("\t")
    if f[0] == sys.argv[2]:
        qps.setdefault(f[1], []).append(float(f[3]))
print(int(min(statistics.median(v) for v in qps.values()) / 2))
PY
)"
  echo "$rate" >"$WORK/rate-$config.txt"
  log "$config: latency runs at $rate qps"
  latency "$config" ferryman "$F_PORT" "$rate"
  latency "$config" unbound "$U_PORT" "$rate"
  stop_server "$F_PID"
  stop_server "$U_PID"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "cpus: $NCPU; dnsperf on cpu $CLIENT_CPU; $RUNS runs x $SECS s per server and configuration;" \
  "load average $LOAD_START"
awk '{ exit !($1 > 0.5) }' /proc/loadavg &&
  log "warning: the machine is busy (load average $LOAD_START); figures will be noisy"
run_config 1thread 1 0
run_config allcores "$ALL_THREADS" "$ALL_SERVER_CPUS"

echo
echo "Ferryman vs unbound, $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $NCPU cpus"
REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null) || REV="$REV+uncommitted"
echo "ferryman $REV ($FERRYMAN);" \
  "$(unbound -V 2>/dev/null | head -1 | sed 's/Version/unbound/');" \
  "$(dnsperf -h 2>&1 | grep -m1 '^Version' | sed 's/Version/dnsperf/')"
echo "load average (1/5/15 min): $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "zone: $(grep -c local-data "$WORK/unbound-zone.conf") records ($TASKS tasks x 8 names);" \
  "queries: $(wc -l <"$QUERIES") (60% A hits, 20% SRV hits, 20% NXDOMAIN), no EDNS"
echo "dnsperf -l $SECS -c $CLIENTS -q $OUTSTANDING -T 1 -t 2, pinned to cpu $CLIENT_CPU;" \
  "1thread: servers on cpu 0; allcores: $ALL_THREADS threads on cpus $ALL_SERVER_CPUS"
python3 "$ROOT/benches/dns/summarize.py" "$RESULTS" "$WORK"
