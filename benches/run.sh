#!/usr/bin/env bash
# Gatehouse benchmark runner: gatehouse vs a bare Pingora proxy vs nginx vs HAProxy as plain
# HTTP/1.1 reverse proxies in front of the same nginx origin, driven by the same wrk command,
# interleaved over several rounds.
# See benches/README.md for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=50  THREADS=1 (wrk)  GATEWAY_THREADS=1
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   GATEHOUSE_BIN=path (default target/release/gatehouse; built if missing)  BUILD=1 (always
#   run `cargo build --release --workspace --bins` and `cargo build --release --bench bare_pingora` first)
#   PINGORA_BIN=path (bare Pingora proxy; default: the newest target/release/deps/bare_pingora-*,
#   built if missing or whenever gatehouse is built; an explicit path is used as is, never built)
#   KEEP_WORKDIR=1 (keep configs, logs and raw wrk output)
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
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
GATEWAY_THREADS=${GATEWAY_THREADS:-1}
WARMUP=${WARMUP:-2s}
COOLDOWN=${COOLDOWN:-1}
SMOKE=${SMOKE:-0}
BUILD=${BUILD:-0}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
PINGORA_BIN=${PINGORA_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi

# Fixed loopback ports.
PORT_ORIGIN=18000      # nginx origin ("hello\n")
PORT_STATUS=18001      # nginx origin stub_status (connection counters)
PORT_GATEHOUSE=18080
PORT_ADMIN=19090       # gatehouse admin
PORT_NGINX=18081
PORT_HAPROXY=18082
PORT_PINGORA=18083     # bare Pingora proxy (benches/bare_pingora.rs)
ALL_PORTS=("$PORT_ORIGIN" "$PORT_STATUS" "$PORT_GATEHOUSE" "$PORT_ADMIN" "$PORT_NGINX" "$PORT_HAPROXY"
           "$PORT_PINGORA")

# Targets in the order they run within a round (interleaved).
TARGETS=(direct gatehouse pingora nginx haproxy)
declare -A PORT_OF=([direct]=$PORT_ORIGIN [gatehouse]=$PORT_GATEHOUSE [pingora]=$PORT_PINGORA
                    [nginx]=$PORT_NGINX [haproxy]=$PORT_HAPROXY)

# The bare Pingora binary is started through a symlink with this name in the work dir, so its
# process name (/proc/PID/comm, what ps and ss -p show) is this fixed string whatever the real
# file is called (cargo names it bare_pingora-<hash>, which comm would truncate to 15 chars).
PINGORA_PROC=bare_pingora

check_options GATEWAY_THREADS   # sets DUR_S, WARMUP_S
require_tools "" wrk nginx haproxy curl ss python3 setsid awk

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 2)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh)
WORK_PREFIX=gh-bench
RUN_KIND="benchmark"
SERVER_PROCS="nginx|haproxy|gatehouse|$PINGORA_PROC"
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
PINGORA_BIN=$(cd "$(dirname "$PINGORA_BIN")" && pwd)/$(basename "$PINGORA_BIN")   # absolute, for the symlink

# ---------------------------------------------------------------------------------------------
# Configs (nginx_common, nginx_http_common: benches/lib.sh)
mkdir -p "$WORK/origin/tmp" "$WORK/nginx/tmp" "$WORK/haproxy" "$WORK/gatehouse" "$WORK/pingora" "$WORK/wrk"
ln -s "$PINGORA_BIN" "$WORK/pingora/$PINGORA_PROC"   # see PINGORA_PROC

{
    nginx_common "$WORK/origin" 1
    cat <<EOF
http {
$(nginx_http_common "$WORK/origin")
    server {
        listen 127.0.0.1:$PORT_ORIGIN backlog=4096;
        location / {
            default_type text/plain;
            return 200 "hello\n";
        }
    }
    server {
        listen 127.0.0.1:$PORT_STATUS;
        location = /status { stub_status; }
    }
}
EOF
} >"$WORK/origin/nginx.conf"

