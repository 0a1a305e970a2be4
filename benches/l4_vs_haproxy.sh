#!/usr/bin/env bash
# Ferryman user-space L4 vs HAProxy `mode tcp`: the same nginx backends, the same machine, the
# same run.
#
#   benches/l4_vs_haproxy.sh [--runs N] [--seconds S] [--conns C] [--threads T]
#                            [--ferryman PATH] [--skip-1000] [--keep]
#
# 1. One nginx (benches/l4/gen.py writes every config) serves 3 backend ports on 127.0.0.1,
#    answering 200 "ok\n". HAProxy (`mode tcp`, `balance roundrobin`, `nbthread T`) and Ferryman
#    (`l4.mode = "userspace"`, Marathon-LB service ports on l4.bind = 127.0.0.1, balance rr,
#    TOKIO_WORKER_THREADS = T) proxy the same backends with the same timeouts. Service ports on
#    loopback stand in for VIPs (same L4 data path; no VIP link is touched on the host).
# 2. The proxies run on cores 0..T-1 (taskset); wrk and nginx on the other core(s).
# 3. Scenarios, each N runs of S seconds, alternating which target goes first:
#    ka-1vip       keep-alive, 1 service port configured: req/s, p50/p99 (wrk --latency)
#    close-1vip    `Connection: close` (one new connection per request): conns/s, p50/p99
#    ka-1000vip    keep-alive, 1000 service ports configured, load on the last one
#    close-1000vip short connections, 1000 configured
#    Targets: direct (wrk straight to one nginx port), haproxy, ferryman.
# 4. RSS per 1000 idle connections: 1000 idle connections through each proxy (benches/l4/
#    idle_conns.py), VmRSS before and after.
# 5. benches/l4/summarize.py prints medians, ranges and ratios to HAProxy and to direct; then
#    the proxies' own CPU time per request (utime+stime over the run / requests), the cost that
#    shows when wrk and nginx on one core cap both proxies near the same rate.
#
# Needs: haproxy, nginx, wrk, taskset, python3, ss (iproute2), curl, and at least 2 cores.
# Everything it starts is killed on exit; every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=5
SECS=5
CONNS=64
THREADS=1
FERRYMAN=""
KEEP=0
SKIP_1000=0
IDLE=1000

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --ferryman) FERRYMAN="$2"; shift 2 ;;
    --skip-1000) SKIP_1000=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for n in "$RUNS" "$SECS" "$CONNS" "$THREADS"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive integer: $n" >&2; exit 2; }
done
[ "$RUNS" -le 50 ] && [ "$SECS" -le 120 ] && [ "$CONNS" -le 2000 ] ||
  { echo "at most 50 runs of 120 s with 2000 connections" >&2; exit 2; }

for tool in haproxy nginx wrk taskset python3 ss curl; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install -y haproxy nginx wrk util-linux python3 iproute2 curl)" >&2
    exit 1
  }
done
NCPU="$(nproc)"
[ "$THREADS" -lt "$NCPU" ] || { echo "needs more cores than --threads ($NCPU cores)" >&2; exit 1; }
PROXY_CPUS="0-$((THREADS - 1))"
LOAD_CPUS="$THREADS-$((NCPU - 1))"
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d /tmp/ferryman-l4bench.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# The first of COUNT (<= 2400) consecutive loopback TCP ports, from START on, that no socket uses
# (checked with ss).
free_range() { # count start
  local used base
  used="$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -un)"
  for base in $(seq "$2" 2500 62000); do
    if ! awk -v lo="$base" -v hi="$((base + $1))" '$1 >= lo && $1 < hi {found=1} END {exit !found}' \
      <<<"$used"; then
      echo "$base"
      return 0
    fi
  done
  echo "no $1 free consecutive ports" >&2
  exit 1
}

# === Ferryman binary ===
if [ -z "$FERRYMAN" ]; then
  log "building ferryman (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin ferryman)
  FERRYMAN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferryman"
fi
[ -x "$FERRYMAN" ] || { echo "no ferryman binary at $FERRYMAN" >&2; exit 1; }

# === Processes ===
N_PID=""
H_PID=""
F_PID=""

