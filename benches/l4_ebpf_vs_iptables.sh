#!/usr/bin/env bash
# Ferryman's eBPF socket load balancer vs iptables DNAT (the kube-proxy way) vs Ferryman's
# user-space L4 vs no balancer at all, with 1, 1000 and 10 000 services loaded.
#
#   benches/l4_ebpf_vs_iptables.sh        (settings from the environment, below)
#
# Environment (defaults in brackets):
#   RUNS [5]            rounds per cell; each round runs every way once, in a rotated order
#   DURATION [5]        seconds per wrk run
#   CONNS [32]          wrk connections (wrk -t1)
#   COUNTS ["1 1000 10000"]  service counts to load
#   WAYS ["direct ebpf iptables userspace"]
#   FERRYMAN_BIN        a ferryman binary (else: cargo build --release, in CARGO_TARGET_DIR)
#   IPTABLES_RESTORE [iptables-restore]   e.g. iptables-legacy-restore
#   CLIENT_CPU [0]      the core wrk is pinned to; nginx and ferryman get the others
#   SYNC_REPEATS [4]    extra full map syncs (restart on empty maps) at the largest count
#   NICE [0]            nice value for wrk, nginx and ferryman (e.g. -5 on a busy machine)
#   KEEP [0]            1 = keep the work directory (logs, raw results)
#
# Topology (all in network namespaces created here; none has a route off the machine):
#
#   ns c (direct, ebpf) ───veth 10.200.0.0/30──┐
#   ns i (iptables)     ───veth 10.200.1.0/30──┼── ns b: one nginx (1 worker) on 10.201.0.2,
#   ns u (userspace)    ───veth 10.200.2.0/30──┘   .3, .4 port 80 (the 3 backends), "ok\n"
#
# Service k has the VIP 11.1.(k/256).(k%256):80 and the 3 backends; every way targets the last
# service's VIP (the others are filler), "direct" targets backend 10.201.0.2:80.
#   direct     wrk in ns c, child cgroup "plain" (no BPF program), straight to one backend.
#   ebpf       wrk in ns c, child cgroup "lb": Ferryman (l4.mode = "ebpf", l4.cgroup = lb, its own
#              pin dir under /sys/fs/bpf) rewrites connect() to a backend. ns c has no route to
#              11.0.0.0/8, so an answer proves the rewrite.
#   iptables   wrk in ns i, cgroup "plain": nat OUTPUT -> KUBE-SERVICES (one rule per service,
#              the target last) -> KUBE-SVC-k (statistic random) -> DNAT, loaded with
#              iptables-restore; conntrack TIME_WAIT timeout 5 s in ns i so 262 144 entries suffice.
#   userspace  wrk in ns u, cgroup "plain": Ferryman (l4.mode = "userspace", its VIP link in ns u)
#              proxies; 10 000 VIP listeners need 10 000 fds (skipped, with a note, if the
#              open-files limit cannot be raised high enough).
# Separate client namespaces keep each way's cost off the others: conntrack and the nat chain
# exist only in ns i, the VIP listeners and 10 000 local addresses only in ns u.
#
# Scenarios per service count: keep-alive (req/s) and `Connection: close` (one new connection per
# request, so conns/s). wrk pinned to CLIENT_CPU with taskset; nginx and both Ferrymans on the
# other core(s) (TOKIO_WORKER_THREADS=1). benches/l4_ebpf/summarize.py prints medians, ranges,
# the ratio to direct of the same round, and the goal checks; Ferryman's logged map sync time for
# the largest count is printed too. Everything created is removed on exit (trap).
#
# Needs root, cgroup v2, bpffs (mounted if absent), nginx, wrk, taskset, nsenter, ip, ss, curl,
# python3, iptables-restore, and at least 2 cores. Every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-5}"
DURATION="${DURATION:-5}"
CONNS="${CONNS:-32}"
COUNTS="${COUNTS:-1 1000 10000}"
WAYS="${WAYS:-direct ebpf iptables userspace}"
FERRYMAN="${FERRYMAN_BIN:-}"
IPT_RESTORE="${IPTABLES_RESTORE:-iptables-restore}"
CLIENT_CPU="${CLIENT_CPU:-0}"
KEEP="${KEEP:-0}"
SYNC_REPEATS="${SYNC_REPEATS:-4}"
NICE="${NICE:-0}"
PORT=80
BACKEND_IPS="10.201.0.2,10.201.0.3,10.201.0.4"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "no arguments; settings come from the environment" >&2; usage >&2; exit 2 ;;
esac
[[ "$SYNC_REPEATS" =~ ^[0-9]+$ ]] || { echo "SYNC_REPEATS: not a number" >&2; exit 2; }
[[ "$NICE" =~ ^-?[0-9]+$ ]] && [ "$NICE" -ge -20 ] && [ "$NICE" -le 19 ] ||
  { echo "NICE: want -20..19" >&2; exit 2; }
