#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for scripts (the API check, the benchmark): socket only
# (no TCP port to collide with), in a folder of the caller's, run by the `postgres` user
# when started as root (initdb refuses root).
#
#   scripts/pg-tmp.sh install           installs PostgreSQL with apt-get if it is missing
#   scripts/pg-tmp.sh start DIR         starts a cluster in DIR (created); prints its socket folder
#   scripts/pg-tmp.sh createdb DIR NAME creates database NAME; prints its postgresql:// URL
#   scripts/pg-tmp.sh stop DIR          stops the cluster in DIR and removes DIR
#
# PG_BIN overrides the folder of the PostgreSQL programs (default: the newest
# /usr/lib/postgresql/*/bin).
set -euo pipefail

pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"
        return
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$newest" || ! -x "$newest/initdb" ]]; then
        echo "pg-tmp: PostgreSQL is not installed (run: scripts/pg-tmp.sh install)" >&2
        return 1
    fi
    echo "$newest"
}

# Runs a PostgreSQL program as `postgres` when we are root.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
install)
    if pg_bin >/dev/null 2>&1; then
        exit 0
    fi
    echo "pg-tmp: installing PostgreSQL" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    ;;
start)
    dir=${2:?usage: pg-tmp.sh start DIR}
    bin=$(pg_bin)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" --auth=trust -U postgres --no-sync >/dev/null
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -s \
        -o "-k $dir -c listen_addresses='' -c max_connections=300 -c fsync=${PG_FSYNC:-on}" start >&2
    echo "$dir"
    ;;
createdb)
    dir=${2:?usage: pg-tmp.sh createdb DIR NAME}
    name=${3:?usage: pg-tmp.sh createdb DIR NAME}
    dir=$(cd "$dir" && pwd)
    bin=$(pg_bin)
    as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir" -U postgres -d postgres \
        -c "CREATE DATABASE \"$name\" TEMPLATE template0" >&2
    echo "postgresql:///$name?host=$dir&user=postgres"
    ;;
stop)
    dir=${2:?usage: pg-tmp.sh stop DIR}
    [[ -d "$dir" ]] || exit 0
    bin=$(pg_bin)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -s stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: pg-tmp.sh install | start DIR | createdb DIR NAME | stop DIR" >&2
    exit 2
    ;;
esac
