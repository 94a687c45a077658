"""The simulator source: waveforms, scripted sequences and a machine model, for demos and tests.

The machine model cycles producing -> microstop -> producing -> fault -> idle and delivers the
plain inputs the demo rules use: running, fault_code, estop_ok, part_seen, door_closed,
spindle_rpm. Tests and the demo steer it with `set_mode`, `force`, `release` and `script`.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from linelight.hw.config import (
    MACHINE_INPUTS,
    MACHINE_MODES,
    MachineSpec,
    SimInputSpec,
    SimSourceSpec,
)
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality, Sample, Value

Clock = Callable[[], float]

# The automatic cycle: phase name and which MachineSpec field gives its length.
CYCLE: tuple[str, ...] = ("producing", "microstop", "producing", "fault", "idle")


@dataclass(slots=True)
class _Script:
    steps: tuple[tuple[Value, float], ...]
    start: float
    repeat: bool

    def value_at(self, now: float) -> Value:
        total = sum(hold for _, hold in self.steps)
        t = now - self.start
        if self.repeat and total > 0:
            t %= total
        for value, hold in self.steps:
            if t < hold:
                return value
            t -= hold
        return self.steps[-1][0]

    def done(self, now: float) -> bool:
        return not self.repeat and now - self.start >= sum(h for _, h in self.steps)


class Machine:
    """A machine that makes parts, stops briefly, faults and idles. Pure: time is passed in."""

    def __init__(self, spec: MachineSpec, start: float, rng: random.Random) -> None:
        self.spec = spec
        self.start = start
        self.rng = rng
        self.mode: str | None = None  # a mode pinned by set_mode, or None for the cycle
        self.mode_since = start

    def set_mode(self, mode: str | None, now: float) -> None:
        if mode is not None and mode not in MACHINE_MODES:
            raise ValueError(f"unknown machine mode '{mode}'; use one of "
                             f"{', '.join(MACHINE_MODES)} or 'auto'")
        self.mode = mode
        self.mode_since = now

    def phase_at(self, now: float) -> tuple[str, float]:
        """The current phase and the seconds spent in it."""
        if self.mode is not None:
            return self.mode, now - self.mode_since
        lengths = [getattr(self.spec, phase) for phase in CYCLE]
        t = (now - self.start) % sum(lengths)
        for phase, length in zip(CYCLE, lengths, strict=True):
            if t < length:
                return phase, t
            t -= length
        return CYCLE[-1], 0.0  # pragma: no cover - floating point edge

    def values_at(self, now: float) -> dict[str, Value]:
        phase, t = self.phase_at(now)
        producing = phase == "producing"
        pulse = min(self.spec.cycle / 4, 0.3)
        if producing:
            rpm = self.spec.rpm * (1.0 + 0.01 * self.rng.uniform(-1.0, 1.0))
        else:  # the spindle runs down over one second
            rpm = self.spec.rpm * max(0.0, 1.0 - t) if t < 1.0 else 0.0
        return {
            "running": producing,
            "fault_code": self.spec.fault_code if phase == "fault" else 0,
            "estop_ok": True,
            "part_seen": producing and (t % self.spec.cycle) >= self.spec.cycle - pulse,
            "door_closed": phase != "idle",
            "spindle_rpm": round(rpm, 1),
        }


class SimSource:
    """Simulated inputs, recomputed every `period` and written to the input table."""

    def __init__(self, spec: SimSourceSpec, *, clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self._clock = clock
        self._start = clock()
        self._rng = random.Random(spec.seed)
        self.machine = (Machine(spec.machine, self._start, self._rng)
                        if spec.machine is not None else None)
        self._walk: dict[str, float] = {i.name: i.start for i in spec.inputs
                                        if i.wave == "random_walk"}
        self._forced: dict[str, Value] = {}
        self._scripts: dict[str, _Script] = {}
        self._table: InputTable | None = None
        self.ticks = 0

    # -- commands from the demo and tests ----------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Pin the machine model to a phase (producing, microstop, fault, idle) or 'auto'."""
        if self.machine is None:
            raise ValueError(f"sim source '{self.name}' has no machine model")
        self.machine.set_mode(None if mode == "auto" else mode, self._clock())
        self._publish()

    def force(self, name: str, value: Value) -> None:
        """Hold input `name` at `value` until `release(name)`; applied at once."""
        self._forced[name] = value
        self._publish()

    def release(self, name: str) -> None:
        self._forced.pop(name, None)
        self._scripts.pop(name, None)
        self._publish()

    def script(self, name: str, steps: Sequence[tuple[Value, float]], *,
               repeat: bool = False) -> None:
        """Play `(value, hold_seconds)` steps on input `name` from now; the last value stays."""
        if not steps:
            raise ValueError("a script needs at least one (value, hold) step")
        self._scripts[name] = _Script(tuple(steps), self._clock(), repeat)
        self._publish()

    def input_names(self) -> list[str]:
        names = list(MACHINE_INPUTS) if self.machine is not None else []
        names += [i.name for i in self.spec.inputs]
        return names + [n for n in (*self._scripts, *self._forced) if n not in names]

    def status(self) -> dict[str, object]:
        mode = None
        if self.machine is not None:
            mode = self.machine.mode or f"auto ({self.machine.phase_at(self._clock())[0]})"
        return {"type": "sim", "ticks": self.ticks, "machine": mode,
                "forced": {k: v for k, v in self._forced.items()}, "scripts": list(self._scripts)}

    # -- values ------------------------------------------------------------------------------
    def values_at(self, now: float) -> dict[str, Value]:
        values: dict[str, Value] = {}
        if self.machine is not None:
            values.update(self.machine.values_at(now))
        for spec in self.spec.inputs:
            values[spec.name] = self._wave(spec, now)
        for name, script in self._scripts.items():
            values[name] = script.value_at(now)
        values.update(self._forced)
        return values

    def _wave(self, spec: SimInputSpec, now: float) -> Value:
        t = now - self._start
        if spec.wave in ("script", "constant"):
            return _Script(spec.steps, self._start, spec.repeat).value_at(now)
        if spec.wave == "square":
            high = (t % spec.period) / spec.period < spec.duty
            return _typed(spec, high, spec.high if high else spec.low)
        if spec.wave == "ramp":
            return _typed(spec, None, spec.low + (spec.high - spec.low) * (t % spec.period)
                          / spec.period)
        # random walk: one step per call, kept within [low, high]
        rng = random.Random(zlib.crc32(spec.name.encode()) ^ self.spec.seed ^ self.ticks)
        x = self._walk[spec.name] + rng.uniform(-spec.step, spec.step)
        x = min(spec.high, max(spec.low, x))
        self._walk[spec.name] = x
        return _typed(spec, None, x)

    # -- running -----------------------------------------------------------------------------
    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._table = table
        for name in self.input_names():
            table.declare(name)
        self._publish()
        task_status.started()
        try:
            while True:
                next_tick = self._clock() + self.spec.period
                self.ticks += 1
                self._publish()
                await anyio.sleep(max(0.0, next_tick - self._clock()))
        finally:
            self._table = None

    def _publish(self) -> None:
        if self._table is None:
            return
        now, wall = self._clock(), time.time_ns()
        for name in [n for n, s in self._scripts.items() if s.done(now)]:
            # a finished one-shot script leaves its last value forced
            self._forced.setdefault(name, self._scripts.pop(name).steps[-1][0])
        self._table.update_many({name: Sample(value, Quality.GOOD, now, wall)
                                 for name, value in self.values_at(now).items()})


def _typed(spec: SimInputSpec, flag: bool | None, x: float) -> Value:
    if spec.value_type == "bool":
        return bool(flag) if flag is not None else x >= (spec.low + spec.high) / 2
    if spec.value_type == "int":
        return int(round(x))
    return round(x, 6) if math.isfinite(x) else x
