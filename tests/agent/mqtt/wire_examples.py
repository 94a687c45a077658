"""The examples of docs/wire-format.md, made by the running code: a real scan loop over real
rules produces the events and live values, the real `Wire` encodes them.

Each example sits in the page between `<!-- example: NAME -->` and `<!-- /example -->`.
`tests/agent/mqtt/test_wire_doc.py` fails when the page differs from what this makes;
`python -m tests.agent.mqtt.wire_examples --write` rewrites the page's examples.

The machine: a press whose scan sees `running`, `door_closed` and `part` change on a fixed
virtual clock (the wall clock starts at 1763776800.123456789 s, so the sub-millisecond part
of every time is visible). Journal seqs are numbered from 1042 in submit order, boot 7.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from linelight.agent.journal import Record
from linelight.agent.mqtt.wire import Message, UmhPath, Wire
from linelight.agent.scan import MachineLane, ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from tests.agent.test_scan import Clocks, Sink, good

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
AGENT = "press-7"
FIRST_SEQ, BOOT = 1042, 7
WALL_START_NS = 1_763_776_800_123_456_789
LAMPS = ["red", "amber", "green", "blue", "buzzer"]
UMH = UmhPath("acme", "cologne", "packaging", "line-1", "press-7")

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

# What the press does: scan after scan, 0.5 s apart.
STEPS: list[dict[str, bool]] = [
    {"running": True, "door_closed": True, "part": False},
    {"part": True},
    {"door_closed": False, "part": False},
    {"running": False},
]


@dataclass
class Run:
    """What one run of the scan loop produced."""

    records: list[Record]
    live: list[tuple[str, Any, int]]  # key, value, ts_ns, in publish order

    def record(self, kind: str, name: str | None = None, value: Any = None) -> Record:
        """The first record of this kind (and name, and value, if given)."""
        return next(r for r in self.records if r.kind == kind and name in (None, r.name)
                    and value in (None, r.value))

    def last_live(self, key: str) -> tuple[str, Any, int]:
        return [item for item in self.live if item[0] == key][-1]


def run_machine() -> Run:
    """The scan loop over RULES and STEPS; its events as journal records, its live values."""
    sink, clocks = Sink(), Clocks()
    clocks.wall = WALL_START_NS
    live: list[tuple[str, Any, int]] = []
    table = InputTable(list(STEPS[0]))
    tower = StackLight({lamp: VirtualOutput(lamp) for lamp in LAMPS}, clock=lambda: clocks.mono)
    evaluator = Evaluator(load_rules([("press.toml", RULES)]))
    evaluator.restore_counters({"parts": 18210})  # totals persist across restarts
    scan = ScanLoop(inputs=table, evaluator=evaluator, tower=tower, sink=sink,  # type: ignore[arg-type]
                    clock=clocks.watch(), period=0.02, monotonic=lambda: clocks.mono,
                    on_live=lambda key, value: live.append((key, value, clocks.wall)))
    scan.tick()
    for values in STEPS:
        clocks.advance(0.5)
        good(table, clocks, **values)
        scan.tick()
    records = [Record(FIRST_SEQ + i, BOOT, e.kind, e.name, e.value, e.ts_ns, e.ts_ns,
                      dict(e.attrs)) for i, e in enumerate(sink.events)]
    return Run(records, live)


def run_line() -> Run:
    """The same press twice, as machines `press-7` and `press-8` of one agent `line-1`
    ([machines.*]); only press-8's events and live values, which carry the machine."""
    sink, clocks = Sink(), Clocks()
    clocks.wall = WALL_START_NS
    live: list[tuple[str, Any, int]] = []
    table = InputTable([f"{m}/{name}" for m in ("press-7", "press-8") for name in STEPS[0]])
    lanes = []
    for machine in ("press-7", "press-8"):
        tower = StackLight({lamp: VirtualOutput(lamp) for lamp in LAMPS},
                           clock=lambda: clocks.mono)
        lanes.append(MachineLane(
            Evaluator(load_rules([("press.toml", RULES)])), tower, name=machine, label=machine,
            inputs={name: f"{machine}/{name}" for name in STEPS[0]},
            on_live=(lambda key, value, m=machine: live.append((key, value, clocks.wall))
                     if m == "press-8" else None)))
    scan = ScanLoop(inputs=table, sink=sink, clock=clocks.watch(), period=0.02,  # type: ignore[arg-type]
                    monotonic=lambda: clocks.mono, machines=lanes)
    scan.tick()
    for values in STEPS[:2]:
        clocks.advance(0.5)
        good(table, clocks, **{f"press-8/{k}": v for k, v in values.items()})
        scan.tick()
    records = [Record(FIRST_SEQ + i, BOOT, e.kind, e.name, e.value, e.ts_ns, e.ts_ns,
                      dict(e.attrs)) for i, e in enumerate(sink.events)]
    return Run([r for r in records if r.attrs.get("machine") == "press-8"], live)


