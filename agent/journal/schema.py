"""The journal's on-disk schema, its versioned migrations and the persistent counters."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from linelight.agent.journal.types import JournalError

# Event kinds and their retention class: higher classes are kept longer; gap is never dropped.
KIND_CLASS: dict[str, int] = {
    "signal": 0,
    "lamp": 0,
    "state": 1,
    "agent": 1,
    "alarm": 2,
    "count": 2,
    "gap": 2,
}
NEVER_DROPPED = frozenset({"gap"})

# Bytes a row costs beyond its name, kind and msgpack body (integers, record header); an
# estimate so that `max_bytes` means roughly "bytes of queued data" without asking SQLite.
ROW_OVERHEAD = 40

# Keys of the `counters` table (integers that must survive restarts and salvage).
SEQ_HWM = "seq_hwm"  # highest seq ever assigned; seq never goes below it
BOOT = "boot"  # incremented at each open
DROPPED = "dropped"  # events dropped for any reason (retention, overflow, disk full)
GAPS = "gaps"  # gap events written
DEAD = "dead_letters"  # rows moved to the dead-letter table
RECOVERED = "recovered"  # times the file was found corrupt and salvaged
COUNTER_KEYS = (SEQ_HWM, BOOT, DROPPED, GAPS, DEAD, RECOVERED)

# The queued rows' count and bytes per retention class as of the last commit, written in the
# same transaction as the rows, with what they describe: the boot that wrote them, the seq
# high-water mark and the oldest and newest queued seq. An open that finds all four as they
# are trusts them instead of counting the table (0.46 s for 1,000,000 rows, before the first
# lamp write). Any other writer (an older linelight, salvage, a hand edit) moves one of the
# four, since every open increments the boot: then the open counts again.
CLASS_DEPTH = "class_depth."  # + the class number
CLASS_BYTES = "class_bytes."
CLASSES_AT = ("classes_boot", "classes_hwm", "classes_oldest", "classes_newest")
CLASSES = frozenset(KIND_CLASS.values())


def is_class_total(key: str) -> bool:
    return key.startswith((CLASS_DEPTH, CLASS_BYTES)) or key in CLASSES_AT


def class_totals(depth: dict[int, int], size: dict[int, int], at: tuple[int, int, int, int]
                 ) -> dict[str, int]:
    """The counters-table rows that record `depth` and `size` (bytes) per class as of `at`
    (boot, seq high-water mark, oldest and newest queued seq)."""
    out = dict(zip(CLASSES_AT, at, strict=True))
    for cls in sorted(set(depth) | set(size)):
        out[f"{CLASS_DEPTH}{cls}"] = depth.get(cls, 0)
        out[f"{CLASS_BYTES}{cls}"] = size.get(cls, 0)
    return out


def saved_class_totals(saved: dict[str, int], at: tuple[int, int, int, int]
                       ) -> tuple[dict[int, int], dict[int, int]] | None:
    """(depth, bytes) per class from the `saved` counters if they were written as of `at`
    (see `class_totals`) and add up for that seq range, else None."""
    if tuple(saved.get(key) for key in CLASSES_AT) != at:
        return None
    depth: dict[int, int] = {}
    size: dict[int, int] = {}
    for key, value in saved.items():
        for prefix, into in ((CLASS_DEPTH, depth), (CLASS_BYTES, size)):
            if key.startswith(prefix):
                number = key[len(prefix):]
                if not number.isascii() or not number.isdigit() or int(number) not in CLASSES:
                    return None
                into[int(number)] = value
    rows = sum(depth.values())
    oldest, newest = at[2], at[3]
    if (rows == 0) != (newest == 0) or (newest and rows > newest - oldest + 1):
        return None
    return depth, size

EVENT_COLUMNS = "seq, boot, cls, kind, name, ts_ns, enq_ns, size, body"


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS events ("
        " seq INTEGER PRIMARY KEY,"  # the rowid: appends go to the end of the b-tree
        " boot INTEGER NOT NULL,"
        " cls INTEGER NOT NULL,"  # retention class, from KIND_CLASS
        " kind TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " ts_ns INTEGER NOT NULL,"  # event time at the source, UTC epoch ns
        " enq_ns INTEGER NOT NULL,"  # wall time the event was committed, UTC epoch ns
        " size INTEGER NOT NULL,"  # accounted bytes (see ROW_OVERHEAD)
        " body BLOB NOT NULL)"  # msgpack [value, attrs]
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    )


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS dead_letters ("
        " seq INTEGER PRIMARY KEY, boot INTEGER NOT NULL, cls INTEGER NOT NULL,"
        " kind TEXT NOT NULL, name TEXT NOT NULL, ts_ns INTEGER NOT NULL,"
        " enq_ns INTEGER NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL,"
        " reason TEXT NOT NULL, dead_ns INTEGER NOT NULL)"
    )
    # The agent's own small key/value store (counter totals that survive restarts).
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")


# Index i holds the step from user_version i to i + 1. Never edit a released step; add one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: str, *, upto: int = SCHEMA_VERSION) -> int:
    """Bring the file to schema `upto` (each step in its own transaction); returns the old version."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {found}, newer than this linelight "
            f"understands ({SCHEMA_VERSION}); upgrade linelight or move the file aside"
        )
    for version in range(found, upto):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def read_counters(conn: sqlite3.Connection) -> dict[str, int]:
    """All persistent counters, 0 for any not yet written."""
    out = dict.fromkeys(COUNTER_KEYS, 0)
    for key, value in conn.execute("SELECT key, value FROM counters"):
        out[str(key)] = int(value)
    return out


_COUNTER_LIMIT = 2**63  # SQLite's integers; a negative counter never happens either


def valid_counter(value: object) -> bool:
    return type(value) is int and 0 <= value < _COUNTER_LIMIT


def bad_counter(conn: sqlite3.Connection) -> str | None:
    """What is wrong with the first counter that is not a plain non-negative integer, or None."""
    for key, kind, value in conn.execute("SELECT key, typeof(value), value FROM counters"):
        if kind != "integer" or not valid_counter(value):
            shown = repr(value)[:40]
            return f"counter '{key}' holds {kind} {shown}, not a non-negative integer"
    return None


def write_counters(conn: sqlite3.Connection, counters: dict[str, int]) -> None:
    conn.executemany(
        "INSERT INTO counters(key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(counters.items()),
    )
