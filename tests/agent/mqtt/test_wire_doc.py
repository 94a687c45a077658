"""docs/wire-format.md's live lane is what the code publishes.

The doc's examples were produced by `agent/mqtt/wire.py`; this re-makes each live-lane example with
`Wire.live` from its own key, value and ts and compares the bytes, and runs a real scan loop
to check that the keys it publishes, and the shape of their values, are the documented ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from linelight.agent.mqtt.wire import UmhPath, Wire
from linelight.agent.scan import ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from tests.agent.test_scan import Clocks, Sink, good

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
PATTERNS = {"off", "on", "blink_slow", "blink_fast"}

RULES = """\
[inputs]
running = { type = "bool" }
door_closed = { type = "bool" }
part = { type = "bool" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 10
when = "not running"
show = { amber = "blink_slow" }

[[signal]]
name = "door_open"
priority = 10
when = "not door_closed"
show = { blue = "on" }

[[counter]]
name = "parts"
rising = "part"

[tower]
lamps = ["red", "amber", "green", "blue", "buzzer"]
"""


def live_section() -> str:
    text = DOC.read_text()
    return text[text.index("## Live lane"):text.index("## Status and last will")]


def documented_keys() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", live_section(), re.MULTILINE))


def test_every_live_example_is_byte_for_byte_what_wire_makes() -> None:
    examples = re.findall(r"On `([^`]+)`:\n\n```json\n(.+)\n```", live_section())
    assert {json.loads(body)["key"] for _, body in examples} == documented_keys() == {
        "state", "lamps", "signals", "counters"}
    for topic, body in examples:
        msg = json.loads(body)
        made = Wire(agent_id=msg["agent"], prefix="linelight/{agent}", codec="json").live(
            msg["key"], msg["value"], msg["ts"])
        assert (made.topic, made.payload.decode()) == (topic, body)


def test_the_umh_live_example_is_what_wire_makes() -> None:
    text = DOC.read_text()
    topic, body = re.search(r"^(umh/v1/\S+/_historian/live/\S+)\n(\{.+\})$", text,
                            re.MULTILINE).groups()  # type: ignore[union-attr]
    key = topic.rsplit("/", 1)[1]
    assert key in documented_keys()
    msg = json.loads(body)
    wire = Wire(agent_id="press-7", prefix="x", mode="umh",
                umh=UmhPath(*topic.split("/")[2:7]))
    made = wire.live(key, msg[key], msg["timestamp_ms"] * 1_000_000)
    assert (made.topic, made.payload.decode()) == (topic, body)


def test_the_scan_publishes_exactly_the_documented_keys_with_the_documented_shapes() -> None:
    published: list[tuple[str, Any]] = []
    sink, clocks = Sink(), Clocks()
    table = InputTable(["running", "door_closed", "part"])
    lamps = ["red", "amber", "green", "blue", "buzzer"]
    tower = StackLight({lamp: VirtualOutput(lamp) for lamp in lamps}, clock=lambda: clocks.mono)
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
                    tower=tower, sink=sink, clock=clocks.watch(), period=0.02,  # type: ignore[arg-type]
                    monotonic=lambda: clocks.mono,
                    on_live=lambda key, value: published.append((key, value)))
    steps: list[dict[str, bool]] = [
        {"running": True, "door_closed": True, "part": False},
        {"part": True},
        {"door_closed": False, "part": False},
        {"running": False},
    ]
    scan.tick()
    for values in steps:
        clocks.advance(0.5)
        good(table, clocks, **values)
        scan.tick()

    assert {key for key, _ in published} == documented_keys()
    for key, value in published:
        json.dumps(value)  # plain data, as the codecs need
        if key == "state":
            assert set(value) == {"name", "code", "since_ns"}
            assert isinstance(value["code"], int) and isinstance(value["since_ns"], int)
        elif key == "lamps":
            assert sorted(value) == sorted(lamps) and set(value.values()) <= PATTERNS
        elif key == "signals":
            assert isinstance(value, list) and all(isinstance(s, str) for s in value)
        else:
            assert all(isinstance(n, str) and isinstance(v, int) for n, v in value.items())
    last = {key: value for key, value in published}
    assert last["state"]["name"] == "stopped" and last["signals"] == ["door_open"]
    assert last["lamps"]["amber"] == "blink_slow" and last["lamps"]["blue"] == "on"
    assert last["counters"] == {"parts": 1}
