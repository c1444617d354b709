#!/usr/bin/env bash
# The benchmark of issue 5: builds the release binary and the two baselines, seeds a
# fresh database through the CLI, and drives the workloads W1–W5 over HTTP/1.1
# keep-alive on 127.0.0.1 with wrk, against neptun-chat at --sync normal and full and
# against the no-database echo server (baseline a); runs raw SQLite inserts (baseline b);
# then prints a table of medians and writes it as JSON. See BENCHMARKS.md.
#
# `--backend postgres` (first or anywhere among the options) runs bench/postgres.sh
# instead, with the other options: the same workloads against PostgreSQL (issue 10).
#
# Every neptun-chat measurement gets a fresh copy of the seeded database and a server
# started for it alone, so each peak RSS (VmHWM) belongs to one workload. Runs are
# interleaved (echo, normal, full for each workload, then the next workload; then the
# next run), so a burst of load from elsewhere on the machine hits all three alike.
#
# Only 127.0.0.1 is used; every wrk run is bounded by -d and by `timeout`; on exit the
# script stops the processes it started, by PID, and removes its temporary folder.
set -euo pipefail

# --backend sqlite|postgres: PostgreSQL has a script of its own.
ARGS=()
BACKEND=sqlite
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=${2:?--backend needs sqlite or postgres}; shift 2 ;;
    --events) BACKEND=events; shift ;;
    --search) BACKEND=search; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
set -- ${ARGS[@]+"${ARGS[@]}"}
case "$BACKEND" in
  sqlite) ;;
  postgres | postgresql) exec bash "$(dirname "$0")/postgres.sh" "$@" ;;
  events) exec bash "$(dirname "$0")/events.sh" "$@" ;;
  search) exec bash "$(dirname "$0")/search.sh" "$@" ;;
  *) echo "unknown backend: $BACKEND (sqlite or postgres)" >&2; exit 2 ;;
esac

usage() {
  cat <<'EOF'
usage: bash bench/run.sh [--backend sqlite|postgres] [options]

  --backend postgres  the PostgreSQL benchmark: see bash bench/run.sh --backend postgres --help
  --events            the events-stream benchmark: see bash bench/run.sh --events --help
  --search            the full-text search benchmark: see bash bench/run.sh --search --help

  --duration SECS     seconds per measurement (default 10)
  --runs N            runs of every measurement; the report shows medians (default 3)
  --quick             smoke test: 2 s x 1 run, 0.5 s SQLite cases, 100,000-message start-up check
  --sync "LEVELS"     sync levels to measure (default "normal full")
  --workloads "LIST"  subset of "W1c1 W1c64 W2 W3 W4 W5" (default all)
  --wrk-threads N     wrk -t (default 1: the machine has 2 cores, wrk competes with the server)
  --no-overload       skip the W1 check at concurrency 1024
  --no-startup        skip the start-up check on a large database
  --startup-messages N  messages in the start-up check's database (default 1000000)
  --out DIR           where results go (default bench/results)
  --no-build          use the binaries already built
  --log LEVEL         the server's RUST_LOG (default warn: one log line per request costs a write)
  --compare BIN       also measure this neptun-chat binary (another build, e.g. of an older
                      commit) in every run, interleaved with the built one; the report
                      lists it as "neptun B"
EOF
}

