"""Outputs: the one-method interface every lamp driver implements, and a virtual output."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Output(Protocol):
    """One digital output. `write` raises rules.errors.DeviceError when the device refuses or
    cannot be reached. Implementations: hw.gpio_zero.GpioZeroOutput,
    hw.gpio_chip.GpioChipOutput, hw.modbus.ModbusCoilOutput / ModbusRegisterOutput,
    VirtualOutput."""

    name: str

    async def write(self, value: bool) -> None: ...


class VirtualOutput:
    """A lamp with no hardware (`virtual = true`): remembers its level and when it was set, for
    the demo's on-screen tower and for benchmarks."""

    def __init__(self, name: str = "virtual", *, clock: Callable[[], float] = time.monotonic,
                 keep: int = 1000) -> None:
        self.name = name
        self.level: bool | None = None
        self.changes: list[tuple[float, bool]] = []  # (clock time, level) of each change
        self.writes = 0
        self._clock = clock
        self._keep = keep

    async def write(self, value: bool) -> None:
        self.writes += 1
        if value != self.level:
            self.level = bool(value)
            self.changes.append((self._clock(), self.level))
            del self.changes[: -self._keep]
