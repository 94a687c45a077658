"""Every benchmark in one session: linelight against the tools a plant would use instead.

    python -m bench.all [--quick] [--only NAME ...] [--skip NAME ...]

Runs each benchmark module as its own process (so one's memory, threads and brokers cannot
skew the next, and one failing does not stop the others), in this order:

    journal  durable ingest: the journal vs raw sqlite3 (the limit) vs persist-queue
    replay   the forwarder vs bare paho QoS 1, against one local mosquitto
    peers    the forwarder vs the C client `mosquitto_pub -l`, against one local mosquitto
    bridge   the edge buffer through an outage with kill -9: linelight vs a mosquitto bridge
    agent    input-to-tower latency (broker up, down, draining); steady RSS vs import floor
    io       Modbus polling and sim-to-lamp latency
    rules    rule evaluation per scan and load time
    page     the diagnostics page with 24 h of history in headless chromium

Prints each benchmark's own table, then one summary table of the headline figures and ratios,
and as the last line one JSON object: the machine, every benchmark's own JSON, the headline.
`make bench` runs the full set; `make bench-quick` the `--quick` variants (under 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS: dict[str, str] = {
    "journal": "durable ingest: journal vs raw sqlite3 vs persist-queue",
    "replay": "replay: forwarder vs bare paho QoS 1",
    "peers": "replay: forwarder vs mosquitto_pub -l (C client)",
    "bridge": "edge buffer through an outage with kill -9: linelight vs mosquitto bridge",
    "agent": "agent: input-to-tower latency, steady RSS vs import floor, idle CPU",
    "io": "I/O: Modbus polling, sim-to-lamp latency",
    "rules": "rules: evaluation per scan, load time",
    "page": "diagnostics page: 24 h of history rendered in headless chromium",
}
TIMEOUT_S = {"quick": 240, "full": 1800}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_gib = round(int(m.group(1)) / 1024 / 1024, 1) if m else 0.0
    except OSError:
        pass
    mosquitto = ""
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=10)
        mosquitto = (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        pass
    os_name = ""
    try:
        m = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else ""
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "os": os_name,
        "kernel": platform.release(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "mosquitto": mosquitto,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_one(name: str, quick: bool) -> tuple[str, dict[str, Any] | None, float, str]:
    """Run `python -m bench.NAME`; returns its table, its JSON (or None), seconds, error."""
    cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if quick else [])
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=TIMEOUT_S["quick" if quick else "full"], check=False)
    except subprocess.TimeoutExpired:
        return "", None, time.monotonic() - started, "timed out"
    elapsed = time.monotonic() - started
    lines = done.stdout.rstrip().splitlines()
    figures: dict[str, Any] | None = None
    if lines:
        try:
            parsed = json.loads(lines[-1])
            figures = parsed if isinstance(parsed, dict) else None
        except ValueError:
            figures = None
    table = "\n".join(lines[:-1] if figures is not None else lines)
    error = ""
    if done.returncode != 0 or figures is None:
        tail = done.stderr.strip().splitlines()[-3:]
        error = f"exit {done.returncode}: " + " | ".join(tail)
    return table, figures, elapsed, error


def _dig(doc: dict[str, Any] | None, *path: str) -> Any:
    """doc[path[0]][path[1]]... or None when any step is missing."""
    cur: Any = doc
    for key in path:
        cur = cur.get(key) if isinstance(cur, dict) else None
    return cur


Row = tuple[str, Callable[[dict[str, dict[str, Any] | None]], Any], str]

# (what, how to get it from the results, unit or comment)
HEADLINE: list[Row] = [
    ("journal durable append", lambda r: _dig(r["journal"], "journal", "append_per_s"), "ev/s"),
    ("raw sqlite3 executemany (limit)",
     lambda r: _dig(r["journal"], "journal", "raw_executemany_per_s"), "rows/s"),
    ("journal / raw sqlite3", lambda r: _dig(r["journal"], "journal", "append_vs_raw"), "x"),
    ("persist-queue put", lambda r: _dig(r["journal"], "journal", "persistqueue_put_per_s"),
     "items/s"),
    ("journal / persist-queue put",
     lambda r: _dig(r["journal"], "journal", "append_vs_persistqueue_put"), "x"),
    ("journal ack", lambda r: _dig(r["journal"], "journal", "ack_per_s"), "ev/s"),
    ("forwarder replay", lambda r: _dig(r["replay"], "replay_events_per_s"), "ev/s"),
    ("bare paho QoS 1", lambda r: _dig(r["replay"], "bare_paho_msgs_per_s"), "msg/s"),
    ("forwarder / bare paho", lambda r: _dig(r["replay"], "ratio_replay_vs_bare_paho"), "x"),
    ("paho with the forwarder's tweaks", lambda r: _dig(r["replay"], "bare_paho_tuned_msgs_per_s"),
     "msg/s"),
    ("forwarder / tweaked paho",
     lambda r: _dig(r["replay"], "ratio_replay_vs_bare_paho_tuned"), "x"),
    ("mosquitto_pub -l", lambda r: _dig(r["peers"], "mosquitto_pub_l_msgs_per_s"), "msg/s"),
    ("forwarder / mosquitto_pub -l",
     lambda r: _dig(r["peers"], "ratio_forwarder_vs_mosquitto_pub"), "x"),
    ("outage+kill -9, linelight lost",
     lambda r: _dig(r["bridge"], "bridge", "linelight", "lost"), "events"),
    ("outage+kill -9, default bridge lost",
     lambda r: _dig(r["bridge"], "bridge", "bridge-default", "lost"), "events"),
    ("outage, default bridge, SIGTERM lost",
     lambda r: _dig(r["bridge"], "bridge", "bridge-default-sigterm", "lost"), "events"),
    ("outage+kill -9, tuned bridge lost",
     lambda r: _dig(r["bridge"], "bridge", "bridge-tuned", "lost"), "events"),
    ("intake, linelight",
     lambda r: _dig(r["bridge"], "bridge", "linelight", "intake_per_s"), "ev/s"),
    ("intake, tuned bridge",
     lambda r: _dig(r["bridge"], "bridge", "bridge-tuned", "intake_per_s"), "msg/s"),
    ("drain after upstream returns, linelight",
     lambda r: _dig(r["bridge"], "bridge", "linelight", "drain_s"), "s"),
    ("drain after upstream returns, tuned bridge",
     lambda r: _dig(r["bridge"], "bridge", "bridge-tuned", "drain_s"), "s"),
    ("agent steady RSS, queue full", lambda r: _dig(r["agent"], "rss_queued_mb"), "MB"),
    ("import floor of the dependencies", lambda r: _dig(r["agent"], "rss_import_floor_mb"),
     "MB"),
    ("RSS / import floor", lambda r: _dig(r["agent"], "rss_ratio_vs_floor"), "x"),
    ("input -> tower, broker up, median",
     lambda r: _dig(r["agent"], "broker_up", "command_median_ms"), "ms"),
    ("input -> tower, backlog draining, p99",
     lambda r: _dig(r["agent"], "backlog_drain", "command_p99_ms"), "ms"),
    ("rules scan median (500 inputs)", lambda r: _dig(r["rules"], "step_median_us"), "us"),
    ("Modbus samples/s, coalesced", lambda r: _dig(r["io"], "modbus_samples_per_s"), "/s"),
    ("page first render, 24 h of history (worst)",
     lambda r: _dig(r["page"], "worst_first_render_ms"), "ms"),
]


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's --quick variant")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--skip", action="append", choices=list(BENCHMARKS), default=[])
    args = parser.parse_args(argv)
    chosen = [n for n in (args.only or list(BENCHMARKS)) if n not in args.skip]
    info = machine()
    print(f"linelight benchmarks ({'quick' if args.quick else 'full'}) on {info['cpu']}, "
          f"{info['cores']} cores, {info['memory_gib']} GiB, {info['os']}, "
          f"Python {info['python']}, SQLite {info['sqlite']}, {info['mosquitto']}", flush=True)
    results: dict[str, dict[str, Any] | None] = dict.fromkeys(BENCHMARKS)
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    started = time.monotonic()
    for name in chosen:
        print(f"\n== {name}: {BENCHMARKS[name]}", flush=True)
        table, figures, elapsed, error = run_one(name, args.quick)
        results[name] = figures
        seconds[name] = round(elapsed, 1)
        if table:
            print(table)
        if error:
            failed[name] = error
            print(f"  (could not be measured: {error})")
        print(f"  [{elapsed:.1f} s]", flush=True)

    headline: dict[str, Any] = {}
    print("\n== summary (figures from the runs above; the machine is shared, so noisy)")
    width = max(len(what) for what, _, _ in HEADLINE)
    for what, get, unit in HEADLINE:
        try:
            value = get(results)
        except (KeyError, TypeError, AttributeError):
            value = None
        headline[what] = value
        print(f"  {what:<{width}}  {fmt(value):>12}  {unit}")
    total = time.monotonic() - started
    print(f"  total {total:.0f} s; failed: {', '.join(failed) or 'none'}")
    print(json.dumps({"quick": args.quick, "machine": info, "seconds": seconds,
                      "total_s": round(total, 1), "failed": failed, "headline": headline,
                      "results": results}, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