def gap_record(after: Record) -> Record:
    """A gap as the journal writes it (agent/journal/store.py `_write_gap`): 500 signal
    events of retention class 0 dropped to stay within max_bytes."""
    attrs = {"reason": "max_bytes", "first_seq": 300, "last_seq": 799, "count": 500,
             "kinds": {"signal": 500}, "class": 0}
    return Record(after.seq + 1, BOOT, "gap", "max_bytes", 500, after.ts_ns + 500_000_000,
                  after.ts_ns + 500_000_000, attrs)


# -- rendering -------------------------------------------------------------------------------
def _props(msg: Message, wire: Wire) -> str:
    parts = [f"`{k}={v}`" for k, v in msg.user_properties]
    users = f"user properties {', '.join(parts)}, " if parts else ""
    return f"{users}content type `{wire.content_type}`"


def json_block(msg: Message, wire: Wire, what: str = "") -> str:
    head = f"{what}On `{msg.topic}` ({_props(msg, wire)}):"
    return f"{head}\n\n```json\n{msg.payload.decode()}\n```\n"


def msgpack_block(msg: Message, wire: Wire) -> str:
    raw = msg.payload.hex(" ")
    lines = [raw[i:i + 96].strip() for i in range(0, len(raw), 96)]
    decoded = msgpack.unpackb(msg.payload, raw=False)
    return (f"On `{msg.topic}` ({_props(msg, wire)}), {len(msg.payload)} bytes:\n\n```\n"
            + "\n".join(lines) + "\n```\n\nwhich decodes (`msgpack.unpackb(payload)`) to\n\n"
            + f"```python\n{_wrap_repr(decoded)}\n```\n")


def _wrap_repr(value: dict[str, Any]) -> str:
    items = [f"{k!r}: {v!r}" for k, v in value.items()]
    lines, line = [], "{"
    for item in items:
        if len(line) + len(item) + 2 > 94:
            lines.append(line.rstrip())
            line = " "
        line += item + ", "
    return "\n".join([*lines, line.rstrip(", ") + "}"])


def umh_block(msg: Message) -> str:
    return f"```\n{msg.topic}\n{msg.payload.decode()}\n```\n"


def examples() -> dict[str, str]:
    """Every example of the page by name, as the page shows it."""
    run = run_machine()
    json_wire = Wire(agent_id=AGENT, prefix="linelight/{agent}")
    pack_wire = Wire(agent_id=AGENT, prefix="linelight/{agent}", codec="msgpack")
    umh_wire = Wire(agent_id=AGENT, prefix="linelight/{agent}", mode="umh", umh=UMH)
    state = run.record("state", "producing")
    count = run.record("count")

    def event(wire: Wire, record: Record, historical: bool) -> Message:
        return wire.event(record, historical=historical)

    out = {
        "state-json": json_block(event(json_wire, state, False), json_wire),
        "state-msgpack": msgpack_block(event(pack_wire, state, False), pack_wire),
        "stopped-json": json_block(event(json_wire, run.record("state", "stopped"), False),
                                   json_wire),
        "count-json": json_block(event(json_wire, count, True), json_wire,
                                 "A counter event replayed from the backlog. "),
        "alarm-json": json_block(event(json_wire, run.record("alarm"), False), json_wire),
        "signal-json": json_block(event(json_wire, run.record("signal", "running"), False),
                                  json_wire),
        "lamp-json": json_block(event(json_wire, run.record("lamp", "green", "on"), False),
                                json_wire),
        "gap-json": json_block(event(json_wire, gap_record(run.records[-1]), False),
                               json_wire),
        "online": json_block(json_wire.online(boot=BOOT, version="0.1.0",
                                              ts_ns=WALL_START_NS), json_wire),
        "offline": json_block(json_wire.offline(), json_wire),
        "umh": "".join([
            umh_block(event(umh_wire, state, False)),
            "\n", umh_block(event(umh_wire, count, False)),
            "\n", umh_block(umh_wire.live(*run.last_live("lamps"))),
        ]),
    }
    core_wire = Wire(agent_id=AGENT, prefix="linelight/{agent}", mode="umh-core", umh=UMH)
    core_live = [m for key in ("state", "counters")
                 for m in core_wire.live_messages(*run.last_live(key))]
    out["umh-core"] = "".join([
        umh_block(event(core_wire, state, False)), "\n",
        umh_block(event(core_wire, count, False)), "\n",
        umh_block(event(core_wire, run.record("alarm"), False)), "\n",
        *[umh_block(m) + "\n" for m in core_live[:-1]], umh_block(core_live[-1])])
    for key in ("state", "lamps", "signals", "counters"):
        out[f"live-{key}"] = json_block(json_wire.live(*run.last_live(key)), json_wire)
    out.update(machine_examples())
    out.update(sparkplug_examples(run))
    return out


