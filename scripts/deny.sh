#!/usr/bin/env bash
# Checks the dependency graph against deny.toml: licenses, bans and sources.
#
# Needs cargo and crates.io, nothing else. Installs the pinned cargo-deny if it is
# missing or at another version: once per machine, about 4 CPU-minutes of compiling
# (8 minutes of wall time on a busy 2-core machine). The check itself takes seconds.
# The advisories check is not run: it needs the RustSec database from GitHub, which CI
# cannot reach. Where the network allows, run `cargo deny check advisories`.
set -euo pipefail
cd "$(dirname "$0")/.."

# deny.toml's keys follow this version; update both together.
readonly CARGO_DENY_VERSION=0.20.2

if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
fi

cargo deny --locked check --hide-inclusion-graph licenses bans sources