for n in "$RUNS" "$DURATION" "$CONNS" $COUNTS; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive integer: $n" >&2; exit 2; }
done
[ "$RUNS" -le 50 ] && [ "$DURATION" -le 120 ] && [ "$CONNS" -le 2000 ] ||
  { echo "at most 50 runs of 120 s with 2000 connections" >&2; exit 2; }
COUNTS="$(tr -s ' ' '\n' <<<"$COUNTS" | grep . | sort -n | paste -sd' ')"
for c in $COUNTS; do
  [ "$c" -le 65536 ] || { echo "at most 65536 services (the VIP scheme): $c" >&2; exit 2; }
done
for w in $WAYS; do
  case "$w" in direct|ebpf|iptables|userspace) ;; *) echo "unknown way: $w" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, cgroups, BPF, iptables)" >&2; exit 1; }
for tool in nginx wrk taskset nsenter ip ss curl python3 "$IPT_RESTORE"; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install -y nginx wrk util-linux iproute2 curl python3 iptables)" >&2
    exit 1
  }
done
NCPU="$(nproc)"
[ "$NCPU" -ge 2 ] || { echo "needs at least 2 cores" >&2; exit 1; }
[[ "$CLIENT_CPU" =~ ^[0-9]+$ ]] && [ "$CLIENT_CPU" -lt "$NCPU" ] ||
  { echo "CLIENT_CPU must be a core below $NCPU" >&2; exit 2; }
SERVER_CPUS="$(seq 0 $((NCPU - 1)) | grep -vx "$CLIENT_CPU" | paste -sd,)"

# 10 000 user-space VIP listeners need as many fds: raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
[ "$NOFILE" = unlimited ] && NOFILE=1048576

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# The cgroup v2 mount (hybrid layouts mount it at /sys/fs/cgroup/unified).
CG2="$(awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break }}' /proc/self/mountinfo)"
[ -n "$CG2" ] || die "no cgroup v2 mount in /proc/self/mountinfo"

TAG="fmeb$$"
NS_C="$TAG-c"; NS_I="$TAG-i"; NS_U="$TAG-u"; NS_B="$TAG-b"
LINK_U="${TAG}v"
CG="$CG2/ferryman-ebench-$$"
PIN="/sys/fs/bpf/ferryman-ebench-$$"
WORK="$(mktemp -d /tmp/ferryman-ebench.XXXXXX)"
PIDS=()
NSES=()

