"""Reading `[sources.*]` and `[tower]`: specs from good files, `file:line:col` errors from bad."""

from __future__ import annotations

import pytest

from linelight.hw.config import (
    GpioChipSourceSpec,
    GpioZeroSourceSpec,
    ModbusSourceSpec,
    SimSourceSpec,
    list_profiles,
    load_profile,
)
from linelight.hw.modbus_codec import Area, DataType, Order
from linelight.rules.values import Pattern
from tests.hw.helpers import config_problems, read_config

GOOD = """
[sources.press]
type = "modbus_tcp"
host = "192.0.2.10"
unit = 3
poll = "200ms"
timeout = "1s"
stale_after = "3s"
max_gap = 4

[sources.press.inputs]
running = { coil = 0 }
fault_code = { holding_register = 10, type = "uint16" }
spindle_rpm = { input_register = 0, type = "float32", word_order = "little", scale = 0.5 }
door_closed = { holding_register = 12, bit = 3 }
estop_ok = { discrete_input = 1, unit = 4 }

[sources.oven]
type = "modbus_rtu"
device = "/dev/ttyUSB0"
baudrate = 9600
parity = "even"
stopbits = 1

[sources.oven.inputs]
oven_temp = { input_register = 0, type = "int16", scale = 0.1 }

[sources.pi]
type = "gpiozero"
pin_factory = "lgpio"

[sources.pi.inputs]
part_seen = { pin = 17, pull = "up", debounce = "10ms" }

[sources.board]
type = "gpiochip"
chip = "/dev/gpiochip1"

[sources.board.inputs]
guard = { line = "GUARD", active_low = true, bias = "pull_up", debounce = "5ms" }

[sources.demo]
type = "sim"

[sources.demo.inputs]
beacon = { wave = "square", period = "2s" }

[tower]
profile = "modbus-tcp-digital-io"
source = "press"
blink_slow_hz = 0.5
refresh = "2s"
on_exit = { red = "on" }

[tower.lamps]
buzzer = { holding_register = 20, bit = 0 }
white = { virtual = true }
"""


def test_a_complete_file_reads_into_specs():
    sources, tower = read_config(GOOD)
    by_name = {s.name: s for s in sources}
    press = by_name["press"]
    assert isinstance(press, ModbusSourceSpec)
    assert (press.link.host, press.link.port, press.unit, press.poll, press.timeout,
            press.stale_after, press.max_gap) == ("192.0.2.10", 502, 3, 0.2, 1.0, 3.0, 4)
    points = dict(press.inputs)
    assert points["running"].area is Area.COIL and points["running"].type is DataType.BOOL
    assert points["spindle_rpm"].word_order is Order.LITTLE and points["spindle_rpm"].scale == 0.5
    assert points["door_closed"].bit == 3 and points["door_closed"].type is DataType.BOOL
    assert points["estop_ok"].unit == 4 and points["fault_code"].unit == 3
    oven = by_name["oven"]
    assert isinstance(oven, ModbusSourceSpec)
    assert (oven.link.kind, oven.link.device, oven.link.baudrate, oven.link.parity) == (
        "rtu", "/dev/ttyUSB0", 9600, "E")
    pi = by_name["pi"]
    assert isinstance(pi, GpioZeroSourceSpec) and pi.pin_factory == "lgpio"
    assert pi.inputs[0].active_low is True  # pulled up: active when pulled to ground
    assert pi.inputs[0].debounce == pytest.approx(0.01)
    board = by_name["board"]
    assert isinstance(board, GpioChipSourceSpec) and board.inputs[0].pin == "GUARD"
    demo = by_name["demo"]
    assert isinstance(demo, SimSourceSpec) and demo.machine is None
    assert demo.inputs[0].wave == "square" and demo.inputs[0].value_type == "bool"
    assert tower is not None
    assert sorted(tower.lamps) == ["amber", "blue", "buzzer", "green", "red", "white"]
    red = tower.lamps["red"]
    assert red.kind == "modbus" and red.source == "press" and red.point is not None
    assert red.point.area is Area.COIL and red.point.address == 0
    assert tower.lamps["buzzer"].point is not None and tower.lamps["buzzer"].point.bit == 0
    assert tower.lamps["white"].kind == "virtual"
    assert tower.blink_slow_hz == 0.5 and tower.blink_fast_hz == 4.0 and tower.refresh == 2.0
    assert tower.on_exit["red"] is Pattern.ON and tower.on_exit["green"] is Pattern.OFF


