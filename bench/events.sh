#!/usr/bin/env bash
# The events-stream benchmark of issue 11 (`bash bench/run.sh --events` runs it):
# for each backend (SQLite, and PostgreSQL on a throwaway cluster), a fresh database
# seeded through the CLI and a server started for each scenario, then
# examples/bench_events.rs drives it:
#
#   W1 alone           64 writers posting one message each into one chat
#   W1 + 1,000 streams the same, with 1,000 events streams open on that chat: W1's
#                      req/s, and the time from a write's 200 to its event at the streams
#   W1 + 10,000 idle   the same writers, with 10,000 streams of another user open and
#                      idle: W1's req/s and the server's peak RSS
#
# Each scenario runs W1 alone first on the same server, so its ratio is measured
# against a baseline taken minutes, not hours, apart; the runs are repeated and the
# report shows medians. Only 127.0.0.1 and Unix sockets are used; every run is bounded
# by --duration and `timeout`; on exit the script stops what it started, by PID.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash bench/run.sh --events [options]

  --duration SECS     seconds of W1 per measurement (default 5)
  --runs N            runs of every scenario (default 3)
  --backends "LIST"   subset of "sqlite postgres" (default both)
  --scenarios "LIST"  subset of "chat idle" (default both)
  --no-build          use the binaries already built
  --server PATH       the server binary to measure (default: this checkout's release
                      build), e.g. an older build for a before/after comparison
  --out DIR           where results go (default bench/results)
USAGE
}

DURATION=5
RUNS=3
BACKENDS="sqlite postgres"
SCENARIOS="chat idle"
BUILD=1
SERVER=""
OUT=bench/results
COMMAND="bash bench/run.sh --events${*:+ $*}"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --server) SERVER=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
NAME=events
. "$ROOT/bench/lib.sh"

# 10,000 streams and 64 writers need more file descriptors than the default 1,024,
# in the server and in the load (each a process of its own): as many as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 12000 ] \
  || die "10,000 streams need at least 12,000 open files (ulimit -n is $(ulimit -n))"
for tool in python3 cargo timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
case " $BACKENDS " in *" postgres "*) bash "$PG_TMP" install || die "PostgreSQL cannot be installed" ;; esac

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  log "building the release binary and the events load"
  cargo build --release --locked --bin neptun-chat --example bench_events >&2
fi
BIN=${SERVER:-$TARGET_DIR/release/neptun-chat}
LOAD=$TARGET_DIR/release/examples/bench_events
for b in "$BIN" "$LOAD"; do [ -x "$b" ] || die "missing $b"; done



peak_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }

# seed DATABASE: the writer (with a chat) and the idle streams' user.
seed() {
  local database=$1
  "$BIN" --database "$database" user create writer >/dev/null
  "$BIN" --database "$database" user create idler >/dev/null
  WRITER_TOKEN=$("$BIN" --database "$database" session create writer)
  IDLER_TOKEN=$("$BIN" --database "$database" session create idler)
  CHAT=$("$BIN" --database "$database" chat create writer)
}

# load [ARGS...]: one run of the events load against the running server.
load() {
  timeout $((DURATION + 120)) "$LOAD" --address "http://127.0.0.1:$PORT" \
    --user writer --token "$WRITER_TOKEN" --chat "$CHAT" --duration "$DURATION" "$@"
}

mkdir -p "$OUT"
RAW="$OUT/latest-events.raw.jsonl"
: >"$RAW"
record() { # BACKEND SCENARIO RUN JSON [PEAK]
  python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(backend=sys.argv[1], scenario=sys.argv[2], run=int(sys.argv[3]), peak_rss_mib=float(sys.argv[5]) if sys.argv[5] else None); print(json.dumps(d))' \
    "$1" "$2" "$3" "$4" "${5:-}" >>"$RAW"
}

