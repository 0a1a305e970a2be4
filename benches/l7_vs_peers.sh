#!/usr/bin/env bash
# Ferryman's L7 edge vs HAProxy (`mode http`, the config Marathon-LB generates) vs nginx as a
# reverse proxy: the same nginx backends, the same machine, the same run (issue 8's benchmark).
#
#   benches/l7_vs_peers.sh [--rounds 5] [--seconds 5] [--workers 1] [--conns 64]
#                          [--only haproxy,nginx,ferryman] [--cases http-ka,http-close,https-ka,h2,rss]
#                          [--idle 8000] [--h2 16x10] [--ferryman PATH] [--keep]
#
# FERRYMAN_BIN=PATH is the same as --ferryman PATH; without either, ferryman is built
# (cargo build --release, in CARGO_TARGET_DIR) when the targets include it.
#
# 1. One nginx (1 worker; benches/l7/gen.py writes every config) serves 3 backend ports on
#    127.0.0.1 answering 200 "ok\n". A self-signed RSA 2048 certificate for bench.example.com is
#    made with openssl; all three proxies serve that one PEM (cert + key: HAProxy's crt, nginx's
#    ssl_certificate and _key, Ferryman's [l7.tls] cert).
# 2. The proxies, each with N workers, all on loopback:
#    haproxy   `mode http`, Marathon-LB's frontends for one app with HAPROXY_0_VHOST (acl host +
#              use_backend; TLS frontend routing on SNI, `alpn h2,http/1.1`), `balance roundrobin`,
#              `option http-keep-alive`, `nbthread N` (the differences from Marathon-LB's
#              defaults are listed in benches/l7/gen.py, each one in HAProxy's favour);
#    nginx     an upstream with `keepalive 64`, `worker_processes N`, `listen ... ssl http2`;
#    ferryman  discovery.source = "file" with a Marathon apps document (HAPROXY_GROUP=external,
#              HAPROXY_0_VHOST=bench.example.com, tasks at the backends), l7.http and l7.https,
#              l4.mode = "off", TOKIO_WORKER_THREADS = N.
#    The proxies run on cores 0..N-1 (taskset); wrk, h2load and the backends on the others.
# 3. Cases, each --rounds rounds of --seconds seconds; every round runs each proxy once, the order
#    rotated so each proxy takes each position:
#    http-ka     wrk -t1 -c64 --latency -H "Host: bench.example.com" (HTTP/1.1 keep-alive)
#    http-close  the same with `Connection: close` (a new client connection per request)
#    https-ka    wrk over TLS (SNI bench.example.com), keep-alive
#    h2          h2load -c16 -m10 over TLS with ALPN h2 (p50/p99 from its --log-file; h2load
#                itself prints only min/max/mean/sd)
#    rss         --idle (8000) idle keep-alive connections to each proxy (benches/l7/
#                idle_conns.py: one request each, then held 8 s); VmRSS summed over the proxy's
#                processes (HAProxy: 1; nginx: master + workers; Ferryman: 1) before and with them
#                open, PSS too. The hard open-files limit here is 20 000 and HAProxy needs 2 fds
#                per proxied connection, so 8000 fits (HAProxy maxconn 9000).
# 4. benches/l7/summarize.py prints, per case and proxy: median req/s and range, median p50/p99,
#    errors, the ratios Ferryman/HAProxy and Ferryman/nginx of the medians, p99 ratio to
#    HAProxy's, the proxy's own CPU time per request; the RSS table; the issue's goals.
#
# Needs: haproxy, nginx, wrk, h2load (nghttp2-client), taskset, python3, ss, curl, openssl, and
# at least N+1 cores. Every process it starts is stopped on exit (also on Ctrl-C) and its
# temporary directory removed (--keep keeps it: configs, logs, raw results). Every wait is bounded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=5
SECS=5
WORKERS=1
CONNS=64
IDLE=8000
ONLY="haproxy,nginx,ferryman"
CASES="http-ka,http-close,https-ka,h2,rss"
H2="16x10"
FERRYMAN="${FERRYMAN_BIN:-}"
KEEP=0
VHOST="bench.example.com"
IDLE_TIMEOUT=60

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --seconds) SECS="${2%s}"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --idle) IDLE="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --cases) CASES="$2"; shift 2 ;;
    --h2) H2="$2"; shift 2 ;;
    --ferryman) FERRYMAN="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$H2" =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { echo "--h2 wants CLIENTSxSTREAMS, e.g. 16x10" >&2; exit 2; }
