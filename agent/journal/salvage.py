"""Opening the journal file safely: checks, integrity, and salvage of a corrupt file.

Opening never crash-loops on a bad file: a file SQLite cannot read, or one that fails
`PRAGMA quick_check`, is renamed `NAME.corrupt-YYYYmmddTHHMMSSZ` (with its -wal and -shm),
every row that can still be read is copied into a fresh file, and the seq high-water mark
continues above anything seen. Problems a new file cannot fix (permissions, a directory in the
way, another agent holding the file) raise `JournalError` with one sentence naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from linelight.agent.journal import readonly, schema
from linelight.agent.journal.lockfile import last_marks
from linelight.agent.journal.store import decode_body, encode_body, is_unavailable, row_size
from linelight.agent.journal.types import JournalError, JournalUnavailable

log = logging.getLogger(__name__)

_NOT_CORRUPTION = {
    sqlite3.SQLITE_BUSY: "is in use by another process",
    sqlite3.SQLITE_LOCKED: "is locked by another connection",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
    sqlite3.SQLITE_PERM: "cannot be opened (permission denied)",
    sqlite3.SQLITE_READONLY: "is read-only",
    sqlite3.SQLITE_AUTH: "cannot be opened (not authorized)",
}


@dataclass(frozen=True, slots=True)
class Recovery:
    """What salvage found, for the `recovered` gap event and the log."""

    moved_to: str
    error: str
    salvaged: int
    first_seq: int  # lowest salvaged seq, 0 if none
    last_seq: int  # the seq high-water mark carried into the new file
    hwm_known: bool  # False when the old counters were unreadable (seq jumped to a time floor)


def connect(path: str) -> sqlite3.Connection:
    """A write connection with the journal's durability settings."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=2.0)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new file only
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise JournalError(f"journal {path} cannot use WAL mode (SQLite says '{mode}')")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA journal_size_limit = 8388608")
        conn.execute("PRAGMA foreign_keys = OFF")
    except BaseException:
        conn.close()
        raise
    return conn


def check_place(path: str) -> None:
    """Errors a fresh file would not fix: say so in one sentence instead of salvaging."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise JournalError(f"journal {path} is a directory, not a database file")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot create directory {directory}: "
                           f"{exc.strerror}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise JournalError(f"journal {path}: directory {directory} is not writable by this "
                           f"user (uid {os.getuid()})")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise JournalError(f"journal {path} is not readable and writable by this user "
                           f"(uid {os.getuid()})")


def open_database(path: str) -> tuple[sqlite3.Connection, Recovery | None]:
    """Open (creating, migrating or salvaging as needed) and return a checked connection.

    A full disk or an I/O error is not damage: `JournalUnavailable` says so, and the file is
    left exactly as it is (the journal waits for space and tries again).
    """
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        _raise_if_not_corruption(exc, path)
        return _rebuild(path, str(exc))
    try:
        damage = _damage(conn, path)
        if damage is None:
            schema.migrate(conn, path)
            return conn, None
    except sqlite3.Error as exc:
        conn.close()
        _raise_if_not_corruption(exc, path)
        damage = str(exc)
    except BaseException:
        conn.close()
        raise
    conn.close()
    return _rebuild(path, damage)


def _raise_if_not_corruption(exc: sqlite3.Error, path: str) -> None:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if is_unavailable(exc):
        raise JournalUnavailable(f"journal {path} cannot be opened now: {exc}") from exc
    problem = None if primary is None else _NOT_CORRUPTION.get(primary)
    if problem:
        raise JournalError(f"journal {path} {problem}: {exc}") from exc


def _damage(conn: sqlite3.Connection, path: str) -> str | None:
    """None if the file is sound, else what is wrong with it."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > schema.SCHEMA_VERSION:  # a downgrade: refuse, never "repair" a good file
        schema.migrate(conn, path)  # raises JournalError naming both versions
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
    if rows != ["ok"]:
        return "integrity check failed: " + "; ".join(rows)
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
    if version == 0 and tables:
        return f"not a linelight journal (tables {', '.join(sorted(tables))}, no version)"
    if version >= 1 and not {"events", "counters"} <= tables:
        return f"schema version {version} but tables missing (found {sorted(tables)})"
    # Values the integrity check cannot judge but the journal relies on.
    bad = schema.bad_counter(conn) if version >= 1 else None
    if bad is None and "meta" in tables:
        bad = _bad_meta(conn)
    return bad


def _bad_meta(conn: sqlite3.Connection) -> str | None:
    for key, value in conn.execute("SELECT key, value FROM meta"):
        problem = _meta_problem(value)
        if problem:
            return f"meta value '{key}' {problem}"
    return None