for backend in $BACKENDS; do
  [ "$backend" = postgres ] && start_postgres
  for run in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
      case "$backend" in
        sqlite) database="$WORK/run-$run-$scenario.db" ;;
        postgres) database=$(bash "$PG_TMP" createdb "$PG_DIR" "events_${run}_$scenario") ;;
      esac
      seed "$database"
      start_server "$BIN" "$database" --max-connections 40000 \
        --events-max-streams 20000 --events-max-per-user 20000
      out=$(load)
      record "$backend" "w1-before-$scenario" "$run" "$out"
      log "$backend run $run: W1 alone $(echo "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["w1_req_s"]))') req/s"
      if [ "$scenario" = chat ]; then
        out=$(load --streams 1000 --stream-chat "$CHAT")
      else
        out=$(load --streams 10000 --stream-user idler --stream-token "$IDLER_TOKEN")
      fi
      record "$backend" "$scenario" "$run" "$out" "$(peak_mib)"
      log "$backend run $run: $scenario $out"
      stop_server
    done
  done
  stop_postgres
done

python3 - "$RAW" "$OUT/latest-events.md" "$COMMAND" <<'PY'
import json, statistics, sys, datetime, os
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
lines = [f"{datetime.datetime.utcnow().replace(microsecond=0).isoformat()}Z · `{sys.argv[3]}` · load average (1 min) at the end {os.getloadavg()[0]:.1f}", "",
         "| backend | scenario | W1 req/s alone | W1 req/s with streams | ratio | write → event p50 | p99 | max | events received | peak RSS |",
         "|---|---|---|---|---|---|---|---|---|---|"]
checks = []
for backend in dict.fromkeys(r["backend"] for r in rows):
    for scenario, label in (("chat", "1,000 streams on the chat"), ("idle", "10,000 idle streams")):
        runs = sorted({r["run"] for r in rows if r["backend"] == backend and r["scenario"] == scenario})
        if not runs:
            continue
        alone = [next(r for r in rows if r["backend"] == backend and r["scenario"] == f"w1-before-{scenario}" and r["run"] == n) for n in runs]
        withs = [next(r for r in rows if r["backend"] == backend and r["scenario"] == scenario and r["run"] == n) for n in runs]
        ratio = med([w["w1_req_s"] / a["w1_req_s"] for a, w in zip(alone, withs) if a["w1_req_s"]])
        f = lambda v, d=1: "–" if v is None else f"{v:,.{d}f}"
        p99 = med([w["latency_p99_ms"] for w in withs])
        peak = med([w["peak_rss_mib"] for w in withs])
        lines.append(f"| {backend} | {label} | {f(med([a['w1_req_s'] for a in alone]), 0)} | {f(med([w['w1_req_s'] for w in withs]), 0)} | {f(ratio * 100 if ratio else None, 0)}% | {f(med([w['latency_p50_ms'] for w in withs]))} ms | {f(p99)} ms | {f(med([w['latency_max_ms'] for w in withs]))} ms | {f(med([w['events_received'] for w in withs]), 0)} | {f(peak)} MiB |")
        if scenario == "chat":
            checks.append((f"{backend}: W1 with 1,000 streams >= 85% of W1 alone", f"{ratio * 100:.0f}%" if ratio else "–", bool(ratio and ratio >= 0.85)))
            if backend == "sqlite":
                checks.append((f"{backend}: write -> event p99 <= 100 ms with 1,000 streams", f"{p99:.1f} ms" if p99 is not None else "–", bool(p99 is not None and p99 <= 100)))
        else:
            checks.append((f"{backend}: W1 with 10,000 idle streams >= 90% of W1 alone", f"{ratio * 100:.0f}%" if ratio else "–", bool(ratio and ratio >= 0.90)))
            checks.append((f"{backend}: peak RSS <= 128 MiB with 10,000 idle streams", f"{peak:.1f} MiB" if peak else "–", bool(peak and peak <= 128)))
lines += ["", "Medians over the runs; the ratio is the median of per-run ratios to W1 alone on the same server just before. Latency: from the writer's 200 to the event at each stream, for every 16th message.", "",
          "| target | measured | met |", "|---|---|---|"]
lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "results: $OUT/latest-events.md (raw: $RAW)"
