#!/usr/bin/env bash
# gatehouse-identity benchmark of its durable state (issue #13): tokens/s with the state in SQLite
# and in PostgreSQL against the in-memory issuer from before #13 (an optional baseline binary),
# for client_credentials (ES256) and for the refresh grant (rotating, single-use refresh tokens).
# One issuer process per store, all running; the targets interleaved over several rounds; median
# req/s, p99 and the issuer's CPU µs per request (and PostgreSQL's), ratios against memory.
# See benches/README.md ("identity_state.sh") for the protocol. Loopback (127.0.0.1) only.
#
# Knobs (environment):
#   ROUNDS=3  DURATION=10s  CONNECTIONS=16  THREADS=1 (wrk, client_credentials runs)
#   CHAINS=16 (refresh runs: wrk -tCHAINS -cCHAINS, one refresh-token chain per connection)
#   WARMUP=2s (per target, before round 1; 0 disables)  COOLDOWN=1 (seconds between runs)
#   SMOKE=1   quick check that the runner works: ROUNDS=1 DURATION=2s WARMUP=1s
#   IDENTITY_BIN=path: the issuer with SQL state (default: `cargo build --release --workspace
#     --bins` is run, a no-op when up to date, and target/release/gatehouse-identity is used)
#   BASELINE_IDENTITY_BIN=path: the in-memory issuer, built from commit 3c347eb (before #13);
#     unset: the memory targets are skipped
#   KEEP_WORKDIR=1 (keep configs, keys, databases, audit logs, logs and raw wrk output)
#
# Exit status: 0 on success; 1 if the build fails, a component fails its config check or does not
# start, the pre-check fails, a run gets non-2xx answers (a broken refresh chain), or a component
# dies; 2 on bad options. Never non-zero because of the numbers measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=identity_state.sh   # for messages, and to recognise a live run (benches/lib.sh)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

# Refresh tokens and secrets land in the work dir: nobody else may read it (see start_postgres).
umask 077

# ---------------------------------------------------------------------------------------------
# Options
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
CHAINS=${CHAINS:-16}
WARMUP=${WARMUP:-2s}
COOLDOWN=${COOLDOWN:-1}
SMOKE=${SMOKE:-0}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
IDENTITY_BIN=${IDENTITY_BIN:-}
BASELINE_IDENTITY_BIN=${BASELINE_IDENTITY_BIN:-}
if [[ $SMOKE == 1 ]]; then
    ROUNDS=1 DURATION=2s WARMUP=1s
fi

# Fixed loopback ports: one issuer (public, admin) per store, and the PostgreSQL server.
declare -A PORT_OF=([memory]=18420 [sqlite]=18422 [postgres]=18424)
declare -A ADMIN_OF=([memory]=18421 [sqlite]=18423 [postgres]=18425)
PORT_POSTGRES=18426

# The issuer's process name as /proc/PID/comm shows it: truncated to 15 chars.
IDENTITY_PROC=gatehouse-ident

# Clients and user of the generated configs (secrets for these throwaway configs only).
CC_CLIENT=bench-es CC_SECRET=bench-es-secret          # client_credentials, ES256
CLI_CLIENT=bench-cli CLI_SECRET=bench-cli-secret      # password + refresh_token, ES256
BENCH_USER=bench-user BENCH_PASSWORD=bench-user-password
POSTGRES_DB=identity

check_options CHAINS   # sets DUR_S, WARMUP_S
require_tools " (scripts/setup.sh bench installs wrk)" wrk curl ss python3 setsid awk base64 setpriv

# Never let a proxy setting send the probes anywhere but loopback, nor a PG* variable steer psql.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
for v in "${!PG@}"; do unset "$v"; done
CURL=(curl -sS --noproxy '*' --max-time 5)
CLK_TCK=$(getconf CLK_TCK)

# Which stores are measured: memory needs the baseline binary, postgres an installation.
STORES=()
if [[ -n $BASELINE_IDENTITY_BIN ]]; then
    [[ -f $BASELINE_IDENTITY_BIN && -x $BASELINE_IDENTITY_BIN ]] \
        || die "BASELINE_IDENTITY_BIN=$BASELINE_IDENTITY_BIN is not an executable file"
    STORES+=(memory)
else
    echo "$BENCH_NAME: note: BASELINE_IDENTITY_BIN is not set: skipping the memory targets (build the issuer of commit 3c347eb and pass it to compare against the in-memory state)" >&2