def _meta_problem(value: object) -> str | None:
    if not isinstance(value, bytes):
        return f"is {type(value).__name__}, not msgpack bytes"
    try:
        msgpack.unpackb(value, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        return f"cannot be decoded ({exc})"
    return None


def _rebuild(path: str, error: str) -> tuple[sqlite3.Connection, Recovery]:
    """Salvage into `PATH.rebuild`, then swap it in; a crash at any point can be resumed.

    The new file is complete (rows, counters, the `recovered` gap, then a marker, in one
    transaction) before the damaged one is moved aside and the new one renamed into place, so
    the seq high-water mark is never lost to a crash during salvage.
    """
    target = _aside_name(path)
    log.error("journal %s is damaged (%s); salvaging what can be read, then moving it to %s",
              path, error, target)
    tmp = path + REBUILD_SUFFIX
    _remove_database(tmp)
    try:
        new = connect(tmp)
        try:
            schema.migrate(new, tmp)
            recovery = _salvage_into(path, new, error, target)
            _fold_wal(new)
        finally:
            new.close()
    except (sqlite3.Error, OSError) as exc:
        # No room (or no working disk) to rebuild: leave the damaged file where it is and
        # no half-made copy beside it; the journal waits and tries again.
        _remove_database(tmp)
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
            raise JournalError(f"journal {path}: cannot write the salvaged copy {tmp}: "
                               f"{exc.strerror}") from exc
        if isinstance(exc, sqlite3.Error):
            _raise_if_not_corruption(exc, path)
            raise
        raise JournalUnavailable(f"journal {path} is damaged and cannot be salvaged now: "
                                 f"{exc.strerror}") from exc
    _swap_in(path, tmp, target)
    log.warning("journal %s: salvaged %d events from %s; seq continues above %d",
                path, recovery.salvaged, target, recovery.last_seq)
    return _reopen_rebuilt(path), recovery


REBUILD_SUFFIX = ".rebuild"
_COMPLETE = "rebuild_complete"  # counters key, written last in the salvage transaction


def resume_rebuild(path: str) -> None:
    """Finish (or throw away) a salvage a crash interrupted, before anything else opens PATH."""
    tmp = path + REBUILD_SUFFIX
    if not os.path.exists(tmp):
        return
    complete = False
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            complete = conn.execute(
                "SELECT 1 FROM counters WHERE key = ?", (_COMPLETE,)).fetchone() is not None
            if complete:
                _fold_wal(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        complete = False
    if not complete:
        log.warning("journal %s: discarding an unfinished salvage (%s)", path, tmp)
        _remove_database(tmp)
        return
    target = _aside_name(path)
    log.warning("journal %s: finishing a salvage interrupted by a crash", path)
    _swap_in(path, tmp, target)


def _fold_wal(conn: sqlite3.Connection) -> None:
    """Checkpoint the WAL into the file and drop it: only the main file is renamed."""
    mode = str(conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]).lower()
    if mode != "delete":
        raise sqlite3.OperationalError(f"cannot leave WAL mode (still '{mode}')")


def _swap_in(path: str, tmp: str, target: str) -> None:
    if os.path.exists(path):
        _move_aside(path, target)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot put the salvaged journal {tmp} in place: "
                           f"{exc.strerror}") from exc


def _reopen_rebuilt(path: str) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute("DELETE FROM counters WHERE key = ?", (_COMPLETE,))
    return conn


def _remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def _aside_name(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    return target


def _move_aside(path: str, target: str) -> None:
    try:
        # The WAL and its index go first: a WAL left beside the new file would be replayed
        # into it.
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.rename(path + suffix, target + suffix)
        os.rename(path, target)
    except OSError as exc:
        raise JournalError(f"journal {path} is damaged and cannot be moved aside to {target}: "
                           f"{exc.strerror}") from exc


def _open_old(path: str) -> sqlite3.Connection | None:
    try:
        old = readonly.connect(path, immutable=False, isolation_level=None)
        # Lets SQLite read a file shorter than its header claims (a truncated journal).
        old.execute("PRAGMA writable_schema = ON")
        return old
    except sqlite3.Error as exc:
        log.warning("journal salvage: %s cannot be opened at all: %s", path, exc)
        return None


def _salvage_into(old_path: str, new: sqlite3.Connection, error: str, target: str) -> Recovery:
    """Copy what can be read from the damaged file into `new`, in one transaction."""
    old = _open_old(old_path)
    counters: dict[str, int] = {}
    meta: list[tuple[str, bytes]] = []
    salvaged = first = top = top_boot = 0
    hwm_known = False
    try:
        new.execute("BEGIN IMMEDIATE")
        if old is not None:
            counters, hwm_known = _read_counters(old)
            meta = _read_meta(old)
            for chunk in _chunks(_readable_rows(old, counters.get(schema.SEQ_HWM, 0))):
                new.executemany(f"INSERT OR IGNORE INTO events({schema.EVENT_COLUMNS})"
                                " VALUES (?,?,?,?,?,?,?,?,?)", chunk)
                salvaged += len(chunk)
                first = first or chunk[0][0]
                top = max(top, chunk[-1][0])
                top_boot = max(top_boot, max(r[1] for r in chunk))
        hwm = max(top, counters.get(schema.SEQ_HWM, 0))
        if not hwm_known:
            # The old high-water mark is unreadable: acked rows above `top` may have had seqs
            # we can no longer see. Jump to a floor no past seq can have reached (microseconds
            # since the epoch; far above any count of events this agent could have written).
            hwm = max(hwm, time.time_ns() // 1000)
        counters.pop(_COMPLETE, None)
        counters[schema.BOOT] = max(counters.get(schema.BOOT, 0), top_boot,
                                    last_marks(old_path).boot)
        counters[schema.RECOVERED] = counters.get(schema.RECOVERED, 0) + 1
        counters[schema.GAPS] = counters.get(schema.GAPS, 0) + 1
        recovery = Recovery(target, error, salvaged, first, hwm, hwm_known)
        counters[schema.SEQ_HWM] = hwm + 1  # the gap event below
        _insert_recovered_gap(new, recovery, hwm + 1, counters[schema.BOOT] + 1)
        schema.write_counters(new, counters)
        new.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta)
        schema.write_counters(new, {_COMPLETE: 1})
        new.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            new.execute("ROLLBACK")
        raise
    finally:
        if old is not None:
            old.close()
    return recovery


def _insert_recovered_gap(new: sqlite3.Connection, r: Recovery, seq: int, boot: int) -> None:
    """The `gap` event that tells the broker the journal was rebuilt (count 0: unknown)."""
    attrs = {"reason": "recovered", "first_seq": r.first_seq, "last_seq": r.last_seq,
             "count": 0, "kinds": {}, "moved_to": r.moved_to, "error": r.error,
             "salvaged": r.salvaged, "hwm_known": r.hwm_known}
    body = encode_body(0, attrs)
    now = time.time_ns()
    new.execute(f"INSERT INTO events({schema.EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (seq, boot, schema.KIND_CLASS["gap"], "gap", "recovered", now, now,
                 row_size("gap", "recovered", body), body))


