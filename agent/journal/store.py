"""The journal's synchronous SQLite side: one connection, one thread at a time, one txn per batch.

`Store` knows nothing about the event loop. `Journal` (journal.queue) hands it batches from a
worker thread; everything that touches the database file goes through here. Errors from SQLite
are translated: disk full and I/O errors refuse the batch's events (counted, reported later as
a gap) and never raise; only opening can raise `JournalError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from linelight.agent.journal import schema
from linelight.agent.journal.lockfile import LockFile, Marks
from linelight.agent.journal.policy import Gap, merge_gap, plan_age_drops, plan_byte_drops
from linelight.agent.journal.types import Health, HealthState, JournalLimits, JournalStats, Record

log = logging.getLogger(__name__)

_FULL_CODES = {sqlite3.SQLITE_FULL}
_CHECKPOINT = 1000  # SQLite's default WAL auto-checkpoint, in pages
_LOW_DISK_CHECKPOINT = 64  # while free disk is below the reserve: keep the WAL small


@dataclass(slots=True)
class PendingRow:
    """An encoded event waiting for its commit."""

    cls: int
    kind: str
    name: str
    ts_ns: int
    body: bytes
    size: int


@dataclass(slots=True)
class Op:
    """A request other than an append, executed in batch order after the batch's appends."""

    what: str  # ack | dead | peek | meta | maintain (the batch does retention)
    args: tuple[Any, ...]
    result: Any = None


@dataclass(slots=True)
class Batch:
    rows: list[PendingRow] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    overflow: int = 0  # events the submit buffer refused since the last batch
    overflow_kinds: dict[str, int] = field(default_factory=dict)
    maintain: bool = False


@dataclass(slots=True)
class BatchResult:
    first_seq: int | None  # seq of rows[0]; None when the rows were refused
    newest_seq: int  # newest committed seq after this batch (0 if none ever)
    stats: JournalStats


def encode_body(value: Any, attrs: Any) -> bytes:
    if attrs and type(attrs) is not dict:
        attrs = dict(attrs)  # msgpack packs plain dicts only
    body: bytes = msgpack.packb([value, attrs] if attrs else [value], use_bin_type=True)
    return body


_READS = ("peek", "handout")  # ops that need no write transaction


def decode_body(body: bytes) -> tuple[Any, dict[str, Any]]:
    """`(value, attrs)` of a stored body; ValueError naming the problem for any other shape."""
    try:
        parts = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"body is not msgpack ({exc})") from exc
    if not isinstance(parts, list) or not 1 <= len(parts) <= 2:
        raise ValueError(f"body is {_shape(parts)}, not [value] or [value, {{attrs}}]")
    attrs = parts[1] if len(parts) > 1 else {}
    if not isinstance(attrs, dict):
        raise ValueError(f"attrs are {_shape(attrs)}, not a map")
    return parts[0], attrs


