#!/usr/bin/env bash
# gatehouse-identity under a flood of wrong client secrets: what an outsider can make the issuer
# spend. FLOOD_CONNECTIONS connections POST client_credentials with a wrong secret (a new client
# id and secret every request, so no check is shared or remembered) for DURATION, beside a
# rate-controlled correct client. The issuer's RSS is sampled every second. Prints the peak RSS,
# the correct client's successes and p99, and how the flood was answered (401 checked, 503 refused
# by the hash gate). See benches/README.md ("identity_flood.sh"). Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   DURATION=30s  FLOOD_CONNECTIONS=200  GOOD_CONNECTIONS=2  GOOD_RATE=100 (correct requests/s,
#   spread over GOOD_CONNECTIONS)  HASH_CONCURRENCY, HASH_QUEUE (limits.*; unset = the issuer's
#   defaults: cores and 4 x cores)
#   SMOKE=1   quick check that the runner works: DURATION=3s
#   IDENTITY_BIN=path (default: `cargo build --release -p gatehouse-identity` is run, then
#   target/release/gatehouse-identity is used; an explicit path is used as is, never built)
#   KEEP_WORKDIR=1 (keep config, keys, logs, the RSS series and raw wrk output)
#
# Exit status: 0 on success; 1 if the build fails, a component fails to start, the pre-check
# fails or the issuer dies during the run; 2 on bad options. Never non-zero because of the
# numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=identity_flood.sh   # for messages, and to recognise a live run (benches/lib.sh)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Options
DURATION=${DURATION:-30s}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-200}
GOOD_CONNECTIONS=${GOOD_CONNECTIONS:-2}
GOOD_RATE=${GOOD_RATE:-100}
HASH_CONCURRENCY=${HASH_CONCURRENCY:-}
HASH_QUEUE=${HASH_QUEUE:-}
SMOKE=${SMOKE:-0}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
IDENTITY_BIN=${IDENTITY_BIN:-}
if [[ $SMOKE == 1 ]]; then
    DURATION=3s
fi
# What lib.sh's check_options reads: one run, no warm-up (a warm-up would be more flood).
ROUNDS=1 COOLDOWN=0 WARMUP=0 THREADS=1 CONNECTIONS=$FLOOD_CONNECTIONS
check_options GOOD_CONNECTIONS GOOD_RATE   # sets DUR_S
for knob in HASH_CONCURRENCY HASH_QUEUE; do
    [[ -z ${!knob} || ${!knob} =~ ^[0-9]+$ ]] || usage_err "$knob=${!knob} (want a number)"
done

# Fixed loopback ports, apart from identity.sh's (18400-18402).
PORT_ISSUER=18410
PORT_ADMIN=18411
ALL_PORTS=("$PORT_ISSUER" "$PORT_ADMIN")
IDENTITY_PROC=gatehouse-ident   # /proc/PID/comm: truncated to 15 characters
GOOD_CLIENT=bench-svc GOOD_SECRET=bench-svc-secret

require_tools " (scripts/setup.sh bench installs wrk)" wrk curl ss setsid awk base64
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 5)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (benches/lib.sh)
WORK_PREFIX=gh-identity-flood
RUN_KIND="identity flood benchmark"
SERVER_PROCS=$IDENTITY_PROC
STOP_SIGNAL=INT STOP_WAIT=50
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build
release_binary IDENTITY_BIN gatehouse-identity

# ---------------------------------------------------------------------------------------------
# Config. The lockout budgets are set out of reach on purpose: the whole flood comes from
# 127.0.0.1, and with the defaults that address would be throttled (429, nothing hashed) after
# 100 failures, correct client included. This run measures the hash gate behind the lockout.
mkdir -p "$WORK/identity" "$WORK/wrk"
GOOD_HASH=$(printf '%s' "$GOOD_SECRET" | "$IDENTITY_BIN" hash) || die "gatehouse-identity hash failed"
LIMITS=""
if [[ -n $HASH_CONCURRENCY || -n $HASH_QUEUE ]]; then
    LIMITS="limits:"
    [[ -z $HASH_CONCURRENCY ]] || LIMITS+=$'\n'"  hash_concurrency: $HASH_CONCURRENCY"
    [[ -z $HASH_QUEUE ]] || LIMITS+=$'\n'"  hash_queue: $HASH_QUEUE"
