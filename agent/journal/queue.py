"""The journal: every event committed to an on-disk SQLite queue before anything else happens.

`Journal.open(path, limits)` checks, salvages and migrates the file (synchronously, before the
event loop needs it). `run()` is the group-commit writer: it gathers everything submitted,
appended, acknowledged or asked for since the last commit and hands it to one worker thread as
one transaction (one fsync), then wakes the waiters on the event loop. All methods except
`open` and `close` are called from the event-loop thread.

Promises, schema and limits: docs/journal.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import msgpack

from linelight.agent.journal import schema
from linelight.agent.journal.lockfile import LockFile
from linelight.agent.journal.salvage import (
    Recovery,
    check_place,
    open_database,
    resume_rebuild,
)
from linelight.agent.journal.store import (
    Batch,
    BatchResult,
    Op,
    PendingRow,
    Store,
    encode_body,
    is_unavailable,
    row_size,
)
from linelight.agent.journal.types import (
    Event,
    Health,
    JournalError,
    JournalLimits,
    JournalStats,
    JournalUnavailable,
    Record,
)
from linelight.agent.journal.unopened import UnopenedStore

__all__ = [
    "Event",
    "Health",
    "Journal",
    "JournalLimits",
    "JournalStats",
    "Record",
]

log = logging.getLogger(__name__)


class _Group:
    """Appends that will share one commit; `done` is created only if somebody awaits it."""

    __slots__ = ("rows", "done", "first_seq")

    def __init__(self) -> None:
        self.rows: list[PendingRow] = []
        self.done: anyio.Event | None = None
        self.first_seq: int | None = None


class _Flight:
    """One batch on its way to the disk; `result` is set by whoever commits it."""

    __slots__ = ("batch", "group", "ops", "pending", "result")

    def __init__(self, batch: Batch, group: _Group | None,
                 ops: list[tuple[Op, anyio.Event]], pending: int) -> None:
        self.batch = batch
        self.group = group
        self.ops = ops
        self.pending = pending
        self.result: BatchResult | None = None


class Journal:
    """The durable event queue. See the module docstring and docs/journal.md."""

    def __init__(self, store: Store | UnopenedStore, path: str, limits: JournalLimits,
                 lockfile: LockFile) -> None:
        self.path = path
        self.limits = limits
        self._store = store
        self._lockfile = lockfile
        self._db_lock = threading.Lock()  # the connection is used by one thread at a time
        self._groups: list[_Group] = []
        self._ops: list[tuple[Op, anyio.Event]] = []
        self._pending = 0
        self._overflow = 0
        self._overflow_kinds: dict[str, int] = {}
        self._wakeup: anyio.Event | None = None
        self._new_rows: anyio.Event | None = None
        self._newest_seq = store.newest_seq
        self._running = False
        self._closed = False
        self._inflight: _Flight | None = None
        self._test_delay = commit_delay_for_tests()

    # -- opening and closing -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str, limits: JournalLimits | None = None, *,
             clock: Callable[[], int] = time.time_ns) -> Journal:
        """Open or create the journal at `path`: check, salvage if damaged, migrate, boot += 1.

        `clock` is the wall clock (UTC epoch ns) used for `enq_ns` and `max_age`. A full disk
        or an I/O error does not raise: the journal starts without its file (degraded,
        refusing and counting events) and opens it once it can.
        """
        limits = limits or JournalLimits()
        path = str(path)
        check_place(path)
        lockfile = LockFile.acquire(path)
        store: Store | UnopenedStore
        try:
            store = _open_store(path, limits, clock, lockfile)
        except JournalUnavailable as exc:
            log.error("%s; the agent runs on without it, refusing and counting events, and "
                      "opens it when it can", exc)
            store = UnopenedStore(path, limits, clock, lockfile, str(exc.__cause__ or exc))
        except BaseException:
            lockfile.release()
            raise
        log.info("journal %s open: boot %d, %d events queued, seq above %d", path,
                 store.counters[schema.BOOT], store.snapshot.depth, store.next_seq - 1)
        return cls(store, path, limits, lockfile)

    def close(self) -> None:
        """Commit whatever is still buffered, checkpoint the WAL and release the file.

        Call it once producers and `run()` have stopped, from the event-loop thread or from a
        worker thread (`anyio.to_thread.run_sync(journal.close)`); waiters are woken safely.
        """
        if self._closed:
            return
        done: list[_Flight] = []
        with self._db_lock:
            flight = self._inflight
            if flight is not None and flight.result is None:
                flight.result = self._store.apply(flight.batch, flight.pending)
                done.append(flight)
            while self._groups or self._ops or self._overflow:
                flight = _Flight(*self._take_batch(maintain=False))
                flight.result = self._store.apply(flight.batch, flight.pending)
                done.append(flight)
            self._closed = True
            self._store.close()
        self._lockfile.release()
        _on_loop(self._wake_after_close, done)

    def _wake_after_close(self, flights: list[_Flight]) -> None:
        for flight in flights:
            assert flight.result is not None
            self._deliver(flight.group, flight.ops, flight.result)
        if self._new_rows is not None:  # wait_new() callers raise JournalError
            self._new_rows.set()

    # -- writing -----------------------------------------------------------------------------
    def submit(self, event: Event) -> None:
        """Hand an event off without waiting; never raises. Overflow is counted as a gap."""
        if self._pending >= self.limits.max_pending or self._closed:
            self._overflow += 1
            self._overflow_kinds[event.kind] = self._overflow_kinds.get(event.kind, 0) + 1
            self._wake()
            return
        try:
            row = _encode(event)
        except (TypeError, ValueError, OverflowError) as exc:  # msgpack: ints beyond 64 bits
            log.error("journal: event %s/%s not recorded: %s", event.kind, event.name, exc)
            self._overflow += 1
            self._overflow_kinds[event.kind] = self._overflow_kinds.get(event.kind, 0) + 1
            self._wake()
            return
        self._tail().rows.append(row)
        self._pending += 1
        self._wake()

    async def append(self, event: Event) -> int | None:
        """Commit `event` and return its seq once durable; None if the disk refused it.

        Raises ValueError/TypeError/OverflowError for an event that cannot be encoded (unknown
        kind, value msgpack cannot carry, an integer beyond 64 bits) and JournalError once the journal is closed.
        """
        row = _encode(event)
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        group = self._tail()
        index = len(group.rows)
        group.rows.append(row)
        self._pending += 1
        if group.done is None:
            group.done = anyio.Event()
        done = group.done
        self._wake()
        await done.wait()
        return None if group.first_seq is None else group.first_seq + index

    async def ack(self, seqs: Iterable[int]) -> int:
        """Delete these seqs (the broker has them) in one transaction; returns how many went."""
        wanted = [int(s) for s in seqs]
        if not wanted:
            return 0
        result: int = await self._request("ack", wanted)
        return result

    async def dead_letter(self, seq: int, reason: str) -> bool:
        """Move one row to the dead-letter table (counted); False if it was no longer queued."""
        result: int = await self._request("dead", int(seq), str(reason))
        return bool(result)

    async def put_meta(self, key: str, value: Any) -> bool:
        """Store a small msgpack-able value under `key`, durably (TypeError if it is not).

        Returns once the value is committed (fsync'd: `synchronous = FULL`) or refused: True
        when it is on disk, False when the disk refused it (full, I/O error, file not open)."""
        packed = msgpack.packb(value, use_bin_type=True)  # TypeError here, for the caller
        return bool(await self._request("meta", str(key), value, packed))

    async def maintain(self) -> JournalStats:
        """Apply retention and the free-disk check now (they also run every interval)."""
        await self._request("maintain")
        return self.stats()

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value last stored under `key` (survives restarts), or `default`."""
        return self._store.meta.get(key, default)

    # -- reading -----------------------------------------------------------------------------
    async def peek(self, limit: int, after_seq: int = 0) -> list[Record]:
        """Up to `limit` unacknowledged records with seq > after_seq, oldest first."""
        if limit <= 0:
            return []
        result: list[Record] = await self._request("peek", int(limit), int(after_seq))
        return result

    async def hand_out(self) -> int:
        """The newest committed seq, which another process may now read directly (see
        Store.hand_out); 0 while the file is not open."""
        result: int = await self._request("handout")
        return result

    async def wait_new(self, after_seq: int) -> None:
        """Return once a committed row with seq > after_seq exists (at once if one does)."""
        while self._newest_seq <= after_seq:
            if self._closed:
                raise JournalError(f"journal {self.path} is closed")
            if self._new_rows is None:
                self._new_rows = anyio.Event()
            await self._new_rows.wait()

    @property
    def newest_seq(self) -> int:
        """The newest committed seq (0 if the journal never held a row)."""
        return self._newest_seq

    def stats(self) -> JournalStats:
        """A snapshot as of the last commit, plus what is buffered now."""
        return dataclasses.replace(self._store.snapshot, pending=self._pending)

    @property
    def health(self) -> Health:
        return self._store.snapshot.health

    @property
    def running(self) -> bool:
        """True while the group-commit writer (`run`) runs: nothing is committed otherwise."""
        return self._running

    def status(self) -> dict[str, Any]:
        """The queue as /status shows it (depth counts what is buffered, not yet committed)."""
        q = self.stats()
        wall = time.time_ns()
        return {
            "depth": q.depth + q.pending, "committed": q.depth, "pending": q.pending,
            "bytes": q.bytes, "file_bytes": q.file_bytes,
            "oldest_seq": q.oldest_seq, "newest_seq": q.newest_seq, "seq_hwm": q.seq_hwm,
            "oldest_age_s": round((wall - q.oldest_enq_ns) / 1e9, 3) if q.oldest_enq_ns else 0.0,
            "dropped": q.dropped, "gaps": q.gaps, "dead_letters": q.dead_letters,
            "recovered": q.recovered, "boot": q.boot, "health": str(q.health),
            "health_reasons": list(q.health.reasons), "writer_running": self._running,
            "path": self.path}

    @property
    def boot(self) -> int:
        return self._store.counters[schema.BOOT]

    # -- the writer --------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Group-commit writer and periodic retention; runs until cancelled."""
        if self._running:
            raise JournalError(f"journal {self.path}: run() is already running")
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        self._running = True
        limiter = anyio.CapacityLimiter(1)
        interval = self.limits.maintenance_interval
        next_maintenance = anyio.current_time()
        task_status.started()
        try:
            while not self._closed:
                now = anyio.current_time()
                if not self._has_work() and now < next_maintenance:
                    self._wakeup = anyio.Event()
                    with anyio.move_on_after(next_maintenance - now):
                        await self._wakeup.wait()
                    self._wakeup = None
                    continue
                # Under a stream of appends, at most one commit (one fsync) per window, so a
                # group fills up; requests (ack, peek, ...) never wait for the window.
                await self._gather(anyio.current_time() + self.limits.commit_window)
                maintain = anyio.current_time() >= next_maintenance
                if maintain:
                    next_maintenance = anyio.current_time() + interval
                flight = _Flight(*self._take_batch(maintain))
                self._inflight = flight
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(self._commit, flight, limiter=limiter)
                    except BaseException:
                        self._fail(flight)  # a bug, not a disk problem: free the waiters
                        raise
                    finally:
                        self._inflight = None
                    if flight.result is not None:
                        self._deliver(flight.group, flight.ops, flight.result)
        finally:
            self._running = False

    async def _gather(self, deadline: float) -> None:
        """Let the group fill while appends keep arriving, until `deadline` or `max_group`."""
        seen = self._pending
        while not self._ops and self._pending < self.limits.max_group:
            if anyio.current_time() >= deadline:
                return
            await anyio.lowlevel.checkpoint()  # ready tasks (appenders just woken) run first
            if self._pending == seen:
                return  # nothing new: waiting longer only adds latency
            seen = self._pending

    def _commit(self, flight: _Flight) -> None:
        """Worker thread: commit one batch unless close() already did."""
        if self._test_delay:  # a slow disk, for tests only (TEST_COMMIT_DELAY_ENV)
            time.sleep(self._test_delay)
        with self._db_lock:
            if flight.result is None and not self._closed:
                if isinstance(self._store, UnopenedStore) and flight.batch.maintain:
                    self._try_open()
                flight.result = self._store.apply(flight.batch, flight.pending)

    def _try_open(self) -> None:
        """Worker thread, under the lock: replace the stand-in once the file opens."""
        waiting = self._store
        assert isinstance(waiting, UnopenedStore)
        try:
            store = _open_store(self.path, self.limits, waiting.clock, self._lockfile,
                                boot=waiting.counters[schema.BOOT])
        except JournalError as exc:
            reason = str(exc.__cause__ or exc)
            if reason != waiting.error:
                log.error("journal %s still cannot be opened: %s", self.path, reason)
                waiting.error = reason
            return
        log.warning("journal %s is open again: boot %d, %d events queued, seq above %d; "
                    "refused events are announced by a gap", self.path,
                    store.counters[schema.BOOT], store.snapshot.depth, store.next_seq - 1)
        self._store = store

    def _take_batch(
        self, maintain: bool
    ) -> tuple[Batch, _Group | None, list[tuple[Op, anyio.Event]], int]:
        group = self._groups.pop(0) if self._groups else None
        ops, self._ops = self._ops, []
        maintain = maintain or any(op.what == "maintain" for op, _ in ops)
        batch = Batch(rows=group.rows if group else [], ops=[op for op, _ in ops],
                      maintain=maintain)
        if not self._groups:
            # Dropped events came after everything still buffered: their burned seqs (and
            # the gap naming them) follow the last buffered row, not the first group.
            batch.overflow, batch.overflow_kinds = self._overflow, self._overflow_kinds
            self._overflow = 0
            self._overflow_kinds = {}
        if group is not None:
            self._pending -= len(group.rows)
        return batch, group, ops, self._pending

    def _deliver(self, group: _Group | None, ops: list[tuple[Op, anyio.Event]],
                 result: BatchResult) -> None:
        if group is not None:
            group.first_seq = result.first_seq
            if group.done is not None:
                group.done.set()
        for _op, done in ops:
            done.set()
        if result.newest_seq > self._newest_seq:
            self._newest_seq = result.newest_seq
            if self._new_rows is not None:
                self._new_rows.set()
                self._new_rows = None

    def _fail(self, flight: _Flight) -> None:
        """Release everybody waiting on a batch that will never commit."""
        failed = {"ack": 0, "dead": 0, "peek": [], "meta": False, "maintain": None,
                  "handout": 0}
        if flight.group is not None and flight.group.done is not None:
            flight.group.first_seq = None
            flight.group.done.set()
        for op, done in flight.ops:
            op.result = failed.get(op.what)
            done.set()

    def _has_work(self) -> bool:
        return bool(self._groups or self._ops or self._overflow)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _tail(self) -> _Group:
        if not self._groups or len(self._groups[-1].rows) >= self.limits.max_group:
            self._groups.append(_Group())
        return self._groups[-1]

    async def _request(self, what: str, *args: Any) -> Any:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        op = Op(what, args)
        done = anyio.Event()
        self._ops.append((op, done))
        self._wake()
        await done.wait()
        return op.result


TEST_COMMIT_DELAY_ENV = "LINELIGHT_TEST_COMMIT_DELAY_S"
MAX_TEST_COMMIT_DELAY_S = 10.0


def commit_delay_for_tests() -> float:
    """Seconds every commit of the writer sleeps first: a slow disk, for tests only.

    `LINELIGHT_TEST_COMMIT_DELAY_S` (unset or 0 in production: no delay) lets a test of the
    agent as a subprocess make the window between a scan and its commit as wide as it needs
    (tests/integration/test_latch_restart.py). Bounded; a value that is no number is ignored."""
    raw = os.environ.get(TEST_COMMIT_DELAY_ENV, "")
    if not raw:
        return 0.0
    try:
        delay = float(raw)
    except ValueError:
        log.error("%s=%r is no number of seconds; ignored", TEST_COMMIT_DELAY_ENV, raw[:40])
        return 0.0
    if not 0.0 <= delay <= MAX_TEST_COMMIT_DELAY_S:  # also NaN
        log.error("%s=%r is not between 0 and %g s; ignored", TEST_COMMIT_DELAY_ENV, raw[:40],
                  MAX_TEST_COMMIT_DELAY_S)
        return 0.0
    log.warning("journal commits are delayed by %g s (%s, a test setting)", delay,
                TEST_COMMIT_DELAY_ENV)
    return delay


def _on_loop(func: Callable[[list[_Flight]], None], arg: list[_Flight]) -> None:
    """Run `func(arg)` on the event loop: directly if we are on it, else through anyio."""
    try:
        anyio.from_thread.run_sync(func, arg)
    except RuntimeError:  # on the loop thread already, or no loop at all any more
        with contextlib.suppress(RuntimeError):
            func(arg)


def _encode(event: Event) -> PendingRow:
    cls = schema.KIND_CLASS.get(event.kind)
    if cls is None:
        raise ValueError(f"unknown event kind '{event.kind}'; use one of "
                         f"{', '.join(schema.KIND_CLASS)}")
    body = encode_body(event.value, event.attrs)
    name = str(event.name)
    return PendingRow(cls, event.kind, name, int(event.ts_ns), body,
                      row_size(event.kind, name, body))


def _open_store(path: str, limits: JournalLimits, clock: Callable[[], int],
                lockfile: LockFile, boot: int | None = None) -> Store:
    """Salvage, migrate and open the database; JournalUnavailable while the disk says no."""
    try:
        resume_rebuild(path)
        conn, recovery = open_database(path)
        lockfile.relock_database()  # salvage may have put a new file in place
        try:
            if limits.max_file_bytes:
                page = int(conn.execute("PRAGMA page_size").fetchone()[0])
                pages = max(1, limits.max_file_bytes // page)
                conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()
            store = Store(conn, path, limits, clock, lockfile)
            _start_boot(store, recovery, boot)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:  # salvage handled damage; this is e.g. no space to rebuild
        if is_unavailable(exc):
            raise JournalUnavailable(f"journal {path} cannot be opened now: {exc}") from exc
        raise JournalError(f"journal {path} cannot be opened: {exc}") from exc
    return store


def _start_boot(store: Store, recovery: Recovery | None, boot: int | None = None) -> None:
    """boot += 1 (or the boot this run already announced) in the first transaction of this
    open (salvage already wrote its gap)."""
    current = store.counters[schema.BOOT]
    store.counters[schema.BOOT] = boot if boot is not None and boot >= current else current + 1
    store.apply(Batch())
    if recovery is not None:
        log.warning("journal %s was rebuilt: %d events salvaged, damaged file kept at %s",
                    store.path, recovery.salvaged, recovery.moved_to)
    if store.reasons:
        log.error("journal %s: could not record the new boot: %s", store.path,
                  "; ".join(store.reasons.values()))