def _shape(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"


def row_size(kind: str, name: str, body: bytes) -> int:
    name_bytes = len(name) if name.isascii() else len(name.encode())
    return len(kind) + name_bytes + len(body) + schema.ROW_OVERHEAD


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code in _FULL_CODES or "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def is_unavailable(exc: BaseException) -> bool:
    """Disk full or an I/O error: the disk says no for now; not damage to the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    return is_disk_full(exc) or (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR)


class Store:
    """The database side of the journal. Not thread-safe: one caller at a time."""

    def __init__(self, conn: sqlite3.Connection, path: str, limits: JournalLimits,
                 clock: Callable[[], int] = time.time_ns, lockfile: LockFile | None = None
                 ) -> None:
        self.conn = conn
        self.clock = clock  # wall clock, UTC epoch ns: enq_ns and max_age
        self.path = path
        self.limits = limits
        self.lockfile = lockfile
        every = schema.read_counters(conn)
        saved = {k: v for k, v in every.items() if not schema.is_class_total(k)}
        self._saved_counters = dict(saved)
        self._persisting = dict(saved)
        self.pending_gaps: list[Gap] = []
        self.counters = dict(saved)
        self.next_seq = saved[schema.SEQ_HWM] + 1
        if lockfile is not None:
            self._above_marks(lockfile.marks)
        self.class_depth, self.class_bytes = self._class_totals(every)
        self._saved_classes = {k: v for k, v in every.items() if schema.is_class_total(k)}
        self._persisting_classes = self._saved_classes
        self.meta: dict[str, Any] = {
            str(k): msgpack.unpackb(v, raw=False, strict_map_key=False)
            for k, v in conn.execute("SELECT key, value FROM meta")
        }
        self.undecodable: set[int] = set()  # rows peek could not decode, to dead-letter
        self.reasons: dict[str, str] = {}  # degraded reasons by topic
        self.low_disk = False  # free disk below the reserve: the file may not grow
        # Per retention class, the newest retention gap row not yet handed out by peek: the
        # next drop of that class for the same reason extends it instead of adding a row, so
        # a long outage on a small disk leaves a few gap rows, not one per pass.
        self._open_gaps: dict[int, tuple[int, Gap]] = {}
        self._handed_out = 0  # highest seq peek has returned
        self._max_pages = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
        self.newest_seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        self._newest: tuple[int, int] | None = None  # (seq, ts_ns) of the newest queued row
        self._oldest: tuple[int, int, int] | None = None  # (seq, ts_ns, enq_ns) of the oldest
        self._refresh_ends()
        self.snapshot = self._stats(0)

    def _class_totals(self, saved: dict[str, int]) -> tuple[dict[int, int], dict[int, int]]:
        """Rows and bytes per retention class: as the last commit recorded them when they
        still describe the table, else counted (a full scan)."""
        at = (saved[schema.BOOT], saved[schema.SEQ_HWM], *self._seq_range())
        found = schema.saved_class_totals(saved, at)
        if found is not None:
            return found
        depth: dict[int, int] = {}
        size: dict[int, int] = {}
        for cls, n, b in self.conn.execute(
                "SELECT cls, count(*), total(size) FROM events GROUP BY cls"):
            depth[int(cls)] = int(n)
            size[int(cls)] = int(b)
        return depth, size

    def _seq_range(self) -> tuple[int, int]:
        """(oldest, newest) queued seq, (0, 0) when empty: the rowid b-tree's two ends."""
        lo, hi = self.conn.execute(  # two subqueries: each is one b-tree seek
            "SELECT (SELECT min(seq) FROM events), (SELECT max(seq) FROM events)").fetchone()
        return int(lo or 0), int(hi or 0)

    def _above_marks(self, marks: Marks) -> None:
        """Never below the lock file's marks: re-announce refused events, explain lost seqs.

        Gaps of refused events that were waiting in the marks when the agent stopped are
        queued again (the database's high-water mark stays below them until their gap
        commits). Seqs the marks saw but the database no longer knows (a lost or truncated
        -wal, an older copy of the file) get a `lost` gap; seq continues above them.
        """
        db_hwm = self.counters[schema.SEQ_HWM]
        restored = [g for g in marks.pending if g.first_seq > db_hwm]
        for key, value in marks.counters.items():
            if key in self.counters and key != schema.SEQ_HWM:
                self.counters[key] = max(self.counters[key], value)
        if restored:
            dropped = self._saved_counters[schema.DROPPED] + sum(g.count for g in restored)
            self.counters[schema.DROPPED] = max(self.counters[schema.DROPPED], dropped)
            log.warning("journal %s: %d refused events (seq %d..%d) are announced now; their "
                        "gap was kept in %s.lock", self.path, sum(g.count for g in restored),
                        restored[0].first_seq, restored[-1].last_seq, self.path)
        top = max([db_hwm, marks.seq] + [g.last_seq for g in restored])
        lost: list[Gap] = []
        start = db_hwm + 1
        for g in sorted(restored, key=lambda g: g.first_seq) + [Gap("", top + 1, top, 0)]:
            if g.first_seq > start:
                lost.append(Gap("lost", start, g.first_seq - 1, 0, {}, None,
                                (("db_seq", db_hwm), ("mark_seq", marks.seq))))
            start = max(start, g.last_seq + 1)
        for gap in lost:
            log.error("journal %s went backwards: its seq high-water mark is %d but %s.lock "
                      "saw %d; committed events up to seq %d are lost (a -wal deleted or "
                      "truncated, or an older copy of the file); seq continues above %d with a "
                      "'lost' gap", self.path, db_hwm, self.path, marks.seq, gap.last_seq, top)
        self.pending_gaps = sorted(restored + lost, key=lambda g: g.first_seq)
        self.next_seq = top + 1

    # -- the batch ---------------------------------------------------------------------------
    def apply(self, batch: Batch, pending: int = 0) -> BatchResult:
        """Commit the batch in one transaction; on disk full, refuse its rows and carry on."""
        first: int | None = None
        now_ns = self.clock()
        if batch.maintain:
            self._check_free_disk()
        writes = bool(batch.rows or batch.overflow or self.pending_gaps or batch.maintain
                      or self.undecodable
                      or any(op.what not in _READS for op in batch.ops)
                      or self.counters != self._saved_counters)  # (also while gaps wait)
        if not writes:
            self._run_ops_readonly(batch.ops)
        else:
            first = self._transaction(batch, now_ns)
        if batch.maintain and not self.low_disk:  # short of disk, free pages are the room
            self._vacuum_some()
        if batch.ops or batch.maintain:
            self._refresh_ends()
        self.write_marks()
        self.snapshot = self._stats(pending)
        return BatchResult(first, self.newest_seq, self.snapshot)

    def write_marks(self) -> None:
        """The lock file's marks as of now; synced while refused events wait for their gap."""
        if self.lockfile is None:
            return
        counters = dict(self.counters)
        counters[schema.SEQ_HWM] = self.next_seq - 1
        burned = [g for g in self.pending_gaps if g.reason != "lost"]
        self.lockfile.write(counters, burned, sync=bool(burned))

    def _transaction(self, batch: Batch, now_ns: int) -> int | None:
        """Commit rows, gaps, ops and retention; when the disk refuses, commit what frees space.

        A refused batch's rows are counted and their seqs burned (a gap will name them); its
        acks and dead letters are retried alone, because deleting is how space comes back.
        """
        try:
            first = self._attempt(batch, now_ns, grow=True)
        except sqlite3.Error as exc:
            if self.low_disk and batch.rows and is_disk_full(exc) and self._make_room(
                    batch.rows, now_ns):
                try:
                    first = self._attempt(batch, now_ns, grow=True)
                except sqlite3.Error as again:
                    exc = again
                else:
                    self._clear("write")
                    return first
            self._refuse(batch.rows, exc)
            self._burn_overflow(batch)
            if any(op.what not in _READS for op in batch.ops):
                try:
                    self._attempt(batch, now_ns, grow=False)
                    return None
                except sqlite3.Error as again:
                    log.debug("journal %s: acks refused too: %s", self.path, again)
            self._run_ops_readonly(batch.ops)
            return None
        self._clear("write")
        return first

    def _attempt(self, batch: Batch, now_ns: int, *, grow: bool) -> int | None:
        """One transaction; on failure the in-memory state is as before and the error raised."""
        saved = self._save_state()
        bad: list[int] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            first = None
            if grow:
                first = self._insert(batch.rows, now_ns)
                self._burn_overflow(batch)
                self._flush_gaps(now_ns)
            bad = sorted(self.undecodable)
            for seq in bad:
                self._dead(seq, "payload cannot be decoded")
            self._run_ops(batch.ops)
            self._retention(now_ns, age=batch.maintain)
            self._save_counters()
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            self._restore_state(saved)
            raise
        self._committed_counters()
        self.undecodable.difference_update(bad)
        return first

    def _insert(self, rows: Sequence[PendingRow], now_ns: int) -> int | None:
        if not rows:
            return None
        first = self.next_seq
        boot = self.counters[schema.BOOT]
        self.conn.executemany(
            f"INSERT INTO events({schema.EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (first + i, boot, r.cls, r.kind, r.name, r.ts_ns, now_ns, r.size, r.body)
                for i, r in enumerate(rows)
            ],
        )
        self.next_seq = first + len(rows)
        for r in rows:
            self.class_depth[r.cls] = self.class_depth.get(r.cls, 0) + 1
            self.class_bytes[r.cls] = self.class_bytes.get(r.cls, 0) + r.size
        self.newest_seq = self.next_seq - 1
        self._newest = (self.newest_seq, rows[-1].ts_ns)
        if self._oldest is None:
            self._oldest = (first, rows[0].ts_ns, now_ns)
        return first

    def _write_gap(self, gap: Gap, now_ns: int) -> int:
        """Insert one gap event; returns its seq."""
        body = _gap_body(gap)
        row = PendingRow(schema.KIND_CLASS["gap"], "gap", gap.reason, now_ns, body,
                         row_size("gap", gap.reason, body))
        seq = self._insert([row], now_ns)
        self.counters[schema.GAPS] += 1
        return seq or 0

    def _retention_gap(self, gap: Gap, now_ns: int) -> None:
        """Journal a retention gap, extending the class's open gap row when it continues it.

        Drops take each class oldest first, so a later drop of the same class and reason
        continues the earlier range exactly: no event of that class between the two was kept.
        """
        assert gap.cls is not None
        held = self._open_gaps.get(gap.cls)
        if held is not None and held[0] > self._handed_out and held[1].reason == gap.reason:
            seq, old = held
            kinds = dict(old.kinds)
            for kind, n in gap.kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
            merged = Gap(gap.reason, old.first_seq, gap.last_seq, old.count + gap.count, kinds,
                         gap.cls)
            body = _gap_body(merged)
            size = row_size("gap", gap.reason, body)
            before = self.conn.execute(
                "UPDATE events SET body = ?, size = ? WHERE seq = ? AND kind = 'gap'"
                " RETURNING cls", (body, size, seq)).fetchall()
            if before:
                cls = int(before[0][0])
                self.class_bytes[cls] += size - row_size("gap", old.reason, _gap_body(old))
                self._open_gaps[gap.cls] = (seq, merged)
                return
        self._open_gaps[gap.cls] = (self._write_gap(gap, now_ns), gap)

    def _flush_gaps(self, now_ns: int) -> None:
        for gap in self.pending_gaps:
            self._write_gap(gap, now_ns)
        self.pending_gaps = []

    def _burn_overflow(self, batch: Batch) -> None:
        """Events the submit buffer refused arrived after the batch's rows: seqs after them."""
        if batch.overflow:
            self._burn(batch.overflow, "overflow", batch.overflow_kinds)

    def _burn(self, count: int, reason: str, kinds: dict[str, int]) -> None:
        """Give `count` lost events seqs of their own so the gap names an exact seq range."""
        first = self.next_seq
        self.next_seq += count
        self.counters[schema.DROPPED] += count
        merge_gap(self.pending_gaps, Gap(reason, first, first + count - 1, count, dict(kinds)))

    def _refuse(self, rows: Sequence[PendingRow], exc: sqlite3.Error) -> None:
        topic = "disk_full" if is_disk_full(exc) else "write"
        if topic == "disk_full":
            message = f"disk full: journal {self.path} refuses new events ({exc})"
        else:
            message = f"journal {self.path} cannot write: {exc}"
        if topic not in self.reasons:
            log.error("%s", message)
        self.reasons[topic] = message
        if rows:
            kinds: dict[str, int] = {}
            for r in rows:
                kinds[r.kind] = kinds.get(r.kind, 0) + 1
            self._burn(len(rows), topic, kinds)

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL can).
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def _save_state(self) -> tuple[Any, ...]:
        gaps = [dataclasses.replace(g, kinds=dict(g.kinds)) for g in self.pending_gaps]
        return (self.next_seq, dict(self.counters), gaps,
                dict(self.class_depth), dict(self.class_bytes), self.newest_seq, self._newest,
                self._oldest, dict(self.meta), dict(self._open_gaps))

    def _restore_state(self, saved: tuple[Any, ...]) -> None:
        """Undo the in-memory effects of a transaction that rolled back."""
        (self.next_seq, self.counters, self.pending_gaps, self.class_depth, self.class_bytes,
         self.newest_seq, self._newest, self._oldest, self.meta, self._open_gaps) = saved

    def _clear(self, topic: str) -> None:
        if self.reasons.pop(topic, None) is not None:
            log.warning("journal %s: writing again", self.path)
        self.reasons.pop("disk_full", None)

    def _save_counters(self) -> None:
        """Write changed counters; `_committed_counters()` becomes true once COMMIT succeeds."""
        self.counters[schema.SEQ_HWM] = self.next_seq - 1
        persist = dict(self.counters)
        if self.pending_gaps:
            # Seqs burned for events the disk refused, whose gap is not written yet: if we die
            # now, those seqs are simply used again, so no hole is left without its gap.
            persist[schema.SEQ_HWM] = min(persist[schema.SEQ_HWM],
                                          self.pending_gaps[0].first_seq - 1)
            persist[schema.DROPPED] -= sum(g.count for g in self.pending_gaps)
        changed = {k: v for k, v in persist.items() if self._saved_counters.get(k) != v}
        classes = schema.class_totals(
            self.class_depth, self.class_bytes,
            (persist[schema.BOOT], persist[schema.SEQ_HWM], *self._seq_range()))
        changed.update((k, v) for k, v in classes.items() if self._saved_classes.get(k) != v)
        if changed:
            schema.write_counters(self.conn, changed)
        self._persisting = persist
        self._persisting_classes = classes

    def _committed_counters(self) -> None:
        self._saved_counters = self._persisting
        self._saved_classes = self._persisting_classes

    # -- ops ---------------------------------------------------------------------------------
    def _run_ops(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if op.what == "ack":
                op.result = self._ack(op.args[0])
            elif op.what == "dead":
                op.result = self._dead(op.args[0], op.args[1])
            elif op.what == "meta":
                key, value, packed = op.args  # packed by the caller: errors stay with it
                self.conn.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, packed),
                )
                self.meta[key] = value
                op.result = True
            elif op.what == "peek":
                op.result = self.peek(op.args[0], op.args[1])
            elif op.what == "handout":
                op.result = self.hand_out()

    def _run_ops_readonly(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if op.what == "peek":
                try:
                    op.result = self.peek(op.args[0], op.args[1])
                except sqlite3.Error as exc:
                    log.error("journal %s: cannot read: %s", self.path, exc)
                    op.result = []
            elif op.what == "handout":
                op.result = self.hand_out()
            else:
                op.result = False if op.what == "meta" else 0

    def _forget(self, gone: Sequence[tuple[int, int]]) -> None:
        for cls, size in gone:
            self.class_depth[cls] -= 1
            self.class_bytes[cls] -= size

    def _ack(self, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        gone = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?)) RETURNING cls, size",
            (_json_ints(seqs),),
        ).fetchall()
        self._forget(gone)
        return len(gone)

    def _dead(self, seq: int, reason: str) -> int:
        moved = self.conn.execute(
            f"INSERT INTO dead_letters({schema.EVENT_COLUMNS}, reason, dead_ns)"
            f" SELECT {schema.EVENT_COLUMNS}, ?, ? FROM events WHERE seq = ?",
            (reason, self.clock(), seq),
        ).rowcount
        if not moved:
            return 0
        gone = self.conn.execute(
            "DELETE FROM events WHERE seq = ? RETURNING cls, size, kind", (seq,)
        ).fetchall()
        self._forget([(cls, size) for cls, size, _ in gone])
        self.counters[schema.DEAD] += 1
        kind = str(gone[0][2]) if gone else "?"
        if kind != "gap":  # a refused gap gets no gap of its own: that could loop forever
            self._write_gap(Gap("dead_letter", seq, seq, 1, {kind: 1}, None,
                                (("why", reason),)), self.clock())
        self.conn.execute(
            "DELETE FROM dead_letters WHERE seq <= (SELECT seq FROM dead_letters"
            " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (self.limits.max_dead_letters,),
        )
        return 1

    def peek(self, limit: int, after_seq: int) -> list[Record]:
        out, bad, last = read_records(self.conn, self.path, limit, after_seq)
        # Damaged on disk after it was written: never handed out, never blocking the rows
        # behind it. The next transaction moves them to the dead letters.
        self.undecodable.update(bad)
        if last:
            self._handed_out = max(self._handed_out, last)
        return out

    def hand_out(self) -> int:
        """The newest committed seq, counted as handed out: another reader (the forwarder
        process, agent/uplink) may read every row up to it directly, so no retention gap at
        or below it is extended any more (a gap row once sent must not change)."""
        self._handed_out = max(self._handed_out, self.newest_seq)
        return self.newest_seq

    # -- retention ---------------------------------------------------------------------------
    def _retention(self, now_ns: int, *, age: bool) -> None:
        if age and self.limits.max_age > 0:
            cutoff = now_ns - int(self.limits.max_age * 1e9)
            if self._oldest is not None and self._oldest[2] < cutoff:
                rows = self.conn.execute("SELECT seq, cls, kind, enq_ns FROM events ORDER BY seq")
                self._drop(plan_age_drops(rows, cutoff), now_ns)
        cap = self.limits.max_bytes
        total = sum(self.class_bytes.values())
        if total > cap:
            target = total - int(cap * 0.9)  # hysteresis: no gap event for every commit
            self._drop(plan_byte_drops(self.class_depth, self._rows_of_class, target),
                       now_ns)

    def _rows_of_class(self, cls: int) -> Iterator[tuple[int, str, int]]:
        yield from self.conn.execute(
            "SELECT seq, kind, size FROM events WHERE cls = ? ORDER BY seq", (cls,)
        )

    def _drop(self, plan: list[Gap], now_ns: int) -> None:
        for gap in plan:
            gone = self.conn.execute(
                "DELETE FROM events WHERE cls = ? AND seq BETWEEN ? AND ? AND kind != 'gap'"
                " RETURNING cls, size",
                (gap.cls, gap.first_seq, gap.last_seq),
            ).fetchall()
            self._forget(gone)
            self.counters[schema.DROPPED] += len(gone)
            log.warning("journal %s: dropped %d %s events (seq %d..%d) for %s",
                        self.path, len(gone), "/".join(sorted(gap.kinds)), gap.first_seq,
                        gap.last_seq, gap.reason)
            self._retention_gap(Gap(gap.reason, gap.first_seq, gap.last_seq, len(gone),
                                    gap.kinds, gap.cls), now_ns)
        if plan:
            self._oldest = None
            self._refresh_ends()

    def _check_free_disk(self) -> None:
        """Below the reserve the file stops growing: SQLite's page limit is pinned to today's
        size, pages freed by acks are reused, and when the file is full the oldest events of
        the lowest class make room (`_make_room`)."""
        reserve = self.limits.min_free_disk
        if reserve <= 0:
            return
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        # On a filesystem smaller than two reserves, half of it is the reserve (room for the
        # WAL and the rest of the system): else
        # the journal would be pinned at whatever size it had, however much is free.
        reserve = min(reserve, st.f_blocks * st.f_frsize // 2)
        if free < reserve:
            self._small_wal()
            if not self.low_disk:
                self.low_disk = True
                pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
                self._set_max_pages(min(self._max_pages, pages))
                self._set_autocheckpoint(_LOW_DISK_CHECKPOINT)
                log.error("journal %s: free disk %d bytes is below the reserve of %d; the "
                          "journal stops growing and its oldest events make room for new ones",
                          self.path, free, reserve)
            self.reasons["low_disk"] = (f"free disk {free} bytes below the reserve of {reserve}"
                                        "; the journal file does not grow, oldest events make "
                                        "room")
        elif self.low_disk and free > reserve + reserve // 10:
            self.low_disk = False
            self._set_max_pages(self._max_pages)
            self._set_autocheckpoint(_CHECKPOINT)
            self.reasons.pop("low_disk", None)
            log.warning("journal %s: free disk is back above the reserve", self.path)

    def _make_room(self, rows: Sequence[PendingRow], now_ns: int) -> bool:
        """The pinned file is full: drop the oldest lowest-class events (with their gap)."""
        need = max(2 * sum(r.size for r in rows), 64 * 1024)
        plan = plan_byte_drops(self.class_depth, self._rows_of_class, need, "low_disk")
        if not plan:
            return False
        saved = self._save_state()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self._drop(plan, now_ns)
            self._save_counters()
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._restore_state(saved)
            log.debug("journal %s: could not make room: %s", self.path, exc)
            return False
        self._committed_counters()
        return True

    def _set_max_pages(self, pages: int) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchall()

    def _small_wal(self) -> None:
        """Short of disk: fold the WAL into the database and cut the WAL file to nothing."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("journal %s: checkpoint failed: %s", self.path, exc)

    def _set_autocheckpoint(self, pages: int) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}").fetchall()

    def _vacuum_some(self) -> None:
        """Give free pages back to the filesystem a little at a time (auto_vacuum=INCREMENTAL)."""
        try:
            free_pages = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
            if free_pages > 256:
                self.conn.execute("PRAGMA incremental_vacuum(2048)").fetchall()
        except sqlite3.Error as exc:
            log.debug("journal %s: incremental vacuum failed: %s", self.path, exc)

    # -- stats -------------------------------------------------------------------------------
    def _refresh_ends(self) -> None:
        """Re-read the oldest and newest queued rows (two index look-ups)."""
        try:
            old = self.conn.execute(
                "SELECT seq, ts_ns, enq_ns FROM events ORDER BY seq LIMIT 1").fetchone()
            new = self.conn.execute(
                "SELECT seq, ts_ns FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error:
            return
        self._oldest = None if old is None else (int(old[0]), int(old[1]), int(old[2]))
        self._newest = None if new is None else (int(new[0]), int(new[1]))

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(self.path + suffix).st_size
        return total

    def health(self) -> Health:
        if not self.reasons:
            return Health(HealthState.OK)
        return Health(HealthState.DEGRADED, tuple(self.reasons.values()))

    def _stats(self, pending: int) -> JournalStats:
        c = self.counters
        depth = sum(self.class_depth.values())
        oldest = self._oldest if depth else None
        newest = self._newest if depth else None
        return JournalStats(
            depth=depth,
            bytes=sum(self.class_bytes.values()),
            file_bytes=self.file_bytes(),
            oldest_seq=oldest[0] if oldest else None,
            oldest_ts_ns=oldest[1] if oldest else None,
            oldest_enq_ns=oldest[2] if oldest else None,
            newest_seq=newest[0] if newest else None,
            newest_ts_ns=newest[1] if newest else None,
            seq_hwm=self.next_seq - 1,
            boot=c[schema.BOOT],
            dropped=c[schema.DROPPED],
            gaps=c[schema.GAPS],
            dead_letters=c[schema.DEAD],
            recovered=c[schema.RECOVERED],
            pending=pending,
            health=self.health(),
        )

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("journal %s: checkpoint at close failed: %s", self.path, exc)
        self.conn.close()


def _gap_body(gap: Gap) -> bytes:
    attrs: dict[str, Any] = {
        "reason": gap.reason,
        "first_seq": gap.first_seq,
        "last_seq": gap.last_seq,
        "count": gap.count,
        "kinds": dict(gap.kinds),
        **dict(gap.detail),
    }
    if gap.cls is not None:
        attrs["class"] = gap.cls
    return encode_body(gap.count, attrs)


def _json_ints(seqs: Sequence[int]) -> str:
    return "[" + ",".join(str(int(s)) for s in seqs) + "]"


def read_records(conn: sqlite3.Connection, path: str, limit: int, after_seq: int,
                 through: int | None = None) -> tuple[list[Record], list[int], int]:
    """Up to `limit` rows with seq > after_seq (and <= through), oldest first, decoded.

    Returns (records, seqs that cannot be decoded, the last seq read or 0). Used by the
    writer's `peek` and by the forwarder process's own read-only connection."""
    rows = conn.execute(
        "SELECT seq, boot, kind, name, ts_ns, enq_ns, body FROM events"
        " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        (after_seq, through if through is not None else 2**63 - 1, limit),
    ).fetchall()
    out, bad = [], []
    for seq, boot, kind, name, ts_ns, enq_ns, body in rows:
        try:
            value, attrs = decode_body(body)
        except ValueError as exc:
            log.error("journal %s: event %d cannot be decoded (%s); dead-lettering it",
                      path, seq, exc)
            bad.append(int(seq))
            continue
        out.append(Record(seq, boot, kind, name, value, ts_ns, enq_ns, attrs))
    return out, bad, int(rows[-1][0]) if rows else 0
