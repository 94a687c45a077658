"""Journal benchmark: durable append and ack rates against raw sqlite3 and persist-queue.

    python -m bench.journal [--quick] [--dir DIR]

Measured in one run on this machine, all on real files with WAL and synchronous=FULL:
- journal append through `submit` (the scan loop's hand-off) until every event is durable,
  and through `await append` from 64 concurrent tasks;
- journal ack: the forwarder's pattern, peek a window of 1000 then ack it; and ack alone;
- raw sqlite3 `executemany` into the same table, same pragmas, one commit per 1000 rows: the
  physical limit of this disk and this SQLite;
- persist-queue's SQLiteAckQueue put, and get + ack;
- peak RSS of a separate process that queues 1,000,000 events (200,000 with --quick).
Prints a table, then one JSON object as the last line. Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from linelight.agent.journal import Event, Journal, JournalLimits
from linelight.agent.journal.salvage import connect
from linelight.agent.journal.schema import KIND_CLASS, migrate
from linelight.agent.journal.store import encode_body, row_size

NAME = "press.temperature"
ATTRS = {"q": "good", "unit": "degC", "src": "plc1:40001"}


def _event(i: int) -> Event:
    return Event("signal", NAME, 20.0 + (i % 1000) / 10.0, time.time_ns(), ATTRS)


def event_bytes() -> int:
    body = encode_body(21.5, ATTRS)
    return row_size("signal", NAME, body)


async def _submit_rate(path: Path, n: int) -> float:
    """Submit n events in bursts as a busy scan loop would, until the last one is durable."""
    journal = Journal.open(str(path), JournalLimits(max_pending=200_000))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            start = time.perf_counter()
            target = journal.newest_seq + n
            burst = 2000
            for first in range(0, n, burst):
                for i in range(first, min(n, first + burst)):
                    journal.submit(_event(i))
                await anyio.lowlevel.checkpoint()  # a scan tick: the writer takes what is there
                while journal.stats().pending > 50_000:  # producer faster than the disk
                    await journal.wait_new(journal.newest_seq)
            await journal.wait_new(target - 1)
            elapsed = time.perf_counter() - start
            assert journal.stats().dropped == 0, "the benchmark overflowed the submit buffer"
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return n / elapsed


async def _append_rate(path: Path, n: int, tasks: int = 64) -> float:
    """`await append` from many tasks at once: each returns only once its event is durable."""
    journal = Journal.open(str(path))
    per_task = n // tasks
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)

            async def worker(w: int) -> None:
                for i in range(per_task):
                    seq = await journal.append(_event(w * per_task + i))
                    assert seq is not None

            start = time.perf_counter()
            async with anyio.create_task_group() as workers:
                for w in range(tasks):
                    workers.start_soon(worker, w)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return per_task * tasks / elapsed


async def _ack_rate(path: Path) -> tuple[float, int]:
    """Peek 1000, ack those 1000, until the queue is empty (the forwarder's loop)."""
    journal = Journal.open(str(path))
    acked = 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            start = time.perf_counter()
            while True:
                recs = await journal.peek(1000)
                if not recs:
                    break
                acked += await journal.ack([r.seq for r in recs])
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return acked / elapsed, acked


async def _ack_only_rate(path: Path) -> float:
    """Ack alone: the seqs are known (1..n), 1000 per call, as a forwarder's PUBACKs arrive."""
    journal = Journal.open(str(path))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            first, last = journal.stats().oldest_seq or 1, journal.stats().newest_seq or 0
            start = time.perf_counter()
            acked = 0
            for lo in range(first, last + 1, 1000):
                acked += await journal.ack(range(lo, min(lo + 1000, last + 1)))
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return acked / elapsed


def _raw_rate(path: Path, n: int, group: int = 1000) -> float:
    """The same table and pragmas, rows pre-built, executemany + commit per group."""
    conn = connect(str(path))
    migrate(conn, str(path))
    body = encode_body(21.5, ATTRS)
    size = row_size("signal", NAME, body)
    now = time.time_ns()
    rows = [(i + 1, 1, KIND_CLASS["signal"], "signal", NAME, now, now, size, body)
            for i in range(n)]
    start = time.perf_counter()
    for first in range(0, n, group):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events(seq, boot, cls, kind, name, ts_ns, enq_ns, size, "
                         "body) VALUES (?,?,?,?,?,?,?,?,?)", rows[first : first + group])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def _persist_queue_rates(directory: Path, n: int) -> tuple[float, float]:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(directory), multithreading=False)
    item = {"kind": "signal", "name": NAME, "value": 21.5, "ts": time.time_ns(), **ATTRS}
    start = time.perf_counter()
    for _ in range(n):
        queue.put(item)
    put = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(n):
        queue.ack(queue.get(block=False))
    get_ack = n / (time.perf_counter() - start)
    return put, get_ack


