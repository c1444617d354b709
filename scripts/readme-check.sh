#!/usr/bin/env bash
# Runs the README's shell blocks the way a reader pastes them: in order, in one bash
# process (so $TOKEN, $CHAT, ... carry from block to block), in a fresh copy of this
# checkout, against the server the README itself starts. Fails with the README line of
# the first command that fails, or of the first curl that answers a status it should not.
#
#   bash scripts/readme-check.sh [MARKDOWN_FILE]      # default: README.md
#
# README_CHECK_START_DEADLINE_SECS (default 1800) bounds how long a server block may take
# to build and answer /healthz.
#
# How blocks are marked (the words after the language are invisible on GitHub):
#   ```sh                  run in order under `set -euo pipefail`; any non-zero exit fails
#   ```sh server           starts the server in the foreground (a reader leaves it running
#                          in its own terminal). The check runs it in the background with
#                          NEPTUN_BIND=127.0.0.1:0, reads the port from its start-up log
#                          line, waits for /healthz and sets API=http://localhost:PORT
#                          (the README's `API=${API:-...}` keeps it). A later server block
#                          reuses that port.
#   ```sh stopped          runs with the server stopped: the check sends it SIGINT first,
#                          as Ctrl-C in its terminal does, and waits for a clean exit 0.
#   ```sh no-check REASON  not run; REASON is printed (say why: Docker, recursion, ...).
# Other languages (json, text, ...) are never run; shell, console and zsh blocks are
# refused, as a shell block the check skips would be a silent hole.
#
# Rules for checked blocks, so that a failure cannot go unnoticed:
#   - every curl has --fail-with-body (or --fail; a 4xx/5xx then exits non-zero), or
#     ends with `# expect: NNN`, and then its output must show that status: the JSON
#     envelope's "statusCode", or the status line of `curl -i` / `curl -I`. (Such a
#     command runs in a subshell, so it cannot set variables for later blocks.)
#   - no `a && b`: under `set -e` a failing `a` there goes unnoticed. One command a line.
#   - the server's address is $API, set once as API=${API:-http://localhost:8080};
#     no other localhost:8080 in a checked block;
#   - the server starts only in a `sh server` block (`cargo run` or `serve` elsewhere
#     would never return).
#
# The copy holds the checkout's tracked and untracked-but-not-ignored files (so local
# edits count, and data/ holds no database: this checkout's data/neptun.db and its
# backups/ are never touched), with target/ linked to this checkout's
# target directory: the README's `cargo` commands build there, as they would for a
# reader, and find the build CI has already done when it is up to date. NEPTUN_*,
# RUST_LOG, API and CARGO_TARGET_DIR are cleared first, so the blocks see a reader's
# defaults; TMPDIR points into the check's own folder, so files the blocks make with
# mktemp go with it. Needs bash, git, python3, curl and setsid (util-linux).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
readme="$(realpath "${1:-$repo/README.md}")"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")"
# The first server block's `cargo run` builds a fresh checkout (minutes on 2 cores).
readonly START_DEADLINE_SECS="${README_CHECK_START_DEADLINE_SECS:-1800}"

work="$(mktemp -d)"
# The checker's own files live beside the copy, never inside it; the blocks' temporary
# files (mktemp) go to tmp/, so they are removed with the rest.
mkdir "$work/checkout" "$work/check" "$work/tmp"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pgid
    pgid="$(cat "$work/check/server.pgid" 2>/dev/null || true)"
    if [[ -n "$pgid" ]] && kill -0 -- "-$pgid" 2>/dev/null; then
        kill -TERM -- "-$pgid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The fresh checkout. Files git still lists but that were deleted are skipped.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$repo" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) |
    tar -xf - -C "$work/checkout"
mkdir -p "$target_dir"
rm -rf "$work/checkout/target"
ln -s "$target_dir" "$work/checkout/target"

# README -> one bash script: a prelude of helpers, then every checked block in order.
# map.txt holds, for each line of the script, the README line it came from.
python3 - "$readme" "$work/check" <<'PYTHON'
import re, sys
from pathlib import Path

readme, out = Path(sys.argv[1]), Path(sys.argv[2])
name = readme.name
lines = readme.read_text(encoding="utf-8").splitlines()
fence = re.compile(r"^ {0,3}```\s*([A-Za-z0-9_-]*)\s*(.*?)\s*$")
curl = re.compile(r"(^|[\s;|&(`])curl\s")
fails = re.compile(r"\s(--fail-with-body|--fail)(\s|$)")
# `cargo run` without arguments for the binary, or a `serve` subcommand, never returns.
serves = re.compile(r"^\s*cargo run\b(?!.*\s--\s)|\sserve\s*(#.*)?$")
expect = re.compile(r"#\s*expect:\s*([1-5][0-9][0-9])\s*$")

