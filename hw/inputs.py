"""The input table: the latest Sample of every input, written by sources, read by the scan loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from linelight.rules.values import Sample

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
            return self._samples.get(name, Sample.init())

    def update(self, name: str, sample: Sample) -> None:
        """Store `sample` as the latest of `name`. Call from the event loop only."""
        with self._lock:
            differs = _differs(self._samples.get(name), sample)
            self._samples[name] = sample
        self._notify(differs)

    def update_many(self, samples: Mapping[str, Sample]) -> None:
        """Store several samples at once so a snapshot never sees half a Modbus block."""
        if not samples:
            return
        with self._lock:
            differs = any(_differs(self._samples.get(n), s) for n, s in samples.items())
            self._samples.update(samples)
        self._notify(differs)

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

    def declare(self, name: str) -> None:
        self.table.declare(self.prefix + name)

    def get(self, name: str) -> Sample:
        return self.table.get(self.prefix + name)

    def update(self, name: str, sample: Sample) -> None:
        self.table.update(self.prefix + name, sample)

    def update_many(self, samples: Mapping[str, Sample]) -> None:
        self.table.update_many({self.prefix + k: v for k, v in samples.items()})

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


def _differs(old: Sample | None, new: Sample) -> bool:
    return (old is None or old.quality is not new.quality or type(old.value) is not type(new.value)
            or old.value != new.value)