fi
STORES+=(sqlite)
HAVE_POSTGRES=0
if find_postgres; then
    HAVE_POSTGRES=1
    STORES+=(postgres)
else
    echo "$BENCH_NAME: note: PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): skipping the postgres targets (scripts/setup.sh installs it)" >&2
fi

# Targets in the order they run within a round: each grant against every store in turn.
TARGETS=()
for grant in cc refresh; do
    for store in "${STORES[@]}"; do TARGETS+=("${grant}_$store"); done
done

ALL_PORTS=()
for store in "${STORES[@]}"; do ALL_PORTS+=("${PORT_OF[$store]}" "${ADMIN_OF[$store]}"); done
if ((HAVE_POSTGRES)); then ALL_PORTS+=("$PORT_POSTGRES"); fi

# ---------------------------------------------------------------------------------------------
# Work dir, stale runs, cleanup (setup_workdir, benches/lib.sh)
WORK_PREFIX=gh-state-bench
RUN_KIND="identity state benchmark"
SERVER_PROCS="$IDENTITY_PROC|postgres"
# SIGINT: fast shutdown for the issuer (SIGTERM would wait out its 2 s grace period) and for
# PostgreSQL (disconnect clients, checkpoint, exit). The groups are stopped in the order of their
# file names, so the issuers go before PostgreSQL; its checkpoint may take a few seconds after a
# run's writes: SIGKILL only after 10 s.
STOP_SIGNAL=INT STOP_WAIT=100
setup_workdir

# ---------------------------------------------------------------------------------------------
# Build: the whole workspace, as CI builds it (auth.sh says why not `-p`), unless a binary is given.
if [[ -z $IDENTITY_BIN ]]; then
    log "building (cargo build --release --workspace --bins)"
    (cd "$ROOT" && cargo build --release --workspace --bins) || die "cargo build --release --workspace --bins failed"
    IDENTITY_BIN=$ROOT/target/release/gatehouse-identity
fi
[[ -f $IDENTITY_BIN && -x $IDENTITY_BIN ]] || die "IDENTITY_BIN=$IDENTITY_BIN is not an executable file"

# The binary each store runs. The baseline is started through a symlink named gatehouse-identity,
# so that its process name is the issuer's whatever its file is called (cleanup checks it).
declare -A BIN_OF=()
for store in "${STORES[@]}"; do
    mkdir -p "$WORK/$store/conf" "$WORK/$store/var"
    BIN_OF[$store]=$IDENTITY_BIN
done
if [[ -n $BASELINE_IDENTITY_BIN ]]; then
    ln -s "$(readlink -f "$BASELINE_IDENTITY_BIN")" "$WORK/memory/gatehouse-identity"
    BIN_OF[memory]=$WORK/memory/gatehouse-identity
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a cluster of our own, durability settings at their defaults (start_postgres).
PG_URL=""
if ((HAVE_POSTGRES)); then
    log "starting PostgreSQL ($PG_BIN) on 127.0.0.1:$PORT_POSTGRES"
    start_postgres postgres "$WORK/pg" "$PORT_POSTGRES"
    pg_sql "postgresql://gatehouse@127.0.0.1:$PORT_POSTGRES/postgres" "CREATE DATABASE $POSTGRES_DB" \
        || die "CREATE DATABASE $POSTGRES_DB failed"
    PG_URL="postgresql://gatehouse@127.0.0.1:$PORT_POSTGRES/$POSTGRES_DB"
    PG_SETTINGS=$(pg_sql "$PG_URL" "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers', 'max_connections')")
fi

# ---------------------------------------------------------------------------------------------
# Configs: the same clients, user and keys settings for every store; only `state:` differs (the
# baseline has no such key, and refuses it). Laid out as shipped (conf/ and var/identity/): the
# config alone in conf/, keys, audit log and database in var/. The issuer watches its config's
# directory, so a database or audit log beside identity.yaml would wake its watcher on every write.
hash_secret() {
    local phc
    phc=$(printf '%s' "$1" | "$IDENTITY_BIN" hash) || die "gatehouse-identity hash failed"
    # shellcheck disable=SC2016  # a literal '$'
    [[ $phc == '$argon2id$'* ]] || die "gatehouse-identity hash printed '$phc', not an argon2id PHC string"
    echo "$phc"
}
CC_HASH=$(hash_secret "$CC_SECRET")
CLI_HASH=$(hash_secret "$CLI_SECRET")
USER_HASH=$(hash_secret "$BENCH_PASSWORD")

