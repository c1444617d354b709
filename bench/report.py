#!/usr/bin/env python3
"""Helpers for bench/run.sh (python3 standard library only).

Subcommands:
  port         print a free TCP port on 127.0.0.1
  seed-chat    post N messages to one chat in batches (keep-alive, one connection)
  seed-users   post one batch to every chat of a users file
  startup      time start-up to a healthy /healthz, and the idle memory after it
  summarize    medians, spreads, ratios and target checks of a raw .jsonl; writes
               JSON and a Markdown table
  pg-ticks     CPU time of a PostgreSQL cluster so far (postmaster, children, reaped
               children), in clock ticks
  pg-line      one line on the last measurement of bench/postgres.sh's raw .jsonl
  pg-summarize the PostgreSQL benchmark's table and target checks (issue 10)

It never talks to anything but 127.0.0.1, and every network call has a time-out.
"""

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict

# The same text the wrk scripts and the two baselines send.
TEXT = (
    "Benchmark message: the quick brown fox jumps over the lazy dog while the chat "
    "store appends it to a conversation."
)
MIB = 1024.0

WORKLOADS = {
    # name: (what it is, connections)
    "W1c1": ("single message, concurrency 1", 1),
    "W1c64": ("single message, concurrency 64", 64),
    "W2": ("batch of 10, concurrency 64", 64),
    "W3": ("batch of 100, concurrency 16", 16),
    "W4": ("newest 100 of a 10,000-message chat, concurrency 64", 64),
    "W5": ("64 users x 4 chats, 80% reads / 20% writes, concurrency 64", 64),
}


