"""GPIO on Raspberry Pi based IPCs through gpiozero: digital inputs with debounce, and outputs.

gpiozero calls back from its own threads; edges are handed to the event loop with
`InputTable.threadsafe_updater`-style `call_soon_threadsafe` and debounced there, so the result
does not depend on which pin factory (lgpio, rpigpio, mock, ...) implements `bounce_time`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from gpiozero import DigitalOutputDevice, GPIOZeroError, InputDevice

from linelight.hw.config import GpioInputSpec, GpioZeroSourceSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality, Sample

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def make_pin_factory(name: str | None) -> Any:
    """The gpiozero pin factory called `name` (lgpio, rpigpio, pigpio, native, mock), or None
    for gpiozero's own choice (GPIOZERO_PIN_FACTORY or its default order)."""
    if name is None:
        return None
    for ep in importlib.metadata.entry_points(group="gpiozero_pin_factories"):
        if ep.name == name:
            try:
                return ep.load()()
            except (GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
                raise DeviceError(f"gpiozero pin factory '{name}' cannot start: {exc}") from exc
    raise DeviceError(f"gpiozero has no pin factory '{name}'")


class Debouncer:
    """Accepts a new level only once the line has held it for `period` seconds (pure; clock in)."""

    def __init__(self, period: float, level: bool, now: float) -> None:
        self.period = period
        self.level = level  # the accepted level
        self.since = now
        self._pending: tuple[bool, float] | None = None

    def edge(self, level: bool, now: float) -> bool | None:
        """Record a raw edge; returns the new accepted level at once when period is 0."""
        if self.period <= 0:
            if level != self.level:
                self.level, self.since = level, now
                return level
            return None
        if level == self.level:
            self._pending = None  # bounced back before settling
        else:
            self._pending = (level, now)
        return None

    def deadline(self) -> float:
        return self._pending[1] + self.period if self._pending else math.inf

    def settle(self, now: float) -> bool | None:
        """The newly accepted level if a pending one has held long enough, else None."""
        if self._pending is not None and now >= self.deadline():
            self.level, self.since = self._pending[0], self._pending[1]
            self._pending = None
            return self.level
        return None


@dataclass(slots=True)
class _Line:
    spec: GpioInputSpec
    device: Any
    debouncer: Debouncer


class GpioZeroSource:
    """Digital inputs on gpiozero pins. Values are logical (`active_low` already applied)."""

    def __init__(self, spec: GpioZeroSourceSpec, *, pin_factory: Any = None,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self._factory = pin_factory
        self._clock = clock
        self.edges = 0

    def input_names(self) -> list[str]:
        return [i.name for i in self.spec.inputs]

    def status(self) -> dict[str, object]:
        return {"type": "gpiozero", "edges": self.edges,
                "pins": {i.name: i.pin for i in self.spec.inputs}}

    def _open(self, spec: GpioInputSpec) -> Any:
        pull_up = {"up": True, "down": False, "none": None}[spec.bias if spec.bias in
                                                              ("up", "down", "none") else "none"]
        try:
            # active_state is only accepted without a pull; we apply active_low ourselves
            # from the raw level, so the meaning never depends on the pull setting.
            kwargs: dict[str, Any] = {"pull_up": pull_up, "pin_factory": self._factory}
            if pull_up is None:
                kwargs["active_state"] = True
            return InputDevice(spec.pin, **kwargs)
        except (GPIOZeroError, ValueError, OSError, RuntimeError) as exc:
            raise DeviceError(f"gpiozero source '{self.name}' cannot open pin {spec.pin} "
                              f"for input '{spec.name}': {exc}") from exc

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for name in self.input_names():
            table.declare(name)
        loop = asyncio.get_running_loop()
        wake = anyio.Event()
        raw_edges: list[tuple[int, bool, float]] = []
        lines: list[_Line] = []
        # gpiozero keeps only a weak reference to when_changed callbacks: hold them here.
        callbacks: list[Callable[[Any, Any], None]] = []

        def on_edge(index: int, state: Any) -> None:  # event loop side
            raw_edges.append((index, bool(state), self._clock()))
            wake.set()

        def from_thread(index: int) -> Callable[[Any, Any], None]:
            def callback(_ticks: Any, state: Any) -> None:  # gpiozero's thread
                try:
                    loop.call_soon_threadsafe(on_edge, index, state)
                except RuntimeError:
                    log.debug("edge on %s after the event loop closed", self.name)
            return callback

        try:
            now = self._clock()
            for index, spec in enumerate(self.spec.inputs):
                device = self._open(spec)
                level = bool(device.pin.state)
                lines.append(_Line(spec, device, Debouncer(spec.debounce, level, now)))
                table.update(spec.name, self._sample(spec, level))
                device.pin.edges = "both"
                callbacks.append(from_thread(index))
                device.pin.when_changed = callbacks[-1]
            task_status.started()
            while True:
                for index, level, at in raw_edges:
                    self.edges += 1
                    line = lines[index]
                    accepted = line.debouncer.edge(level, at)
                    if accepted is not None:
                        table.update(line.spec.name, self._sample(line.spec, accepted))
                raw_edges.clear()
                now = self._clock()
                for line in lines:
                    settled = line.debouncer.settle(now)
                    if settled is not None:
                        table.update(line.spec.name, self._sample(line.spec, settled))
                deadline = min((ln.debouncer.deadline() for ln in lines), default=math.inf)
                wake = anyio.Event()
                with anyio.move_on_after(min(deadline - self._clock(), 3600.0)):
                    await wake.wait()
        finally:
            for line in lines:
                line.device.pin.when_changed = None
                line.device.close()

    def _sample(self, spec: GpioInputSpec, level: bool) -> Sample:
        value = level != spec.active_low
        return Sample(value, Quality.GOOD, self._clock(), time.time_ns())


class GpioZeroOutput:
    """A lamp on a gpiozero pin."""

    def __init__(self, pin: int | str, *, active_low: bool = False, pin_factory: Any = None) -> None:
        self.name = f"gpiozero pin {pin}"
        try:
            self.device = DigitalOutputDevice(pin, active_high=not active_low, initial_value=False,
                                              pin_factory=pin_factory)
        except (GPIOZeroError, ValueError, OSError, RuntimeError) as exc:
            raise DeviceError(f"cannot open gpiozero pin {pin} as an output: {exc}") from exc

    async def write(self, value: bool) -> None:
        try:
            if value:
                self.device.on()
            else:
                self.device.off()
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            raise DeviceError(f"cannot set {self.name} {'on' if value else 'off'}: {exc}") from exc

    def close(self) -> None:
        self.device.close()
