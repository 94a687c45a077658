"""The input table: the latest Sample of every input, written by sources, read by the scan loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Protocol, cast

import anyio

from linelight.rules.values import Quality, Sample, Value

log = logging.getLogger(__name__)

Updater = Callable[[str, Sample], None]



@dataclass(slots=True)
class PollCounters:
    """What a polling source (Modbus, S7) counts for its `status()`."""

    polls: int = 0
    samples: int = 0
    blocks: int = 0
    last_error: str = ""


class Source(Protocol):
    """Anything that delivers inputs: hw.modbus.ModbusSource, hw.gpio_zero.GpioZeroSource,
    hw.gpio_chip.GpioChipSource, hw.sim.SimSource. `run` declares its inputs (INIT), calls
    `task_status.started()` once running, then keeps the table current until cancelled,
    reconnecting by itself and marking inputs STALE or BAD with a reason."""

    name: str

    def input_names(self) -> list[str]: ...

    def status(self) -> dict[str, object]: ...

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = ...) -> None: ...


class InputTable:
    """Latest sample per input name.

    `update` is called from the event loop (Modbus poller, sim). GPIO libraries call back from
    their own threads; those use the function returned by `threadsafe_updater()`, which hands the
    sample to the event loop with `call_soon_threadsafe` (non-blocking, so a gpiozero thread never
    waits on the loop and closing a device can never deadlock against a pending hand-off).
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._samples: dict[str, Sample] = {}
        self._lock = threading.Lock()
        self._updates = _Waitable()  # every update
        self._value_changes = _Waitable()  # updates whose value or quality differed
        # For `refresh_good`: per block of names, the count of writes after `update_good`
        # stored it (no other write since: its samples are still the table's), those samples
        # and the values they were made of; and the refreshes not yet made into Samples.
        self._writes = 0
        self._good: dict[tuple[str, ...], tuple[int, list[Sample], Sequence[Value]]] = {}
        self._fresh: dict[tuple[str, ...], tuple[float, int]] = {}
        for name in names:
            self.declare(name)

    def declare(self, name: str) -> None:
        """Make `name` known with an INIT sample (the scan loop sees it as not yet read)."""
        with self._lock:
            self._samples.setdefault(name, Sample.init())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._samples)

    def get(self, name: str) -> Sample:
        with self._lock:
            if self._fresh:
                self._apply_fresh()
            return self._samples.get(name, Sample.init())

    def update(self, name: str, sample: Sample) -> None:
        """Store `sample` as the latest of `name`. Call from the event loop only."""
        with self._lock:
            if self._fresh:
                self._apply_fresh()
            differs = _differs(self._samples.get(name), sample)
            self._samples[name] = sample
            self._writes += 1
        self._notify(differs)

    def update_many(self, samples: Mapping[str, Sample]) -> None:
        """Store several samples at once so a snapshot never sees half a Modbus block."""
        if not samples:
            return
        with self._lock:
            if self._fresh:
                self._apply_fresh()
            differs = any(_differs(self._samples.get(n), s) for n, s in samples.items())
            self._samples.update(samples)
            self._writes += 1
        self._notify(differs)

    def update_good(self, names: tuple[str, ...], values: Sequence[Value], at: float,
                    wall_ns: int) -> None:
        """Store a GOOD sample of `values[i]` for `names[i]`, all at once: what `update_many`
        does with those samples (one lock, one wake-up, a value change only if some input's
        value, its type or its quality differs), without a Python-level step per input, for
        a poller's block (Modbus, S7) read hundreds of times a second."""
        if len(names) != len(values):
            raise ValueError(f"{len(names)} input names for {len(values)} values")
        if not names:
            return
        with self._lock:
            if self._fresh:
                self._apply_fresh()
            differs = self._store_good(names, values, at, wall_ns)
        self._notify(differs)

    def refresh_good(self, names: tuple[str, ...], values: Sequence[Value], at: float,
                     wall_ns: int) -> None:
        """`update_good(names, values, at, wall_ns)` for inputs read again unchanged: when
        `values` is the very sequence (unmodified) the last `update_good` or `refresh_good` of
        `names` was given, and no other write touched the table since, it takes constant
        time, and the new Samples are made when the table is next read (once, however many
        refreshes came before). Otherwise it is `update_good`."""
        if len(names) != len(values):
            raise ValueError(f"{len(names)} input names for {len(values)} values")
        with self._lock:
            record = self._good.get(names)
            if record is not None and record[2] is values and (record[0] == self._writes or list(
                    map(self._samples.get, names, repeat(_ABSENT))) == record[1]):
                self._good[names] = (self._writes, record[1], values)
                self._fresh[names] = (at, wall_ns)
                differs = False
            else:  # another block's values, or written since (marked STALE or BAD, ...)
                if self._fresh:
                    self._apply_fresh()
                differs = self._store_good(names, values, at, wall_ns)
        self._notify(differs)

    def _store_good(self, names: tuple[str, ...], values: Sequence[Value], at: float,
                    wall_ns: int) -> bool:
        """Under the lock, no refresh pending: store; whether a value or quality differs."""
        new = _good_samples(values, at, wall_ns)
        old = list(map(self._samples.get, names, repeat(_ABSENT)))
        self._samples.update(zip(names, new, strict=True))
        self._writes += 1
        self._good[names] = (self._writes, new, values)
        old_values = list(map(_VALUE, old))
        return (list(map(_QUALITY, old)).count(Quality.GOOD) != len(old)
                or list(map(type, old_values)) != list(map(type, values))
                or old_values != list(values))

    def _apply_fresh(self) -> None:
        """Under the lock: make the pending refreshes' Samples (before any read or write)."""
        self._writes += 1
        for names, (at, wall_ns) in self._fresh.items():
            values = self._good[names][2]
            new = _good_samples(values, at, wall_ns)
            self._samples.update(zip(names, new, strict=True))
            self._good[names] = (self._writes, new, values)
        self._fresh.clear()

    def threadsafe_updater(self) -> Updater:
        """Called in the event loop: a function any thread may call to update an input."""
        loop = asyncio.get_running_loop()

        def update_from_thread(name: str, sample: Sample) -> None:
            try:
                loop.call_soon_threadsafe(self.update, name, sample)
            except RuntimeError:  # the loop has closed: the agent is shutting down
                log.debug("input %s changed after shutdown; sample not stored", name)

        return update_from_thread

    def snapshot(self) -> dict[str, Sample]:
        """A consistent copy of every input's latest sample."""
        with self._lock:
            if self._fresh:
                self._apply_fresh()
            return dict(self._samples)

    @property
    def version(self) -> int:
        """Increases on every update; lets waiters tell whether anything changed."""
        return self._updates.count

    async def wait_changed(self, after_version: int) -> int:
        """Return the version once it is beyond `after_version` (no polling)."""
        return await self._updates.wait_beyond(after_version)

    @property
    def value_changes(self) -> int:
        """Increases when an update changes an input's value or quality (a poll that reads
        the same values again does not count); the scan loop wakes on it."""
        return self._value_changes.count

    async def wait_value_change(self, after: int) -> int:
        """Return `value_changes` once it is beyond `after` (no polling)."""
        return await self._value_changes.wait_beyond(after)

    def _notify(self, differs: bool) -> None:
        self._updates.bump()
        if differs:
            self._value_changes.bump()

    def scoped(self, prefix: str) -> ScopedInputs:
        """This table as a source of one machine sees it: its input `x` is stored as
        `{prefix}x`, so two machines' sources may deliver inputs of the same name."""
        return ScopedInputs(self, prefix)