{
    nginx_common "$WORK/nginx" 1
    cat <<EOF
http {
$(nginx_http_common "$WORK/nginx")
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
EOF
} >"$WORK/nginx/nginx.conf"

# HAProxy needs about 2 fds per connection; stay within the fd limit.
FD_LIMIT=$(ulimit -n)
[[ $FD_LIMIT =~ ^[0-9]+$ ]] || FD_LIMIT=65536
HAPROXY_MAXCONN=$(((FD_LIMIT - 200) / 2))
if ((HAPROXY_MAXCONN > 10000)); then HAPROXY_MAXCONN=10000; fi
((HAPROXY_MAXCONN >= CONNECTIONS + 100)) || die "fd limit $FD_LIMIT too low for CONNECTIONS=$CONNECTIONS (raise ulimit -n)"

cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
    pidfile $WORK/haproxy/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout http-request 10s

frontend fe
    bind 127.0.0.1:$PORT_HAPROXY
    default_backend origin

backend origin
    server origin1 127.0.0.1:$PORT_ORIGIN
EOF

cat >"$WORK/gatehouse/gatehouse.yaml" <<EOF
server:
  threads: $GATEWAY_THREADS
  work_stealing: false
  grace_period: 0s
  shutdown_timeout: 1s
  upgrade_sock: $WORK/gatehouse/upgrade.sock
  pid_file: $WORK/gatehouse/gatehouse.pid
listeners:
  - address: 127.0.0.1:$PORT_GATEHOUSE
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

nginx -t -q -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf" \
    2>"$WORK/origin/configtest.log" || { cat "$WORK/origin/configtest.log" >&2; die "origin nginx config invalid"; }
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
    2>"$WORK/nginx/configtest.log" || { cat "$WORK/nginx/configtest.log" >&2; die "proxy nginx config invalid"; }
haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/configtest.log" 2>&1 \
    || { cat "$WORK/haproxy/configtest.log" >&2; die "haproxy config invalid"; }
"$GATEHOUSE_BIN" validate --config "$WORK/gatehouse/gatehouse.yaml" >"$WORK/gatehouse/validate.log" 2>&1 \
    || { cat "$WORK/gatehouse/validate.log" >&2; die "gatehouse config invalid"; }

# ---------------------------------------------------------------------------------------------
# Start components (start, wait_answering: benches/lib.sh).
wait_port() { wait_answering "$1" "on 127.0.0.1:$2" 15 "http://127.0.0.1:$2/"; }   # name port

log "work dir $WORK"
start origin "$WORK/origin.log" nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_port origin $PORT_ORIGIN
start gatehouse "$WORK/gatehouse.log" "$GATEHOUSE_BIN" --config "$WORK/gatehouse/gatehouse.yaml"
start nginx "$WORK/nginx.log" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
start haproxy "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy/haproxy.cfg"
start pingora "$WORK/pingora.log" "$WORK/pingora/$PINGORA_PROC" "127.0.0.1:$PORT_PINGORA" "127.0.0.1:$PORT_ORIGIN"
wait_port gatehouse $PORT_GATEHOUSE
wait_port pingora $PORT_PINGORA
wait_port nginx $PORT_NGINX
wait_port haproxy $PORT_HAPROXY
log "all components up (origin :$PORT_ORIGIN, gatehouse :$PORT_GATEHOUSE, pingora :$PORT_PINGORA, nginx :$PORT_NGINX, haproxy :$PORT_HAPROXY)"

# ---------------------------------------------------------------------------------------------
# Pre-check: every target answers GET / with 200 and the origin's body.
for t in "${TARGETS[@]}"; do
    port=${PORT_OF[$t]}
    code=$("${CURL[@]}" -o "$WORK/precheck.$t" -w '%{http_code}' "http://127.0.0.1:$port/" 2>"$WORK/precheck.$t.err") || true
    if [[ $code != 200 ]]; then
        cat "$WORK/precheck.$t.err" >&2 || true
        die "pre-check: $t (127.0.0.1:$port) answered HTTP ${code:-none}, expected 200"
    fi
    if [[ $(cat "$WORK/precheck.$t") != hello ]]; then
        die "pre-check: $t (127.0.0.1:$port) answered 200 but not the origin's body"
    fi
done
log "pre-check: all ${#TARGETS[@]} targets answer 200 \"hello\""

# ---------------------------------------------------------------------------------------------
# Measurement helpers

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

check_alive() {
    local name
    for name in origin gatehouse pingora nginx haproxy; do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            if ((COMPONENT_DIED == 0)); then
                echo "run.sh: ERROR: $name (pid ${PID_OF[$name]}) died during the benchmark; last output:" >&2
                tail -n 20 "$WORK/$name.log" >&2 || true
            fi
            COMPONENT_DIED=1
        fi
    done
}

RESULTS="$WORK/results.tsv"
REUSE="$WORK/reuse.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\n' >"$RESULTS"
printf 'round\ttarget\testablished_samples\tnew_origin_conns\tmid_run_new_conns\torigin_requests\tnew_time_wait\tother_time_wait\n' >"$REUSE"

declare -A PROC_OF=([direct]=wrk [gatehouse]=gatehouse [pingora]=$PINGORA_PROC [nginx]=nginx [haproxy]=haproxy)

run_one() { # round target
    local round=$1 t=$2 port=${PORT_OF[$2]}
    local out="$WORK/wrk/r$1-$2.txt" samples="$WORK/wrk/r$1-$2.samples"
    : >"$samples"
    local acc0 req0 acc1 req1 start end
    foreign_origin_ports "${PROC_OF[$t]}" >"$WORK/wrk/r$1-$2.foreign"
    read -r acc0 req0 < <(origin_counters) || true
    start=$(date +%s.%N)
    sample_during_run "$DUR_S" "${PROC_OF[$t]}" "$samples" &
    local sampler=$!
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 \
        || echo "run.sh: warning: wrk exited non-zero for $t (round $round)" >&2
    wait "$sampler" 2>/dev/null || true
    sleep 0.2   # let closes at the end of the run reach TIME-WAIT
    end=$(date +%s.%N)
    read -r acc1 req1 < <(origin_counters) || true

    local rps p99 non2xx sockerr
    read -r rps p99 non2xx sockerr _ < <(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" >>"$RESULTS"

    # Each stub_status read is itself one accepted connection and one request: subtract them.
    local est new_conns mid_conns origin_reqs tw tw_other age
    est=$(awk '{print $1}' "$samples" | paste -sd/)
    mid_conns=$(awk 'NR == 1 {a = $2} NR == 3 {b = $2} END {
        if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) print b - a - 2; else print "NA" }' "$samples")
    age=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%d", b - a + 0.999}')
    read -r tw tw_other < <(recent_time_wait "$age" "$WORK/wrk/r$1-$2.foreign")
    if [[ ${acc0:-} =~ ^[0-9]+$ && ${acc1:-} =~ ^[0-9]+$ ]]; then
        local reads
        reads=$(awk '$2 ~ /^[0-9]+$/ {n++} END {print n + 1}' "$samples")
        new_conns=$((acc1 - acc0 - reads))
        origin_reqs=$((req1 - req0 - reads))
    else
        new_conns=NA origin_reqs=NA
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "${est:-NA}" "$new_conns" "$mid_conns" \
        "$origin_reqs" "$tw" "$tw_other" >>"$REUSE"

    local errs=""
    if ((non2xx > 0)); then errs+=" non-2xx/3xx=$non2xx"; fi
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    printf '  %-9s %10s req/s   p99 %8s ms%s\n' "$t" "$rps" "$p99" "$errs"
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

# ---------------------------------------------------------------------------------------------
# Run
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src benches/bare_pingora.rs Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "Gatehouse benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  gatehouse: $GATEHOUSE_BIN ($(date -r "$GATEHOUSE_BIN" '+built %Y-%m-%d %H:%M'), $GATEWAY_THREADS thread(s))"
if [[ -n $STALE_NOTE ]]; then echo "$STALE_NOTE"; fi
echo "  pingora (bare): $PINGORA_BIN ($(date -r "$PINGORA_BIN" '+built %Y-%m-%d %H:%M'), 1 thread)"
if [[ -n $PINGORA_STALE_NOTE ]]; then echo "$PINGORA_STALE_NOTE"; fi
echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>&1 | head -1 | awk '{print "haproxy " $3}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency   rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE"
echo

if ((WARMUP_S > 0)); then
    log "warm-up: ${WARMUP} per target"
    for t in "${TARGETS[@]}"; do
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:${PORT_OF[$t]}/" >"$WORK/wrk/warmup-$t.txt" 2>&1 || true
        sleep "$COOLDOWN"
    done
    check_alive
fi

run_rounds

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$REUSE" "$CONNECTIONS" <<'EOF'
reuse, conns = sys.argv[2], int(sys.argv[3])
order = ["direct", "gatehouse", "pingora", "nginx", "haproxy"]
label = {"direct": "upstream direct", "gatehouse": "gatehouse", "pingora": "pingora (bare)",
         "nginx": "nginx proxy", "haproxy": "haproxy proxy"}

hdr = ["target", "median req/s", "median p99 ms", "vs haproxy", "vs direct", "req/s min..max", "errors"]
table = []
for t in order:
    spread = f"{min(rps[t]):.0f}..{max(rps[t]):.0f}" if rps.get(t) else "n/a"
    errs = []
    if non2xx.get(t):
        errs.append(f"non2xx={non2xx[t]}")
    if sockerr.get(t):
        errs.append(f"sock={sockerr[t]}")
    table.append([label[t],
                  f"{med[t]:.0f}" if t in med else "n/a",
                  f"{medp[t]:.2f}" if t in medp else "n/a",
                  ratio(t, "haproxy"), ratio(t, "direct"), spread, ",".join(errs) or "0"])
print_table(hdr, table)

# Upstream connection reuse, per proxy.
print()
print(f"upstream connection reuse (per run; a reusing proxy holds <= ~{conns} connections and opens none mid-run):")
ru = list(csv.DictReader(open(reuse), delimiter="\t"))
ints = lambda xs: [int(x) for x in xs if x.lstrip("-").isdigit()]
for t in order[1:]:
    runs = [r for r in ru if r["target"] == t]
    est = ints(x for r in runs for x in r["established_samples"].split("/"))
    newc = ints(r["new_origin_conns"] for r in runs)
    reqs = ints(r["origin_requests"] for r in runs)
    est_s = f"{min(est)}..{max(est)}" if est else "n/a"
    per = f"{sum(reqs) / sum(newc):.0f}" if newc and sum(newc) > 0 else "all"
    print(f"  {label[t]:<14} established {est_s}; new origin connections/run "
          f"{'/'.join(r['new_origin_conns'] for r in runs)} (mid-run {'/'.join(r['mid_run_new_conns'] for r in runs)}); "
          f"new TIME-WAIT/run {'/'.join(r['new_time_wait'] for r in runs)}; origin requests per new connection: {per}")

print()
print(f"gatehouse/haproxy = {ratio('gatehouse', 'haproxy')}")
print(f"gatehouse/pingora = {ratio('gatehouse', 'pingora')}")
EOF

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $REUSE, $WORK/wrk/"
fi

if ((COMPONENT_DIED)); then
    die "a component died during the benchmark (see above); numbers after that point are not valid"
fi
exit 0
