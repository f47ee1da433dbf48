#!/usr/bin/env bash
# gatehouse-authz benchmark: policy decisions per second over HTTP (POST /authz/v1/authorize,
# the batch endpoint with 10 checks, and ?explain=true), with nginx answering the same POST
# path with a fixed JSON body of the same size as the HTTP floor of this box. Same wrk command
# for every target, interleaved over several rounds; medians reported.
# See benches/README.md ("authz.sh") for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=16  THREADS=1 (wrk)  NGINX_WORKERS=1
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   AUTHZ_BIN=path (default: `cargo build --release -p gatehouse-authz` is run, then
#   target/release/gatehouse-authz is used; an explicit path is used as is, never built)
#   KEEP_WORKDIR=1 (keep config, policies, decision log, logs and raw wrk output)
#
# Exit status: 0 on success; 1 if the build fails, a component fails to start, the pre-check
# fails, a run gets non-2xx answers, or a component dies during the benchmark; 2 on bad options.
# Never non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=authz.sh   # for messages, and to recognise a live run (benches/lib.sh)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------------------------------------
# Options
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-1}
WARMUP=${WARMUP:-2s}
COOLDOWN=${COOLDOWN:-1}
SMOKE=${SMOKE:-0}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
AUTHZ_BIN=${AUTHZ_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi

# Fixed loopback ports.
PORT_AUTHZ=18500       # gatehouse-authz decision listener (/authz/v1/authorize, .../batch)
PORT_ADMIN=18501       # gatehouse-authz admin listener (/metrics; not benchmarked)
PORT_NGINX=18502       # nginx answering the same POST path with a fixed JSON decision
ALL_PORTS=("$PORT_AUTHZ" "$PORT_ADMIN" "$PORT_NGINX")

# The service's process name as /proc/PID/comm (and ps, ss -p) show it (15 chars, not truncated).
AUTHZ_PROC=gatehouse-authz
# Worker threads of the service under test (authz.yaml `threads`): the box has 2 CPUs, and wrk
# shares them.
AUTHZ_THREADS=2
BATCH_CHECKS=10

check_options NGINX_WORKERS   # sets DUR_S, WARMUP_S
require_tools " (scripts/setup.sh bench installs the peers)" wrk curl ss python3 setsid awk
# nginx is only the reference peer: without it the service is still measured.
HAVE_NGINX=1
if ! command -v nginx >/dev/null 2>&1; then
    HAVE_NGINX=0
    echo "authz.sh: nginx not found: skipping the 'nginx' reference peer (apt-get install nginx-light, or scripts/setup.sh bench)" >&2
fi

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 5)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh; same scheme as run.sh, own glob)
WORK_PREFIX=gh-authz-bench
RUN_KIND="authz benchmark"
SERVER_PROCS="nginx|$AUTHZ_PROC"
# SIGINT: fast shutdown for both nginx and Pingora (SIGTERM would make the service wait out its
# 2 s grace period). SIGKILL after 5 s.
STOP_SIGNAL=INT STOP_WAIT=50
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build (cargo is a no-op when the binary is up to date; it waits if another cargo holds the lock)
release_binary AUTHZ_BIN gatehouse-authz

# ---------------------------------------------------------------------------------------------
# Configs
mkdir -p "$WORK/authz/policies" "$WORK/nginx/tmp" "$WORK/wrk"

# The shipped policies, copied so that nothing here can touch conf/ (the service watches its
# policy directory and reloads on change).
cp -R "$ROOT/conf/policies/." "$WORK/authz/policies/"

# As conf/authz.yaml, on the benchmark's ports, with the decision log in the work dir: every
# decision is written (through the bounded queue; a full queue drops and counts the line).
cat >"$WORK/authz/authz.yaml" <<EOF
listen: 127.0.0.1:$PORT_AUTHZ
admin: 127.0.0.1:$PORT_ADMIN
policies: policies
threads: $AUTHZ_THREADS
max_body_bytes: 262144
max_batch_checks: 100
decision_log:
  path: decisions.log
  queue: 8192
  max_file_bytes: 67108864
  keep_files: 5
  redact:
    - principal.attributes.email
