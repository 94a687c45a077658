"""Turns source and tower specs into live objects, sharing one Modbus client per connection.

Each backend's module (and its library: pymodbus, asyncua, python-snap7, gpiozero, gpiod) is
imported only when a source or lamp uses it: asyncua alone costs more to import than the rest of
the agent, and the lamps show nothing until the agent has started (bench/agent.py, start-up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from linelight.hw.config import (
    GpioChipSourceSpec,
    GpioZeroSourceSpec,
    LampBinding,
    ModbusSourceSpec,
    OpcUaSourceSpec,
    OutputsSpec,
    S7SourceSpec,
    SimSourceSpec,
    SourceSpec,
    TowerSpec,
)
from linelight.hw.errors import DeviceError
from linelight.hw.inputs import InputTable, Source
from linelight.hw.modbus_codec import Area, Point
from linelight.hw.outputs import Output, VirtualOutput
from linelight.hw.sim import SimSource
from linelight.hw.stacklight import OutputBank, StackLight

if TYPE_CHECKING:  # imported where a spec needs them (see the module docstring)
    from linelight.hw.gpio_chip import LineBackend
    from linelight.hw.modbus import ModbusConnection, RegisterImage
    from linelight.hw.opcua import OpcUaConnection
    from linelight.hw.s7 import S7Connection

log = logging.getLogger(__name__)


@dataclass
class Hardware:
    """Everything built from the config: sources, the tower, and what must be closed at exit."""

    sources: list[Source]
    stacklight: StackLight | None  # the single tower, or the first machine's
    towers: dict[str, StackLight] = field(default_factory=dict)  # by machine, when several
    outputs: OutputBank | None = None  # the [[output]] rules' lines (of the single machine)
    machine_outputs: dict[str, OutputBank] = field(default_factory=dict)  # by machine
    connections: dict[str, ModbusConnection] = field(default_factory=dict)
    s7_connections: dict[str, S7Connection] = field(default_factory=dict)
    opcua_connections: dict[str, OpcUaConnection] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source '{name}'")

    def sim(self, name: str | None = None) -> SimSource:
        """The simulator source called `name` (or the only one), for demo and test commands."""
        sims = [s for s in self.sources if isinstance(s, SimSource)
                and (name is None or s.name == name)]
        if len(sims) != 1:
            raise KeyError(f"no single sim source{f' named {name!r}' if name else ''}")
        return sims[0]

    def status(self) -> dict[str, object]:
        """Every source's counters and last error, and the tower's lamps, for /status."""
        return {"sources": {s.name: s.status() for s in self.sources},
                "tower": self.stacklight.status() if self.stacklight is not None else None,
                "output_lines": self.outputs.status() if self.outputs is not None else None}

    def all_towers(self) -> list[StackLight]:
        """Every tower once: the single one, or each machine's."""
        towers = list(self.towers.values())
        if self.stacklight is not None and self.stacklight not in towers:
            towers.insert(0, self.stacklight)
        return towers

    def all_output_banks(self) -> list[OutputBank]:
        """Every machine's outputs once."""
        banks = list(self.machine_outputs.values())
        return ([self.outputs] if self.outputs is not None else []) + banks

    async def run(self, table: InputTable, *,
                  task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every source and the tower until cancelled (then call `close`)."""
        async with anyio.create_task_group() as tg:
            for source in self.sources:
                await tg.start(source.run, table)
            for tower in [*self.all_towers(), *self.all_output_banks()]:
                await tg.start(tower.run)
            task_status.started()

    async def close(self) -> bool:
        """Apply the outputs' and the tower's on_exit, then close Modbus, S7 and OPC UA clients
        and GPIO devices."""
        ok = True
        for tower in [*self.all_output_banks(), *self.all_towers()]:
            ok = await tower.close() and ok
        for conn in self.connections.values():
            conn.close()
        for s7 in self.s7_connections.values():
            await s7.close()
        for session in self.opcua_connections.values():
            await session.close()
        for closer in self._closers:
            closer()
        return ok


def build_hardware(sources: Sequence[SourceSpec], tower: TowerSpec | None, *,
                   pin_factory: Any = None, line_backend: LineBackend | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   towers: Mapping[str, TowerSpec] | None = None,
                   outputs: OutputsSpec | None = None,
                   machine_outputs: Mapping[str, OutputsSpec] | None = None) -> Hardware:
    """Live objects for the specs. `pin_factory` (e.g. gpiozero's MockFactory) and
    `line_backend` replace the configured GPIO access, for tests and the demo. `towers` are
    the towers of several machines, by machine (the first is also `stacklight`); `outputs`
    and `machine_outputs` the [[output]] rules' wiring, of the single machine or by machine.
    Raises DeviceError if a GPIO line cannot be opened."""
    hw = Hardware([], None)
    factories: dict[str | None, Any] = {}

    def factory(name: str | None) -> Any:
        if pin_factory is not None:
            return pin_factory
        if name not in factories:
            from linelight.hw.gpio_zero import make_pin_factory

            factories[name] = make_pin_factory(name)
        return factories[name]

    for spec in sources:
        _add_source(hw, spec, factory, line_backend, clock)
    unit_of = {s.name: s.unit for s in sources if isinstance(s, ModbusSourceSpec)}
    images: dict[tuple[str, int, int], RegisterImage] = {}
    try:
        if tower is not None:
            hw.stacklight = _stacklight(tower, hw, unit_of, images, factory, line_backend, clock)
        for machine, machine_tower in (towers or {}).items():
            hw.towers[machine] = _stacklight(machine_tower, hw, unit_of, images, factory, line_backend,
                                             clock)
        if outputs is not None:
            hw.outputs = _output_bank(outputs, hw, unit_of, images, factory, line_backend, clock)
        for machine, wiring in (machine_outputs or {}).items():
            hw.machine_outputs[machine] = _output_bank(wiring, hw, unit_of, images, factory,
                                                       line_backend, clock)
    except DeviceError:
        for closer in hw._closers:  # noqa: SLF001 this module builds the Hardware and owns its closers
            closer()
        raise
    if hw.stacklight is None and hw.towers:
        hw.stacklight = next(iter(hw.towers.values()))
    return hw


def _stacklight(tower: TowerSpec, hw: Hardware, unit_of: dict[str, int],
                images: dict[tuple[str, int, int], RegisterImage],
                factory: Callable[[str | None], Any], line_backend: LineBackend | None,
                clock: Callable[[], float]) -> StackLight:
    outputs: dict[str, Output] = {}
    for lamp, binding in tower.lamps.items():
        outputs[lamp] = _output(binding, hw, unit_of, images,
                                lambda: factory(tower.pin_factory), line_backend, clock)
    return StackLight(outputs, blink_slow_hz=tower.blink_slow_hz,
                      blink_fast_hz=tower.blink_fast_hz, refresh=tower.refresh,
                      retry=tower.retry, write_timeout=tower.write_timeout,
                      on_exit=tower.on_exit, clock=clock)


def _output_bank(spec: OutputsSpec, hw: Hardware, unit_of: dict[str, int],
                 images: dict[tuple[str, int, int], RegisterImage],
                 factory: Callable[[str | None], Any], line_backend: LineBackend | None,
                 clock: Callable[[], float]) -> OutputBank:
    """The [[output]] rules' lines, bound exactly like lamps (`_output`)."""
    outputs = {name: _output(binding, hw, unit_of, images, lambda: factory(spec.pin_factory),
                             line_backend, clock)
               for name, binding in spec.wiring.items()}
    return OutputBank(outputs, refresh=spec.refresh, retry=spec.retry,
                      write_timeout=spec.write_timeout, on_exit=spec.on_exit, clock=clock)


def _add_source(hw: Hardware, spec: SourceSpec, factory: Callable[[str | None], Any],
                line_backend: LineBackend | None, clock: Callable[[], float]) -> None:
    if isinstance(spec, ModbusSourceSpec):
        from linelight.hw.modbus import ModbusConnection, ModbusSource

        conn = ModbusConnection(spec.name, spec.link, timeout=spec.timeout,
                                reconnect_min=spec.reconnect_min,
                                reconnect_max=spec.reconnect_max, clock=clock)
        hw.connections[spec.name] = conn
        hw.sources.append(ModbusSource(spec, conn, clock=clock))
    elif isinstance(spec, S7SourceSpec):
        from linelight.hw.s7 import S7Connection, S7Source

        s7 = S7Connection(spec)
        hw.s7_connections[spec.name] = s7
        hw.sources.append(S7Source(spec, s7, clock=clock))
    elif isinstance(spec, OpcUaSourceSpec):
        from linelight.hw.opcua import OpcUaConnection, OpcUaSource

        session = OpcUaConnection(spec)
        hw.opcua_connections[spec.name] = session
        hw.sources.append(OpcUaSource(spec, session, clock=clock))
    elif isinstance(spec, GpioZeroSourceSpec):
        from linelight.hw.gpio_zero import GpioZeroSource

        hw.sources.append(GpioZeroSource(spec, pin_factory=factory(spec.pin_factory),
                                         clock=clock))
    elif isinstance(spec, GpioChipSourceSpec):
        from linelight.hw.gpio_chip import GpioChipSource

        hw.sources.append(GpioChipSource(spec, backend=line_backend, clock=clock))
    elif isinstance(spec, SimSourceSpec):
        hw.sources.append(SimSource(spec, clock=clock))


def _output(b: LampBinding, hw: Hardware, unit_of: dict[str, int],
            images: dict[tuple[str, int, int], RegisterImage], factory: Callable[[], Any],
            line_backend: LineBackend | None, clock: Callable[[], float]) -> Output:
    if b.kind == "virtual":
        return VirtualOutput(clock=clock)
    if b.kind == "gpiozero":
        from linelight.hw.gpio_zero import GpioZeroOutput

        assert b.pin is not None
        zero = GpioZeroOutput(b.pin, active_low=b.active_low, pin_factory=factory())
        hw._closers.append(zero.close)  # noqa: SLF001 this module builds the Hardware and owns its closers
        return zero
    if b.kind == "gpiochip":
        from linelight.hw.gpio_chip import GpioChipOutput

        assert b.pin is not None
        chip = GpioChipOutput(b.chip, b.pin, active_low=b.active_low, backend=line_backend)
        hw._closers.append(chip.close)  # noqa: SLF001 this module builds the Hardware and owns its closers
        return chip
    if b.kind == "s7":
        s7 = hw.s7_connections.get(b.source)
        if s7 is None or b.s7 is None:
            raise DeviceError(f"the binding at {b.where} names S7 source '{b.source}', "
                              "which is not configured")
        from linelight.hw.s7 import S7BitOutput

        return S7BitOutput(s7, b.s7)
    if b.kind == "opcua":
        session = hw.opcua_connections.get(b.source)
        if session is None:
            raise DeviceError(f"the binding at {b.where} names OPC UA source '{b.source}', "
                              "which is not configured")
        from linelight.hw.opcua import OpcUaBoolOutput

        return OpcUaBoolOutput(session, b.node)
    conn = hw.connections.get(b.source)
    if conn is None or b.point is None:
        raise DeviceError(f"the binding at {b.where} names Modbus source '{b.source}', "
                          "which is not configured")
    from linelight.hw.modbus import ModbusCoilOutput, ModbusRegisterOutput, RegisterImage

    p = b.point
    unit = unit_of[b.source] if p.unit < 0 else p.unit
    point = Point(p.area, p.address, p.type, unit, p.bit)
    if point.area is Area.COIL:
        return ModbusCoilOutput(conn, point)
    image = None
    if point.bit is not None:
        key = (b.source, unit, point.address)
        image = images.setdefault(key, RegisterImage(conn, unit, point.address))
    return ModbusRegisterOutput(conn, point, image)