# ---------------------------------------------------------------------------
# port, seeding, start-up


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_batches(port, user, token, chat, count, batch, timeout=120):
    """Posts `count` messages to one chat, `batch` per request, on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    path = f"/api/users/{user}/chats/{chat}/messages"
    headers = {"Content-Type": "application/json", "Cookie": f"neptun-session={token}"}
    posted = 0
    while posted < count:
        n = min(batch, count - posted)
        roles = ("user", "assistant")
        body = json.dumps(
            {"messages": [{"content": TEXT, "role": roles[i % 2]} for i in range(n)]}
        )
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(
                f"seeding {path}: HTTP {response.status}: {answer[:300]!r}"
            )
        posted += n
    conn.close()
    return posted


def cmd_seed_chat(args):
    post_batches(args.port, args.user, args.token, args.chat, args.messages, args.batch)


def cmd_seed_users(args):
    with open(args.users_file) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            user, token, chats = fields[0], fields[1], fields[2:]
            for chat in chats:
                post_batches(args.port, user, token, chat, args.messages, args.messages)


def read_status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def healthy(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def cmd_startup(args):
    """Starts the server `--runs` times on the existing database; prints one JSON line."""
    times_ms, idle_kib, settled_kib = [], [], []
    env = dict(os.environ, RUST_LOG=args.log_level)
    for _ in range(args.runs):
        port = free_port()
        command = [
            args.binary, "--database", args.database, "serve", "--bind", f"127.0.0.1:{port}",
            "--sync", args.sync,
        ]
        started = time.perf_counter()
        with open(args.log, "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            deadline = started + 15
            while not healthy(port):
                if proc.poll() is not None:
                    raise SystemExit(f"the server exited during start-up ({proc.returncode})")
                if time.perf_counter() > deadline:
                    raise SystemExit("the server was not healthy within 15 s")
                time.sleep(0.001)
            times_ms.append((time.perf_counter() - started) * 1000)
            idle_kib.append(read_status_kib(proc.pid, "VmRSS"))
            time.sleep(1)
            settled_kib.append(read_status_kib(proc.pid, "VmRSS"))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(json.dumps({
        "kind": "startup",
        "messages": args.messages,
        "database_bytes": os.path.getsize(args.database),
        "startup_ms": times_ms,
        "idle_rss_kib": idle_kib,
        "idle_rss_after_1s_kib": settled_kib,
    }))


# ---------------------------------------------------------------------------
# summarize


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def http_metrics(record):
    wrk = record["wrk"]
    seconds = wrk["duration_us"] / 1e6
    rps = wrk["requests"] / seconds
    extra = wrk.get("extra") or {}
    if record["workload"] == "W5":
        # Messages written per second (the reads move up to 100 each as well).
        total = (extra.get("reads", 0) + extra.get("writes", 0)) or 1
        msgs = rps * extra.get("writes", 0) / total
    else:
        msgs = rps * record["messages_per_request"]
    lat = wrk["latency_us"]
    errors = wrk["errors"]
    cpu = record.get("cpu_seconds")
    return {
        "rps": rps,
        "msgs": msgs,
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "non2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "peak_rss_mib": record["peak_rss_kib"] / MIB if record.get("peak_rss_kib") else None,
        "idle_rss_mib": record["idle_rss_kib"] / MIB if record.get("idle_rss_kib") else None,
        # Server CPU per request (both cores together), from /proc/<pid>/stat.
        "cpu_us_per_req": cpu * 1e6 / wrk["requests"] if cpu is not None and wrk["requests"] else None,
        "cpu_cores": cpu / seconds if cpu is not None else None,
    }


def summarize(records):
    http = defaultdict(dict)  # (target, sync, workload) -> run -> metrics
    sqlite = defaultdict(dict)  # (sync, case) -> run -> rows/s
    overload, startup, loads = [], [], []
    for r in records:
        if r.get("loadavg"):
            loads.append(float(r["loadavg"].split()[0]))
        kind = r.get("kind")
        if kind == "http":
            http[(r["target"], r["sync"], r["workload"])][r["run"]] = http_metrics(r)
        elif kind == "sqlite":
            sqlite[(r["sync"], r["case"])][r.get("run", 0)] = r["rows_per_sec"]
        elif kind == "overload":
            overload.append(r)
        elif kind == "startup":
            startup.append(r)

    rows = []
    sync_order = {"-": 0, "normal": 1, "full": 2}
    keys = sorted(http, key=lambda k: (list(WORKLOADS).index(k[2]), k[0] != "echo",
                                       sync_order.get(k[1], 3), k[0] == "compare"))
    for target, sync, workload in keys:
        runs = http[(target, sync, workload)]
        row = {"target": target, "sync": sync, "workload": workload,
               "connections": WORKLOADS[workload][1]}
        for metric in ("rps", "msgs", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_req", "cpu_cores",
                       "peak_rss_mib", "idle_rss_mib"):
            row[metric] = spread([m[metric] for m in runs.values()])
        row["non2xx"] = sum(m["non2xx"] for m in runs.values())
        row["socket_errors"] = sum(m["socket_errors"] for m in runs.values())
        if target != "echo":
            echo = http.get(("echo", "-", workload), {})
            row["vs_echo"] = spread([m["rps"] / echo[run]["rps"]
                                     for run, m in runs.items() if run in echo])
            if target == "server" and ("compare", sync, workload) in http:
                # This build against the other one (--compare), run by run.
                other = http[("compare", sync, workload)]
                row["vs_compare"] = spread([m["rps"] / other[run]["rps"]
                                            for run, m in runs.items() if run in other])
            if workload == "W3":
                raw = sqlite.get((sync, "rows_per_tx_100"), {})
                row["vs_sqlite_100"] = spread([m["msgs"] / raw[run]
                                               for run, m in runs.items() if run in raw])
        rows.append(row)

    # In the order bench_sqlite prints them.
    sqlite_rows = [
        {"sync": sync, "case": case, "rows_per_sec": spread(list(runs.values()))}
        for (sync, case), runs in sqlite.items()
    ]
    return {
        "http": rows,
        "sqlite": sqlite_rows,
        "overload": [overload_summary(r) for r in overload],
        "startup": [startup_summary(r) for r in startup],
        "loadavg_1min": spread(loads),
    }


def overload_summary(r):
    wrk = r["wrk"]
    statuses = {k: v for k, v in (wrk.get("extra") or {}).get("statuses", {}).items()}
    others = {k: v for k, v in statuses.items() if not k.startswith("2") and k != "503"}
    errors = wrk["errors"]
    return {
        "sync": r["sync"],
        "connections": r["connections"],
        "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
        "statuses": statuses,
        "non_503_errors": others,
        "unavailable_without_retry_after": wrk["extra"].get("unavailable_without_retry_after", 0),
        "socket_errors": {k: errors[k] for k in ("connect", "read", "write", "timeout")},
        "p99_ms": wrk["latency_us"]["p99"] / 1000,
        "peak_rss_mib": r["peak_rss_kib"] / MIB if r.get("peak_rss_kib") else None,
    }


def startup_summary(r):
    return {
        "messages": r["messages"],
        "database_mib": r["database_bytes"] / MIB / MIB,
        "startup_ms": spread(r["startup_ms"]),
        "idle_rss_mib": spread([k / MIB for k in r["idle_rss_kib"] if k]),
        "idle_rss_after_1s_mib": spread([k / MIB for k in r["idle_rss_after_1s_kib"] if k]),
    }


def find(rows, **want):
    for row in rows:
        if all(row.get(k) == v for k, v in want.items()):
            return row
    return None


def check_targets(summary, syncs):
    """Each target of issue 5 as (name, value shown, met: True/False/None if not measured)."""
    rows, checks = summary["http"], []

    def med(row, metric):
        return row[metric]["median"] if row and row.get(metric) else None

    for sync, floor in (("normal", 0.50), ("full", 0.35)):
        if sync not in syncs:
            continue
        row = find(rows, target="server", sync=sync, workload="W1c64")
        ratio, p99 = med(row, "vs_echo"), med(row, "p99_ms")
        checks.append((f"W1 c64 --sync {sync}: >= {floor:.0%} of echo req/s",
                       fmt_pct(ratio), None if ratio is None else ratio >= floor))
        checks.append((f"W1 c64 --sync {sync}: p99 <= 10 ms",
                       fmt_ms(p99), None if p99 is None else p99 <= 10))
    for sync in syncs:
        row = find(rows, target="server", sync=sync, workload="W3")
        ratio = med(row, "vs_sqlite_100")
        checks.append((f"W3 --sync {sync}: >= 90% of raw SQLite 100-row rows/s",
                       fmt_pct(ratio), None if ratio is None else ratio >= 0.90))
    for sync in syncs:
        row = find(rows, target="server", sync=sync, workload="W4")
        ratio = med(row, "vs_echo")
        checks.append((f"W4 --sync {sync}: >= 50% of echo req/s",
                       fmt_pct(ratio), None if ratio is None else ratio >= 0.50))
    for sync in syncs:
        row = find(rows, target="server", sync=sync, workload="W5")
        if row:
            errors = row["non2xx"] + row["socket_errors"]
            checks.append((f"W5 --sync {sync}: no errors", str(errors), errors == 0))
        p99 = med(row, "p99_ms")
        checks.append((f"W5 --sync {sync}: p99 <= 20 ms", fmt_ms(p99),
                       None if p99 is None else p99 <= 20))
    peaks = [row["peak_rss_mib"]["max"] for row in rows
             if row["target"] == "server" and row.get("peak_rss_mib")]
    peak = max(peaks) if peaks else None
    checks.append(("peak RSS <= 64 MiB in every workload", fmt_mib(peak),
                   None if peak is None else peak <= 64))
    idles = [row["idle_rss_mib"]["max"] for row in rows
             if row["target"] == "server" and row.get("idle_rss_mib")]
    idles += [s["idle_rss_after_1s_mib"]["max"] for s in summary["startup"]
              if s.get("idle_rss_after_1s_mib")]
    idle = max(idles) if idles else None
    checks.append(("idle RSS after start-up <= 20 MiB", fmt_mib(idle),
                   None if idle is None else idle <= 20))
    for s in summary["startup"]:
        ms = s["startup_ms"]["median"] if s.get("startup_ms") else None
        checks.append((f"start-up to healthy /healthz on {s['messages']:,} messages <= 100 ms",
                       fmt_ms(ms), None if ms is None else ms <= 100))
    for o in summary["overload"]:
        bad = sum(o["non_503_errors"].values()) + o["unavailable_without_retry_after"] \
            + sum(o["socket_errors"].values())
        checks.append((f"W1 c{o['connections']} --sync {o['sync']}: only 503 with Retry-After",
                       f"{o['statuses']}, other errors {bad}", bad == 0))
        checks.append((f"W1 c{o['connections']} --sync {o['sync']}: peak RSS <= 64 MiB",
                       fmt_mib(o["peak_rss_mib"]),
                       None if o["peak_rss_mib"] is None else o["peak_rss_mib"] <= 64))
    return checks


def fmt_num(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_pct(x):
    return "–" if x is None else f"{x:.0%}"


def fmt_ms(x):
    return "–" if x is None else (f"{x:.1f} ms" if x >= 10 else f"{x:.2f} ms")


def fmt_mib(x):
    return "–" if x is None else f"{x:.1f} MiB"


def cell(s, fmt=fmt_num):
    if not s:
        return "–"
    if s["runs"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def markdown(summary, meta, checks):
    out = []
    compared = any(row["target"] == "compare" for row in summary["http"])
    out.append("| workload | server | req/s | messages/s | p50 | p99 | max | non-2xx | "
               "peak RSS | CPU µs/req | × echo | × SQLite 100/tx |"
               + (" × neptun B |" if compared else ""))
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if compared else ""))
    for row in summary["http"]:
        server = {"echo": "echo (a)", "compare": f"neptun B --sync {row['sync']}"}.get(
            row["target"], f"neptun --sync {row['sync']}")
        ms = lambda m: cell(row[m], lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}")
        out.append("| " + " | ".join([
            row["workload"],
            server,
            cell(row["rps"]),
            cell(row["msgs"]),
            ms("p50_ms"),
            ms("p99_ms"),
            ms("max_ms"),
            str(row["non2xx"] + row["socket_errors"]),
            cell(row["peak_rss_mib"], lambda v: f"{v:.1f}") if row["target"] != "echo" else "",
            cell(row["cpu_us_per_req"], lambda v: f"{v:.0f}"),
            cell(row.get("vs_echo"), fmt_pct),
            cell(row.get("vs_sqlite_100"), fmt_pct),
        ] + ([cell(row.get("vs_compare"), fmt_pct)] if compared else [])) + " |")
    out.append("")
    out.append("Latencies in ms (median of the runs' p50/p99/max). Cells: median (min–max) over "
               f"{meta.get('runs', '?')} runs. non-2xx counts all runs together (wrk socket "
               "errors included). CPU µs/req: the server process's user+system time per "
               "request, from /proc/<pid>/stat."
               + (" × neptun B: this build's req/s over the --compare build's, run by run "
                  "(median of the per-run ratios)." if compared else ""))
    out.append("")
    out.append("Raw SQLite (b), rows/s, median (min–max):")
    out.append("")
    out.append("| case | --sync normal | --sync full |")
    out.append("|---|---|---|")
    cases = []
    for r in summary["sqlite"]:
        if r["case"] not in cases:
            cases.append(r["case"])
    for case in cases:
        cells = []
        for sync in ("normal", "full"):
            r = next((r for r in summary["sqlite"] if r["case"] == case and r["sync"] == sync), None)
            cells.append(cell(r["rows_per_sec"]) if r else "–")
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    if summary["startup"] or summary["overload"]:
        out.append("")
    for s in summary["startup"]:
        out.append(f"Start-up on {s['messages']:,} messages ({s['database_mib']:.0f} MiB file): "
                   f"{cell(s['startup_ms'], fmt_ms)} to a healthy /healthz; idle RSS "
                   f"{cell(s['idle_rss_mib'], fmt_mib)} at once, "
                   f"{cell(s['idle_rss_after_1s_mib'], fmt_mib)} one second later.")
    for o in summary["overload"]:
        out.append(f"W1 at c{o['connections']}, --sync {o['sync']}: {fmt_num(o['rps'])} req/s, "
                   f"statuses {o['statuses']}, 503 without Retry-After "
                   f"{o['unavailable_without_retry_after']}, socket errors {o['socket_errors']}, "
                   f"p99 {fmt_ms(o['p99_ms'])}, peak RSS {fmt_mib(o['peak_rss_mib'])}.")
    out.append("")
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    for name, shown, met in checks:
        out.append(f"| {name} | {shown} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(out)


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release()}


def cmd_summarize(args):
    with open(args.raw) as f:
        records = [json.loads(line) for line in f if line.strip()]
    meta = json.loads(args.meta) if args.meta else {}
    meta.update(machine())
    try:
        with open("/proc/loadavg") as f:
            meta["loadavg_at_end"] = " ".join(f.read().split()[:3])
    except OSError:
        pass
    summary = summarize(records)
    syncs = meta.get("syncs") or ["normal", "full"]
    checks = check_targets(summary, syncs)
    summary["meta"] = meta
    summary["targets"] = [{"target": n, "measured": s, "met": m} for n, s, m in checks]
    table = markdown(summary, meta, checks)
    loads = summary["loadavg_1min"]
    header = (f"{meta.get('date', '')} · `{meta.get('command', '')}` · {meta['nproc']} × "
              f"{meta['cpu']} · load average (1 min) during the run "
              f"{cell(loads, lambda v: f'{v:.1f}')}")
    text = header + "\n\n" + table + "\n"
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text)
    print(text)


# ---------------------------------------------------------------------------
# the PostgreSQL benchmark (bench/postgres.sh)


def proc_stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 is index 0)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def pg_ticks(postmaster):
    """utime+stime of the postmaster and its live children, plus cutime+cstime of the
    postmaster (its children that have exited and been reaped), in clock ticks."""
    own = proc_stat_fields(postmaster)
    # Fields 14-17 of stat(5) (utime, stime, cutime, cstime) are indexes 11-14 here,
    # field 4 (ppid) is index 1.
    total = sum(int(own[i]) for i in (11, 12, 13, 14))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = proc_stat_fields(entry)
        except (OSError, ValueError):
            continue
        if fields[1] == str(postmaster):
            total += int(fields[11]) + int(fields[12])
    return total


def pg_metrics(r):
    """One measurement of bench/postgres.sh as flat figures."""
    if r["target"] == "baseline":
        b = r["baseline"]
        lat = b["latency_us"]
        tx = b["transactions"] or 1
        return {
            "rps": b["tx_per_sec"],
            "msgs": b["rows_per_sec"],
            "p50_ms": lat["p50"] / 1000,
            "p99_ms": lat["p99"] / 1000,
            "max_ms": lat["max"] / 1000,
            "errors": 0,
            "peak_rss_mib": None,
            "idle_rss_mib": None,
            "cpu_us_per_req": r["client_cpu_seconds"] * 1e6 / tx,
            "pg_cpu_us_per_req": r["pg_cpu_seconds"] * 1e6 / tx,
            "cpu_cores": r["client_cpu_seconds"] / b["seconds"],
            "pg_cpu_cores": r["pg_cpu_seconds"] / b["seconds"],
        }
    wrks = r["wrk"]
    seconds = max(w["duration_us"] for w in wrks) / 1e6
    requests = sum(w["requests"] for w in wrks)
    rps = sum(w["requests"] / (w["duration_us"] / 1e6) for w in wrks)
    if r["workload"] == "W5":
        reads = sum((w.get("extra") or {}).get("reads", 0) for w in wrks)
        writes = sum((w.get("extra") or {}).get("writes", 0) for w in wrks)
        msgs = rps * writes / ((reads + writes) or 1)
    else:
        msgs = rps * r["messages_per_request"]
    errors = sum(w["errors"][k] for w in wrks
                 for k in ("status", "connect", "read", "write", "timeout"))
    peaks = [k for k in r["peak_rss_kib"] if k]
    idles = [k for k in r["idle_rss_kib"] if k]
    return {
        "rps": rps,
        "msgs": msgs,
        # Two instances: the worse of the two wrk runs.
        "p50_ms": max(w["latency_us"]["p50"] for w in wrks) / 1000,
        "p99_ms": max(w["latency_us"]["p99"] for w in wrks) / 1000,
        "max_ms": max(w["latency_us"]["max"] for w in wrks) / 1000,
        "errors": errors,
        "peak_rss_mib": max(peaks) / MIB if peaks else None,
        "idle_rss_mib": max(idles) / MIB if idles else None,
        "cpu_us_per_req": r["server_cpu_seconds"] * 1e6 / requests if requests else None,
        "pg_cpu_us_per_req": r["pg_cpu_seconds"] * 1e6 / requests if requests else None,
        "cpu_cores": r["server_cpu_seconds"] / seconds,
        "pg_cpu_cores": r["pg_cpu_seconds"] / seconds,
    }


def cmd_pg_line(args):
    with open(args.raw) as f:
        r = json.loads(f.read().splitlines()[-1])
    m = pg_metrics(r)
    peak = f"peak {m['peak_rss_mib']:5.1f} MiB" if m["peak_rss_mib"] else " " * 14
    print(f"  {r['workload']:>5} {r['target']:>8} {r['sync']:>6} run {r['run']}: "
          f"{m['rps']:>9,.0f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms  "
          f"errors {m['errors']}  {peak}  CPU {m['cpu_cores']:.2f} + PG {m['pg_cpu_cores']:.2f} "
          f"cores  load {r['loadavg'].split()[0]}")


PG_METRICS = ("rps", "msgs", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_req",
              "pg_cpu_us_per_req", "cpu_cores", "pg_cpu_cores", "peak_rss_mib", "idle_rss_mib")
PG_TARGETS = {"baseline": 0, "one": 1, "two": 2}


def pg_summarize(records):
    runs = defaultdict(dict)  # (target, sync, workload) -> run -> metrics
    loads = []
    for r in records:
        if r.get("kind") != "pg":
            continue
        loads.append(float(r["loadavg"].split()[0]))
        runs[(r["target"], r["sync"], r["workload"])][r["run"]] = pg_metrics(r)
    sync_order = {"normal": 0, "full": 1}
    keys = sorted(runs, key=lambda k: (list(WORKLOADS).index(k[2]), sync_order.get(k[1], 2),
                                       PG_TARGETS[k[0]]))
    rows = []
    for target, sync, workload in keys:
        these = runs[(target, sync, workload)]
        row = {"target": target, "sync": sync, "workload": workload,
               "connections": WORKLOADS[workload][1]}
        for metric in PG_METRICS:
            row[metric] = spread([m[metric] for m in these.values()])
        row["errors"] = sum(m["errors"] for m in these.values())
        if target != "baseline":
            base = runs.get(("baseline", sync, workload), {})
            row["vs_baseline"] = spread([m["rps"] / base[run]["rps"]
                                         for run, m in these.items() if run in base])
        if target == "two":
            one = runs.get(("one", sync, workload), {})
            row["vs_one"] = spread([m["rps"] / one[run]["rps"]
                                    for run, m in these.items() if run in one])
        rows.append(row)
    return {"rows": rows, "loadavg_1min": spread(loads)}


def pg_check_targets(summary, syncs):
    """Issue 10's targets, on the one-instance runs."""
    rows, checks = summary["rows"], []

    def med(row, metric):
        return row[metric]["median"] if row and row.get(metric) else None

    for workload, floor, what in (("W1c64", 0.75, "transactions/s"),
                                  ("W3", 0.90, "rows/s (100-row batches)"),
                                  ("W4", 0.60, "page reads/s")):
        for sync in syncs:
            ratio = med(find(rows, target="one", sync=sync, workload=workload), "vs_baseline")
            checks.append((f"{workload} --sync {sync}: >= {floor:.0%} of the baseline's {what}",
                           fmt_pct(ratio), None if ratio is None else ratio >= floor))
    for workload in [w for w, (_, c) in WORKLOADS.items() if c == 64]:
        for sync in syncs:
            p99 = med(find(rows, target="one", sync=sync, workload=workload), "p99_ms")
            if p99 is not None:
                checks.append((f"{workload} (c64) --sync {sync}: p99 <= 20 ms", fmt_ms(p99),
                               p99 <= 20))
    peaks = [row["peak_rss_mib"]["max"] for row in rows if row.get("peak_rss_mib")]
    peak = max(peaks) if peaks else None
    checks.append(("peak RSS <= 64 MiB in every workload (every server, one and two instances)",
                   fmt_mib(peak), None if peak is None else peak <= 64))
    errors = sum(row["errors"] for row in rows)
    checks.append(("no errors (non-2xx or socket errors) in any measurement", str(errors),
                   errors == 0))
    return checks


