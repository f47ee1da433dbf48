#!/usr/bin/env bash
# User-space instructions per proxied request, gatehouse against bare Pingora, counted by
# valgrind's callgrind. Unlike CPU time it does not move with the machine's load: two runs of one
# binary agree to about 0.02 %, so it shows a change of 1 % in our own code where the wall-clock
# rounds of benches/run.sh spread more than that. It counts no kernel work (about half of a
# proxied request's CPU on loopback) and weighs every instruction the same, so read it beside
# run.sh's CPU per request, not instead of it.
#
# Each proxy runs under callgrind in front of one nginx origin ("hello\n"): 2 000 requests warm
# it up (connections pooled, caches filled), its counters are zeroed, then REQUESTS requests are
# sent with h2load (HTTP/1.1, 10 connections) and the counters dumped. Instructions per request
# = all threads' instructions over the measured requests / REQUESTS. PROTO=h2: both proxies
# terminate TLS (one ECDSA P-256 certificate) and the requests go over HTTP/2, 10 connections
# of 10 concurrent streams each.
#
# Usage: benches/instructions.sh
#   REQUESTS=N (default 10000)  SMOKE=1 (200 requests: checks the runner, not the figures)
#   PROTO=h1 (default: plain HTTP/1.1) | h2 (HTTP/2 over TLS)
#   GATEHOUSE_BIN=path  PINGORA_BIN=path (default: built as for benches/run.sh)  KEEP_WORKDIR=1
#   BASE_BIN=path (an earlier gatehouse build, measured too, with the same config: a third row
#   and the ratio gatehouse/base)
#   CALLGRIND_ARGS="--dump-instr=yes" (more callgrind options, e.g. for costs per call site with
#   callgrind_annotate or kcachegrind; needs KEEP_WORKDIR=1 to keep the dumps)
# Needs valgrind (scripts/setup.sh bench installs it), nginx, h2load, curl.
set -euo pipefail
BENCH_NAME=instructions.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

SMOKE=${SMOKE:-0}
REQUESTS=${REQUESTS:-10000}
((SMOKE)) && REQUESTS=200
WARM_REQUESTS=$((SMOKE ? 100 : 2000))
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-}
PINGORA_BIN=${PINGORA_BIN:-}
BASE_BIN=${BASE_BIN:-}
CALLGRIND_ARGS=${CALLGRIND_ARGS:-}
PROTO=${PROTO:-h1}
[[ $PROTO == h1 || $PROTO == h2 ]] || usage_err "PROTO=$PROTO (h1 or h2)"
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || usage_err "REQUESTS=$REQUESTS (want a positive integer)"
require_tools " (Debian: valgrind, nginx-light, nghttp2-client)" valgrind callgrind_control \
    callgrind_annotate nginx h2load curl ss setsid
[[ $PROTO == h1 ]] || require_tools "" openssl

PORT_ORIGIN=18600
PORT_GATEHOUSE=18601
PORT_ADMIN=18602
PORT_PINGORA=18603
ALL_PORTS=("$PORT_ORIGIN" "$PORT_GATEHOUSE" "$PORT_ADMIN" "$PORT_PINGORA")
CURL=(curl -sS --noproxy '*')
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
declare -A PID_OF=()

WORK_PREFIX=gh-instructions
RUN_KIND="instruction count"
# Under valgrind a proxy's process name is the tool's.
SERVER_PROCS="nginx|callgrind-amd64"
STOP_SIGNAL=TERM STOP_WAIT=50
setup_workdir

release_binary GATEHOUSE_BIN gatehouse
if [[ -z $PINGORA_BIN ]]; then
    log "building the bare Pingora proxy (cargo build --release --bench bare_pingora)"
    PINGORA_BIN=$(cd "$ROOT" && cargo build --release --bench bare_pingora --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bare_pingora" and m.get("executable"):
        print(m["executable"])') || die "building bare_pingora failed"
fi
[[ -x $PINGORA_BIN ]] || die "bare Pingora binary not found at '$PINGORA_BIN'"
[[ -z $BASE_BIN || -x $BASE_BIN ]] || die "BASE_BIN: no executable at '$BASE_BIN'"

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 10000000;
    server { listen 127.0.0.1:$PORT_ORIGIN; location / { return 200 "hello\n"; } }
}
EOF
# The proxies' listeners, and what h2load and the readiness probe send them.
LISTENER="  - address: 127.0.0.1:$PORT_GATEHOUSE"
CERTS=""
PINGORA_TLS=()
H2LOAD_MODE=(--h1 -c 10)
SCHEME=http
if [[ $PROTO == h2 ]]; then
    make_cert ecdsa -newkey ec -pkeyopt ec_paramgen_curve:P-256
    LISTENER="$LISTENER
    tls: true"
    CERTS="tls:
  certificates:
    - cert: $WORK/tls/ecdsa.crt
      key: $WORK/tls/ecdsa.key"
    PINGORA_TLS=(--tls "$WORK/tls/ecdsa.crt" "$WORK/tls/ecdsa.key")
    H2LOAD_MODE=(-c 10 -m 10)
    SCHEME=https