# Scope bench:read only (no openid): the password and refresh grants issue no ID token, so a
# refresh signs one access token, as client_credentials does.
identity_config() { # store
    local store=$1
    local kek=""
    if [[ $store == postgres ]]; then
        kek="$WORK/postgres/var/kek"
        mkdir -p "$WORK/postgres/var"
        [[ -f $kek ]] || (umask 077 && head -c 32 /dev/urandom | base64 >"$kek")
    fi
    identity_yaml_head "${PORT_OF[$store]}" "${ADMIN_OF[$store]}" "$WORK/$store/var" "ES256" "$kek"
    case $store in
        sqlite) echo "state: sqlite://$WORK/sqlite/var/state.db" ;;
        postgres) echo "state: $PG_URL" ;;
    esac
    cat <<EOF
users:
  - username: $BENCH_USER
    password_hash: '$USER_HASH'
clients:
  - id: $CC_CLIENT
    secret_hash: '$CC_HASH'
    grant_types: [client_credentials]
    audiences: [bench-api]
    scopes: [bench:read]
    signing_alg: ES256
  - id: $CLI_CLIENT
    secret_hash: '$CLI_HASH'
    grant_types: [password, refresh_token]
    audiences: [bench-api]
    scopes: [bench:read]
    signing_alg: ES256
EOF
}

for store in "${STORES[@]}"; do
    identity_config "$store" >"$WORK/$store/conf/identity.yaml"
    "${BIN_OF[$store]}" validate --config "$WORK/$store/conf/identity.yaml" >"$WORK/$store/validate.log" 2>&1 \
        || { cat "$WORK/$store/validate.log" >&2; die "generated identity config for $store invalid"; }
done
# The baseline must be the issuer from before #13: one that knows `state:` keeps its state in SQL
# (SQLite by default), and its "memory" numbers would be something else.
if [[ -n $BASELINE_IDENTITY_BIN ]]; then
    { cat "$WORK/memory/conf/identity.yaml"; echo "state: sqlite://$WORK/memory/var/probe.db"; } >"$WORK/memory/probe.yaml"
    if "${BIN_OF[memory]}" validate --config "$WORK/memory/probe.yaml" >/dev/null 2>&1; then
        die "BASELINE_IDENTITY_BIN=$BASELINE_IDENTITY_BIN accepts \`state:\`: it keeps its state in SQL, not in memory (build the issuer of commit 3c347eb)"
    fi
fi

