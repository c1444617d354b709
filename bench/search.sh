#!/usr/bin/env bash
# The search benchmark of issue 12 (`bash bench/run.sh --search` runs it), for each
# backend (SQLite, and PostgreSQL on a throwaway cluster):
#
#   W1 with and without the index  64 writers posting one message each, against this
#                      build and against --baseline (a build from before search, which
#                      has no index to keep), each on a fresh database, interleaved
#   search             a fresh database filled through the API with 1,000,000 messages
#                      over 1,000 chats of one user (examples/bench_search.rs), then
#                      2,000 two-word searches, one at a time and 4 at a time
#
# Only 127.0.0.1 and Unix sockets are used; every step is bounded by its counts and by
# `timeout`; on exit the script stops what it started, by PID.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash bench/run.sh --search [options]

  --baseline PATH     a neptun-chat binary from before search (e.g. a release build of
                      e6d65e4) for the W1 comparison; without it that part is skipped
  --messages N        messages in the search database (default 1000000)
  --queries N         searches per measurement (default 2000)
  --duration SECS     seconds of W1 per measurement (default 5)
  --runs N            runs of the W1 comparison (default 3)
  --backends "LIST"   subset of "sqlite postgres" (default both)
  --no-build          use the binaries already built
  --out DIR           where results go (default bench/results)
USAGE
}

BASELINE=""
MESSAGES=1000000
QUERIES=2000
DURATION=5
RUNS=3
BACKENDS="sqlite postgres"
BUILD=1
OUT=bench/results
COMMAND="bash bench/run.sh --search${*:+ $*}"
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) BASELINE=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --queries) QUERIES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
NAME=search
. "$ROOT/bench/lib.sh"

for tool in python3 cargo timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
case " $BACKENDS " in *" postgres "*) bash "$PG_TMP" install || die "PostgreSQL cannot be installed" ;; esac

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  log "building the release binary and the loads"
  cargo build --release --locked --bin neptun-chat --example bench_events --example bench_search >&2
fi
BIN=$TARGET_DIR/release/neptun-chat
EVENTS_LOAD=$TARGET_DIR/release/examples/bench_events
SEARCH_LOAD=$TARGET_DIR/release/examples/bench_search
for b in "$BIN" "$EVENTS_LOAD" "$SEARCH_LOAD" ${BASELINE:+"$BASELINE"}; do
  [ -x "$b" ] || die "missing $b"
done



# seed BINARY DATABASE: a user with a session and a chat: sets TOKEN and CHAT.
seed() {
  "$1" --database "$2" user create writer >/dev/null
  TOKEN=$("$1" --database "$2" session create writer)
  CHAT=$("$1" --database "$2" chat create writer)
}

# fresh BACKEND NAME: a new database's path or URL.
fresh() {
  case "$1" in
    sqlite) echo "$WORK/$2.db" ;;
    postgres) bash "$PG_TMP" createdb "$PG_DIR" "$2" ;;
  esac
}

mkdir -p "$OUT"
RAW="$OUT/latest-search.raw.jsonl"
: >"$RAW"
record() { # BACKEND WHAT JSON
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(backend=sys.argv[1], what=sys.argv[2]); print(json.dumps(d))' \
    "$1" "$2" "$3" >>"$RAW"
}

for backend in $BACKENDS; do
  [ "$backend" = postgres ] && start_postgres
  if [ -n "$BASELINE" ]; then
    for run in $(seq "$RUNS"); do
      for build in baseline indexed; do
        binary=$BIN
        [ "$build" = baseline ] && binary=$BASELINE
        database=$(fresh "$backend" "w1_${run}_$build")
        seed "$binary" "$database"
        start_server "$binary" "$database"
        out=$(timeout $((DURATION + 60)) "$EVENTS_LOAD" --address "http://127.0.0.1:$PORT" \
          --user writer --token "$TOKEN" --chat "$CHAT" --duration "$DURATION")
        stop_server
        record "$backend" "w1-$build" "$out"
        log "$backend run $run: W1 $build $(echo "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["w1_req_s"]))') req/s"
      done
    done
  fi
  database=$(fresh "$backend" search_large)
  seed "$BIN" "$database"
  start_server "$BIN" "$database"
  log "$backend: storing $MESSAGES messages through the API"
  out=$(timeout 3600 "$SEARCH_LOAD" --address "http://127.0.0.1:$PORT" --user writer --token "$TOKEN" \
    seed --messages "$MESSAGES")
  record "$backend" seed "$out"
  log "$backend: seeded $out"
  for concurrency in 1 4; do
    out=$(timeout 900 "$SEARCH_LOAD" --address "http://127.0.0.1:$PORT" --user writer --token "$TOKEN" \
      query --queries "$QUERIES" --concurrency "$concurrency")
    record "$backend" "query-c$concurrency" "$out"
    log "$backend: searches at concurrency $concurrency: $out"
  done
  stop_server
  stop_postgres
done

python3 - "$RAW" "$OUT/latest-search.md" "$COMMAND" <<'PY'
import json, statistics, sys, datetime, os
rows = [json.loads(l) for l in open(sys.argv[1])]
f = lambda v, d=1: "–" if v is None else f"{v:,.{d}f}"
lines = [f"{datetime.datetime.utcnow().replace(microsecond=0).isoformat()}Z · `{sys.argv[3]}` · load average (1 min) at the end {os.getloadavg()[0]:.1f}", ""]
checks = []
lines += ["| backend | messages | stored in | searches at once | searches/s | p50 | p99 | max | hits per page | empty pages |",
          "|---|---|---|---|---|---|---|---|---|---|"]
for backend in dict.fromkeys(r["backend"] for r in rows):
    seeded = next((r for r in rows if r["backend"] == backend and r["what"] == "seed"), None)
    for c in (1, 4):
        q = next((r for r in rows if r["backend"] == backend and r["what"] == f"query-c{c}"), None)
        if not q or not seeded:
            continue
        lines.append(f"| {backend} | {seeded['messages']:,} | {f(seeded['seconds'], 0)} s | {c} | {f(q['queries_s'], 0)} | {f(q['p50_ms'])} ms | {f(q['p99_ms'])} ms | {f(q['max_ms'])} ms | {f(q['hits_per_page'])} | {q['empty_pages']} |")
        if c == 1:
            checks.append((f"{backend}: two-word search p99 <= 50 ms over {seeded['messages']:,} messages", f"{q['p99_ms']:.1f} ms", q["p99_ms"] <= 50))
w1 = [r for r in rows if r["what"].startswith("w1-")]
if w1:
    lines += ["", "| backend | W1 req/s without the index (baseline build) | with it | ratio (median of runs) |", "|---|---|---|---|"]
    for backend in dict.fromkeys(r["backend"] for r in w1):
        base = [r["w1_req_s"] for r in w1 if r["backend"] == backend and r["what"] == "w1-baseline"]
        idx = [r["w1_req_s"] for r in w1 if r["backend"] == backend and r["what"] == "w1-indexed"]
        ratio = statistics.median([i / b for b, i in zip(base, idx) if b])
        lines.append(f"| {backend} | {f(statistics.median(base), 0)} | {f(statistics.median(idx), 0)} | {ratio * 100:.0f}% |")
        checks.append((f"{backend}: W1 with the index >= 85% of W1 without", f"{ratio * 100:.0f}%", ratio >= 0.85))
lines += ["", "| target | measured | met |", "|---|---|---|"]
lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "results: $OUT/latest-search.md (raw: $RAW)"