stop_pid() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Waits (at most 30 s) until an HTTP GET on 127.0.0.1:port answers 200.
wait_http() { # port label pid
  local deadline=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$3" 2>/dev/null || { echo "$2 exited; log:" >&2; tail -20 "$WORK/$2.log" >&2; exit 1; }
    if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "$2 on port $1 did not answer 200 within 30 s; log:" >&2
  tail -20 "$WORK/$2.log" >&2
  exit 1
}

BACKENDS=""
start_all() { # services
  local nb
  nb="$(free_range 3 20000)"
  BACKENDS="$nb,$((nb + 1)),$((nb + 2))"
  F_BASE="$(free_range $((2 * $1)) $((nb + 2500)))"
  H_BASE=$((F_BASE + $1))
  python3 "$ROOT/benches/l4/gen.py" "$WORK" --services "$1" --ferryman-base "$F_BASE" \
    --haproxy-base "$H_BASE" --backends "$BACKENDS" --threads "$THREADS"

  taskset -c "$LOAD_CPUS" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" \
    >"$WORK/nginx.log" 2>&1 &
  N_PID=$!
  PIDS+=("$N_PID")
  wait_http "${BACKENDS%%,*}" nginx "$N_PID"

  taskset -c "$PROXY_CPUS" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  H_PID=$!
  PIDS+=("$H_PID")

  cat >"$WORK/ferryman.toml" <<EOF
[discovery]
source = "file"
file = "$WORK/apps.json"

[dns]
listen = "127.0.0.1:0"
threads = 1

[l4]
mode = "userspace"
link = ""
bind = "127.0.0.1"
balance = "rr"
connect_timeout = "5s"
idle_timeout = "60s"
max_connections = 8000

[l7]
http = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
EOF
  TOKIO_WORKER_THREADS="$THREADS" RUST_LOG=warn NO_COLOR=1 taskset -c "$PROXY_CPUS" \
    "$FERRYMAN" --config "$WORK/ferryman.toml" >"$WORK/ferryman.log" 2>&1 &
  F_PID=$!
  PIDS+=("$F_PID")
  local last=$(($1 - 1))
  wait_http "$((H_BASE + last))" haproxy "$H_PID"
  wait_http "$((F_BASE + last))" ferryman "$F_PID"
  wait_http "$F_BASE" ferryman "$F_PID"
}

stop_all() {
  stop_pid "$F_PID"; stop_pid "$H_PID"; stop_pid "$N_PID"
  F_PID=""; H_PID=""; N_PID=""
}

# One wrk run; appends "scenario target run rps p50_us p99_us socket_errors non_2xx".
wrk_run() { # scenario target run port close(0/1)
  local out hdr=() pid="" cpu0=0 cpu1
  [ "$5" = 1 ] && hdr=(-H "Connection: close")
  case "$2" in haproxy) pid="$H_PID" ;; ferryman) pid="$F_PID" ;; esac
  [ -n "$pid" ] && cpu0="$(cpu_ticks "$pid")"
  out="$(timeout $((SECS + 30)) taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${SECS}s" \
    --timeout 5s --latency "${hdr[@]}" "http://127.0.0.1:$4/" 2>&1)" || {
    echo "wrk failed ($1 $2): $out" >&2
    exit 1
  }
  echo "$out" >>"$WORK/wrk.log"
  python3 "$ROOT/benches/l4/parse_wrk.py" "$1" "$2" "$3" <<<"$out" >>"$WORK/results.tsv"
  if [ -n "$pid" ]; then
    # The proxy's own CPU time per request: on 2 cores wrk and nginx share one core and cap
    # both proxies near the same rate, so this is where their cost shows.
    cpu1="$(cpu_ticks "$pid")"
    echo "$1 $2 $3 $((cpu1 - cpu0)) $(awk '/requests in/ {print $1}' <<<"$out")" >>"$WORK/cpu.tsv"
  fi
}

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