def _read_counters(old: sqlite3.Connection) -> tuple[dict[str, int], bool]:
    """The counters that read back as integers; True if the seq high-water mark is one."""
    try:
        rows = old.execute("SELECT key, value FROM counters").fetchall()
    except sqlite3.Error as exc:
        log.warning("journal salvage: counters unreadable: %s", exc)
        return {}, False
    counters = {k: v for k, v in rows if isinstance(k, str) and schema.valid_counter(v)}
    return counters, schema.SEQ_HWM in counters


def _read_meta(old: sqlite3.Connection) -> list[tuple[str, bytes]]:
    try:
        rows = old.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.Error:
        return []
    return [(k, v) for k, v in rows if isinstance(k, str) and _meta_problem(v) is None]


def _chunks(rows: Iterator[tuple[Any, ...]], size: int = 2000) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _readable_rows(old: sqlite3.Connection, hwm: int) -> Iterator[tuple[Any, ...]]:
    """Every row that reads back whole, in seq order, stepping over damaged stretches."""
    sql = f"SELECT {schema.EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
    limit = hwm if hwm > 0 else 2**62
    after = 0
    chunk = 500
    while True:
        try:
            rows = old.execute(sql, (after, chunk)).fetchall()
        except sqlite3.Error:
            if chunk > 1:
                chunk = 1  # find the bad row one at a time
                continue
            resume = _skip_damage(old, after, limit)
            if resume is None:
                return
            after = resume
            continue
        if not rows:
            return
        # A damaged b-tree can answer out of order; keep only the strictly rising prefix.
        ordered: list[tuple[Any, ...]] = []
        for row in rows:
            if not isinstance(row[0], int) or row[0] <= (ordered[-1][0] if ordered else after):
                break
            ordered.append(row)
        if not ordered:
            resume = _skip_damage(old, after, limit)
            if resume is None:
                return
            after = resume
            continue
        for row in ordered:
            if _valid(row):
                yield row
        after = int(ordered[-1][0])
        chunk = 500


def _skip_damage(old: sqlite3.Connection, failed: int, limit: int) -> int | None:
    """The smallest seq bound past an unreadable page: gallop forward, then bisect back."""

    def readable(after: int) -> bool:
        try:
            old.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT 1",
                        (after,)).fetchall()
        except sqlite3.Error:
            return False
        return True

    step = 1
    while True:
        candidate = failed + step
        if candidate > limit or candidate > 2**62:
            return None
        if readable(candidate):
            break
        failed = candidate
        step *= 2
    while candidate - failed > 1:
        mid = (failed + candidate) // 2
        if readable(mid):
            candidate = mid
        else:
            failed = mid
    return candidate


def _valid(row: tuple[Any, ...]) -> bool:
    seq, boot, cls, kind, name, ts_ns, enq_ns, size, body = row
    ints_ok = all(isinstance(v, int) for v in (seq, boot, cls, ts_ns, enq_ns, size))
    if not (ints_ok and isinstance(kind, str) and isinstance(name, str)
            and isinstance(body, bytes)) or schema.KIND_CLASS.get(kind) != cls:
        return False
    try:
        decode_body(body)
    except ValueError:
        return False
    return True