def pg_markdown(summary, meta, checks):
    out = []
    out.append("| workload | run on | --sync | req/s | messages/s | p50 | p99 | max | errors | "
               "peak RSS | CPU µs/req | PG CPU µs/req | × baseline | × one |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    names = {"baseline": "baseline (c)", "one": "one instance", "two": "two instances"}
    ms = lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}"
    for row in summary["rows"]:
        out.append("| " + " | ".join([
            row["workload"],
            names[row["target"]],
            row["sync"],
            cell(row["rps"]),
            cell(row["msgs"]),
            cell(row["p50_ms"], ms),
            cell(row["p99_ms"], ms),
            cell(row["max_ms"], ms),
            str(row["errors"]),
            cell(row["peak_rss_mib"], lambda v: f"{v:.1f}"),
            cell(row["cpu_us_per_req"], lambda v: f"{v:.0f}"),
            cell(row["pg_cpu_us_per_req"], lambda v: f"{v:.0f}"),
            cell(row.get("vs_baseline"), fmt_pct),
            cell(row.get("vs_one"), fmt_pct),
        ]) + " |")
    out.append("")
    out.append(
        f"Cells: median (min–max) over {meta.get('runs', '?')} runs of "
        f"{meta.get('duration_s', '?'):g} s. Latencies in ms; for two instances, the worse "
        "of the two wrk runs. req/s: transactions/s for the baseline (W4: page reads/s). "
        "CPU µs/req: user+system time of the server process(es), or of the baseline, per "
        "request; PG CPU µs/req: the same for the whole PostgreSQL cluster (postmaster, "
        "backends, background processes), from /proc. × baseline and × one are medians of "
        "per-run ratios of req/s.")
    out.append("")
    out.append("| target | measured | met |")
    out.append("|---|---|---|")
    for name, shown, met in checks:
        out.append(f"| {name} | {shown} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(out)


def cmd_pg_summarize(args):
    with open(args.raw) as f:
        records = [json.loads(line) for line in f if line.strip()]
    meta = json.loads(args.meta) if args.meta else {}
    meta.update(machine())
    summary = pg_summarize(records)
    checks = pg_check_targets(summary, meta.get("syncs") or ["normal", "full"])
    summary["meta"] = meta
    summary["targets"] = [{"target": n, "measured": s, "met": m} for n, s, m in checks]
    loads = summary["loadavg_1min"]
    header = (f"{meta.get('date', '')} · `{meta.get('command', '')}` · {meta['nproc']} × "
              f"{meta['cpu']} · {meta.get('postgres', '')} · load average (1 min) during the "
              f"run {cell(loads, lambda v: f'{v:.1f}')}")
    text = header + "\n\n" + pg_markdown(summary, meta, checks) + "\n"
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("port").set_defaults(func=lambda a: print(free_port()))

    p = sub.add_parser("seed-chat")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--chat", required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--batch", type=int, default=100)
    p.set_defaults(func=cmd_seed_chat)

    p = sub.add_parser("seed-users")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--users-file", required=True)
    p.add_argument("--messages", type=int, default=20, help="messages per chat")
    p.set_defaults(func=cmd_seed_users)

    p = sub.add_parser("startup")
    p.add_argument("--binary", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--sync", default="full")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--messages", type=int, default=0, help="how many the database holds")
    p.add_argument("--log", default=os.devnull)
    p.add_argument("--log-level", default="warn")
    p.set_defaults(func=cmd_startup)

    p = sub.add_parser("summarize")
    p.add_argument("raw", help="the .jsonl written by run.sh")
    p.add_argument("--meta", help="JSON object: command, date, runs, duration, syncs")
    p.add_argument("--json-out")
    p.add_argument("--md-out")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("pg-ticks")
    p.add_argument("--postmaster", type=int, required=True)
    p.set_defaults(func=lambda a: print(pg_ticks(a.postmaster)))

    p = sub.add_parser("pg-line")
    p.add_argument("raw")
    p.set_defaults(func=cmd_pg_line)

    p = sub.add_parser("pg-summarize")
    p.add_argument("raw", help="the .jsonl written by bench/postgres.sh")
    p.add_argument("--meta", help="JSON object: command, date, runs, duration, syncs")
    p.add_argument("--json-out")
    p.add_argument("--md-out")
    p.set_defaults(func=cmd_pg_summarize)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