# Kills what this script started (by pid), removes the pins, namespaces and cgroups.
cleanup() {
  local p ns pid
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  if [ -n "${FERRYMAN:-}" ] && [ -f "$WORK/ebpf.toml" ]; then
    NO_COLOR=1 "$FERRYMAN" cleanup --config "$WORK/ebpf.toml" >>"$WORK/cleanup.log" 2>&1
  fi
  rm -rf "$PIN" "$PIN-userspace"
  for ns in "${NSES[@]}"; do
    # Only processes this script started can be in these namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  for d in "$CG/lb" "$CG/plain" "$CG"; do
    [ -d "$d" ] && { rmdir "$d" 2>/dev/null || echo "could not remove cgroup $d" >&2; }
  done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# === Ferryman binary ===
if [ -z "$FERRYMAN" ]; then
  log "building ferryman (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin ferryman)
  FERRYMAN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferryman"
fi
[ -x "$FERRYMAN" ] || die "no ferryman binary at $FERRYMAN"

# === bpffs, cgroups ===
if ! awk '$5 == "/sys/fs/bpf" {found = 1} END {exit !found}' /proc/self/mountinfo; then
  log "mounting bpffs on /sys/fs/bpf (left mounted)"
  mount -t bpf bpf /sys/fs/bpf
fi
mkdir "$CG" "$CG/lb" "$CG/plain"

# === Namespaces ===
nsx() { local ns="$1"; shift; nsenter --net="/run/netns/$ns" "$@"; }
for ns in "$NS_B" "$NS_C" "$NS_I" "$NS_U"; do
  ip netns add "$ns"
  NSES+=("$ns")
  ip -n "$ns" link set lo up
done
for ip in ${BACKEND_IPS//,/ }; do ip -n "$NS_B" addr add "$ip/32" dev lo; done
i=0
for ns in "$NS_C" "$NS_I" "$NS_U"; do
  ip -n "$NS_B" link add "b$i" type veth peer name "c$i" netns "$ns"
  ip -n "$NS_B" addr add "10.200.$i.1/30" dev "b$i"
  ip -n "$NS_B" link set "b$i" up
  ip -n "$ns" addr add "10.200.$i.2/30" dev "c$i"
  ip -n "$ns" link set "c$i" up
  ip -n "$ns" route add 10.201.0.0/24 via "10.200.$i.1"
  i=$((i + 1))
done
# The iptables client routes the VIP range (as a node's default route would); DNAT then
# reroutes to the backend. ns c and ns u have no such route.
ip -n "$NS_I" route add 11.0.0.0/8 via 10.200.1.1

# === Helpers ===
vip() { echo "11.1.$(($1 / 256)).$(($1 % 256))"; }

# Runs a command as a client of WAY: in its namespace and child cgroup (the cgroup is joined
# before nsenter; both are inherited by what it execs).
as_client() { # way cmd...
  local way="$1" ns cg
  shift
  case "$way" in
    direct) ns="$NS_C"; cg="$CG/plain" ;;
    ebpf) ns="$NS_C"; cg="$CG/lb" ;;
    iptables) ns="$NS_I"; cg="$CG/plain" ;;
    userspace) ns="$NS_U"; cg="$CG/plain" ;;
  esac
  (echo "$BASHPID" >"$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" "$@")
}

target_url() { # way services
  if [ "$1" = direct ]; then echo "http://${BACKEND_IPS%%,*}:$PORT/"; else echo "http://$(vip $(($2 - 1))):$PORT/"; fi
}

http_ok() { # way url
  [ "$(as_client "$1" curl -s -o /dev/null -m 2 -w '%{http_code}' "$2" 2>/dev/null)" = 200 ]
}

stop_pid() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

ferryman_config() { # file mode link [extra l4 lines]
  cat >"$1" <<EOF
[discovery]
source = "file"
file = "$WORK/apps.json"

[dns]
listen = "127.0.0.1:0"
threads = 1

[l4]
mode = "$2"
link = "$3"
balance = "rr"
connect_timeout = "5s"
idle_timeout = "60s"
max_connections = 8000
${4:-}

[l7]
http = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
EOF
}

start_ferryman() { # name ns config; sets F_PID
  TOKIO_WORKER_THREADS=1 RUST_LOG=info NO_COLOR=1 \
    nsenter --net="/run/netns/$2" nice -n "$NICE" taskset -c "$SERVER_CPUS" "$FERRYMAN" --config "$3" \
    >"$WORK/$1.log" 2>&1 &
  F_PID=$!
  PIDS+=("$F_PID")
}

# === nginx ===
python3 "$ROOT/benches/l4_ebpf/gen.py" "$WORK" --services 1 --backends "$BACKEND_IPS" --port "$PORT" --nginx
nsx "$NS_B" nice -n "$NICE" taskset -c "$SERVER_CPUS" nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" \
  >"$WORK/nginx.log" 2>&1 &
N_PID=$!
PIDS+=("$N_PID")
deadline=$((SECONDS + 30))
until http_ok direct "$(target_url direct 1)"; do
  kill -0 "$N_PID" 2>/dev/null || { cat "$WORK/nginx.log" "$WORK/nginx-error.log" >&2; die "nginx exited"; }
  [ "$SECONDS" -lt "$deadline" ] || die "nginx did not answer within 30 s"
  sleep 0.1
done

ferryman_config "$WORK/ebpf.toml" ebpf "" "cgroup = \"$CG/lb\"
bpf_pin_dir = \"$PIN\""
# Its own (never created) pin dir: l4.mode = userspace removes the pins it finds there, and the
# default, /sys/fs/bpf/ferryman, is the host's.
ferryman_config "$WORK/userspace.toml" userspace "$LINK_U" "bpf_pin_dir = \"$PIN-userspace\""

