"""docs/wire-format.md is what the running agent publishes.

Every example in the page is made by `wire_examples` (a real scan loop over real rules, the
real `Wire`); these tests fail when the page differs, when the page's field table and the
wire's envelope disagree, and when the scan publishes other live keys or shapes than the
page's table lists.
"""

from __future__ import annotations

import json
import re
from typing import Any

from linelight.agent.journal import Record
from linelight.agent.mqtt.wire import Wire
from linelight.agent.scan import ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from tests.agent.mqtt.wire_examples import DOC, RULES, examples, render, run_machine
from tests.agent.test_scan import Clocks, Sink, good

PATTERNS = {"off", "on", "blink_slow", "blink_fast"}


def section(start: str, end: str) -> str:
    text = DOC.read_text()
    return text[text.index(start):text.index(end)]


def live_section() -> str:
    return section("## Live lane", "## Status and last will")


def documented_keys() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", live_section(), re.MULTILINE))


def test_every_example_in_the_page_is_what_the_running_code_makes() -> None:
    text = DOC.read_text()
    assert render(text) == text, ("docs/wire-format.md differs from what the agent sends; "
                                  "run: python -m tests.agent.mqtt.wire_examples --write")


def test_the_page_fails_when_an_example_is_edited_by_hand() -> None:
    text = DOC.read_text().replace('"previous_state":"unknown"', '"previous":"unknown"', 1)
    assert render(text) != text


def test_the_documented_envelope_is_every_field_the_wire_always_sends() -> None:
    table = section("## Event payload", "**Every time is exact")
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    bare = Record(1, 1, "count", "parts", 1, 5, 5, {})
    sent = json.loads(Wire(agent_id="a", prefix="p").event(bare, historical=False).payload)
    assert documented == set(sent)


def test_the_documented_attributes_of_each_kind_are_what_the_scan_records() -> None:
    table = section("What each kind carries", "Any event taken while")
    rows = {m[0]: set(re.findall(r"`(\w+)`", m[1])) for m in
            re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| (.*) \|$", table, re.MULTILINE)}
    for record in run_machine().records:
        attrs = set(record.attrs) - {"duration"}  # only on an off event
        assert attrs <= rows[record.kind], (record.kind, attrs, rows[record.kind])


def test_the_umh_live_example_has_a_documented_key() -> None:
    umh = examples()["umh"]
    keys = re.findall(r"_historian/live/(\w+)", umh)
    assert keys and set(keys) <= documented_keys()


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