EOF

"$AUTHZ_BIN" validate --config "$WORK/authz/authz.yaml" >"$WORK/authz/validate.log" 2>&1 \
    || { cat "$WORK/authz/validate.log" >&2; die "generated authz config invalid"; }

# The requests: the scenarios of conf/policies/documents_test.yaml, each with the answer the
# shipped policies give it (checked in the pre-check). Fixed times, so the answers do not depend
# on when the benchmark runs.
OFFICE_HOURS='"ip":"203.0.113.9","time":"2026-11-23T10:00:00+01:00"'   # Monday 10:00 Paris, remote
NIGHT_REMOTE='"ip":"203.0.113.9","time":"2026-11-23T23:00:00+01:00"'   # Monday 23:00, remote
NIGHT_OFFICE='"ip":"10.1.2.3","time":"2026-11-23T23:00:00+01:00"'      # Monday 23:00, office network
principal_json() { # sub roles-json
    printf '{"sub":"%s","roles":%s,"attributes":{"email":"%s@example.com","department":"engineering"}}' "$1" "$2" "$1"
}
document_json() { # id owner ("" = none)
    local owner=""
    if [[ -n $2 ]]; then owner=",\"owner\":\"$2\""; fi
    printf '{"type":"document","id":"%s"%s,"attributes":{"classification":"internal"}}' "$1" "$owner"
}
authorize_json() { # sub roles-json action context-fields
    printf '{"principal":%s,"resource":%s,"action":"%s","context":{%s,"tenant":"acme"}}' \
        "$(principal_json "$1" "$2")" "$(document_json d1 alice)" "$3" "$4"
}
# name | body | expected allow | expected rule ("" = none matched)
SCENARIOS=(
    "owner-edit|$(authorize_json alice '[]' edit "$OFFICE_HOURS")|true|owner-or-admin-edits"
    "editor-view|$(authorize_json bob '["editor"]' view "$OFFICE_HOURS")|true|editors-and-owners-view"
    "editor-edit|$(authorize_json bob '["editor"]' edit "$OFFICE_HOURS")|false|"
    "night-remote|$(authorize_json alice '[]' view "$NIGHT_REMOTE")|false|outside-hours-outside-office"
    "admin-delete|$(authorize_json carol '["admin"]' delete "$OFFICE_HOURS")|true|owner-or-admin-edits"
    "night-office|$(authorize_json alice '[]' view "$NIGHT_OFFICE")|true|editors-and-owners-view"
)
BATCH_BODY=$(
    checks=""
    for c in "d1 alice view" "d1 alice edit" "d1 alice delete" "d2 bob view" "d2 bob edit" \
             "d3 - view" "d3 - delete" "d4 alice share" "d5 carol view" "d6 alice view"; do
        read -r id owner action <<<"$c"
        if [[ $owner == - ]]; then owner=""; fi
        checks+="${checks:+,}{\"resource\":$(document_json "$id" "$owner"),\"action\":\"$action\"}"
    done
    printf '{"principal":%s,"context":{%s,"tenant":"acme"},"checks":[%s]}' \
        "$(principal_json alice '[]')" "$OFFICE_HOURS" "$checks"
)

PATH_AUTHORIZE=/authz/v1/authorize
PATH_BATCH=/authz/v1/authorize/batch

# wrk scripts. The requests are formatted once per thread (init); request() only hands them out
# in turn, so wrk spends no Lua time building requests.
write_lua() { # file path body...
    local file=$1 path=$2
    shift 2
    {
        echo "local bodies = {"
        local b
        for b in "$@"; do printf '  [=[%s]=],\n' "$b"; done
        cat <<EOF
}
local requests, n = {}, 0
function init(args)
  for _, body in ipairs(bodies) do
    requests[#requests + 1] = wrk.format("POST", "$path", {["Content-Type"] = "application/json"}, body)
  end
end
function request()
  n = n % #requests + 1
  return requests[n]
end
EOF
    } >"$file"
}
SCENARIO_BODIES=()
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r _ body _ _ <<<"$s"
    SCENARIO_BODIES+=("$body")