H2_CLIENTS="${BASH_REMATCH[1]}"
H2_STREAMS="${BASH_REMATCH[2]}"
for n in "$ROUNDS" "$SECS" "$WORKERS" "$CONNS" "$IDLE"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive integer: $n" >&2; exit 2; }
done
[ "$ROUNDS" -le 50 ] && [ "$SECS" -le 120 ] && [ "$CONNS" -le 2000 ] && [ "$IDLE" -le 9000 ] ||
  { echo "at most 50 rounds of 120 s, 2000 connections, 9000 idle connections" >&2; exit 2; }
TARGETS=()
for t in ${ONLY//,/ }; do
  case "$t" in haproxy|nginx|ferryman) TARGETS+=("$t") ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
[ "${#TARGETS[@]}" -gt 0 ] || { echo "--only names no target" >&2; exit 2; }
CASE_LIST=()
for c in ${CASES//,/ }; do
  case "$c" in http-ka|http-close|https-ka|h2|rss) CASE_LIST+=("$c") ;; *) echo "unknown case: $c" >&2; exit 2 ;; esac
done
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
has_case() { [[ " ${CASE_LIST[*]} " == *" $1 "* ]]; }

# Tool -> Debian package.
need=(haproxy:haproxy nginx:nginx wrk:wrk taskset:util-linux python3:python3 ss:iproute2 curl:curl
  openssl:openssl)
has_case h2 && need+=(h2load:nghttp2-client)
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "missing tools; install: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
NCPU="$(nproc)"
[ "$WORKERS" -lt "$NCPU" ] || { echo "needs more cores than --workers ($NCPU cores)" >&2; exit 1; }
PROXY_CPUS="0-$((WORKERS - 1))"
LOAD_CPUS="$WORKERS-$((NCPU - 1))"
# HAProxy holds 2 fds per proxied connection; nginx 2 per connection per worker; the idle client
# one per connection. Raise the soft limit to the hard one (20 000 here) for all of them.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if has_case rss && [ "$NOFILE" -lt $((2 * IDLE + 1000)) ]; then
  echo "open-files limit $NOFILE < $((2 * IDLE + 1000)) (HAProxy: 2 per idle connection); lower --idle" >&2
  exit 1
fi

WORK="$(mktemp -d /tmp/ferryman-l7bench.XXXXXX)"
PIDS=()

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# Direct children of a pid (nginx's workers).
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# TERM to a process (and, after 5 s, KILL to it and its children), then reap it.
stop_pid() { # pid
  [ -n "$1" ] || return 0
  local kids
  kids="$(children "$1")"
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" $kids 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cleanup() {
  set +e
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The first of COUNT consecutive loopback TCP ports, from START on, that no socket uses (ss).
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
  die "no $1 free consecutive ports"
}

# === Ferryman binary ===
if has_target ferryman; then
  if [ -z "$FERRYMAN" ]; then
    log "building ferryman (release)"
    (cd "$ROOT" && nice cargo build --release --quiet --bin ferryman)
    FERRYMAN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferryman"
  fi
  [ -x "$FERRYMAN" ] || die "no ferryman binary at $FERRYMAN"
fi

# === Ports, certificate, configs ===
BASE="$(free_range 11 21000)"
BACKENDS="$BASE,$((BASE + 1)),$((BASE + 2))"
H_HTTP=$((BASE + 3)); H_HTTPS=$((BASE + 4)); H_SVC=$((BASE + 5))
N_HTTP=$((BASE + 6)); N_HTTPS=$((BASE + 7))
F_HTTP=$((BASE + 8)); F_HTTPS=$((BASE + 9)); F_SVC=$((BASE + 10))
http_port() { case "$1" in haproxy) echo "$H_HTTP" ;; nginx) echo "$N_HTTP" ;; ferryman) echo "$F_HTTP" ;; esac; }
https_port() { case "$1" in haproxy) echo "$H_HTTPS" ;; nginx) echo "$N_HTTPS" ;; ferryman) echo "$F_HTTPS" ;; esac; }

CERT="$WORK/bench.pem"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$VHOST" \
  -addext "subjectAltName=DNS:$VHOST" -keyout "$WORK/bench.key" -out "$WORK/bench.crt" \
  >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl req failed"; }
cat "$WORK/bench.crt" "$WORK/bench.key" >"$CERT"

