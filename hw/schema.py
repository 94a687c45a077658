"""JSON Schema of the `[sources.NAME]` and `[tower]` tables, for taplo / Even Better TOML.

Both parts are self-contained (no `$ref`) so the agent-config schema can embed them as the
`sources` and `tower` properties. tests/hw/test_schema.py checks every key here is one the
readers in hw.config accept (none is reported as an unknown key).
"""

from __future__ import annotations

from typing import Any

from linelight.hw.config import MACHINE_INPUTS, PIN_FACTORIES, WAVES
from linelight.hw.modbus_codec import Area, DataType
from linelight.rules.values import LAMPS

DURATION = r"^\s*\d+(\.\d+)?\s*(us|ms|s|m|min|h)\s*$"


def _duration(text: str) -> dict[str, Any]:
    return {"description": text, "anyOf": [{"type": "string", "pattern": DURATION},
                                           {"type": "integer", "enum": [0]}]}


def _int(text: str, lo: int, hi: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text, "type": "integer", "minimum": lo}
    if hi is not None:
        out["maximum"] = hi
    return out


def _enum(text: str, values: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {"description": text, "type": "string", "enum": list(values)}


def _obj(props: dict[str, Any], required: list[str] | None = None, text: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    if text:
        out["description"] = text
    return out


_AREA_TEXT = {
    Area.COIL: "coil address, 0-based (manual number 00001 = 0); function 01 / 05",
    Area.DISCRETE_INPUT: "discrete input address, 0-based (manual 10001 = 0); function 02",
    Area.INPUT_REGISTER: "input register address, 0-based (manual 30001 = 0); function 04",
    Area.HOLDING_REGISTER: "holding register address, 0-based (manual 40001 = 0); function 03 / 06",
}


def _point(areas: tuple[Area, ...], *, inputs: bool) -> dict[str, Any]:
    props: dict[str, Any] = {a.value: _int(_AREA_TEXT[a], 0, 65535) for a in areas}
    props["unit"] = _int("Modbus unit id (slave address) if not the source's", 0, 255)
    props["bit"] = _int("bit of the register, 0 = least significant", 0, 15)
    if inputs:
        props["type"] = _enum("data type (bool for coils, discrete inputs and bits; "
                              "uint16 by default for registers)", [d.value for d in DataType])
        props["word_order"] = _enum("order of the two registers of a 32-bit value: big = high "
                                    "word first (ABCD), little = low word first (CDAB)",
                                    ["big", "little"])
        props["byte_order"] = _enum("order of the bytes inside each register", ["big", "little"])
        props["scale"] = {"type": "number", "description": "value = raw * scale + offset"}
        props["offset"] = {"type": "number", "description": "value = raw * scale + offset"}
    return props


def _modbus_input() -> dict[str, Any]:
    areas = tuple(Area)
    out = _obj(_point(areas, inputs=True), text="one input: exactly one of coil, "
               "discrete_input, input_register, holding_register")
    out["oneOf"] = [{"required": [a.value]} for a in areas]
    return out


def _common_modbus() -> dict[str, Any]:
    return {
        "unit": _int("default Modbus unit id (slave address)", 0, 255),
        "poll": _duration("poll period (default 100ms)"),
        "timeout": _duration("answer timeout per request (default 500ms)"),
        "stale_after": _duration("inputs turn STALE after this long without an answer "
                                 "(default max(2s, 3 x poll + timeout))"),
        "reconnect_min": _duration("first reconnect delay, at least 500ms (default)"),
        "reconnect_max": _duration("reconnect delay cap, doubling from reconnect_min (default 10s)"),
        "max_gap": _int("merge reads across holes of up to this many addresses (default 0)", 0),
        "max_count": _int("most items per read, for devices that accept fewer than the "
                          "protocol's 125 registers / 2000 bits", 1),
        "inputs": {"type": "object", "description": "input name -> Modbus address",
                   "additionalProperties": _modbus_input()},
    }


def _gpio_inputs(chip: bool) -> dict[str, Any]:
    line = ({"line": {"type": ["integer", "string"], "description": "line offset or name"},
             "bias": _enum("line bias", ["as_is", "pull_up", "pull_down", "disabled"])}
            if chip else
            {"pin": {"type": ["integer", "string"], "description": "pin: 17, \"GPIO17\", "
                     "\"BOARD11\""},
             "pull": _enum("pull resistor (default down; up implies active_low)",
                           ["up", "down", "none"])})
    props = {**line, "active_low": {"type": "boolean", "description": "the input is true when "
                                     "the line is low"},
             "debounce": _duration("a new level counts once it has held this long")}
    return {"type": "object", "description": "input name -> line",
            "additionalProperties": _obj(props, ["line" if chip else "pin"])}


def _sim_input() -> dict[str, Any]:
    step = _obj({"value": {"type": ["boolean", "number", "string"]},
                 "hold": _duration("how long the value holds")}, ["value", "hold"])
    return _obj({
        "wave": _enum("waveform", WAVES),
        "type": _enum("value type", ["bool", "int", "float"]),
        "period": _duration("period of square / ramp"),
        "low": {"type": "number"}, "high": {"type": "number"},
        "duty": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                 "description": "fraction of the square period spent high"},
        "step": {"type": "number", "description": "largest random-walk step per tick"},
        "start": {"type": "number", "description": "random-walk start value"},
        "steps": {"type": "array", "items": step, "description": "script steps"},
        "repeat": {"type": "boolean", "description": "loop the script (default true)"},
        "value": {"type": ["boolean", "number", "string"], "description": "constant value"},
    }, ["wave"])


def sources_schema_part() -> dict[str, Any]:
    """The schema of the `sources` table: source name -> one source."""
    tcp = _obj({"type": {"const": "modbus_tcp"}, "host": {"type": "string"},
                "port": _int("TCP port (default 502)", 1, 65535), **_common_modbus()},
               ["type", "host"], "Modbus TCP device")
    rtu = _obj({"type": {"const": "modbus_rtu"},
                "device": {"type": "string", "description": "serial port, e.g. /dev/ttyUSB0, "
                           "or socket://host:port for RTU over TCP"},
                "baudrate": _int("bits per second (default 19200)", 300),
                "parity": _enum("parity (default none)", ["none", "even", "odd"]),
                "stopbits": {"enum": [1, 2]}, "bytesize": {"enum": [7, 8]},
                **_common_modbus()}, ["type", "device"], "Modbus RTU bus")
    zero = _obj({"type": {"const": "gpiozero"},
                 "pin_factory": _enum("gpiozero pin factory (default: gpiozero's choice)",
                                      PIN_FACTORIES),
                 "inputs": _gpio_inputs(chip=False)}, ["type"], "Raspberry Pi GPIO (gpiozero)")
    chip = _obj({"type": {"const": "gpiochip"},
                 "chip": {"type": "string", "description": "default /dev/gpiochip0"},
                 "inputs": _gpio_inputs(chip=True)}, ["type"], "GPIO chip (libgpiod)")
    machine = _obj({
        "cycle": _duration("time per part while producing (default 2s)"),
        "producing": _duration("length of a producing phase (default 20s)"),
        "microstop": _duration("length of a microstop (default 3s)"),
        "fault": _duration("length of a fault (default 8s)"),
        "idle": _duration("length of an idle phase (default 6s)"),
        "fault_code": _int("fault_code while faulted (default 17)", 1),
        "rpm": {"type": "number", "description": "spindle speed while producing (default 3000)"},
    })
    sim = _obj({"type": {"const": "sim"}, "period": _duration("update period (default 50ms)"),
                "seed": {"type": "integer"},
                "model": _enum(f"machine: delivers {', '.join(MACHINE_INPUTS)}",
                               ["machine", "none"]),
                "machine": machine,
                "inputs": {"type": "object", "additionalProperties": _sim_input()}},
               ["type"], "simulated inputs")
    return {"type": "object", "description": "input sources, by name",
            "additionalProperties": {"oneOf": [tcp, rtu, zero, chip, sim]}}


def _lamp_binding() -> dict[str, Any]:
    props: dict[str, Any] = {
        "pin": {"type": ["integer", "string"], "description": "gpiozero pin"},
        "line": {"type": ["integer", "string"], "description": "gpiochip line offset or name"},
        "chip": {"type": "string", "description": "gpiochip device (default [tower] chip)"},
        "active_low": {"type": "boolean", "description": "the lamp is on when the line is low"},
        "source": {"type": "string", "description": "Modbus source whose connection writes it"},
        "virtual": {"const": True, "description": "no hardware: shown in /status only"},
        **_point((Area.COIL, Area.HOLDING_REGISTER), inputs=False),
    }
    return _obj(props, text="exactly one of pin, line, coil, holding_register, virtual")


def tower_schema_part() -> dict[str, Any]:
    return _obj({
        "profile": {"type": "string", "description": "a profile from hw/profiles (lamp map)"},
        "source": {"type": "string", "description": "default Modbus source for lamps"},
        "chip": {"type": "string", "description": "default gpiochip for lamps"},
        "pin_factory": _enum("gpiozero pin factory for lamps", PIN_FACTORIES),
        "blink_slow_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 50},
        "blink_fast_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 50},
        "refresh": _duration("rewrite every lamp this often (default 5s)"),
        "retry": _duration("retry a failed write this often (default 500ms)"),
        "write_timeout": _duration("deadline of one output write (default 1s)"),
        "on_exit": {"description": "lamps at clean shutdown: off, on, or per lamp",
                    "anyOf": [{"enum": ["off", "on"]},
                              _obj({lamp: {"enum": ["off", "on"]} for lamp in LAMPS})]},
        "lamps": _obj({lamp: _lamp_binding() for lamp in LAMPS}),
    }, text="the stack light")
