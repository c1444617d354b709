#!/usr/bin/env bash
# Checks the live server against its own OpenAPI document with schemathesis: no 5xx for
# any generated request, and every status, content type, header and body as documented;
# once on a SQLite file and once on a throwaway PostgreSQL database (scripts/pg-tmp.sh).
#
# Needs python3 (with venv and pip) and PyPI, and PostgreSQL's programs for the second
# run. Installs the pinned schemathesis of scripts/api-check-requirements.txt into
# .venv-api-check/ (reused while the pins are unchanged), builds the debug binary if it
# is stale, and for each backend seeds a user, session and chats into a fresh database,
# serves it on a free loopback port and runs schemathesis against /openapi.json. Exits
# non-zero if schemathesis finds anything on either.
#
# Without PostgreSQL it checks SQLite only and says so loudly, unless
# NEPTUN_TEST_POSTGRES=required (as .ci/run sets it), which makes that a failure.
#
# Extra arguments go to `schemathesis run`, e.g. `--report har`. Environment knobs:
# API_CHECK_SEED (default 1), API_CHECK_MAX_EXAMPLES (40), API_CHECK_DEADLINE_SECONDS (300),
# API_CHECK_BACKENDS ("sqlite postgres"). The server's own NEPTUN_* settings pass
# through: NEPTUN_WRITE_RATE_LIMIT=20 checks the documented 429s.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly REQUIREMENTS=scripts/api-check-requirements.txt
readonly VENV=.venv-api-check
readonly BIN=target/debug/neptun-chat
readonly USER_ID=alice
# Per operation and phase; about a minute on 2 cores. The deadline is a hard stop.
readonly MAX_EXAMPLES="${API_CHECK_MAX_EXAMPLES:-40}"
readonly DEADLINE_SECONDS="${API_CHECK_DEADLINE_SECONDS:-300}"
# A fixed seed keeps CI reproducible; vary it locally to explore further.
readonly SEED="${API_CHECK_SEED:-1}"
read -r -a BACKENDS <<<"${API_CHECK_BACKENDS:-sqlite postgres}"
readonly BACKENDS

# The venv is rebuilt when the pins or the interpreter change.
stamp="$(cat "$REQUIREMENTS"; python3 --version)"
if [[ "$(cat "$VENV/stamp" 2>/dev/null)" != "$stamp" ]]; then
    python3 -m venv --clear "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    printf '%s\n' "$stamp" >"$VENV/stamp"
fi

# A no-op when `cargo test` already built this binary.
cargo build --locked --quiet

work="$(mktemp -d)"
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
pg_dir=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    stop_server
    if [[ -n "$pg_dir" ]]; then
        bash scripts/pg-tmp.sh stop "$pg_dir" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Seeds, serves and checks the database NEPTUN_DATABASE names; `backend` names it in
# the messages and the work files.
check_backend() {
    local backend="$1"
    shift
    echo "api-check: $backend" >&2
    "$BIN" user create "$USER_ID" >/dev/null
    # The token stays in the environment: out of files, command lines and output.
    API_CHECK_TOKEN="$("$BIN" session create "$USER_ID")"
    export API_CHECK_TOKEN
    chat_ids=()
    for _ in 1 2 3 4 5; do
        chat_ids+=("$("$BIN" chat create "$USER_ID")")
    done

    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    base="http://127.0.0.1:$port"
    NEPTUN_COOKIE_SECURE=false "$BIN" serve --bind "127.0.0.1:$port" 2>"$work/server-$backend.log" &
    server_pid=$!

    deadline=$((SECONDS + 30))
    until "$BIN" healthcheck --bind "127.0.0.1:$port" 2>/dev/null; do
        if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "api-check ($backend): the server did not become healthy at $base" >&2
            cat "$work/server-$backend.log" >&2
            exit 1
        fi
        sleep 0.1
    done

    # Some turns in every seeded chat, so deleting the last turn can succeed too.
    python3 - "$base/api/users/$USER_ID/chats" "${chat_ids[@]}" <<'EOF'
import json, os, sys, urllib.request

chats_url, *chat_ids = sys.argv[1:]
turn = [{"content": "Hello", "role": "user"}, {"content": "Hi!", "role": "assistant"}]
body = json.dumps({"messages": turn * 10}).encode()
headers = {
    "Content-Type": "application/json",
    "Cookie": "neptun-session=" + os.environ["API_CHECK_TOKEN"],
}
for chat_id in chat_ids:
    url = f"{chats_url}/{chat_id}/messages"
    urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10).close()
