"""UMH Core mode against UMH's own published rules.

The topic rules are those of benthos-umh `pkg/umh/topic/uns_topic.go` (read at commit
acf99b9, `NewUnsTopic`: parse, validateParsedInfo, validateAsKey), restated here in Python
(not copied) and applied to every message a real scan loop's run makes through the real
`Wire`. The payload rule is UMH Core's time-series shape, exactly `{"timestamp_ms", "value"}`
with a scalar value (benthos-umh docs/output/sparkplug-b-output.md "UMH-Core Format" and
docs/processing/classic-to-core-processor.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber, dedup_in_order
from harness.waiting import wait_until
from linelight.agent.mqtt.config import read_mqtt
from linelight.agent.mqtt.wire import Message, UmhPath, Wire
from linelight.rules.fields import Problems, Table
from linelight.rules.tomldoc import TomlDoc
from tests.agent.mqtt.forwarder_proc import fill_journal, settings
from tests.agent.mqtt.test_forwarder import running
from tests.agent.mqtt.wire_examples import gap_record, run_machine

# uns_topic.go: validCharacterRegex, TopicPrefix "umh.v1.", MinimumParts 5.
VALID_CHARACTERS = re.compile(r"^[a-zA-Z0-9._\-]+$")
PATH = UmhPath("acme", "cologne", "packaging", "line-1", "press-7")


@dataclass
class UnsTopic:
    location: list[str]
    data_contract: str
    virtual_path: str | None
    name: str


def parse_uns_topic(topic: str) -> UnsTopic:
    """UMH's NewUnsTopic, restated; raises ValueError with UMH's reason."""
    if not topic.startswith("umh.v1"):
        raise ValueError("topic must start with umh.v1")
    parts = topic.split(".")
    if len(parts) < 5:
        raise ValueError("topic must have at least: umh.v1.level0._contract.name")
    if parts[2] == "":
        raise ValueError("level0 cannot be empty")
    # The data contract: the first segment from index 3 starting with '_', never the last.
    contract = next((i for i in range(3, len(parts) - 1)
                     if parts[i] and parts[i].startswith("_")), -1)
    if contract == -1:
        raise ValueError("topic must contain a data contract")
    if len(parts[contract]) <= 1:
        raise ValueError("data contract cannot be just an underscore")
    if parts[-1] == "":
        raise ValueError("topic name (final segment) cannot be empty")
    virtual = parts[contract + 1:-1]
    if any(p == "" for p in virtual):
        raise ValueError("virtual path segment cannot be empty")
    if parts[2].startswith("_"):
        raise ValueError("level0 cannot start with underscore")
    for level in parts[3:contract]:
        if level == "" or level.startswith("_"):
            raise ValueError("location sublevel cannot be empty or start with underscore")
    if not VALID_CHARACTERS.match(topic) or ".." in topic or topic.endswith("."):
        raise ValueError("topic contained invalid characters or empty levels")
    return UnsTopic(parts[2:contract], parts[contract], ".".join(virtual) or None, parts[-1])


def check_time_series(msg: Message) -> dict:  # type: ignore[type-arg]
    body = json.loads(msg.payload)
    assert set(body) == {"timestamp_ms", "value"}, (msg.topic, body)
    assert type(body["timestamp_ms"]) is int and body["timestamp_ms"] > 0
    assert isinstance(body["value"], (bool, int, float, str)), (msg.topic, body)
    return body  # type: ignore[no-any-return]


def test_every_event_and_live_message_of_a_scan_run_passes_umh_cores_rules() -> None:
    wire = Wire(agent_id="press-7", prefix="linelight/{agent}", mode="umh-core", umh=PATH)
    run = run_machine()
    records = [*run.records, gap_record(run.records[-1])]
    for record in records:
        msg = wire.event(record, historical=False)
        topic = parse_uns_topic(msg.topic)
        assert topic.location == ["acme", "cologne", "packaging", "line-1", "press-7"]
        assert (topic.data_contract, topic.virtual_path, topic.name) == (
            "_raw", record.kind, record.name)
        body = check_time_series(msg)
        assert body["timestamp_ms"] == record.ts_ns // 1_000_000
        assert msg.user_properties == (("agent", "press-7"), ("seq", str(record.seq)))
    live = [m for key, value, ts in run.live for m in wire.live_messages(key, value, ts)]
    for msg in live:
        topic = parse_uns_topic(msg.topic)
        assert topic.virtual_path is not None and topic.virtual_path.startswith("live.")
        check_time_series(msg)
    by_topic = {m.topic: json.loads(m.payload)["value"] for m in live}  # the latest each
    base = "umh.v1.acme.cologne.packaging.line-1.press-7._raw.live"
    assert by_topic[f"{base}.state.code"] == 40000 and by_topic[f"{base}.state.name"] == "stopped"
    assert by_topic[f"{base}.lamps.amber"] == "blink_slow"
    assert by_topic[f"{base}.signals.active"] == "door_open"
    assert by_topic[f"{base}.counters.parts"] == 18211


def test_the_state_is_one_tag_whose_value_is_the_code() -> None:
    wire = Wire(agent_id="a", prefix="p", mode="umh-core", umh=PATH)
    states = [wire.event(r, historical=False) for r in run_machine().records if r.kind == "state"]
    # Each state event is a sample of the live tag `state.code` too: one value that changes.
    assert [json.loads(m.payload)["value"] for m in states] == [10000, 40000]


def read(text: str, tmp_path: Path) -> list[str]:
    doc = TomlDoc.parse(text, str(tmp_path / "agent.toml"))
    problems = Problems()
    table = Table.root(doc, problems).table("mqtt")
    assert table is not None
    read_mqtt(table)
    return [str(p) for p in problems.items]


@pytest.mark.parametrize(("level", "hint"), [
    ("ACME Corp", "write e.g. 'ACME-Corp'"),
    ("köln", "write e.g. 'k-ln'"),
    ("plant.1", "a '.' would add a level"),
    ("_plant", "cannot start with '_'"),
])
def test_a_level_umh_core_would_not_accept_is_located_with_a_hint(
        tmp_path: Path, level: str, hint: str) -> None:
    problems = read(f'[mqtt]\ntopic_mode = "umh-core"\n'
                    f'umh = {{ enterprise = "acme", site = "{level}" }}\n', tmp_path)
    assert len(problems) == 1 and hint in problems[0], problems
    assert problems[0].startswith(f"{tmp_path / 'agent.toml'}:3:")


def test_the_data_contract_must_look_like_one(tmp_path: Path) -> None:
    problems = read('[mqtt]\ntopic_mode = "umh-core"\n'
                    'umh = { enterprise = "acme", data_contract = "raw" }\n', tmp_path)
    assert len(problems) == 1 and "must start with '_'" in problems[0], problems
    ok = read('[mqtt]\ntopic_mode = "umh-core"\n'
              'umh = { enterprise = "acme", data_contract = "_historian" }\n', tmp_path)
    assert ok == []


@pytest.mark.anyio
async def test_umh_core_messages_through_a_real_broker_restart_and_replay(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "#")  # a dotted UMH Core topic is one MQTT level
    mqtt = settings(mosquitto.host, mosquitto.port, topic_mode="umh-core",
                    umh=UmhPath("acme", "cologne"))
    async with running(tmp_path / "j.db", mqtt) as (journal, fwd):
        first = await fill_journal(journal, 100)
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(range(1, first + 1)), "umh.v1.", 60))
        await anyio.to_thread.run_sync(mosquitto.stop)
        await wait_until(lambda: not fwd.link.connected, "link down")
        last = await fill_journal(journal, 100)
        await anyio.to_thread.run_sync(mosquitto.start)
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(range(1, last + 1)), "umh.v1.", 90))
    events = [m for m in sub.snapshot() if m.topic.startswith("umh.v1.")]
    for m in events:
        topic = parse_uns_topic(m.topic)
        assert (topic.location, topic.data_contract) == (["acme", "cologne"], "_raw")
        assert set(m.decoded) == {"timestamp_ms", "value"}
    assert dedup_in_order([m.seq for m in events if m.seq is not None]) == list(
        range(1, last + 1))