DURATION=10
RUNS=3
SYNCS="normal full"
WORKLOADS="W1c1 W1c64 W2 W3 W4 W5"
WRK_THREADS=1
OVERLOAD=1
OVERLOAD_CONNECTIONS=1024
OVERLOAD_DURATION=""
STARTUP=1
STARTUP_MESSAGES=1000000
SQLITE_SECONDS=2
OUT=bench/results
BUILD=1
LOG_LEVEL=warn
COMPARE_BIN=""
COMMAND="bash bench/run.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --quick) DURATION=2; RUNS=1; SQLITE_SECONDS=0.5; STARTUP_MESSAGES=100000; shift ;;
    --sync) SYNCS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --no-overload) OVERLOAD=0; shift ;;
    --no-startup) STARTUP=0; shift ;;
    --startup-messages) STARTUP_MESSAGES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --log) LOG_LEVEL=$2; shift 2 ;;
    --compare) COMPARE_BIN=$(realpath "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
OVERLOAD_DURATION=${OVERLOAD_DURATION:-$(( DURATION < 5 ? DURATION : 5 ))}

cd "$(dirname "$0")/.."
ROOT=$PWD
export BENCH_LUA_DIR="$ROOT/bench"
report() { python3 "$ROOT/bench/report.py" "$@"; }

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
# wrk needs a descriptor per connection (the overload check opens 1024).
ulimit -n 8192 2>/dev/null || ulimit -n 4096 2>/dev/null || true

# --- build ------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  log "building the release binary and the bench examples"
  cargo build --release --locked --bin neptun-chat --example bench_echo --example bench_sqlite >&2
fi
BIN=$TARGET_DIR/release/neptun-chat
ECHO_BIN=$TARGET_DIR/release/examples/bench_echo
SQLITE_BIN=$TARGET_DIR/release/examples/bench_sqlite
for b in "$BIN" "$ECHO_BIN" "$SQLITE_BIN" ${COMPARE_BIN:+"$COMPARE_BIN"}; do
  [ -x "$b" ] || die "missing $b"
done

# --- processes and clean-up ---------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/neptun-bench.XXXXXX")
SERVER_PID=""
ECHO_PID=""

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

cleanup() {
  local status=$?
  stop_pid "$SERVER_PID"
  stop_pid "$ECHO_PID"
  if [ "$status" -ne 0 ] && [ -s "$WORK/server.log" ]; then
    log "last lines of the server log:"
    tail -n 20 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
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

start_server() { # DATABASE SYNC [BINARY] -> SERVER_PID, SERVER_PORT
  SERVER_PORT=$(report port)
  RUST_LOG=$LOG_LEVEL "${3:-$BIN}" --database "$1" serve --bind "127.0.0.1:$SERVER_PORT" --sync "$2" \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  wait_healthy "$SERVER_PORT" "$SERVER_PID"
}

stop_server() {
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

fresh_copy() { # -> path of a fresh copy of the seeded database
  local db="$WORK/run.db"
  rm -f "$db" "$db-wal" "$db-shm"
  cp "$TEMPLATE" "$db"
  echo "$db"
}

# --- seed -----------------------------------------------------------------------
TEMPLATE=$WORK/template.db
USERS_FILE=$WORK/users.txt
cli() { "$BIN" --database "$TEMPLATE" "$@"; }

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
start_server "$TEMPLATE" normal
report seed-chat --port "$SERVER_PORT" --user "$BENCH_USER" --token "$BENCH_TOKEN" \
  --chat "$READ_CHAT" --messages 10000 --batch 100
report seed-users --port "$SERVER_PORT" --users-file "$USERS_FILE" --messages 20
stop_server # checkpoints the WAL into the file, so the file alone is the template
rm -f "$TEMPLATE-wal" "$TEMPLATE-shm"

# --- measure --------------------------------------------------------------------
mkdir -p "$OUT"
RAW=$OUT/latest.raw.jsonl
: >"$RAW"

ECHO_PORT=$(report port)
"$ECHO_BIN" --bind "127.0.0.1:$ECHO_PORT" >"$WORK/echo.log" 2>&1 &
ECHO_PID=$!
wait_healthy_echo() {
  local i
  for i in $(seq 300); do
    grep -q '^listening on' "$WORK/echo.log" && return 0
    kill -0 "$ECHO_PID" 2>/dev/null || die "the echo server exited"
    sleep 0.05
  done
  die "the echo server did not start"
}
wait_healthy_echo

# measure TARGET SYNC WORKLOAD RUN: one wrk run, appended to $RAW as one JSON line.
measure() {
  local target=$1 sync=$2 workload=$3 run=$4
  local script conns mpr batch=0 chat=$WRITE_CHAT
  case "$workload" in
    W1c1) script=w1.lua conns=1 mpr=1 ;;
    W1c64) script=w1.lua conns=64 mpr=1 ;;
    W2) script=batch.lua conns=64 mpr=10 batch=10 ;;
    W3) script=batch.lua conns=16 mpr=100 batch=100 ;;
    W4) script=w4.lua conns=64 mpr=100 chat=$READ_CHAT ;;
    W5) script=w5.lua conns=64 mpr=1 ;;
    overload) script=overload.lua conns=$OVERLOAD_CONNECTIONS mpr=1 ;;
    *) die "unknown workload $workload" ;;
  esac
  local threads=$(( WRK_THREADS < conns ? WRK_THREADS : conns ))
  local duration=$DURATION
  [ "$workload" = overload ] && duration=$OVERLOAD_DURATION
  local port pid idle=null
  if [ "$target" = echo ]; then
    port=$ECHO_PORT pid=$ECHO_PID
  elif [ "$target" = compare ]; then
    start_server "$(fresh_copy)" "$sync" "$COMPARE_BIN"
    port=$SERVER_PORT pid=$SERVER_PID
    idle=$(status_kib "$pid" VmRSS)
  else
    start_server "$(fresh_copy)" "$sync"
    port=$SERVER_PORT pid=$SERVER_PID
    idle=$(status_kib "$pid" VmRSS)
  fi
  local load cpu0 cpu1 out json peak
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  cpu0=$(cpu_ticks "$pid")
  out=$(BENCH_USER=$BENCH_USER BENCH_TOKEN=$BENCH_TOKEN BENCH_CHAT=$chat BENCH_BATCH=$batch \
    BENCH_BEFORE=9223372036854775807 BENCH_USERS_FILE=$USERS_FILE BENCH_THREADS=$threads \
    timeout --foreground -k 5 $(( duration + 60 )) wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 10s \
    -s "$ROOT/bench/$script" "http://127.0.0.1:$port") || die "wrk failed: $out"
  cpu1=$(cpu_ticks "$pid")
  peak=$(status_kib "$pid" VmHWM)
  json=$(sed -n 's/^BENCH_JSON //p' <<<"$out")
  [ -n "$json" ] || die "no result from wrk: $out"
  [ "$target" != echo ] && stop_server
  local kind=http
  [ "$workload" = overload ] && kind=overload
  printf '{"kind":"%s","target":"%s","sync":"%s","workload":"%s","run":%d,"connections":%d,"wrk_threads":%d,"messages_per_request":%d,"idle_rss_kib":%s,"peak_rss_kib":%s,"cpu_seconds":%s,"loadavg":"%s","wrk":%s}\n' \
    "$kind" "$target" "$sync" "$workload" "$run" "$conns" "$threads" "$mpr" "${idle:-null}" \
    "${peak:-null}" "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')" \
    "$load" "$json" >>"$RAW"
  python3 - "$RAW" <<'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