blocks, problems = [], []
i = 0
while i < len(lines):
    m = fence.match(lines[i])
    if not m:
        i += 1
        continue
    lang, info = m.group(1), m.group(2)
    start, body = i + 1, []
    i += 1
    while i < len(lines) and not re.match(r"^ {0,3}```\s*$", lines[i]):
        body.append(lines[i])
        i += 1
    if i == len(lines):
        problems.append(f"{name}:{start}: unclosed code block")
    i += 1
    if lang in ("shell", "console", "zsh", "shell-session"):
        problems.append(f"{name}:{start}: a {lang!r} block would be skipped unnoticed; use 'sh' (or 'sh no-check (why)')")
    if lang not in ("sh", "bash"):
        continue
    words = info.split(None, 1)
    kind = words[0] if words else "run"
    if kind == "no-check":
        reason = words[1] if len(words) > 1 else ""
        if not reason:
            problems.append(f"{name}:{start}: a no-check block must say why")
        print(f"skipped {name}:{start}: {reason}")
        continue
    if kind not in ("run", "server", "stopped"):
        problems.append(f"{name}:{start}: unknown block mark {kind!r}")
        continue
    blocks.append((kind, start, body))

script, where = [], []
def emit(text, line):
    script.append(text)
    where.append(line)

for kind, start, body in blocks:
    if kind == "server":
        emit(f"readme_server_start {start} <<'README_CHECK_EOF'", start)
        for n, text in enumerate(body):
            emit(text, start + 1 + n)
        emit("README_CHECK_EOF", start + len(body))
        continue
    if kind == "stopped":
        emit(f"readme_server_stop {start}", start)
    emit(f"readme_block {start}", start)
    command, first = [], None
    for n, text in enumerate(body):
        line = start + 1 + n
        if first is None:
            first = line
        command.append(text)
        if text.endswith("\\"):
            continue
        whole = "\n".join(command)
        m = expect.search(text)
        code = None
        if not whole.lstrip().startswith("#"):
            code = m.group(1) if m else None
            if serves.search(whole):
                problems.append(f"{name}:{first}: this serves in the foreground and never returns; mark the block 'sh server'")
            if re.search(r"(^|[\s;])API=(?!\$\{API:-)", whole):
                problems.append(f"{name}:{first}: set the address as API=${{API:-...}}, so that the check can point it at its server")
            elif re.search(r"(localhost|127\.0\.0\.1):8080", re.sub(r"\$\{API:-[^}]*\}", "", whole)):
                problems.append(f"{name}:{first}: a fixed address; use $API, which the check points at its server")
            if " && " in whole:
                problems.append(f"{name}:{first}: '&&' hides a failure under set -e; one command a line")
            if curl.search(whole) and not code and not fails.search(whole):
                problems.append(f"{name}:{first}: curl without --fail-with-body (an expected error status needs '# expect: NNN')")
        if code:
            emit(f"readme_expect {code} {first} <<'README_CHECK_EOF'", first)
            for k, part in enumerate(command):
                emit(part, first + k)
            emit("README_CHECK_EOF", line)
        else:
            for k, part in enumerate(command):
                emit(part, first + k)
        command, first = [], None
    if command:
        problems.append(f"{name}:{first}: the block ends in a line continuation")

if not blocks:
    problems.append(f"{name}: no checked sh blocks found")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
(out / "blocks.sh").write_text("\n".join(script) + "\n", encoding="utf-8")
(out / "map.txt").write_text("\n".join(map(str, where)) + "\n", encoding="utf-8")
PYTHON

cat >"$work/check/prelude.sh" <<'PRELUDE'
# Helpers for the README's blocks; not part of what a reader pastes.
readme_at() {
    local line
    line="$(sed -n "$1p" "$README_CHECK_DIR/map.txt")"
    echo "$README_CHECK_NAME:${line:-?}"
}

# shellcheck disable=SC2317 # called by the ERR trap
readme_failed() {
    local status=$1 at
    at="$(readme_at "$2")"
    echo "readme-check: $at: the command failed (exit $status)" >&2
    readme_server_log >&2
    exit "$status"
}

readme_fail() {
    echo "readme-check: $README_CHECK_NAME:$1: $2" >&2
    readme_server_log >&2
    exit 1
}

