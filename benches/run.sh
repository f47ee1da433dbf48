#!/usr/bin/env bash
# Gatehouse benchmark runner: gatehouse vs a bare Pingora proxy vs nginx vs HAProxy as reverse
# proxies in front of the same nginx origin, driven by the same load, interleaved over rounds.
# For every run it records req/s and the CPU microseconds per request of the process under test
# (the proxy; for `direct`, the origin). Measures (MEASURES, any subset, in this order):
#   plain    GET / saturation (wrk), every proxy with GATEWAY_THREADS worker threads (1)
#   threads  the same with THREADS2 (2) worker threads
#   bodies   responses of 0 B, 4 KiB and 64 KiB, and a 64 KiB POST upload (wrk)
#   latency  fixed offered rates (LAT_RATES % of HAProxy's plain saturation rate), h2load --rps:
#            p50/p99/p99.9 from h2load's per-request log
#   tls      TLS termination (gatehouse, bare Pingora, HAProxy; same certificate), ECDSA P-256 and
#            RSA-2048: full handshakes/s (openssl s_time -new, one request per connection),
#            resumed handshakes/s (s_time -reuse, ECDSA only), keep-alive HTTPS (wrk) and
#            HTTP/2 over TLS (h2load)
# See benches/README.md for the protocol and how to read the tables. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   MEASURES="plain threads bodies latency tls"
#   ROUNDS=3  DURATION=5s (plain, threads)  BODY_DURATION=3s  TLS_DURATION=3s
#   LAT_ROUNDS=2  LAT_DURATION=4s  LAT_RATES="25 50 80"  LAT_CLIENTS=100
#   CONNECTIONS=50  THREADS=1 (wrk)  GATEWAY_THREADS=1 (every proxy's workers)  THREADS2=2
#   HS_CLIENTS=8 (parallel s_time processes)  H2_CLIENTS=50  H2_STREAMS=10
#   WARMUP=1s (per target, after each (re)start; 0 disables)  COOLDOWN=0.5 (seconds between runs)
#   SMOKE=1   quick check that the runner works: every measure, 1 round of 1 s runs
#   GATEHOUSE_BIN=path (default target/release/gatehouse; built if missing)  BUILD=1 (always
#   run `cargo build --release --workspace --bins` and `cargo build --release --bench bare_pingora` first)
#   PINGORA_BIN=path (bare Pingora proxy; default: the newest target/release/deps/bare_pingora-*,
#   built if missing or whenever gatehouse is built; an explicit path is used as is, never built)
#   BASE_BIN=path (an earlier gatehouse build: a sixth target, `base`, with the same config, in
#   the plain-HTTP measures; the report adds gatehouse/base CPU per request)
#   KEEP_WORKDIR=1 (keep configs, logs and raw load-generator output)
#
# Exit status: 0 on success; 1 if a component fails to start, fails the pre-check (non-200), or
# dies during the benchmark; 2 on bad options. Never non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=run.sh   # for messages, and to recognise a live run (benches/lib.sh)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Options
MEASURES=${MEASURES:-plain threads bodies latency tls}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
BODY_DURATION=${BODY_DURATION:-3s}
TLS_DURATION=${TLS_DURATION:-3s}
LAT_ROUNDS=${LAT_ROUNDS:-2}
LAT_DURATION=${LAT_DURATION:-4s}
LAT_RATES=${LAT_RATES:-25 50 80}
LAT_CLIENTS=${LAT_CLIENTS:-100}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
GATEWAY_THREADS=${GATEWAY_THREADS:-1}
THREADS2=${THREADS2:-2}
HS_CLIENTS=${HS_CLIENTS:-8}
H2_CLIENTS=${H2_CLIENTS:-50}
H2_STREAMS=${H2_STREAMS:-10}
WARMUP=${WARMUP:-1s}
COOLDOWN=${COOLDOWN:-0.5}
SMOKE=${SMOKE:-0}
BUILD=${BUILD:-0}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
PINGORA_BIN=${PINGORA_BIN:-}
BASE_BIN=${BASE_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 LAT_ROUNDS=1 DURATION=1s BODY_DURATION=1s TLS_DURATION=1s LAT_DURATION=1s WARMUP=1s COOLDOWN=0.2
fi

# Fixed loopback ports. The TLS listeners run only during the tls measure, the plain ones outside it.
PORT_ORIGIN=18000      # nginx origin ("hello\n", bodies, upload)
PORT_STATUS=18001      # nginx origin stub_status (connection counters)
PORT_GATEHOUSE=18080
PORT_ADMIN=19090       # gatehouse admin
PORT_NGINX=18081
PORT_HAPROXY=18082
PORT_PINGORA=18083     # bare Pingora proxy (benches/bare_pingora.rs)
PORT_BASE=18084        # BASE_BIN, an earlier gatehouse build
PORT_BASE_ADMIN=19091
PORT_GATEHOUSE_TLS=18443
PORT_PINGORA_TLS=18444
PORT_HAPROXY_TLS=18445
ALL_PORTS=("$PORT_ORIGIN" "$PORT_STATUS" "$PORT_GATEHOUSE" "$PORT_ADMIN" "$PORT_NGINX" "$PORT_HAPROXY"
           "$PORT_PINGORA" "$PORT_BASE" "$PORT_BASE_ADMIN" "$PORT_GATEHOUSE_TLS" "$PORT_PINGORA_TLS" "$PORT_HAPROXY_TLS")

# Targets in the order they run within a round (interleaved).
TARGETS=(direct gatehouse pingora nginx haproxy)
TLS_TARGETS=(gatehouse pingora haproxy)
declare -A PORT_OF=([direct]=$PORT_ORIGIN [gatehouse]=$PORT_GATEHOUSE [pingora]=$PORT_PINGORA
                    [nginx]=$PORT_NGINX [haproxy]=$PORT_HAPROXY [base]=$PORT_BASE)
[[ -n $BASE_BIN ]] && TARGETS=(direct gatehouse base pingora nginx haproxy)
declare -A TLS_PORT_OF=([gatehouse]=$PORT_GATEHOUSE_TLS [pingora]=$PORT_PINGORA_TLS [haproxy]=$PORT_HAPROXY_TLS)

# Both Pingora binaries are started through a symlink with these names in the work dir, so their
# process names (/proc/PID/comm, what ps and ss -p show) are these fixed strings whatever the real
# files are called (cargo names bare_pingora-<hash>, which comm would truncate to 15 chars; a
# GATEHOUSE_BIN may be any saved build).
PINGORA_PROC=bare_pingora
GATEHOUSE_PROC=gatehouse
BASE_PROC=gatehouse_base

check_options GATEWAY_THREADS THREADS2 LAT_ROUNDS LAT_CLIENTS HS_CLIENTS H2_CLIENTS H2_STREAMS   # sets DUR_S, WARMUP_S
for knob in BODY_DURATION TLS_DURATION LAT_DURATION; do
    secs=$(to_seconds "${!knob}") || usage_err "$knob=${!knob} (e.g. 3s)"
    ((secs > 0)) || usage_err "$knob=${!knob} (must be at least 1s)"
    printf -v "${knob%DURATION}S" '%s' "$secs"   # BODY_S, TLS_S, LAT_S
done
for m in $MEASURES; do
    [[ $m =~ ^(plain|threads|bodies|latency|tls)$ ]] || usage_err "MEASURES: unknown measure '$m' (plain threads bodies latency tls)"
done
for r in $LAT_RATES; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || usage_err "LAT_RATES: '$r' (want whole percentages)"
done
wants() { [[ " $MEASURES " == *" $1 "* ]]; }
require_tools "" wrk nginx haproxy curl ss python3 setsid awk
if wants latency || wants tls; then require_tools " (Debian: nghttp2-client)" h2load; fi
if wants tls; then require_tools "" openssl; fi
CLK_TCK=$(getconf CLK_TCK)

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 2)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh)
WORK_PREFIX=gh-bench
RUN_KIND="benchmark"
SERVER_PROCS="nginx|haproxy|$GATEHOUSE_PROC|$PINGORA_PROC|$BASE_PROC"
STOP_SIGNAL=TERM STOP_WAIT=30   # SIGKILL after 3 s
setup_workdir
COMPONENT_DIED=0

