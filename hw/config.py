"""Readers for the `[sources.NAME]` tables (with their input bindings) and the `[tower]` table.

Both read through `rules.fields.Table`, so every mistake is reported as `file:line:col: message`
and all of them are listed at once. The results are frozen specs; `hw.build` makes live objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from linelight.hw.modbus_codec import Area, DataType, Order, Point
from linelight.hw.s7_codec import S7Address, S7AddressError, S7Area, S7Type, parse_address
from linelight.rules.errors import ConfigProblems, Location
from linelight.rules.fields import REQUIRED, Problems, Table, did_you_mean
from linelight.rules.keys import Key, Keys
from linelight.rules.tomldoc import TomlDoc
from linelight.rules.values import LAMPS, Pattern

SOURCE_TYPES = ("modbus_tcp", "modbus_rtu", "s7", "opcua", "gpiozero", "gpiochip", "sim")
AREA_KEYS = tuple(a.value for a in Area)
PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native", "mock")
WAVES = ("square", "ramp", "random_walk", "script", "constant")
MACHINE_MODES = ("producing", "microstop", "fault", "idle")
_B = TypeVar("_B")
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


@dataclass(frozen=True, slots=True)
class S7SourceSpec:
    """A Siemens S7 CPU reached over S7comm (ISO-on-TCP, port 102) at `rack`/`slot`."""

    name: str
    host: str
    port: int
    rack: int
    slot: int
    poll: float
    timeout: float
    stale_after: float
    reconnect_min: float
    reconnect_max: float
    max_gap: int
    inputs: tuple[tuple[str, S7Address], ...]
    location: Location
    type: str = "s7"
    remote_tsap: int | None = None  # instead of rack/slot (LOGO!, S7-200, CP connections)
    local_tsap: int = 0x0100

    def describe(self) -> str:
        if self.remote_tsap is not None:
            return f"{self.host}:{self.port} TSAP {self.remote_tsap >> 8:02X}.{self.remote_tsap & 255:02X}"
        return f"{self.host}:{self.port} rack {self.rack} slot {self.slot}"


OPCUA_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
OPCUA_MODES = ("Sign", "SignAndEncrypt")


@dataclass(frozen=True, slots=True)
class OpcUaSecurity:
    """A signed (and encrypted) secure channel, and the user linelight logs in as."""

    policy: str  # one of OPCUA_POLICIES but "None"
    mode: str  # Sign or SignAndEncrypt
    certificate: str  # client certificate (DER); generated with `private_key` if missing
    private_key: str  # PEM
    server_certificate: str  # the trusted server certificate; "" with trust_any_server
    trust_any_server: bool
    username: str
    password_file: str  # relative: in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)


@dataclass(frozen=True, slots=True)
class OpcUaSourceSpec:
    """An OPC UA server: inputs by node id, delivered by one data-change subscription."""

    name: str
    endpoint: str
    publishing: float  # publishing interval, s
    sampling: float  # sampling interval of every monitored item, s
    timeout: float
    reconnect_min: float
    reconnect_max: float
    inputs: tuple[tuple[str, str], ...]  # input name, node id as written
    location: Location
    security: OpcUaSecurity | None = None  # None: the unsecured endpoint (security policy None)
    type: str = "opcua"
    deadbands: tuple[tuple[str, float], ...] = ()  # input name, absolute deadband


SourceSpec = (ModbusSourceSpec | S7SourceSpec | OpcUaSourceSpec | GpioZeroSourceSpec
              | GpioChipSourceSpec | SimSourceSpec)


def place_opcua_files(specs: Sequence[SourceSpec], base: Path,
                      data_dir: Path) -> tuple[SourceSpec, ...]:
    """The OPC UA security files where the agent uses them: `certificate`, `private_key` and
    `server_certificate` relative to the config file's folder `base`, the client certificate
    and key left out in `data_dir`/opcua/ as NAME.der and NAME.pem (the agent's state
    directory, where it may write them at its first start). `password_file` stays as written
    (relative: in $CREDENTIALS_DIRECTORY)."""
    def place(name: str) -> str:
        return name if not name or Path(name).is_absolute() else str(base / name)

    out: list[SourceSpec] = []
    for spec in specs:
        sec = spec.security if isinstance(spec, OpcUaSourceSpec) else None
        if isinstance(spec, OpcUaSourceSpec) and sec is not None:
            own = data_dir / "opcua"
            sec = replace(sec, certificate=place(sec.certificate) or str(own / f"{spec.name}.der"),
                          private_key=place(sec.private_key) or str(own / f"{spec.name}.pem"),
                          server_certificate=place(sec.server_certificate))
            spec = replace(spec, security=sec)
        out.append(spec)
    return tuple(out)


def input_names(spec: SourceSpec) -> list[str]:
    """The input names a source delivers (the machine model's six included)."""
    if isinstance(spec, ModbusSourceSpec | S7SourceSpec | OpcUaSourceSpec):
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
    kind = SOURCE_TYPE.read(src)
    if kind is not None:
        SOURCE_KEYS[kind].bind(src)
    spec: SourceSpec | None = None
    if kind in ("modbus_tcp", "modbus_rtu"):
        spec = _read_modbus(name, src, kind)
    elif kind == "s7":
        spec = _read_s7(name, src)
    elif kind == "opcua":
        spec = _read_opcua(name, src)
    elif kind == "gpiozero":
        spec = GpioZeroSourceSpec(
            name, GPIO_ZERO_KEYS.read(src, "pin_factory"),
            _read_gpio_inputs(src, chip=False), src.where())
    elif kind == "gpiochip":
        spec = GpioChipSourceSpec(name, GPIO_CHIP_KEYS.read(src, "chip"),
                                  _read_gpio_inputs(src, chip=True), src.where())
    elif kind == "sim":
        spec = _read_sim(name, src)
    src.finish()
    return spec


# -- Modbus ----------------------------------------------------------------------------------

def _read_modbus(name: str, src: Table, kind: str) -> ModbusSourceSpec:
    keys = SOURCE_KEYS[kind]
    if kind == "modbus_tcp":
        link = ModbusLink("tcp", host=keys.read(src, "host"), port=keys.read(src, "port"))
    else:
        link = ModbusLink(
            "rtu", device=keys.read(src, "device"), baudrate=keys.read(src, "baudrate"),
            parity={"none": "N", "even": "E", "odd": "O"}[keys.read(src, "parity")],
            stopbits=_one_of(src, keys["stopbits"]), bytesize=_one_of(src, keys["bytesize"]))
    unit = keys.read(src, "unit")
    poll = keys.read(src, "poll")
    timeout = keys.read(src, "timeout")
    stale_after = keys.read(src, "stale_after") or max(2.0, 3 * poll + timeout)
    reconnect_min = keys.read(src, "reconnect_min")
    reconnect_max = keys.read(src, "reconnect_max")
    if reconnect_max < reconnect_min:
        src.problem("reconnect_max", "'reconnect_max' must not be shorter than 'reconnect_min'")
        reconnect_max = reconnect_min
    inputs: list[tuple[str, Point]] = []
    table = keys.read(src, "inputs")
    if table is not None:
        for input_name, entry in table.entries():
            if entry is None:
                continue
            point = read_point(POINT_KEYS.bind(entry), default_unit=unit,
                               what=f"input '{input_name}'")
            entry.finish()
            if point is not None:
                inputs.append((input_name, point))
    return ModbusSourceSpec(name, link, unit, poll, timeout, stale_after, reconnect_min,
                            reconnect_max, keys.read(src, "max_gap"), keys.read(src, "max_count"),
                            tuple(inputs), src.where())


def read_point(entry: Table, *, default_unit: int, what: str, writable: bool = False) -> Point | None:
    """A Modbus address binding: exactly one of coil / discrete_input / input_register /
    holding_register, plus type, bit, word_order, byte_order, scale, offset and unit."""
    # An output's table declares only the areas it can write: another area is an unknown key.
    allowed = ("coil", "holding_register") if writable else AREA_KEYS
    present = [k for k in allowed if entry.has(k)]
    if len(present) != 1:
        found = f"found {', '.join(present)}" if present else "found none"
        entry.problem(None, f"{what} needs exactly one of {', '.join(allowed)} ({found})")
        for k in present:
            entry.raw(k)
        return None
    key = present[0]
    area = Area(key)
    address = _area(area).read(entry)
    if address is None:
        return None
    unit = _UNIT_KEY.read(entry)
    unit = default_unit if unit is None else unit
    bit = _BIT_KEY.read(entry)
    default_type = "bool" if area.is_bit or bit is not None else "uint16"
    dtype = DataType((None if writable else POINT_KEYS.read(entry, "type")) or default_type)
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
    if writable:  # a lamp's coil or register: the wiring keys only
        return Point(area, address, dtype, unit, bit)
    word_order = Order(POINT_KEYS.read(entry, "word_order"))
    byte_order = Order(POINT_KEYS.read(entry, "byte_order"))
    scale = POINT_KEYS.read(entry, "scale")
    offset = POINT_KEYS.read(entry, "offset")
    if (scale != 1.0 or offset != 0.0) and dtype is DataType.BOOL:
        entry.problem("scale" if entry.has("scale") else "offset",
                      "'scale' and 'offset' apply to numbers, not to bools")
    return Point(area, address, dtype, unit, bit, word_order, byte_order, scale, offset)


def _one_of(t: Table, key: Key) -> int:
    value = t.integer(key.name, key.default)
    options = key.schema["enum"] if key.schema else ()
    if value not in options:
        t.problem(key.name, f"'{key.name}' must be one of {', '.join(map(str, options))}, "
                            f"not {value}")
        return int(key.default)
    return int(value)


# -- Siemens S7 ------------------------------------------------------------------------------

S7_TYPES = tuple(t.value for t in S7Type if t is not S7Type.STRING)


def _reconnect_bounds(src: Table, keys: Keys) -> tuple[float, float]:
    reconnect_min = keys.read(src, "reconnect_min")
    reconnect_max = keys.read(src, "reconnect_max")
    if reconnect_max < reconnect_min:
        src.problem("reconnect_max", "'reconnect_max' must not be shorter than 'reconnect_min'")
        reconnect_max = reconnect_min
    return reconnect_min, reconnect_max


def _read_s7(name: str, src: Table) -> S7SourceSpec:
    keys = S7_KEYS
    poll = keys.read(src, "poll")
    timeout = keys.read(src, "timeout")
    stale_after = keys.read(src, "stale_after") or max(2.0, 3 * poll + timeout)
    reconnect_min, reconnect_max = _reconnect_bounds(src, keys)
    inputs = _read_bindings(src, keys, S7_INPUT_KEYS,
                            lambda entry, what: read_s7_address(entry, what))
    remote_tsap = _tsap(src, "remote_tsap")
    local_tsap = _tsap(src, "local_tsap")
    if remote_tsap is not None and (src.has("rack") or src.has("slot")):
        src.problem("remote_tsap", "write either rack and slot or remote_tsap, not both")
    return S7SourceSpec(name, keys.read(src, "host") or "", keys.read(src, "port"),
                        keys.read(src, "rack"), keys.read(src, "slot"), poll, timeout,
                        stale_after, reconnect_min, reconnect_max, keys.read(src, "max_gap"),
                        inputs, src.where(), remote_tsap=remote_tsap,
                        local_tsap=0x0100 if local_tsap is None else local_tsap)


def _tsap(src: Table, key: str) -> int | None:
    """`"03.01"` (as STEP 7 and LOGO!Soft show a TSAP) -> 0x0301."""
    text = S7_KEYS.read(src, key)
    if text is None:
        return None
    hi, _, lo = str(text).partition(".")
    return int(hi, 16) << 8 | int(lo, 16)


def _read_bindings(src: Table, keys: Keys, entry_keys: Keys,
                   read: Callable[[Table, str], _B | None]) -> tuple[tuple[str, _B], ...]:
    """`[sources.NAME.inputs]`: input name -> what `read(entry, "input 'x'")` makes of it."""
    out: list[tuple[str, _B]] = []
    table = keys.read(src, "inputs")
    for input_name, entry in table.entries() if table is not None else ():
        if entry is None:
            continue
        binding = read(entry_keys.bind(entry), f"input '{input_name}'")
        entry.finish()
        if binding is not None:
            out.append((input_name, binding))
    return tuple(out)


def read_s7_address(entry: Table, what: str, *, key: str = "address",
                    output: bool = False) -> S7Address | None:
    """`{ address = "DB10.DBD8", type = "REAL", scale = 0.1, offset = 0 }`; an output takes a
    bit only (`s7 = "Q1.0"`)."""
    text = entry.string(key)
    dtype = None if output else S7_INPUT_KEYS.read(entry, "type")
    scale = 1.0 if output else S7_INPUT_KEYS.read(entry, "scale")
    offset = 0.0 if output else S7_INPUT_KEYS.read(entry, "offset")
    if text is None:
        return None
    try:
        address = parse_address(text, dtype, scale=1.0 if scale is None else scale,
                                offset=0.0 if offset is None else offset)
    except S7AddressError as exc:
        entry.problem(key, f"{what}: {exc}")
        return None
    if output and (address.bit is None or address.area not in (S7Area.Q, S7Area.M, S7Area.DB)):
        entry.problem(key, f"{what}: a lamp is one bit in Q, M or a DB (e.g. Q1.0, "
                           f"DB10.DBX2.1), not {address.describe()}")
        return None
    return address


# -- OPC UA ----------------------------------------------------------------------------------

# ns=2;i=1042, ns=3;s="DB_Line"."Running", i=2258, ns=1;g=<uuid>, ns=1;b=<base64>
NODE_ID = re.compile(r"(ns=\d{1,5};)?(i=\d{1,10}|s=.{1,4096}|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]{1,4096})")


def _read_opcua(name: str, src: Table) -> OpcUaSourceSpec:
    keys = OPCUA_KEYS
    endpoint = keys.read(src, "endpoint")
    publishing = keys.read(src, "publishing_interval")
    sampling = keys.read(src, "sampling_interval")
    timeout = keys.read(src, "timeout")
    reconnect_min, reconnect_max = _reconnect_bounds(src, keys)
    security = _read_opcua_security(src)
    deadbands: list[tuple[str, float]] = []

    def read_input(entry: Table, what: str) -> str | None:
        deadband = NODE_KEYS.read(entry, "deadband")
        if deadband is not None:
            deadbands.append((what.removeprefix("input '").removesuffix("'"), float(deadband)))
        if entry.has("path") == entry.has("node"):
            entry.problem(None, f"{what} needs exactly one of node (a node id) or path (a browse "
                                "path below Objects, e.g. \"Line/Speed\")")
            NODE_KEYS.read(entry, "path")
            NODE_KEYS.read(entry, "node")
            return None
        if entry.has("path"):
            path = NODE_KEYS.read(entry, "path")
            return None if path is None else "/" + path.strip("/")
        return read_node_id(entry, what)

    inputs = _read_bindings(src, keys, NODE_KEYS, read_input)
    return OpcUaSourceSpec(name, endpoint or "", publishing,
                           publishing if sampling is None else sampling, timeout,
                           reconnect_min, reconnect_max, inputs, src.where(), security,
                           deadbands=tuple(deadbands))


def _read_opcua_security(src: Table) -> OpcUaSecurity | None:
    keys = OPCUA_KEYS
    policy = keys.read(src, "security_policy") or "None"
    mode = keys.read(src, "security_mode") or "SignAndEncrypt"
    certificate = keys.read(src, "certificate")
    private_key = keys.read(src, "private_key")
    server_certificate = keys.read(src, "server_certificate")
    trust_any = bool(keys.read(src, "trust_any_server"))
    username = keys.read(src, "username")
    password_file = keys.read(src, "password_file")
    if policy == "None":
        for key in ("security_mode", "certificate", "private_key", "server_certificate",
                    "trust_any_server"):
            if src.has(key):
                src.problem(key, f"'{key}' needs a security_policy other than \"None\"")
        if username:
            src.problem("username", "a password is sent only over a secured channel: set "
                                    "security_policy (e.g. \"Basic256Sha256\") with 'username'")
        return None
    if bool(certificate) != bool(private_key):
        src.problem("certificate" if certificate else "private_key",
                    "'certificate' and 'private_key' go together (or leave both out: the agent "
                    "then keeps them in data_dir/opcua/)")
    if not server_certificate and not trust_any:
        src.problem(None, f"security_policy \"{policy}\" needs 'server_certificate' (the "
                          "server's certificate file, which linelight then trusts) or, "
                          "knowingly, trust_any_server = true")
    if bool(username) != bool(password_file):
        src.problem("username" if username else "password_file",
                    "'username' and 'password_file' go together")
    return OpcUaSecurity(policy, mode, certificate or "", private_key or "",
                         server_certificate or "", trust_any, username or "",
                         password_file or "")


def read_node_id(entry: Table, what: str, key: str = "node") -> str | None:
    node: str | None = entry.string(key)
    if node is not None and NODE_ID.fullmatch(node) is None:
        entry.problem(key, f"{what}: '{node[:80]}' is not an OPC UA node id; write e.g. "
                           "ns=2;i=1042 or ns=3;s=\"DB_Line\".\"Running\"")
        return None
    return node


# -- GPIO ------------------------------------------------------------------------------------

def _read_gpio_inputs(src: Table, *, chip: bool) -> tuple[GpioInputSpec, ...]:
    table = (GPIO_CHIP_KEYS if chip else GPIO_ZERO_KEYS).read(src, "inputs")
    out: list[GpioInputSpec] = []
    if table is None:
        return ()
    for name, entry in table.entries():
        if entry is None:
            continue
        spec = read_gpio_line(_GPIO_LINE_KEYS[chip].bind(entry), name, chip=chip, output=False)
        entry.finish()
        if spec is not None:
            out.append(spec)
    return tuple(out)


def read_gpio_line(entry: Table, name: str, *, chip: bool, output: bool) -> GpioInputSpec | None:
    keys = _GPIO_LINE_KEYS[chip]
    key = "line" if chip else "pin"
    pin = entry.take(key, (int, str))
    active_low = keys.read(entry, "active_low")
    if output:
        bias, debounce = "as_is", 0.0
    elif chip:
        bias = keys.read(entry, "bias")
        debounce = keys.read(entry, "debounce")
    else:
        bias = keys.read(entry, "pull") or ("none" if active_low else "down")
        debounce = keys.read(entry, "debounce")
        if bias == "up" and not entry.has("active_low"):
            active_low = True  # a switch to ground on a pulled-up pin is active when low
    if pin is None:
        return None
    return GpioInputSpec(name, pin, bool(active_low), bias or "as_is", debounce or 0.0)


# -- simulator -------------------------------------------------------------------------------

def _read_sim(name: str, src: Table) -> SimSourceSpec:
    period = SIM_KEYS.read(src, "period")
    seed = SIM_KEYS.read(src, "seed")
    machine: MachineSpec | None = None
    model = SIM_KEYS.read(src, "model")
    mt = SIM_KEYS.read(src, "machine")
    if model == "machine" or mt is not None:
        if mt is not None and model != "machine":
            mt.problem(None, "[machine] settings need model = \"machine\"")
        machine = _read_machine(mt)
    inputs: list[SimInputSpec] = []
    table = SIM_KEYS.read(src, "inputs")
    if table is not None:
        for input_name, entry in table.entries():
            if entry is None:
                continue
            SIM_INPUT_KEYS.bind(entry)
            if machine is not None and input_name in MACHINE_INPUTS:
                entry.problem(None, f"input '{input_name}' is already made by the machine model; "
                                    "use another name or force() it from a test")
            spec = _read_sim_input(input_name, entry)
            _misplaced_sim_keys(entry)
            entry.finish()
            if spec is not None:
                inputs.append(spec)
    return SimSourceSpec(name, period, seed, machine, tuple(inputs), src.where())


def _read_machine(mt: Table | None) -> MachineSpec:
    if mt is None:
        return MachineSpec()
    spec = MachineSpec(**{key: MACHINE_KEYS.read(mt, key) for key in MACHINE_KEYS.names})
    mt.finish()
    return spec


def _misplaced_sim_keys(entry: Table) -> None:
    """A known key the chosen wave does not use gets a clearer message than 'unknown key'."""
    wave = entry.data.get("wave")
    for key in list(entry.data):
        # noqa reason: rules.fields.Table has no public "was this key read" query yet
        if key in SIM_INPUT_KEYS.names and key not in entry._seen and isinstance(wave, str):  # noqa: SLF001
            entry.raw(key)
            entry.problems.add(entry.where(key), f"'{key}' does not apply to wave = \"{wave}\"")


def _read_sim_input(name: str, entry: Table) -> SimInputSpec | None:
    keys = SIM_INPUT_KEYS
    wave = keys.read(entry, "wave")
    if wave is None:
        return None
    value_type = keys.read(entry, "type") or ("bool" if wave == "square" else "float")
    if wave == "script":
        steps = _read_steps(entry)
        return SimInputSpec(name, wave, value_type=value_type, steps=steps,
                            repeat=keys.read(entry, "repeat"))
    if wave == "constant":
        value = entry.take("value", (bool, int, float, str))
        return SimInputSpec(name, wave, value_type=value_type, steps=((value, 1.0),))
    d = _SIM_WAVE
    period = keys.read(entry, "period")
    low = keys.read(entry, "low")
    high = keys.read(entry, "high")
    if low > high:
        entry.problem("low", f"'low' ({low}) must not be above 'high' ({high})")
    duty = keys.read(entry, "duty") if wave == "square" else d.duty
    step = keys.read(entry, "step") if wave == "random_walk" else d.step
    start = keys.read(entry, "start") if wave == "random_walk" else None
    return SimInputSpec(name, wave, period=period, low=low, high=high, duty=duty, step=step,
                        start=low if start is None else start, value_type=value_type)


def _read_steps(entry: Table) -> tuple[tuple[Any, float], ...]:
    steps: list[tuple[Any, float]] = []
    tables = [_STEP_KEYS.bind(step) for step in entry.tables("steps")]
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
    """Where one lamp is wired: `kind` is gpiozero, gpiochip, modbus, s7, opcua or virtual."""

    kind: str
    pin: int | str | None = None  # gpiozero pin or gpiochip line
    active_low: bool = False
    chip: str = ""
    source: str = ""  # the Modbus source whose connection writes this lamp
    point: Point | None = None  # coil, or holding register (whole, or one bit)
    where: str = ""  # file:line:col of the binding, for messages
    s7: S7Address | None = None  # a bit in Q, M or a DB of the S7 source `source`
    node: str = ""  # a Boolean variable of the OPC UA source `source`


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
    warnings: tuple[str, ...] = ()  # located sentences for `check`: legal but probably wrong


def read_tower(root: Table, sources: tuple[SourceSpec, ...] = ()) -> TowerSpec | None:
    """The `[tower]` table, or None when the file has none."""
    t = root.table("tower")
    if t is None:
        return None
    TOWER_KEYS.bind(t)
    profile_name = TOWER_KEYS.read(t, "profile")
    default_source, default_chip, pin_factory = _binding_defaults(t, TOWER_KEYS)
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
    lamps.update(_read_lamps(TOWER_KEYS.read(t, "lamps")))
    lamps = {lamp: _resolve(b, default_source, default_chip) for lamp, b in lamps.items()}
    _check_bindings(t, lamps, sources)
    if not lamps:
        t.problem(None, "[tower] binds no lamps: add [tower.lamps] or a profile")
    timing = {key: TOWER_KEYS.read(t, key) for key in
              ("blink_slow_hz", "blink_fast_hz", "refresh", "retry", "write_timeout")}
    on_exit = _read_on_exit(t, lamps)
    warnings = _on_exit_warnings(t, on_exit)
    t.finish()
    return TowerSpec(lamps, **timing, on_exit=on_exit, pin_factory=pin_factory,
                     profile=profile_name, location=t.where(), warnings=warnings)


def _binding_defaults(t: Table, keys: Keys) -> tuple[str | None, str | None, str | None]:
    """`source`, `chip` and `pin_factory` of [tower] or [outputs]: for bindings without them."""
    return keys.read(t, "source"), keys.read(t, "chip"), keys.read(t, "pin_factory")


def _read_lamps(table: Table | None) -> dict[str, LampBinding]:
    """`[tower.lamps]` (or a profile's `[lamps]`): lamp name -> where it is wired."""
    lamps: dict[str, LampBinding] = {}
    if table is None:
        return lamps
    for lamp, entry in table.entries():
        if entry is None:
            continue
        if lamp not in LAMPS:
            table.problems.add(table.where(lamp), _lamp_message(lamp))
            continue
        binding = read_lamp_binding(LAMP_KEYS.bind(entry), f"lamp '{lamp}'")
        entry.finish()
        if binding is not None:
            lamps[lamp] = binding
    return lamps


def read_lamp_binding(entry: Table, what: str) -> LampBinding | None:
    where = str(entry.where())
    kinds = [k for k in ("pin", "line", "coil", "holding_register", "s7", "opcua", "virtual")
             if entry.has(k)]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        entry.problem(None, f"{what} needs exactly one of pin (gpiozero), line (gpiochip), "
                            f"coil or holding_register (Modbus), s7 (an S7 bit), opcua (a "
                            f"Boolean node), virtual ({found})")
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
        chip = LAMP_KEYS.read(entry, "chip") if key == "line" else ""
        if spec is None:
            return None
        return LampBinding("gpiozero" if key == "pin" else "gpiochip", spec.pin, spec.active_low,
                           chip=chip or "", where=where)
    source = LAMP_KEYS.read(entry, "source")
    if key == "opcua":
        node = read_node_id(entry, what, key="opcua")
        return None if node is None else LampBinding("opcua", source=source or "", where=where,
                                                      node=node)
    if key == "s7":
        address = read_s7_address(entry, what, key="s7", output=True)
        return None if address is None else LampBinding("s7", source=source or "", where=where,
                                                         s7=address)
    point = read_point(entry, default_unit=-1, what=what, writable=True)
    if point is None:
        return None
    return LampBinding("modbus", source=source or "", point=point, where=where)


def _resolve(b: LampBinding, default_source: str | None, default_chip: str | None) -> LampBinding:
    if b.kind in ("modbus", "s7", "opcua") and not b.source and default_source:
        b = replace(b, source=default_source)
    if b.kind == "gpiochip" and not b.chip:
        b = LampBinding(b.kind, b.pin, b.active_low, chip=default_chip or "/dev/gpiochip0",
                        where=b.where)
    return b


def _check_bindings(t: Table, bindings: dict[str, LampBinding], sources: tuple[SourceSpec, ...],
                    *, what: str = "lamp", section: str = "[tower]") -> None:
    """Each Modbus, S7 or OPC UA binding names a configured source of its kind."""
    modbus_sources = {s.name: s for s in sources if isinstance(s, ModbusSourceSpec)}
    s7_sources = {s.name for s in sources if isinstance(s, S7SourceSpec)}
    opcua_sources = {s.name for s in sources if isinstance(s, OpcUaSourceSpec)}
    for name, b in bindings.items():
        if b.kind == "modbus":
            _check_lamp_source(t, name, b, set(modbus_sources), sources, "Modbus", what, section)
        elif b.kind == "s7":
            _check_lamp_source(t, name, b, s7_sources, sources, "S7", what, section)
        elif b.kind == "opcua":
            _check_lamp_source(t, name, b, opcua_sources, sources, "OPC UA", what, section)


def _check_lamp_source(t: Table, lamp: str, b: LampBinding, names: set[str],
                       sources: tuple[SourceSpec, ...], kind: str, what: str = "lamp",
                       section: str = "[tower]") -> None:
    at = f" (bound at {b.where})" if b.where else ""
    article = "an" if kind[0] in "AEIOSU" else "a"
    if not b.source:
        t.problem(None, f"{what} '{lamp}' is {article} {kind} output but no source is "
                        f"named{at}: set source = \"NAME\" on the {what} or in {section}")
    elif b.source not in names:
        listed = ", ".join(names if kind == "Modbus" else sorted(names)) or "none"
        t.problem(None, f"{what} '{lamp}' names source '{b.source}'{at}, which is not "
                        f"{article} {kind} source ({kind} sources: {listed})")


def _read_on_exit(t: Table, lamps: dict[str, LampBinding], *, what: str = "lamp"
                  ) -> dict[str, Pattern]:
    raw = t.raw("on_exit", "off")
    allowed = ("off", "on")
    if isinstance(raw, str):
        if raw not in allowed:
            example, why = (("red", " (a blinking lamp cannot outlive the agent that blinks it)")
                            if what == "lamp" else (next(iter(lamps), "horn"), ""))
            t.problem("on_exit", f"'on_exit' must be \"off\", \"on\" or a table such as "
                                 f"{{ {example} = \"on\" }}, not '{raw}'{why}")
            raw = "off"
        return {lamp: Pattern(raw) for lamp in lamps}
    sub = t.table("on_exit")
    if sub is None:
        return {lamp: Pattern.OFF for lamp in lamps}
    out = {lamp: Pattern.OFF for lamp in lamps}
    for lamp in list(sub.data):
        pattern = sub.choice(lamp, allowed)
        if lamp not in lamps:
            sub.problems.add(sub.where(lamp), _lamp_message(lamp)
                             if what == "lamp" and lamp not in LAMPS
                             else f"on_exit names {what} '{lamp}', which "
                                  f"{'the tower' if what == 'lamp' else '[outputs.wiring]'} "
                                  "does not bind")
        elif pattern is not None:
            out[lamp] = Pattern(pattern)
    sub.finish()
    return out


def _on_exit_warnings(t: Table, on_exit: dict[str, Pattern]) -> tuple[str, ...]:
    if on_exit.get("green") is not Pattern.ON:
        return ()
    per_lamp = isinstance(t.raw("on_exit"), dict)
    where = t.doc.value_location((*t.path, "on_exit", "green") if per_lamp else (*t.path, "on_exit"))
    return (f"{where}: on_exit lights green after the agent stops: a machine nobody watches "
            "would look like it is producing; light red or amber instead, or \"off\"",)


def _lamp_message(lamp: str) -> str:
    return f"unknown lamp '{lamp}'{did_you_mean(lamp, LAMPS) or '; lamps are ' + ', '.join(LAMPS)}"


# -- outputs ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OutputsSpec:
    """The `[outputs]` table: where each `[[output]]` rule's line, coil or bit is wired (bound
    like a lamp of the tower), and how the agent writes them."""

    wiring: dict[str, LampBinding]
    refresh: float = 5.0
    retry: float = 0.5
    write_timeout: float = 1.0
    on_exit: dict[str, bool] = field(default_factory=dict)
    pin_factory: str | None = None
    location: Location | None = None
    where: dict[str, Location] = field(default_factory=dict)  # each binding's name, for messages


def read_outputs(root: Table, sources: tuple[SourceSpec, ...] = ()) -> OutputsSpec | None:
    """The `[outputs]` table, or None when the file has none. Each name is checked against the
    rules' `[[output]]`s later (agent.config.check_outputs): the rules are read after this."""
    t = root.table("outputs")
    if t is None:
        return None
    OUTPUTS_KEYS.bind(t)
    default_source, default_chip, pin_factory = _binding_defaults(t, OUTPUTS_KEYS)
    wiring: dict[str, LampBinding] = {}
    where: dict[str, Location] = {}
    table = OUTPUTS_KEYS.read(t, "wiring")
    if table is not None:
        for name, entry in table.entries():
            if entry is None:
                continue
            binding = read_lamp_binding(OUTPUT_BINDING_KEYS.bind(entry), f"output '{name}'")
            entry.finish()
            if binding is not None:
                wiring[name] = _resolve(binding, default_source, default_chip)
                where[name] = table.where(name)
    _check_bindings(t, wiring, sources, what="output", section="[outputs]")
    if table is None:
        t.problem(None, "[outputs] wires no output: add [outputs.wiring] with each [[output]] "
                        "rule's line, e.g. may_start = { coil = 10 }")
    timing = {key: OUTPUTS_KEYS.read(t, key) for key in ("refresh", "retry", "write_timeout")}
    on_exit = {name: p is Pattern.ON
               for name, p in _read_on_exit(t, wiring, what="output").items()}
    t.finish()
    return OutputsSpec(wiring, **timing, on_exit=on_exit, pin_factory=pin_factory,
                       location=t.where(), where=where)


def line_written(b: LampBinding, unit_of: dict[str, int]) -> tuple[tuple[Any, ...], int | None] | None:
    """What a binding writes, as (device word or line, bit): two bindings share a line when the
    first parts are equal and the bits are equal or either is the whole. None: virtual."""
    if b.kind == "virtual":
        return None
    if b.kind in ("gpiozero", "gpiochip"):
        return (b.kind, b.chip, str(b.pin)), None
    if b.kind == "s7":
        a = b.s7
        return (("s7", b.source, a.area, a.db, a.byte), a.bit) if a is not None else None
    if b.kind == "opcua":
        return ("opcua", b.source, b.node), None
    p = b.point
    if p is None:
        return None
    unit = unit_of.get(b.source, 1) if p.unit < 0 else p.unit
    return ("modbus", b.source, unit, p.area, p.address), p.bit


def shared_lines(bindings: list[tuple[str, LampBinding]], sources: tuple[SourceSpec, ...]
                 ) -> list[tuple[int, int]]:
    """Pairs (index, index of an earlier one) of `bindings` that write the same line, coil,
    register bit, S7 bit or node: two writers that would fight over one output."""
    unit_of = {s.name: s.unit for s in sources if isinstance(s, ModbusSourceSpec)}
    seen: dict[tuple[Any, ...], list[tuple[int | None, int]]] = {}
    pairs: list[tuple[int, int]] = []
    for i, (_, b) in enumerate(bindings):
        line = line_written(b, unit_of)
        if line is None:
            continue
        key, bit = line
        other = next((j for other_bit, j in seen.get(key, ())
                      if bit is None or other_bit is None or bit == other_bit), None)
        if other is not None:
            pairs.append((i, other))
        seen.setdefault(key, []).append((bit, i))
    return pairs


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
    t = PROFILE_KEYS.bind(Table.root(doc, problems))
    description = PROFILE_KEYS.read(t, "description")
    document = PROFILE_KEYS.read(t, "document")
    chip = PROFILE_KEYS.read(t, "chip")
    lamps = _read_lamps(PROFILE_KEYS.read(t, "lamps"))
    t.finish()
    problems.raise_if_any()
    return Profile(name, description or "", document or "", chip, lamps)


# -- the key tables: the readers above and the JSON Schema (hw.schema) both come from these ----

_LINK = ModbusLink("tcp")
_MACHINE = MachineSpec()
_TOWER = TowerSpec(lamps={})

_AREA_TEXT = {
    Area.COIL: "coil address, 0-based (manual number 00001 = 0); function 01 / 05",
    Area.DISCRETE_INPUT: "discrete input address, 0-based (manual 10001 = 0); function 02",
    Area.INPUT_REGISTER: "input register address, 0-based (manual 30001 = 0); function 04",
    Area.HOLDING_REGISTER: "holding register address, 0-based (manual 40001 = 0); function 03 / 06",
}


def _area(area: Area) -> Key:
    return Key(area.value, "integer", _AREA_TEXT[area], None, minimum=0, maximum=65535,
               why="a 0-based address")


_UNIT_KEY = Key("unit", "integer", "Modbus unit id (slave address) if not the source's", None,
                minimum=0, maximum=255, why="the Modbus unit id / slave address")
_BIT_KEY = Key("bit", "integer", "bit of the register, 0 = least significant", None,
               minimum=0, maximum=15, why="0 is the least significant bit")
_VALUE = {"type": ["boolean", "number", "string"]}
_LINE_VALUE = {"type": ["integer", "string"]}

POINT_KEYS = Keys(
    "one input: exactly one of coil, discrete_input, input_register, holding_register",
    (*(_area(a) for a in Area), _UNIT_KEY, _BIT_KEY,
     Key("type", "choice", "data type (bool for coils, discrete inputs and bits)", None,
         default_text="uint16 for registers", choices=tuple(d.value for d in DataType)),
     Key("word_order", "choice", "order of the two registers of a 32-bit value: big = high "
         "word first (ABCD), little = low word first (CDAB)", "big", choices=("big", "little")),
     Key("byte_order", "choice", "order of the bytes inside each register", "big",
         choices=("big", "little")),
     Key("scale", "number", "value = raw * scale + offset", 1.0),
     Key("offset", "number", "value = raw * scale + offset", 0.0)),
    extra_schema={"oneOf": [{"required": [a.value]} for a in Area]})

SOURCE_TYPE = Key("type", "choice", "the kind of source", REQUIRED, choices=SOURCE_TYPES)
_MODBUS_COMMON = Keys("Modbus", (
    SOURCE_TYPE,
    Key("unit", "integer", "default Modbus unit id (slave address)", 1, minimum=0, maximum=255,
        why="the Modbus unit id / slave address"),
    Key("poll", "duration", "poll period", 0.1, allow_zero=False),
    Key("timeout", "duration", "answer timeout per request", 0.5, allow_zero=False),
    Key("stale_after", "duration", "inputs turn STALE after this long without an answer", None,
        default_text="max(2s, 3 x poll + timeout)", allow_zero=False),
    Key("reconnect_min", "duration", "first reconnect delay, so a dead device is not hammered "
        "with connection attempts", 0.5, allow_zero=False, minimum=0.5,
        why="so a dead device is not hammered with connection attempts"),
    Key("reconnect_max", "duration", "reconnect delay cap, doubling from reconnect_min", 10.0,
        allow_zero=False),
    Key("max_gap", "integer", "merge reads across holes of up to this many addresses", 0,
        minimum=0),
    Key("max_count", "integer", "most items per read, for devices that accept fewer than the "
        "protocol's 125 registers / 2000 bits", None, minimum=1),
    Key("inputs", "entries", "input name -> Modbus address", None, keys=POINT_KEYS),
))
MODBUS_TCP_KEYS = _MODBUS_COMMON.plus(
    Key("host", "string", "the device's name or address"),
    Key("port", "integer", "TCP port", _LINK.port, minimum=1, maximum=65535),
    text="Modbus TCP device")
MODBUS_RTU_KEYS = _MODBUS_COMMON.plus(
    Key("device", "string", "serial port, e.g. /dev/ttyUSB0, or socket://host:port for RTU "
        "over TCP"),
    Key("baudrate", "integer", "bits per second", _LINK.baudrate, minimum=300),
    Key("parity", "choice", "parity", "none", choices=("none", "even", "odd")),
    Key("stopbits", "value", "stop bits", _LINK.stopbits, schema={"enum": [1, 2]}),
    Key("bytesize", "value", "data bits", _LINK.bytesize, schema={"enum": [7, 8]}),
    text="Modbus RTU bus")


def _gpio_line_keys(chip: bool) -> Keys:
    if chip:
        line = (Key("line", "value", "line offset or name", schema=_LINE_VALUE),
                Key("bias", "choice", "line bias", "as_is",
                    choices=("as_is", "pull_up", "pull_down", "disabled")))
    else:
        line = (Key("pin", "value", 'pin: 17, "GPIO17", "BOARD11"', schema=_LINE_VALUE),
                Key("pull", "choice", "pull resistor; up implies active_low", None,
                    default_text="down (none with active_low)", choices=("up", "down", "none")))
    return Keys("one input line", (
        *line,
        Key("active_low", "boolean", "the input is true when the line is low", False),
        Key("debounce", "duration", "a new level counts once it has held this long", 0.0)))


_GPIO_LINE_KEYS = {False: _gpio_line_keys(chip=False), True: _gpio_line_keys(chip=True)}
GPIO_ZERO_KEYS = Keys("Raspberry Pi GPIO (gpiozero)", (
    SOURCE_TYPE,
    Key("pin_factory", "choice", "gpiozero pin factory", None, default_text="gpiozero's choice",
        choices=PIN_FACTORIES),
    Key("inputs", "entries", "input name -> pin", None, keys=_GPIO_LINE_KEYS[False])))
GPIO_CHIP_KEYS = Keys("GPIO chip (libgpiod)", (
    SOURCE_TYPE,
    Key("chip", "string", "the chip's device", "/dev/gpiochip0"),
    Key("inputs", "entries", "input name -> line", None, keys=_GPIO_LINE_KEYS[True])))

MACHINE_KEYS = Keys("the simulated machine", (
    Key("cycle", "duration", "time per part while producing", _MACHINE.cycle, allow_zero=False),
    Key("producing", "duration", "length of a producing phase", _MACHINE.producing,
        allow_zero=False),
    Key("microstop", "duration", "length of a microstop", _MACHINE.microstop, allow_zero=False),
    Key("fault", "duration", "length of a fault", _MACHINE.fault, allow_zero=False),
    Key("idle", "duration", "length of an idle phase", _MACHINE.idle, allow_zero=False),
    Key("fault_code", "integer", "fault_code while faulted", _MACHINE.fault_code, minimum=1),
    Key("rpm", "number", "spindle speed while producing", _MACHINE.rpm),
))
_STEP_KEYS = Keys("one script step", (
    Key("value", "value", "the value", schema=_VALUE),
    Key("hold", "duration", "how long the value holds", allow_zero=False)))
_SIM_WAVE = SimInputSpec("", "")
SIM_INPUT_KEYS = Keys("one simulated input", (
    Key("wave", "choice", "waveform", choices=WAVES),
    Key("type", "choice", "value type", None, default_text="bool for square, else float",
        choices=("bool", "int", "float")),
    Key("period", "duration", "period of square / ramp / random_walk", _SIM_WAVE.period,
        allow_zero=False),
    Key("low", "number", "lowest value", _SIM_WAVE.low),
    Key("high", "number", "highest value", _SIM_WAVE.high),
    Key("duty", "number", "fraction of the square period spent high", _SIM_WAVE.duty,
        above=0.0, below=1.0),
    Key("step", "number", "largest random-walk step per tick", _SIM_WAVE.step),
    Key("start", "number", "random-walk start value", None, default_text="low"),
    Key("steps", "value", "script steps", None,
        schema={"type": "array", "items": _STEP_KEYS.schema()}),
    Key("repeat", "boolean", "loop the script", _SIM_WAVE.repeat),
    Key("value", "value", "constant value", None, schema=_VALUE),
))
SIM_KEYS = Keys("simulated inputs", (
    SOURCE_TYPE,
    Key("period", "duration", "update period", 0.05, allow_zero=False),
    Key("seed", "integer", "random seed", 1),
    Key("model", "choice", f"machine: delivers {', '.join(MACHINE_INPUTS)}", "none",
        choices=("machine", "none")),
    Key("machine", "table", MACHINE_KEYS.text, None, keys=MACHINE_KEYS),
    Key("inputs", "entries", "input name -> waveform", None, keys=SIM_INPUT_KEYS),
))

S7_INPUT_KEYS = Keys("one input at an S7 address", (
    Key("address", "string", "S7 address as TIA Portal writes it: DB10.DBX4.0, DB10.DBW6, "
        "DB10.DBD8, M0.1, MW2, I0.3, Q1.0"),
    Key("type", "string", "BOOL for bits; BYTE for B; WORD or INT for W; DWORD, DINT or REAL "
        "for D; STRING[n] at a DB byte", None,
        default_text="the address's width: BOOL, BYTE, WORD, DWORD",
        pattern="(" + "|".join(S7_TYPES) + r")|STRING\[[0-9]{1,3}\]",
        pattern_text="one of " + ", ".join(S7_TYPES) + " or STRING[n]"),
    Key("scale", "number", "value = raw * scale + offset", 1.0),
    Key("offset", "number", "value = raw * scale + offset", 0.0)))
_RECONNECT = (
    Key("reconnect_min", "duration", "first reconnect delay, so a dead device is not hammered "
        "with connection attempts", 0.5, allow_zero=False, minimum=0.5,
        why="so a dead device is not hammered with connection attempts"),
    Key("reconnect_max", "duration", "reconnect delay cap, doubling from reconnect_min", 10.0,
        allow_zero=False))
S7_KEYS = Keys("Siemens S7 CPU (S7comm)", (
    SOURCE_TYPE,
    Key("host", "string", "the CPU's name or address"),
    Key("port", "integer", "ISO-on-TCP port", 102, minimum=1, maximum=65535),
    Key("rack", "integer", "rack of the CPU", 0, minimum=0, maximum=7),
    Key("slot", "integer", "slot of the CPU (S7-1200/1500: 1, S7-300: 2)", 1, minimum=0,
        maximum=31),
    Key("poll", "duration", "poll period", 0.1, allow_zero=False),
    Key("timeout", "duration", "answer timeout per request", 1.0, allow_zero=False),
    Key("stale_after", "duration", "inputs turn STALE after this long without an answer", None,
        default_text="max(2s, 3 x poll + timeout)", allow_zero=False),
    *_RECONNECT,
    Key("max_gap", "integer", "merge reads across holes of up to this many bytes", 16,
        minimum=0),
    Key("remote_tsap", "string", "the CPU's TSAP instead of rack/slot, as STEP 7 shows it", None,
        pattern=r"[0-9A-Fa-f]{2}\.[0-9A-Fa-f]{2}", pattern_text='two hex bytes such as "03.01"'),
    Key("local_tsap", "string", "linelight's TSAP", "01.00",
        pattern=r"[0-9A-Fa-f]{2}\.[0-9A-Fa-f]{2}", pattern_text='two hex bytes such as "01.00"'),
    Key("inputs", "entries", "input name -> S7 address", None, keys=S7_INPUT_KEYS),
))
NODE_KEYS = Keys("one input at an OPC UA node", (
    Key("node", "string", 'node id: ns=2;i=1042, ns=3;s="DB_Line"."Running"', None),
    Key("path", "string", "browse path below Objects instead of a node id: Line/Speed "
        "(any namespace unless written 3:Line)", None, pattern=r"[^/]+(/[^/]+){0,31}/?|/[^/]+(/[^/]+){0,31}/?",
        pattern_text="browse names separated by '/', e.g. Line/Speed"),
    Key("deadband", "number", "report a numeric value only when it moved by more than this "
        "(absolute, applied by the server)", None, minimum=0.0)))
OPCUA_KEYS = Keys("OPC UA server (data-change subscription)", (
    SOURCE_TYPE,
    Key("endpoint", "string", "opc.tcp://host:4840 (path if the server has one)",
        pattern=r"opc\.tcp://.+", pattern_text="an opc.tcp:// URL such as "
        "opc.tcp://192.0.2.40:4840"),
    Key("publishing_interval", "duration", "how often the server sends changes", 0.1,
        allow_zero=False),
    Key("sampling_interval", "duration", "how often the server samples each input", None,
        default_text="publishing_interval"),
    Key("timeout", "duration", "deadline of one request", 2.0, allow_zero=False),
    *_RECONNECT,
    Key("security_policy", "choice", "secure channel", "None", choices=OPCUA_POLICIES),
    Key("security_mode", "choice", "Sign or SignAndEncrypt", "SignAndEncrypt",
        choices=OPCUA_MODES),
    Key("certificate", "string", "client certificate (DER), relative to the config file; "
        "generated on first start if missing; default data_dir/opcua/NAME.der", ""),
    Key("private_key", "string", "client key (PEM), generated with the certificate; default "
        "data_dir/opcua/NAME.pem", ""),
    Key("server_certificate", "string", "the server certificate linelight trusts (DER or PEM), "
        "relative to the config file", ""),
    Key("trust_any_server", "boolean", "accept any server certificate", False),
    Key("username", "string", "user to log in as", ""),
    Key("password_file", "string", "file holding the password; relative: in "
        "$CREDENTIALS_DIRECTORY", ""),
    Key("inputs", "entries", "input name -> node", None, keys=NODE_KEYS),
))

SOURCE_KEYS: dict[str, Keys] = {
    "modbus_tcp": MODBUS_TCP_KEYS, "modbus_rtu": MODBUS_RTU_KEYS, "s7": S7_KEYS,
    "opcua": OPCUA_KEYS, "gpiozero": GPIO_ZERO_KEYS,
    "gpiochip": GPIO_CHIP_KEYS, "sim": SIM_KEYS,
}
assert tuple(SOURCE_KEYS) == SOURCE_TYPES, (
    f"every source type needs its key table in hw.config.SOURCE_KEYS: {SOURCE_TYPES} "
    f"declared, tables for {tuple(SOURCE_KEYS)}")


LAMP_KEYS = Keys("exactly one of pin, line, coil, holding_register, s7, opcua, virtual", (
    Key("pin", "value", "gpiozero pin", None, schema=_LINE_VALUE),
    Key("line", "value", "gpiochip line offset or name", None, schema=_LINE_VALUE),
    Key("chip", "string", "gpiochip device", None, default_text="[tower] chip"),
    Key("active_low", "boolean", "the lamp is on when the line is low", False),
    Key("source", "string", "Modbus, S7 or OPC UA source whose connection writes it", None,
        default_text="[tower] source"),
    Key("s7", "string", "an S7 bit: Q1.0, M0.1 or DB10.DBX2.3 (written bit-wise; the PLC's "
        "bits of the same byte are untouched)", None),
    Key("opcua", "string", "a Boolean node of the OPC UA source, e.g. ns=2;s=Tower.Green", None),
    Key("virtual", "value", "no hardware: shown in /status only", None, schema={"const": True}),
    _area(Area.COIL), _area(Area.HOLDING_REGISTER), _UNIT_KEY, _BIT_KEY,
))
_ON_EXIT = {"anyOf": [{"enum": ["off", "on"]},
                      {"type": "object", "additionalProperties": False,
                       "properties": {lamp: {"enum": ["off", "on"]} for lamp in LAMPS}}]}
TOWER_KEYS = Keys("the stack light", (
    Key("profile", "string", "a profile from hw/profiles (lamp map)", None),
    Key("source", "string", "default Modbus source for lamps", None),
    Key("chip", "string", "default gpiochip for lamps", None),
    Key("pin_factory", "choice", "gpiozero pin factory for lamps", None, choices=PIN_FACTORIES),
    Key("blink_slow_hz", "number", "slow blink, flashes per second", _TOWER.blink_slow_hz,
        above=0.0, maximum=50.0, why="flashes per second"),
    Key("blink_fast_hz", "number", "fast blink, flashes per second", _TOWER.blink_fast_hz,
        above=0.0, maximum=50.0, why="flashes per second"),
    Key("refresh", "duration", "rewrite every lamp this often", _TOWER.refresh,
        allow_zero=False),
    Key("retry", "duration", "retry a failed write this often", _TOWER.retry, allow_zero=False),
    Key("write_timeout", "duration", "deadline of one output write", _TOWER.write_timeout,
        allow_zero=False),
    Key("on_exit", "value", "lamps at clean shutdown: off, on, or per lamp (a blinking lamp "
        "cannot outlive the agent that blinks it)", "off", schema=_ON_EXIT),
    Key("lamps", "table", "where each lamp is wired", None, keys=Keys("lamp -> wiring", tuple(
        Key(lamp, "table", LAMP_KEYS.text, None, keys=LAMP_KEYS) for lamp in LAMPS))),
))
OUTPUT_BINDING_KEYS = Keys("exactly one of pin, line, coil, holding_register, s7, opcua, virtual",
                           tuple(replace(k, default_text=k.default_text.replace("[tower]",
                                                                                "[outputs]"))
                                 for k in LAMP_KEYS.keys))
_OUTPUTS = OutputsSpec(wiring={})
OUTPUTS_KEYS = Keys("digital outputs the [[output]] rules drive", (
    Key("source", "string", "default Modbus, S7 or OPC UA source for outputs", None),
    Key("chip", "string", "default gpiochip for outputs", None),
    Key("pin_factory", "choice", "gpiozero pin factory for outputs", None, choices=PIN_FACTORIES),
    Key("refresh", "duration", "rewrite every output this often", _OUTPUTS.refresh,
        allow_zero=False),
    Key("retry", "duration", "retry a failed write this often", _OUTPUTS.retry, allow_zero=False),
    Key("write_timeout", "duration", "deadline of one output write", _OUTPUTS.write_timeout,
        allow_zero=False),
    Key("on_exit", "value", "outputs at clean shutdown: off, on, or per output", "off",
        schema={"anyOf": [{"enum": ["off", "on"]},
                          {"type": "object", "additionalProperties": {"enum": ["off", "on"]}}]}),
    Key("wiring", "entries", "where each output is wired, by the [[output]] rule's name", None,
        keys=OUTPUT_BINDING_KEYS),
))
PROFILE_KEYS = Keys("a hardware profile", (
    Key("description", "string", "what the device is"),
    Key("document", "string", "where its wiring is documented"),
    Key("chip", "string", "gpiochip of its lamps", None),
    Key("lamps", "table", "where each lamp is wired", REQUIRED, keys=TOWER_KEYS["lamps"].keys),
))
