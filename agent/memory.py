"""What the rules remember across restarts: counter totals, latches and rolling windows, in
the journal's meta.

A latched fault (a state or signal whose `clear_when` has not been met) is something a person
must act on; a restart, a kill -9, a watchdog restart or an upgrade must not acknowledge it.
So the scan loop reports every change of the latched set and of counter totals here, and
`run()` stores them with `Journal.put_meta` (coalesced: only the newest value is written, in
the next journal commit; the latches before anything else). A scan that latches something new
holds its lamps until `latches_saved()` says that latched set is committed (agent.scan,
"lamp hold"); every other change is stored without anybody waiting. At start, `restore()`
seeds the evaluator before its first scan.

Each named machine (agent.machines) keeps its own totals and latches, under
`counter_totals/NAME`, `latches/NAME` and `windows/NAME`; the unnamed single machine keeps the plain keys, so
an agent upgraded to machines carries on what it stored before.

A latch is stored with the wall-clock time it began (`since_ns`), a rolling window's entries
with the wall-clock time of each edge: scan time is monotonic and does not survive a restart,
and the time the agent was down must count towards a window. What survives what is in docs/rule-language.md ("What survives a
restart").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import anyio

from linelight.rules.evaluator import Latch, WindowMemory
from linelight.rules.windows import MAX_ENTRIES

log = logging.getLogger(__name__)

COUNTERS_META = "counter_totals"
LATCHES_META = "latches"
WINDOWS_META = "windows"
MAX_WINDOWS = 10_000  # likewise: 20,000 operations per scan cannot hold more windows
# Rolling windows are stored at most this often: 50 busy windows hold tens of thousands of
# entries (bench/rules.py), too many to encode at every edge. A crash can lose the edges of
# the last second, which moves a "3 within 10 minutes" count by at most the edges of a second.
WINDOW_STORE_EVERY_S = 1.0
STORE_RETRY_S = 1.0  # after the journal refused the latches (disk full, file not open)
MAX_LATCHES = 10_000  # a stored list longer than any rule set could make is damage, not data


class MetaStore(Protocol):
    def get_meta(self, key: str, default: Any = None) -> Any: ...
    async def put_meta(self, key: str, value: Any) -> bool: ...


class Remembering(Protocol):
    """The evaluator's side (linelight.rules.evaluator.Evaluator)."""

    def restore_counters(self, totals: Mapping[str, int]) -> None: ...
    def restore_latches(self, latches: Iterable[Latch]) -> int: ...
    def restore_windows(self, memories: Iterable[WindowMemory]) -> int: ...


