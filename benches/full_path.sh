#!/usr/bin/env bash
# Full-path benchmark (issue #12): the gateway verifying an RS256 token (verified-token cache on),
# checking a local rate limit, asking the policy decision point (embedded, decision cache on; once
# with the cache off; once remote, over HTTP to a gatehouse-authz process, cache off) and injecting
# the identity headers, beside HAProxy 2.6 doing jwt_verify + a stick-table rate limit + the same
# headers, and beside both proxies' plain path. TLS off. Same wrk command (same token, same path)
# for every target, interleaved over several rounds; req/s and the proxy's CPU µs per request.
# See benches/README.md ("full_path.sh") for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=50  THREADS=1 (wrk)  GATEWAY_THREADS=1  AUTHZ_THREADS=1
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   RATE_LIMIT=on|auto|off   the gateway's per-route limit (routes[].rate_limits); on: required;
#             auto: left out (and said so in the report) when the gateway binary (GATEHOUSE_BIN,
#             say an older build) does not know the key
#   GATEHOUSE_BIN=path, IDENTITY_BIN=path, AUTHZ_BIN=path (default: `cargo build --release --workspace --bins` is
#   run, a no-op when up to date, and target/release/ is used; when all three are given, nothing
#   is built)
#   KEEP_WORKDIR=1 (keep configs, policies, keys, decision logs, metrics and raw wrk output)
#
# Exit status: 0 on success; 1 if a build fails, a component fails its config check or does not
# start, the pre-check fails (a target does not answer 200 with the token, 401 without it or with
# a forged signature, 403 for an action the policy denies, or the upstream does not see the
# verified identity), a run gets non-2xx answers, or a component dies; 2 on bad options. Never
# non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=full_path.sh   # for messages, and to recognise a live run (benches/lib.sh)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Options
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
GATEWAY_THREADS=${GATEWAY_THREADS:-1}
AUTHZ_THREADS=${AUTHZ_THREADS:-1}
WARMUP=${WARMUP:-2s}
COOLDOWN=${COOLDOWN:-1}
SMOKE=${SMOKE:-0}
RATE_LIMIT=${RATE_LIMIT:-on}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-}
IDENTITY_BIN=${IDENTITY_BIN:-}
AUTHZ_BIN=${AUTHZ_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi
[[ $RATE_LIMIT =~ ^(auto|on|off)$ ]] || usage_err "RATE_LIMIT=$RATE_LIMIT (want on, auto or off)"

# Fixed loopback ports (run.sh uses 18000-18083 and 19090, identity.sh 184xx, authz.sh 185xx,
# auth.sh 186xx).
PORT_ORIGIN=18700         # nginx origin: "hello\n"; .../documents/whoami echoes the identity headers
PORT_STATUS=18701         # same nginx, stub_status (connection counters)
PORT_ISSUER=18710         # gatehouse-identity: /token, discovery, /jwks.json
PORT_ISSUER_ADMIN=18711
PORT_GH_PLAIN=18720       # gatehouse, route without auth
PORT_GH_FULL=18721        # gatehouse, full path, embedded authz, decision cache on
PORT_GH_NOCACHE=18722     # the same with authz.cache.max_entries: 0
PORT_GH_REMOTE=18723      # the same with authz mode remote (cache off)
PORT_GH_PLAIN_ADMIN=18730
PORT_GH_FULL_ADMIN=18731
PORT_GH_NOCACHE_ADMIN=18732
PORT_GH_REMOTE_ADMIN=18733
PORT_GH_FULL_PDP=18741    # the embedded policy service's own listeners (not measured)
PORT_GH_NOCACHE_PDP=18742
PORT_GH_FULL_PDP_ADMIN=18751
PORT_GH_NOCACHE_PDP_ADMIN=18752
PORT_AUTHZ=18760          # gatehouse-authz on its own: gatehouse-full-remote's policy service
PORT_AUTHZ_ADMIN=18761
PORT_HAPROXY=18770        # haproxy: plain proxy
PORT_HAPROXY_FULL=18771   # haproxy: jwt_verify + claims + stick-table limit + identity headers
ALL_PORTS=("$PORT_ORIGIN" "$PORT_STATUS" "$PORT_ISSUER" "$PORT_ISSUER_ADMIN" "$PORT_GH_PLAIN" "$PORT_GH_FULL"
           "$PORT_GH_NOCACHE" "$PORT_GH_REMOTE" "$PORT_GH_PLAIN_ADMIN" "$PORT_GH_FULL_ADMIN"
           "$PORT_GH_NOCACHE_ADMIN" "$PORT_GH_REMOTE_ADMIN" "$PORT_GH_FULL_PDP" "$PORT_GH_NOCACHE_PDP"
           "$PORT_GH_FULL_PDP_ADMIN" "$PORT_GH_NOCACHE_PDP_ADMIN" "$PORT_AUTHZ" "$PORT_AUTHZ_ADMIN"
           "$PORT_HAPROXY" "$PORT_HAPROXY_FULL")

# Targets in the order they run within a round (interleaved). Each is its own process, so the
# CPU time a process spends over a run is that target's alone (gatehouse-full-remote: its gateway
# plus the authz process).
TARGETS=(gatehouse gatehouse-full gatehouse-full-nocache gatehouse-full-remote haproxy haproxy-full)
declare -A PORT_OF=([gatehouse]=$PORT_GH_PLAIN [gatehouse-full]=$PORT_GH_FULL
                    [gatehouse-full-nocache]=$PORT_GH_NOCACHE [gatehouse-full-remote]=$PORT_GH_REMOTE
                    [haproxy]=$PORT_HAPROXY [haproxy-full]=$PORT_HAPROXY_FULL)
declare -A ADMIN_OF=([gatehouse]=$PORT_GH_PLAIN_ADMIN [gatehouse-full]=$PORT_GH_FULL_ADMIN
                     [gatehouse-full-nocache]=$PORT_GH_NOCACHE_ADMIN
                     [gatehouse-full-remote]=$PORT_GH_REMOTE_ADMIN)
GATEWAYS=(gatehouse gatehouse-full gatehouse-full-nocache gatehouse-full-remote)
FULL_GATEWAYS=(gatehouse-full gatehouse-full-nocache gatehouse-full-remote)
# Targets that require a token (the others are the plain paths), and those that ask the policies.
declare -A NEEDS_TOKEN=([gatehouse-full]=1 [gatehouse-full-nocache]=1 [gatehouse-full-remote]=1 [haproxy-full]=1)
declare -A ASKS_POLICY=([gatehouse-full]=1 [gatehouse-full-nocache]=1 [gatehouse-full-remote]=1)

# Every target gets this request (GET, with the token): the route's template is
# /users/{owner}/documents/{id}, so the policy sees resource {type: document, id: 42, owner: alice}.
BENCH_PATH=/users/alice/documents/42
# Pre-check only: the origin echoes the identity headers it received on this path.
WHOAMI_PATH=/users/alice/documents/whoami
# A limit high enough never to refuse, so every measured request pays the check and passes.
RATE_LIMIT_PER_S=1000000

# The token's issuer, audience and client (the secret is for this throwaway config only).
ISSUER_URL="http://127.0.0.1:$PORT_ISSUER"
AUDIENCE=bench-api
CLIENT=bench-svc SECRET=bench-svc-secret
# Process names as /proc/PID/comm shows them: truncated to 15 chars.
IDENTITY_PROC=gatehouse-ident
AUTHZ_PROC=gatehouse-authz

check_options GATEWAY_THREADS AUTHZ_THREADS   # sets DUR_S, WARMUP_S
require_tools " (scripts/setup.sh bench installs them)" wrk nginx haproxy openssl curl ss python3 setsid awk
CLK_TCK=$(getconf CLK_TCK)

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 5)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh)
WORK_PREFIX=gh-full-bench
RUN_KIND="full-path benchmark"
SERVER_PROCS="nginx|haproxy|gatehouse|$IDENTITY_PROC|$AUTHZ_PROC"
# SIGTERM: HAProxy takes SIGINT as a soft stop that waits for idle keep-alive connections; on
# SIGTERM it, nginx and the gateways (grace_period 0s) stop at once, the issuer and the authz
# service after their grace period. SIGKILL after 5 s.
STOP_SIGNAL=TERM STOP_WAIT=50
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build: `cargo build --release --workspace --bins` unless all three binaries are given (a no-op when they are up to
# date; it waits if another cargo holds the lock). The whole workspace, not `-p`: see auth.sh.
if [[ -z $GATEHOUSE_BIN || -z $IDENTITY_BIN || -z $AUTHZ_BIN ]]; then
    log "building (cargo build --release --workspace --bins)"
    (cd "$ROOT" && cargo build --release --workspace --bins) || die "cargo build --release --workspace --bins failed"
fi
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
IDENTITY_BIN=${IDENTITY_BIN:-$ROOT/target/release/gatehouse-identity}
AUTHZ_BIN=${AUTHZ_BIN:-$ROOT/target/release/gatehouse-authz}
for bin in "$GATEHOUSE_BIN" "$IDENTITY_BIN" "$AUTHZ_BIN"; do
    [[ -f $bin && -x $bin ]] || die "$bin is not an executable file"
done

# ---------------------------------------------------------------------------------------------
# The issuer, started first: the token and the public key go into the proxies' configs
# (start_token_issuer, fetch_bench_token, issuer_public_key: benches/lib.sh).
mkdir -p "$WORK/origin/tmp" "$WORK/haproxy" "$WORK/haproxy-full" "$WORK/wrk" "$WORK/policies" "$WORK/authz"
for g in "${GATEWAYS[@]}"; do mkdir -p "$WORK/$g"; done

TOKEN_TTL_S=$(token_ttl_seconds)
log "work dir $WORK"
start_token_issuer "$PORT_ISSUER" "$PORT_ISSUER_ADMIN" "$TOKEN_TTL_S"
fetch_bench_token
PUBKEY="$WORK/haproxy-full/issuer-$TOKEN_KID.pub.pem"
issuer_public_key "$PUBKEY"

# ---------------------------------------------------------------------------------------------
# Configs (nginx_common, nginx_http_common, haproxy_*: benches/lib.sh)

# The origin answers "hello\n" everywhere; WHOAMI_PATH (pre-check only) echoes what identity
# headers it received, including a client-written one that every proxy must have removed.
{
    nginx_common "$WORK/origin" 1
    cat <<EOF
http {
$(nginx_http_common "$WORK/origin")
    server {
        listen 127.0.0.1:$PORT_ORIGIN backlog=4096;
        location = $WHOAMI_PATH {
            default_type text/plain;
            return 200 "x-user-id=\$http_x_user_id x-user-roles=\$http_x_user_roles x-user-forged=\$http_x_user_forged decision-id=\$http_x_gatehouse_decision_id\n";
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

# The bench policy: the token's role bench-reader may view documents; nothing else is allowed (no
# rule matches = deny, so PUT, i.e. edit, gets 403). No condition reads the time or the client
# ip, so the decision cache can reuse a decision for its whole TTL.
cat >"$WORK/policies/bench_documents.yaml" <<EOF
resource_policy:
  id: bench-documents
  version: "1"
  resource: document
  description: The benchmark's client reads documents and changes none.
  rules:
    - name: bench-reader-views
      actions: [view]
      effect: allow
      roles: [bench-reader]
EOF

# A gatehouse-authz config on the given ports: the bench policies, the decision log in its own
# dir. Every decision made is written (the cache's hits are not decisions); rotation bounds the
# disk used to 2 x 16 MiB per process.
authz_yaml() { # port admin-port
    cat <<EOF
listen: 127.0.0.1:$1
admin: 127.0.0.1:$2
policies: ../policies
threads: $AUTHZ_THREADS
decision_log:
  path: decisions.log
  queue: 8192
  max_file_bytes: 16777216
  keep_files: 1
EOF
}
authz_yaml "$PORT_AUTHZ" "$PORT_AUTHZ_ADMIN" >"$WORK/authz/authz.yaml"
authz_yaml "$PORT_GH_FULL_PDP" "$PORT_GH_FULL_PDP_ADMIN" >"$WORK/gatehouse-full/authz.yaml"
authz_yaml "$PORT_GH_NOCACHE_PDP" "$PORT_GH_NOCACHE_PDP_ADMIN" >"$WORK/gatehouse-full-nocache/authz.yaml"
"$AUTHZ_BIN" validate --config "$WORK/authz/authz.yaml" >"$WORK/authz/validate.log" 2>&1 \
    || { cat "$WORK/authz/validate.log" >&2; die "generated authz config invalid"; }

# One gateway per target (the decision cache and the token cache are process-wide keys, and one
# process per target keeps each run's CPU time its own). Same settings as run.sh.
gatehouse_yaml() { # name port admin-port authz(none|embedded|remote) decision-cache-entries rate-limit(yes|no)
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
    if [[ $4 == none ]]; then
        cat <<EOF
routes:
  - name: all
    match:
      path_prefix: /
    upstream: origin
EOF
        return 0
    fi
    cat <<EOF
auth:
  verified_token_cache: 10000
  issuers:
    bench:
      issuer: $ISSUER_URL
      audiences: [$AUDIENCE]
      algorithms: [RS256]
      token_types: [at+jwt]
authz:
  cache:
    max_entries: $5
EOF
    if [[ $4 == remote ]]; then
        # A timeout well above a loaded box's stalls: a timed-out call is a 503 and stops the run.
        cat <<EOF
  remote:
    url: http://127.0.0.1:$PORT_AUTHZ
    timeout: 1s
    pool_size: $CONNECTIONS
EOF
    else
        cat <<EOF
embedded:
  authz: authz.yaml
EOF
    fi
    cat <<EOF
routes:
  - name: documents
    match:
      path: /users/{owner}/documents/{id}
      methods: [GET, PUT]
    upstream: origin
    auth:
      mode: required
      issuers: [bench]
EOF
    if [[ $6 == yes ]]; then
        cat <<EOF
    rate_limits:
      - name: per-sub
        key: sub
        rate: $RATE_LIMIT_PER_S/s
EOF
    fi
    cat <<EOF
    authz:
      mode: $4
      resource:
        type: document
        id: "{id}"
        owner: "{owner}"
EOF
}

# The full-path gateways, with the rate limit unless RATE_LIMIT=off or (auto) the binary does not
# know routes[].rate_limits yet.
write_full_gateways() { # rate-limit(yes|no)
    gatehouse_yaml gatehouse-full "$PORT_GH_FULL" "$PORT_GH_FULL_ADMIN" embedded 10000 "$1" \
        >"$WORK/gatehouse-full/gatehouse.yaml"
    gatehouse_yaml gatehouse-full-nocache "$PORT_GH_NOCACHE" "$PORT_GH_NOCACHE_ADMIN" embedded 0 "$1" \
        >"$WORK/gatehouse-full-nocache/gatehouse.yaml"
    gatehouse_yaml gatehouse-full-remote "$PORT_GH_REMOTE" "$PORT_GH_REMOTE_ADMIN" remote 0 "$1" \
        >"$WORK/gatehouse-full-remote/gatehouse.yaml"
}
gatehouse_yaml gatehouse "$PORT_GH_PLAIN" "$PORT_GH_PLAIN_ADMIN" none 0 no >"$WORK/gatehouse/gatehouse.yaml"
RATE_LIMIT_NOTE="rate limit: $RATE_LIMIT_PER_S/s per sub (local), never reached"
LIMITED=1   # whether the full-path gateways' route has the limit
if [[ $RATE_LIMIT == off ]]; then
    write_full_gateways no
    LIMITED=0
    RATE_LIMIT_NOTE="rate limit: off (RATE_LIMIT=off); haproxy-full still tracks and checks its stick-table"
else
    write_full_gateways yes
    # What a gateway without rate limiting says (serde); any other error is the config's own.
    # shellcheck disable=SC2016  # the backquotes are serde's, not a command
    no_rate_limits='unknown field `rate_limits`'
    if ! "$GATEHOUSE_BIN" validate --config "$WORK/gatehouse-full/gatehouse.yaml" >"$WORK/gatehouse-full/validate.log" 2>&1 \
        && grep -qF "$no_rate_limits" "$WORK/gatehouse-full/validate.log"; then
        [[ $RATE_LIMIT == auto ]] || { cat "$WORK/gatehouse-full/validate.log" >&2; die "RATE_LIMIT=on: this gateway does not accept routes[].rate_limits (RATE_LIMIT=auto leaves the limit out)"; }
        write_full_gateways no
        LIMITED=0
        RATE_LIMIT_NOTE="rate limit: LEFT OUT: this gatehouse build has no routes[].rate_limits (RATE_LIMIT=auto); haproxy-full still tracks and checks its stick-table"
    fi
fi

haproxy_maxconn "$CONNECTIONS"
{
    haproxy_head "$WORK/haproxy"
    cat <<EOF

frontend fe
    bind 127.0.0.1:$PORT_HAPROXY
    default_backend origin
EOF
} >"$WORK/haproxy/haproxy.cfg"

# The gateway's auth stage in HAProxy's terms (haproxy_jwt_frontend), with the subject's request
# rate over 1 s checked against the gateway's limit. HAProxy has no policy engine: it has no
# counterpart of the authz stage, and does not send a decision id.
{
    haproxy_head "$WORK/haproxy-full"
    haproxy_jwt_frontend fe_full "$PORT_HAPROXY_FULL" "$PUBKEY" 1s "$RATE_LIMIT_PER_S"
} >"$WORK/haproxy-full/haproxy.cfg"

nginx -t -q -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf" \
    2>"$WORK/origin/configtest.log" || { cat "$WORK/origin/configtest.log" >&2; die "origin nginx config invalid"; }
for h in haproxy haproxy-full; do
    haproxy -c -q -f "$WORK/$h/haproxy.cfg" >"$WORK/$h/configtest.log" 2>&1 \
        || { cat "$WORK/$h/configtest.log" >&2; die "$h config invalid"; }
done
for g in "${GATEWAYS[@]}"; do
    "$GATEHOUSE_BIN" validate --config "$WORK/$g/gatehouse.yaml" >"$WORK/$g/validate.log" 2>&1 \
        || { cat "$WORK/$g/validate.log" >&2; die "$g config invalid"; }
done

# ---------------------------------------------------------------------------------------------
# Start components (start, wait_answering: benches/lib.sh).
start origin "$WORK/origin.log" nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin/nginx.conf"
wait_answering origin "on 127.0.0.1:$PORT_ORIGIN" 15 -f "http://127.0.0.1:$PORT_ORIGIN/"
start authz "$WORK/authz.log" env NO_COLOR=1 RUST_LOG=warn "$AUTHZ_BIN" --config "$WORK/authz/authz.yaml"
wait_answering authz "ready (admin /healthz)" 15 -f "http://127.0.0.1:$PORT_AUTHZ_ADMIN/healthz"
for g in "${GATEWAYS[@]}"; do
    start "$g" "$WORK/$g.log" "$GATEHOUSE_BIN" --config "$WORK/$g/gatehouse.yaml"
done
for h in haproxy haproxy-full; do
    start "$h" "$WORK/$h.log" haproxy -db -f "$WORK/$h/haproxy.cfg"
done
# /readyz answers 200 once every issuer's key set is in (the plain gateway has none to wait for).
for g in "${GATEWAYS[@]}"; do
    wait_answering "$g" "ready (admin /readyz)" 15 -f "http://127.0.0.1:${ADMIN_OF[$g]}/readyz"
done
for h in haproxy haproxy-full; do
    wait_answering "$h" "on 127.0.0.1:${PORT_OF[$h]}" 15 "http://127.0.0.1:${PORT_OF[$h]}/"
done
log "all components up (origin :$PORT_ORIGIN, issuer :$PORT_ISSUER, authz :$PORT_AUTHZ, gatehouse :$PORT_GH_PLAIN/:$PORT_GH_FULL/:$PORT_GH_NOCACHE/:$PORT_GH_REMOTE, haproxy :$PORT_HAPROXY/:$PORT_HAPROXY_FULL)"

# ---------------------------------------------------------------------------------------------
# Pre-check. A benchmark of refusals measures nothing, and one of a proxy that lets anything
# through measures no check: every target must answer GET BENCH_PATH with the token 200 "hello";
# those that require a token must answer 401 without one and with a forged signature, and their
# upstream must see the verified identity and not a client-written X-User-* header; those that ask
# the policies must answer 403 to PUT (edit, which the policy does not allow) and send a decision
# id upstream.
AUTH_HEADER="@$WORK/auth.header"       # curl -H @file: the token stays off command lines
FORGED_HEADER="@$WORK/forged.header"


log "pre-check (token: $TOKEN_ALG typ=$TOKEN_TYP kid=${TOKEN_KID:0:12}… sub=$TOKEN_SUB roles=$TOKEN_ROLES, $TOKEN_BYTES bytes, valid ${TOKEN_TTL_S}s; GET $BENCH_PATH)"
for t in "${TARGETS[@]}"; do
    url="http://127.0.0.1:${PORT_OF[$t]}"
    code=$(probe "$t" token -H "$AUTH_HEADER" "$url$BENCH_PATH")
    [[ $code == 200 ]] || precheck_fail "$t" "GET $BENCH_PATH with the token answered HTTP ${code:-none}, expected 200"
    [[ $(cat "$WORK/precheck.$t.token") == hello ]] || precheck_fail "$t" "answered 200 but not the origin's body"
    if [[ -z ${NEEDS_TOKEN[$t]:-} ]]; then
        printf '  %-22s token 200\n' "$t"
        continue
    fi
    code=$(probe "$t" none "$url$BENCH_PATH")
    [[ $code == 401 ]] || precheck_fail "$t" "GET without a token answered HTTP ${code:-none}, expected 401"
    code=$(probe "$t" forged -H "$FORGED_HEADER" "$url$BENCH_PATH")
    [[ $code == 401 ]] || precheck_fail "$t" "GET with a forged signature answered HTTP ${code:-none}, expected 401"
    code=$(probe "$t" whoami -H "$AUTH_HEADER" -H "X-User-ID: mallory" -H "X-User-Forged: 1" \
        -H "X-Gatehouse-Decision-Id: forged" "$url$WHOAMI_PATH")
    [[ $code == 200 ]] || precheck_fail "$t" "GET $WHOAMI_PATH with the token answered HTTP ${code:-none}, expected 200"
    got=$(cat "$WORK/precheck.$t.whoami")
    expect="x-user-id=$TOKEN_SUB x-user-roles=$TOKEN_ROLES x-user-forged= decision-id="
    if [[ -n ${ASKS_POLICY[$t]:-} ]]; then
        # The decision id is the policy service's: any non-empty value but the client's.
        [[ $got == "$expect"?* && $got != *=forged ]] \
            || precheck_fail "$t" "the upstream saw '$got', expected '$expect<decision id>'"
        code=$(probe "$t" deny -X PUT -H "$AUTH_HEADER" "$url$BENCH_PATH")
        [[ $code == 403 ]] || precheck_fail "$t" "PUT $BENCH_PATH (edit, not allowed) answered HTTP ${code:-none}, expected 403"
        printf '  %-22s token 200, no token 401, forged signature 401, PUT 403; upstream saw %s\n' "$t" "$got"
    else
        [[ $got == "$expect" ]] || precheck_fail "$t" "the upstream saw '$got', expected '$expect'"
        printf '  %-22s token 200, no token 401, forged signature 401; upstream saw %s\n' "$t" "$got"
    fi
done

# The rate-limit stage ran: each full-path gateway counted the pre-check's requests as allowed.
if ((LIMITED)); then
    for g in "${FULL_GATEWAYS[@]}"; do
        allowed=$("${CURL[@]}" "http://127.0.0.1:${ADMIN_OF[$g]}/metrics" 2>/dev/null \
            | awk '/^gatehouse_rate_limit_decisions_total\{/ && /limit="per-sub"/ && /result="allowed"/ { n += $NF } END { print n + 0 }')
        ((allowed > 0)) || precheck_fail "$g" "no rate-limit check counted (gatehouse_rate_limit_decisions_total{limit=\"per-sub\",result=\"allowed\"})"
    done
    echo "  rate limit per-sub: checks counted by all three full-path gateways"
fi

# ---------------------------------------------------------------------------------------------
# Measurement (group_cpu_ticks, origin_accepts, check_components_alive: benches/lib.sh)

check_alive() { check_components_alive; }

wrk_cmd() { # target duration [wrk options]
    local t=$1 d=$2
    shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$d" "$@" -s "$WORK/token.lua" "http://127.0.0.1:${PORT_OF[$t]}$BENCH_PATH"
}

# Non-2xx answers mean the numbers measure refusals: stop, and show one answer.
fail_non2xx() { # target count wrk-output
    echo "$BENCH_NAME: ERROR: $1 got $2 non-2xx/3xx responses (wrk output: $3)" >&2
    sed 's/^/    /' "$3" >&2
    echo "  the same request now:" >&2
    "${CURL[@]}" -i -H "$AUTH_HEADER" "http://127.0.0.1:${PORT_OF[$1]}$BENCH_PATH" 2>&1 | head -20 >&2 || true
    tail -n 10 "$WORK/$1.log" >&2 2>/dev/null || true
    die "non-2xx responses from $1; the benchmark is invalid"
}

# Connections between the remote gateway and the authz service: established ones (from the
# gateway's side), and sockets in TIME-WAIT on either end (churn leaves them).
authz_established() { ss -Htn state established "( dport = :$PORT_AUTHZ )" 2>/dev/null | wc -l; }
authz_time_wait() { ss -Htn state time-wait "( sport = :$PORT_AUTHZ or dport = :$PORT_AUTHZ )" 2>/dev/null | wc -l; }

# CPU ticks over a run -> µs per request.
us_per_request() { # ticks requests
    awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n + 0 > 0) printf "%.1f", d / hz * 1e6 / n; else print "NA" }'
}

RESULTS="$WORK/results.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\trequests\tcpu_us_per_req\tcpu_authz_us_per_req\tnew_origin_conns\tauthz_conns\n' >"$RESULTS"

run_one() { # round target
    local round=$1 t=$2 out="$WORK/wrk/r$1-$2.txt" pgid=${PID_OF[$2]} remote=0
    if [[ $t == gatehouse-full-remote ]]; then remote=1; fi
    local cpu0 cpu1 acc0 acc1 acpu0=0 acpu1=0 tw0=0 tw1=0 est=NA
    acc0=$(origin_accepts)
    if ((remote)); then acpu0=$(group_cpu_ticks "${PID_OF[authz]}"); tw0=$(authz_time_wait); fi
    cpu0=$(group_cpu_ticks "$pgid")
    wrk_cmd "$t" "$DURATION" --latency >"$out" 2>&1 &
    local wrk_pid=$!
    if ((remote)); then
        # Half-way through: the gateway's pooled connections to the authz service.
        sleep "$(awk -v d="$DUR_S" 'BEGIN { print d / 2 }')"
        est=$(authz_established)
    fi
    wait "$wrk_pid" || echo "$BENCH_NAME: warning: wrk exited non-zero for $t (round $round)" >&2
    cpu1=$(group_cpu_ticks "$pgid")
    if ((remote)); then acpu1=$(group_cpu_ticks "${PID_OF[authz]}"); tw1=$(authz_time_wait); fi
    acc1=$(origin_accepts)

    local rps p99 non2xx sockerr reqs cpu acpu=NA new_conns=NA authz_conns=NA
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    cpu=$(us_per_request $((cpu1 - cpu0)) "$reqs")
    if ((remote)); then
        acpu=$(us_per_request $((acpu1 - acpu0)) "$reqs")
        authz_conns="$est/+$((tw1 > tw0 ? tw1 - tw0 : 0))"
    fi
    # The second status read is itself one accepted connection: subtract it.
    if [[ $acc0 =~ ^[0-9]+$ && $acc1 =~ ^[0-9]+$ ]]; then new_conns=$((acc1 - acc0 - 1)); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" \
        "$reqs" "$cpu" "$acpu" "$new_conns" "$authz_conns" >>"$RESULTS"

    local errs="" extra=""
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    if ((remote)); then extra="   (+ authz $acpu µs/req; authz conns established/new TIME-WAIT $authz_conns)"; fi
    printf '  %-22s %10s req/s   %7s CPU µs/req   p99 %8s ms   new origin conns %s%s%s\n' \
        "$t" "$rps" "$cpu" "$p99" "$new_conns" "$extra" "$errs"
    if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$out"; fi
    if [[ $rps == NA ]]; then
        sed 's/^/    /' "$out" >&2
        die "could not read Requests/sec from wrk's output for $t"
    fi
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src identity authz service Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "Gatehouse full-path benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  gatehouse: $GATEHOUSE_BIN ($(date -r "$GATEHOUSE_BIN" '+built %Y-%m-%d %H:%M'), $GATEWAY_THREADS thread(s))"
echo "  authz (remote target): $AUTHZ_BIN ($AUTHZ_THREADS thread(s), decision log on); issuer: $IDENTITY_BIN (RS256, RSA-2048; not measured)"
echo "  $RATE_LIMIT_NOTE"
echo "  $(haproxy -v 2>&1 | head -1 | awk '{print "haproxy " $3}') (nbthread 1), $(nginx -v 2>&1 | sed 's/^nginx version: //') (origin), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s token.lua http://127.0.0.1:PORT$BENCH_PATH (same token for every target)   rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE"
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

# The processes' own account (/metrics): authz outcomes, decision cache, callout latency,
# rate-limit checks; the remote service's decisions.
for g in "${FULL_GATEWAYS[@]}"; do
    "${CURL[@]}" -o "$WORK/$g.metrics" "http://127.0.0.1:${ADMIN_OF[$g]}/metrics" 2>/dev/null || : >"$WORK/$g.metrics"
done
"${CURL[@]}" -o "$WORK/authz.metrics" "http://127.0.0.1:$PORT_AUTHZ_ADMIN/metrics" 2>/dev/null || : >"$WORK/authz.metrics"

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$WORK" <<'EOF'
import re
work = sys.argv[2]
cpu, acpu, newc, aconns = {}, {}, {}, {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    t = r["target"]
    if num(r["cpu_us_per_req"]) is not None:
        cpu.setdefault(t, []).append(num(r["cpu_us_per_req"]))
    if num(r["cpu_authz_us_per_req"]) is not None:
        acpu.setdefault(t, []).append(num(r["cpu_authz_us_per_req"]))
    newc.setdefault(t, []).append(r["new_origin_conns"])
    aconns.setdefault(t, []).append(r["authz_conns"])
medc = {t: statistics.median(v) for t, v in cpu.items() if v}
meda = {t: statistics.median(v) for t, v in acpu.items() if v}
# The cost a target puts on the box: its proxy, plus (remote) the authz process it calls.
medt = {t: medc[t] + meda.get(t, 0.0) for t in medc}

def cpu_ratio(a, b):
    return f"{medt[a] / medt[b]:.2f}" if a in medt and b in medt and medt[b] > 0 else "n/a"

order = ["gatehouse", "gatehouse-full", "gatehouse-full-nocache", "gatehouse-full-remote", "haproxy", "haproxy-full"]
hdr = ["target", "median req/s", "CPU µs/req", "median p99 ms", "req/s min..max", "CPU µs/req min..max",
       "new origin conns/run", "socket errors"]
table = []
for t in order:
    if t not in med:
        continue
    c = cpu.get(t, [])
    total = f"{medt[t]:.1f}" if t in medt else "n/a"
    if t in meda:
        total += f" ({medc[t]:.1f} + authz {meda[t]:.1f})"
    table.append([t, f"{med[t]:.0f}", total, f"{medp[t]:.2f}" if t in medp else "n/a",
                  f"{min(rps[t]):.0f}..{max(rps[t]):.0f}", f"{min(c):.1f}..{max(c):.1f}" if c else "n/a",
                  "/".join(newc.get(t, [])), str(sockerr.get(t, 0))])
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
    ("req/s   gatehouse-full / haproxy-full         ", ratio("gatehouse-full", "haproxy-full"), ">=", 2.0),
    ("req/s   gatehouse-full-nocache / haproxy-full ", ratio("gatehouse-full-nocache", "haproxy-full"), None, None),
    ("req/s   gatehouse-full-remote / haproxy-full  ", ratio("gatehouse-full-remote", "haproxy-full"), None, None),
    ("CPU/req gatehouse-full / gatehouse            ", cpu_ratio("gatehouse-full", "gatehouse"), "<=", 1.3),
    ("CPU/req gatehouse-full-nocache / gatehouse    ", cpu_ratio("gatehouse-full-nocache", "gatehouse"), None, None),
    ("CPU/req gatehouse-full-remote / gatehouse     ", cpu_ratio("gatehouse-full-remote", "gatehouse"), None, None),
    ("CPU/req haproxy-full / haproxy                ", cpu_ratio("haproxy-full", "haproxy"), None, None),
    ("CPU/req gatehouse-full / haproxy-full         ", cpu_ratio("gatehouse-full", "haproxy-full"), None, None),
    ("req/s   gatehouse / haproxy (plain)           ", ratio("gatehouse", "haproxy"), None, None),
]
for name, value, op, target in lines:
    print(f"  {name} = {value}" + (f"   ({verdict(value, op, target)})" if op else ""))

def metrics(path):
    try:
        return open(path).read()
    except OSError:
        return ""

def metric(text, name, label=""):
    total = 0.0
    for labels, value in re.findall(r"^" + name + r"(\{[^}]*\})? (\S+)$", text, re.M):
        if label in (labels or ""):
            total += float(value)
    return total

# What a remote callout costs per request: against the same path deciding in-process without a
# cache (gatehouse-full-nocache), and against the cached path (gatehouse-full).
print()
texts = {g: metrics(f"{work}/{g}.metrics") for g in ("gatehouse-full", "gatehouse-full-nocache", "gatehouse-full-remote")}
def mean_callout_us(g, mode):
    n = metric(texts[g], "gatehouse_authz_callout_seconds_count", f'mode="{mode}"')
    s = metric(texts[g], "gatehouse_authz_callout_seconds_sum", f'mode="{mode}"')
    return s / n * 1e6 if n else None
remote_us, embedded_us = mean_callout_us("gatehouse-full-remote", "remote"), mean_callout_us("gatehouse-full-nocache", "embedded")
print("cost of a remote callout per request (medians; cache off in both):")
if "gatehouse-full-remote" in medt and "gatehouse-full-nocache" in medt:
    d = medt["gatehouse-full-remote"] - medt["gatehouse-full-nocache"]
    print(f"  CPU   gatehouse-full-remote (gateway + authz) - gatehouse-full-nocache = {d:+.1f} µs/req"
          f"   (gateway {medc['gatehouse-full-remote'] - medc['gatehouse-full-nocache']:+.1f}, authz process {meda.get('gatehouse-full-remote', 0):.1f})")
if "gatehouse-full-remote" in medt and "gatehouse-full" in medt:
    print(f"  CPU   gatehouse-full-remote - gatehouse-full (cache on)                 = {medt['gatehouse-full-remote'] - medt['gatehouse-full']:+.1f} µs/req")
fmt = lambda v: f"{v:.0f} µs" if v is not None else "n/a"
print(f"  time  mean decision time, gatehouse_authz_callout_seconds: remote {fmt(remote_us)}, embedded {fmt(embedded_us)}")
if "gatehouse-full-remote" in medp and "gatehouse-full-nocache" in medp:
    print(f"  time  p99 at saturation: remote {medp['gatehouse-full-remote']:.2f} ms, embedded without cache {medp['gatehouse-full-nocache']:.2f} ms")
print(f"  connections to the authz service, established mid-run/new TIME-WAIT, per run: {' '.join(aconns.get('gatehouse-full-remote', []))}")

# The processes' own counters: every measured request allowed; the cache hit only where it is on.
print()
for g, text in texts.items():
    allow = metric(text, "gatehouse_route_authz_total", 'result="allow"')
    deny = metric(text, "gatehouse_route_authz_total", 'result="deny"')
    errors = metric(text, "gatehouse_route_authz_total", 'result="error"')
    hits = metric(text, "gatehouse_authz_cache_total", 'result="hit"')
    misses = metric(text, "gatehouse_authz_cache_total", 'result="miss"')
    verified_hits = metric(text, "gatehouse_verified_token_cache_total", 'result="hit"')
    limited = metric(text, "gatehouse_rate_limit_decisions_total", 'result="limited"')
    allowed = metric(text, "gatehouse_rate_limit_decisions_total", 'result="allowed"')
    dropped = metric(text, "gatehouse_authz_decision_log_dropped_total")
    rl = f", rate limit {allowed:.0f} allowed / {limited:.0f} limited" if "gatehouse_rate_limit_decisions_total" in text else ", no rate-limit counters"
    print(f"{g}: authz {allow:.0f} allow / {deny:.0f} deny / {errors:.0f} error, decision cache {hits:.0f} hits / "
          f"{misses:.0f} misses, verified-token cache {verified_hits:.0f} hits{rl}"
          + (f", decision-log lines dropped {dropped:.0f}" if g != "gatehouse-full-remote" else ""))
a = metrics(f"{work}/authz.metrics")
a_allow = metric(a, "gatehouse_authz_decisions_total", 'result="allow"')
a_deny = metric(a, "gatehouse_authz_decisions_total", 'result="deny"')
a_dropped = metric(a, "gatehouse_authz_decision_log_dropped_total")
print(f"authz service: {a_allow:.0f} allow / {a_deny:.0f} deny decisions, decision-log lines dropped {a_dropped:.0f}")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $WORK/wrk/"
fi
exit 0
