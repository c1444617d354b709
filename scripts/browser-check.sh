#!/usr/bin/env bash
# Runs the browser checks in tests/browser/ (node's test runner) in headless Chromium:
# a page on one origin uses the API on another with a credentialed fetch
# (cors.test.mjs), and a person uses the web console end to end (console.test.mjs,
# which saves screenshots of its main screens in tests/browser/screenshots/, and runs
# two instances on a throwaway PostgreSQL cluster from scripts/pg-tmp.sh when
# PostgreSQL is installed; with NEPTUN_TEST_POSTGRES=required, as CI sets it, it must be).
#
# Installs what is missing, and only that: Debian's chromium package (browsers cannot
# be downloaded here, so Playwright drives the system one) and the npm packages pinned
# by tests/browser/package-lock.json (reinstalled when the lock file changes). Builds the
# debug binary if it is stale. The tests start the servers themselves, on 127.0.0.1
# port 0 (PostgreSQL on a Unix socket), and stop them; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly BROWSER_DIR=tests/browser
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$CHROMIUM" ]]; then
    echo "browser-check: installing Debian's chromium package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# node_modules is reused while the lock file is unchanged.
stamp="$(sha256sum "$BROWSER_DIR/package-lock.json"; node --version)"
if [[ "$(cat "$BROWSER_DIR/node_modules/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$stamp" >"$BROWSER_DIR/node_modules/.stamp"
fi

# A no-op when `cargo test` already built this binary.
cargo build --locked --quiet
export NEPTUN_BIN="$PWD/target/debug/neptun-chat"

cd "$BROWSER_DIR"
node --test --test-timeout=120000
