"""Pure parts of the forwarder: wire layout and codecs, the [mqtt] reader, rate limit, backoff."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from linelight.agent.journal import Record
from linelight.agent.mqtt.config import (
    MqttSettings,
    read_mqtt,
    read_password,
    resolve_password_file,
)
from linelight.agent.mqtt.forwarder import Forwarder
from linelight.agent.mqtt.ratelimit import RateLimit
from linelight.agent.mqtt.wire import UmhPath, Wire, pack_user_properties, topic_part
from linelight.hw.backoff import Backoff
from linelight.rules.errors import ConfigError, ConfigProblems
from linelight.rules.fields import Problems, Table
from linelight.rules.tomldoc import TomlDoc

REC = Record(seq=42, boot=3, kind="state", name="producing", value=10000,
             ts_ns=1_763_776_800_123_456_789, enq_ns=1_763_776_800_200_000_000,
             attrs={"previous_state": "unknown", "previous_code": 30000,
                    "previous_duration": 12.5})


# -- wire --------------------------------------------------------------------------------------
EXPECTED_BODY = {
    "agent": "press-7", "seq": 42, "boot": 3, "ts": 1_763_776_800_123, "ts_sub_ns": 456_789,
    "kind": "state", "name": "producing", "value": 10000, "historical": True,
    "previous_state": "unknown", "previous_code": 30000, "previous_duration": 12.5}


def test_json_is_the_default_codec_and_its_times_are_exact_as_doubles() -> None:
    msg = Wire(agent_id="press-7", prefix="plant/{agent}").event(REC, historical=True)
    assert msg.topic == "plant/press-7/events/state/producing"
    body = json.loads(msg.payload)
    assert body == EXPECTED_BODY
    # A consumer that holds numbers as doubles (JavaScript, Node-RED) loses nothing: each
    # time field survives a round trip through float, and ms + sub_ns is the source's ns.
    assert all(float(body[k]) == body[k] for k in ("ts", "ts_sub_ns"))
    assert body["ts"] * 1_000_000 + body["ts_sub_ns"] == REC.ts_ns
    assert msg.user_properties == (("agent", "press-7"), ("seq", "42"))


def test_msgpack_stays_a_choice_with_the_same_map() -> None:
    msg = Wire(agent_id="press-7", prefix="plant/{agent}", codec="msgpack").event(
        REC, historical=True)
    assert msgpack.unpackb(msg.payload) == EXPECTED_BODY


@pytest.mark.parametrize(("codec", "indicator", "content_type"), [
    ("json", 1, "application/json"), ("msgpack", 0, "application/msgpack")])
def test_mqtt5_properties_are_encoded_exactly_as_paho_would(
        codec: str, indicator: int, content_type: str) -> None:
    wire = Wire(agent_id="press-7", prefix="p", codec=codec)
    msg = wire.event(REC, historical=False)
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = indicator
    props.ContentType = content_type
    props.UserProperty = [("agent", "press-7"), ("seq", "42")]
    assert msg.properties == props.pack() == pack_user_properties(msg.user_properties, codec)
    live = Properties(PacketTypes.PUBLISH)
    live.PayloadFormatIndicator = indicator
    live.ContentType = content_type
    assert wire.live("lamps", {}, 1).properties == live.pack()
    status = Properties(PacketTypes.PUBLISH)
    status.PayloadFormatIndicator = 1
    status.ContentType = "application/json"
    assert wire.offline().properties == wire.online(boot=1, version="x", ts_ns=1).properties \
        == status.pack()


def test_json_codec_and_attrs_never_overwrite_the_envelope() -> None:
    rec = Record(1, 1, "signal", "temp/oven", 21.5, 5_000_000, 5_000_000, {"seq": 999, "unit": "C"})
    msg = Wire(agent_id="a", prefix="lp", codec="json").event(rec, historical=False)
    body = json.loads(msg.payload)
    assert body["seq"] == 1 and body["unit"] == "C" and body["value"] == 21.5
    assert msg.topic == "lp/events/signal/temp_oven"  # '/' in a name cannot add a level


def test_without_properties_for_mqtt_311() -> None:
    wire = Wire(agent_id="a", prefix="lp", user_properties=False)
    msg = wire.event(REC, historical=False)
    assert msg.user_properties == () and msg.properties == b""
    assert wire.live("lamps", {}, 1).properties == b"" == wire.offline().properties


def test_topic_levels_are_made_safe() -> None:
    assert topic_part("a/b+c#d") == "a_b_c_d"
    assert topic_part("") == "_"


def test_umh_mode_topics_and_payloads() -> None:
    wire = Wire(agent_id="press-7", prefix="ignored", mode="umh",
                umh=UmhPath("acme", "cologne", "packaging", "line-1", "press-7"))
    msg = wire.event(REC, historical=False)
    assert msg.topic == "umh/v1/acme/cologne/packaging/line-1/press-7/_historian/state"
    assert json.loads(msg.payload) == {"timestamp_ms": 1_763_776_800_123, "code": 10000,
                                       "name": "producing"}
    assert msg.user_properties == (("agent", "press-7"), ("seq", "42"))
    live = wire.live("lamp/red", "blink_fast", 2_000_000)
    assert live.topic == "umh/v1/acme/cologne/packaging/line-1/press-7/_historian/live/lamp/red"
    assert json.loads(live.payload) == {"timestamp_ms": 2, "red": "blink_fast"}
    assert UmhPath("acme", "cologne").topic() == "umh/v1/acme/cologne"


def test_live_and_status_messages() -> None:
    wire = Wire(agent_id="a", prefix="lp", codec="msgpack")
    since_ns = 1_763_776_790_123_456_789
    live = wire.live("state", {"name": "producing", "code": 10000, "since_ns": since_ns},
                     7_000_001)
    assert live.topic == "lp/live/state"
    assert msgpack.unpackb(live.payload) == {
        "agent": "a", "ts": 7, "ts_sub_ns": 1, "key": "state",
        "value": {"name": "producing", "code": 10000, "since": 1_763_776_790_123,
                  "since_sub_ns": 456_789}}
    online = json.loads(wire.online(boot=4, version="1.2.3", ts_ns=9).payload)
    assert online == {"status": "online", "agent": "a", "boot": 4, "version": "1.2.3", "ts": 0,
                      "ts_sub_ns": 9}
    assert json.loads(wire.offline().payload) == {"status": "offline", "agent": "a"}
    assert wire.status_topic == "lp/status"


def test_umh_mode_needs_a_path() -> None:
    with pytest.raises(ValueError, match="enterprise"):
        Wire(agent_id="a", prefix="p", mode="umh")


# -- [mqtt] reader -----------------------------------------------------------------------------
def read(text: str, tmp_path: Path) -> tuple[MqttSettings | None, list[str]]:
    path = tmp_path / "agent.toml"
    doc = TomlDoc.parse(text, str(path))
    problems = Problems()
    table = Table.root(doc, problems).table("mqtt")
    assert table is not None
    settings = read_mqtt(table)
    return settings, [str(p) for p in problems.items]


def test_reads_a_full_mqtt_table(tmp_path: Path) -> None:
    settings, problems = read("""