E_PID=""
U_PID=""
SKIPPED=()   # "services way reason"
: >"$WORK/results.tsv"
: >"$WORK/sync.txt"

# Loads N services into every way: iptables rules, both Ferrymans from empty state.
load_services() { # n
  local n="$1" deadline url
  stop_pid "$E_PID"; stop_pid "$U_PID"; E_PID=""; U_PID=""
  # The fast path's pins outlive Ferryman by design: start each count from empty maps.
  NO_COLOR=1 "$FERRYMAN" cleanup --config "$WORK/ebpf.toml" >>"$WORK/cleanup.log" 2>&1 || true
  rm -rf "$PIN"
  python3 "$ROOT/benches/l4_ebpf/gen.py" "$WORK" --services "$n" --backends "$BACKEND_IPS" --port "$PORT"
  ACTIVE=()
  for way in $WAYS; do
    case "$way" in
      direct) ACTIVE+=(direct) ;;
      iptables)
        local t0=$EPOCHREALTIME
        nsx "$NS_I" "$IPT_RESTORE" <"$WORK/iptables.rules" || die "$IPT_RESTORE failed"
        # The nat table brought conntrack into ns i. Short connections leave one TIME_WAIT entry
        # each (120 s by default): 5 s keeps the table far below nf_conntrack_max.
        nsx "$NS_I" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=5 ||
          log "warning: could not lower conntrack's TIME_WAIT timeout in ns i"
        log "$n services: iptables-restore of $(grep -c '^-A' "$WORK/iptables.rules") rules took $(python3 -c "print(round(($EPOCHREALTIME - $t0) * 1000))") ms"
        url="$(target_url iptables "$n")"
        http_ok iptables "$url" || die "iptables: $url does not answer 200 from ns i"
        ACTIVE+=(iptables) ;;
      ebpf)
        start_ferryman "ebpf-$n" "$NS_C" "$WORK/ebpf.toml"
        E_PID="$F_PID"
        url="$(target_url ebpf "$n")"
        deadline=$((SECONDS + 60))
        until http_ok ebpf "$url"; do
          # Gone, out of time, or a build that says it has no fast path.
          if ! kill -0 "$E_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ] ||
            grep -q 'fast path is not available' "$WORK/ebpf-$n.log"; then
            break
          fi
          sleep 0.2
        done
        if http_ok ebpf "$url"; then
          ACTIVE+=(ebpf)
          # Let the sync finish logging, then keep what it said.
          sleep 1
          grep -E "fastpath (synced|sync failed)" "$WORK/ebpf-$n.log" | sed "s/^/$n services: /" >>"$WORK/sync.txt" || true
        else
          SKIPPED+=("$n ebpf $url did not answer: $(grep -iE 'warn|error' "$WORK/ebpf-$n.log" | tail -1 | cut -c1-200)")
          log "ebpf skipped at $n services (log: $(tail -1 "$WORK/ebpf-$n.log" | cut -c1-200))"
          stop_pid "$E_PID"; E_PID=""
        fi ;;
      userspace)
        if [ "$NOFILE" -lt $((n + 500)) ]; then
          SKIPPED+=("$n userspace open-files limit $NOFILE < $((n + 500)) needed for $n VIP listeners")
          log "userspace skipped at $n services: open-files limit $NOFILE"
          continue
        fi
        local t0=$SECONDS
        start_ferryman "userspace-$n" "$NS_U" "$WORK/userspace.toml"
        U_PID="$F_PID"
        deadline=$((SECONDS + 180))
        until [ "$(nsx "$NS_U" ss -Htln 'src 11.1.0.0/16' | wc -l)" -ge "$n" ]; do
          kill -0 "$U_PID" 2>/dev/null || { tail -20 "$WORK/userspace-$n.log" >&2; die "user-space ferryman exited"; }
          [ "$SECONDS" -lt "$deadline" ] || { tail -5 "$WORK/userspace-$n.log" >&2; die "user-space ferryman: $n VIP listeners not up within 180 s"; }
          sleep 0.5
        done
        url="$(target_url userspace "$n")"
        http_ok userspace "$url" || die "userspace: $url does not answer 200 from ns u"
        log "$n services: user-space ferryman listening on $n VIPs after $((SECONDS - t0)) s"
        ACTIVE+=(userspace) ;;
    esac
  done
}

