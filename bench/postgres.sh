#!/usr/bin/env bash
# The PostgreSQL benchmark of issue 10 (`bash bench/run.sh --backend postgres` runs it).
# Starts a throwaway PostgreSQL cluster (scripts/pg-tmp.sh: socket only, in /tmp),
# seeds one database through the CLI and the API, and then, for every workload and
# --sync level, gives each measurement a fresh copy of it (CREATE DATABASE ... TEMPLATE):
#
#   baseline  examples/bench_postgres.rs: the server's statements for one request,
#             through the same client library and pool, at the same concurrency, no HTTP
#   one       one neptun-chat server, driven by wrk as in the SQLite benchmark
#   two       two neptun-chat servers on the same database, each driven by its own wrk
#             with half the connections
#
# Measurements are interleaved (baseline, one, two for each workload and level), so a
# burst of load from elsewhere hits all three alike, and the targets are medians of the
# per-run ratios. Besides wrk's figures, each measurement records the CPU time of the
# server(s) (or the baseline) and of the PostgreSQL cluster, from /proc.
#
# Only 127.0.0.1 and Unix sockets are used; every wrk run is bounded by -d and by
# `timeout`; on exit the script stops what it started, by PID, stops the cluster and
# removes its temporary folders.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash bench/run.sh --backend postgres [options]

  --duration SECS     seconds per measurement (default 5)
  --runs N            runs of every measurement; the report shows medians (default 3)
  --quick             smoke test: 2 s x 1 run
  --sync "LEVELS"     sync levels to measure (default "normal full")
  --workloads "LIST"  subset of "W1c1 W1c64 W2 W3 W4 W5" (default all)
  --no-two            skip the two-instance measurements
  --pool-size N       --database-pool-size of the servers and the baseline's pool
                      (default: the server's default)
  --wrk-threads N     wrk -t (default 1)
  --out DIR           where results go (default bench/results)
  --no-build          use the binaries already built
  --log LEVEL         the servers' RUST_LOG (default warn)
EOF
}

DURATION=5
RUNS=3
SYNCS="normal full"
WORKLOADS="W1c1 W1c64 W2 W3 W4 W5"
TWO=1
POOL_SIZE=""
WRK_THREADS=1
OUT=bench/results
BUILD=1
LOG_LEVEL=warn
COMMAND="bash bench/run.sh --backend postgres${*:+ $*}"

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --quick) DURATION=2; RUNS=1; shift ;;
    --sync) SYNCS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --no-two) TWO=0; shift ;;
    --pool-size) POOL_SIZE=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --log) LOG_LEVEL=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
export BENCH_LUA_DIR="$ROOT/bench"
report() { python3 "$ROOT/bench/report.py" "$@"; }
PG_TMP=$ROOT/scripts/pg-tmp.sh

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "wrk is missing; installing it with apt-get"
  [ "$(id -u)" -eq 0 ] || die "install wrk (apt-get install wrk) and run again"
  apt-get install -y wrk >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
    || die "cannot install wrk"
fi
for tool in python3 curl cargo timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
bash "$PG_TMP" install || die "PostgreSQL is not installed and cannot be installed"
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
ulimit -n 8192 2>/dev/null || ulimit -n 4096 2>/dev/null || true

# --- build ------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  log "building the release binary and the PostgreSQL baseline"
  cargo build --release --locked --bin neptun-chat --example bench_postgres >&2
fi
BIN=$TARGET_DIR/release/neptun-chat
BASELINE_BIN=$TARGET_DIR/release/examples/bench_postgres
for b in "$BIN" "$BASELINE_BIN"; do
  [ -x "$b" ] || die "missing $b"
done

# --- processes and clean-up ---------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/neptun-bench.XXXXXX")
# The cluster's folder must be reachable by the `postgres` user: a folder of its own
# in /tmp, which pg-tmp.sh hands to that user.
PG_DIR=$(mktemp -d /tmp/neptun-bench-pg.XXXXXX)
SERVER_PIDS=()
PG_STARTED=0

stop_pid() { # PID: SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
  SERVER_PIDS=()
}

