"""Reading a journal file without ever writing it: the one read-only open.

Every reader that must not change the file opens it here: `linelight queue`, doctor's journal
step, salvage's read of a damaged file, the read side of a journal the disk keeps from
opening, and the forwarder process (whose reads stay on raw `sqlite3`: the hot path).

- `uri(path, immutable=False)`: the SQLite URI, the path percent-quoted. Unquoted, a `#` or
  `?` in a directory name ends the path early: `file:/data/a#b/journal.db?mode=ro` is the file
  `/data/a`, opened read-write (the `mode=ro` is cut off with the rest), and created if absent.
- `connect(path, immutable=None, timeout=5.0)`: a `sqlite3` connection with `query_only` on.
  `immutable=None` reads a file at rest (no `-wal` beside it: closed cleanly or never
  written) as immutable, so SQLite creates no `-wal`/`-shm` beside it, and a file with a WAL
  (the agent running, or killed) through it, so the newest committed events show.
- `JournalFile.open(path)`: the offline inspection side, through sqlite-utils: the checks
  that it is a journal, `stats()`, `rows(sql, params)`, `quick_check()`. Errors are
  `JournalReadError` with one sentence naming the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from linelight.agent.journal import schema

if TYPE_CHECKING:
    from sqlite_utils import Database


class JournalReadError(Exception):
    """The file cannot be read as a journal; the message names it."""


def uri(path: str, *, immutable: bool = False) -> str:
    return (f"file:{quote(os.path.abspath(path))}?mode=ro"
            + ("&immutable=1" if immutable else ""))


def connect(path: str, *, immutable: bool | None = None, timeout: float = 5.0,
            **options: Any) -> sqlite3.Connection:
    """A read-only connection (sqlite3.Error if SQLite refuses); `options` go to connect."""
    if immutable is None:
        immutable = not os.path.exists(path + "-wal")
    conn: sqlite3.Connection = sqlite3.connect(uri(path, immutable=immutable), uri=True,
                                               timeout=timeout, **options)
    try:
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class JournalFile:
    """A journal file opened read-only for inspection (`with JournalFile.open(p) as f:`)."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        # imported here: the inspection side only; the agent and its forwarder process import
        # this module (the read-only open) but never load sqlite-utils (about 5 MB each)
        from sqlite_utils import Database

        self.db: Database = Database(conn)

    @classmethod
    def open(cls, path: str, *, timeout: float = 5.0) -> JournalFile:
        """The file as a journal, or JournalReadError: missing, a directory, not SQLite, or
        SQLite without the journal's tables."""
        if not os.path.exists(path):
            raise JournalReadError(f"no journal at {path}")
        if os.path.isdir(path):
            raise JournalReadError(f"{path} is a directory, not a journal file")
        try:
            conn = connect(path, timeout=timeout)
        except sqlite3.Error as exc:
            raise JournalReadError(f"{path} cannot be read as a journal ({exc})") from exc
        journal = cls(path, conn)
        try:
            version = journal.schema_version()
            tables = set(journal.db.table_names())
        except sqlite3.Error as exc:
            conn.close()
            raise JournalReadError(f"{path} cannot be read as a journal ({exc})") from exc
        if version < 1 or not {"events", "counters"} <= tables:
            conn.close()
            raise JournalReadError(f"{path} is not a linelight journal (schema version "
                                   f"{version}, tables {', '.join(sorted(tables)) or 'none'})")
        return journal

    def __enter__(self) -> JournalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def quick_check(self) -> str:
        """SQLite's `quick_check` verdict: "ok" or the first problem."""
        return str(self.conn.execute("PRAGMA quick_check").fetchone()[0])

    def depth(self) -> int:
        return self.db["events"].count

    def rows(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        return iter(self.conn.execute(sql, params))

    def stats(self) -> dict[str, Any]:
        """Depth, bytes, range, counters and dead letters: `linelight queue stats`."""
        db, conn, path = self.db, self.conn, self.path
        counters = dict.fromkeys(schema.COUNTER_KEYS, 0)
        counters.update({r["key"]: r["value"] for r in db.query("SELECT key, value FROM counters")})
        depth, total = conn.execute("SELECT count(*), total(size) FROM events").fetchone()
        oldest = conn.execute(
            "SELECT seq, ts_ns, enq_ns FROM events ORDER BY seq LIMIT 1").fetchone()
        newest = conn.execute("SELECT seq, ts_ns FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        by_kind = {r["kind"]: r["n"] for r in db.query(
            "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind")}
        dead = db["dead_letters"].count if "dead_letters" in db.table_names() else 0
        now_ns = time.time_ns()
        return {
            "db": path,
            "schema_version": self.schema_version(),
            "file_bytes": sum(_size(path + s) for s in ("", "-wal")),
            "depth": int(depth),
            "bytes": int(total),
            "by_kind": by_kind,
            "oldest_seq": oldest[0] if oldest else None,
            "oldest_ts": iso(oldest[1]) if oldest else None,
            "oldest_age_s": round((now_ns - oldest[2]) / 1e9, 3) if oldest else None,
            "newest_seq": newest[0] if newest else None,
            "newest_ts": iso(newest[1]) if newest else None,
            "seq_hwm": counters[schema.SEQ_HWM],
            "boot": counters[schema.BOOT],
            "dropped": counters[schema.DROPPED],
            "gaps_total": counters[schema.GAPS],
            "gaps_queued": by_kind.get("gap", 0),
            "dead_letters_total": counters[schema.DEAD],
            "dead_letters_kept": int(dead),
            "recovered": counters[schema.RECOVERED],
        }


def iso(ns: int) -> str:
    """An event time as ISO 8601 UTC with milliseconds (`@Nns` when it is out of range)."""
    from datetime import UTC, datetime

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
