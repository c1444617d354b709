#!/usr/bin/env bash
# Load check: 64 concurrent clients (by default) post single messages and batches to the
# release server for 30 s; exits non-zero on any 5xx, lost or extra message, or batch
# that is not contiguous. Prints requests/s, latencies and the server's peak memory.
#
# Loopback only; stops by itself. Arguments go to the example, e.g.
#   scripts/load-check.sh --clients 16 --duration 5
# See examples/load_check.rs for what is checked.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET="${CARGO_TARGET_DIR:-target}/release"

cargo build --release --locked --bin neptun-chat --example load_check
exec "$TARGET/examples/load_check" --server "$TARGET/neptun-chat" "$@"