cleanup() {
  local status=$?
  stop_servers
  if [ "$status" -ne 0 ] && [ -s "$WORK/server.log" ]; then
    log "last lines of the server log:"
    tail -n 20 "$WORK/server.log" >&2
  fi
  if [ "$PG_STARTED" = 1 ] || [ -d "$PG_DIR/data" ]; then
    bash "$PG_TMP" stop "$PG_DIR" || true
  fi
  rm -rf "$WORK" "$PG_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_healthy() { # PORT PID
  local port=$1 pid=$2 i
  for i in $(seq 300); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "the server exited during start-up"
    sleep 0.05
  done
  die "the server on port $port was not healthy within 15 s"
}

SERVER_PORTS=()
start_server() { # URL SYNC: appends to SERVER_PIDS, SERVER_PORTS
  local port pid
  port=$(report port)
  RUST_LOG=$LOG_LEVEL "$BIN" --database "$1" serve --bind "127.0.0.1:$port" --sync "$2" \
    ${POOL_SIZE:+--database-pool-size "$POOL_SIZE"} >>"$WORK/server.log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  SERVER_PORTS+=("$port")
  wait_healthy "$port" "$pid"
}

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# --- the cluster ----------------------------------------------------------------
log "starting a throwaway PostgreSQL cluster in $PG_DIR"
PG_SOCKET=$(bash "$PG_TMP" start "$PG_DIR")
PG_STARTED=1
POSTMASTER=$(head -n 1 "$PG_DIR/data/postmaster.pid")
psql_admin() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$PG_BIN/psql" -qAt -v ON_ERROR_STOP=1 -h "$PG_SOCKET" -U postgres -d postgres "$@"
  else
    "$PG_BIN/psql" -qAt -v ON_ERROR_STOP=1 -h "$PG_SOCKET" -U postgres -d postgres "$@"
  fi
}
url_of() { echo "postgresql:///$1?host=$PG_SOCKET&user=postgres"; }
# The cluster's CPU time so far, in clock ticks: the postmaster, its live children, and
# (through the postmaster's cutime/cstime) the children that have exited.
pg_ticks() { report pg-ticks --postmaster "$POSTMASTER"; }

# --- seed -----------------------------------------------------------------------
TEMPLATE_DB=neptun_seed
TEMPLATE_URL=$(bash "$PG_TMP" createdb "$PG_DIR" "$TEMPLATE_DB")
USERS_FILE=$WORK/users.txt
cli() { "$BIN" --database "$TEMPLATE_URL" "$@"; }

log "seeding users, sessions and chats through the CLI"
BENCH_USER=bench
cli user create "$BENCH_USER" >/dev/null
BENCH_TOKEN=$(cli session create "$BENCH_USER")
WRITE_CHAT=$(cli chat create "$BENCH_USER" --name writes)
READ_CHAT=$(cli chat create "$BENCH_USER" --name "10,000 messages")
: >"$USERS_FILE"
for i in $(seq 0 63); do
  user=user$i
  cli user create "$user" >/dev/null
  token=$(cli session create "$user")
  chats=""
  for c in 1 2 3 4; do chats="$chats $(cli chat create "$user" --name "chat $c")"; done
  echo "$user $token$chats" >>"$USERS_FILE"
done

log "seeding 10,000 messages into the W4 chat and 20 into each W5 chat"
start_server "$TEMPLATE_URL" normal
report seed-chat --port "${SERVER_PORTS[0]}" --user "$BENCH_USER" --token "$BENCH_TOKEN" \
  --chat "$READ_CHAT" --messages 10000 --batch 100
report seed-users --port "${SERVER_PORTS[0]}" --users-file "$USERS_FILE" --messages 20
stop_servers
SERVER_PORTS=()
psql_admin -c "VACUUM ANALYZE" -d "$TEMPLATE_DB" >/dev/null

FRESH=0
FRESH_URL=""
fresh_db() { # -> FRESH_URL: a new copy of the seeded database
  FRESH=$((FRESH + 1))
  psql_admin -c "CREATE DATABASE bench_$FRESH TEMPLATE $TEMPLATE_DB" >&2
  FRESH_URL=$(url_of "bench_$FRESH")
}
drop_db() { psql_admin -c "DROP DATABASE IF EXISTS bench_$FRESH" >&2; }