# wrk scripts. client_credentials: one POST /token per request, HTTP Basic (token_lua).
token_lua "$CC_CLIENT" "$CC_SECRET" >"$WORK/cc.lua"
# Refresh: token_lua's method, path and headers as the password client; request() sends the
# thread's current refresh token instead of token_lua's body. One chain per thread (wrk -tN -cN):
# setup() gives thread n the n-th token of the store's chains file; response() keeps the answer's
# new refresh token for the thread's next request; done() writes per chain the refreshes that
# succeeded and the answers that did not, to the store's .done file.
refresh_lua() { # store
    local dir="$WORK/chains"
    echo "local CHAINS_FILE = \"$dir/$1.tokens\""
    echo "local REPORT_FILE = \"$dir/$1.done\""
    token_lua "$CLI_CLIENT" "$CLI_SECRET"
    cat <<'EOF'
local chains, threads = nil, {}

function setup(thread)
    if not chains then
        chains = {}
        for line in io.lines(CHAINS_FILE) do chains[#chains + 1] = line end
    end
    threads[#threads + 1] = thread
    local token = chains[#threads]
    if not token then error("more wrk threads than refresh tokens in " .. CHAINS_FILE) end
    thread:set("token", token)
end

function init(args)
    refreshed, failed = 0, 0
end

function request()
    return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
    local next_token = status == 200 and body:match('"refresh_token":"([%w_-]+)"')
    if next_token then
        token = next_token
        refreshed = refreshed + 1
    else
        failed = failed + 1
    end
end

function done(summary, latency, requests)
    local f = assert(io.open(REPORT_FILE, "w"))
    for i, thread in ipairs(threads) do
        f:write(string.format("%d %d %d\n", i, thread:get("refreshed"), thread:get("failed")))
    end
    f:close()
end
EOF
}
mkdir -p "$WORK/chains" "$WORK/wrk"
for store in "${STORES[@]}"; do refresh_lua "$store" >"$WORK/refresh-$store.lua"; done

# Password grants and refreshes made by the script itself (not wrk): minting the chains before a
# refresh run, and the pre-check of rotation and replay. One keep-alive connection per call.
cat >"$WORK/chains.py" <<'EOF'
import base64, http.client, json, sys, urllib.parse

mode, port, client, secret, user, password = sys.argv[1:7]
auth = "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)

def post(form):
    conn.request("POST", "/token", urllib.parse.urlencode(form),
                 {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    return r.status, r.read()

def fail(what, status, body):
    sys.exit(f"  {what}: HTTP {status}: {body[:300].decode(errors='replace')}")

def tokens(what, status, body):
    if status != 200:
        fail(what, status, body)
    doc = json.loads(body)
    if "refresh_token" not in doc or "access_token" not in doc:
        sys.exit(f"  {what}: no refresh_token or access_token in {sorted(doc)}")
    if "id_token" in doc:
        sys.exit(f"  {what}: an id_token was issued (the bench client has no openid scope)")
    return doc

def login():
    return tokens("password grant", *post({"grant_type": "password", "username": user, "password": password}))

def refresh(value):
    return post({"grant_type": "refresh_token", "refresh_token": value})

if mode == "mint":  # N chains: one password grant each; their refresh tokens, one a line
    n, out = int(sys.argv[7]), sys.argv[8]
    values = [login()["refresh_token"] for _ in range(n)]
    with open(out, "w") as f:
        f.write("\n".join(values) + "\n")
elif mode == "precheck":  # rotation: each refresh answers a new token; a replay revokes the family
    jwks = json.load(open(sys.argv[7]))
    kids = {k.get("kid") for k in jwks.get("keys", [])}
    first = login()
    second = tokens("first refresh", *refresh(first["refresh_token"]))
    third = tokens("second refresh", *refresh(second["refresh_token"]))
    if len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) != 3:
        sys.exit("  the refresh token did not rotate")
    b64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    head, body, _ = third["access_token"].split(".")
    head, claims = json.loads(b64(head)), json.loads(b64(body))
    problems = []
    if head.get("alg") != "ES256" or head.get("kid") not in kids:
        problems.append(f"access token alg {head.get('alg')} kid {head.get('kid')} (want ES256, a JWKS key)")
    if claims.get("sub") != user or claims.get("client_id") != client:
        problems.append(f"claims sub={claims.get('sub')} client_id={claims.get('client_id')}")
    status, answer = refresh(first["refresh_token"])
    if status != 400 or json.loads(answer).get("error") != "invalid_grant":
        problems.append(f"a replayed refresh token answered HTTP {status} {answer[:200]!r}, expected 400 invalid_grant")
    status, answer = refresh(third["refresh_token"])
    if status != 400:
        problems.append(f"after the replay, the family's live refresh token answered HTTP {status}, expected 400 (family revoked)")
    if problems:
        sys.exit("  " + "; ".join(problems))
    print(f"rotates (3 distinct tokens), access token ES256 for sub={claims['sub']}, "
          f"replay 400 invalid_grant, family revoked")
else:
    sys.exit(f"unknown mode {mode}")
EOF

# ---------------------------------------------------------------------------------------------
# Start the issuers, one per store, and wait for their JWKS.
log "work dir $WORK"
for store in "${STORES[@]}"; do
    start "issuer_$store" "$WORK/issuer_$store.log" env NO_COLOR=1 "${BIN_OF[$store]}" --config "$WORK/$store/conf/identity.yaml"
done
for store in "${STORES[@]}"; do
    wait_answering "issuer_$store" "/jwks.json" 30 -f "http://127.0.0.1:${PORT_OF[$store]}/jwks.json"
    "${CURL[@]}" -f -o "$WORK/$store/jwks.json" "http://127.0.0.1:${PORT_OF[$store]}/jwks.json" \
        || die "could not fetch /jwks.json from the $store issuer"
done
log "issuers up: $(for s in "${STORES[@]}"; do printf '%s :%s  ' "$s" "${PORT_OF[$s]}"; done)"

# Chains made by the script, per store (password grants: each one chain's first refresh token).
declare -A LOGINS_OF=() SCRIPT_REFRESHES_OF=()
mint_chains() { # store
    python3 "$WORK/chains.py" mint "${PORT_OF[$1]}" "$CLI_CLIENT" "$CLI_SECRET" "$BENCH_USER" "$BENCH_PASSWORD" \
        "$CHAINS" "$WORK/chains/$1.tokens" || die "could not start $CHAINS refresh-token chains on the $1 issuer"
    LOGINS_OF[$1]=$((${LOGINS_OF[$1]:-0} + CHAINS))
}

# ---------------------------------------------------------------------------------------------
# Pre-check, per store: client_credentials gives an ES256 token of a JWKS key (and warms the
# issuer's verified-secret cache, so only the first request pays argon2id); the refresh grant
# rotates, and a replay is refused and revokes the family.
log "pre-check"
for store in "${STORES[@]}"; do
    token_precheck "cc_$store" "http://127.0.0.1:${PORT_OF[$store]}" "$WORK/$store/jwks.json" "$CC_CLIENT" "$CC_SECRET" ES256
    line=$(python3 "$WORK/chains.py" precheck "${PORT_OF[$store]}" "$CLI_CLIENT" "$CLI_SECRET" "$BENCH_USER" \
        "$BENCH_PASSWORD" "$WORK/$store/jwks.json") || die "pre-check: the refresh grant on the $store issuer (see above)"
    printf '  %-10s %s\n' "refresh_$store" "$line"
    LOGINS_OF[$store]=1 SCRIPT_REFRESHES_OF[$store]=2
done

# ---------------------------------------------------------------------------------------------
# Measurement

check_alive() { check_components_alive; }

store_of() { echo "${1#*_}"; }   # cc_sqlite -> sqlite

wrk_cmd() { # target duration [wrk options]
    local t=$1 d=$2 store
    store=$(store_of "$t")
    shift 2
    case $t in
        cc_*) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$d" "$@" -s "$WORK/cc.lua" "http://127.0.0.1:${PORT_OF[$store]}/token" ;;
        refresh_*) wrk -t"$CHAINS" -c"$CHAINS" -d"$d" "$@" -s "$WORK/refresh-$store.lua" "http://127.0.0.1:${PORT_OF[$store]}/token" ;;
    esac
}

# Before each refresh run (warm-up included): new chains. A chain cannot go on from the last run:
# a refresh cut off in flight when wrk stopped was probably redeemed, and its token is gone.
prepare() { # target
    if [[ $1 == refresh_* ]]; then
        mint_chains "$(store_of "$1")"
        rm -f "$WORK/chains/$(store_of "$1").done"
    fi
}

# Non-2xx answers mean the numbers measure errors (for refresh: a chain broke, i.e. a replay):
# stop, and show what happened.
fail_non2xx() { # target count wrk-output
    local store
    store=$(store_of "$1")
    echo "$BENCH_NAME: ERROR: $1 got $2 non-2xx/3xx responses (wrk output: $3)" >&2
    sed 's/^/    /' "$3" >&2
    if [[ -f $WORK/chains/$store.done ]]; then
        echo "  chains (thread, refreshes, failed answers):" >&2
        sed 's/^/    /' "$WORK/chains/$store.done" >&2
    fi
    tail -n 10 "$WORK/issuer_$store.log" >&2 || true
    die "non-2xx responses from $1; the benchmark is invalid"
}

RESULTS="$WORK/results.tsv"
printf 'round\ttarget\trps\tp99_ms\tnon2xx\tsocket_errors\trequests\tcpu_us_per_req\tdb_cpu_us_per_req\tcpu_ticks\tdb_ticks\tchains\n' >"$RESULTS"

per_req_us() { # ticks requests
    awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n + 0 > 0) printf "%.1f", d / hz * 1e6 / n; else print "NA" }'
}