done
write_lua "$WORK/authorize.lua" "$PATH_AUTHORIZE" "${SCENARIO_BODIES[@]}"
write_lua "$WORK/explain.lua" "$PATH_AUTHORIZE?explain=true" "${SCENARIO_BODIES[@]}"
write_lua "$WORK/batch10.lua" "$PATH_BATCH" "$BATCH_BODY"

# ---------------------------------------------------------------------------------------------
# Start the service (start, wait_answering: benches/lib.sh).
wait_ready() { wait_answering "$1" "$2" 30 -f "$2"; }   # name url

log "work dir $WORK"
start authz "$WORK/authz.log" env NO_COLOR=1 RUST_LOG=warn "$AUTHZ_BIN" --config "$WORK/authz/authz.yaml"
wait_ready authz "http://127.0.0.1:$PORT_ADMIN/healthz"

# ---------------------------------------------------------------------------------------------
# Pre-check: every scenario answers 200 with the decision the shipped policies give it; the
# batch answers 200 with 10 results. The first scenario's answer becomes nginx's fixed body.
post() { # out-file url body -> prints the HTTP status
    "${CURL[@]}" -o "$1" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$3" "$2" 2>"$1.err" || true
}
log "pre-check"
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r name body allow rule <<<"$s"
    out="$WORK/precheck.$name"
    code=$(post "$out" "http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE" "$body")
    if [[ $code != 200 ]]; then
        cat "$out.err" "$out" >&2 2>/dev/null || true
        echo >&2
        die "pre-check: POST $PATH_AUTHORIZE ($name) answered HTTP ${code:-none}, expected 200"
    fi
    python3 - "$out" "$name" "$allow" "$rule" <<'EOF' || die "pre-check: $name did not get the expected decision (see above); did conf/policies change?"
import json, sys
answer, name, allow, rule = sys.argv[1:5]
raw = open(answer, "rb").read()
d = json.loads(raw)
got = (str(d.get("allow")).lower(), d.get("rule") or "")
print(f"  {name:<13} 200  allow={got[0]:<5} rule={got[1] or '-':<30} {len(raw)} bytes")
if got != (allow, rule):
    sys.exit(f"  {name}: expected allow={allow} rule={rule or '-'}; reason: {d.get('reason')}")
EOF
done
out="$WORK/precheck.explain"
code=$(post "$out" "http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE?explain=true" "${SCENARIO_BODIES[0]}")
[[ $code == 200 ]] || { cat "$out.err" "$out" >&2 2>/dev/null || true; die "pre-check: POST $PATH_AUTHORIZE?explain=true answered HTTP ${code:-none}, expected 200"; }
grep -q '"explanation"' "$out" || die "pre-check: ?explain=true answered without an explanation"
echo "  explain       200  $(wc -c <"$out") bytes (owner-edit, with its explanation)"
out="$WORK/precheck.batch10"
code=$(post "$out" "http://127.0.0.1:$PORT_AUTHZ$PATH_BATCH" "$BATCH_BODY")
[[ $code == 200 ]] || { cat "$out.err" "$out" >&2 2>/dev/null || true; die "pre-check: POST $PATH_BATCH answered HTTP ${code:-none}, expected 200"; }
python3 - "$out" "$BATCH_CHECKS" <<'EOF' || die "pre-check: the batch answer is not what was expected (see above)"
import json, sys
raw = open(sys.argv[1], "rb").read()
results = json.loads(raw).get("results", [])
allowed = sum(1 for r in results if r.get("allow"))
print(f"  batch10       200  {len(results)} results ({allowed} allow, {len(results) - allowed} deny), {len(raw)} bytes")
if len(results) != int(sys.argv[2]):
    sys.exit(f"  expected {sys.argv[2]} results")
EOF