# --- measure --------------------------------------------------------------------
mkdir -p "$OUT"
RAW=$OUT/latest-postgres.raw.jsonl
: >"$RAW"

# workload_shape WORKLOAD -> SCRIPT CONNS MPR BATCH CHAT BASELINE_ARGS (or "-")
workload_shape() {
  case "$1" in
    W1c1) echo "w1.lua 1 1 0 $WRITE_CHAT --workload=append --rows=1" ;;
    W1c64) echo "w1.lua 64 1 0 $WRITE_CHAT --workload=append --rows=1" ;;
    W2) echo "batch.lua 64 10 10 $WRITE_CHAT --workload=append --rows=10" ;;
    W3) echo "batch.lua 16 100 100 $WRITE_CHAT --workload=append --rows=100" ;;
    W4) echo "w4.lua 64 100 0 $READ_CHAT --workload=page --limit=100" ;;
    W5) echo "w5.lua 64 1 0 $WRITE_CHAT -" ;;
    *) die "unknown workload $1" ;;
  esac
}

# measure TARGET SYNC WORKLOAD RUN: one measurement, appended to $RAW as one JSON line.
measure() {
  local target=$1 sync=$2 workload=$3 run=$4
  local script conns mpr batch chat baseline_args
  read -r script conns mpr batch chat baseline_args <<<"$(workload_shape "$workload")"
  local url load pg0 pg1 cpu0 cpu1 json extra
  fresh_db
  url=$FRESH_URL
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  if [ "$target" = baseline ]; then
    pg0=$(pg_ticks)
    local times_file=$WORK/times
    # shellcheck disable=SC2086 # the baseline's arguments are words on purpose
    json=$( { TIMEFORMAT='%U %S'; time timeout --foreground -k 5 $(( DURATION + 60 )) \
      "$BASELINE_BIN" --url "$url" $baseline_args --connections "$conns" \
      --seconds "$DURATION" --sync "$sync" --user "$BENCH_USER" --token "$BENCH_TOKEN" \
      --chat "$chat" ${POOL_SIZE:+--pool-size "$POOL_SIZE"} ; } 2>"$times_file" ) \
      || die "the baseline failed: $(cat "$times_file")"
    pg1=$(pg_ticks)
    local cpu
    cpu=$(tail -n 1 "$times_file" | awk '{ print $1 + $2 }')
    printf '{"kind":"pg","target":"baseline","sync":"%s","workload":"%s","run":%d,"connections":%d,"messages_per_request":%d,"loadavg":"%s","client_cpu_seconds":%s,"pg_cpu_seconds":%s,"baseline":%s}\n' \
      "$sync" "$workload" "$run" "$conns" "$mpr" "$load" "$cpu" \
      "$(awk -v a="$pg0" -v b="$pg1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')" \
      "$json" >>"$RAW"
    drop_db
    return
  fi
  local instances=1
  [ "$target" = two ] && instances=2
  SERVER_PORTS=()
  local i
  for i in $(seq "$instances"); do start_server "$url" "$sync"; done
  local idle=() per=$(( conns / instances )) threads
  threads=$(( WRK_THREADS < per ? WRK_THREADS : per ))
  for i in "${!SERVER_PIDS[@]}"; do idle+=("$(status_kib "${SERVER_PIDS[$i]}" VmRSS)"); done
  cpu0=0
  for i in "${!SERVER_PIDS[@]}"; do cpu0=$(( cpu0 + $(cpu_ticks "${SERVER_PIDS[$i]}") )); done
  pg0=$(pg_ticks)
  local wrk_pids=()
  for i in "${!SERVER_PORTS[@]}"; do
    BENCH_USER=$BENCH_USER BENCH_TOKEN=$BENCH_TOKEN BENCH_CHAT=$chat BENCH_BATCH=$batch \
      BENCH_BEFORE=9223372036854775807 BENCH_USERS_FILE=$USERS_FILE BENCH_THREADS=$threads \
      timeout --foreground -k 5 $(( DURATION + 60 )) wrk -t"$threads" -c"$per" -d"${DURATION}s" \
      --timeout 10s -s "$ROOT/bench/$script" "http://127.0.0.1:${SERVER_PORTS[$i]}" \
      >"$WORK/wrk.$i" 2>&1 &
    wrk_pids+=("$!")
  done
  for i in "${!wrk_pids[@]}"; do
    wait "${wrk_pids[$i]}" || die "wrk failed: $(cat "$WORK/wrk.$i")"
  done
  pg1=$(pg_ticks)
  cpu1=0
  for i in "${!SERVER_PIDS[@]}"; do cpu1=$(( cpu1 + $(cpu_ticks "${SERVER_PIDS[$i]}") )); done
  local peaks=() wrks=()
  for i in "${!SERVER_PIDS[@]}"; do peaks+=("$(status_kib "${SERVER_PIDS[$i]}" VmHWM)"); done
  for i in "${!SERVER_PORTS[@]}"; do
    extra=$(sed -n 's/^BENCH_JSON //p' "$WORK/wrk.$i")
    [ -n "$extra" ] || die "no result from wrk: $(cat "$WORK/wrk.$i")"
    wrks+=("$extra")
  done
  stop_servers
  SERVER_PORTS=()
  drop_db
  local joined_wrk joined_idle joined_peak
  joined_wrk=$(IFS=,; echo "${wrks[*]}")
  joined_idle=$(IFS=,; echo "${idle[*]}")
  joined_peak=$(IFS=,; echo "${peaks[*]}")
  printf '{"kind":"pg","target":"%s","sync":"%s","workload":"%s","run":%d,"connections":%d,"wrk_threads":%d,"messages_per_request":%d,"loadavg":"%s","idle_rss_kib":[%s],"peak_rss_kib":[%s],"server_cpu_seconds":%s,"pg_cpu_seconds":%s,"wrk":[%s]}\n' \
    "$target" "$sync" "$workload" "$run" "$conns" "$threads" "$mpr" "$load" "$joined_idle" \
    "$joined_peak" "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')" \
    "$(awk -v a="$pg0" -v b="$pg1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')" \
    "$joined_wrk" >>"$RAW"
}

