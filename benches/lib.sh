# shellcheck shell=bash
# Shared by the benchmark runners benches/run.sh and benches/identity.sh. Sourced, not run:
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
identity_yaml_head() { # port admin-port dir algorithms
    cat <<EOF
issuer: http://127.0.0.1:$1
listen: 127.0.0.1:$1
admin: 127.0.0.1:$2
keys:
  dir: $3/keys
  algorithms: [$4]
audit_log: $3/audit.log
EOF
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