python3 "$ROOT/benches/l7/gen.py" "$WORK" --backends "$BACKENDS" --workers "$WORKERS" \
  --cert "$CERT" --haproxy "$H_HTTP,$H_HTTPS,$H_SVC" --nginx "$N_HTTP,$N_HTTPS" \
  --ferryman "$F_HTTP,$F_HTTPS,$F_SVC" --vhost "$VHOST" --idle-timeout "$IDLE_TIMEOUT"

cat >"$WORK/ferryman.toml" <<EOF
[discovery]
source = "file"
file = "$WORK/apps.json"

[dns]
listen = "127.0.0.1:0"
threads = 1

[l4]
mode = "off"

[l7]
group = "external"
http = "127.0.0.1:$F_HTTP"
https = "127.0.0.1:$F_HTTPS"
idle_timeout = "${IDLE_TIMEOUT}s"
# hyper's header read timeout also bounds the wait for the next request on a keep-alive
# connection: the same idle time as HAProxy's timeout http-keep-alive and nginx's keepalive_timeout.
header_read_timeout = "${IDLE_TIMEOUT}s"
max_connections = 10000

[l7.tls]
cert = "$CERT"

[admin]
listen = "127.0.0.1:0"
EOF

# === Processes ===
declare -A PID_OF=()

# curl through a proxy's vhost: prints the HTTP status (000 on failure).
probe() { # scheme port [curl args...]
  local scheme="$1" port="$2"
  shift 2
  curl -sk -o /dev/null -m 2 -w '%{http_code}' --resolve "$VHOST:$port:127.0.0.1" "$@" \
    "$scheme://$VHOST:$port/" 2>/dev/null || true
}

# Waits (at most 30 s) until the vhost answers 200 over http and https (and h2 over TLS).
wait_ready() { # name pid
  local deadline=$((SECONDS + 30)) hp sp
  hp="$(http_port "$1")"; sp="$(https_port "$1")"
  while :; do
    kill -0 "$2" 2>/dev/null || { tail -20 "$WORK/$1.log" >&2; die "$1 exited"; }
    if [ "$(probe http "$hp" -H "Host: $VHOST")" = 200 ] && [ "$(probe https "$sp")" = 200 ]; then
      break
    fi
    [ "$SECONDS" -lt "$deadline" ] || { tail -20 "$WORK/$1.log" >&2; die "$1: $VHOST not answering 200 on :$hp and :$sp within 30 s"; }
    sleep 0.2
  done
  local v
  v="$(curl -sk -o /dev/null -m 2 --http2 -w '%{http_version}' --resolve "$VHOST:$sp:127.0.0.1" "https://$VHOST:$sp/" || true)"
  [ "$v" = 2 ] || log "warning: $1 did not negotiate h2 over TLS (curl saw HTTP/$v)"
  # Unknown vhost: every proxy answers 503 (no backend), never a backend's 200.
  local other
  other="$(probe http "$hp" -H "Host: other.example.com")"
  [ "$other" != 200 ] || die "$1 routes an unknown Host to the backends (config mismatch)"
}

start_backends() {
  taskset -c "$LOAD_CPUS" nginx -p "$WORK" -e "$WORK/backends-error.log" -c "$WORK/backends.conf" \
    >"$WORK/backends.log" 2>&1 &
  PID_OF[backends]=$!
  PIDS+=("$!")
  local deadline=$((SECONDS + 30)) b
  for b in ${BACKENDS//,/ }; do
    until [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$b/" || true)" = 200 ]; do
      kill -0 "${PID_OF[backends]}" 2>/dev/null || { cat "$WORK/backends.log" "$WORK/backends-error.log" >&2; die "backend nginx exited"; }
      [ "$SECONDS" -lt "$deadline" ] || die "backend nginx not answering on :$b within 30 s"
      sleep 0.1
    done
  done
}

start_proxy() { # name
  case "$1" in
    haproxy)
      taskset -c "$PROXY_CPUS" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & ;;
    nginx)
      taskset -c "$PROXY_CPUS" nginx -p "$WORK" -e "$WORK/nginx-proxy-error.log" \
        -c "$WORK/nginx-proxy.conf" >"$WORK/nginx.log" 2>&1 & ;;
    ferryman)
      TOKIO_WORKER_THREADS="$WORKERS" RUST_LOG=warn NO_COLOR=1 taskset -c "$PROXY_CPUS" \
        "$FERRYMAN" --config "$WORK/ferryman.toml" >"$WORK/ferryman.log" 2>&1 & ;;
  esac
  PID_OF[$1]=$!
  PIDS+=("$!")
  wait_ready "$1" "${PID_OF[$1]}"
}