@pytest.mark.parametrize(("snippet", "expected"), [
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\npol = "1s"\n',
     "agent.toml:4:1: unknown key 'pol' in sources.a; did you mean 'poll'?"),
    ('[sources.a]\ntype = "modbus_tpc"\nhost = "h"\n',
     "agent.toml:2:8: 'type' cannot be 'modbus_tpc'; did you mean 'modbus_tcp'?"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\nx = { coil = 1, holding_register = 2 }\n',
     "agent.toml:5:1: input 'x' needs exactly one of coil, discrete_input, input_register, "
     "holding_register (found coil, holding_register)"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\nx = { holding_register = 1, bit = 16 }\n',
     "agent.toml:5:35: 'bit' must be between 0 and 15, not 16 (0 is the least significant bit)"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\nx = { holding_register = 1, type = "bool" }\n',
     "agent.toml:5:36: type 'bool' on a register needs 'bit' (0-15) to say which bit"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\nx = { coil = 1, type = "float32" }\n',
     "agent.toml:5:24: a coil is a bool, not float32"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\nx = { input_register = 70000 }\n',
     "agent.toml:5:24: 'input_register' must be between 0 and 65535, not 70000 (a 0-based address)"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\nunit = 300\n',
     "agent.toml:4:8: 'unit' must be between 0 and 255, not 300 (the Modbus unit id / slave address)"),
    ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\nreconnect_min = "100ms"\n',
     "agent.toml:4:17: 'reconnect_min' must be at least 500ms, not 100ms (so a dead device is not "
     "hammered with connection attempts)"),
    ('[sources.a]\ntype = "modbus_tcp"\nport = 502\n',
     "agent.toml:1:2: sources.a needs the key 'host'"),
    ('[sources.a]\ntype = "sim"\n[sources.a.inputs]\nx = { wave = "sine" }\n',
     "agent.toml:4:14: 'wave' cannot be 'sine'; use one of square, ramp, random_walk, script, "
     "constant"),
    ('[sources.a]\ntype = "sim"\nmodel = "machine"\n[sources.a.inputs]\nrunning = { wave = "square" }\n',
     "agent.toml:5:1: input 'running' is already made by the machine model; use another name "
     "or force() it from a test"),
    ('[sources.a]\ntype = "sim"\nmodel = "machine"\n[sources.b]\ntype = "sim"\nmodel = "machine"\n',
     "agent.toml:4:2: input 'running' of source 'b' is already delivered by source 'a'"),
    ('[sources.a]\ntype = "sim"\n[sources.a.inputs]\nx = { wave = "ramp", step = 2 }\n',
     "agent.toml:4:22: 'step' does not apply to wave = \"ramp\""),
    ('[tower]\n[tower.lamps]\nred = { virtual = true }\nyellow = { virtual = true }\n',
     "agent.toml:4:1: unknown lamp 'yellow'; lamps are red, amber, green, blue, white, buzzer"),
    ('[tower]\non_exit = "blink_slow"\n[tower.lamps]\nred = { virtual = true }\n',
     "agent.toml:2:11: 'on_exit' must be \"off\", \"on\" or a table such as { red = \"on\" }, not "
     "'blink_slow' (a blinking lamp cannot outlive the agent that blinks it)"),
    ('[tower]\nprofile = "no-such"\n',
     "agent.toml:2:11: no hardware profile 'no-such'; available: gpiochip-generic, "
     "modbus-tcp-digital-io, raspberry-pi-gpio-tower"),
    ('[tower]\nblink_fast_hz = 0\n[tower.lamps]\nred = { virtual = true }\n',
     "agent.toml:2:17: 'blink_fast_hz' must be above 0 and at most 50, not 0 (flashes per second)"),
    ('[tower]\n[tower.lamps]\nred = { pin = 17, coil = 1 }\n',
     "agent.toml:3:1: lamp 'red' needs exactly one of pin (gpiozero), line (gpiochip), coil or "
     "holding_register (Modbus), s7 (an S7 bit), opcua (a Boolean node), virtual (found pin, coil)"),
    ('[tower]\n[tower.lamps]\nred = { input_register = 1 }\n',
     "agent.toml:3:1: lamp 'red' needs exactly one of pin (gpiozero), line (gpiochip), coil or "
     "holding_register (Modbus), s7 (an S7 bit), opcua (a Boolean node), virtual (found none)"),
    ('[tower]\n[tower.lamps]\nred = { coil = 1 }\n',
     "agent.toml:1:2: lamp 'red' is a Modbus output but no source is named (bound at "
     "agent.toml:3:1): set source = \"NAME\" on the lamp or in [tower]"),
    ('[sources.pi]\ntype = "sim"\n[tower]\nsource = "pi"\n[tower.lamps]\nred = { coil = 1 }\n',
     "agent.toml:3:2: lamp 'red' names source 'pi' (bound at agent.toml:6:1), which is not a "
     "Modbus source (Modbus sources: none)"),
])
def test_mistakes_are_reported_with_file_line_and_column(snippet: str, expected: str):
    assert expected in config_problems(snippet)