w = r["wrk"]; s = w["duration_us"] / 1e6
print(f"  {r['workload']:>8} {r['target']:>6} {r['sync']:>6} run {r['run']}: "
      f"{w['requests'] / s:>9,.0f} req/s  p50 {w['latency_us']['p50'] / 1000:6.2f} ms  "
      f"p99 {w['latency_us']['p99'] / 1000:6.2f} ms  non-2xx {w['errors']['status']}  "
      f"peak {(r['peak_rss_kib'] or 0) / 1024:5.1f} MiB  load {r['loadavg'].split()[0]}")
EOF
}

read -ra SYNC_LEVELS <<<"$SYNCS"
for run in $(seq "$RUNS"); do
  log "run $run of $RUNS: raw SQLite (b)"
  "$SQLITE_BIN" --seconds "$SQLITE_SECONDS" --dir "$WORK" --sync "${SYNC_LEVELS[@]}" \
    | sed "s/^{/{\"run\":$run,/" >>"$RAW"
  for workload in $WORKLOADS; do
    log "run $run of $RUNS: $workload"
    measure echo - "$workload" "$run"
    for sync in $SYNCS; do
      measure server "$sync" "$workload" "$run"
      [ -z "$COMPARE_BIN" ] || measure compare "$sync" "$workload" "$run"
    done
  done
done
stop_pid "$ECHO_PID"
ECHO_PID=""

if [ "$OVERLOAD" = 1 ]; then
  for sync in $SYNCS; do
    log "overload: W1 at concurrency $OVERLOAD_CONNECTIONS, --sync $sync"
    measure server "$sync" overload 1
  done
fi

if [ "$STARTUP" = 1 ]; then
  log "start-up: building a database of $STARTUP_MESSAGES messages through the API"
  BIG=$WORK/big.db
  cp "$TEMPLATE" "$BIG"
  start_server "$BIG" normal
  report seed-chat --port "$SERVER_PORT" --user "$BENCH_USER" --token "$BENCH_TOKEN" \
    --chat "$WRITE_CHAT" --messages "$STARTUP_MESSAGES" --batch 1000
  stop_server
  log "start-up: timing 5 starts to a healthy /healthz"
  report startup --binary "$BIN" --database "$BIG" --sync full --runs 5 \
    --messages "$STARTUP_MESSAGES" --log "$WORK/server.log" --log-level "$LOG_LEVEL" >>"$RAW"
  rm -f "$BIG" "$BIG-wal" "$BIG-shm"
fi

# --- report ---------------------------------------------------------------------
META=$(python3 -c 'import json, sys; print(json.dumps({"command": sys.argv[1], "date": sys.argv[2],
  "runs": int(sys.argv[3]), "duration_s": float(sys.argv[4]), "syncs": sys.argv[5].split(),
  "wrk_threads": int(sys.argv[6]), "log_level": sys.argv[7], "git": sys.argv[8],
  "compare": sys.argv[9] or None}))' \
  "$COMMAND" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$RUNS" "$DURATION" "$SYNCS" "$WRK_THREADS" \
  "$LOG_LEVEL" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')" \
  "$COMPARE_BIN")
report summarize "$RAW" --meta "$META" --json-out "$OUT/latest.json" --md-out "$OUT/latest.md"
cp "$OUT/latest.json" "$OUT/$(date -u +%Y%m%dT%H%M%SZ).json"
log "results: $OUT/latest.json, $OUT/latest.md (raw: $RAW)"