# nginx: the same POST path answered with the owner-edit decision's exact bytes, and the same
# Content-Type and Cache-Control as the service. Inside an nginx single-quoted string, \ and '
# are escaped; a '$' would start a variable, so the body must not contain one.
NGINX_BODY_FILE="$WORK/precheck.owner-edit"
if grep -q '\$' "$NGINX_BODY_FILE"; then die "the decision body contains '\$', which nginx's 'return' would expand"; fi
NGINX_BODY=$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" "$NGINX_BODY_FILE")
{
    nginx_common "$WORK/nginx" "$NGINX_WORKERS"
    cat <<EOF
http {
$(nginx_http_common "$WORK/nginx")
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        location = $PATH_AUTHORIZE {
            default_type application/json;
            add_header Cache-Control no-store;
            return 200 '$NGINX_BODY';
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

TARGETS=(authorize batch10 explain)
if ((HAVE_NGINX)); then
    nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        2>"$WORK/nginx/configtest.log" || { cat "$WORK/nginx/configtest.log" >&2; die "nginx config invalid"; }
    start nginx "$WORK/nginx.log" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
    wait_answering nginx "http://127.0.0.1:$PORT_NGINX$PATH_AUTHORIZE" 30 -f -X POST --data-binary '{}' \
        "http://127.0.0.1:$PORT_NGINX$PATH_AUTHORIZE"
    code=$(post "$WORK/precheck.nginx" "http://127.0.0.1:$PORT_NGINX$PATH_AUTHORIZE" "${SCENARIO_BODIES[0]}")
    [[ $code == 200 ]] || die "pre-check: nginx answered POST $PATH_AUTHORIZE with HTTP ${code:-none}, expected 200"
    cmp -s "$WORK/precheck.nginx" "$NGINX_BODY_FILE" || die "pre-check: nginx's body differs from the service's decision"
    echo "  nginx         200  $(wc -c <"$WORK/precheck.nginx") bytes: the owner-edit decision, byte for byte"
    TARGETS+=(nginx)
fi
# Keep-alive: two requests on one curl connection; %{num_connects} is printed per transfer, so
# "1 0" means the second request reused the connection. A server that closes after every
# answer makes wrk reconnect for each request: its numbers then include a TCP handshake per
# request, and wrk reports each close as a socket read error. That is reported, not fatal.
keepalive() { # url body -> prints "reused" or "closed"
    local counts
    counts=$("${CURL[@]}" -o /dev/null -o /dev/null -w '%{num_connects} ' -H 'Content-Type: application/json' \
        --data-binary "$2" "$1" "$1" 2>/dev/null) || true
    if [[ $counts == "1 0 " ]]; then echo reused; else echo "closed (new connections per request: ${counts% })"; fi
}
declare -A KEEPALIVE=()
KEEPALIVE[authz]=$(keepalive "http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE" "${SCENARIO_BODIES[0]}")
echo "  keep-alive    authz: ${KEEPALIVE[authz]}"
if ((HAVE_NGINX)); then
    KEEPALIVE[nginx]=$(keepalive "http://127.0.0.1:$PORT_NGINX$PATH_AUTHORIZE" "${SCENARIO_BODIES[0]}")
    echo "  keep-alive    nginx: ${KEEPALIVE[nginx]}"
fi
if [[ ${KEEPALIVE[authz]} != reused ]]; then
    echo "authz.sh: WARNING: gatehouse-authz closes the connection after every answer, so wrk reconnects for every request (a TCP handshake each, counted by wrk as socket read errors). Check that its answers carry Content-Length:" >&2
    "${CURL[@]}" -s -D - -o /dev/null -H 'Content-Type: application/json' --data-binary "${SCENARIO_BODIES[0]}" \
        "http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE" 2>/dev/null | sed 's/^/    /' >&2 || true
fi

log "components up (authz :$PORT_AUTHZ, admin :$PORT_ADMIN$( ((HAVE_NGINX)) && echo ", nginx :$PORT_NGINX"))"

declare -A URL_OF=([authorize]="http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE"
                   [batch10]="http://127.0.0.1:$PORT_AUTHZ$PATH_BATCH"
                   [explain]="http://127.0.0.1:$PORT_AUTHZ$PATH_AUTHORIZE?explain=true"
                   [nginx]="http://127.0.0.1:$PORT_NGINX$PATH_AUTHORIZE")
declare -A SCRIPT_OF=([authorize]="$WORK/authorize.lua" [batch10]="$WORK/batch10.lua"
                      [explain]="$WORK/explain.lua" [nginx]="$WORK/authorize.lua")

# ---------------------------------------------------------------------------------------------
# Measurement

check_alive() {
    local name
    for name in "${!PID_OF[@]}"; do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            echo "authz.sh: ERROR: $name (pid ${PID_OF[$name]}) died during the benchmark; last output:" >&2
            tail -n 20 "$WORK/$name.log" >&2 || true
            die "a component died during the benchmark; numbers after that point are not valid"
        fi
    done
}

wrk_cmd() { # target duration [--latency]
    local t=$1 d=$2
    shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$d" "$@" -s "${SCRIPT_OF[$t]}" "${URL_OF[$t]}"
}

# Non-2xx answers mean the numbers measure errors, not decisions: stop, and show one answer.
fail_non2xx() { # target count wrk-output
    echo "authz.sh: ERROR: $1 got $2 non-2xx/3xx responses (wrk output: $3)" >&2
    sed 's/^/    /' "$3" >&2
    echo "  the same kind of request now:" >&2
    local body=${SCENARIO_BODIES[0]}
    if [[ $1 == batch10 ]]; then body=$BATCH_BODY; fi
    "${CURL[@]}" -i -H 'Content-Type: application/json' --data-binary "$body" "${URL_OF[$1]}" >&2 || true
    echo >&2
    tail -n 10 "$WORK/authz.log" >&2 || true
    die "non-2xx responses from $1; the benchmark is invalid"
}

RESULTS="$WORK/results.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\trequests\n' >"$RESULTS"

run_one() { # round target
    local round=$1 t=$2 out="$WORK/wrk/r$1-$2.txt"
    wrk_cmd "$t" "$DURATION" --latency >"$out" 2>&1 \
        || echo "authz.sh: warning: wrk exited non-zero for $t (round $round)" >&2
    local rps p99 non2xx sockerr reqs
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" "$reqs" >>"$RESULTS"
    local errs=""
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    printf '  %-10s %10s req/s   p99 %8s ms%s\n' "$t" "$rps" "$p99" "$errs"
    if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$out"; fi
    if [[ $rps == NA ]]; then
        sed 's/^/    /' "$out" >&2
        die "could not read Requests/sec from wrk's output for $t"
    fi
}

# One value from the service's /metrics: the sum of every sample of the metric (all labels).
metric() { # name
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%.0f\n", s }' "$WORK/metrics.txt"
}
metric_float() { # name
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%.9g\n", s }' "$WORK/metrics.txt"
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- authz conf/policies Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "gatehouse-authz benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  service: $AUTHZ_BIN ($(date -r "$AUTHZ_BIN" '+built %Y-%m-%d %H:%M'), threads: $AUTHZ_THREADS, decision log on, policies: copy of conf/policies)"
if ((HAVE_NGINX)); then
    echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //') ($NGINX_WORKERS worker(s), return 200 with the decision's bytes), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
else
    echo "  nginx: not installed, reference peer skipped; $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
fi
echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s <target>.lua   rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE"
echo "  note: wrk, the service's $AUTHZ_THREADS threads (and its decision-log writer) and nginx share these $(nproc) CPUs; load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
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

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$BATCH_CHECKS" <<'EOF'
checks = int(sys.argv[2])
order = ["authorize", "batch10", "explain", "nginx"]
label = {"authorize": "authorize", "batch10": f"batch ({checks} checks)",
         "explain": "authorize?explain", "nginx": "nginx (fixed body)"}
per_request = {"batch10": checks}

hdr = ["target", "median req/s", "decisions/s", "median p99 ms", "req/s vs nginx", "req/s min..max", "socket errors"]
table = []
for t in order:
    if t not in rps:
        continue
    decisions = "-" if t == "nginx" else f"{med[t] * per_request.get(t, 1):.0f}"
    vs = "1.00 (ref)" if t == "nginx" else ratio(t, "nginx")
    table.append([label[t], f"{med[t]:.0f}", decisions, f"{medp[t]:.2f}" if t in medp else "n/a", vs,
                  f"{min(rps[t]):.0f}..{max(rps[t]):.0f}", str(sockerr.get(t, 0))])
print_table(hdr, table)
print()
print(f"authorize/nginx = {ratio('authorize', 'nginx')}"
      + ("" if "nginx" in med else "   (nginx not installed: no reference peer)"))
if "batch10" in med and "authorize" in med:
    print(f"batch decisions/s / authorize decisions/s = {med['batch10'] * checks / med['authorize']:.2f}"
          f"   ({med['batch10'] * checks:.0f} vs {med['authorize']:.0f}: one HTTP request carries {checks} decisions)")
if "explain" in med and "authorize" in med:
    print(f"explain/authorize = {ratio('explain', 'authorize')}")
EOF

# The service's own account of the run: decisions, time in the evaluator, and the decision log.
# Decisions in flight when wrk stops are made but not counted by wrk, hence "at least".
sleep 0.5
"${CURL[@]}" -o "$WORK/metrics.txt" "http://127.0.0.1:$PORT_ADMIN/metrics" || die "could not read /metrics"
DECISIONS=$(metric gatehouse_authz_decisions_total)
DROPPED=$(metric gatehouse_authz_decision_log_dropped_total)
EVAL_SUM=$(metric_float gatehouse_authz_evaluation_duration_seconds_sum)
EVAL_COUNT=$(metric gatehouse_authz_evaluation_duration_seconds_count)
COUNTED=0
for f in "$WORK"/wrk/*.txt; do
    [[ -f $f && $f != *nginx.txt ]] || continue
    read -r _ _ _ _ reqs < <(parse_wrk "$f")
    [[ $reqs =~ ^[0-9]+$ ]] || continue
    if [[ $f == *batch10.txt ]]; then reqs=$((reqs * BATCH_CHECKS)); fi
    COUNTED=$((COUNTED + reqs))
done
LOG_LINES=$({ cat "$WORK"/authz/decisions.log* 2>/dev/null || true; } | wc -l)
ROTATED=$(find "$WORK/authz" -maxdepth 1 -name 'decisions.log.*' | wc -l)
python3 - "$DECISIONS" "$DROPPED" "$EVAL_SUM" "$EVAL_COUNT" "$COUNTED" "$LOG_LINES" "$ROTATED" <<'EOF'
import sys
decisions, dropped, eval_sum, eval_count, counted, lines, rotated = sys.argv[1:8]
decisions, dropped, counted, lines, rotated = int(decisions), int(dropped), int(counted), int(lines), int(rotated)
eval_sum, eval_count = float(eval_sum), int(eval_count)
share = f"{100 * dropped / decisions:.1f}%" if decisions else "n/a"
print(f"service: {decisions} decisions (wrk counted at least {counted} in its answers, plus the pre-check's)")
if eval_count:
    print(f"  in-process evaluation, as the service measures it: mean {1e6 * eval_sum / eval_count:.2f} µs per decision "
          f"(gatehouse_authz_evaluation_duration_seconds; HTTP, JSON and the decision log not included)")
print(f"  decision log: gatehouse_authz_decision_log_dropped_total = {dropped} ({share} of decisions dropped: the writer's queue was full); "
      f"{lines} lines in the log files ({rotated} rotated file(s) kept; older ones are deleted by rotation)")
EOF
if [[ ${KEEPALIVE[authz]} != reused ]]; then
    echo "keep-alive: gatehouse-authz ${KEEPALIVE[authz]}: every request above paid a new TCP connection; socket errors are those closes"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $WORK/wrk/, metrics: $WORK/metrics.txt"
fi
exit 0