# The pids of a proxy: the process and its children (nginx's workers).
tree() { echo "$1"; children "$1"; }
# utime + stime over a proxy's processes, in clock ticks.
cpu_ticks() { local p; for p in $(tree "$1"); do cat "/proc/$p/stat" 2>/dev/null; done | awk '{s += $14 + $15} END {print s + 0}'; }
# VmRSS and Pss summed over a proxy's processes, in KiB: "rss pss".
mem_kib() {
  local p rss=0 pss=0 r s
  for p in $(tree "$1"); do
    r="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
    s="$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)"
    rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0}))
  done
  echo "$rss $pss"
}

# === Load runs ===
: >"$WORK/results.tsv"
: >"$WORK/cpu.tsv"
: >"$WORK/rss.tsv"

# One measured run; appends to results.tsv (benches/l4/parse_wrk.py's format) and cpu.tsv.
run_one() { # case target round (round 0 = warm-up, not recorded)
  local c="$1" t="$2" r="$3" pid="${PID_OF[$2]}" out cpu0 cpu1 secs="$SECS" rc=0 url args=()
  [ "$r" = 0 ] && secs=1
  cpu0="$(cpu_ticks "$pid")"
  case "$c" in
    h2)
      url="https://$VHOST:$(https_port "$t")/"
      rm -f "$WORK/h2.log"
      out="$(timeout --foreground $((secs + 30)) taskset -c "$LOAD_CPUS" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" \
        -D "$secs" --connect-to "127.0.0.1:$(https_port "$t")" --log-file "$WORK/h2.log" \
        "$url" 2>&1)" || rc=$?
      [ "$rc" = 0 ] || die "h2load failed ($c $t round $r, exit $rc): $out"
      grep -q "Application protocol: h2" <<<"$out" || die "h2load did not negotiate h2 with $t: $out"
      ;;
    *)
      case "$c" in
        http-ka) url="http://$VHOST:$(http_port "$t")/" ;;
        http-close) url="http://$VHOST:$(http_port "$t")/"; args=(-H "Connection: close") ;;
        https-ka) url="https://$VHOST:$(https_port "$t")/" ;;
      esac
      out="$(timeout --foreground $((secs + 30)) taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${secs}s" \
        --timeout 5s --latency -s "$ROOT/benches/l7/loopback.lua" -H "Host: $VHOST" "${args[@]}" \
        "$url" 2>&1)" || rc=$?
      [ "$rc" = 0 ] || die "wrk failed ($c $t round $r, exit $rc): $out"
      ;;
  esac
  cpu1="$(cpu_ticks "$pid")"
  printf '### %s %s %s\n%s\n' "$c" "$t" "$r" "$out" >>"$WORK/runs.log"
  [ "$r" = 0 ] && return 0
  local line
  if [ "$c" = h2 ]; then
    line="$(python3 "$ROOT/benches/l7/parse_h2load.py" "$c" "$t" "$r" "$WORK/h2.log" <<<"$out")"
  else
    line="$(python3 "$ROOT/benches/l4/parse_wrk.py" "$c" "$t" "$r" <<<"$out")"
  fi
  echo "$line" >>"$WORK/results.tsv"
  local requests
  if [ "$c" = h2 ]; then
    requests="$(sed -n 's/^requests: \([0-9]*\) total.* \([0-9]*\) succeeded.*/\2/p' <<<"$out")"
  else
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  fi
  echo "$c $t $r $((cpu1 - cpu0)) ${requests:-0}" >>"$WORK/cpu.tsv"
  log "  $c round $r $t: $(awk '{printf "%s req/s, p50 %s us, p99 %s us, errors %s, non-2xx %s", $4, $5, $6, $7, $8}' <<<"$line")"
}

