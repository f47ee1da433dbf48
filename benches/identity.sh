#!/usr/bin/env bash
# gatehouse-identity benchmark: token issuance (client_credentials, RS256 and ES256) and JWKS
# serving, with nginx serving the same JWKS bytes as a static file for reference. Same wrk
# command for every target, interleaved over several rounds; medians reported.
# See benches/README.md ("identity.sh") for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=16  THREADS=1 (wrk)  NGINX_WORKERS=1
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   IDENTITY_BIN=path (default: `cargo build --release -p gatehouse-identity` is run, then
#   target/release/gatehouse-identity is used; an explicit path is used as is, never built)
#   KEEP_WORKDIR=1 (keep config, keys, audit log, logs and raw wrk output)
#
# Exit status: 0 on success; 1 if the build fails, a component fails to start, the pre-check
# fails, a run gets non-2xx answers, or the issuer dies during the benchmark; 2 on bad options.
# Never non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=identity.sh   # for messages, and to recognise a live run (benches/lib.sh)
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
IDENTITY_BIN=${IDENTITY_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi

# Fixed loopback ports.
PORT_ISSUER=18400      # gatehouse-identity public listener (/token, /jwks.json)
PORT_ADMIN=18401       # gatehouse-identity admin listener (not benchmarked)
PORT_NGINX=18402       # nginx serving the issuer's JWKS as a static file
ALL_PORTS=("$PORT_ISSUER" "$PORT_ADMIN" "$PORT_NGINX")

# The issuer's process name as /proc/PID/comm (and ps, ss -p) show it: truncated to 15 chars.
IDENTITY_PROC=gatehouse-ident

# Clients in the generated config (secrets are for this throwaway config only).
RS_CLIENT=bench-svc RS_SECRET=bench-svc-secret
ES_CLIENT=bench-es ES_SECRET=bench-es-secret

check_options NGINX_WORKERS   # sets DUR_S, WARMUP_S
require_tools " (scripts/setup.sh bench installs the peers)" wrk curl ss python3 setsid awk base64
# nginx is only the JWKS reference peer: without it the issuer is still measured.
HAVE_NGINX=1
if ! command -v nginx >/dev/null 2>&1; then
    HAVE_NGINX=0
    echo "identity.sh: nginx not found: skipping the 'jwks nginx' reference peer (apt-get install nginx-light, or scripts/setup.sh bench)" >&2
fi

# Never let a proxy setting send the probes anywhere but loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
CURL=(curl -sS --noproxy '*' --max-time 5)

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh; same scheme as run.sh, own glob)
WORK_PREFIX=gh-identity-bench
RUN_KIND="identity benchmark"
SERVER_PROCS="nginx|$IDENTITY_PROC"
# SIGINT: fast shutdown for both nginx and Pingora (SIGTERM would make the issuer wait out
# its hard-coded 2 s grace period). SIGKILL after 5 s.
STOP_SIGNAL=INT STOP_WAIT=50
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build (cargo is a no-op when the binary is up to date; it waits if another cargo holds the lock)
release_binary IDENTITY_BIN gatehouse-identity

# ---------------------------------------------------------------------------------------------
# Configs
mkdir -p "$WORK/identity" "$WORK/nginx/tmp" "$WORK/nginx/html" "$WORK/wrk"

hash_secret() {
    local phc
    phc=$(printf '%s' "$1" | "$IDENTITY_BIN" hash) || die "gatehouse-identity hash failed"
    # shellcheck disable=SC2016  # a literal '$'
    [[ $phc == '$argon2id$'* ]] || die "gatehouse-identity hash printed '$phc', not an argon2id PHC string"
    echo "$phc"
}
RS_HASH=$(hash_secret "$RS_SECRET")
ES_HASH=$(hash_secret "$ES_SECRET")

# Keys are generated on first start (one RS256 and one ES256 key); no rotation during the run.
# PHC strings are quoted: '$' and ',' are safe in YAML, but quoting keeps it obvious.
{
    identity_yaml_head "$PORT_ISSUER" "$PORT_ADMIN" "$WORK/identity" "RS256, ES256"
    cat <<EOF
clients:
  - id: $RS_CLIENT
    secret_hash: '$RS_HASH'
    grant_types: [client_credentials]
    audiences: [bench-api]
    scopes: [bench:read]
    signing_alg: RS256
  - id: $ES_CLIENT
    secret_hash: '$ES_HASH'
    grant_types: [client_credentials]
    audiences: [bench-api]
    scopes: [bench:read]
    signing_alg: ES256
EOF
} >"$WORK/identity/identity.yaml"

"$IDENTITY_BIN" validate --config "$WORK/identity/identity.yaml" >"$WORK/identity/validate.log" 2>&1 \
    || { cat "$WORK/identity/validate.log" >&2; die "generated identity config invalid"; }

# wrk scripts: one POST /token per request, client_secret_basic (token_lua, benches/lib.sh).
token_lua "$RS_CLIENT" "$RS_SECRET" >"$WORK/token-rs256.lua"
token_lua "$ES_CLIENT" "$ES_SECRET" >"$WORK/token-es256.lua"

# The issuer sends Cache-Control: public, max-age=<keys.jwks_max_age> (default 300 s); nginx
# sends the same, so both answers carry the same body and nearly the same headers.
# Tuned for one small static file: open_file_cache saves open/fstat/close per request, and
# sendfile off sends headers and body in one writev instead of writev + sendfile. On a 2-CPU box
# this about doubles nginx's req/s for this 0.7 kB file (measured while writing this script).
{
    nginx_common "$WORK/nginx" "$NGINX_WORKERS"
    cat <<EOF
http {
$(nginx_http_common "$WORK/nginx")
    sendfile off;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    server {
        listen 127.0.0.1:$PORT_NGINX backlog=4096;
        root $WORK/nginx/html;
        location = /jwks.json {
            default_type application/jwk-set+json;
            add_header Cache-Control "public, max-age=300";
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"
if ((HAVE_NGINX)); then
    nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        2>"$WORK/nginx/configtest.log" || { cat "$WORK/nginx/configtest.log" >&2; die "nginx config invalid"; }
fi

# ---------------------------------------------------------------------------------------------
# Start components (start, wait_answering: benches/lib.sh).
wait_ready() { wait_answering "$1" "$2" 30 -f "$2"; }   # name url

log "work dir $WORK"
start identity "$WORK/identity.log" env NO_COLOR=1 "$IDENTITY_BIN" --config "$WORK/identity/identity.yaml"
wait_ready identity "http://127.0.0.1:$PORT_ISSUER/jwks.json"

# The exact JWKS bytes the issuer serves become nginx's static file.
"${CURL[@]}" -f -o "$WORK/nginx/html/jwks.json" "http://127.0.0.1:$PORT_ISSUER/jwks.json" \
    || die "could not fetch /jwks.json from the issuer"
JWKS_BYTES=$(wc -c <"$WORK/nginx/html/jwks.json")

TARGETS=(token_rs256 token_es256 jwks_issuer)
if ((HAVE_NGINX)); then
    start nginx "$WORK/nginx.log" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
    wait_ready nginx "http://127.0.0.1:$PORT_NGINX/jwks.json"
    TARGETS+=(jwks_nginx)
fi
log "components up (issuer :$PORT_ISSUER, admin :$PORT_ADMIN$( ((HAVE_NGINX)) && echo ", nginx :$PORT_NGINX"))"

declare -A URL_OF=([token_rs256]="http://127.0.0.1:$PORT_ISSUER/token"
                   [token_es256]="http://127.0.0.1:$PORT_ISSUER/token"
                   [jwks_issuer]="http://127.0.0.1:$PORT_ISSUER/jwks.json"
                   [jwks_nginx]="http://127.0.0.1:$PORT_NGINX/jwks.json")
declare -A SCRIPT_OF=([token_rs256]="$WORK/token-rs256.lua" [token_es256]="$WORK/token-es256.lua"
                      [jwks_issuer]="" [jwks_nginx]="")

# ---------------------------------------------------------------------------------------------
# Pre-check (token_precheck, benches/lib.sh): tokens are 200, a JWT signed with the client's
# algorithm by a key the JWKS lists. This also warms the issuer's verified-secret cache: only the
# first request per client pays the argon2id verification (tens of ms); later ones cost one HMAC.

log "pre-check"
token_precheck "$RS_CLIENT" "http://127.0.0.1:$PORT_ISSUER" "$WORK/nginx/html/jwks.json" "$RS_CLIENT" "$RS_SECRET" RS256
token_precheck "$ES_CLIENT" "http://127.0.0.1:$PORT_ISSUER" "$WORK/nginx/html/jwks.json" "$ES_CLIENT" "$ES_SECRET" ES256
# JWKS: every target answers 200 with the same bytes.
for t in "${TARGETS[@]}"; do
    [[ $t == jwks_* ]] || continue
    code=$("${CURL[@]}" -o "$WORK/precheck.$t" -w '%{http_code}' "${URL_OF[$t]}" 2>"$WORK/precheck.$t.err") || true
    [[ $code == 200 ]] || { cat "$WORK/precheck.$t.err" >&2 || true; die "pre-check: GET ${URL_OF[$t]} answered HTTP ${code:-none}, expected 200"; }
    cmp -s "$WORK/precheck.$t" "$WORK/nginx/html/jwks.json" || die "pre-check: ${URL_OF[$t]} serves different JWKS bytes"
done
echo "  jwks.json  200  $JWKS_BYTES bytes, $(python3 -c 'import json,sys; ks=json.load(open(sys.argv[1]))["keys"]; print(len(ks), "keys:", ", ".join(k.get("alg","?") + " " + k.get("kid","?")[:12] + "…" for k in ks))' "$WORK/nginx/html/jwks.json")$( ((HAVE_NGINX)) && echo "; nginx serves identical bytes")"

# ---------------------------------------------------------------------------------------------
# Measurement

check_alive() {
    local name
    for name in "${!PID_OF[@]}"; do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            echo "identity.sh: ERROR: $name (pid ${PID_OF[$name]}) died during the benchmark; last output:" >&2
            tail -n 20 "$WORK/$name.log" >&2 || true
            die "a component died during the benchmark; numbers after that point are not valid"
        fi
    done
}

wrk_cmd() { # target duration [--latency]
    local t=$1 d=$2
    shift 2
    local cmd=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$d" "$@")
    if [[ -n ${SCRIPT_OF[$t]} ]]; then cmd+=(-s "${SCRIPT_OF[$t]}"); fi
    cmd+=("${URL_OF[$t]}")
    "${cmd[@]}"
}

# Non-2xx answers mean the numbers measure errors, not tokens: stop, and show one answer.
fail_non2xx() { # target count wrk-output
    echo "identity.sh: ERROR: $1 got $2 non-2xx/3xx responses (wrk output: $3)" >&2
    sed 's/^/    /' "$3" >&2
    # The same request once more (the wrk script's headers and body), to show the answer.
    echo "  the same request now:" >&2
    if [[ -n ${SCRIPT_OF[$1]} ]]; then
        local auth
        auth=$(sed -n 's/^wrk.headers\["Authorization"\] = "\(.*\)"$/\1/p' "${SCRIPT_OF[$1]}")
        "${CURL[@]}" -i -H "Authorization: $auth" -H 'Content-Type: application/x-www-form-urlencoded' \
            --data 'grant_type=client_credentials' "${URL_OF[$1]}" >&2 || true
    else
        "${CURL[@]}" -i "${URL_OF[$1]}" 2>&1 | head -20 >&2 || true
    fi
    echo >&2
    tail -n 10 "$WORK/identity.log" >&2 || true
    die "non-2xx responses from $1; the benchmark is invalid"
}

RESULTS="$WORK/results.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\trequests\n' >"$RESULTS"

run_one() { # round target
    local round=$1 t=$2 out="$WORK/wrk/r$1-$2.txt"
    wrk_cmd "$t" "$DURATION" --latency >"$out" 2>&1 \
        || echo "identity.sh: warning: wrk exited non-zero for $t (round $round)" >&2
    local rps p99 non2xx sockerr reqs
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" "$reqs" >>"$RESULTS"
    local errs=""
    if ((sockerr > 0)); then errs+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    printf '  %-12s %10s req/s   p99 %8s ms%s\n' "$t" "$rps" "$p99" "$errs"
    if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$out"; fi
    if [[ $rps == NA ]]; then
        sed 's/^/    /' "$out" >&2
        die "could not read Requests/sec from wrk's output for $t"
    fi
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- identity Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
echo
echo "gatehouse-identity benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  issuer: $IDENTITY_BIN ($(date -r "$IDENTITY_BIN" '+built %Y-%m-%d %H:%M'), 2 worker threads, fixed in identity/src/server.rs)"
if ((HAVE_NGINX)); then
    echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //') ($NGINX_WORKERS worker(s), static /jwks.json), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
else
    echo "  nginx: not installed, reference peer skipped; $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
fi
echo "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency   rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE"
echo "  note: wrk, the issuer's 2 threads and nginx share these $(nproc) CPUs; load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
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
report_py "$RESULTS" <<'EOF'
order = ["token_rs256", "token_es256", "jwks_issuer", "jwks_nginx"]
label = {"token_rs256": "tokens RS256", "token_es256": "tokens ES256",
         "jwks_issuer": "jwks issuer", "jwks_nginx": "jwks nginx"}

ratio_col = {
    "token_rs256": "1.00 (ES256/RS256 ref)",
    "token_es256": f"{ratio('token_es256', 'token_rs256')} ES256/RS256",
    "jwks_issuer": f"{ratio('jwks_issuer', 'jwks_nginx')} issuer/nginx",
    "jwks_nginx": "1.00 (issuer/nginx ref)",
}
hdr = ["target", "median req/s", "median p99 ms", "ratio", "req/s min..max", "socket errors"]
table = []
for t in order:
    if t not in rps:
        continue
    table.append([label[t], f"{med[t]:.0f}", f"{medp[t]:.2f}" if t in medp else "n/a", ratio_col[t],
                  f"{min(rps[t]):.0f}..{max(rps[t]):.0f}", str(sockerr.get(t, 0))])
print_table(hdr, table, left=(0, 3))
print()
print(f"tokens ES256/RS256 = {ratio('token_es256', 'token_rs256')}")
print(f"jwks issuer/nginx  = {ratio('jwks_issuer', 'jwks_nginx')}"
      + ("" if "jwks_nginx" in med else "   (nginx not installed: no reference peer)"))
EOF

# Cross-check: every token the issuer signed is one audit line (written by a background thread).
# wrk counts only completed responses; requests in flight when a run stops (at most
# CONNECTIONS per run) were usually signed and audited too, so audit - counted is in
# [0, CONNECTIONS x token runs].
sleep 0.5
AUDIT_LINES=$(grep -c '"event":"token_issued"' "$WORK/identity/audit.log" 2>/dev/null || true)
TOKENS_COUNTED=2   # the pre-check
TOKEN_RUNS=0
for f in "$WORK"/wrk/*token_*.txt; do
    [[ -f $f ]] || continue
    read -r _ _ _ _ reqs < <(parse_wrk "$f")
    if [[ $reqs =~ ^[0-9]+$ ]]; then TOKENS_COUNTED=$((TOKENS_COUNTED + reqs)); fi
    TOKEN_RUNS=$((TOKEN_RUNS + 1))
done
AUDIT_DIFF=$((${AUDIT_LINES:-0} - TOKENS_COUNTED))
echo "audit log: ${AUDIT_LINES:-0} token_issued events for $TOKENS_COUNTED token responses counted (pre-check, warm-up and rounds): +$AUDIT_DIFF cut off in flight (at most $((CONNECTIONS * TOKEN_RUNS)) expected)"
if ((AUDIT_DIFF < 0 || AUDIT_DIFF > CONNECTIONS * TOKEN_RUNS)); then
    echo "identity.sh: WARNING: the audit log does not match the tokens issued (see $WORK/identity/audit.log; KEEP_WORKDIR=1 keeps it)" >&2
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $WORK/wrk/"
fi
exit 0
