"""`linelight queue stats|tail|export --db PATH`: read the on-disk journal offline, never write it.

For an engineer on an emergency shell: works whether or not the agent is running, opens the
file read-only, and prints plain text (or JSON / CSV for tools).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from sqlite_utils import Database

from linelight.agent.journal import COUNTER_KEYS, EVENT_COLUMNS, decode_body

CSV_COLUMNS = ["seq", "boot", "kind", "name", "value", "ts", "ts_ns", "enq_ns", "attrs"]


class QueueReadError(Exception):
    """The file cannot be read as a journal; the message names it."""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="depth, bytes, oldest/newest, drops, gaps")
    tail = sub.add_parser("tail", help="the newest queued events")
    export = sub.add_parser("export", help="every queued event as JSON lines or CSV")
    for p in (stats, tail, export):
        p.add_argument("--db", required=True, metavar="PATH", help="the journal file "
                       "(e.g. /var/lib/linelight/journal.db)")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                      help="how many events (default 20)")
    tail.add_argument("--json", action="store_true", help="JSON lines instead of text")
    for p in (tail, export):
        p.add_argument("--kind", action="append", metavar="KIND",
                       help="only this kind (repeatable): signal, lamp, state, agent, alarm, "
                            "count, gap")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    export.add_argument("--after", type=int, default=0, metavar="SEQ",
                        help="only events with seq above SEQ")
    export.add_argument("--dead-letters", action="store_true",
                        help="export the dead-letter table instead of the queue")


def run(args: argparse.Namespace) -> int:
    try:
        conn = open_readonly(args.db)
    except QueueReadError as exc:
        print(f"linelight queue: {exc}", file=sys.stderr)
        return 1
    try:
        if args.queue_command == "stats":
            return _stats(conn, args)
        if args.queue_command == "tail":
            return _tail(conn, args)
        return _export(conn, args)
    except sqlite3.DatabaseError as exc:
        print(f"linelight queue: {args.db} cannot be read ({exc}); the agent moves a damaged "
              "journal aside and salvages it when it starts", file=sys.stderr)
        return 1
    finally:
        conn.close()


def open_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to a journal file, or QueueReadError with a plain sentence."""
    if not os.path.exists(path):
        raise QueueReadError(f"no journal at {path}")
    if os.path.isdir(path):
        raise QueueReadError(f"{path} is a directory, not a journal file")
    try:
        # With no WAL beside it the file is at rest (closed cleanly or never written): read it
        # as immutable so SQLite creates no -wal/-shm files. With a WAL (the agent running, or
        # killed), read through it read-only so the newest committed events show.
        at_rest = not os.path.exists(path + "-wal")
        uri = f"file:{quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if at_rest else "")
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("PRAGMA query_only = 1")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = set(Database(conn).table_names())
    except sqlite3.Error as exc:
        raise QueueReadError(f"{path} cannot be read as a journal ({exc})") from exc
    if version < 1 or not {"events", "counters"} <= tables:
        conn.close()
        raise QueueReadError(f"{path} is not a linelight journal (schema version {version}, "
                             f"tables {', '.join(sorted(tables)) or 'none'})")
    return conn


def read_stats(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    db = Database(conn)
    counters = dict.fromkeys(COUNTER_KEYS, 0)
    counters.update({r["key"]: r["value"] for r in db.query("SELECT key, value FROM counters")})
    depth, total = conn.execute("SELECT count(*), total(size) FROM events").fetchone()
    oldest = conn.execute("SELECT seq, ts_ns, enq_ns FROM events ORDER BY seq LIMIT 1").fetchone()
    newest = conn.execute("SELECT seq, ts_ns FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    by_kind = {r["kind"]: r["n"] for r in db.query(
        "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind")}
    dead = 0
    if "dead_letters" in db.table_names():
        dead = int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
    now_ns = time.time_ns()
    return {
        "db": path,
        "schema_version": int(conn.execute("PRAGMA user_version").fetchone()[0]),
        "file_bytes": sum(_size(path + s) for s in ("", "-wal")),
        "depth": int(depth),
        "bytes": int(total),
        "by_kind": by_kind,
        "oldest_seq": oldest[0] if oldest else None,
        "oldest_ts": _iso(oldest[1]) if oldest else None,
        "oldest_age_s": round((now_ns - oldest[2]) / 1e9, 3) if oldest else None,
        "newest_seq": newest[0] if newest else None,
        "newest_ts": _iso(newest[1]) if newest else None,
        "seq_hwm": counters["seq_hwm"],
        "boot": counters["boot"],
        "dropped": counters["dropped"],
        "gaps_total": counters["gaps"],
        "gaps_queued": by_kind.get("gap", 0),
        "dead_letters_total": counters["dead_letters"],
        "dead_letters_kept": dead,
        "recovered": counters["recovered"],
    }