[mqtt]
host = "broker.plant"
protocol = "3.1.1"
keepalive = "20s"
client_id = "press-7"
username = "press"
password_file = "secrets/mqtt"
topic_prefix = "plant/{agent}"
codec = "json"
topic_mode = "umh"
umh = { enterprise = "acme", site = "cologne", area = "packaging" }
inflight = 500
historical_after = "30s"
tls = { ca_file = "/etc/ssl/plant-ca.pem", insecure_skip_hostname = true }
replay = { msgs_per_s = 200, bytes_per_s = "64kB" }
backoff = { initial = "500ms", max = "2m" }
""", tmp_path)
    assert problems == []
    assert settings is not None
    assert settings.port == 8883 and settings.broker == "mqtts://broker.plant:8883"
    assert settings.protocol == "3.1.1" and settings.keepalive == 20.0
    assert settings.password_file == str(tmp_path / "secrets/mqtt")
    assert settings.tls is not None and settings.tls.insecure_skip_hostname
    assert settings.umh == UmhPath("acme", "cologne", "packaging")
    assert (settings.msgs_per_s, settings.bytes_per_s) == (200.0, 64_000.0)
    assert (settings.backoff_initial, settings.backoff_max) == (0.5, 120.0)
    assert settings.inflight == 500 and settings.historical_after == 30.0


def test_defaults_from_an_empty_table(tmp_path: Path) -> None:
    settings, problems = read("[mqtt]\n", tmp_path)
    assert problems == [] and settings == MqttSettings()


@pytest.mark.parametrize(("text", "expected"), [
    ('protocol = "5.0"', "agent.toml:2:12: 'protocol' cannot be '5.0'"),
    ('protcol = "5"', "unknown key 'protcol' in mqtt; did you mean 'protocol'?"),
    ('keepalive = "0s"', "'keepalive' must be longer than zero"),
    ('port = 70000', "'port' must be at most 65535"),
    ('password_file = "pw"', "'password_file' needs 'username' too"),
    ('topic_mode = "umh"', "mqtt needs the key 'umh'"),
    ('topic_mode = "umh"\numh = { site = "x" }', "umh needs the key 'enterprise'"),
    ('topic_mode = "umh"\numh = { enterprise = "a", area = "x" }', "cannot skip 'site'"),
    ('tls = { cert_file = "c.pem" }', "needs both 'cert_file' and 'key_file'"),
    ('codec = "cbor"', "'codec' cannot be 'cbor'; use one of json, msgpack"),
    ('topic_prefix = "a/#"', "'topic_prefix' 'a/#' must be a non-empty topic"),
    ('backoff = { initial = "5s", max = "1s" }', "backoff 'max' must not be shorter"),
    ('replay = { bytes_per_s = "fast" }', "'fast' is not a size"),
])
def test_mistakes_are_located(tmp_path: Path, text: str, expected: str) -> None:
    _, problems = read(f"[mqtt]\n{text}\n", tmp_path)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(str(tmp_path / "agent.toml") + ":") for p in problems)


def test_protocol_is_pinned_only_when_the_config_names_it(tmp_path: Path) -> None:
    unset, _ = read("[mqtt]\n", tmp_path)
    five, _ = read('[mqtt]\nprotocol = "5"\n', tmp_path)
    assert unset is not None and five is not None
    assert (unset.protocol, unset.protocol_pinned) == ("5", False)
    assert (five.protocol, five.protocol_pinned) == ("5", True)


def test_flush_on_stop_defaults_to_two_seconds_and_is_bounded(tmp_path: Path) -> None:
    default, _ = read("[mqtt]\n", tmp_path)
    off, _ = read('[mqtt]\nflush_on_stop = 0\n', tmp_path)
    assert default is not None and default.flush_on_stop == 2.0
    assert off is not None and off.flush_on_stop == 0.0
    _, problems = read('[mqtt]\nflush_on_stop = "1m"\n', tmp_path)
    assert problems == [f"{tmp_path / 'agent.toml'}:2:17: 'flush_on_stop' must be at most 20s, "
                        f"within systemd's stop timeout"]


def test_password_from_systemd_credentials(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = MqttSettings(username="u", password_file="$CREDENTIALS_DIRECTORY/mqtt-password")
    assert read_password(settings) == "s3cret"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY, which is not set"):
        resolve_password_file("${CREDENTIALS_DIRECTORY}/mqtt-password")


def test_unreadable_password_file_names_the_path_not_the_secret(tmp_path: Path) -> None:
    settings = MqttSettings(username="u", password_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read the MQTT password file .*missing"):
        read_password(settings)


def test_problems_raise_together(tmp_path: Path) -> None:
    doc = TomlDoc.parse('[mqtt]\nport = "x"\ncodec = "xml"\n', "a.toml")
    problems = Problems()
    table = Table.root(doc, problems).table("mqtt")
    assert table is not None
    read_mqtt(table)
    with pytest.raises(ConfigProblems, match="2 problems"):
        problems.raise_if_any()


# -- rate limit and backoff ----------------------------------------------------------------------
def test_rate_limit_spaces_messages_on_a_fake_clock() -> None:
    limit = RateLimit(msgs_per_s=10)
    now, sent = 0.0, 0
    while now < 10.0:
        wait = limit.delay(100, now)
        if wait == 0:
            sent += 1
        else:
            now += wait
    assert 100 <= sent <= 111  # 10/s for 10 s plus the one-second burst


def test_byte_limit_counts_bytes_and_lets_a_large_message_through() -> None:
    limit = RateLimit(bytes_per_s=1000)
    assert limit.delay(5000, 0.0) == 0  # larger than the burst: passes when the bucket is full
    assert limit.delay(10, 0.0) > 0  # then the debt must be paid first
    assert not RateLimit().active


def test_reconnect_waits_come_from_mqtt_backoff_with_initial_as_jitter() -> None:
    fwd = Forwarder(journal=None, settings=MqttSettings(backoff_initial=1, backoff_max=10),  # type: ignore[arg-type]
                    agent_id="a", boot=1, version="x")
    # The policy itself (doubling, jitter, cap, start over) is tested in tests/hw/test_backoff.py.
    assert fwd._backoff == Backoff(initial=1, maximum=10, jitter=1)


def test_a_record_the_wire_cannot_encode_raises_one_located_sentence() -> None:
    from linelight.agent.mqtt.wire import EncodeError

    wire = Wire(agent_id="press-7", prefix="linelight/{agent}")
    bad = Record(seq=9, boot=1, kind="count", name="parts", value=1, ts_ns=1, enq_ns=1,
                 attrs=5)
    with pytest.raises(EncodeError, match=r"event seq 9 \(count/parts\) cannot be encoded"):
        wire.event(bad, historical=False)