show_last() { report pg-line "$RAW" >&2; }

read -ra SYNC_LEVELS <<<"$SYNCS"
for run in $(seq "$RUNS"); do
  for workload in $WORKLOADS; do
    log "run $run of $RUNS: $workload"
    read -r _ conns _ _ _ baseline_args <<<"$(workload_shape "$workload")"
    for sync in "${SYNC_LEVELS[@]}"; do
      if [ "$baseline_args" != - ]; then
        measure baseline "$sync" "$workload" "$run"; show_last
      fi
      measure one "$sync" "$workload" "$run"; show_last
      if [ "$TWO" = 1 ] && [ "$conns" -ge 2 ]; then
        measure two "$sync" "$workload" "$run"; show_last
      fi
    done
  done
done

# --- report ---------------------------------------------------------------------
PG_VERSION=$("$PG_BIN/postgres" --version 2>/dev/null || echo unknown)
META=$(python3 -c 'import json, sys; print(json.dumps({"command": sys.argv[1], "date": sys.argv[2],
  "runs": int(sys.argv[3]), "duration_s": float(sys.argv[4]), "syncs": sys.argv[5].split(),
  "wrk_threads": int(sys.argv[6]), "log_level": sys.argv[7], "git": sys.argv[8],
  "postgres": sys.argv[9], "pool_size": sys.argv[10] or "default"}))' \
  "$COMMAND" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$RUNS" "$DURATION" "$SYNCS" "$WRK_THREADS" \
  "$LOG_LEVEL" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')" \
  "$PG_VERSION" "$POOL_SIZE")
report pg-summarize "$RAW" --meta "$META" --json-out "$OUT/latest-postgres.json" \
  --md-out "$OUT/latest-postgres.md"
cp "$OUT/latest-postgres.json" "$OUT/postgres-$(date -u +%Y%m%dT%H%M%SZ).json"
log "results: $OUT/latest-postgres.json, $OUT/latest-postgres.md (raw: $RAW)"