run_one() { # round target
    local round=$1 t=$2 out="$WORK/wrk/r$1-$2.txt" store
    store=$(store_of "$t")
    prepare "$t"
    local pgid=${PID_OF[issuer_$store]} cpu0 cpu1 db0=0 db1=0
    if [[ $store == postgres ]]; then db0=$(tree_cpu_ticks "${PID_OF[postgres]}"); fi
    cpu0=$(group_cpu_ticks "$pgid")
    wrk_cmd "$t" "$DURATION" --latency >"$out" 2>&1 \
        || echo "$BENCH_NAME: warning: wrk exited non-zero for $t (round $round)" >&2
    cpu1=$(group_cpu_ticks "$pgid")
    if [[ $store == postgres ]]; then db1=$(tree_cpu_ticks "${PID_OF[postgres]}"); fi

    local rps p99 non2xx sockerr reqs cpu db=NA chains=NA
    read -r rps p99 non2xx sockerr reqs < <(parse_wrk "$out")
    cpu=$(per_req_us $((cpu1 - cpu0)) "$reqs")
    if [[ $store == postgres ]]; then db=$(per_req_us $((db1 - db0)) "$reqs"); fi
    if [[ $t == refresh_* && -f $WORK/chains/$store.done ]]; then
        mv "$WORK/chains/$store.done" "$WORK/wrk/r$round-$t.chains"
        # refreshes per chain, min..max, and the chains with a failed answer
        chains=$(awk '{ n++; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; if ($3 > 0) bad++ }
            END { printf "%d chains %d..%d refreshes, %d broken", n, min, max, bad }' "$WORK/wrk/r$round-$t.chains")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" "$non2xx" "$sockerr" "$reqs" \
        "$cpu" "$db" $((cpu1 - cpu0)) $((db1 - db0)) "$chains" >>"$RESULTS"

    local extra=""
    if [[ $db != NA ]]; then extra+="  + postgres $db µs/req"; fi
    if [[ $chains != NA ]]; then extra+="  [$chains]"; fi
    if ((sockerr > 0)); then extra+=" [$(grep -m1 'Socket errors' "$out" | sed 's/^ *//')]"; fi
    printf '  %-17s %9s req/s   issuer %7s CPU µs/req   p99 %8s ms%s\n' "$t" "$rps" "$cpu" "$p99" "$extra"
    if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$out"; fi
    if [[ $rps == NA ]]; then
        sed 's/^/    /' "$out" >&2
        die "could not read Requests/sec from wrk's output for $t"
    fi
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- identity service Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+="+dirty"
built() { date -r "$1" '+built %Y-%m-%d %H:%M'; }
echo
echo "gatehouse-identity state benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $GIT_REV  $(nproc) CPUs  $(uname -r)"
echo "  issuer (sqlite, postgres): $IDENTITY_BIN ($(built "$IDENTITY_BIN"))"
if [[ -n $BASELINE_IDENTITY_BIN ]]; then
    echo "  issuer (memory): $BASELINE_IDENTITY_BIN ($(built "$BASELINE_IDENTITY_BIN")), state in memory"
else
    echo "  issuer (memory): skipped (BASELINE_IDENTITY_BIN not set)"
fi
echo "  sqlite: $WORK/sqlite/var/state.db, the issuer's own settings (WAL, synchronous=NORMAL)"
if ((HAVE_POSTGRES)); then
    echo "  postgres: $("$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //') on 127.0.0.1:$PORT_POSTGRES, defaults: $PG_SETTINGS"
else
    echo "  postgres: not installed, skipped"
fi
echo "  cc:      wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s cc.lua (client_credentials, HTTP Basic, ES256)"
echo "  refresh: wrk -t$CHAINS -c$CHAINS -d$DURATION --latency -s refresh-<store>.lua ($CHAINS chains, new ones before each run)"
echo "  rounds=$ROUNDS  warmup=$WARMUP  smoke=$SMOKE   load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if ((WARMUP_S > 0)); then
    log "warm-up: ${WARMUP} per target"
    for t in "${TARGETS[@]}"; do
        prepare "$t"
        wrk_cmd "$t" "$WARMUP" >"$WORK/wrk/warmup-$t.txt" 2>&1 || true
        read -r _ _ non2xx _ _ < <(parse_wrk "$WORK/wrk/warmup-$t.txt")
        if ((non2xx > 0)); then fail_non2xx "$t" "$non2xx" "$WORK/wrk/warmup-$t.txt"; fi
        sleep "$COOLDOWN"
    done
    check_alive
fi

run_rounds

# ---------------------------------------------------------------------------------------------
# Cross-checks, per store, against what the script and wrk counted (warm-up included). Requests
# cut off in flight when a run stopped were usually served but not counted: at most CONNECTIONS
# per client_credentials run and CHAINS per refresh run.
sleep 0.5   # the audit log is written by a background thread
CHECKS="$WORK/checks.tsv"
printf 'store\tcheck\tgot\tlow\thigh\tnote\n' >"$CHECKS"
for store in "${STORES[@]}"; do
    cc_counted=1 cc_runs=0 refresh_counted=0 refresh_runs=0
    for f in "$WORK"/wrk/*-cc_"$store".txt "$WORK"/wrk/*-refresh_"$store".txt; do
        [[ -f $f ]] || continue
        read -r _ _ _ _ reqs < <(parse_wrk "$f")
        [[ $reqs =~ ^[0-9]+$ ]] || reqs=0
        case $f in
            *-cc_*) cc_counted=$((cc_counted + reqs)) cc_runs=$((cc_runs + 1)) ;;
            *) refresh_counted=$((refresh_counted + reqs)) refresh_runs=$((refresh_runs + 1)) ;;
        esac
    done
    logins=${LOGINS_OF[$store]} refreshes=$((refresh_counted + ${SCRIPT_REFRESHES_OF[$store]}))
    # The audit log rotates at 100 MiB (the default): count over audit.log and its rotated files.
    issued=$(cat "$WORK/$store/var/audit.log"* 2>/dev/null | grep -c '"event":"token_issued"' || true)
    refreshed=$(cat "$WORK/$store/var/audit.log"* 2>/dev/null | grep -c '"event":"token_refresh"' || true)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "audit token_issued" "${issued:-0}" $((cc_counted + logins)) \
        $((cc_counted + logins + CONNECTIONS * cc_runs)) "client_credentials + $logins password grants" >>"$CHECKS"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "audit token_refresh" "${refreshed:-0}" "$refreshes" \
        $((refreshes + CHAINS * refresh_runs)) "refreshes" >>"$CHECKS"
    # Every chain ends on one unused refresh token (a revoked family's too), and every refresh
    # used one; except a refresh cut off in flight between its two transactions (redeem, then
    # insert the successor): its token is used and its chain ends without an unused one.
    rows=""
    case $store in
        sqlite) rows=$(python3 - "$WORK/sqlite/var/state.db" <<'EOF' || true
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(*db.execute("SELECT sum(used = 0), sum(used = 1) FROM refresh_tokens").fetchone())
EOF
        ) ;;
        postgres) rows=$(pg_sql "$PG_URL" "SELECT sum(CASE WHEN used = 0 THEN 1 ELSE 0 END), sum(used) FROM refresh_tokens" \
            2>/dev/null | tr '|' ' ' || true) ;;
    esac
    if [[ -n $rows ]]; then
        read -r unused used <<<"$rows"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "rows refresh_tokens unused" "$unused" \
            $((logins - CHAINS * refresh_runs)) "$logins" "one per chain, $((logins - ${unused:-0})) cut off" >>"$CHECKS"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "rows refresh_tokens used" "$used" "$refreshes" \
            $((refreshes + CHAINS * refresh_runs)) "one per refresh" >>"$CHECKS"
    fi
    # The issuer's own account: store errors (503s), token errors (the pre-check's replay only).
    "${CURL[@]}" -o "$WORK/$store/metrics" "http://127.0.0.1:${ADMIN_OF[$store]}/metrics" 2>/dev/null || : >"$WORK/$store/metrics"
    store_errors=$(awk '/^gatehouse_identity_store_errors_total/ { n += $NF } END { print n + 0 }' "$WORK/$store/metrics")
    token_errors=$(awk '/^gatehouse_identity_token_errors_total/ { n += $NF } END { print n + 0 }' "$WORK/$store/metrics")
    audit_dropped=$(awk '/^gatehouse_identity_audit_log_dropped_total/ { n += $NF } END { print n + 0 }' "$WORK/$store/metrics")
    if [[ $store != memory ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "metric store errors" "$store_errors" 0 0 "" >>"$CHECKS"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "metric audit lines dropped" "$audit_dropped" 0 0 "" >>"$CHECKS"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "metric token errors" "$token_errors" 2 2 \
        "the pre-check's replay and its revoked family's token" >>"$CHECKS"
    # Error and warning lines in the issuer's log (tracing: " ERROR " / " WARN " after the time).
    log_errors=$(grep -cE '^[^ ]+ +(ERROR|WARN) ' "$WORK/issuer_$store.log" || true)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$store" "issuer log ERROR/WARN lines" "${log_errors:-0}" 0 0 "" >>"$CHECKS"
done
if ((HAVE_POSTGRES)); then
    pg_errors=$(grep -cE '(ERROR|FATAL|PANIC):' "$WORK/postgres.log" || true)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' postgres "server log ERROR/FATAL lines" "${pg_errors:-0}" 0 0 "" >>"$CHECKS"
fi

# ---------------------------------------------------------------------------------------------
# Report
echo
report_py "$RESULTS" "$CHECKS" <<'EOF'
cpu, db, chains = {}, {}, {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    t = r["target"]
    if num(r["cpu_us_per_req"]) is not None:
        cpu.setdefault(t, []).append(num(r["cpu_us_per_req"]))
    if num(r["db_cpu_us_per_req"]) is not None:
        db.setdefault(t, []).append(num(r["db_cpu_us_per_req"]))
medc = {t: statistics.median(v) for t, v in cpu.items() if v}
medd = {t: statistics.median(v) for t, v in db.items() if v}
# CPU of the whole store: the issuer's, plus PostgreSQL's where the state lives in another process
# (SQLite runs inside the issuer, memory needs nothing else). Per run, then the median.
tot = {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    c, d = num(r["cpu_us_per_req"]), num(r["db_cpu_us_per_req"])
    if c is not None:
        tot.setdefault(r["target"], []).append(c + (d or 0))
medt = {t: statistics.median(v) for t, v in tot.items() if v}

stores = ["memory", "sqlite", "postgres"]
order = [f"{g}_{s}" for g in ("cc", "refresh") for s in stores]
hdr = ["target", "median req/s", "issuer CPU µs/req", "+ postgres µs/req", "median p99 ms",
       "req/s min..max", "issuer CPU min..max", "socket errors"]
table = []
for t in order:
    if t not in med:
        continue
    c = cpu.get(t, [])
    table.append([t, f"{med[t]:.0f}", f"{medc[t]:.1f}" if t in medc else "n/a",
                  f"{medd[t]:.1f}" if t in medd else "-", f"{medp[t]:.2f}" if t in medp else "n/a",
                  f"{min(rps[t]):.0f}..{max(rps[t]):.0f}", f"{min(c):.1f}..{max(c):.1f}" if c else "n/a",
                  str(sockerr.get(t, 0))])
print_table(hdr, table)

def r(d, a, b):
    return f"{d[a] / d[b]:.2f}" if a in d and b in d and d[b] > 0 else "n/a"

print()
print("ratios of medians (information only; never a failure). CPU: the issuer's; store CPU: the issuer's")
print("plus PostgreSQL's for postgres targets (SQLite runs inside the issuer). Δ: store CPU µs/req added.")
pairs = [("cc_sqlite", "cc_memory"), ("cc_postgres", "cc_memory"),
         ("refresh_sqlite", "refresh_memory"), ("refresh_postgres", "refresh_memory"),
         ("cc_postgres", "cc_sqlite"), ("refresh_postgres", "refresh_sqlite")]
rows = []
for a, b in pairs:
    if a in med and b in med:
        delta = f"{medt[a] - medt[b]:+.1f}" if a in medt and b in medt else "n/a"
        rows.append([f"{a} / {b}", ratio(a, b), r(medc, a, b), r(medt, a, b), delta])
if rows:
    print_table(["", "req/s", "CPU/req", "store CPU/req", "Δ store µs/req"], rows)
if "cc_memory" not in med:
    print("(no memory targets: BASELINE_IDENTITY_BIN not set)")

print()
print("cross-checks (counted = pre-check + warm-up + rounds; in flight when a run stopped: served, not counted):")
bad = 0
for c in csv.DictReader(open(sys.argv[2]), delimiter="\t"):
    got, low, high = int(c["got"] or 0), int(c["low"]), int(c["high"])
    ok = low <= got <= high
    bad += not ok
    want = f"{low}" if low == high else f"{low}..{high}"
    note = f"  ({c['note']})" if c["note"] else ""
    print(f"  {'ok ' if ok else 'BAD'} {c['store']:<8} {c['check']:<30} {got:>9}  expected {want}{note}")
if bad:
    print(f"WARNING: {bad} cross-check(s) off; KEEP_WORKDIR=1 keeps the audit logs, databases and issuer logs")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $KEEP_WORKDIR == 1 ]]; then
    echo "raw results: $RESULTS, $WORK/wrk/"
fi
exit 0
