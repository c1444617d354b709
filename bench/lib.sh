# Process handling shared by bench/events.sh and bench/search.sh (sourced, not run):
# the log, one server at a time on a free port of 127.0.0.1, a throwaway PostgreSQL
# cluster, and the clean-up on exit, which stops only what the script started, by PID.
# The sourcing script sets NAME (for the log) and ROOT first; this sets WORK, PG_DIR,
# SERVER_PID and, once a server runs, PORT.

log() { printf '[bench-%s %s] %s\n' "$NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PG_TMP=$ROOT/scripts/pg-tmp.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/neptun-bench-$NAME.XXXXXX")
PG_DIR=""
SERVER_PID=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  stop_server
  [ -n "$PG_DIR" ] && bash "$PG_TMP" stop "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_server BINARY DATABASE [SERVE_OPTIONS...]: a server (`--sync normal`) on a free
# port; sets PORT and SERVER_PID.
start_server() {
  local binary=$1 database=$2 line
  shift 2
  : >"$WORK/server.log"
  RUST_LOG=warn,neptun_chat::startup=info NEPTUN_COOKIE_SECURE=false "$binary" --database "$database" serve \
    --bind 127.0.0.1:0 --sync normal "$@" 2>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 300); do
    line=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/server.log" || true)
    [ -n "$line" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server did not start: $(cat "$WORK/server.log")"
    sleep 0.1
  done
  PORT=${line##*:}
  [ -n "$PORT" ] || die "the server did not say its port"
}

# start_postgres: a throwaway cluster in PG_DIR, until stop_postgres or the exit.
start_postgres() {
  PG_DIR=$(mktemp -d "/tmp/neptun-bench-$NAME-pg.XXXXXX")
  bash "$PG_TMP" start "$PG_DIR" >/dev/null
}

stop_postgres() {
  [ -n "$PG_DIR" ] || return 0
  bash "$PG_TMP" stop "$PG_DIR" >/dev/null 2>&1 || true
  PG_DIR=""
}