def test_every_problem_is_listed_not_just_the_first():
    problems = config_problems('[sources.a]\ntype = "modbus_tcp"\nhots = "h"\n'
                               '[sources.a.inputs]\nx = { coil = -1 }\n')
    assert len(problems) == 3, problems  # missing host, unknown 'hots', negative address


def test_every_shipped_profile_loads_and_cites_its_document():
    names = list_profiles()
    assert {"modbus-tcp-digital-io", "raspberry-pi-gpio-tower", "gpiochip-generic"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.document.count("http") >= 1, name
        assert set(profile.lamps) == {"red", "amber", "green", "blue", "white", "buzzer"}


def test_tower_lamps_override_the_profile():
    _, tower = read_config('[tower]\nprofile = "raspberry-pi-gpio-tower"\n'
                           '[tower.lamps]\nbuzzer = { pin = 5, active_low = true }\n')
    assert tower is not None
    assert tower.lamps["buzzer"].pin == 5 and tower.lamps["buzzer"].active_low is True
    assert tower.lamps["red"].pin == "GPIO17"


@pytest.mark.parametrize("key,value", [("scale", "nan"), ("scale", "inf"), ("scale", "-inf"),
                                       ("offset", "nan"), ("offset", "+inf")])
def test_a_scale_or_offset_that_is_not_finite_is_located(key: str, value: str) -> None:
    snippet = ('[sources.a]\ntype = "modbus_tcp"\nhost = "h"\n[sources.a.inputs]\n'
               f'x = {{ holding_register = 1, {key} = {value} }}\n')
    col = len("x = { holding_register = 1, ") + len(key) + len(" = ") + 1
    expected = f"agent.toml:5:{col}: '{key}' must be a finite number, not {value.lstrip('+')}"
    assert expected in config_problems(snippet)


def test_a_blink_frequency_of_nan_is_located() -> None:
    problems = config_problems('[tower]\nblink_slow_hz = nan\n[tower.lamps]\nred = { virtual = true }\n')
    assert "agent.toml:2:17: 'blink_slow_hz' must be a finite number, not nan" in problems
