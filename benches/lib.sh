# shellcheck shell=bash
# Shared by the benchmark runners in benches/ (run.sh, auth.sh, full_path.sh, identity.sh, ...). Sourced, not run:
#     BENCH_NAME=run.sh
#     source "$(dirname "$0")/lib.sh"
# It defines functions only (and the PID_OF table). What differs between the runners comes from
# variables the sourcing script sets:
#   BENCH_NAME    the script's file name: prefixes every message, and is how clean_stale_runs
#                 recognises a run that is still alive (in /proc/PID/cmdline); set before sourcing
#   ROUNDS DURATION CONNECTIONS THREADS WARMUP COOLDOWN KEEP_WORKDIR   the shared knobs
#   ALL_PORTS     every loopback port the script listens on (must be free at start)
#   CURL          the curl command line for probes (array)
#   TARGETS       the wrk targets, in the order they run within a round
#   and, for setup_workdir, WORK_PREFIX, RUN_KIND, SERVER_PROCS, STOP_SIGNAL, STOP_WAIT.
# The script itself defines run_one ROUND TARGET and check_alive, which run_rounds calls.

: "${BENCH_NAME:?set BENCH_NAME before sourcing benches/lib.sh}"

die() { echo "$BENCH_NAME: error: $*" >&2; exit 1; }
usage_err() { echo "$BENCH_NAME: bad option: $*" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

# ---------------------------------------------------------------------------------------------
# Options and tools

# "10s" / "2m" / "1h" / "10" -> seconds (integer). wrk accepts the same forms.
to_seconds() {
    local v=$1
    [[ $v =~ ^([0-9]+)([smh]?)$ ]] || return 1
    local n=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in
        m) echo $((n * 60)) ;; h) echo $((n * 3600)) ;; *) echo "$n" ;;
    esac
}

