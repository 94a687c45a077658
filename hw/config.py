"""Readers for the `[sources.NAME]` tables (with their input bindings) and the `[tower]` table.

Both read through `rules.fields.Table`, so every mistake is reported as `file:line:col: message`
and all of them are listed at once. The results are frozen specs; `hw.build` makes live objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from linelight.hw.modbus_codec import Area, DataType, Order, Point
from linelight.rules.errors import ConfigProblems, Location
from linelight.rules.fields import Problems, Table, did_you_mean
from linelight.rules.tomldoc import TomlDoc
from linelight.rules.values import LAMPS, Pattern

SOURCE_TYPES = ("modbus_tcp", "modbus_rtu", "gpiozero", "gpiochip", "sim")
AREA_KEYS = tuple(a.value for a in Area)
PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native", "mock")
WAVES = ("square", "ramp", "random_walk", "script", "constant")
MACHINE_MODES = ("producing", "microstop", "fault", "idle")
MACHINE_INPUTS = ("running", "fault_code", "estop_ok", "part_seen", "door_closed", "spindle_rpm")


# -- source specs ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ModbusLink:
    """How to reach a Modbus device: TCP, or RTU on a serial port (or `socket://host:port`)."""

    kind: str  # "tcp" or "rtu"
    host: str = ""
    port: int = 502
    device: str = ""  # serial port for RTU
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    def describe(self) -> str:
        return f"{self.host}:{self.port}" if self.kind == "tcp" else self.device


@dataclass(frozen=True, slots=True)
class ModbusSourceSpec:
    name: str
    link: ModbusLink
    unit: int
    poll: float
    timeout: float
    stale_after: float
    reconnect_min: float
    reconnect_max: float
    max_gap: int
    max_count: int | None
    inputs: tuple[tuple[str, Point], ...]
    location: Location

    @property
    def type(self) -> str:
        return f"modbus_{self.link.kind}"


@dataclass(frozen=True, slots=True)
class GpioInputSpec:
    """One digital input line: a gpiozero pin or a gpiochip line (name or offset)."""

    name: str
    pin: int | str  # gpiozero pin (e.g. 17 or "GPIO17") or gpiochip line name/offset
    active_low: bool = False
    bias: str = "as_is"  # gpiozero: "up", "down", "none"; gpiochip: "pull_up", "pull_down", "disabled", "as_is"
    debounce: float = 0.0


@dataclass(frozen=True, slots=True)
class GpioZeroSourceSpec:
    name: str
    pin_factory: str | None
    inputs: tuple[GpioInputSpec, ...]
    location: Location
    type: str = "gpiozero"


@dataclass(frozen=True, slots=True)
class GpioChipSourceSpec:
    name: str
    chip: str
    inputs: tuple[GpioInputSpec, ...]
    location: Location
    type: str = "gpiochip"


@dataclass(frozen=True, slots=True)
class SimInputSpec:
    """A simulated input: a waveform or a scripted sequence of (value, hold) steps."""

    name: str
    wave: str
    period: float = 10.0
    low: float = 0.0
    high: float = 1.0
    duty: float = 0.5
    step: float = 1.0
    start: float = 0.0
    value_type: str = "float"  # "bool", "int" or "float": what the input delivers
    steps: tuple[tuple[Any, float], ...] = ()
    repeat: bool = True


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """The simulated machine: how long each phase lasts and how fast parts come."""

    cycle: float = 2.0
    producing: float = 20.0
    microstop: float = 3.0
    fault: float = 8.0
    idle: float = 6.0
    fault_code: int = 17
    rpm: float = 3000.0


@dataclass(frozen=True, slots=True)
class SimSourceSpec:
    name: str
    period: float
    seed: int
    machine: MachineSpec | None
    inputs: tuple[SimInputSpec, ...]
    location: Location
    type: str = "sim"


SourceSpec = ModbusSourceSpec | GpioZeroSourceSpec | GpioChipSourceSpec | SimSourceSpec


def input_names(spec: SourceSpec) -> list[str]:
    """The input names a source delivers (the machine model's six included)."""
    if isinstance(spec, ModbusSourceSpec):
        return [name for name, _ in spec.inputs]
    names = [i.name for i in spec.inputs]
    if isinstance(spec, SimSourceSpec) and spec.machine is not None:
        names = [*MACHINE_INPUTS, *names]
    return names


def read_sources(root: Table) -> tuple[SourceSpec, ...]:
    """Every `[sources.NAME]` table of the file; problems go to `root.problems`."""
    table = root.table("sources")
    if table is None:
        return ()
    specs: list[SourceSpec] = []
    seen_inputs: dict[str, str] = {}
    for name, src in table.entries():
        if src is None:
            continue
        spec = _read_source(name, src)
        if spec is None:
            continue
        for input_name in input_names(spec):
            if input_name in seen_inputs:
                src.problem(None, f"input '{input_name}' of source '{name}' is already "
                                  f"delivered by source '{seen_inputs[input_name]}'")
            seen_inputs[input_name] = name
        specs.append(spec)
    return tuple(specs)


def _read_source(name: str, src: Table) -> SourceSpec | None:
    kind = src.choice("type", SOURCE_TYPES)
    spec: SourceSpec | None = None
    if kind in ("modbus_tcp", "modbus_rtu"):
        spec = _read_modbus(name, src, kind)
    elif kind == "gpiozero":
        spec = GpioZeroSourceSpec(
            name, src.choice("pin_factory", PIN_FACTORIES, None),
            _read_gpio_inputs(src, chip=False), src.where())
    elif kind == "gpiochip":
        spec = GpioChipSourceSpec(name, src.string("chip", "/dev/gpiochip0"),
                                  _read_gpio_inputs(src, chip=True), src.where())
    elif kind == "sim":
        spec = _read_sim(name, src)
    src.finish()
    return spec


# -- Modbus ----------------------------------------------------------------------------------

def _read_modbus(name: str, src: Table, kind: str) -> ModbusSourceSpec:
    if kind == "modbus_tcp":
        link = ModbusLink("tcp", host=src.string("host"), port=_port(src))
    else:
        link = ModbusLink(
            "rtu", device=src.string("device"),
            baudrate=src.integer("baudrate", 19200, minimum=300),
            parity={"none": "N", "even": "E", "odd": "O"}[src.choice(
                "parity", ("none", "even", "odd"), "none")],
            stopbits=_one_of(src, "stopbits", (1, 2), 1),
            bytesize=_one_of(src, "bytesize", (7, 8), 8),
        )
    unit = _unit(src, "unit", 1)
    poll = src.duration("poll", 0.1, allow_zero=False) or 0.1
    timeout = src.duration("timeout", 0.5, allow_zero=False) or 0.5
    stale_after = src.duration("stale_after", max(2.0, 3 * poll + timeout), allow_zero=False)
    reconnect_min = src.duration("reconnect_min", 0.5, allow_zero=False) or 0.5
    if reconnect_min < 0.5:
        src.problem("reconnect_min", "'reconnect_min' must be at least 500ms so a dead device "
                                     "is not hammered with connection attempts")
        reconnect_min = 0.5
    reconnect_max = src.duration("reconnect_max", 10.0, allow_zero=False) or 10.0
    if reconnect_max < reconnect_min:
        src.problem("reconnect_max", "'reconnect_max' must not be shorter than 'reconnect_min'")
        reconnect_max = reconnect_min
    max_gap = src.integer("max_gap", 0, minimum=0)
    max_count = src.integer("max_count", None, minimum=1)
    inputs: list[tuple[str, Point]] = []
    table = src.table("inputs")
    if table is not None:
        for input_name, entry in table.entries():
            if entry is None:
                continue
            point = read_point(entry, default_unit=unit, what=f"input '{input_name}'")
            entry.finish()
            if point is not None:
                inputs.append((input_name, point))
    return ModbusSourceSpec(name, link, unit, poll, timeout, stale_after or 2.0, reconnect_min,
                            reconnect_max, max_gap or 0, max_count, tuple(inputs), src.where())


def read_point(entry: Table, *, default_unit: int, what: str, writable: bool = False) -> Point | None:
    """A Modbus address binding: exactly one of coil / discrete_input / input_register /
    holding_register, plus type, bit, word_order, byte_order, scale, offset and unit."""
    allowed = ("coil", "holding_register") if writable else AREA_KEYS
    present = [k for k in AREA_KEYS if entry.has(k)]
    if len(present) != 1:
        found = f"found {', '.join(present)}" if present else "found none"
        entry.problem(None, f"{what} needs exactly one of {', '.join(allowed)} ({found})")
        for k in present:
            entry.raw(k)
        return None
    key = present[0]
    area = Area(key)
    if key not in allowed:
        entry.problem(key, f"{what} cannot write a {key.replace('_', ' ')}; "
                           f"outputs use {' or '.join(allowed)}")
        return None
    address = entry.integer(key, minimum=0)
    if isinstance(address, int) and address > 65535:
        entry.problem(key, f"'{key}' must be a 0-based address from 0 to 65535, not {address}")
        return None
    unit = _unit(entry, "unit", default_unit)
    bit = entry.integer("bit", None, minimum=0)
    if isinstance(bit, int) and bit > 15:
        entry.problem("bit", f"'bit' must be 0 (least significant) to 15, not {bit}")
        bit = None
    default_type = "bool" if area.is_bit or bit is not None else "uint16"
    dtype = DataType(entry.choice("type", [d.value for d in DataType], default_type)
                     or default_type)
    if bit is not None and area.is_bit:
        entry.problem("bit", f"'bit' picks a bit of a register; a {key.replace('_', ' ')} "
                             "is already a single bit")
        bit = None
    if dtype is DataType.BOOL and not area.is_bit and bit is None:
        entry.problem("type", "type 'bool' on a register needs 'bit' (0-15) to say which bit")
    if dtype is not DataType.BOOL and (area.is_bit or bit is not None):
        entry.problem("type", f"a {'bit' if bit is not None else key.replace('_', ' ')} "
                              f"is a bool, not {dtype.value}")
        dtype = DataType.BOOL
    word_order = Order(entry.choice("word_order", ("big", "little"), "big") or "big")
    byte_order = Order(entry.choice("byte_order", ("big", "little"), "big") or "big")
    scale = entry.number("scale", 1.0)
    offset = entry.number("offset", 0.0)
    if (scale != 1.0 or offset != 0.0) and dtype is DataType.BOOL:
        entry.problem("scale" if entry.has("scale") else "offset",
                      "'scale' and 'offset' apply to numbers, not to bools")
    if not isinstance(address, int):
        return None
    return Point(area, address, dtype, unit, bit, word_order, byte_order,
                 1.0 if scale is None else scale, 0.0 if offset is None else offset)


def _port(src: Table) -> int:
    port = src.integer("port", 502, minimum=1)
    if isinstance(port, int) and port > 65535:
        src.problem("port", f"'port' must be 1 to 65535, not {port}")
        return 502
    return port or 502


def _unit(t: Table, key: str, default: int) -> int:
    if not t.has(key):
        t.raw(key)
        return default
    unit = t.integer(key, default, minimum=0)
    if isinstance(unit, int) and unit > 255:
        t.problem(key, f"'{key}' (the Modbus unit id / slave address) must be 0 to 255, not {unit}")
        return default
    return default if unit is None else unit


def _one_of(t: Table, key: str, options: tuple[int, ...], default: int) -> int:
    value = t.integer(key, default)
    if value not in options:
        t.problem(key, f"'{key}' must be one of {', '.join(map(str, options))}, not {value}")
        return default
    return int(value)


# -- GPIO ------------------------------------------------------------------------------------

def _read_gpio_inputs(src: Table, *, chip: bool) -> tuple[GpioInputSpec, ...]:
    table = src.table("inputs")
    out: list[GpioInputSpec] = []
    if table is None:
        return ()
    for name, entry in table.entries():
        if entry is None:
            continue
        spec = read_gpio_line(entry, name, chip=chip, output=False)
        entry.finish()
        if spec is not None:
            out.append(spec)
    return tuple(out)


def read_gpio_line(entry: Table, name: str, *, chip: bool, output: bool) -> GpioInputSpec | None:
    key = "line" if chip else "pin"
    pin = entry.take(key, (int, str))
    active_low = entry.boolean("active_low", False)
    if output:
        bias, debounce = "as_is", 0.0
    elif chip:
        bias = entry.choice("bias", ("as_is", "pull_up", "pull_down", "disabled"), "as_is")
        debounce = entry.duration("debounce", 0.0)
    else:
        bias = entry.choice("pull", ("up", "down", "none"), "none" if active_low else "down")
        debounce = entry.duration("debounce", 0.0)
        if bias == "up" and not entry.has("active_low"):
            active_low = True  # a switch to ground on a pulled-up pin is active when low
    if pin is None:
        return None
    return GpioInputSpec(name, pin, bool(active_low), bias or "as_is", debounce or 0.0)


# -- simulator -------------------------------------------------------------------------------

def _read_sim(name: str, src: Table) -> SimSourceSpec:
    period = src.duration("period", 0.05, allow_zero=False) or 0.05
    seed = src.integer("seed", 1)
    machine: MachineSpec | None = None
    model = src.choice("model", ("machine", "none"), "none")
    mt = src.table("machine")
    if model == "machine" or mt is not None:
        if mt is not None and model != "machine":
            mt.problem(None, "[machine] settings need model = \"machine\"")
        machine = _read_machine(mt)
    inputs: list[SimInputSpec] = []
    table = src.table("inputs")
    if table is not None:
        for input_name, entry in table.entries():
            if entry is None:
                continue
            if machine is not None and input_name in MACHINE_INPUTS:
                entry.problem(None, f"input '{input_name}' is already made by the machine model; "
                                    "use another name or force() it from a test")
            spec = _read_sim_input(input_name, entry)
            _misplaced_sim_keys(entry)
            entry.finish()
            if spec is not None:
                inputs.append(spec)
    return SimSourceSpec(name, period, seed if seed is not None else 1, machine, tuple(inputs),
                         src.where())


def _read_machine(mt: Table | None) -> MachineSpec:
    if mt is None:
        return MachineSpec()
    d = MachineSpec()
    spec = MachineSpec(
        cycle=mt.duration("cycle", d.cycle, allow_zero=False) or d.cycle,
        producing=mt.duration("producing", d.producing, allow_zero=False) or d.producing,
        microstop=mt.duration("microstop", d.microstop, allow_zero=False) or d.microstop,
        fault=mt.duration("fault", d.fault, allow_zero=False) or d.fault,
        idle=mt.duration("idle", d.idle, allow_zero=False) or d.idle,
        fault_code=mt.integer("fault_code", d.fault_code, minimum=1) or d.fault_code,
        rpm=mt.number("rpm", d.rpm) or d.rpm,
    )
    mt.finish()
    return spec


SIM_INPUT_KEYS = ("wave", "type", "period", "low", "high", "duty", "step", "start", "steps",
                  "repeat", "value")


def _misplaced_sim_keys(entry: Table) -> None:
    """A known key the chosen wave does not use gets a clearer message than 'unknown key'."""
    wave = entry.data.get("wave")
    for key in list(entry.data):
        if key in SIM_INPUT_KEYS and key not in entry._seen and isinstance(wave, str):
            entry.raw(key)
            entry.problems.add(entry.where(key), f"'{key}' does not apply to wave = \"{wave}\"")


def _read_sim_input(name: str, entry: Table) -> SimInputSpec | None:
    wave = entry.choice("wave", WAVES)
    if wave is None:
        return None
    value_type = entry.choice("type", ("bool", "int", "float"),
                              "bool" if wave == "square" else "float") or "float"
    if wave == "script":
        steps = _read_steps(entry)
        return SimInputSpec(name, wave, value_type=value_type, steps=steps,
                            repeat=bool(entry.boolean("repeat", True)))
    if wave == "constant":
        value = entry.take("value", (bool, int, float, str))
        return SimInputSpec(name, wave, value_type=value_type, steps=((value, 1.0),))
    period = entry.duration("period", 10.0, allow_zero=False) or 10.0
    low = entry.number("low", 0.0)
    high = entry.number("high", 1.0)
    if low is not None and high is not None and low > high:
        entry.problem("low", f"'low' ({low}) must not be above 'high' ({high})")
    duty = entry.number("duty", 0.5) if wave == "square" else 0.5
    if duty is not None and not 0.0 < duty < 1.0:
        entry.problem("duty", f"'duty' is the fraction of the period spent high: between 0 and 1, not {duty}")
        duty = 0.5
    step = entry.number("step", 1.0) if wave == "random_walk" else 1.0
    start = entry.number("start", low if low is not None else 0.0) if wave == "random_walk" else 0.0
    return SimInputSpec(name, wave, period=period, low=low or 0.0,
                        high=1.0 if high is None else high, duty=duty or 0.5,
                        step=1.0 if step is None else step, start=start or 0.0,
                        value_type=value_type)


def _read_steps(entry: Table) -> tuple[tuple[Any, float], ...]:
    steps: list[tuple[Any, float]] = []
    tables = entry.tables("steps")
    if not tables:
        entry.problem(None, "a script needs steps = [{ value = ..., hold = \"1s\" }, ...]")
    for step in tables:
        value = step.take("value", (bool, int, float, str))
        hold = step.duration("hold", allow_zero=False)
        step.finish()
        if hold is not None:
            steps.append((value, hold))
    return tuple(steps)


# -- tower -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LampBinding:
    """Where one lamp is wired: `kind` is gpiozero, gpiochip, modbus or virtual."""

    kind: str
    pin: int | str | None = None  # gpiozero pin or gpiochip line
    active_low: bool = False
    chip: str = ""
    source: str = ""  # the Modbus source whose connection writes this lamp
    point: Point | None = None  # coil, or holding register (whole, or one bit)
    where: str = ""  # file:line:col of the binding, for messages


@dataclass(frozen=True, slots=True)
class TowerSpec:
    lamps: dict[str, LampBinding]
    blink_slow_hz: float = 1.0
    blink_fast_hz: float = 4.0
    refresh: float = 5.0
    retry: float = 0.5
    write_timeout: float = 1.0
    on_exit: dict[str, Pattern] = field(default_factory=dict)
    pin_factory: str | None = None
    profile: str | None = None
    location: Location | None = None


def read_tower(root: Table, sources: tuple[SourceSpec, ...] = ()) -> TowerSpec | None:
    """The `[tower]` table, or None when the file has none."""
    t = root.table("tower")
    if t is None:
        return None
    modbus_sources = {s.name: s for s in sources if isinstance(s, ModbusSourceSpec)}
    profile_name = t.string("profile", None)
    default_source = t.string("source", None)
    default_chip = t.string("chip", None)
    pin_factory = t.choice("pin_factory", PIN_FACTORIES, None)
    lamps: dict[str, LampBinding] = {}
    if profile_name is not None:
        try:
            profile = load_profile(profile_name)
        except ConfigProblems as exc:
            t.problems.extend(exc.problems)
            profile = None
        except KeyError:
            t.problem("profile", f"no hardware profile '{profile_name}'; available: "
                                 f"{', '.join(list_profiles())}")
            profile = None
        if profile is not None:
            default_chip = default_chip or profile.chip
            for lamp, binding in profile.lamps.items():
                lamps[lamp] = binding
    lamp_table = t.table("lamps")
    if lamp_table is not None:
        for lamp, entry in lamp_table.entries():
            if entry is None:
                continue
            if lamp not in LAMPS:
                lamp_table.problems.add(lamp_table.where(lamp), _lamp_message(lamp))
                continue
            lamp_binding = read_lamp_binding(entry, f"lamp '{lamp}'")
            entry.finish()
            if lamp_binding is not None:
                lamps[lamp] = lamp_binding
    lamps = {lamp: _resolve(b, default_source, default_chip) for lamp, b in lamps.items()}
    for lamp, b in lamps.items():
        if b.kind == "modbus":
            _check_modbus_lamp(t, lamp, b, modbus_sources, sources)
    if not lamps:
        t.problem(None, "[tower] binds no lamps: add [tower.lamps] or a profile")
    slow = _frequency(t, "blink_slow_hz", 1.0)
    fast = _frequency(t, "blink_fast_hz", 4.0)
    refresh = t.duration("refresh", 5.0, allow_zero=False) or 5.0
    retry = t.duration("retry", 0.5, allow_zero=False) or 0.5
    write_timeout = t.duration("write_timeout", 1.0, allow_zero=False) or 1.0
    on_exit = _read_on_exit(t, lamps)
    t.finish()
    return TowerSpec(lamps, slow, fast, refresh, retry, write_timeout, on_exit, pin_factory,
                     profile_name, t.where())


def read_lamp_binding(entry: Table, what: str) -> LampBinding | None:
    where = str(entry.where())
    kinds = [k for k in ("pin", "line", "coil", "holding_register", "virtual") if entry.has(k)]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        entry.problem(None, f"{what} needs exactly one of pin (gpiozero), line (gpiochip), "
                            f"coil or holding_register (Modbus), virtual ({found})")
        for k in kinds:
            entry.raw(k)
        return None
    key = kinds[0]
    if key == "virtual":
        if entry.boolean("virtual") is not True:
            entry.problem("virtual", "write virtual = true for a lamp with no hardware")
        return LampBinding("virtual", where=where)
    if key in ("pin", "line"):
        spec = read_gpio_line(entry, what, chip=key == "line", output=True)
        chip = entry.string("chip", "") if key == "line" else ""
        if spec is None:
            return None
        return LampBinding("gpiozero" if key == "pin" else "gpiochip", spec.pin, spec.active_low,
                           chip=chip or "", where=where)
    source = entry.string("source", "")
    point = read_point(entry, default_unit=-1, what=what, writable=True)
    if point is None:
        return None
    return LampBinding("modbus", source=source or "", point=point, where=where)


def _resolve(b: LampBinding, default_source: str | None, default_chip: str | None) -> LampBinding:
    if b.kind == "modbus" and not b.source and default_source:
        b = LampBinding(b.kind, source=default_source, point=b.point, where=b.where)
    if b.kind == "gpiochip" and not b.chip:
        b = LampBinding(b.kind, b.pin, b.active_low, chip=default_chip or "/dev/gpiochip0",
                        where=b.where)
    return b


def _check_modbus_lamp(t: Table, lamp: str, b: LampBinding,
                       modbus: dict[str, ModbusSourceSpec], sources: tuple[SourceSpec, ...]) -> None:
    at = f" (bound at {b.where})" if b.where else ""
    if not b.source:
        t.problem(None, f"lamp '{lamp}' is a Modbus output but no source is named{at}: "
                        "set source = \"NAME\" on the lamp or in [tower]")
    elif sources and b.source not in modbus:
        names = ", ".join(modbus) or "none"
        t.problem(None, f"lamp '{lamp}' names source '{b.source}'{at}, which is not a Modbus "
                        f"source (Modbus sources: {names})")


def _frequency(t: Table, key: str, default: float) -> float:
    value = t.number(key, default)
    if value is None or value <= 0 or value > 50:
        if value is not None:
            t.problem(key, f"'{key}' must be above 0 and at most 50 (flashes per second), not {value}")
        return default
    return float(value)


def _read_on_exit(t: Table, lamps: dict[str, LampBinding]) -> dict[str, Pattern]:
    raw = t.raw("on_exit", "off")
    allowed = ("off", "on")
    if isinstance(raw, str):
        if raw not in allowed:
            t.problem("on_exit", f"'on_exit' must be \"off\", \"on\" or a table such as "
                                 f"{{ red = \"on\" }}, not '{raw}' (a blinking lamp cannot "
                                 "outlive the agent that blinks it)")
            raw = "off"
        return {lamp: Pattern(raw) for lamp in lamps}
    sub = t.table("on_exit")
    if sub is None:
        return {lamp: Pattern.OFF for lamp in lamps}
    out = {lamp: Pattern.OFF for lamp in lamps}
    for lamp in list(sub.data):
        pattern = sub.choice(lamp, allowed)
        if lamp not in lamps:
            sub.problems.add(sub.where(lamp), _lamp_message(lamp) if lamp not in LAMPS
                             else f"on_exit names lamp '{lamp}', which the tower does not bind")
        elif pattern is not None:
            out[lamp] = Pattern(pattern)
    sub.finish()
    return out


def _lamp_message(lamp: str) -> str:
    return f"unknown lamp '{lamp}'{did_you_mean(lamp, LAMPS) or '; lamps are ' + ', '.join(LAMPS)}"


# -- profiles --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    document: str
    chip: str | None
    lamps: dict[str, LampBinding]


def list_profiles() -> list[str]:
    folder = resources.files("linelight.hw") / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name: str) -> Profile:
    """The profile `hw/profiles/NAME.toml`; KeyError if absent, ConfigProblems if malformed."""
    if name not in list_profiles():
        raise KeyError(name)
    res = resources.files("linelight.hw") / "profiles" / f"{name}.toml"
    text = res.read_text(encoding="utf-8")
    doc = TomlDoc.parse(text, f"hw/profiles/{name}.toml")
    problems = Problems()
    t = Table.root(doc, problems)
    description = t.string("description")
    document = t.string("document")
    chip = t.string("chip", None)
    lamps: dict[str, LampBinding] = {}
    table = t.table("lamps", required=True)
    if table is not None:
        for lamp, entry in table.entries():
            if entry is None:
                continue
            if lamp not in LAMPS:
                problems.add(table.where(lamp), _lamp_message(lamp))
                continue
            binding = read_lamp_binding(entry, f"lamp '{lamp}'")
            entry.finish()
            if binding is not None:
                lamps[lamp] = binding
    t.finish()
    problems.raise_if_any()
    return Profile(name, description or "", document or "", chip, lamps)
