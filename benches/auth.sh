#!/usr/bin/env bash
# Authenticated-path benchmark: the gateway verifying an RS256 access token (verified-token cache
# on, and once with it off) and injecting X-User-ID / X-User-Roles, beside HAProxy 2.6 doing the
# same job with jwt_verify, and beside both proxies' plain path. Same wrk command (same token)
# for every target, interleaved over several rounds; req/s and the proxy's CPU µs per request.
# See benches/README.md ("auth.sh") for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=50  THREADS=1 (wrk)  GATEWAY_THREADS=1
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   GATEHOUSE_BIN=path, IDENTITY_BIN=path (default: `cargo build --release --workspace --bins` is run, a no-op when
#   up to date, and target/release/ is used; when both are given, nothing is built)
#   KEEP_WORKDIR=1 (keep configs, keys, logs, metrics and raw wrk output)
#
# Exit status: 0 on success; 1 if a build fails, a component fails its config check or does not
# start, the pre-check fails (a target does not answer 200 with the token, 401 without it or with
# a forged signature, or the upstream does not see the verified identity), a run gets non-2xx
# answers, or a component dies; 2 on bad options. Never non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=auth.sh   # for messages, and to recognise a live run (benches/lib.sh)
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
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-}
IDENTITY_BIN=${IDENTITY_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi

# Fixed loopback ports (run.sh uses 18000-18083 and 19090, identity.sh 18400-18411, authz.sh 185xx).
PORT_ORIGIN=18600         # nginx origin: "hello\n"; /whoami echoes the identity headers it got
PORT_STATUS=18601         # same nginx, stub_status (connection counters)
PORT_ISSUER=18610         # gatehouse-identity: /token, discovery, /jwks.json
PORT_ISSUER_ADMIN=18611
PORT_GH_PLAIN=18620       # gatehouse, route without auth
PORT_GH_JWT=18621         # gatehouse, auth required, verified-token cache on
PORT_GH_NOCACHE=18622     # gatehouse, auth required, auth.verified_token_cache: 0
PORT_GH_PLAIN_ADMIN=18630
PORT_GH_JWT_ADMIN=18631
PORT_GH_NOCACHE_ADMIN=18632
PORT_HAPROXY_JWT=18640    # haproxy: jwt_verify + claims + stick-table + identity headers
PORT_HAPROXY=18641        # haproxy: plain proxy
ALL_PORTS=("$PORT_ORIGIN" "$PORT_STATUS" "$PORT_ISSUER" "$PORT_ISSUER_ADMIN" "$PORT_GH_PLAIN" "$PORT_GH_JWT"
           "$PORT_GH_NOCACHE" "$PORT_GH_PLAIN_ADMIN" "$PORT_GH_JWT_ADMIN" "$PORT_GH_NOCACHE_ADMIN"
           "$PORT_HAPROXY_JWT" "$PORT_HAPROXY")

# Targets in the order they run within a round (interleaved). Each is its own process, so the
# CPU time a process spends over a run is that target's alone.
TARGETS=(gatehouse gatehouse-jwt gatehouse-jwt-nocache haproxy haproxy-jwt)
declare -A PORT_OF=([gatehouse]=$PORT_GH_PLAIN [gatehouse-jwt]=$PORT_GH_JWT
                    [gatehouse-jwt-nocache]=$PORT_GH_NOCACHE [haproxy]=$PORT_HAPROXY
                    [haproxy-jwt]=$PORT_HAPROXY_JWT)
# Targets that require a token (the others are the plain paths).
declare -A NEEDS_TOKEN=([gatehouse-jwt]=1 [gatehouse-jwt-nocache]=1 [haproxy-jwt]=1)

# The token's issuer, audience and client (the secret is for this throwaway config only).
ISSUER_URL="http://127.0.0.1:$PORT_ISSUER"
AUDIENCE=bench-api
CLIENT=bench-svc SECRET=bench-svc-secret
# The issuer's process name as /proc/PID/comm shows it: truncated to 15 chars.
IDENTITY_PROC=gatehouse-ident

check_options GATEWAY_THREADS   # sets DUR_S, WARMUP_S
require_tools " (scripts/setup.sh bench installs them)" wrk nginx haproxy openssl curl ss python3 setsid awk
CLK_TCK=$(getconf CLK_TCK)

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 5)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh)
WORK_PREFIX=gh-auth-bench
RUN_KIND="auth benchmark"
SERVER_PROCS="nginx|haproxy|gatehouse|$IDENTITY_PROC"
# SIGTERM: HAProxy takes SIGINT as a soft stop that waits for idle keep-alive connections; on
# SIGTERM it, nginx and the gateways (grace_period 0s) stop at once, and the issuer after its
# 2 s grace period. SIGKILL after 5 s.
STOP_SIGNAL=TERM STOP_WAIT=50
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build: `cargo build --release --workspace --bins` unless both binaries are given (a no-op when they are up to
# date; it waits if another cargo holds the lock). Always, not only when missing: a binary older
# than the auth code would not know `auth:`. The whole workspace, not `-p <package>`: cargo
# unifies features over the packages selected, so a `-p` build right after the workspace build
# that CI makes can rebuild the shared crates and the binary.
if [[ -z $GATEHOUSE_BIN || -z $IDENTITY_BIN ]]; then
    log "building (cargo build --release --workspace --bins)"
    (cd "$ROOT" && cargo build --release --workspace --bins) || die "cargo build --release --workspace --bins failed"
fi
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
IDENTITY_BIN=${IDENTITY_BIN:-$ROOT/target/release/gatehouse-identity}
for bin in "$GATEHOUSE_BIN" "$IDENTITY_BIN"; do
    [[ -f $bin && -x $bin ]] || die "$bin is not an executable file"
done

# ---------------------------------------------------------------------------------------------
# The issuer, started first: the token and the public key go into the proxies' configs.
mkdir -p "$WORK/identity" "$WORK/origin/tmp" "$WORK/haproxy" "$WORK/haproxy-jwt" "$WORK/wrk" \
    "$WORK/gatehouse" "$WORK/gatehouse-jwt" "$WORK/gatehouse-jwt-nocache"

# The token must outlive the whole run (start_token_issuer, fetch_bench_token, issuer_public_key:
# benches/lib.sh).
TOKEN_TTL_S=$(token_ttl_seconds)
log "work dir $WORK"
start_token_issuer "$PORT_ISSUER" "$PORT_ISSUER_ADMIN" "$TOKEN_TTL_S"
fetch_bench_token
PUBKEY="$WORK/haproxy-jwt/issuer-$TOKEN_KID.pub.pem"
issuer_public_key "$PUBKEY"

# ---------------------------------------------------------------------------------------------
# Configs (nginx_common, nginx_http_common: benches/lib.sh)

# The origin answers "hello\n" everywhere; /whoami (pre-check only) echoes what identity
# headers it received, including a client-written one that every proxy must have removed.
{
    nginx_common "$WORK/origin" 1
    cat <<EOF
http {
$(nginx_http_common "$WORK/origin")
    server {
        listen 127.0.0.1:$PORT_ORIGIN backlog=4096;
        location = /whoami {
            default_type text/plain;
            return 200 "x-user-id=\$http_x_user_id x-user-roles=\$http_x_user_roles x-jwt-email=\$http_x_jwt_email x-user-forged=\$http_x_user_forged\n";
        }
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

# Three gateways, one per target: the cache size is a process-wide key (auth.verified_token_cache),
# and one process per target keeps each run's CPU time its own. Same settings as run.sh.
gatehouse_yaml() { # name port admin-port route-auth(yes/no) token-cache
    local dir="$WORK/$1"
    cat <<EOF
server:
  threads: $GATEWAY_THREADS
  work_stealing: false
  grace_period: 0s
  shutdown_timeout: 1s
  upgrade_sock: $dir/upgrade.sock
  pid_file: $dir/gatehouse.pid
listeners:
  - address: 127.0.0.1:$2
admin:
  address: 127.0.0.1:$3
access_log:
  format: off
upstreams:
  origin:
    targets: ["127.0.0.1:$PORT_ORIGIN"]
EOF
    if [[ $4 == yes ]]; then
        cat <<EOF
auth:
  verified_token_cache: $5
  issuers:
    bench:
      issuer: $ISSUER_URL
      audiences: [$AUDIENCE]
      algorithms: [RS256]
      token_types: [at+jwt]
routes:
  - name: api
    match:
      path_prefix: /
    upstream: origin
    auth:
      mode: required
      issuers: [bench]
EOF
    else
        cat <<EOF
routes:
  - name: all
    match:
      path_prefix: /
    upstream: origin
EOF
    fi
}
gatehouse_yaml gatehouse "$PORT_GH_PLAIN" "$PORT_GH_PLAIN_ADMIN" no >"$WORK/gatehouse/gatehouse.yaml"
gatehouse_yaml gatehouse-jwt "$PORT_GH_JWT" "$PORT_GH_JWT_ADMIN" yes 10000 >"$WORK/gatehouse-jwt/gatehouse.yaml"
gatehouse_yaml gatehouse-jwt-nocache "$PORT_GH_NOCACHE" "$PORT_GH_NOCACHE_ADMIN" yes 0 \
    >"$WORK/gatehouse-jwt-nocache/gatehouse.yaml"

# HAProxy (haproxy_maxconn, haproxy_head, haproxy_jwt_frontend: benches/lib.sh).
haproxy_maxconn "$CONNECTIONS"
{
    haproxy_head "$WORK/haproxy"
    cat <<EOF

frontend fe
    bind 127.0.0.1:$PORT_HAPROXY
    default_backend origin
EOF
} >"$WORK/haproxy/haproxy.cfg"

# The same job as the gateway's route: see haproxy_jwt_frontend. The subject is tracked, never
# used to refuse.
{
    haproxy_head "$WORK/haproxy-jwt"
    haproxy_jwt_frontend fe_jwt "$PORT_HAPROXY_JWT" "$PUBKEY" 10s
} >"$WORK/haproxy-jwt/haproxy.cfg"

nginx -t -q -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf" \
    2>"$WORK/origin/configtest.log" || { cat "$WORK/origin/configtest.log" >&2; die "origin nginx config invalid"; }
for h in haproxy haproxy-jwt; do
    haproxy -c -q -f "$WORK/$h/haproxy.cfg" >"$WORK/$h/configtest.log" 2>&1 \
        || { cat "$WORK/$h/configtest.log" >&2; die "$h config invalid"; }
done
for g in gatehouse gatehouse-jwt gatehouse-jwt-nocache; do
    "$GATEHOUSE_BIN" validate --config "$WORK/$g/gatehouse.yaml" >"$WORK/$g/validate.log" 2>&1 \
        || { cat "$WORK/$g/validate.log" >&2; die "$g config invalid"; }
done

# ---------------------------------------------------------------------------------------------
# Start components (start, wait_answering: benches/lib.sh).
start origin "$WORK/origin.log" nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_answering origin "on 127.0.0.1:$PORT_ORIGIN" 15 -f "http://127.0.0.1:$PORT_ORIGIN/"
declare -A ADMIN_OF=([gatehouse]=$PORT_GH_PLAIN_ADMIN [gatehouse-jwt]=$PORT_GH_JWT_ADMIN
                     [gatehouse-jwt-nocache]=$PORT_GH_NOCACHE_ADMIN)
for g in gatehouse gatehouse-jwt gatehouse-jwt-nocache; do
    start "$g" "$WORK/$g.log" "$GATEHOUSE_BIN" --config "$WORK/$g/gatehouse.yaml"
done
for h in haproxy haproxy-jwt; do
    start "$h" "$WORK/$h.log" haproxy -db -f "$WORK/$h/haproxy.cfg"
done
# /readyz answers 200 once every issuer's key set is in (the plain gateway has none to wait for).
for g in gatehouse gatehouse-jwt gatehouse-jwt-nocache; do
    wait_answering "$g" "ready (admin /readyz)" 15 -f "http://127.0.0.1:${ADMIN_OF[$g]}/readyz"
done
for h in haproxy haproxy-jwt; do
    wait_answering "$h" "on 127.0.0.1:${PORT_OF[$h]}" 15 "http://127.0.0.1:${PORT_OF[$h]}/"
done
log "all components up (origin :$PORT_ORIGIN, issuer :$PORT_ISSUER, gatehouse :$PORT_GH_PLAIN/:$PORT_GH_JWT/:$PORT_GH_NOCACHE, haproxy :$PORT_HAPROXY/:$PORT_HAPROXY_JWT)"

# ---------------------------------------------------------------------------------------------
# Pre-check. A benchmark of 401s measures nothing, and one of a proxy that lets anything through
# measures no verification: every target must answer GET / with the token 200 "hello"; those
# that require a token must answer 401 without one and with a forged signature, and their
# upstream must see the verified identity and not a client-written X-User-* header.
AUTH_HEADER="@$WORK/auth.header"       # curl -H @file: the token stays off command lines
FORGED_HEADER="@$WORK/forged.header"
EXPECT_WHOAMI="x-user-id=$TOKEN_SUB x-user-roles=$TOKEN_ROLES x-jwt-email= x-user-forged="


log "pre-check (token: $TOKEN_ALG typ=$TOKEN_TYP kid=${TOKEN_KID:0:12}… sub=$TOKEN_SUB roles=$TOKEN_ROLES, $TOKEN_BYTES bytes, valid ${TOKEN_TTL_S}s)"
for t in "${TARGETS[@]}"; do
    url="http://127.0.0.1:${PORT_OF[$t]}"
    code=$(probe "$t" token -H "$AUTH_HEADER" "$url/")
    [[ $code == 200 ]] || precheck_fail "$t" "GET / with the token answered HTTP ${code:-none}, expected 200"
    [[ $(cat "$WORK/precheck.$t.token") == hello ]] || precheck_fail "$t" "answered 200 but not the origin's body"
    if [[ -z ${NEEDS_TOKEN[$t]:-} ]]; then
        printf '  %-22s token 200\n' "$t"
        continue
    fi
    code=$(probe "$t" none "$url/")
    [[ $code == 401 ]] || precheck_fail "$t" "GET / without a token answered HTTP ${code:-none}, expected 401"
    code=$(probe "$t" forged -H "$FORGED_HEADER" "$url/")
    [[ $code == 401 ]] || precheck_fail "$t" "GET / with a forged signature answered HTTP ${code:-none}, expected 401"
    code=$(probe "$t" whoami -H "$AUTH_HEADER" -H "X-User-ID: mallory" -H "X-User-Forged: 1" "$url/whoami")
    [[ $code == 200 ]] || precheck_fail "$t" "GET /whoami with the token answered HTTP ${code:-none}, expected 200"
    got=$(cat "$WORK/precheck.$t.whoami")
    [[ $got == "$EXPECT_WHOAMI" ]] \
        || precheck_fail "$t" "the upstream saw '$got', expected '$EXPECT_WHOAMI'"
    printf '  %-22s token 200, no token 401, forged signature 401; upstream saw %s\n' "$t" "$got"
done

# ---------------------------------------------------------------------------------------------
# Measurement

# group_cpu_ticks, origin_accepts, check_components_alive: benches/lib.sh.
check_alive() { check_components_alive; }

wrk_cmd() { # target duration [wrk options]
    local t=$1 d=$2
    shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$d" "$@" -s "$WORK/token.lua" "http://127.0.0.1:${PORT_OF[$t]}/"
}

# Non-2xx answers mean the numbers measure refusals: stop, and show one answer.
fail_non2xx() { # target count wrk-output
    echo "auth.sh: ERROR: $1 got $2 non-2xx/3xx responses (wrk output: $3)" >&2
    sed 's/^/    /' "$3" >&2
    echo "  the same request now:" >&2
    "${CURL[@]}" -i -H "$AUTH_HEADER" "http://127.0.0.1:${PORT_OF[$1]}/" 2>&1 | head -20 >&2 || true
    tail -n 10 "$WORK/$1.log" >&2 2>/dev/null || true
    die "non-2xx responses from $1; the benchmark is invalid"
}

RESULTS="$WORK/results.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\trequests\tcpu_us_per_req\tnew_origin_conns\n' >"$RESULTS"

run_one() { # round target
    local round=$1 t=$2 out="$WORK/wrk/r$1-$2.txt" pgid=${PID_OF[$2]}
    local cpu0 cpu1 acc0 acc1
    acc0=$(origin_accepts)
    cpu0=$(group_cpu_ticks "$pgid")
    wrk_cmd "$t" "$DURATION" --latency >"$out" 2>&1 \
        || echo "auth.sh: warning: wrk exited non-zero for $t (round $round)" >&2
    cpu1=$(group_cpu_ticks "$pgid")
    acc1=$(origin_accepts)

    local rps p99 non2xx sockerr reqs cpu new_conns=NA
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    cpu=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" \
        'BEGIN { if (n + 0 > 0) printf "%.1f", d / hz * 1e6 / n; else print "NA" }')
    # The second status read is itself one accepted connection: subtract it.
    if [[ $acc0 =~ ^[0-9]+$ && $acc1 =~ ^[0-9]+$ ]]; then new_conns=$((acc1 - acc0 - 1)); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" "$reqs" \
        "$cpu" "$new_conns" >>"$RESULTS"

    local errs=""
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    printf '  %-22s %10s req/s   %7s CPU µs/req   p99 %8s ms   new origin conns %s%s\n' \
        "$t" "$rps" "$cpu" "$p99" "$new_conns" "$errs"
    if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$out"; fi
    if [[ $rps == NA ]]; then
        sed 's/^/    /' "$out" >&2
        die "could not read Requests/sec from wrk's output for $t"
    fi
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src identity service Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "Gatehouse authenticated-path benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  gatehouse: $GATEHOUSE_BIN ($(date -r "$GATEHOUSE_BIN" '+built %Y-%m-%d %H:%M'), $GATEWAY_THREADS thread(s))"
echo "  issuer: $IDENTITY_BIN (RS256, RSA-2048; not measured)"
echo "  $(haproxy -v 2>&1 | head -1 | awk '{print "haproxy " $3}') (nbthread 1), $(nginx -v 2>&1 | sed 's/^nginx version: //') (origin), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s token.lua (Authorization: Bearer, same token for every target)   rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE"
echo "  load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if ((WARMUP_S > 0)); then
    log "warm-up: ${WARMUP} per target"
    for t in "${TARGETS[@]}"; do
        wrk_cmd "$t" "$WARMUP" >"$WORK/wrk/warmup-$t.txt" 2>&1 || true
        read -r _ _ non2xx _ _ < <(parse_wrk "$WORK/wrk/warmup-$t.txt")
        if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$WORK/wrk/warmup-$t.txt"; fi
        sleep "$COOLDOWN"
    done
    check_alive
fi

run_rounds

# The gateways' own account: verified tokens and verified-token cache lookups (/metrics).
for g in gatehouse-jwt gatehouse-jwt-nocache; do
    "${CURL[@]}" -o "$WORK/$g.metrics" "http://127.0.0.1:${ADMIN_OF[$g]}/metrics" 2>/dev/null || : >"$WORK/$g.metrics"
done

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$WORK" <<'EOF'
import re
work = sys.argv[2]
cpu = {}
newc = {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    if num(r["cpu_us_per_req"]) is not None:
        cpu.setdefault(r["target"], []).append(num(r["cpu_us_per_req"]))
    newc.setdefault(r["target"], []).append(r["new_origin_conns"])
medc = {t: statistics.median(v) for t, v in cpu.items() if v}

def cpu_ratio(a, b):
    return f"{medc[a] / medc[b]:.2f}" if a in medc and b in medc and medc[b] > 0 else "n/a"

order = ["gatehouse", "gatehouse-jwt", "gatehouse-jwt-nocache", "haproxy", "haproxy-jwt"]
hdr = ["target", "median req/s", "CPU µs/req", "median p99 ms", "req/s min..max", "CPU µs/req min..max",
       "new origin conns/run", "socket errors"]
table = []
for t in order:
    if t not in med:
        continue
    c = cpu.get(t, [])
    table.append([t, f"{med[t]:.0f}", f"{medc[t]:.1f}" if t in medc else "n/a",
                  f"{medp[t]:.2f}" if t in medp else "n/a", f"{min(rps[t]):.0f}..{max(rps[t]):.0f}",
                  f"{min(c):.1f}..{max(c):.1f}" if c else "n/a", "/".join(newc.get(t, [])),
                  str(sockerr.get(t, 0))])
print_table(hdr, table)

def verdict(value, op, target):
    try:
        v = float(value)
    except ValueError:
        return "n/a"
    ok = v >= target if op == ">=" else v <= target
    return f"target {op} {target:.2f}: {'met' if ok else 'not met'}"

print()
print("ratios of medians (information only; never a failure):")
lines = [
    ("req/s   gatehouse-jwt / haproxy-jwt        ", ratio("gatehouse-jwt", "haproxy-jwt"), ">=", 2.0),
    ("req/s   gatehouse-jwt-nocache / haproxy-jwt", ratio("gatehouse-jwt-nocache", "haproxy-jwt"), None, None),
    ("CPU/req gatehouse-jwt / gatehouse          ", cpu_ratio("gatehouse-jwt", "gatehouse"), "<=", 1.15),
    ("CPU/req gatehouse-jwt-nocache / gatehouse  ", cpu_ratio("gatehouse-jwt-nocache", "gatehouse"), "<=", 1.15),
    ("CPU/req haproxy-jwt / haproxy              ", cpu_ratio("haproxy-jwt", "haproxy"), None, None),
    ("CPU/req gatehouse-jwt / haproxy-jwt        ", cpu_ratio("gatehouse-jwt", "haproxy-jwt"), None, None),
    ("req/s   gatehouse / haproxy (plain)        ", ratio("gatehouse", "haproxy"), None, None),
]
for name, value, op, target in lines:
    print(f"  {name} = {value}" + (f"   ({verdict(value, op, target)})" if op else ""))

# The gateways' own counters: every measured request verified; cache hits only where it is on.
print()
for g in ("gatehouse-jwt", "gatehouse-jwt-nocache"):
    text = open(f"{work}/{g}.metrics").read()
    def metric(name, label):
        m = re.search(r"^" + name + r"\{[^}]*" + label + r"[^}]*\} (\S+)$", text, re.M)
        return int(float(m.group(1))) if m else 0
    verified = metric("gatehouse_auth_outcomes_total", 'outcome="verified"')
    hits = metric("gatehouse_verified_token_cache_total", 'result="hit"')
    misses = metric("gatehouse_verified_token_cache_total", 'result="miss"')
    refused = sum(int(float(v)) for o, v in re.findall(
        r'^gatehouse_auth_outcomes_total\{[^}]*outcome="([^"]+)"[^}]*\} (\S+)$', text, re.M) if o != "verified")
    print(f"{g}: /metrics counts {verified} verified requests, {refused} refused (the pre-check's), "
          f"verified-token cache {hits} hits / {misses} misses")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $WORK/wrk/"
fi
exit 0