# --idle idle keep-alive connections to a proxy: its memory before and with them open.
idle_rss() { # target
  local t="$1" pid="${PID_OF[$1]}" port before after fifo h_pid est closed backend
  port="$(http_port "$t")"
  sleep 1
  before="$(mem_kib "$pid")"
  fifo="$WORK/idle.fifo"
  rm -f "$fifo"; mkfifo "$fifo"
  taskset -c "$LOAD_CPUS" python3 "$ROOT/benches/l7/idle_conns.py" 127.0.0.1 "$port" "$VHOST" \
    "$IDLE" 120 <"$fifo" >"$WORK/idle-$t.out" 2>&1 &
  h_pid=$!
  PIDS+=("$h_pid")
  exec 9>"$fifo"
  local deadline=$((SECONDS + 90))
  until grep -q "^open" "$WORK/idle-$t.out"; do
    if ! kill -0 "$h_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      exec 9>&-
      die "$IDLE idle connections to $t failed: $(cat "$WORK/idle-$t.out")"
    fi
    sleep 0.2
  done
  # Held idle 8 s before reading memory: the steady state of each proxy (Ferryman parks an
  # HTTP/1 connection idle for 1 s and hands freed memory back at most every 5 s).
  sleep 8
  after="$(mem_kib "$pid")"
  est="$(ss -Htn state established "( sport = :$port )" | wc -l)"
  # The proxy's connections to the backends meanwhile (HAProxy keeps one per client connection
  # that has sent a request; pools keep a few).
  local b0="${BACKENDS%%,*}"
  backend="$(ss -Htn state established "( dport >= :$b0 and dport <= :$((b0 + 2)) )" | wc -l)"
  exec 9>&-
  wait "$h_pid" 2>/dev/null || true
  closed="$(awk '/^closed_by_peer/ {print $2}' "$WORK/idle-$t.out")"
  echo "$t $IDLE ${before%% *} ${after%% *} ${after##* } $est ${closed:-?} $backend" >>"$WORK/rss.tsv"
  log "  rss $t: ${before%% *} KiB idle, ${after%% *} KiB (Pss ${after##* }) with $IDLE connections ($est established at the proxy, ${closed:-?} closed by it before the end, $backend to the backends)"
  # Let the proxy close its side (and HAProxy its backend connections) before the next one.
  sleep 2
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average $LOAD_START; proxies on cpus $PROXY_CPUS ($WORKERS worker(s)), load generator and backends on $LOAD_CPUS; open files $NOFILE"
nmeas=0
for c in "${CASE_LIST[@]}"; do [ "$c" = rss ] || nmeas=$((nmeas + 1)); done
est=$((nmeas * ROUNDS * ${#TARGETS[@]} * (SECS + 1) + nmeas * ${#TARGETS[@]} * 2))
has_case rss && est=$((est + ${#TARGETS[@]} * 21))
log "estimate: about $((est / 60)) min $((est % 60)) s"

start_backends
for t in "${TARGETS[@]}"; do start_proxy "$t"; done
# What TLS each proxy negotiates with the same client (OpenSSL's defaults).
TLS_INFO=""
for t in "${TARGETS[@]}"; do
  TLS_INFO+="$t: $(timeout 5 openssl s_client -connect "127.0.0.1:$(https_port "$t")" -servername "$VHOST" \
    -alpn http/1.1 </dev/null 2>/dev/null | sed -n 's/^New, \(.*\), Cipher is \(.*\)/\1 \2/p' | head -1)  "
done

for c in "${CASE_LIST[@]}"; do
  [ "$c" = rss ] && continue
  log "$c: warm-up 1 s each, then $ROUNDS rounds of ${SECS}s over: ${TARGETS[*]}"
  for t in "${TARGETS[@]}"; do run_one "$c" "$t" 0; done
  for r in $(seq 1 "$ROUNDS"); do
    k=$(((r - 1) % ${#TARGETS[@]}))
    order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
    for t in "${order[@]}"; do run_one "$c" "$t" "$r"; done
  done
done
if has_case rss; then
  log "rss: $IDLE idle keep-alive connections to each proxy"
  for t in "${TARGETS[@]}"; do idle_rss "$t"; done
fi
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average $LOAD_END"

echo
versions="$(haproxy -v | head -1 | cut -d' ' -f1-3), nginx $(nginx -v 2>&1 | sed 's/.*\///')"
has_target ferryman && versions="ferryman $("$FERRYMAN" --version 2>/dev/null | head -1 | awk '{print $NF}') ($FERRYMAN), $versions"
echo "$versions, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $(h2load --version 2>/dev/null | head -1 || true)"
echo "$WORKERS worker(s) per proxy on cpu $PROXY_CPUS; wrk/h2load and the backends (nginx, 1 worker) on $LOAD_CPUS; $NCPU cores"
[ "$nmeas" -gt 0 ] &&
  echo "wrk -t1 -c$CONNS -d${SECS}s --latency; h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D $SECS (TLS, ALPN h2); $ROUNDS rounds, order rotated per round"
echo "TLS (openssl s_client): $TLS_INFO"
echo "load average at start: $LOAD_START   at end: $LOAD_END"
echo
python3 "$ROOT/benches/l7/summarize.py" "$WORK/results.tsv" "$WORK/cpu.tsv" "$WORK/rss.tsv" "$(getconf CLK_TCK)"