# ---------------------------------------------------------------------------------------------
# Build
BUILT_GATEHOUSE=0
if [[ $BUILD == 1 || ! -x $GATEHOUSE_BIN ]]; then
    log "building gatehouse (cargo build --release --workspace --bins)"
    (cd "$ROOT" && cargo build --release --workspace --bins) || die "cargo build --release --workspace --bins failed"
    BUILT_GATEHOUSE=1
fi
[[ -x $GATEHOUSE_BIN ]] || die "gatehouse binary not found at $GATEHOUSE_BIN"
STALE_NOTE=""
if [[ -n $(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$GATEHOUSE_BIN" -type f 2>/dev/null | head -1) ]]; then
    STALE_NOTE="  WARNING: sources are newer than the binary; numbers may not reflect the current tree (BUILD=1 rebuilds)"
fi

# The bare Pingora proxy is the `bare_pingora` bench target (harness = false); cargo writes it to
# target/release/deps/bare_pingora-<hash>. After a build, the exact path comes from cargo's JSON
# messages; without a build, the newest such file is used.
newest_bare_pingora() {
    local f best=""
    for f in "$ROOT"/target/release/deps/bare_pingora-*; do
        [[ ${f##*/} =~ ^bare_pingora-[0-9a-f]+$ && -f $f && -x $f ]] || continue
        if [[ -z $best || $f -nt $best ]]; then best=$f; fi
    done
    echo "$best"
}

# Path of the executable that cargo's JSON messages in file $1 report for the bare_pingora target.
cargo_bare_pingora_exe() {
    python3 - "$1" <<'EOF'
import json, sys
exe = ""
for line in open(sys.argv[1]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if (msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "bare_pingora"
            and msg.get("executable")):
        exe = msg["executable"]
print(exe)
EOF
}

build_bare_pingora() {
    log "building bare_pingora (cargo build --release --bench bare_pingora)"
    local json="$WORK/cargo-bare_pingora.json"
    # JSON messages on stdout; compiler warnings and errors still rendered on stderr.
    (cd "$ROOT" && cargo build --release --bench bare_pingora --message-format=json-render-diagnostics) \
        >"$json" || die "cargo build --release --bench bare_pingora failed"
    PINGORA_BIN=$(cargo_bare_pingora_exe "$json") || die "could not parse cargo's JSON output"
    [[ -n $PINGORA_BIN ]] || die "cargo reported no executable for the bare_pingora bench target"
}

PINGORA_STALE_NOTE=""
if [[ -n $PINGORA_BIN ]]; then
    # Explicit PINGORA_BIN: used as is, never built.
    [[ -f $PINGORA_BIN && -x $PINGORA_BIN ]] || die "PINGORA_BIN=$PINGORA_BIN is not an executable file"
else
    PINGORA_BIN=$(newest_bare_pingora)
    if [[ $BUILD == 1 || $BUILT_GATEHOUSE == 1 || -z $PINGORA_BIN ]]; then
        build_bare_pingora
    fi
    [[ -x $PINGORA_BIN ]] || die "bare_pingora binary not found at $PINGORA_BIN"
    if [[ -n $(find "$ROOT/benches/bare_pingora.rs" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$PINGORA_BIN" -type f 2>/dev/null | head -1) ]]; then
        PINGORA_STALE_NOTE="  WARNING: benches/bare_pingora.rs or Cargo.toml/Cargo.lock is newer than the bare_pingora binary (BUILD=1 rebuilds)"
    fi
fi
# Absolute, for the symlinks below.
PINGORA_BIN=$(cd "$(dirname "$PINGORA_BIN")" && pwd)/$(basename "$PINGORA_BIN")
GATEHOUSE_BIN=$(cd "$(dirname "$GATEHOUSE_BIN")" && pwd)/$(basename "$GATEHOUSE_BIN")
if [[ -n $BASE_BIN ]]; then
    [[ -f $BASE_BIN && -x $BASE_BIN ]] || die "BASE_BIN=$BASE_BIN is not an executable file"
    BASE_BIN=$(cd "$(dirname "$BASE_BIN")" && pwd)/$(basename "$BASE_BIN")
fi

# ---------------------------------------------------------------------------------------------
# Configs (nginx_common, nginx_http_common: benches/lib.sh). The origin runs for the whole run;
# the proxies are (re)started by start_proxies for each set of settings (worker threads, TLS).
mkdir -p "$WORK/origin/tmp" "$WORK/origin/www/b" "$WORK/nginx/tmp" "$WORK/haproxy" "$WORK/gatehouse" \
    "$WORK/pingora" "$WORK/wrk"
ln -s "$PINGORA_BIN" "$WORK/pingora/$PINGORA_PROC"   # see PINGORA_PROC
ln -s "$GATEHOUSE_BIN" "$WORK/gatehouse/$GATEHOUSE_PROC"   # see GATEHOUSE_PROC
if [[ -n $BASE_BIN ]]; then
    mkdir -p "$WORK/base"
    ln -s "$BASE_BIN" "$WORK/base/$BASE_PROC"
fi

# Response bodies of the bodies measure (/b/0 is a `return` with an empty body).
head -c 4096 /dev/zero | tr '\0' x >"$WORK/origin/www/b/4k"
head -c 65536 /dev/zero | tr '\0' x >"$WORK/origin/www/b/64k"
# The upload: POST /upload with a 64 KiB body; the origin reads it and answers 200 "ok".
cat >"$WORK/wrk/upload.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/upload"
wrk.body = string.rep("u", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
head -c 65536 /dev/zero | tr '\0' u >"$WORK/wrk/upload.body"

{
    nginx_common "$WORK/origin" 1
    cat <<EOF2
http {
$(nginx_http_common "$WORK/origin")
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    server {
        listen 127.0.0.1:$PORT_ORIGIN backlog=4096;
        location / {
            default_type text/plain;
            return 200 "hello\n";
        }
        location = /b/0 {
            default_type text/plain;
            return 200 "";
        }
        location /b/ {
            root $WORK/origin/www;
            default_type application/octet-stream;
        }
        location = /upload {
            client_max_body_size 1m;
            client_body_buffer_size 128k;
            default_type text/plain;
            return 200 "ok\n";
        }
    }
    server {
        listen 127.0.0.1:$PORT_STATUS;
        location = /status { stub_status; }
    }
}
EOF2
} >"$WORK/origin/nginx.conf"
nginx -t -q -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf" \
    2>"$WORK/origin/configtest.log" || { cat "$WORK/origin/configtest.log" >&2; die "origin nginx config invalid"; }

MAX_CLIENTS=$CONNECTIONS
for n in "$LAT_CLIENTS" "$H2_CLIENTS"; do if ((n > MAX_CLIENTS)); then MAX_CLIENTS=$n; fi; done
haproxy_maxconn "$MAX_CLIENTS"   # benches/lib.sh

# Certificates for the tls measure: one ECDSA P-256 and one RSA-2048 self-signed pair (SAN
# localhost), each used by all three TLS targets. HAProxy takes certificate and key in one file.
if wants tls; then
    make_cert ecdsa -newkey ec -pkeyopt ec_paramgen_curve:P-256
    make_cert rsa -newkey rsa:2048
fi

# Proxy configs for WORKERS worker threads (processes for nginx) and TLS certificate kind TLS_KIND
# (none: plain listeners, all four proxies; ecdsa/rsa: TLS listeners, gatehouse, pingora, haproxy).
write_proxy_configs() { # workers tls-kind
    local workers=$1 kind=$2 listener certs="" bind
    if [[ $kind == none ]]; then
        listener="  - address: 127.0.0.1:$PORT_GATEHOUSE"
        bind="bind 127.0.0.1:$PORT_HAPROXY"
    else
        listener="  - address: 127.0.0.1:$PORT_GATEHOUSE_TLS
    tls: true"
        certs="tls:
  certificates:
    - cert: $WORK/tls/$kind.crt
      key: $WORK/tls/$kind.key"
        bind="bind 127.0.0.1:$PORT_HAPROXY_TLS ssl crt $WORK/tls/$kind.pem alpn h2,http/1.1"
    fi
    cat >"$WORK/gatehouse/gatehouse.yaml" <<EOF2
server:
  threads: $workers
  work_stealing: false
  grace_period: 0s
  shutdown_timeout: 1s
  upgrade_sock: $WORK/gatehouse/upgrade.sock
  pid_file: $WORK/gatehouse/gatehouse.pid
listeners:
$listener
$certs
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
EOF2
    # The base build: the same config on its own ports and paths (plain HTTP only).
    if [[ -n $BASE_BIN && $kind == none ]]; then
        sed -e "s/:$PORT_GATEHOUSE\$/:$PORT_BASE/; s/:$PORT_ADMIN\$/:$PORT_BASE_ADMIN/; s#$WORK/gatehouse/#$WORK/base/#" \
            "$WORK/gatehouse/gatehouse.yaml" >"$WORK/base/gatehouse.yaml"
    fi
    # TLS 1.3 suites in rustls's order (AES-128-GCM first), so that HAProxy, which follows its
    # own preference, negotiates what the rustls proxies do with the same client.
    {
        haproxy_head "$WORK/haproxy" "$workers" \
            "stats socket $WORK/haproxy/stats.sock mode 600 level admin" \
            "ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
        cat <<EOF2

frontend fe
    $bind
    default_backend origin
EOF2
    } >"$WORK/haproxy/haproxy.cfg"
    {
        nginx_common "$WORK/nginx" "$workers"
        cat <<EOF2
http {
$(nginx_http_common "$WORK/nginx")
    # The 64 KiB upload stays in memory (nginx buffers a request body before proxying it).
    client_body_buffer_size 128k;
    upstream origin {
        server 127.0.0.1:$PORT_ORIGIN;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF2
    } >"$WORK/nginx/nginx.conf"

    nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        2>"$WORK/nginx/configtest.log" || { cat "$WORK/nginx/configtest.log" >&2; die "proxy nginx config invalid"; }
    haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/configtest.log" 2>&1 \
        || { cat "$WORK/haproxy/configtest.log" >&2; die "haproxy config invalid"; }
    "$GATEHOUSE_BIN" validate --config "$WORK/gatehouse/gatehouse.yaml" >"$WORK/gatehouse/validate.log" 2>&1 \
        || { cat "$WORK/gatehouse/validate.log" >&2; die "gatehouse config invalid"; }
}

# ---------------------------------------------------------------------------------------------
# Start and stop components (start, wait_answering, kill_recorded_group: benches/lib.sh).
wait_port() { wait_answering "$1" "on 127.0.0.1:$2" 15 "http://127.0.0.1:$2/"; }   # name port
wait_tls_port() { wait_answering "$1" "on 127.0.0.1:$2 (TLS)" 15 -k "https://127.0.0.1:$2/"; }   # name port
PROXY_WORKERS=0   # worker threads the running proxies were started with

start_proxies() { # workers tls-kind
    write_proxy_configs "$1" "$2"
    PROXY_WORKERS=$1
    start gatehouse "$WORK/gatehouse.log" "$WORK/gatehouse/$GATEHOUSE_PROC" --config "$WORK/gatehouse/gatehouse.yaml"
    start haproxy "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy/haproxy.cfg"
    if [[ $2 == none ]]; then
        start nginx "$WORK/nginx.log" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
        start pingora "$WORK/pingora.log" "$WORK/pingora/$PINGORA_PROC" "127.0.0.1:$PORT_PINGORA" \
            "127.0.0.1:$PORT_ORIGIN" --threads "$1"
        if [[ -n $BASE_BIN ]]; then
            start base "$WORK/base.log" "$WORK/base/$BASE_PROC" --config "$WORK/base/gatehouse.yaml"
            wait_port base $PORT_BASE
        fi
        wait_port gatehouse $PORT_GATEHOUSE
        wait_port pingora $PORT_PINGORA
        wait_port nginx $PORT_NGINX
        wait_port haproxy $PORT_HAPROXY
    else
        start pingora "$WORK/pingora.log" "$WORK/pingora/$PINGORA_PROC" "127.0.0.1:$PORT_PINGORA_TLS" \
            "127.0.0.1:$PORT_ORIGIN" --threads "$1" --tls "$WORK/tls/$2.crt" "$WORK/tls/$2.key"
        wait_tls_port gatehouse $PORT_GATEHOUSE_TLS
        wait_tls_port pingora $PORT_PINGORA_TLS
        wait_tls_port haproxy $PORT_HAPROXY_TLS
    fi
    log "proxies up: $1 worker thread(s), $([[ $2 == none ]] && echo "plain HTTP" || echo "TLS with the $2 certificate")"
}

stop_proxies() {
    local name
    for name in gatehouse base pingora nginx haproxy; do
        [[ -n ${PID_OF[$name]:-} ]] || continue
        kill_recorded_group "$WORK/$name.pgid"
        rm -f "$WORK/$name.pgid"
        unset "PID_OF[$name]"
    done
    PROXY_WORKERS=0
}

check_alive() {
    local name
    for name in "${!PID_OF[@]}"; do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            if ((COMPONENT_DIED == 0)); then
                echo "run.sh: ERROR: $name (pid ${PID_OF[$name]}) died during the benchmark; last output:" >&2
                tail -n 20 "$WORK/$name.log" >&2 || true
            fi
            COMPONENT_DIED=1
        fi
    done
}

# Pre-check of the plain targets: GET / answers 200 "hello"; with the bodies measure, /b/0, /b/4k
# and /b/64k answer 200 with 0, 4096 and 65536 bytes, and the 64 KiB POST /upload answers 200 "ok".
precheck_plain() {
    local t port code size
    for t in "${TARGETS[@]}"; do
        port=${PORT_OF[$t]}
        code=$("${CURL[@]}" -o "$WORK/precheck.$t" -w '%{http_code}' "http://127.0.0.1:$port/" 2>"$WORK/precheck.$t.err") || true
        if [[ $code != 200 ]]; then
            cat "$WORK/precheck.$t.err" >&2 || true
            die "pre-check: $t (127.0.0.1:$port) answered HTTP ${code:-none}, expected 200"
        fi
        [[ $(cat "$WORK/precheck.$t") == hello ]] || die "pre-check: $t (127.0.0.1:$port) answered 200 but not the origin's body"
        wants bodies || continue
        local path want
        for path in 0:0 4k:4096 64k:65536; do
            want=${path#*:} path=/b/${path%%:*}
            read -r code size < <("${CURL[@]}" -o /dev/null -w '%{http_code} %{size_download}\n' \
                "http://127.0.0.1:$port$path" 2>/dev/null || echo "none 0")
            [[ $code == 200 && $size == "$want" ]] || die "pre-check: $t GET $path answered HTTP $code with $size bytes, expected 200 with $want"
        done
        code=$("${CURL[@]}" -o "$WORK/precheck.$t.upload" -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
            --data-binary @"$WORK/wrk/upload.body" "http://127.0.0.1:$port/upload" 2>/dev/null) || true
        [[ $code == 200 && $(cat "$WORK/precheck.$t.upload") == ok ]] \
            || die "pre-check: $t POST /upload (64 KiB) answered HTTP ${code:-none}, expected 200 \"ok\""
    done
    log "pre-check: all ${#TARGETS[@]} targets answer 200 \"hello\"$(wants bodies && echo ", the three bodies and the upload")"
}

# Pre-check of the TLS targets: HTTPS GET / answers 200 "hello" over HTTP/1.1 and over HTTP/2.
precheck_tls() {
    local t port v code
    for t in "${TLS_TARGETS[@]}"; do
        port=${TLS_PORT_OF[$t]}
        for v in 1.1 2; do
            code=$("${CURL[@]}" -k "--http$v" -o "$WORK/precheck.tls.$t" -w '%{http_code} %{http_version}' \
                "https://127.0.0.1:$port/" 2>"$WORK/precheck.tls.$t.err") || true
            if [[ $code != "200 $v" || $(cat "$WORK/precheck.tls.$t") != hello ]]; then
                cat "$WORK/precheck.tls.$t.err" >&2 || true
                die "pre-check: $t (https://127.0.0.1:$port) over HTTP/$v answered '${code:-none}', expected 200 \"hello\" over HTTP/$v"
            fi
        done
    done
    log "pre-check: all ${#TLS_TARGETS[@]} TLS targets answer 200 \"hello\" over HTTP/1.1 and HTTP/2"
}

# One unmeasured run per target after a (re)start: wrk for WARMUP against each URL given.
warm_up() { # url...
    ((WARMUP_S > 0)) || return 0
    local url
    for url in "$@"; do
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >>"$WORK/wrk/warmup.txt" 2>&1 || true
        sleep "$COOLDOWN"
    done
    check_alive
}

RESULTS="$WORK/results.tsv"
REUSE="$WORK/reuse.tsv"
printf 'measure\tvariant\tround\ttarget\trps\tp50_ms\tp99_ms\tp999_ms\tcpu_us\trequests\tnon2xx\tsocket_errors\tconns_per_req\tnote\n' >"$RESULTS"
printf 'measure\tround\ttarget\testablished_samples\tnew_origin_conns\tmid_run_new_conns\torigin_requests\tnew_time_wait\tother_time_wait\n' >"$REUSE"

declare -A PROC_OF=([direct]=wrk [gatehouse]=$GATEHOUSE_PROC [pingora]=$PINGORA_PROC [nginx]=nginx [haproxy]=haproxy
                    [base]=$BASE_PROC)

# CPU ticks (user+sys) of the process under test: the proxy's process group; for direct, the origin's.
cpu_ticks() { # target
    if [[ $1 == direct ]]; then group_cpu_ticks "${PID_OF[origin]}"; else group_cpu_ticks "${PID_OF[$1]}"; fi
}
# CPU µs per request from two tick counts and a request count ("NA" without requests).
cpu_per_req() { # ticks0 ticks1 requests
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" \
        'BEGIN { if (n ~ /^[0-9]+$/ && n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "NA" }'
}
# TCP connections accepted machine-wide (PassiveOpens in /proc/net/snmp).
passive_opens() {
    awk '$1 == "Tcp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "PassiveOpens") c = i; h = 1 } else print $c }' /proc/net/snmp
}
now() { date +%s.%N; }

record() { # measure variant round target rps p50 p99 p999 cpu_us requests non2xx sockerr conns_per_req note
    local IFS=$'\t'
    echo "$*" >>"$RESULTS"
}

# One line per run: target, req/s, CPU per request, latency, and what else the run found.
say_run() { # target rps cpu_us latency-text extra
    printf '  %-9s %10s req/s %8s µs/req   %s%s\n' "$1" "$2" "$3" "$4" "$5"
}

# Summary of an h2load --log-file (tab-separated: start µs, status, µs to the end of the response):
# "requests non2xx p50_ms p99_ms p99.9_ms".
h2load_log_summary() { # log-file
    python3 - "$1" <<'PY'
import sys
lat, bad = [], 0
for line in open(sys.argv[1]):
    f = line.split("\t")
    if len(f) < 3:
        continue
    lat.append(int(f[2]) / 1000)
    if not f[1].startswith("2"):
        bad += 1
lat.sort()
q = lambda p: f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.3f}" if lat else "NA"
print(len(lat), bad, q(0.50), q(0.99), q(0.999))
PY
}
# failed+errored+timeout requests and the application protocol from h2load's report.
h2load_errors() { awk '/^requests:/ && !d { print $10 + $12 + $14; d = 1 }' "$1"; }
h2load_proto() { awk -F': ' '/^Application protocol:/ {print $2; exit}' "$1"; }

# Connections to the origin port held by processes named $1 (ss -p shows the owner).
established_upstream() {
    ss -Htnp state established "( dport = :$PORT_ORIGIN )" 2>/dev/null | { grep -c "((\"$1\"," || true; }
}

# "accepts requests" counters of the origin nginx (stub_status); empty if unavailable.
origin_counters() {
    "${CURL[@]}" "http://127.0.0.1:$PORT_STATUS/status" 2>/dev/null | awk 'NR == 3 {print $1, $3}' || true
}

# Client-side ports of established origin connections owned by processes other than $1 (one a
# line). Taken before a run, it tells TIME-WAIT left by another proxy closing its idle pooled
# connections apart from TIME-WAIT caused by the target of the run.
foreign_origin_ports() {
    ss -Htnp state established "( dport = :$PORT_ORIGIN )" 2>/dev/null |
        awk -v me="((\"$1\"," 'index($0, me) == 0 { n = split($3, a, ":"); print a[n] }'
}

# TIME-WAIT sockets on either end of an origin connection that entered TIME-WAIT at most $1
# seconds ago (TIME-WAIT lasts 60 s on Linux; ss -o shows the time left, in whole seconds).
# Prints "mine other": other = client port listed in file $2 (see foreign_origin_ports).
recent_time_wait() {
    ss -Htno state time-wait "( sport = :$PORT_ORIGIN or dport = :$PORT_ORIGIN )" 2>/dev/null |
        awk -v age="$1" -v origin="$PORT_ORIGIN" -v ports="$(paste -sd, "$2")" '
            BEGIN { n = split(ports, p, ","); for (i = 1; i <= n; i++) foreign[p[i]] = 1 }
            match($0, /timewait,[0-9.]+(ms|sec|min)/) {
                t = substr($0, RSTART + 9, RLENGTH - 9); v = t + 0
                if (t ~ /ms$/) v /= 1000; else if (t ~ /min$/) v *= 60
                if (60 - v > age) next
                n = split($3, l, ":"); m = split($4, r, ":")
                port = (l[n] == origin) ? r[m] : l[n]
                if (port in foreign) other++; else mine++
            }
            END { print mine + 0, other + 0 }'
}

# While wrk runs: at 25%, 50% and 75% of the run write "established accepts" lines, where
# established counts origin connections owned by process $2 and accepts is the origin's counter.
sample_during_run() { # seconds procname outfile
    local step acc
    step=$(awk -v d="$1" 'BEGIN {printf "%.2f", d / 4}')
    for _ in 1 2 3; do
        sleep "$step"
        acc=$(origin_counters | awk '{print $1}')
        echo "$(established_upstream "$2") ${acc:-NA}" >>"$3"
    done
}

# plain and threads: wrk GET / at saturation, with the upstream connection reuse checks.
run_one() { # measure round target
    local measure=$1 round=$2 t=$3 port=${PORT_OF[$3]}
    local out="$WORK/wrk/$1-r$2-$3.txt" samples="$WORK/wrk/$1-r$2-$3.samples"
    : >"$samples"
    local acc0 req0 acc1 req1 start end c0 c1
    foreign_origin_ports "${PROC_OF[$t]}" >"$WORK/wrk/$1-r$2-$3.foreign"
    read -r acc0 req0 < <(origin_counters) || true
    start=$(now)
    sample_during_run "$DUR_S" "${PROC_OF[$t]}" "$samples" &
    local sampler=$!
    c0=$(cpu_ticks "$t")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 \
        || echo "run.sh: warning: wrk exited non-zero for $t ($measure, round $round)" >&2
    c1=$(cpu_ticks "$t")
    wait "$sampler" 2>/dev/null || true
    sleep 0.2   # let closes at the end of the run reach TIME-WAIT
    end=$(now)
    read -r acc1 req1 < <(origin_counters) || true

    local rps p99 non2xx sockerr reqs cpu
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    cpu=$(cpu_per_req "$c0" "$c1" "$reqs")
    record "$measure" "${PROXY_WORKERS}t" "$round" "$t" "$rps" NA "$p99" NA "$cpu" "$reqs" "$non2xx" "$sockerr" NA ""

    # Each stub_status read is itself one accepted connection and one request: subtract them.
    local est new_conns mid_conns origin_reqs tw tw_other age
    est=$(awk '{print $1}' "$samples" | paste -sd/)
    mid_conns=$(awk 'NR == 1 {a = $2} NR == 3 {b = $2} END {
        if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a - 2; else print "NA" }' "$samples")
    age=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%d", b - a + 0.999}')
    read -r tw tw_other < <(recent_time_wait "$age" "$WORK/wrk/$1-r$2-$3.foreign")
    if [[ ${acc0:-} =~ ^[0-9]+$ && ${acc1:-} =~ ^[0-9]+$ ]]; then
        local reads
        reads=$(awk '$2 ~ /^[0-9]+$/ {n++} END {print n + 1}' "$samples")
        new_conns=$((acc1 - acc0 - reads))
        origin_reqs=$((req1 - req0 - reads))
    else
        new_conns=NA origin_reqs=NA
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$measure" "$round" "$t" "${est:-NA}" "$new_conns" "$mid_conns" \
        "$origin_reqs" "$tw" "$tw_other" >>"$REUSE"

    local errs=""
    if ((non2xx > 0)); then errs+=" non-2xx/3xx=$non2xx"; fi
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    say_run "$t" "$rps" "$cpu" "p99 $p99 ms" "$errs"
    if [[ $t == direct ]]; then
        printf '            wrk connections to origin: established≈%s; new origin connections: %s\n' \
            "${est:-NA}" "$new_conns"
    else
        local other=""
        if ((tw_other > 0)); then other=" (+$tw_other from other proxies' idle connections)"; fi
        printf '            %s upstream connections: established≈%s, new TIME-WAIT during run: %s%s; new origin connections: %s (%s mid-run), %s origin requests\n' \
            "$t" "${est:-NA}" "$tw" "$other" "$new_conns" "$mid_conns" "$origin_reqs"
    fi
}

# bodies and tls keep-alive: one wrk run at saturation, with CPU per request.
run_wrk() { # measure variant round target seconds url [wrk-args...]
    local measure=$1 variant=$2 round=$3 t=$4 secs=$5 url=$6
    shift 6
    local out="$WORK/wrk/$measure-$variant-r$round-$t.txt" c0 c1 p0 p1 a0 a1
    a0=$(origin_accepts) p0=$(passive_opens) c0=$(cpu_ticks "$t")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "$@" "$url" >"$out" 2>&1 \
        || echo "run.sh: warning: wrk exited non-zero for $t ($measure $variant, round $round)" >&2
    c1=$(cpu_ticks "$t") p1=$(passive_opens) a1=$(origin_accepts)
    local rps p99 non2xx sockerr reqs cpu errs="" conns
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    cpu=$(cpu_per_req "$c0" "$c1" "$reqs")
    # Connections accepted during the run, by the target (the origin's own accepts subtracted;
    # for direct, the target is the origin: n/a).
    conns=$((p1 - p0 - ${a1:-0} + ${a0:-0}))
    if [[ $t == direct ]]; then conns=n/a; fi
    record "$measure" "$variant" "$round" "$t" "$rps" NA "$p99" NA "$cpu" "$reqs" "$non2xx" "$sockerr" NA "conns=$conns"
    if ((non2xx > 0)); then errs+=" non-2xx/3xx=$non2xx"; fi
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    say_run "$t" "$rps" "$cpu" "p99 $p99 ms" "   client connections accepted: $conns$errs"
}

# latency: h2load at a fixed offered rate (HTTP/1.1, LAT_CLIENTS connections, --rps each).
run_rate() { # round target percent offered-rps
    local round=$1 t=$2 pct=$3 offered=$4 port=${PORT_OF[$2]}
    local out="$WORK/wrk/latency-$pct-r$round-$t.txt" logf="$WORK/wrk/latency-$pct-r$round-$t.log" c0 c1 per
    per=$(awk -v r="$offered" -v c="$LAT_CLIENTS" 'BEGIN {printf "%.3f", r / c}')
    c0=$(cpu_ticks "$t")
    h2load --h1 -c "$LAT_CLIENTS" --rps="$per" -D "$LAT_S" --log-file="$logf" "http://127.0.0.1:$port/" >"$out" 2>&1 \
        || echo "run.sh: warning: h2load exited non-zero for $t (latency $pct%, round $round)" >&2
    c1=$(cpu_ticks "$t")
    local reqs bad p50 p99 p999 rps cpu errs
    read -r reqs bad p50 p99 p999 < <(h2load_log_summary "$logf")
    rps=$(awk -v n="$reqs" -v d="$LAT_S" 'BEGIN {printf "%.0f", n / d}')
    cpu=$(cpu_per_req "$c0" "$c1" "$reqs")
    errs=$(h2load_errors "$out")
    record latency "$pct%" "$round" "$t" "$rps" "$p50" "$p99" "$p999" "$cpu" "$reqs" "$bad" "${errs:-0}" NA "offered=$offered"
    say_run "$t" "$rps" "$cpu" "p50 $p50 / p99 $p99 / p99.9 $p999 ms" "$( ((bad + ${errs:-0} > 0)) && echo "   non-2xx=$bad failed=$errs")"
}

# HAProxy's TLS counters (show info on its stats socket): "CumSslConns SslRate SslFrontendKeyRate
# SslFrontendSessionReuse_pct". SslRate counts TLS sessions per second, SslFrontendKeyRate those
# that needed a key computation (full handshakes), over the last second.
haproxy_ssl_info() {
    python3 - "$WORK/haproxy/stats.sock" <<'PY' 2>/dev/null || echo "NA NA NA NA"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"show info\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
info = dict(l.split(": ", 1) for l in data.decode().splitlines() if ": " in l)
print(*(info.get(k, "NA") for k in ("CumSslConns", "SslRate", "SslFrontendKeyRate", "SslFrontendSessionReuse_pct")))
PY
}

# tls handshakes: HS_CLIENTS parallel `openssl s_time -new` clients for TLS_S seconds. Each
# connection is a new TCP connection and a full handshake (s_time -new never offers a session),
# then one `GET / HTTP/1.0` read until the server closes. Checks: the connections accepted
# machine-wide (TCP PassiveOpens, the origin's own accepts subtracted) per completed handshake
# should be 1.00; for HAProxy, its TLS connection counter, and mid-run its full-handshake
# (key computation) rate against its TLS session rate, and its session reuse percentage.
# With `-reuse` (variant *-resumed), each client makes one full handshake and then offers the
# session (TLS 1.3: the ticket) it was last given on every new connection; s_time prints `r` for
# each connection the server resumed and `*` for each full handshake, counted into `resumed=`.
run_handshakes() { # variant round target (s_time mode: -new, or -reuse for *-resumed)
    local variant=$1 round=$2 t=$3 port=${TLS_PORT_OF[$3]} i c0 c1 p0 p1 a0 a1 t0 t1 h0 h1 mid=""
    local ssl_rate key_rate reuse mode=-new
    [[ $variant == *-resumed ]] && mode=-reuse
    local base="$WORK/wrk/tls-$variant-r$round-$t"
    a0=$(origin_accepts) p0=$(passive_opens) c0=$(cpu_ticks "$t")
    if [[ $t == haproxy ]]; then read -r h0 _ < <(haproxy_ssl_info); fi
    t0=$(now)
    local pids=()
    for i in $(seq 1 "$HS_CLIENTS"); do
        openssl s_time -connect "127.0.0.1:$port" "$mode" -time "$TLS_S" -www / \
            -ciphersuites TLS_AES_128_GCM_SHA256 >"$base.$i" 2>&1 </dev/null &
        pids+=($!)
    done
    if [[ $t == haproxy ]]; then
        sleep "$(awk -v d="$TLS_S" 'BEGIN {print d / 2}')"
        read -r _ ssl_rate key_rate reuse < <(haproxy_ssl_info)
        mid="; haproxy mid-run: TLS sessions ${ssl_rate}/s, full handshakes ${key_rate}/s, reused ${reuse}%"
    fi
    for i in "${pids[@]}"; do wait "$i" || echo "run.sh: warning: openssl s_time exited non-zero for $t ($variant, round $round)" >&2; done
    t1=$(now)
    c1=$(cpu_ticks "$t") p1=$(passive_opens) a1=$(origin_accepts)
    if [[ $t == haproxy ]]; then read -r h1 _ < <(haproxy_ssl_info); mid="; haproxy TLS connections $((h1 - h0))$mid"; fi
    local n rps cpu conns cpr bytes
    # s_time: "N connections in X.XXs; ..." (CPU time of the client), then "... bytes read per connection".
    n=$(awk '/connections in [0-9.]+s;/ {n += $1} END {print n + 0}' "$base".*)
    bytes=$(awk '/bytes read per connection/ && !b {b = $(NF - 4)} END {print b}' "$base".*)
    rps=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
    cpu=$(cpu_per_req "$c0" "$c1" "$n")
    conns=$((p1 - p0 - ${a1:-0} + ${a0:-0}))
    cpr=$(awk -v c="$conns" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "NA" }')
    local resumed=""
    if [[ $mode == -reuse ]]; then
        resumed=$(awk '/^[r*]+$/ { r += gsub(/r/, ""); f += gsub(/\*/, "") } END { printf "%.0f", (r + f) ? 100 * r / (r + f) : 0 }' "$base".*)
        mid="; resumed ${resumed}%$mid"
    fi
    record tls "$variant" "$round" "$t" "$rps" NA NA NA "$cpu" "$n" 0 0 "$cpr" "bytes/conn=${bytes:-NA}${resumed:+;resumed=$resumed}$mid"
    say_run "$t" "$rps" "$cpu" "handshakes/s; $n handshakes, $conns connections accepted ($cpr per handshake), ${bytes:-?} bytes read per connection$mid" ""
}

# tls h2: h2load over TLS with ALPN h2, H2_CLIENTS connections x H2_STREAMS concurrent streams.
run_h2() { # variant round target
    local variant=$1 round=$2 t=$3 port=${TLS_PORT_OF[$3]} c0 c1
    local out="$WORK/wrk/tls-$variant-r$round-$t.txt" logf="$WORK/wrk/tls-$variant-r$round-$t.log"
    c0=$(cpu_ticks "$t")
    h2load -c "$H2_CLIENTS" -m "$H2_STREAMS" -D "$TLS_S" --log-file="$logf" "https://127.0.0.1:$port/" >"$out" 2>&1 \
        || echo "run.sh: warning: h2load exited non-zero for $t ($variant, round $round)" >&2
    c1=$(cpu_ticks "$t")
    local reqs bad p50 p99 p999 rps cpu errs proto
    read -r reqs bad p50 p99 p999 < <(h2load_log_summary "$logf")
    rps=$(awk -v n="$reqs" -v d="$TLS_S" 'BEGIN {printf "%.0f", n / d}')
    cpu=$(cpu_per_req "$c0" "$c1" "$reqs")
    errs=$(h2load_errors "$out")
    proto=$(h2load_proto "$out")
    record tls "$variant" "$round" "$t" "$rps" "$p50" "$p99" "$p999" "$cpu" "$reqs" "$bad" "${errs:-0}" NA "alpn=${proto:-none}"
    say_run "$t" "$rps" "$cpu" "p99 $p99 ms, ALPN ${proto:-none}" "$( ((bad + ${errs:-0} > 0)) && echo "   non-2xx=$bad failed=$errs")"
    [[ $proto == h2 ]] || echo "run.sh: warning: $t negotiated '${proto:-nothing}', not h2 ($variant, round $round)" >&2
}

# ---------------------------------------------------------------------------------------------
# Measures. Within each, targets are interleaved: every round runs every variant on every target.

measure_plain() { # measure (plain|threads)
    local round t
    log "$1: GET / at saturation, ${PROXY_WORKERS} worker thread(s), $ROUNDS round(s) of $DURATION"
    for round in $(seq 1 "$ROUNDS"); do
        log "$1 round $round/$ROUNDS"
        for t in "${TARGETS[@]}"; do
            # direct is the origin, whose workers do not change: measured with plain only.
            if [[ $1 == threads && $t == direct ]]; then continue; fi
            run_one "$1" "$round" "$t"
            sleep "$COOLDOWN"
        done
        check_alive
    done
}

measure_bodies() {
    local round v t args
    log "bodies: 0 B / 4 KiB / 64 KiB responses and a 64 KiB upload, $ROUNDS round(s) of ${BODY_S}s"
    for round in $(seq 1 "$ROUNDS"); do
        for v in 0B 4KiB 64KiB upload64KiB; do
            log "bodies round $round/$ROUNDS: $v"
            for t in "${TARGETS[@]}"; do
                case $v in
                    0B) args=("http://127.0.0.1:${PORT_OF[$t]}/b/0") ;;
                    4KiB) args=("http://127.0.0.1:${PORT_OF[$t]}/b/4k") ;;
                    64KiB) args=("http://127.0.0.1:${PORT_OF[$t]}/b/64k") ;;
                    upload64KiB) args=("http://127.0.0.1:${PORT_OF[$t]}/upload" -s "$WORK/wrk/upload.lua") ;;
                esac
                run_wrk bodies "$v" "$round" "$t" "$BODY_S" "${args[@]}"
                sleep "$COOLDOWN"
            done
        done
        check_alive
    done
}

measure_latency() {
    local base round pct t offered
    # HAProxy's saturation rate: the median of this run's plain measure, else one wrk run now.
    base=$(awk -F'\t' '$1 == "plain" && $4 == "haproxy" && $5 ~ /^[0-9.]+$/ {print $5}' "$RESULTS" | sort -n |
        awk '{v[NR] = $1} END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    if [[ -z $base ]]; then
        log "latency: measuring HAProxy's saturation rate (the plain measure is not in MEASURES)"
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$PORT_HAPROXY/" >"$WORK/wrk/latency-base.txt" 2>&1 || true
        read -r base _ < <(parse_wrk "$WORK/wrk/latency-base.txt")
        [[ $base =~ ^[0-9.]+$ ]] || die "could not measure HAProxy's saturation rate (see $WORK/wrk/latency-base.txt)"
    fi
    log "latency: offered ${LAT_RATES// /\/} % of HAProxy's saturation rate ($base req/s), h2load --h1 -c $LAT_CLIENTS, $LAT_ROUNDS round(s) of ${LAT_S}s"
    for round in $(seq 1 "$LAT_ROUNDS"); do
        for pct in $LAT_RATES; do
            offered=$(awk -v b="$base" -v p="$pct" 'BEGIN {printf "%.0f", b * p / 100}')
            log "latency round $round/$LAT_ROUNDS: $pct% = $offered req/s"
            for t in "${TARGETS[@]}"; do
                run_rate "$round" "$t" "$pct" "$offered"
                sleep "$COOLDOWN"
            done
        done
        check_alive
    done
}

measure_tls() { # certificate kind (ecdsa|rsa): the TLS proxies must be running with it
    local kind=$1 round mode t
    log "tls ($kind): handshakes ($HS_CLIENTS x s_time -new$([[ $kind == ecdsa ]] && echo ", and -reuse")), keep-alive (wrk -c$CONNECTIONS), h2 (h2load -c$H2_CLIENTS -m$H2_STREAMS); $ROUNDS round(s) of ${TLS_S}s"
    # Resumption skips the certificate's signature, so one certificate kind is enough for it.
    local modes="handshake keepalive h2"
    [[ $kind == ecdsa ]] && modes="handshake resumed keepalive h2"
    for round in $(seq 1 "$ROUNDS"); do
        for mode in $modes; do
            log "tls round $round/$ROUNDS: $kind $mode"
            for t in "${TLS_TARGETS[@]}"; do
                case $mode in
                    handshake | resumed) run_handshakes "$kind-$mode" "$round" "$t" ;;
                    keepalive) run_wrk tls "$kind-$mode" "$round" "$t" "$TLS_S" "https://127.0.0.1:${TLS_PORT_OF[$t]}/" ;;
                    h2) run_h2 "$kind-$mode" "$round" "$t" ;;
                esac
                sleep "$COOLDOWN"
            done
        done
        check_alive
    done
}

# ---------------------------------------------------------------------------------------------
# Run
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src benches/bare_pingora.rs Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "Gatehouse benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  gatehouse: $GATEHOUSE_BIN ($(date -r "$GATEHOUSE_BIN" '+built %Y-%m-%d %H:%M'))"
if [[ -n $STALE_NOTE ]]; then echo "$STALE_NOTE"; fi
echo "  pingora (bare): $PINGORA_BIN ($(date -r "$PINGORA_BIN" '+built %Y-%m-%d %H:%M'))"
[[ -z $BASE_BIN ]] || echo "  gatehouse base: $BASE_BIN ($(date -r "$BASE_BIN" '+built %Y-%m-%d %H:%M'))"
if [[ -n $PINGORA_STALE_NOTE ]]; then echo "$PINGORA_STALE_NOTE"; fi
echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>&1 | head -1 | awk '{print "haproxy " $3}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')$(command -v h2load >/dev/null && h2load --version | awk '{print ", h2load " $2}'), $(openssl version | awk '{print "openssl " $2}')"
echo "  measures: $MEASURES   smoke=$SMOKE"
echo "  wrk -t$THREADS -c$CONNECTIONS --latency; rounds=$ROUNDS (latency $LAT_ROUNDS); durations: plain/threads $DURATION, bodies ${BODY_S}s, latency ${LAT_S}s, tls ${TLS_S}s; warmup=$WARMUP cooldown=${COOLDOWN}s"
echo "  worker threads: $GATEWAY_THREADS (threads measure: $THREADS2) for gatehouse server.threads, bare pingora --threads, haproxy nbthread, nginx worker_processes"
echo

log "work dir $WORK"
start origin "$WORK/origin.log" nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_port origin $PORT_ORIGIN

plain_urls() { local t; for t in "${TARGETS[@]}"; do echo "http://127.0.0.1:${PORT_OF[$t]}/"; done; }
if wants plain || wants bodies || wants latency; then
    start_proxies "$GATEWAY_THREADS" none
    precheck_plain
    mapfile -t urls < <(plain_urls)
    warm_up "${urls[@]}"
    if wants plain; then measure_plain plain; fi
    if wants bodies; then measure_bodies; fi
    if wants latency; then measure_latency; fi
    stop_proxies
fi
if wants threads; then
    start_proxies "$THREADS2" none
    precheck_plain
    mapfile -t urls < <(plain_urls)
    warm_up "${urls[@]:1}"
    measure_plain threads
    stop_proxies
fi
if wants tls; then
    for kind in ecdsa rsa; do
        start_proxies "$GATEWAY_THREADS" "$kind"
        precheck_tls
        warm_up "https://127.0.0.1:$PORT_GATEHOUSE_TLS/" "https://127.0.0.1:$PORT_PINGORA_TLS/" "https://127.0.0.1:$PORT_HAPROXY_TLS/"
        measure_tls "$kind"
        stop_proxies
    done
fi
check_alive

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$REUSE" "$CONNECTIONS" "$GATEWAY_THREADS" "$THREADS2" <<'PY'
import collections
reuse, conns, w1, w2 = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
order = ["direct", "gatehouse", "base", "pingora", "nginx", "haproxy"]
label = {"direct": "upstream direct", "gatehouse": "gatehouse", "base": "gatehouse base", "pingora": "pingora (bare)",
         "nginx": "nginx proxy", "haproxy": "haproxy proxy"}
titles = {
    "plain": f"a. plain GET / at saturation (wrk), {w1} worker thread(s)",
    "threads": f"a. plain GET / at saturation (wrk), {w2} worker threads",
    "bodies": "b. bodies: 0 B / 4 KiB / 64 KiB responses, 64 KiB POST upload (wrk)",
    "latency": "c. latency at fixed offered rates, % of HAProxy's plain saturation rate (h2load --h1 --rps)",
    "tls": "d. TLS termination: full handshakes/s (s_time -new), resumed handshakes/s (s_time -reuse), keep-alive HTTPS (wrk), HTTP/2 over TLS (h2load)",
}
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
runs = collections.defaultdict(list)   # (measure, variant, target) -> rows
variants = collections.defaultdict(list)
for r in rows:
    runs[(r["measure"], r["variant"], r["target"])].append(r)
    if r["variant"] not in variants[r["measure"]]:
        variants[r["measure"]].append(r["variant"])

def vals(rs, col):
    return [v for v in (num(r[col]) for r in rs) if v is not None]
def median(xs):
    return statistics.median(xs) if xs else None
def f0(v):
    return "n/a" if v is None else f"{v:.0f}"
def f1(v):
    return "n/a" if v is None else f"{v:.1f}"
def f2(v):
    return "n/a" if v is None else f"{v:.2f}"
def span(xs, fmt):
    return f"{fmt(min(xs))}..{fmt(max(xs))}" if xs else "n/a"
def rat(a, b):
    return a / b if a is not None and b else None
def per_round_ratios(m, v, a, b, col):
    by = lambda t: {r["round"]: num(r[col]) for r in runs.get((m, v, t), [])}
    ra, rb = by(a), by(b)
    return [ra[k] / rb[k] for k in ra if ra[k] is not None and rb.get(k)]
def errors(rs):
    e = sum(int(r["non2xx"]) for r in rs)
    s = sum(int(r["socket_errors"]) for r in rs)
    out = []
    if e:
        out.append(f"non2xx={e}")
    if s:
        out.append(f"sock={s}")
    return ",".join(out) or "0"

summary = []
for m in ["plain", "threads", "bodies", "latency", "tls"]:
    if m not in variants:
        continue
    print(f"== {titles[m]}")
    lat = m == "latency"
    if lat:
        hdr = ["rate", "target", "offered", "achieved req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/req",
               "CPU min..max", "p99 vs haproxy", "CPU vs haproxy", "errors"]
    else:
        hdr = ["variant", "target", "req/s", "req/s min..max", "CPU µs/req", "CPU min..max", "p99 ms",
               "req/s vs haproxy", "CPU vs haproxy", "errors"]
        if m == "tls":
            hdr.append("check")
    table, notes = [], []
    for v in variants[m]:
        hap = runs.get((m, v, "haproxy"), [])
        h_rps, h_cpu, h_p99 = median(vals(hap, "rps")), median(vals(hap, "cpu_us")), median(vals(hap, "p99_ms"))
        ratios = {}
        for t in order:
            rs = runs.get((m, v, t))
            if not rs:
                continue
            rps_l, cpu_l = vals(rs, "rps"), vals(rs, "cpu_us")
            rps_m, cpu_m, p99_m = median(rps_l), median(cpu_l), median(vals(rs, "p99_ms"))
            ratios[t] = (rat(p99_m, h_p99) if lat else rat(rps_m, h_rps), rat(cpu_m, h_cpu))
            if lat:
                offered = rs[0]["note"].replace("offered=", "")
                table.append([v, label[t], offered, f0(rps_m), f2(median(vals(rs, "p50_ms"))), f2(p99_m),
                              f2(median(vals(rs, "p999_ms"))), f1(cpu_m), span(cpu_l, f1),
                              f2(ratios[t][0]), f2(ratios[t][1]), errors(rs)])
            else:
                line = [v, label[t], f0(rps_m), span(rps_l, f0), f1(cpu_m), span(cpu_l, f1), f2(p99_m),
                        f2(ratios[t][0]), f2(ratios[t][1]), errors(rs)]
                if m == "tls":
                    if v.endswith("handshake") or v.endswith("resumed"):
                        c = vals(rs, "conns_per_req")
                        check = f"conns/handshake {span(c, f2)}"
                        if v.endswith("resumed"):
                            got = [n.split("=", 1)[1] for r in rs for n in r["note"].split(";") if n.startswith("resumed=")]
                            check += f", resumed {'/'.join(got)}%"
                        line.append(check)
                    elif v.endswith("h2"):
                        line.append("alpn " + "/".join(sorted({r["note"].replace("alpn=", "") for r in rs})))
                    else:
                        line.append("conns " + "/".join(r["note"].replace("conns=", "") for r in rs))
                table.append(line)
        gp = per_round_ratios(m, v, "gatehouse", "pingora", "cpu_us")
        g_cpu = median(vals(runs.get((m, v, "gatehouse"), []), "cpu_us"))
        p_cpu = median(vals(runs.get((m, v, "pingora"), []), "cpu_us"))
        g_rps = median(vals(runs.get((m, v, "gatehouse"), []), "rps"))
        p_rps = median(vals(runs.get((m, v, "pingora"), []), "rps"))
        gp_text = f"{f2(rat(g_cpu, p_cpu))} ({span(gp, f2)})"
        notes.append(f"  {v}: gatehouse/pingora CPU/req = {gp_text}, req/s = {f2(rat(g_rps, p_rps))}")
        if runs.get((m, v, "base")):
            gb = per_round_ratios(m, v, "gatehouse", "base", "cpu_us")
            b_cpu = median(vals(runs[(m, v, "base")], "cpu_us"))
            notes.append(f"  {v}: gatehouse/base CPU/req = {f2(rat(g_cpu, b_cpu))} ({span(gb, f2)})")
        summary.append([m, v] + [f2(ratios.get(t, (None, None))[i]) for t in ("gatehouse", "pingora", "nginx") for i in (0, 1)]
                       + [gp_text])
    print_table(hdr, table, left=(0, 1))
    print("gatehouse/pingora (and /base) per variant (ratio of medians; min..max of the per-round ratios):")
    for n in notes:
        print(n)
    if m in ("plain", "threads"):
        print(f"upstream connection reuse (per run; a reusing proxy holds <= ~{conns} connections and opens none mid-run):")
        ru = [r for r in csv.DictReader(open(reuse), delimiter="\t") if r["measure"] == m]
        ints = lambda xs: [int(x) for x in xs if x.lstrip("-").isdigit()]
        for t in order[1:]:
            tr = [r for r in ru if r["target"] == t]
            if not tr:
                continue
            est = ints(x for r in tr for x in r["established_samples"].split("/"))
            newc = ints(r["new_origin_conns"] for r in tr)
            reqs = ints(r["origin_requests"] for r in tr)
            est_s = f"{min(est)}..{max(est)}" if est else "n/a"
            per = f"{sum(reqs) / sum(newc):.0f}" if newc and sum(newc) > 0 else "all"
            print(f"  {label[t]:<14} established {est_s}; new origin connections/run "
                  f"{'/'.join(r['new_origin_conns'] for r in tr)} (mid-run {'/'.join(r['mid_run_new_conns'] for r in tr)}); "
                  f"new TIME-WAIT/run {'/'.join(r['new_time_wait'] for r in tr)}; origin requests per new connection: {per}")
    print()

print("== Ratios against HAProxy (medians over rounds; latency rows compare p99 instead of req/s)")
print_table(["measure", "variant", "gatehouse req/s", "gatehouse CPU/req", "pingora req/s", "pingora CPU/req",
             "nginx req/s", "nginx CPU/req", "gatehouse/pingora CPU/req (min..max)"], summary, left=(0, 1))
PY

echo
echo "elapsed: $((SECONDS / 60))m$((SECONDS % 60))s"
if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $REUSE, $WORK/wrk/"
fi

if ((COMPONENT_DIED)); then
    die "a component died during the benchmark (see above); numbers after that point are not valid"
fi
exit 0