class ScopedInputs:
    """The part of an InputTable under one key prefix, with the table's writing interface."""

    def __init__(self, table: InputTable, prefix: str) -> None:
        self.table = table
        self.prefix = prefix
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}

    def declare(self, name: str) -> None:
        self.table.declare(self.prefix + name)

    def get(self, name: str) -> Sample:
        return self.table.get(self.prefix + name)

    def update(self, name: str, sample: Sample) -> None:
        self.table.update(self.prefix + name, sample)

    def update_many(self, samples: Mapping[str, Sample]) -> None:
        self.table.update_many({self.prefix + k: v for k, v in samples.items()})

    def update_good(self, names: tuple[str, ...], values: Sequence[Value], at: float,
                    wall_ns: int) -> None:
        self.table.update_good(self._scoped(names), values, at, wall_ns)

    def refresh_good(self, names: tuple[str, ...], values: Sequence[Value], at: float,
                     wall_ns: int) -> None:
        self.table.refresh_good(self._scoped(names), values, at, wall_ns)

    def _scoped(self, names: tuple[str, ...]) -> tuple[str, ...]:
        # a poller's blocks are the same tuples every poll: prefix each once
        scoped = self._names.get(names)
        if scoped is None:
            scoped = self._names[names] = tuple(self.prefix + n for n in names)
        return scoped

    def threadsafe_updater(self) -> Updater:
        inner = self.table.threadsafe_updater()
        prefix = self.prefix

        def update_from_thread(name: str, sample: Sample) -> None:
            inner(prefix + name, sample)

        return update_from_thread



class _Waitable:
    """A counter that tasks of the event loop can wait on to pass a value."""

    def __init__(self) -> None:
        self.count = 0
        self._event: anyio.Event | None = None

    def bump(self) -> None:
        self.count += 1
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait_beyond(self, after: int) -> int:
        while self.count <= after:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        return self.count


# an input the table does not know: its quality (None) differs from every sample's
_ABSENT = Sample(None, None, 0.0)  # type: ignore[arg-type]
_VALUE, _QUALITY = itemgetter(0), itemgetter(1)  # Sample.value, Sample.quality, in C


def _good_samples(values: Iterable[Value], at: float, wall_ns: int) -> list[Sample]:
    """GOOD Samples of `values`, made in C (Sample is a named tuple)."""
    fields = zip(values, repeat(Quality.GOOD), repeat(at), repeat(wall_ns), repeat(""))
    return cast("list[Sample]", list(map(tuple.__new__, repeat(Sample), fields)))


def _differs(old: Sample | None, new: Sample) -> bool:
    return (old is None or old.quality is not new.quality or type(old.value) is not type(new.value)
            or old.value != new.value)