fi
{
    identity_yaml_head "$PORT_ISSUER" "$PORT_ADMIN" "$WORK/identity" ES256
    cat <<EOF
lockout:
  max_failures: 1000000000
  ip_max_failures: 1000000000
$LIMITS
clients:
  - id: $GOOD_CLIENT
    secret_hash: '$GOOD_HASH'
    grant_types: [client_credentials]
    audiences: [bench-api]
EOF
} >"$WORK/identity/identity.yaml"
"$IDENTITY_BIN" validate --config "$WORK/identity/identity.yaml" >"$WORK/identity/validate.log" 2>&1 \
    || { cat "$WORK/identity/validate.log" >&2; die "generated identity config invalid"; }

# The flood: client_secret_post with a new unknown client id and wrong secret every request
# (no base64 needed, and nothing an attacker would reuse). Answers are counted by status.
cat >"$WORK/flood.lua" <<'EOF'
local n = 0
status_counts = {}
function setup(thread)
    table.insert(threads, thread)
end
threads = {}
function request()
    n = n + 1
    local body = "grant_type=client_credentials&client_id=intruder-" .. n .. "&client_secret=guess-" .. n
    return wrk.format("POST", "/token", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
function response(status, headers, body)
    status_counts[status] = (status_counts[status] or 0) + 1
end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for status, count in pairs(t:get("status_counts")) do
            total[status] = (total[status] or 0) + count
        end
    end
    local line = "statuses:"
    for status, count in pairs(total) do line = line .. " " .. status .. "=" .. count end
    print(line)
end
EOF
# The correct client: Basic authentication, paced by wrk's delay() to GOOD_RATE requests/s.
GOOD_DELAY_MS=$((1000 * GOOD_CONNECTIONS / GOOD_RATE))
{
    token_lua "$GOOD_CLIENT" "$GOOD_SECRET"
    printf 'function delay()\n    return %s\nend\n' "$GOOD_DELAY_MS"
} >"$WORK/good.lua"

# ---------------------------------------------------------------------------------------------
# Start, pre-check
log "work dir $WORK"
start identity "$WORK/identity.log" env NO_COLOR=1 "$IDENTITY_BIN" --config "$WORK/identity/identity.yaml"
wait_answering identity "http://127.0.0.1:$PORT_ISSUER/jwks.json" 30 -f "http://127.0.0.1:$PORT_ISSUER/jwks.json"
PID=${PID_OF[identity]}

# The correct client's first request pays its argon2 check; later ones are recognised from the
# issuer's verified-secret cache, as a running service's are.
code=$("${CURL[@]}" -o "$WORK/precheck.json" -w '%{http_code}' -u "$GOOD_CLIENT:$GOOD_SECRET" \
    --data 'grant_type=client_credentials' "http://127.0.0.1:$PORT_ISSUER/token") || true
[[ $code == 200 ]] || { cat "$WORK/precheck.json" >&2 2>/dev/null || true; die "pre-check: correct client got HTTP ${code:-none}, expected 200"; }
code=$("${CURL[@]}" -o "$WORK/precheck-bad.json" -w '%{http_code}' \
    --data 'grant_type=client_credentials&client_id=intruder-0&client_secret=guess-0' \
    "http://127.0.0.1:$PORT_ISSUER/token") || true
[[ $code == 401 ]] || die "pre-check: a wrong secret got HTTP ${code:-none}, expected 401"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0; }
metric() { # name -> value (0 when absent)
    { "${CURL[@]}" "http://127.0.0.1:$PORT_ADMIN/metrics" 2>/dev/null || true; } \
        | awk -v m="$1" '$1 == m {print $2; found=1} END {if (!found) print 0}'
}
BASE_RSS=$(rss_kib)
CONC=$(nproc)

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- identity service Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "gatehouse-identity flood benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $CONC CPUs  $(uname -r)"
echo "  issuer: $IDENTITY_BIN, limits: hash_concurrency=${HASH_CONCURRENCY:-default} hash_queue=${HASH_QUEUE:-default}"
echo "  flood: wrk -t1 -c$FLOOD_CONNECTIONS -d$DURATION, wrong secret for a new client id each request"
echo "  correct client: wrk -t1 -c$GOOD_CONNECTIONS -d$DURATION, paced to $GOOD_RATE req/s (delay ${GOOD_DELAY_MS} ms per connection)"
echo "  note: wrk and the issuer share these CPUs; load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------------------------------------
# Run: both clients at once, RSS sampled every second meanwhile.
log "flood and correct client for $DURATION"
wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$DURATION" --timeout 10s -s "$WORK/flood.lua" \
    "http://127.0.0.1:$PORT_ISSUER/token" >"$WORK/wrk/flood.txt" 2>&1 &