EOF

    cat >"$work/schemathesis-$backend.toml" <<EOF
# Keeps failures for \`st replay\` between local runs, out of the work tree.
[cache]
directory = "$PWD/$VENV/cache"

[auth.openapi.session_cookie]
api_key = "\${API_CHECK_TOKEN}"

# Every /api/users/{user_id} route answers 403 unless the path names the session's
# user; half of the chat ids are ones that exist, so success paths are reached.
[parameters]
"path.user_id" = "$USER_ID"
"path.chat_id" = { dictionary = "seeded_chats", probability = 0.5 }

[dictionaries.seeded_chats]
values = [$(IFS=,; echo "${chat_ids[*]}")]
EOF

    # The events stream is left out: it answers 200 and then never ends, which
    # schemathesis can only wait for (tests/api/events.rs reads it with an SSE parser).
    # One worker: with two, hypothesis on CPython 3.11.7 failed with "AST constructor
    # recursion depth mismatch", a thread-safety bug of `ast` in that Python.
    local status=0
    timeout --kill-after=10 "$DEADLINE_SECONDS" \
        "$VENV/bin/schemathesis" --config-file "$work/schemathesis-$backend.toml" run "$base/openapi.json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,unsupported_method,allow_header_conformance,ignored_auth \
        --max-examples "$MAX_EXAMPLES" \
        --exclude-operation-id events \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --no-color \
        "$@" || status=$?

    if ((status != 0)); then
        if ((status == 124 || status == 137)); then
            echo "api-check ($backend): schemathesis did not finish within ${DEADLINE_SECONDS}s" >&2
        fi
        # The request log's error lines name the cause of each 5xx (the client never sees it).
        echo "api-check ($backend): server errors logged:" >&2
        grep -E 'request_id=[^ ]+ error:' "$work/server-$backend.log" >&2 || echo "  (none)" >&2
    fi
    stop_server
    return "$status"
}

status=0
for backend in "${BACKENDS[@]}"; do
    case "$backend" in
    sqlite)
        NEPTUN_DATABASE="$work/api-check.db" check_backend sqlite "$@" || status=$?
        ;;
    postgres)
        if [[ -z "${PG_BIN:-}" ]] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
            if [[ "${NEPTUN_TEST_POSTGRES:-}" == required ]]; then
                echo "api-check: PostgreSQL is required (NEPTUN_TEST_POSTGRES=required) but not installed" >&2
                status=1
            else
                echo "==============================================================================" >&2
                echo "api-check: PostgreSQL not available: checked SQLite only" >&2
                echo "==============================================================================" >&2
            fi
            continue
        fi
        # A throwaway cluster, stopped by the EXIT trap (fsync off: nothing here
        # survives the check anyway).
        # Outside $work, which `postgres` may not enter; pg-tmp.sh hands it over.
        pg_dir="$(mktemp -d -t neptun-api-check-pg-XXXXXX)"
        PG_FSYNC=off bash scripts/pg-tmp.sh start "$pg_dir" >/dev/null
        url="$(bash scripts/pg-tmp.sh createdb "$pg_dir" neptun)"
        NEPTUN_DATABASE="$url" check_backend postgres "$@" || status=$?
        ;;
    *)
        echo "api-check: unknown backend $backend in API_CHECK_BACKENDS" >&2
        exit 2
        ;;
    esac
done
exit "$status"