readme_server_log() {
    if [[ -s "$README_CHECK_DIR/server.log" ]]; then
        echo "--- the server's log (last 20 lines):"
        tail -n 20 "$README_CHECK_DIR/server.log"
    fi
}

readme_block() {
    printf '\n--- %s:%s\n' "$README_CHECK_NAME" "$1"
}

# Runs one command whose answer is an expected error status (# expect: NNN). Its
# output is shown as a reader sees it; curl's own exit status does not count.
readme_expect() {
    local want=$1 line=$2 cmd out
    cmd="$(cat)"
    out="$(eval "$cmd" 2>&1)" || true
    printf '%s\n' "$out"
    if ! grep -Eq "\"statusCode\": ?$want([^0-9]|\$)|^HTTP/[0-9.]+ $want( |\$)" <<<"$out"; then
        readme_fail "$line" "expected status $want, got the output above"
    fi
}

# By its pid: the process group only exists once setsid has run.
readme_server_running() {
    [[ -n "${README_SERVER_PGID:-}" ]] && kill -0 "$README_SERVER_PGID" 2>/dev/null
}

# Starts the block (its text on stdin) as a reader's foreground server would run, in
# its own process group so that stopping it reaches cargo and the server alike.
readme_server_start() {
    local line=$1 cmd port="" deadline
    cmd="$(cat)"
    printf '\n--- %s:%s (server, in the background)\n' "$README_CHECK_NAME" "$line"
    if readme_server_running; then
        readme_fail "$line" "a server is already running; mark the block before as 'stopped'"
    fi
    : >"$README_CHECK_DIR/server.log"
    NEPTUN_BIND="127.0.0.1:${README_SERVER_PORT:-0}" \
        setsid bash -c "$cmd" >>"$README_CHECK_DIR/server.log" 2>&1 </dev/null &
    README_SERVER_PGID=$!
    echo "$README_SERVER_PGID" >"$README_CHECK_DIR/server.pgid"
    deadline=$((SECONDS + README_CHECK_START_DEADLINE_SECS))
    while [[ -z "$port" ]]; do
        port="$(grep -Eo '127\.0\.0\.1:[1-9][0-9]*' "$README_CHECK_DIR/server.log" | head -n 1 | cut -d: -f2 || true)"
        if [[ -z "$port" ]]; then
            readme_server_running || readme_fail "$line" "the server exited before it listened"
            ((SECONDS < deadline)) || readme_fail "$line" "the server did not start in ${README_CHECK_START_DEADLINE_SECS}s"
            sleep 0.2
        fi
    done
    README_SERVER_PORT=$port
    API="http://localhost:$port"
    until curl -sS --fail -o /dev/null "$API/healthz" 2>/dev/null; do
        readme_server_running || readme_fail "$line" "the server exited before it was healthy"
        ((SECONDS < deadline)) || readme_fail "$line" "the server was not healthy in time"
        sleep 0.2
    done
    echo "(serving $API)"
}

# Stops the server as Ctrl-C in its terminal does, and wants a clean exit.
readme_server_stop() {
    local line=$1 status=0 deadline
    readme_server_running || return 0
    kill -INT -- "-$README_SERVER_PGID"
    wait "$README_SERVER_PGID" || status=$?
    deadline=$((SECONDS + 30))
    while readme_server_running; do
        ((SECONDS < deadline)) || readme_fail "$line" "the server did not stop within 30 s of SIGINT"
        sleep 0.2
    done
    README_SERVER_PGID=""
    ((status == 0)) || readme_fail "$line" "the server exited with status $status after SIGINT"
}

trap 'readme_failed $? $LINENO' ERR
PRELUDE

# The prelude is sourced, so the README's lines keep their own line numbers in the
# script and map.txt finds them.
cat >"$work/check/run.sh" <<'RUN'
set -euo pipefail
source "$README_CHECK_DIR/prelude.sh"
source "$README_CHECK_DIR/blocks.sh"
readme_server_stop end
echo
echo "readme-check: every block of $README_CHECK_NAME ran as pasted"
RUN

unset API CARGO_TARGET_DIR RUST_LOG
for var in "${!NEPTUN_@}"; do
    unset "$var"
done
cd "$work/checkout"
TMPDIR="$work/tmp" README_CHECK_DIR="$work/check" README_CHECK_NAME="$(basename "$readme")" \
    README_CHECK_START_DEADLINE_SECS="$START_DEADLINE_SECS" \
    bash "$work/check/run.sh" </dev/null