class RuleMemory:
    """Counter totals and latches between the scan loop and the journal's meta table."""

    def __init__(self, store: MetaStore, *, now_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic,
                 machine: str | None = None) -> None:
        self._store = store
        scope = f"/{machine}" if machine is not None else ""
        self._counters_key = COUNTERS_META + scope
        self._latches_key = LATCHES_META + scope
        self._windows_key = WINDOWS_META + scope
        self._now_ns = now_ns
        self._mono = monotonic
        self._values: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._changed: anyio.Event | None = None
        self._windows: Callable[[], Iterable[WindowMemory]] | None = None
        self._windows_stored = -math.inf
        # the latched set's generations: every change is one more; `_latches_done` is the
        # newest whose store has finished, `_latches_ok` whether the disk took it
        self._latches_gen = 0
        self._latches_done = 0
        self._latches_ok = True
        self._latches_stored: anyio.Event | None = None
        self._refused = False  # the last store of the latches was refused

    # -- start ------------------------------------------------------------------------------
    def restore(self, evaluator: Remembering) -> tuple[str, ...]:
        """Seed `evaluator` with what the last run stored; returns the latches restored."""
        totals = self._store.get_meta(self._counters_key, {}) or {}
        if isinstance(totals, dict):
            clean = {str(k): int(v) for k, v in totals.items()
                     if isinstance(v, int) and not isinstance(v, bool)}
            evaluator.restore_counters(clean)
            self._values[self._counters_key] = clean
        stored = self._store.get_meta(self._latches_key, []) or []
        latches = self._decode_latches(stored)
        self._values[self._latches_key] = stored
        restored = evaluator.restore_latches(latches)
        names = tuple(f"{latch.kind} '{latch.name}'" for latch in latches)
        if restored:
            log.warning("restored %d latch%s from the last run (still to be cleared): %s",
                        restored, "" if restored == 1 else "es", ", ".join(names))
        if restored < len(latches):
            log.warning("%d stored latch%s no longer match the rules (changed or removed) and "
                        "start released", len(latches) - restored,
                        "" if len(latches) - restored == 1 else "es")
        stored_windows = self._store.get_meta(self._windows_key, {}) or {}
        windows = self._decode_windows(stored_windows)
        if windows:
            self._values[self._windows_key] = stored_windows
            evaluator.restore_windows(windows)
        return names if restored else ()

    def _decode_windows(self, stored: Any) -> list[WindowMemory]:
        if not isinstance(stored, dict) or len(stored) > MAX_WINDOWS:
            log.error("journal meta '%s' is not a table of rolling windows; ignoring it",
                      self._windows_key)
            return []
        now_ns, mono = self._now_ns(), self._mono()
        out: list[WindowMemory] = []
        for key, items in stored.items():
            try:
                entries = tuple((mono - max(0.0, (now_ns - int(at_ns)) / 1e9), int(amount))
                                for at_ns, amount in list(items)[-MAX_ENTRIES:])
            except (TypeError, ValueError, OverflowError):
                log.error("journal meta '%s' holds an unreadable window %r; it starts empty",
                          self._windows_key, str(key)[:80])
                continue
            out.append(WindowMemory(str(key), entries))
        return out

    def _decode_latches(self, stored: Any) -> list[Latch]:
        if not isinstance(stored, list) or len(stored) > MAX_LATCHES:
            log.error("journal meta '%s' is not a list of latches; ignoring it",
                      self._latches_key)
            return []
        now_ns, mono = self._now_ns(), self._mono()
        out: list[Latch] = []
        for item in stored:
            try:
                kind, name, key = str(item["kind"]), str(item["name"]), str(item["key"])
                age = max(0.0, (now_ns - int(item["since_ns"])) / 1e9)
            except (KeyError, TypeError, ValueError, OverflowError):
                log.error("journal meta '%s' holds an unreadable latch %r; ignoring it",
                          self._latches_key, item)
                continue
            out.append(Latch(kind, name, key, mono - age))
        return out

    # -- from the scan loop (event-loop thread, never blocks) --------------------------------
    def counters_changed(self, totals: Mapping[str, int]) -> None:
        self._set(self._counters_key, dict(totals))

    def latches_changed(self, latches: Iterable[Latch]) -> int:
        """The latched set is now `latches`; returns its generation, for `latches_saved`."""
        now_ns, mono = self._now_ns(), self._mono()
        self._latches_gen += 1
        self._set(self._latches_key, [
            {"kind": latch.kind, "name": latch.name, "key": latch.key,
             "since_ns": now_ns - int((mono - latch.since) * 1e9)}
            for latch in latches])
        return self._latches_gen

    async def latches_saved(self, generation: int) -> bool:
        """Wait until the latched set of `generation` (or a newer one) has been stored: True
        once it is committed, False as soon as the journal refused it (disk full, journal not
        open), so the caller need not wait out its bound for a store that will not come."""
        while self._latches_done < generation:
            if self._latches_stored is None:
                self._latches_stored = anyio.Event()
            await self._latches_stored.wait()
        return self._latches_ok

    def windows_changed(self, windows: Callable[[], Iterable[WindowMemory]]) -> None:
        """The windows took an edge; `windows()` gives them when they are stored (at most
        every WINDOW_STORE_EVERY_S, off the scan's time)."""
        pending, self._windows = self._windows, windows
        if pending is None and self._changed is not None:
            self._changed.set()  # `run` wakes once, then sleeps until the windows are due

    def _windows_due(self) -> float:
        """Seconds until the pending windows may be stored (inf: none pending)."""
        if self._windows is None:
            return math.inf
        return max(0.0, self._windows_stored + WINDOW_STORE_EVERY_S - self._mono())

    def _take_windows(self) -> None:
        windows, self._windows = self._windows, None
        if windows is None:
            return
        self._windows_stored = self._mono()
        now_ns, mono = self._now_ns(), self._mono()
        self._values[self._windows_key] = {
            w.key: [[now_ns - int((mono - at) * 1e9), amount] for at, amount in w.entries]
            for w in windows()}
        self._dirty.add(self._windows_key)

    def _set(self, key: str, value: Any) -> None:
        self._values[key] = value
        self._dirty.add(key)
        if self._changed is not None:
            self._changed.set()

    # -- storing -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Store every change as soon as it comes (coalesced while a write is under way)."""
        while True:
            self._changed = anyio.Event()
            if not self._dirty and self._windows_due() > 0:
                with anyio.move_on_after(self._windows_due()):
                    await self._changed.wait()
            if self._windows_due() <= 0:
                self._take_windows()
            if not await self._store_dirty():  # refused: again at the next change, or soon
                with anyio.move_on_after(STORE_RETRY_S):
                    await self._changed.wait()

    async def flush(self) -> None:
        """Store what changed since the last store (also called on a planned stop)."""
        self._take_windows()
        await self._store_dirty()

    async def _store_dirty(self) -> bool:
        """Store what is dirty; False if the journal refused the latches (they stay dirty)."""
        while self._dirty:
            # the latches first: a scan's lamps may be waiting for them
            key = (self._latches_key if self._latches_key in self._dirty
                   else next(iter(self._dirty)))
            self._dirty.discard(key)
            generation = self._latches_gen
            ok = await self._store.put_meta(key, self._values[key])
            if key != self._latches_key:
                continue
            self._latches_done, self._latches_ok = generation, ok
            if self._latches_stored is not None:
                self._latches_stored.set()
                self._latches_stored = None
            if ok and self._refused:
                self._refused = False
                log.warning("the latched set is stored again")
            if not ok:
                count = len(self._values[key])
                if not self._refused:  # once per outage, not every retry
                    self._refused = True
                    log.error("the journal refused the latched set (%d latch%s): a restart "
                              "now would lose it; storing it again every %g s and at every "
                              "change", count, "" if count == 1 else "es", STORE_RETRY_S)
                self._dirty.add(key)
                return False
        return True