fi
# In a directory of its own: the gateway reloads on any change in its config's directory, and the
# runner writes its dumps and load reports into $WORK while the gateway is measured.
mkdir -p "$WORK/gatehouse"
cat >"$WORK/gatehouse/gatehouse.yaml" <<EOF
server:
  threads: 1
  work_stealing: false
  grace_period: 0s
  shutdown_timeout: 1s
  upgrade_sock: $WORK/gatehouse.upgrade.sock
  pid_file: $WORK/gatehouse.pid
listeners:
$LISTENER
$CERTS
admin:
  address: 127.0.0.1:$PORT_ADMIN
access_log:
  format: off
upstreams:
  origin:
    targets: ["127.0.0.1:$PORT_ORIGIN"]
routes:
  - name: all
    match:
      path_prefix: /
    upstream: origin
EOF
start origin "$WORK/origin.log" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
wait_answering origin "on :$PORT_ORIGIN" 10 "http://127.0.0.1:$PORT_ORIGIN/"

# Prints the instructions per request of the proxy started by the remaining arguments.
measure() { # name port cmd...
    local name=$1 port=$2
    shift 2
    # shellcheck disable=SC2086 # CALLGRIND_ARGS is a list of options
    start "$name" "$WORK/$name.log" valgrind --tool=callgrind $CALLGRIND_ARGS \
        --callgrind-out-file="$WORK/$name.callgrind" "$@"
    wait_answering "$name" "on :$port under valgrind" 120 -k "$SCHEME://127.0.0.1:$port/"
    h2load "${H2LOAD_MODE[@]}" -n "$WARM_REQUESTS" "$SCHEME://127.0.0.1:$port/" >"$WORK/$name.warm.txt"
    callgrind_control -z "${PID_OF[$name]}" >/dev/null 2>&1
    h2load "${H2LOAD_MODE[@]}" -n "$REQUESTS" "$SCHEME://127.0.0.1:$port/" >"$WORK/$name.h2load.txt"
    grep -q "^requests: $REQUESTS total, $REQUESTS started, $REQUESTS done, $REQUESTS succeeded" \
        "$WORK/$name.h2load.txt" || die "$name: not every request succeeded: $(grep '^requests:' "$WORK/$name.h2load.txt")"
    callgrind_control -d "${PID_OF[$name]}" >/dev/null 2>&1
    kill_recorded_group "$WORK/$name.pgid"
    local dump total
    dump=$(find "$WORK" -maxdepth 1 -name "$name.callgrind.*" | sort | tail -n 1)
    [[ -n $dump ]] || die "$name: callgrind wrote no dump"
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [[ $total =~ ^[0-9]+$ ]] || die "$name: no instruction total in $dump"
    echo $((total / REQUESTS))
}

log "gatehouse under callgrind ($REQUESTS measured requests)"
gh=$(measure gatehouse "$PORT_GATEHOUSE" "$GATEHOUSE_BIN" --config "$WORK/gatehouse/gatehouse.yaml")
if [[ -n $BASE_BIN ]]; then
    log "the base build under callgrind ($REQUESTS measured requests)"
    base=$(measure gatehouse_base "$PORT_GATEHOUSE" "$BASE_BIN" --config "$WORK/gatehouse/gatehouse.yaml")
fi
log "bare Pingora under callgrind ($REQUESTS measured requests)"
bare=$(measure bare_pingora "$PORT_PINGORA" "$PINGORA_BIN" "127.0.0.1:$PORT_PINGORA" "127.0.0.1:$PORT_ORIGIN" \
    "${PINGORA_TLS[@]}")

echo
printf '%-14s %s\n' "proxy" "user-space instructions per request ($([[ $PROTO == h1 ]] && echo "HTTP/1.1" || echo "HTTP/2 over TLS"))"
printf '%-14s %d\n' gatehouse "$gh"
[[ -n $BASE_BIN ]] && printf '%-14s %d\n' base "$base"
printf '%-14s %d\n' "bare Pingora" "$bare"
awk -v g="$gh" -v b="$bare" 'BEGIN { printf "gatehouse/bare Pingora: %.3f\n", g / b }'
[[ -n $BASE_BIN ]] && awk -v g="$gh" -v b="$base" 'BEGIN { printf "gatehouse/base: %.3f\n", g / b }'
((SMOKE)) && echo "(SMOKE=1: $REQUESTS requests; the figures are not meaningful)"
exit 0