def _stats(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    stats = read_stats(conn, args.db)
    if args.json:
        print(json.dumps(stats))
        return 0
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        if key == "by_kind":
            value = ", ".join(f"{k} {n}" for k, n in value.items()) or "-"
        print(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")
    return 0


def _where(kinds: list[str] | None, after: int = 0) -> tuple[str, list[Any]]:
    clauses: list[str] = ["seq > ?"]
    params: list[Any] = [after]
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    return " AND ".join(clauses), params


def _records(conn: sqlite3.Connection, sql: str, params: list[Any],
             bad: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows as dicts; a row whose body cannot be decoded is named on stderr (and its seq
    added to `bad`) instead of stopping the listing with a traceback."""
    for seq, boot, _cls, kind, name, ts_ns, enq_ns, _size, body, *extra in conn.execute(
            sql, params):
        try:
            value, attrs = decode_body(body)
        except ValueError as exc:
            print(f"linelight queue: event seq {seq} ({kind}/{name}) cannot be decoded: {exc}; "
                  "left out (the agent dead-letters it)", file=sys.stderr)
            if bad is not None:
                bad.append(seq)
            continue
        rec = {"seq": seq, "boot": boot, "kind": kind, "name": name, "value": value,
               "ts": _iso(ts_ns), "ts_ns": ts_ns, "enq_ns": enq_ns, "attrs": attrs}
        if extra:
            rec["reason"], rec["dead_ns"] = extra
        yield rec


def _tail(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    where, params = _where(args.kind)
    sql = (f"SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
           f" ORDER BY seq DESC LIMIT ?) ORDER BY seq")
    for rec in _records(conn, sql, [*params, max(0, args.lines)]):
        if args.json:
            print(_json(rec))
        else:
            attrs = f"  {_json(rec['attrs'])}" if rec["attrs"] else ""
            print(f"{rec['seq']:>10}  {rec['ts']}  {rec['kind']:<6} {rec['name']} = "
                  f"{_json(rec['value'])}{attrs}")
    return 0


def _export(conn: sqlite3.Connection, args: argparse.Namespace) -> int:
    where, params = _where(args.kind, args.after)
    table, extra = ("dead_letters", ", reason, dead_ns") if args.dead_letters else ("events", "")
    sql = f"SELECT {EVENT_COLUMNS}{extra} FROM {table} WHERE {where} ORDER BY seq"
    bad: list[int] = []
    records = _records(conn, sql, params, bad)
    if not args.out:
        _write(sys.stdout, args.format, records, bool(extra))
        return 1 if bad else 0
    with open(args.out, "w", newline="", encoding="utf-8") as out:
        count = _write(out, args.format, records, bool(extra))
    print(f"exported {count} events to {args.out}"
          + (f"; {len(bad)} could not be decoded" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


def _write(out: TextIO, fmt: str, records: Iterator[dict[str, Any]], dead: bool) -> int:
    count = 0
    if fmt == "jsonl":
        for rec in records:
            out.write(_json(rec) + "\n")
            count += 1
        return count
    columns = CSV_COLUMNS + (["reason", "dead_ns"] if dead else [])
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for rec in records:
        row = dict(rec)
        if not isinstance(row["value"], str | int | float | bool) or row["value"] is None:
            row["value"] = _json(row["value"])
        row["attrs"] = _json(row["attrs"]) if row["attrs"] else ""
        writer.writerow(row)
        count += 1
    return count


def _json(value: Any) -> str:
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "base64:" + base64.b64encode(value).decode()
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def _iso(ns: int) -> str:
    try:
        when = datetime.fromtimestamp(ns / 1e9, UTC)
    except (OverflowError, OSError, ValueError):
        return f"@{ns}ns"  # a clock far off: show the raw number rather than fail
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