def _rss_child(path: str, n: int) -> None:
    """Child process: queue n events (none acked), report peak RSS and the queue depth."""

    async def fill() -> int:
        journal = Journal.open(path, JournalLimits(max_bytes=4 * 1024**3))
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(journal.run)
                for first in range(0, n, 5000):
                    for i in range(first, min(n, first + 5000)):
                        journal.submit(_event(i))
                    await journal.wait_new(journal.newest_seq + min(5000, n - first) - 1)
                depth = journal.stats().depth
                tg.cancel_scope.cancel()
        finally:
            journal.close()
        return depth

    depth = anyio.run(fill)
    print(json.dumps({"depth": depth, "peak_rss_kib": _peak_rss_kib()}))


def _baseline_child() -> None:
    """Child process: import the same modules, queue nothing; the RSS floor to compare with."""
    Journal  # noqa: B018 - imported above; this is the floor those imports cost
    print(json.dumps({"peak_rss_kib": _peak_rss_kib()}))


def _peak_rss_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent
    across fork + exec, so a child would report the benchmark's own peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.journal", *args], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run(quick: bool, directory: Path) -> dict[str, Any]:
    n = 50_000 if quick else 300_000
    n_await = 20_000 if quick else 100_000
    n_pq = 3_000 if quick else 20_000
    n_rss = 200_000 if quick else 1_000_000
    figures: dict[str, Any] = {"quick": quick, "event_bytes": event_bytes(), "events": n}

    raw = _raw_rate(directory / "raw.db", n)
    submit = anyio.run(_submit_rate, directory / "j.db", n)
    ack, acked = anyio.run(_ack_rate, directory / "j.db")
    anyio.run(_submit_rate, directory / "k.db", n)
    ack_only = anyio.run(_ack_only_rate, directory / "k.db")
    awaited = anyio.run(_append_rate, directory / "a.db", n_await)
    pq_put, pq_get_ack = _persist_queue_rates(directory / "pq", n_pq)
    floor = _child("--baseline-child")
    rss = _child("--rss-child", str(directory / "rss.db"), str(n_rss))
    figures.update({
        "append_per_s": round(submit),
        "append_await_per_s": round(awaited),
        "ack_per_s": round(ack),
        "acked": acked,
        "ack_only_per_s": round(ack_only),
        "raw_executemany_per_s": round(raw),
        "persistqueue_put_per_s": round(pq_put),
        "persistqueue_get_ack_per_s": round(pq_get_ack),
        "append_vs_raw": round(submit / raw, 3),
        "append_vs_persistqueue_put": round(submit / pq_put, 1),
        "ack_vs_persistqueue_get_ack": round(ack / pq_get_ack, 1),
        "rss_queued_events": rss["depth"],
        "peak_rss_mib": round(rss["peak_rss_kib"] / 1024, 1),
        "import_floor_rss_mib": round(floor["peak_rss_kib"] / 1024, 1),
    })
    figures["targets_met"] = {
        "append_60k": submit >= 60_000,
        "append_25pct_of_raw": submit >= 0.25 * raw,
        "ack_60k": ack >= 60_000,
        "10x_persistqueue": submit >= 10 * pq_put and ack >= 10 * pq_get_ack,
    }
    return figures


def _table(f: dict[str, Any]) -> None:
    rows = [
        ("journal append (submit, group commit)", f"{f['append_per_s']:,} events/s",
         f"{f['append_vs_raw']:.0%} of raw"),
        ("journal append (await, 64 tasks)", f"{f['append_await_per_s']:,} events/s", ""),
        ("journal ack (peek 1000 + ack)", f"{f['ack_per_s']:,} events/s", "forwarder loop"),
        ("journal ack alone (1000 per call)", f"{f['ack_only_per_s']:,} events/s", ""),
        ("raw sqlite3 executemany (same schema)", f"{f['raw_executemany_per_s']:,} rows/s",
         "physical limit"),
        ("persist-queue SQLiteAckQueue put", f"{f['persistqueue_put_per_s']:,} items/s",
         f"journal {f['append_vs_persistqueue_put']}x"),
        ("persist-queue get + ack", f"{f['persistqueue_get_ack_per_s']:,} items/s",
         f"journal {f['ack_vs_persistqueue_get_ack']}x"),
        (f"peak RSS, {f['rss_queued_events']:,} events queued", f"{f['peak_rss_mib']} MiB",
         f"import floor {f['import_floor_rss_mib']} MiB"),
    ]
    print(f"journal benchmark ({'quick' if f['quick'] else 'full'}; event ~{f['event_bytes']} "
          f"bytes; WAL, synchronous=FULL)")
    for name, value, note in rows:
        print(f"  {name:<40} {value:>22}  {note}")
    print("  targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}"
                                     for k, v in f["targets_met"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 30 s")
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--rss-child", nargs=2, metavar=("DB", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child[0], int(args.rss_child[1]))
        return 0
    if args.baseline_child:
        _baseline_child()
        return 0
    directory = Path(tempfile.mkdtemp(prefix="linelight-bench-", dir=args.dir))
    try:
        figures = run(args.quick, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _table(figures)
    print(json.dumps({"journal": figures}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