def _metric_line(metric: dict[str, Any]) -> str:
    return json.dumps(metric, ensure_ascii=False, separators=(", ", ": "))


def sparkplug_block(out: Any, node: Any, what: str = "") -> str:
    """One Sparkplug message: topic, QoS, size, and its payload decoded with the generated
    classes (`describe`), one metric per line; a DATA metric's name (from its alias) is
    shown as `(name)`, which is not on the wire."""
    from linelight.agent.mqtt.sparkplug import decode, describe

    qos = 1 if out.verb == "NDEATH" else 0
    body = describe(decode(out.message.payload), node.alias_names())
    metrics = body.pop("metrics")
    head = {k: body[k] for k in ("timestamp", "seq") if k in body}
    lines = ",\n  ".join(_metric_line(m) for m in metrics)
    fields = "".join(f'  "{k}": {v},\n' for k, v in head.items())
    return (f"{what}On `{out.message.topic}` (QoS {qos}, not retained, "
            f"{len(out.message.payload)} bytes), decoded:\n\n```json\n{{\n{fields}"
            f'  "metrics": [\n  {lines}\n  ]\n}}\n```\n')


def sparkplug_examples(run: Run) -> dict[str, str]:
    """The Sparkplug B mode: births, packed DDATA, a replayed (historical) DDATA, node data,
    the will. bdSeq 3; the payload clock is fixed 2 s after the run's start."""
    from linelight.agent.mqtt import SparkplugSettings
    from linelight.agent.mqtt.sparkplug import Out, SparkplugNode

    clock_ms = WALL_START_NS // 1_000_000 + 2000
    node = SparkplugNode(SparkplugSettings(group_id="plant-1"), agent_id=AGENT, bd_seq=3,
                         clock=lambda: clock_ms)
    node.births()
    live = [r for r in run.records if r.kind != "agent"]
    list(node.data(live, [False] * len(live)))  # what a first connection sent
    births = node.births()  # the births of the next connection declare all of it
    state, count = run.record("state", "producing"), run.record("count")
    ddata = list(node.data([state, count], [False, False]))
    replay = list(node.data([count], [True]))
    start = Record(FIRST_SEQ - 1, BOOT, "agent", "start", "0.1.0", WALL_START_NS,
                   WALL_START_NS, {"boot": BOOT})
    ndata = list(node.data([start], [True]))
    will = Out(node.will(), verb="NDEATH")
    return {
        "sparkplug-nbirth": sparkplug_block(births[0], node),
        "sparkplug-dbirth": sparkplug_block(births[1], node),
        "sparkplug-ddata": sparkplug_block(ddata[-1], node),
        "sparkplug-historical": sparkplug_block(
            replay[-1], node, "The same counter event replayed from the backlog. "),
        "sparkplug-ndata": sparkplug_block(ndata[-1], node),
        "sparkplug-ndeath": sparkplug_block(will, node),
    }


def machine_examples() -> dict[str, str]:
    """A named machine's event and live value, and its topics in the UMH modes."""
    line = run_line()
    state = line.record("state", "producing")
    wire = Wire(agent_id="line-1", prefix="linelight/{agent}")
    path = UmhPath("acme", "cologne", "packaging", "line-1")
    umh = Wire(agent_id="line-1", prefix="x", mode="umh", umh=path)
    core = Wire(agent_id="line-1", prefix="x", mode="umh-core", umh=path)
    return {
        "machine-json": json_block(wire.event(state, historical=False), wire),
        "machine-live": json_block(wire.live(*line.last_live("state"), "press-8"), wire),
        "machine-umh": "".join([umh_block(umh.event(state, historical=False)), "\n",
                                umh_block(core.event(state, historical=False))]),
    }


MARKER = re.compile(r"(<!-- example: ([\w-]+) -->\n)(.*?)(<!-- /example -->)", re.DOTALL)


def render(text: str, made: dict[str, str] | None = None) -> str:
    """`text` with every example replaced by what the code makes; KeyError names an example
    the page has and the code does not, ValueError one the code makes and the page lacks."""
    made = examples() if made is None else made
    seen: set[str] = set()

    def fill(m: re.Match[str]) -> str:
        seen.add(m.group(2))
        return m.group(1) + "\n" + made[m.group(2)] + "\n" + m.group(4)

    out = MARKER.sub(fill, text)
    missing = sorted(set(made) - seen)
    if missing:
        raise ValueError(f"{DOC.name} lacks the examples {', '.join(missing)}")
    return out


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = render(text)
    if "--write" in argv:
        DOC.write_text(new)
        return 0
    print(json.dumps({"up_to_date": new == text}))
    return 0 if new == text else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
