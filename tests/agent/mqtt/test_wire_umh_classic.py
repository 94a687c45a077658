"""UMH Classic mode against UMH's own published rules, applied to every message of a real run.

The rules, read in united-manufacturing-hub at commit a945954b0 (restated here, not copied):

- the MQTT-to-Kafka bridge (deployment/united-manufacturing-hub/templates/bridges/
  mqtt-to-kafka/historian/configmap.yaml): the topic's `/` become `.`, any character outside
  `[a-zA-Z0-9._-]` becomes `_`; a `_historian` message must pass its JSON schema (an object
  with an integer `timestamp_ms`, at least one more property, no arrays at any depth);
- the historian (templates/bridges/kafka_to_postgres/historian/configmap.yaml): the topic must
  match its `umh.v1.<enterprise>[.<site>...]._historian[.<tag>]` expression; the payload is
  flattened to tag names `<tag group>$<key>` (dots and nesting as `$`); a JSON number goes to
  table `tag`, column `value REAL` (float4), anything else to the string table (a bool as the
  text "true"); `ON CONFLICT (timestamp, name, asset_id) DO NOTHING` removes re-sends.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import jsonschema

from linelight.agent.mqtt.wire import Message, UmhPath, Wire
from tests.agent.mqtt.test_wire_umh_core import read
from tests.agent.mqtt.wire_examples import gap_record, run_machine

BRIDGE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["timestamp_ms"],
    "properties": {"timestamp_ms": {"type": "integer"}},
    "minProperties": 2,
    "additionalProperties": {"$ref": "#/definitions/non_array_value"},
    "definitions": {"non_array_value": {"oneOf": [
        {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
        {"type": "object", "additionalProperties": {"$ref": "#/definitions/non_array_value"}},
    ]}},
}
HISTORIAN_TOPIC = re.compile(
    r"^umh\.v1\.(?P<enterprise>[\w-]+)\.((?P<site>[\w-]+)\.)?((?P<area>[\w-]+)\.)?"
    r"((?P<line>[\w-]+)\.)?((?P<workcell>[\w-]+)\.)?((?P<origin>[\w-]+)\.)?"
    r"_(?P<usecase>historian|analytics)(\.(?P<tag>[\w\-.]+))?$", re.ASCII)
PATH = UmhPath("acme", "cologne", "packaging", "line-1", "press-7")


def bridged_topic(mqtt_topic: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]", "_", mqtt_topic.replace("/", ".")).strip(".")


def rows(msg: Message) -> dict[str, tuple[str, Any]]:
    """What the historian inserts: tag name -> (table, value)."""
    body = json.loads(msg.payload)
    jsonschema.validate(body, BRIDGE_SCHEMA)
    match = HISTORIAN_TOPIC.match(bridged_topic(msg.topic))
    assert match is not None, msg.topic
    assert [match[k] for k in ("enterprise", "site", "area", "line", "workcell")] == [
        "acme", "cologne", "packaging", "line-1", "press-7"], "a level shifted"
    group = (match["tag"] or "").replace(".", "$")
    out: dict[str, tuple[str, Any]] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}${k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix.strip("$")] = ("tag", value)
        else:
            out[prefix.strip("$")] = ("tag_string", value)

    for key, value in body.items():
        if key != "timestamp_ms":
            flatten(f"{group}${key}", value)
    return out


def real(value: float) -> float:
    """The value a float4 (Postgres REAL) column keeps."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def test_every_message_of_a_scan_run_is_stored_usefully_by_umh_classic() -> None:
    wire = Wire(agent_id="press-7", prefix="linelight/{agent}", mode="umh", umh=PATH)
    run = run_machine()
    messages = [wire.event(r, historical=False) for r in [*run.records,
                                                          gap_record(run.records[-1])]]
    messages += [wire.live(key, value, ts) for key, value, ts in run.live]
    stored: dict[str, list[tuple[str, Any]]] = {}
    for msg in messages:  # every one passes the bridge and the historian's topic expression
        for name, row in rows(msg).items():
            stored.setdefault(name, []).append(row)
    # The state is one tag whose value is the code: a timeline, not one tag per state.
    assert [v for _, v in stored["state$code"]] == [10000, 40000]
    assert [v for _, v in stored["state$name"]] == ["producing", "stopped"]
    assert not any(name.startswith("state$producing") for name in stored)
    # Every number survives the REAL column; booleans are numbers (graphable), not text.
    for name, values in stored.items():
        for table, value in values:
            if table == "tag":
                assert real(value) == value, (name, value)
            assert not isinstance(value, bool), name
    assert [v for _, v in stored["alarm$door_open"]] == [1]
    assert stored["live$signals$signals"][-1] == ("tag_string", "door_open")


def test_a_re_sent_event_is_the_same_row_for_the_historian() -> None:
    wire = Wire(agent_id="press-7", prefix="p", mode="umh", umh=PATH)
    record = run_machine().record("count")
    first, again = (wire.event(record, historical=h) for h in (False, True))
    assert (first.topic, first.payload) == (again.topic, again.payload)


def test_levels_the_bridge_would_rewrite_are_refused_at_load(tmp_path: Path) -> None:
    for level, hint in [("ACME Corp", "'ACME-Corp'"), ("köln", "'k-ln'"),
                        ("plant.1", "a '.' would add a level")]:
        problems = read(f'[mqtt]\ntopic_mode = "umh"\n'
                        f'umh = {{ enterprise = "acme", site = "{level}" }}\n', tmp_path)
        assert len(problems) == 1 and hint in problems[0], problems
        assert problems[0].startswith(f"{tmp_path / 'agent.toml'}:3:")
