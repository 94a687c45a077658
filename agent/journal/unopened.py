"""The journal while its database cannot be opened (disk full, I/O error): refuse, count, wait.

`Journal.open` puts an `UnopenedStore` where the `Store` would be when SQLite answers
SQLITE_FULL or SQLITE_IOERR at open, so the agent starts, drives its lamps and reports
`degraded` instead of exiting. Refused events get seqs above every seq the file or the lock
file's marks know, and their gap waits in the marks (synced), exactly as for a commit the
disk refused: when the database opens later (the writer tries at every maintenance pass), or
at the next start after a crash, the `Store` announces them with a `disk_full` gap.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack

from linelight.agent.journal import readonly, schema
from linelight.agent.journal.lockfile import LockFile
from linelight.agent.journal.policy import Gap, merge_gap
from linelight.agent.journal.store import Batch, BatchResult
from linelight.agent.journal.types import Health, HealthState, JournalLimits, JournalStats

log = logging.getLogger(__name__)


class UnopenedStore:
    """Stands in for `Store`: the same `apply` / `snapshot` / `counters` / `meta` / `close`."""

    def __init__(self, path: str, limits: JournalLimits, clock: Callable[[], int],
                 lockfile: LockFile, error: str) -> None:
        self.path = path
        self.limits = limits
        self.clock = clock
        self.lockfile = lockfile
        self.error = error
        found, self.meta = read_quietly(path)
        marks = lockfile.marks
        self.counters = dict.fromkeys(schema.COUNTER_KEYS, 0)
        for key in self.counters:
            self.counters[key] = max(found.get(key, 0), marks.counters.get(key, 0))
        self.counters[schema.BOOT] += 1  # this run's boot: kept when the file opens
        self.pending_gaps: list[Gap] = list(marks.pending)
        top = max([self.counters[schema.SEQ_HWM], marks.seq]
                  + [g.last_seq for g in marks.pending])
        if not _hwm_known(path, found, marks.counters):
            # Neither the file nor the marks say how far seq went: burn from a floor no past
            # seq can have reached (microseconds since the epoch), as salvage does.
            top = max(top, clock() // 1000)
        self.next_seq = top + 1
        self.newest_seq = 0
        self.reasons = {"unopened": f"journal {path} cannot be opened ({error}); new events "
                                    "are refused and counted, and it is tried again every "
                                    f"{limits.maintenance_interval:g}s"}
        self._topic = "disk_full" if "full" in error.lower() or _no_room(path) else "write"
        self._write_marks()
        self.snapshot = self._stats(0)

    def apply(self, batch: Batch, pending: int = 0) -> BatchResult:
        """Refuse the batch's events (counted, given burned seqs); requests get empty answers."""
        kinds: dict[str, int] = dict(batch.overflow_kinds)
        for row in batch.rows:
            kinds[row.kind] = kinds.get(row.kind, 0) + 1
        count = len(batch.rows) + batch.overflow
        if count:
            first = self.next_seq
            self.next_seq += count
            self.counters[schema.DROPPED] += count
            merge_gap(self.pending_gaps, Gap(self._topic, first, first + count - 1, count, kinds))
            self._write_marks()
        for op in batch.ops:
            op.result = {"peek": [], "meta": False}.get(op.what, 0)
        self.snapshot = self._stats(pending)
        return BatchResult(None, 0, self.snapshot)

    def _write_marks(self) -> None:
        counters = dict(self.counters)
        counters[schema.SEQ_HWM] = self.next_seq - 1
        self.lockfile.write(counters, self.pending_gaps, sync=bool(self.pending_gaps))

    def _stats(self, pending: int) -> JournalStats:
        c = self.counters
        return JournalStats(
            seq_hwm=self.next_seq - 1, boot=c[schema.BOOT], dropped=c[schema.DROPPED],
            gaps=c[schema.GAPS], dead_letters=c[schema.DEAD], recovered=c[schema.RECOVERED],
            pending=pending,
            health=Health(HealthState.DEGRADED, tuple(self.reasons.values())))

    def close(self) -> None:
        """Nothing is open; the marks already hold what was refused."""


def _hwm_known(path: str, found: dict[str, int], marked: dict[str, int]) -> bool:
    if schema.SEQ_HWM in found or schema.SEQ_HWM in marked:
        return True
    try:
        return os.stat(path).st_size == 0  # a new journal: nothing was ever numbered
    except OSError:
        return True


def _no_room(path: str) -> bool:
    """An I/O error at open on a filesystem with (almost) nothing free is a full disk."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def read_quietly(path: str) -> tuple[dict[str, int], dict[str, Any]]:
    """Counters and meta read without writing anything (a full disk allows reading), or empty.

    Through the -wal when one is there and usable; else the main file alone (immutable: no
    -shm is needed, which a full disk may have left unusable).
    """
    if not os.path.exists(path):
        return {}, {}
    tries = [False, True] if os.path.exists(path + "-wal") else [True]
    problem: BaseException | None = None
    for immutable in tries:
        try:
            return _read(path, immutable)
        except (sqlite3.Error, ValueError, msgpack.UnpackException) as exc:
            problem = exc
    log.warning("journal %s: cannot read its counters either (%s)", path, problem)
    return {}, {}


def _read(path: str, immutable: bool) -> tuple[dict[str, int], dict[str, Any]]:
    counters: dict[str, int] = {}
    meta: dict[str, Any] = {}
    conn = readonly.connect(path, immutable=immutable)
    try:
        for key, value in conn.execute("SELECT key, value FROM counters"):
            if isinstance(key, str) and schema.valid_counter(value):
                counters[key] = value
        for key, value in conn.execute("SELECT key, value FROM meta"):
            if isinstance(key, str) and isinstance(value, bytes):
                meta[key] = msgpack.unpackb(value, raw=False, strict_map_key=False)
    finally:
        conn.close()
    return counters, meta