FLOOD_PID=$!
wrk -t1 -c"$GOOD_CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$WORK/good.lua" \
    "http://127.0.0.1:$PORT_ISSUER/token" >"$WORK/wrk/good.txt" 2>&1 &
GOOD_PID=$!
PEAK_RSS=$BASE_RSS
: >"$WORK/rss.tsv"
for s in $(seq 1 "$DUR_S"); do
    sleep 1
    kill -0 "$PID" 2>/dev/null || { tail -n 20 "$WORK/identity.log" >&2; die "the issuer died during the flood"; }
    r=$(rss_kib)
    printf '%s\t%s\n' "$s" "$r" >>"$WORK/rss.tsv"
    ((r > PEAK_RSS)) && PEAK_RSS=$r
done
wait "$FLOOD_PID" || echo "identity_flood.sh: warning: the flood's wrk exited non-zero" >&2
wait "$GOOD_PID" || echo "identity_flood.sh: warning: the correct client's wrk exited non-zero" >&2
# Checks still running when wrk stopped finish now: take the last samples after them.
sleep 1
END_RSS=$(rss_kib)
((END_RSS > PEAK_RSS)) && PEAK_RSS=$END_RSS

# ---------------------------------------------------------------------------------------------
# Report
read -r _ GOOD_P99 GOOD_NON2XX GOOD_SOCKERR GOOD_REQS < <(parse_wrk "$WORK/wrk/good.txt")
read -r FLOOD_RPS _ _ FLOOD_SOCKERR FLOOD_REQS < <(parse_wrk "$WORK/wrk/flood.txt")
GOOD_OK=NA
[[ $GOOD_REQS =~ ^[0-9]+$ ]] && GOOD_OK=$((GOOD_REQS - GOOD_NON2XX))
STATUSES=$(sed -n 's/^statuses: *//p' "$WORK/wrk/flood.txt")
QUEUE_FULL=$(metric gatehouse_identity_hash_queue_full_total)
CHECKS=$(metric gatehouse_identity_hash_checks_total)

mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
echo "issuer RSS: before $(mib "$BASE_RSS"), peak $(mib "$PEAK_RSS"), after $(mib "$END_RSS")   (target: peak < 200 MiB: $( ((PEAK_RSS < 204800)) && echo met || echo NOT met))"
echo "correct client: $GOOD_OK of $GOOD_REQS answered 200 (non-2xx $GOOD_NON2XX, socket errors $GOOD_SOCKERR), p99 $GOOD_P99 ms"
echo "flood: $FLOOD_REQS answers ($FLOOD_RPS/s; ${STATUSES:-no status counts}), socket errors $FLOOD_SOCKERR"
echo "issuer: $CHECKS argon2 checks run, $QUEUE_FULL refused with 503 (hash queue full)"
echo "RSS every second (MiB): $(awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $2 / 1024}' "$WORK/rss.tsv")"
if [[ $GOOD_OK == NA || $GOOD_OK == 0 ]]; then
    echo "identity_flood.sh: WARNING: the correct client got no token during the flood" >&2
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $WORK/rss.tsv, $WORK/wrk/"
fi
exit 0
