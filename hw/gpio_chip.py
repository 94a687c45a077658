"""GPIO on any board with /dev/gpiochipN, through libgpiod v2's `gpiod` package.

The source talks to a small line interface (`LineBackend`) so tests can run against the
kernel's gpio-sim where the machine allows it, or against a fake of this same interface.
Debounce, bias and active-low are the kernel's: they are passed in the line settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import anyio

from linelight.hw.config import GpioChipSourceSpec, GpioInputSpec
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality, Sample

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LineEdge:
    """One edge as the kernel reports it: the line (as configured: name or offset) and its new
    logical level."""

    line: int | str
    value: bool
    timestamp_ns: int


class LineRequest(Protocol):
    """Requested lines of one chip. Values are logical (active-low applied by the kernel)."""

    def get_values(self) -> dict[int | str, bool]: ...
    def wait_edges(self, timeout: float) -> list[LineEdge]: ...
    def set_value(self, line: int | str, value: bool) -> None: ...
    def release(self) -> None: ...


class LineBackend(Protocol):
    def request_inputs(self, chip: str, lines: Sequence[GpioInputSpec],
                       consumer: str) -> LineRequest: ...
    def request_output(self, chip: str, line: int | str, active_low: bool,
                       consumer: str) -> LineRequest: ...


class GpiodBackend:
    """The real thing: libgpiod v2 through the `gpiod` Python package."""

    def request_inputs(self, chip: str, lines: Sequence[GpioInputSpec],
                       consumer: str) -> LineRequest:
        import gpiod
        from gpiod.line import Bias, Direction, Edge

        bias = {"as_is": Bias.AS_IS, "pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN,
                "disabled": Bias.DISABLED}
        config: dict[Any, Any] = {}
        for spec in lines:
            config[spec.pin] = gpiod.LineSettings(
                direction=Direction.INPUT, edge_detection=Edge.BOTH,
                bias=bias.get(spec.bias, Bias.AS_IS), active_low=spec.active_low,
                debounce_period=timedelta(seconds=spec.debounce))
        try:
            request = gpiod.request_lines(chip, config=config, consumer=consumer)
        except (OSError, ValueError) as exc:
            raise DeviceError(f"cannot request lines {[s.pin for s in lines]} on {chip}: "
                              f"{exc}") from exc
        return _GpiodRequest(request, [s.pin for s in lines])

    def request_output(self, chip: str, line: int | str, active_low: bool,
                       consumer: str) -> LineRequest:
        import gpiod
        from gpiod.line import Direction, Value

        settings = gpiod.LineSettings(direction=Direction.OUTPUT, active_low=active_low,
                                      output_value=Value.INACTIVE)
        try:
            request = gpiod.request_lines(chip, config={line: settings}, consumer=consumer)
        except (OSError, ValueError) as exc:
            raise DeviceError(f"cannot request line {line} on {chip} as an output: {exc}") from exc
        return _GpiodRequest(request, [line])


class _GpiodRequest:
    def __init__(self, request: Any, lines: list[int | str]) -> None:
        self._request = request
        self._lines = lines
        # gpiod reports edges by offset; map back to the names the config used.
        self._by_offset = dict(zip(request.offsets, lines, strict=True))

    def get_values(self) -> dict[int | str, bool]:
        from gpiod.line import Value
        values = self._request.get_values(self._lines)
        return {line: v == Value.ACTIVE for line, v in zip(self._lines, values, strict=True)}

    def wait_edges(self, timeout: float) -> list[LineEdge]:
        from gpiod import EdgeEvent
        if not self._request.wait_edge_events(timedelta(seconds=timeout)):
            return []
        return [LineEdge(self._by_offset.get(e.line_offset, e.line_offset),
                         e.event_type == EdgeEvent.Type.RISING_EDGE, e.timestamp_ns)
                for e in self._request.read_edge_events()]

    def set_value(self, line: int | str, value: bool) -> None:
        from gpiod.line import Value
        self._request.set_value(line, Value.ACTIVE if value else Value.INACTIVE)

    def release(self) -> None:
        self._request.release()


class GpioChipSource:
    """Digital inputs on gpiochip lines; edges are waited for in a worker thread."""

    WAIT = 0.2  # seconds per blocking wait, so cancellation is never held up for long

    def __init__(self, spec: GpioChipSourceSpec, *, backend: LineBackend | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.backend: LineBackend = backend or GpiodBackend()
        self._clock = clock
        self.edges = 0

    def input_names(self) -> list[str]:
        return [i.name for i in self.spec.inputs]

    def status(self) -> dict[str, object]:
        return {"type": "gpiochip", "chip": self.spec.chip, "edges": self.edges,
                "lines": {i.name: i.pin for i in self.spec.inputs}}

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for name in self.input_names():
            table.declare(name)
        by_line = {spec.pin: spec for spec in self.spec.inputs}
        request = self.backend.request_inputs(self.spec.chip, self.spec.inputs,
                                              f"linelight:{self.name}")
        try:
            for line, value in request.get_values().items():
                table.update(by_line[line].name, self._sample(value))
            task_status.started()
            while True:
                # Not cancellable while the thread waits; WAIT bounds how long a cancel takes.
                edges = await anyio.to_thread.run_sync(request.wait_edges, self.WAIT)
                for edge in edges:
                    spec = by_line.get(edge.line)
                    if spec is None:
                        log.warning("gpiochip %s reported an edge on unrequested line %s",
                                    self.spec.chip, edge.line)
                        continue
                    self.edges += 1
                    table.update(spec.name, self._sample(edge.value))
        finally:
            request.release()

    def _sample(self, value: bool) -> Sample:
        return Sample(bool(value), Quality.GOOD, self._clock(), time.time_ns())


class GpioChipOutput:
    """A lamp on a gpiochip line."""

    def __init__(self, chip: str, line: int | str, *, active_low: bool = False,
                 backend: LineBackend | None = None) -> None:
        self.name = f"{chip} line {line}"
        self.line = line
        self._request = (backend or GpiodBackend()).request_output(
            chip, line, active_low, "linelight:tower")

    async def write(self, value: bool) -> None:
        try:
            self._request.set_value(self.line, bool(value))
        except (OSError, ValueError, RuntimeError) as exc:
            raise DeviceError(f"cannot set {self.name} {'on' if value else 'off'}: {exc}") from exc

    def close(self) -> None:
        self._request.release()
