"""Our Sparkplug B schema, its generated module, the protobuf backend and [mqtt.sparkplug]."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from linelight.agent.mqtt import sparkplug_b_pb2 as pb
from tests.agent.mqtt.test_forwarder_wire import read
from tests.agent.test_machines import write

MQTT_DIR = Path(__file__).resolve().parents[3] / "agent" / "mqtt"

# The specification's field numbers and wire types (Sparkplug 3.0 section 6.4.1), written out
# here by hand from its text: a renumbered or retyped field in our .proto fails this table.
SPEC_FIELDS = {
    "Payload": {"timestamp": (1, "uint64"), "metrics": (2, "message"), "seq": (3, "uint64"),
                "uuid": (4, "string"), "body": (5, "bytes")},
    "Payload.Metric": {
        "name": (1, "string"), "alias": (2, "uint64"), "timestamp": (3, "uint64"),
        "datatype": (4, "uint32"), "is_historical": (5, "bool"), "is_transient": (6, "bool"),
        "is_null": (7, "bool"), "metadata": (8, "message"), "properties": (9, "message"),
        "int_value": (10, "uint32"), "long_value": (11, "uint64"), "float_value": (12, "float"),
        "double_value": (13, "double"), "boolean_value": (14, "bool"),
        "string_value": (15, "string"), "bytes_value": (16, "bytes"),
        "dataset_value": (17, "message"), "template_value": (18, "message"),
        "extension_value": (19, "message")},
    "Payload.PropertySet": {"keys": (1, "string"), "values": (2, "message")},
    "Payload.PropertyValue": {
        "type": (1, "uint32"), "is_null": (2, "bool"), "int_value": (3, "uint32"),
        "long_value": (4, "uint64"), "float_value": (5, "float"), "double_value": (6, "double"),
        "boolean_value": (7, "bool"), "string_value": (8, "string"),
        "propertyset_value": (9, "message"), "propertysets_value": (10, "message"),
        "extension_value": (11, "message")},
}
_TYPES = {4: "uint64", 13: "uint32", 9: "string", 12: "bytes", 8: "bool", 11: "message",
          2: "float", 1: "double"}


def _descriptor(path: str):  # type: ignore[no-untyped-def]
    d = pb.DESCRIPTOR.message_types_by_name["Payload"]
    for part in path.split(".")[1:]:
        d = d.nested_types_by_name[part]
    return d


@pytest.mark.parametrize("message", sorted(SPEC_FIELDS))
def test_field_numbers_and_types_are_the_specifications(message: str) -> None:
    fields = _descriptor(message).fields_by_name
    got = {name: (f.number, _TYPES[f.type]) for name, f in fields.items()}
    assert got == SPEC_FIELDS[message]


def test_datatype_numbers_are_the_specifications() -> None:
    # section 6.4.16: a few anchors of the enum, including both ends
    assert (pb.Unknown, pb.Int32, pb.Int64, pb.UInt64, pb.Double, pb.Boolean, pb.String,
            pb.DateTime, pb.PropertySet, pb.DateTimeArray) == (0, 3, 4, 8, 10, 11, 12, 13, 20, 34)


def test_the_fast_upb_backend_is_used() -> None:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"


def test_the_committed_module_is_what_protoc_generates_from_the_schema(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{MQTT_DIR}", f"--python_out={tmp_path}",
         str(MQTT_DIR / "sparkplug_b.proto")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert filecmp.cmp(tmp_path / "sparkplug_b_pb2.py", MQTT_DIR / "sparkplug_b_pb2.py",
                       shallow=False), "run `make proto` and commit agent/mqtt/sparkplug_b_pb2.py"


def test_a_payload_round_trips() -> None:
    payload = pb.Payload(timestamp=1, seq=255)
    metric = payload.metrics.add(name="bdSeq", alias=1, timestamp=1, datatype=pb.Int64,
                                 long_value=7)
    metric.properties.keys.append("seq")
    metric.properties.values.add(type=pb.Int64, long_value=2**40)
    back = pb.Payload.FromString(payload.SerializeToString())
    assert back == payload and back.metrics[0].properties.values[0].long_value == 2**40


# -- [mqtt.sparkplug] ---------------------------------------------------------------------------

SP = '[mqtt]\ntopic_mode = "sparkplug"\n'


def test_reads_the_sparkplug_table(tmp_path: Path) -> None:
    settings, problems = read(SP + 'sparkplug = { group_id = "Plant 1", edge_node_id = "press-1",'
                              ' device_id = "press", primary_host_id = "scada" }\n', tmp_path)
    assert problems == []
    assert settings is not None and settings.sparkplug is not None
    sp = settings.sparkplug
    assert (settings.topic_mode, sp.group_id, sp.edge_node_id, sp.device_id,
            sp.primary_host_id) == ("sparkplug", "Plant 1", "press-1", "press", "scada")


def test_only_group_id_is_required(tmp_path: Path) -> None:
    settings, problems = read(SP + 'sparkplug = { group_id = "g" }\n', tmp_path)
    assert problems == [] and settings is not None and settings.sparkplug is not None
    assert (settings.sparkplug.edge_node_id, settings.sparkplug.device_id,
            settings.sparkplug.primary_host_id) == (None, None, None)
    _, problems = read(SP, tmp_path)
    assert len(problems) == 1 and "sparkplug" in problems[0], problems
    _, problems = read(SP + 'sparkplug = { edge_node_id = "n" }\n', tmp_path)
    assert len(problems) == 1 and "group_id" in problems[0], problems


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("group_id", "plant/1", "'/'"),
    ("edge_node_id", "node+", "'+'"),
    ("device_id", "#", "'#'"),
    ("primary_host_id", "a/b#", "'#' '/'"),
    ("group_id", "", "cannot be empty"),
])
def test_an_id_with_a_reserved_character_is_located(tmp_path: Path, key: str, value: str,
                                                    shown: str) -> None:
    other = "" if key == "group_id" else 'group_id = "g", '
    _, problems = read(SP + f'sparkplug = {{ {other}{key} = "{value}" }}\n', tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'agent.toml'}:3:"), problems
    assert shown in problems[0] and key in problems[0], problems


def test_each_named_machine_is_a_device(tmp_path: Path) -> None:
    from linelight.agent.config import load_config
    from tests.agent.test_machines import LINE

    config = load_config(write(tmp_path, LINE + '\n[mqtt]\ntopic_mode = "sparkplug"\n'
                               'sparkplug = { group_id = "g" }\n'))
    assert config.mqtt is not None and config.mqtt.sparkplug is not None
    assert config.mqtt.sparkplug.devices == ("press-1", "filler")


def test_the_example_config_is_an_edge_node_with_a_device_per_machine() -> None:
    from linelight.agent.config import load_config

    config = load_config(MQTT_DIR.parents[1] / "examples" / "sparkplug.toml")
    assert config.mqtt is not None and config.mqtt.topic_mode == "sparkplug"
    assert config.mqtt.sparkplug is not None and config.mqtt.sparkplug.group_id == "plant-1"
    assert config.mqtt.sparkplug.devices == tuple(m.name for m in config.machines)


def test_dialect_is_another_name_for_topic_mode(tmp_path: Path) -> None:
    settings, problems = read('[mqtt]\ndialect = "sparkplug"\nsparkplug = { group_id = "g" }\n',
                              tmp_path)
    assert problems == [] and settings is not None and settings.topic_mode == "sparkplug"
    _, problems = read('[mqtt]\ndialect = "sparkplug"\ntopic_mode = "linelight"\n'
                       'sparkplug = { group_id = "g" }\n', tmp_path)
    assert len(problems) == 1 and "say two things" in problems[0], problems
    assert problems[0].startswith(f"{tmp_path / 'agent.toml'}:2:"), problems