scenario_runs() { # services
  local run order t port name close
  for close in 0 1; do
    if [ "$close" = 1 ]; then name="close-$1vip"; else name="ka-$1vip"; fi
    log "$name: $RUNS runs of ${SECS}s, $CONNS connections"
    for run in $(seq 1 "$RUNS"); do
      if [ $((run % 2)) = 1 ]; then order="direct haproxy ferryman"; else order="ferryman haproxy direct"; fi
      for t in $order; do
        case "$t" in
          direct) port="${BACKENDS%%,*}" ;;
          haproxy) port=$((H_BASE + $1 - 1)) ;;
          ferryman) port=$((F_BASE + $1 - 1)) ;;
        esac
        wrk_run "$name" "$t" "$run" "$port" "$close"
      done
    done
  done
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Idle connections through a proxy: RSS before/after and the connections it opened to nginx.
idle_rss() { # target pid port
  local before after fifo backend h_pid
  before="$(rss_kib "$2")"
  fifo="$WORK/idle.fifo"
  rm -f "$fifo"; mkfifo "$fifo"
  taskset -c "$LOAD_CPUS" python3 "$ROOT/benches/l4/idle_conns.py" 127.0.0.1 "$3" "$IDLE" 60 \
    <"$fifo" >"$WORK/idle.out" 2>&1 &
  h_pid=$!
  PIDS+=("$h_pid")
  exec 9>"$fifo"
  local deadline=$((SECONDS + 30))
  until grep -q "^open" "$WORK/idle.out"; do
    [ "$SECONDS" -lt "$deadline" ] && kill -0 "$h_pid" 2>/dev/null ||
      { echo "idle connections to $1 failed: $(cat "$WORK/idle.out")" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2
  after="$(rss_kib "$2")"
  backend="$(ss -Htn state established "( dport >= :${BACKENDS%%,*} and dport <= :$((${BACKENDS%%,*} + 2)) )" | wc -l)"
  exec 9>&-
  wait "$h_pid" 2>/dev/null || true
  echo "$1 $IDLE $before $after $backend" >>"$WORK/rss.tsv"
  sleep 1
}

: >"$WORK/results.tsv"
: >"$WORK/rss.tsv"
: >"$WORK/cpu.tsv"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg); proxies on cpus $PROXY_CPUS ($THREADS thread(s)), wrk and nginx on $LOAD_CPUS"

start_all 1
scenario_runs 1
log "RSS per $IDLE idle connections"
idle_rss haproxy "$H_PID" "$H_BASE"
idle_rss ferryman "$F_PID" "$F_BASE"
stop_all

if [ "$SKIP_1000" = 0 ]; then
  start_all 1000
  log "1000 service ports configured: RSS haproxy $(rss_kib "$H_PID") KiB, ferryman $(rss_kib "$F_PID") KiB"
  scenario_runs 1000
  stop_all
fi

log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "ferryman $("$FERRYMAN" --version 2>/dev/null | head -1), $(haproxy -v | head -1 | cut -d' ' -f1-3), nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk -t1 -c$CONNS -d${SECS}s, $RUNS runs, $THREADS proxy thread(s), $NCPU cores"
python3 "$ROOT/benches/l4/summarize.py" "$WORK/results.tsv" "$WORK/rss.tsv"
# CPU time the proxy itself spent per request (median over runs), with the ratio to HAProxy.
python3 - "$WORK/cpu.tsv" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
from collections import defaultdict
ticks_per_s = float(sys.argv[2])
per = defaultdict(list)
for line in open(sys.argv[1]):
    scenario, target, _run, ticks, requests = line.split()
    if int(requests) > 0:
        per[(scenario, target)].append(int(ticks) / ticks_per_s * 1e6 / int(requests))
print("\nproxy CPU per request (utime+stime / requests; median over runs)")
print(f"{'scenario':16} {'target':9} {'cpu us/req':>10} {'x haproxy':>9}")
for scenario in dict.fromkeys(s for s, _ in per):
    hap = statistics.median(per.get((scenario, "haproxy"), [float("nan")]))
    for target in ("haproxy", "ferryman"):
        if (scenario, target) in per:
            m = statistics.median(per[(scenario, target)])
            print(f"{scenario:16} {target:9} {m:10.2f} {m / hap:9.2f}")
PY