# One wrk run; appends "scenario way round rps p50_us p99_us socket_errors non_2xx".
wrk_run() { # scenario way round url close(0/1)
  local out hdr=()
  [ "$5" = 1 ] && hdr=(-H "Connection: close")
  out="$(as_client "$2" timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" \
    -d"${DURATION}s" --timeout 5s --latency "${hdr[@]}" "$4" 2>&1)" ||
    die "wrk failed ($1 $2 round $3): $out"
  printf '### %s %s %s\n%s\n' "$1" "$2" "$3" "$out" >>"$WORK/wrk.log"
  python3 "$ROOT/benches/l4/parse_wrk.py" "$1" "$2" "$3" <<<"$out" >>"$WORK/results.tsv"
}

# === Run ===
nways=$(wc -w <<<"$WAYS")
ncounts=$(wc -w <<<"$COUNTS")
est=$((ncounts * 2 * RUNS * nways * (DURATION + 1) + ncounts * 15 + SYNC_REPEATS * 3))
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average $LOAD_START; wrk on cpu $CLIENT_CPU, nginx and ferryman on $SERVER_CPUS; open files $NOFILE"
log "estimate: about $((est / 60)) min $((est % 60)) s ($ncounts counts x 2 modes x $RUNS rounds x $nways ways x ${DURATION}s, plus loading)"

for n in $COUNTS; do
  load_services "$n"
  for close in 0 1; do
    if [ "$close" = 1 ]; then sc="close-$n"; else sc="ka-$n"; fi
    log "$sc: $RUNS rounds of ${DURATION}s over: ${ACTIVE[*]}"
    for run in $(seq 1 "$RUNS"); do
      # Rotate the order each round so every way takes every position.
      k=$(((run - 1) % ${#ACTIVE[@]}))
      order=("${ACTIVE[@]:k}" "${ACTIVE[@]:0:k}")
      for way in "${order[@]}"; do
        wrk_run "$sc" "$way" "$run" "$(target_url "$way" "$n")" "$close"
      done
    done
  done
done
stop_pid "$U_PID"; U_PID=""

# More samples of the fast path's full map sync at the largest count: Ferryman restarted on empty
# maps (pins removed), each logging one "fastpath synced ... elapsed_ms=".
largest="$n" # the last count loaded, the largest (COUNTS is sorted)
if [ -n "$E_PID" ] && [ "$SYNC_REPEATS" -gt 0 ]; then
  log "$largest services: $SYNC_REPEATS more full map syncs from empty maps"
  for r in $(seq 1 "$SYNC_REPEATS"); do
    stop_pid "$E_PID"; E_PID=""
    NO_COLOR=1 "$FERRYMAN" cleanup --config "$WORK/ebpf.toml" >>"$WORK/cleanup.log" 2>&1 || true
    rm -rf "$PIN"
    start_ferryman "ebpf-$largest-sync$r" "$NS_C" "$WORK/ebpf.toml"
    E_PID="$F_PID"
    deadline=$((SECONDS + 60))
    until grep -qsE "fastpath (synced|sync failed)" "$WORK/ebpf-$largest-sync$r.log"; do
      kill -0 "$E_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.2
    done
    grep -E "fastpath (synced|sync failed)" "$WORK/ebpf-$largest-sync$r.log" |
      sed "s/^/$largest services: /" >>"$WORK/sync.txt" || true
  done
fi
stop_pid "$E_PID"; E_PID=""
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average $LOAD_END"

echo
echo "ferryman $("$FERRYMAN" --version 2>/dev/null | head -1), nginx $(nginx -v 2>&1 | sed 's/.*\///') (1 worker, 3 backend addresses), $("$IPT_RESTORE" --version 2>/dev/null | head -1 || echo "$IPT_RESTORE"), kernel $(uname -r)"
echo "wrk -t1 -c$CONNS -d${DURATION}s on cpu $CLIENT_CPU; nginx + ferryman (1 tokio worker) on cpu $SERVER_CPUS; nice $NICE; $RUNS rounds, ways rotated per round; $NCPU cores"
echo "load average at start: $LOAD_START   at end: $LOAD_END"
echo
python3 "$ROOT/benches/l4_ebpf/summarize.py" "$WORK/results.tsv" "$WORK/sync.txt" "${SKIPPED[@]}"
