"""`linelight queue stats|tail|export --db PATH`: read the on-disk journal offline, never write it.

For an engineer on an emergency shell: works whether or not the agent is running, opens the
file read-only, and prints plain text (or JSON / CSV for tools).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from linelight.agent.journal import (
    EVENT_COLUMNS,
    JournalFile,
    JournalReadError,
    decode_body,
    iso,
)

CSV_COLUMNS = ["seq", "boot", "kind", "name", "value", "ts", "ts_ns", "enq_ns", "attrs"]


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
        journal = JournalFile.open(args.db)
    except JournalReadError as exc:
        print(f"linelight queue: {exc}", file=sys.stderr)
        return 1
    try:
        if args.queue_command == "stats":
            return _stats(journal, args)
        if args.queue_command == "tail":
            return _tail(journal, args)
        return _export(journal, args)
    except sqlite3.DatabaseError as exc:
        print(f"linelight queue: {args.db} cannot be read ({exc}); the agent moves a damaged "
              "journal aside and salvages it when it starts", file=sys.stderr)
        return 1
    finally:
        journal.close()


def _stats(journal: JournalFile, args: argparse.Namespace) -> int:
    stats = journal.stats()
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


def _records(journal: JournalFile, sql: str, params: list[Any],
             bad: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows as dicts; a row whose body cannot be decoded is named on stderr (and its seq
    added to `bad`) instead of stopping the listing with a traceback."""
    for seq, boot, _cls, kind, name, ts_ns, enq_ns, _size, body, *extra in journal.rows(
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
               "ts": iso(ts_ns), "ts_ns": ts_ns, "enq_ns": enq_ns, "attrs": attrs}
        if extra:
            rec["reason"], rec["dead_ns"] = extra
        yield rec


def _tail(journal: JournalFile, args: argparse.Namespace) -> int:
    where, params = _where(args.kind)
    sql = (f"SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
           f" ORDER BY seq DESC LIMIT ?) ORDER BY seq")
    for rec in _records(journal, sql, [*params, max(0, args.lines)]):
        if args.json:
            print(_json(rec))
        else:
            attrs = f"  {_json(rec['attrs'])}" if rec["attrs"] else ""
            print(f"{rec['seq']:>10}  {rec['ts']}  {rec['kind']:<6} {rec['name']} = "
                  f"{_json(rec['value'])}{attrs}")
    return 0


def _export(journal: JournalFile, args: argparse.Namespace) -> int:
    where, params = _where(args.kind, args.after)
    table, extra = ("dead_letters", ", reason, dead_ns") if args.dead_letters else ("events", "")
    sql = f"SELECT {EVENT_COLUMNS}{extra} FROM {table} WHERE {where} ORDER BY seq"
    bad: list[int] = []
    records = _records(journal, sql, params, bad)
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
