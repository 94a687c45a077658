"""The input table: the latest Sample of every input, written by sources, read by the scan loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
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
        # The blocks `update_good` stored, by their tuple of names (no two share a name: a
        # block taking a name another held forgets that one); those whose Samples are yet to
        # be made; and a count of the other writes, which may have replaced a block's Samples.
        self._blocks: dict[tuple[str, ...], _Block] = {}
        self._owner: dict[str, tuple[str, ...]] = {}
        self._unmade: dict[tuple[str, ...], _Block] = {}
        self._writes = 0
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
            if self._unmade:
                self._make_samples()
            return self._samples.get(name, Sample.init())

    def update(self, name: str, sample: Sample) -> None:
        """Store `sample` as the latest of `name`. Call from the event loop only."""
        with self._lock:
            if self._unmade:
                self._make_samples()
            differs = _differs(self._samples.get(name), sample)
            self._samples[name] = sample
            self._writes += 1
        self._notify(differs)

    def update_many(self, samples: Mapping[str, Sample]) -> None:
        """Store several samples at once so a snapshot never sees half a Modbus block."""
        if not samples:
            return
        with self._lock:
            if self._unmade:
                self._make_samples()
            differs = any(_differs(self._samples.get(n), s) for n, s in samples.items())
            self._samples.update(samples)
            self._writes += 1
        self._notify(differs)

    def update_good(self, names: tuple[str, ...], values: tuple[Value, ...], at: float,
                    wall_ns: int) -> None:
        """Store a GOOD sample of `values[i]` for `names[i]` (a poller's block: Modbus, S7):
        what `update_many` does with those samples (one lock, one wake-up, a value change
        only if some input's value, its type or its quality differs), without a Python step
        per input while the block is the table's last write to those inputs: `values` is
        compared with the block's last values in C (not at all when it is the same tuple, as
        a poller passes for bytes read again unchanged), and the Samples are made when the
        table is next read, once however many updates came before."""
        if len(names) != len(values):
            raise ValueError(f"{len(names)} input names for {len(values)} values")
        if not names:
            return
        with self._lock:
            block = self._blocks.get(names)
            if block is not None and (block.writes == self._writes or block.samples is None
                                      or list(map(self._samples.get, names, repeat(_ABSENT)))
                                      == block.samples):
                old = block.values
                differs = old is not values and (
                    old != values or list(map(type, old)) != list(map(type, values)))
                block.set(values, at, wall_ns, self._writes)
                self._unmade[names] = block
            else:  # new, or written since (marked STALE or BAD): store and compare each
                differs = self._store_block(names, values, at, wall_ns, block is None)
        self._notify(differs)

    def _store_block(self, names: tuple[str, ...], values: tuple[Value, ...], at: float,
                     wall_ns: int, new_block: bool) -> bool:
        """Under the lock: store at once; whether a value or quality differs."""
        if self._unmade:
            self._make_samples()
        if new_block:
            for name in names:
                other = self._owner.get(name)
                if other is not None and other != names:
                    self._blocks.pop(other, None)
                self._owner[name] = names
        new = _good_samples(values, at, wall_ns)
        old = list(map(self._samples.get, names, repeat(_ABSENT)))
        self._samples.update(zip(names, new, strict=True))
        self._writes += 1
        block = self._blocks[names] = _Block()
        block.set(values, at, wall_ns, self._writes)
        block.samples = new
        old_values = list(map(_VALUE, old))
        return (list(map(_QUALITY, old)).count(Quality.GOOD) != len(old)
                or list(map(type, old_values)) != list(map(type, values))
                or old_values != list(values))

    def _make_samples(self) -> None:
        """Under the lock: the Samples of the blocks updated since the table was last read
        (before any read or other write; blocks share no name, so the order does not matter)."""
        for names, block in self._unmade.items():
            block.samples = _good_samples(block.values, block.at, block.wall_ns)
            self._samples.update(zip(names, block.samples, strict=True))
        self._unmade.clear()

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
            if self._unmade:
                self._make_samples()
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

    def update_good(self, names: tuple[str, ...], values: tuple[Value, ...], at: float,
                    wall_ns: int) -> None:
        self.table.update_good(self._scoped(names), values, at, wall_ns)

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



class _Block:
    """One block of `InputTable.update_good`: its last values, when, and their Samples once
    made; `writes`: the table's count of other writes when they were last known stored."""

    __slots__ = ("at", "samples", "values", "wall_ns", "writes")

    def __init__(self) -> None:
        self.samples: list[Sample] | None = None

    def set(self, values: tuple[Value, ...], at: float, wall_ns: int, writes: int) -> None:
        self.values, self.at, self.wall_ns, self.writes = values, at, wall_ns, writes
        self.samples = None


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