# Check the shared knobs, and the script's own positive-integer knobs named in the arguments
# (checked right after THREADS); exit 2 on the first bad one. Sets DUR_S and WARMUP_S (seconds).
check_options() { # extra-knob-name...
    local name
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || usage_err "ROUNDS=$ROUNDS (want a positive integer)"
    for name in CONNECTIONS THREADS "$@"; do
        [[ ${!name} =~ ^[1-9][0-9]*$ ]] || usage_err "$name=${!name}"
    done
    [[ $COOLDOWN =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_err "COOLDOWN=$COOLDOWN (seconds)"
    DUR_S=$(to_seconds "$DURATION") || usage_err "DURATION=$DURATION (e.g. 10s, 1m)"
    ((DUR_S > 0)) || usage_err "DURATION=$DURATION (must be at least 1s)"
    # shellcheck disable=SC2034,SC2153  # WARMUP_S is for the script, which sets WARMUP
    WARMUP_S=$(to_seconds "$WARMUP") || usage_err "WARMUP=$WARMUP (e.g. 2s, 0)"
    ((CONNECTIONS >= THREADS)) || usage_err "CONNECTIONS ($CONNECTIONS) must be >= THREADS ($THREADS)"
}

# Die unless every tool is on PATH (with /usr/sbin and /sbin added, where nginx, haproxy and ss
# live on Debian). $1 is appended to the message: a hint where to get them, or "".
require_tools() { # hint tool...
    local hint=$1 tool
    shift
    export PATH=$PATH:/usr/sbin:/sbin
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found$hint"
    done
}

# The binary under test. The variable named by $1 may hold a path, used as is and never built;
# empty, `cargo build --release -p $2` runs (a no-op when the binary is up to date; it waits if
# another cargo holds the lock) and the variable is set to target/release/$2. Needs ROOT.
release_binary() { # variable package
    local var=$1 package=$2 path=${!1}
    if [[ -n $path ]]; then
        [[ -f $path && -x $path ]] || die "$var=$path is not an executable file"
        return 0
    fi
    log "building $package (cargo build --release -p $package)"
    (cd "$ROOT" && cargo build --release -p "$package") || die "cargo build --release -p $package failed"
    path=$ROOT/target/release/$package
    [[ -x $path ]] || die "$package binary not found at $path"
    printf -v "$var" '%s' "$path"
}

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup. setup_workdir uses these, set by the script:
#   WORK_PREFIX   the work dir is $TMPDIR/$WORK_PREFIX.XXXXXX; stale runs are found by that glob
#   RUN_KIND      what a live run is called in the error message ("another $RUN_KIND run ...")
#   SERVER_PROCS  the process names (/proc/PID/comm) the script starts, as an ERE alternation:
#                 a recorded process group holding anything else is never signalled
#   STOP_SIGNAL   the signal that stops a server group; STOP_WAIT: tenths of a second to wait for
#                 it before SIGKILL

# Kill the process group recorded in $1 (a *.pgid file) if every member is one of our servers
# (process names as in /proc/PID/comm).
kill_recorded_group() {
    local file=$1 pgid members
    pgid=$(cat "$file" 2>/dev/null || true)
    [[ $pgid =~ ^[0-9]+$ ]] || return 0
    members=$(ps -e -o pgid=,comm= | awk -v g="$pgid" '$1 == g {print $2}')
    [[ -n $members ]] || return 0
    if grep -qvE "^($SERVER_PROCS)\$" <<<"$members"; then
        echo "$BENCH_NAME: not killing process group $pgid from $file: it holds unexpected processes" >&2
        return 0
    fi
    kill -"$STOP_SIGNAL" -- "-$pgid" 2>/dev/null || true
    local _
    for _ in $(seq 1 "$STOP_WAIT"); do
        kill -0 -- "-$pgid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    sleep 0.2
}

# Previous runs that crashed (or were SIGKILLed) leave their work dir behind: stop what they
# started (recorded process groups only), then remove the dir. A run still alive is an error.
clean_stale_runs() {
    local dir owner
    for dir in "$TMPBASE/$WORK_PREFIX".*; do
        [[ -d $dir && -f $dir/runner.pid ]] || continue
        owner=$(cat "$dir/runner.pid" 2>/dev/null || true)
        if [[ $owner =~ ^[0-9]+$ ]] && [[ $owner != "$$" ]] && kill -0 "$owner" 2>/dev/null \
            && grep -q "$BENCH_NAME" "/proc/$owner/cmdline" 2>/dev/null; then
            die "another $RUN_KIND run is active (pid $owner, work dir $dir); wait for it or stop it"
        fi
        local f found=0
        for f in "$dir"/*.pgid; do
            [[ -f $f ]] || continue
            found=1
            kill_recorded_group "$f"
        done
        if ((found)); then echo "$BENCH_NAME: cleaned up stale run in $dir" >&2; fi
        rm -rf -- "$dir"
    done
}

port_listening() { [[ -n $(ss -Hltn "( sport = :$1 )" 2>/dev/null) ]]; }

check_ports_free() {
    local p busy=()
    for p in "${ALL_PORTS[@]}"; do
        if port_listening "$p"; then busy+=("$p"); fi
    done
    if ((${#busy[@]})); then
        echo "$BENCH_NAME: error: port(s) ${busy[*]} on 127.0.0.1 already in use (not by a previous run of this script):" >&2
        for p in "${busy[@]}"; do ss -Hltnp "( sport = :$p )" >&2 || true; done
        echo "$BENCH_NAME: stop those processes (or free the ports) and retry" >&2
        exit 1
    fi
}

# shellcheck disable=SC2317,SC2329  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    local f
    for f in "$WORK"/*.pgid; do
        if [[ -f $f ]]; then kill_recorded_group "$f"; fi
    done
    if [[ $KEEP_WORKDIR == 1 ]]; then
        rm -f "$WORK"/*.pgid "$WORK/runner.pid"
        echo "work dir kept: $WORK"
    else
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}

# Clean up stale runs, check that ALL_PORTS are free, create the work dir (WORK) and install the
# traps: the EXIT trap (which also covers Ctrl-C, TERM, HUP and errors) stops every recorded
# process group and removes the work dir.
setup_workdir() {
    TMPBASE=${TMPDIR:-/tmp}
    clean_stale_runs
    check_ports_free

    WORK=$(mktemp -d "$TMPBASE/$WORK_PREFIX.XXXXXX")
    echo $$ >"$WORK/runner.pid"

    trap cleanup EXIT
    trap 'echo; echo "$BENCH_NAME: interrupted" >&2; exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# ---------------------------------------------------------------------------------------------
# nginx config pieces (every nginx here runs in the foreground with its files in the work dir)

nginx_common() { # prefix-dir worker-processes
    local user_line=""
    if [[ $(id -u) == 0 ]]; then
        # As root, nginx workers would otherwise switch to 'nobody'; keep them as the invoking user.
        user_line="user $(id -un) $(id -gn);"
    fi
    cat <<EOF
$user_line
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events {
    worker_connections $((CONNECTIONS * 2 + 512));
}
EOF
}

nginx_http_common() { # prefix-dir
    cat <<EOF
    access_log off;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
EOF
}

# The head of a throwaway identity.yaml (identity.sh, identity_flood.sh): the issuer and its
# admin listener on 127.0.0.1, keys and audit log in the given directory.
identity_yaml_head() { # port admin-port dir algorithms [key-encryption-key-file]
    cat <<EOF
issuer: http://127.0.0.1:$1
listen: 127.0.0.1:$1
admin: 127.0.0.1:$2
keys:
  dir: $3/keys
  algorithms: [$4]
EOF
    # Required with a PostgreSQL state store (SQLite makes its own beside the database).
    if [[ -n ${5:-} ]]; then echo "  encryption_key: {file: $5}"; fi
    echo "audit_log: $3/audit.log"
}

# A wrk script for the issuer: one POST /token per request, client_credentials with HTTP Basic
# (client_secret_basic) as the given client.
token_lua() { # client secret
    local basic
    basic=$(printf '%s:%s' "$1" "$2" | base64 -w0)
    cat <<EOF
wrk.method = "POST"
wrk.path = "/token"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
EOF
}

# Pre-check of the issuer's client_credentials answer (identity.sh, identity_state.sh): POST /token
# with HTTP Basic as the client must answer 200 with an access token signed with the expected
# algorithm by a key the JWKS file lists, for that client_id and audience bench-api. Prints one
# line starting with the name; dies otherwise. Answer in $WORK/precheck.<name>.
token_precheck() { # name issuer-url jwks-file client secret expected_alg
    local name=$1 out="$WORK/precheck.$1" code
    code=$("${CURL[@]}" -o "$out" -w '%{http_code}' -u "$4:$5" \
        -H 'Content-Type: application/x-www-form-urlencoded' --data 'grant_type=client_credentials' \
        "$2/token" 2>"$out.err") || true
    if [[ $code != 200 ]]; then
        cat "$out.err" "$out" >&2 2>/dev/null || true
        echo >&2
        die "pre-check: POST $2/token for $4 answered HTTP ${code:-none}, expected 200"
    fi
    python3 - "$out" "$3" "$4" "$6" "$name" <<'EOF' || die "pre-check: token for $4 from $2 is not what was expected (see above)"
import base64, json, sys

answer, jwks, client, want_alg, name = sys.argv[1:6]
doc = json.load(open(answer))
token = doc.get("access_token", "")
parts = token.split(".")
if len(parts) != 3:
    sys.exit(f"  {name}: access_token is not a JWS compact serialization: {doc}")
b64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
head, claims = json.loads(b64(parts[0])), json.loads(b64(parts[1]))
kids = {k.get("kid"): k for k in json.load(open(jwks)).get("keys", [])}
problems = []
if head.get("alg") != want_alg:
    problems.append(f"alg {head.get('alg')}, expected {want_alg}")
if head.get("kid") not in kids:
    problems.append(f"kid {head.get('kid')} is not in the JWKS")
elif kids[head["kid"]].get("alg", want_alg) != want_alg:
    problems.append(f"JWKS key {head['kid']} has alg {kids[head['kid']].get('alg')}")
if claims.get("client_id") != client or claims.get("aud") not in ("bench-api", ["bench-api"]):
    problems.append(f"claims client_id={claims.get('client_id')} aud={claims.get('aud')}")
print(f"  {name:<10} 200  alg={head.get('alg')} typ={head.get('typ')} kid={head.get('kid')}  "
      f"token {len(token)} bytes, response {len(open(answer, 'rb').read())} bytes, "
      f"token_type={doc.get('token_type')} expires_in={doc.get('expires_in')} scope={doc.get('scope')}")
if problems:
    sys.exit("  " + "; ".join(problems))
EOF
}

# ---------------------------------------------------------------------------------------------
# Components. Each runs in its own session/process group (setsid) so that cleanup can stop it
# together with any children (nginx workers), and Ctrl-C reaches only the script.
declare -A PID_OF=()

start() { # name logfile cmd...
    local name=$1 logf=$2
    shift 2
    setsid "$@" >"$logf" 2>&1 </dev/null &
    local pid=$!
    PID_OF[$name]=$pid
    # setsid does not fork here (a background job is never a group leader), so pid == pgid.
    echo "$pid" >"$WORK/$name.pgid"
}

# A self-signed certificate for localhost in $WORK/tls: KIND.key, KIND.crt and KIND.pem (both, for
# HAProxy), made with the openssl key arguments given (e.g. -newkey ec -pkeyopt ...).
make_cert() { # kind openssl-newkey-args...
    local kind=$1
    shift
    mkdir -p "$WORK/tls"
    openssl req -x509 "$@" -nodes -days 7 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
        -keyout "$WORK/tls/$kind.key" -out "$WORK/tls/$kind.crt" >"$WORK/tls/$kind.log" 2>&1 \
        || { cat "$WORK/tls/$kind.log" >&2; die "openssl could not make the $kind certificate"; }
    cat "$WORK/tls/$kind.crt" "$WORK/tls/$kind.key" >"$WORK/tls/$kind.pem"
}

# Poll every 0.1 s, for up to $3 seconds, until curl with the remaining arguments succeeds. If the
# component exits first or never answers, show its log and die ("did not answer $2 within $3s").
wait_answering() { # name where seconds curl-args...
    local name=$1 where=$2 secs=$3
    shift 3
    for _ in $(seq 1 $((secs * 10))); do
        if "${CURL[@]}" -o /dev/null --max-time 1 "$@" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            echo "--- $name output ---" >&2
            tail -n 30 "$WORK/$name.log" >&2 || true
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    echo "--- $name output ---" >&2
    tail -n 30 "$WORK/$name.log" >&2 || true
    die "$name did not answer $where within ${secs}s"
}

# ---------------------------------------------------------------------------------------------
# Measurement

# Parse wrk --latency output: "rps p99_ms non2xx socket_errors requests" (NA when missing).
parse_wrk() {
    awk '
        function ms(s,   v) {
            v = s + 0
            if (s ~ /us$/) return v / 1000
            if (s ~ /ms$/) return v
            if (s ~ /m$/) return v * 60000
            if (s ~ /h$/) return v * 3600000
            if (s ~ /s$/) return v * 1000
            return v
        }
        $1 == "Requests/sec:" { rps = $2 }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ {
            line = $0; sub(/.*Socket errors:/, "", line); n = split(line, a, ",")
            for (i = 1; i <= n; i++) { split(a[i], kv, " "); sockerr += kv[2] }
        }
        END {
            printf "%s %s %d %d %s\n", (rps == "" ? "NA" : rps), (p99 == "" ? "NA" : sprintf("%.3f", p99)),
                non2xx, sockerr, (reqs == "" ? "NA" : reqs)
        }' "$1"
}

# ROUNDS interleaved rounds: every target once per round, in TARGETS order, with COOLDOWN
# seconds after each run. Interleaving spreads slow drift in the machine (thermal limits, noisy
# neighbours) across all targets rather than letting it land on one.
run_rounds() {
    local round t
    for round in $(seq 1 "$ROUNDS"); do
        log "round $round/$ROUNDS"
        for t in "${TARGETS[@]}"; do
            run_one "$round" "$t"
            sleep "$COOLDOWN"
        done
        check_alive
    done
}

# ---------------------------------------------------------------------------------------------
# Report

# Run the script's report, Python read from stdin, with the arguments as sys.argv[1:]. The
# helpers below come first: sys.argv[1] must be results.tsv (one row per run: round, target,
# rps, p99_ms, non2xx, socket_errors, ...). They give, per target, the req/s and p99 of every
# round (rps, p99), error counts summed over the rounds (non2xx, sockerr), the medians (med,
# medp), ratio(a, b) of median req/s, and print_table.
report_py() { # args...
    {
        cat <<'EOF'
import csv, statistics, sys

def num(s):
    try:
        return float(s)
    except ValueError:
        return None

rps, p99, non2xx, sockerr = {}, {}, {}, {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    t = r["target"]
    if num(r["rps"]) is not None:
        rps.setdefault(t, []).append(num(r["rps"]))
    if num(r["p99_ms"]) is not None:
        p99.setdefault(t, []).append(num(r["p99_ms"]))
    non2xx[t] = non2xx.get(t, 0) + int(r["non2xx"])
    sockerr[t] = sockerr.get(t, 0) + int(r["socket_errors"])
med = {t: statistics.median(v) for t, v in rps.items() if v}
medp = {t: statistics.median(v) for t, v in p99.items() if v}

def ratio(a, b):
    return f"{med[a] / med[b]:.2f}" if a in med and b in med and med[b] > 0 else "n/a"

# Columns as wide as their widest cell; the columns numbered in left are left-aligned.
def print_table(hdr, table, left=(0,)):
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *table)]
    fmt = lambda cells: " | ".join(str(c).ljust(w[i]) if i in left else str(c).rjust(w[i]) for i, c in enumerate(cells))
    print(fmt(hdr))
    print("-+-".join("-" * x for x in w))
    for line in table:
        print(fmt(line))

EOF
        cat
    } | python3 - "$@"
}

# ---------------------------------------------------------------------------------------------
# The token path, shared by auth.sh and full_path.sh: one issuer, one RS256 access token for the
# whole run, HAProxy 2.6 doing the gateway's auth stage, and the CPU time of a process group.
# They read, set by the script: WORK, IDENTITY_BIN, CURL, ISSUER_URL, AUDIENCE, CLIENT, SECRET,
# PORT_ORIGIN, PORT_STATUS, TARGETS, ROUNDS, DUR_S, WARMUP_S, CONNECTIONS.

# Seconds the token must stay valid: warm-up, rounds, pauses, and slack; at least an hour.
token_ttl_seconds() {
    local plan=$(((${#TARGETS[@]} * (ROUNDS * (DUR_S + 2) + WARMUP_S + 2)) + 600))
    echo $((plan > 3600 ? plan : 3600))
}

# Write $WORK/identity/identity.yaml (one client_credentials client, CLIENT, signing RS256, roles
# bench-reader and bench-writer, audience AUDIENCE), check it, start the issuer as component
# `identity` and wait for its JWKS.
start_token_issuer() { # port admin-port token-ttl-seconds
    local secret_hash
    mkdir -p "$WORK/identity"
    secret_hash=$(printf '%s' "$SECRET" | "$IDENTITY_BIN" hash) || die "gatehouse-identity hash failed"
    {
        identity_yaml_head "$1" "$2" "$WORK/identity" "RS256"
        cat <<EOF
tokens:
  access_token_ttl: ${3}s
clients:
  - id: $CLIENT
    secret_hash: '$secret_hash'
    grant_types: [client_credentials]
    audiences: [$AUDIENCE]
    scopes: [bench:read]
    roles: [bench-reader, bench-writer]
    signing_alg: RS256
EOF
    } >"$WORK/identity/identity.yaml"
    "$IDENTITY_BIN" validate --config "$WORK/identity/identity.yaml" >"$WORK/identity/validate.log" 2>&1 \
        || { cat "$WORK/identity/validate.log" >&2; die "generated identity config invalid"; }
    start identity "$WORK/identity.log" env NO_COLOR=1 "$IDENTITY_BIN" --config "$WORK/identity/identity.yaml"
    wait_answering identity "/jwks.json" 30 -f "$ISSUER_URL/jwks.json"
}

# One client_credentials token for the whole run. It stays in files (the token, the header files
# curl reads with -H @file, the wrk script token.lua): never on a command line, never printed.
# Also writes forged.header (the same token with a forged signature). Sets TOKEN_KID, TOKEN_ALG,
# TOKEN_TYP, TOKEN_SUB, TOKEN_ROLES (comma-joined, as the upstream must see them), TOKEN_BYTES.
# The checks here are on what the issuer gave; the proxies are checked in the pre-check.
fetch_bench_token() {
    "${CURL[@]}" -f -o "$WORK/token.json" -u "$CLIENT:$SECRET" --data grant_type=client_credentials \
        "$ISSUER_URL/token" || die "POST /token for $CLIENT failed"
    # shellcheck disable=SC2034  # TOKEN_ALG, TOKEN_TYP: read by the sourcing script
    read -r TOKEN_KID TOKEN_ALG TOKEN_TYP TOKEN_SUB < <(python3 - "$WORK" "$AUDIENCE" "$ISSUER_URL" <<'EOF'
import base64, json, sys
work, audience, issuer = sys.argv[1:4]
token = json.load(open(f"{work}/token.json"))["access_token"]
b64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
head, body, sig = token.split(".")
h, c = json.loads(b64(head)), json.loads(b64(body))
if h.get("alg") != "RS256" or h.get("typ") != "at+jwt" or c.get("iss") != issuer or c.get("aud") != audience:
    sys.exit(f"unexpected token: header {h}, iss {c.get('iss')}, aud {c.get('aud')}")
open(f"{work}/token", "w").write(token)
# A token with a forged signature: one signature character changed. Not the last one: of the 342
# base64url characters of a 256-byte signature, the last carries 2 bits and 4 unused ones.
i = len(token) - 2
forged = token[:i] + ("A" if token[i] != "A" else "B") + token[-1]
open(f"{work}/auth.header", "w").write(f"Authorization: Bearer {token}\n")
open(f"{work}/forged.header", "w").write(f"Authorization: Bearer {forged}\n")
roles = c.get("roles", [])
open(f"{work}/roles", "w").write(",".join(roles) if isinstance(roles, list) else str(roles))
open(f"{work}/token.lua", "w").write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
print(h["kid"], h["alg"], h["typ"], c["sub"])
EOF
    ) || die "could not read the token the issuer gave"
    [[ -n ${TOKEN_SUB:-} ]] || die "could not read the token the issuer gave"
    # shellcheck disable=SC2034  # read by the sourcing script
    TOKEN_BYTES=$(wc -c <"$WORK/token")
    # shellcheck disable=SC2034
    TOKEN_ROLES=$(cat "$WORK/roles")
}

# HAProxy's jwt_verify takes a public key file: build it (SubjectPublicKeyInfo PEM) from the RSA
# key the issuer publishes for $TOKEN_KID in its JWKS into $1 (the private keys are sealed in the
# issuer's state store; the public half is all HAProxy needs), then check openssl reads it back
# with the JWKS's modulus.
issuer_public_key() { # out-file
    local pubkey=$1 pem_modulus jwks_modulus
    "${CURL[@]}" -f -o "$WORK/jwks.json" "$ISSUER_URL/jwks.json" || die "could not fetch the issuer's JWKS"
    jwks_modulus=$(python3 - "$WORK/jwks.json" "$TOKEN_KID" "$pubkey" <<'EOF'
import base64, json, sys
keys = {k.get("kid"): k for k in json.load(open(sys.argv[1]))["keys"]}
key = keys[sys.argv[2]]
b64 = lambda v: base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
n, e = b64(key["n"]), b64(key["e"])
def length(size):
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
def tlv(tag, body):
    return bytes([tag]) + length(len(body)) + body
def integer(raw):
    raw = raw.lstrip(b"\0") or b"\0"
    return tlv(0x02, b"\0" + raw if raw[0] & 0x80 else raw)
rsa = tlv(0x30, integer(n) + integer(e))
# AlgorithmIdentifier rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters (RFC 3279 §2.3.1)
spki = tlv(0x30, bytes.fromhex("300d06092a864886f70d0101010500") + tlv(0x03, b"\0" + rsa))
body = base64.b64encode(spki).decode()
lines = [body[i:i + 64] for i in range(0, len(body), 64)]
open(sys.argv[3], "w").write("-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n")
print(n.hex().upper())
EOF
    ) || die "the JWKS does not list RSA key $TOKEN_KID"
    pem_modulus=$(openssl rsa -pubin -in "$pubkey" -noout -modulus 2>"$WORK/openssl.err" | sed 's/^Modulus=//')
    [[ -n $pem_modulus && $pem_modulus == "$jwks_modulus" ]] \
        || { cat "$WORK/openssl.err" >&2; die "the public key built for $TOKEN_KID does not read back as the key the JWKS publishes"; }
}

# HAProxy needs about 2 fds per connection; stay within the fd limit for $1 client connections
# (default CONNECTIONS). Sets HAPROXY_MAXCONN.
haproxy_maxconn() { # [clients]
    local fd_limit clients=${1:-$CONNECTIONS}
    fd_limit=$(ulimit -n)
    [[ $fd_limit =~ ^[0-9]+$ ]] || fd_limit=65536
    HAPROXY_MAXCONN=$(((fd_limit - 200) / 2))
    if ((HAPROXY_MAXCONN > 10000)); then HAPROXY_MAXCONN=10000; fi
    ((HAPROXY_MAXCONN >= clients + 100)) \
        || die "fd limit $fd_limit too low for $clients client connections (raise ulimit -n)"
}

# global, defaults and the origin backend of every HAProxy here (keep-alive both sides):
# $2 threads (default 1), then any further global lines.
haproxy_head() { # dir [threads [global-line...]]
    local dir=$1 nbthread=${2:-1} line
    shift $(($# < 2 ? $# : 2))
    cat <<EOF
global
    nbthread $nbthread
    maxconn $HAPROXY_MAXCONN
    pidfile $dir/haproxy.pid
EOF
    for line in "$@"; do echo "    $line"; done
    cat <<EOF

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout http-request 10s

backend origin
    server origin1 127.0.0.1:$PORT_ORIGIN
EOF
}

# A frontend doing the gateway's auth stage in HAProxy 2.6's terms:
# - the identity namespace (the gateway's default prefixes) stripped from the client's request;
# - no bearer token: 401 with the same challenge;
# - alg must be RS256 (the key's), typ at+jwt, then jwt_verify against the issuer's public key;
# - iss, aud, exp and nbf checked against date(), with the gateway's default 30 s leeway;
# - the subject tracked in a stick-table (request rate over $4); with a limit ($5, requests per
#   that period), more is refused with 429, else tracked and never used to refuse;
# - X-User-ID from sub; X-User-Roles from the roles array, comma-joined. HAProxy 2.6's
#   jwt_payload_query returns nothing for an array (strings, numbers and booleans only), so the
#   array's text is taken from the decoded payload with regsub (quotes removed: roles without
#   commas or escapes, as here).
# Config tokenizer: inside the double quotes, \" is a quote and \$ a dollar (not a variable).
haproxy_jwt_frontend() { # name port public-key-file rate-period [limit]
    local limit_rule=""
    if [[ -n ${5:-} ]]; then
        limit_rule="    http-request deny deny_status 429 if { sc_http_req_rate(0) gt $5 }"
    fi
    cat <<EOF

frontend $1
    bind 127.0.0.1:$2
    stick-table type string len 64 size 100k expire 60s store http_req_rate($4)
    http-request del-header x-user- -m beg
    http-request del-header x-jwt- -m beg
    http-request del-header x-auth- -m beg
    http-request del-header x-gatehouse- -m beg
    http-request deny deny_status 401 hdr WWW-Authenticate 'Bearer realm="gatehouse"' unless { http_auth_bearer -m found }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.bearer_alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.bearer_alg) -m str RS256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('\$.typ') -m str at+jwt }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.bearer_alg,"$3") -m int 1 }
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str $ISSUER_URL }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str $AUDIENCE }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.exp','int'),add(30),sub(txn.now) -m int gt 0 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.nbf','int'),sub(txn.now) -m int le 30 }
    http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('\$.sub')
    http-request deny deny_status 401 unless { var(txn.sub) -m found }
    http-request set-var(txn.roles) "var(txn.bearer),field(2,.),ub64dec,regsub('^.*\"roles\":[[]([^]]*)[]].*\\\$','\\\\1'),regsub('\"','',g)"
    http-request track-sc0 var(txn.sub)
$limit_rule
    http-request set-header X-User-ID %[var(txn.sub)]
    http-request set-header X-User-Roles %[var(txn.roles)]
    default_backend origin
EOF
}

# User+system CPU ticks of every process in process group $1 (a server and its children).
group_cpu_ticks() {
    local pid total=0 f
    for pid in $(ps -e -o pgid=,pid= | awk -v g="$1" '$1 == g {print $2}'); do
        # /proc/PID/stat: after the ")" that closes comm, field 12 is utime and 13 stime.
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        total=$((total + ${f:-0}))
    done
    echo "$total"
}

# User+system CPU ticks of process $1, of its live children, and of the children it has already
# reaped (its cutime + cstime). For servers whose workers leave the process group: PostgreSQL's
# backends are the postmaster's children, each in a session of its own.
tree_cpu_ticks() {
    local pid total f
    # /proc/PID/stat after the ")" that closes comm: field 12 utime, 13 stime, 14 cutime, 15 cstime.
    total=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}') || true
    total=${total:-0}
    for pid in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}') || continue
        total=$((total + ${f:-0}))
    done
    echo "$total"
}

# The origin's "accepts" counter (stub_status on PORT_STATUS); empty if unavailable.
origin_accepts() {
    "${CURL[@]}" "http://127.0.0.1:$PORT_STATUS/status" 2>/dev/null | awk 'NR == 3 {print $1}' || true
}

# Die, with the last lines of its log, if a component started with `start` has exited.
check_components_alive() {
    local name
    for name in "${!PID_OF[@]}"; do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            echo "$BENCH_NAME: ERROR: $name (pid ${PID_OF[$name]}) died during the benchmark; last output:" >&2
            tail -n 20 "$WORK/$name.log" >&2 || true
            die "a component died during the benchmark; numbers after that point are not valid"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Pre-check helpers of the scripts that check answers before measuring (auth.sh, full_path.sh).
# They read $WORK, the CURL array and PORT_OF from the calling script.
probe() { # target name curl-args... -> prints the status code; body in $WORK/precheck.<target>.<name>
    local t=$1 name=$2
    shift 2
    "${CURL[@]}" -o "$WORK/precheck.$t.$name" -w '%{http_code}' "$@" 2>"$WORK/precheck.$t.$name.err" || true
}
precheck_fail() { # target message
    tail -n 10 "$WORK/$1.log" >&2 2>/dev/null || true
    die "pre-check: $1 (127.0.0.1:${PORT_OF[$1]}): $2"
}

# ---------------------------------------------------------------------------------------------
# A PostgreSQL server of the script's own (identity_state.sh): a throwaway cluster in the work dir
# on a fixed loopback port, found and run as identity/tests/support/postgres.rs does. PostgreSQL
# refuses to run as root: as root, initdb and postgres run as nobody (and nobody's group, nogroup
# on Debian) through setpriv, and the work dir is opened for traversal only (0711) so that nobody
# reaches the cluster's directory; the script keeps everything else private (umask 077). The
# server's durability settings are left at their defaults (fsync, synchronous_commit and
# full_page_writes on); initdb's --no-sync only skips syncing the new cluster's files once.

# Sets PG_BIN (the directory of initdb and postgres, of one installation) and PSQL; returns 1 when
# PostgreSQL is not installed. PATH first, then /usr/lib/postgresql/<version>/bin (Debian, off
# PATH), newest first; an initdb symlink on PATH leads to its installation's directory.
find_postgres() {
    local dir initdb="" dirs=()
    IFS=: read -r -a dirs <<<"$PATH"
    while IFS= read -r dir; do dirs+=("$dir"); done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    for dir in "${dirs[@]}"; do
        if [[ -x $dir/initdb ]]; then
            initdb=$(readlink -f "$dir/initdb")
            break
        fi
    done
    [[ -n $initdb ]] || return 1
    PG_BIN=$(dirname "$initdb")
    [[ -x $PG_BIN/postgres ]] || return 1
    if [[ -x $PG_BIN/psql ]]; then
        PSQL=$PG_BIN/psql
    else
        PSQL=$(command -v psql) || return 1
    fi
}

# psql against a URL: our URL decides (the script unsets PG* variables), unaligned, tuples only.
pg_sql() { # url sql
    "$PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# initdb a cluster in DIR/data (superuser gatehouse, trust auth on loopback) and start postgres on
# 127.0.0.1:PORT as component NAME (`start`), its Unix socket in DIR. Waits until the server
# answers a query over TCP naming our data directory (the port might be someone else's until
# ours has bound it), up to 30 s. DIR must not exist yet; logs: $WORK/NAME-initdb.log, NAME.log.
# Needs PG_BIN and PSQL (find_postgres).
start_postgres() { # name dir port
    local name=$1 dir=$2 port=$3 as=()
    mkdir -m 700 "$dir"
    if [[ $(id -u) == 0 ]]; then
        local uid gid
        uid=$(id -u nobody) || die "running as root, and there is no user nobody to run PostgreSQL as"
        gid=$(id -g nobody)
        as=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --)
        chmod 711 "$WORK"
        chown "$uid:$gid" "$dir"
        "${as[@]}" test -w "$dir" \
            || die "PostgreSQL runs as nobody, who cannot reach $dir: set TMPDIR to a directory others may traverse (e.g. /tmp)"
    fi
    # PostgreSQL's programs read their working directory at start: make it one they may read.
    (cd "$dir" && "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -A trust -U gatehouse -E UTF8 --no-locale --no-sync) \
        >"$WORK/$name-initdb.log" 2>&1 || { tail -n 20 "$WORK/$name-initdb.log" >&2; die "initdb failed"; }
    start "$name" "$WORK/$name.log" env -C "$dir" "${as[@]}" "$PG_BIN/postgres" -D "$dir/data" -p "$port" -k "$dir" \
        -c listen_addresses=127.0.0.1
    local url="postgresql://gatehouse@127.0.0.1:$port/postgres?connect_timeout=2" _
    for _ in $(seq 1 300); do
        if [[ $(pg_sql "$url" 'SHOW data_directory' 2>/dev/null) == "$dir/data" ]]; then
            return 0
        fi
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            tail -n 30 "$WORK/$name.log" >&2 || true
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    tail -n 30 "$WORK/$name.log" >&2 || true
    die "$name did not answer on 127.0.0.1:$port within 30s"
}
