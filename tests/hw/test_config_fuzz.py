"""Malformed [sources.*] and [tower] tables: every one gets located problems, none a traceback."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from linelight.rules.errors import ConfigProblems, LocatedError
from tests.hw.helpers import read_config

SOURCE_KEYS = ["type", "host", "port", "device", "unit", "poll", "timeout", "stale_after",
               "reconnect_min", "reconnect_max", "max_gap", "max_count", "baudrate", "parity",
               "stopbits", "bytesize", "pin_factory", "chip", "period", "seed", "model"]
INPUT_KEYS = ["coil", "discrete_input", "input_register", "holding_register", "type", "bit",
              "word_order", "byte_order", "scale", "offset", "unit", "pin", "line", "pull",
              "bias", "active_low", "debounce", "wave", "low", "high", "duty", "step", "start",
              "repeat", "value", "period", "steps"]
TOWER_KEYS = ["profile", "source", "chip", "pin_factory", "blink_slow_hz", "blink_fast_hz",
              "refresh", "retry", "write_timeout", "on_exit"]
LAMP_KEYS = ["pin", "line", "chip", "coil", "holding_register", "bit", "unit", "source",
             "active_low", "virtual"]
STRINGS = ["modbus_tcp", "modbus_rtu", "gpiozero", "gpiochip", "sim", "machine", "1s", "0ms",
           "-5s", "abc", "", "big", "little", "float32", "bool", "square", "script", "on",
           "blink_fast", "up", "pull_up", "even", "mock", "modbus-tcp-digital-io", "io"]

scalars = st.one_of(st.integers(-70000, 70000), st.floats(allow_nan=False, allow_infinity=False,
                                                           width=32),
                    st.booleans(), st.sampled_from(STRINGS))


def _toml(value) -> str:  # type: ignore[no-untyped-def]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


values = st.one_of(scalars, st.lists(scalars, max_size=2),
                   st.dictionaries(st.sampled_from(["value", "hold", "red"]), scalars, max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(SOURCE_KEYS), values, max_size=8),
       st.dictionaries(st.sampled_from(["a", "b"]),
                       st.dictionaries(st.sampled_from(INPUT_KEYS), values, max_size=5),
                       max_size=2),
       st.dictionaries(st.sampled_from(TOWER_KEYS), values, max_size=5),
       st.dictionaries(st.sampled_from(["red", "green", "yellow"]),
                       st.dictionaries(st.sampled_from(LAMP_KEYS), values, max_size=4),
                       max_size=2))
def test_malformed_tables_give_located_problems_never_a_traceback(source, inputs, tower, lamps):
    text = "[sources.io]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in source.items())
    text += "[sources.io.inputs]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in inputs.items())
    text += "[tower]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in tower.items())
    text += "[tower.lamps]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in lamps.items())
    try:
        read_config(text)
    except ConfigProblems as exc:
        assert exc.problems and all(str(p).startswith("agent.toml:") for p in exc.problems)
    except LocatedError as exc:  # a TOML syntax error in the generated text
        assert str(exc).startswith("agent.toml:")
