"""The paho internals agent/mqtt/link.py relies on still have the shape it was written against.

link.py overrides paho's private `_handle_pubackcomp` and calls or reads a few more private
names (each marked `# noqa: SLF001` there). paho is pinned to its minor version in
pyproject.toml; when that pin moves, this test says in plain words which name changed, before
a malformed broker packet or a reconnect finds out in production.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from linelight.agent.mqtt.link import _Client

# method -> the parameter names (after self) link.py calls it with or overrides it with
METHODS = {
    "_handle_pubackcomp": ["cmd"],  # overridden: the fast, strict PUBACK decoder
    "_packet_read": [],  # read_some: one packet at a time
    "_loop_rc_handle": ["rc"],  # read_some: paho's own handling of a failed read
    "_packet_handle": [],  # must still dispatch PUBACK to _handle_pubackcomp("PUBACK")
    "_send_pingreq": [],  # ping(): a PINGREQ on our schedule
    "_do_on_publish": ["mid", "reason_code", "properties"],  # the fast decoder's delivery
    "_sock_close": [],  # close() without DISCONNECT, so the will fires
}
# instance attribute -> its type on a fresh client
ATTRIBUTES = {
    "_sock": type(None),
    "_ping_t": float,
    "_in_packet": dict,
    "_out_messages": dict,
    "_out_message_mutex": type(mqtt.threading.RLock()),
}
IN_PACKET_KEYS = {"command", "packet"}


def _client() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)


def test_paho_is_the_minor_version_the_internals_were_read_from() -> None:
    assert version("paho-mqtt").startswith("2.2."), (
        f"paho-mqtt {version('paho-mqtt')} is installed, link.py's private accesses were "
        f"checked against 2.2: re-read them, then move the pin and this test")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_private_method_exists_with_the_expected_parameters(name: str) -> None:
    method = getattr(mqtt.Client, name, None)
    assert method is not None, f"paho's Client no longer has {name}(); link.py uses it"
    assert callable(method), f"paho's Client.{name} is no longer a method; link.py calls it"
    params = list(inspect.signature(method).parameters)[1:]
    assert params == METHODS[name], (
        f"paho's Client.{name} now takes ({', '.join(params)}), link.py was written for "
        f"({', '.join(METHODS[name])})")


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_private_attribute_exists_with_the_expected_type(name: str) -> None:
    client = _client()
    assert hasattr(client, name), f"paho's Client no longer sets self.{name}; link.py reads it"
    value = getattr(client, name)
    assert isinstance(value, ATTRIBUTES[name]), (
        f"paho's Client.{name} is now a {type(value).__name__}, link.py expects a "
        f"{ATTRIBUTES[name].__name__}")


def test_the_incoming_packet_keeps_the_keys_the_puback_decoder_reads() -> None:
    missing = IN_PACKET_KEYS - set(_client()._in_packet)
    assert not missing, f"paho's Client._in_packet lost the keys {sorted(missing)}"


def test_paho_still_dispatches_puback_through_the_overridden_handler() -> None:
    # The fast decoder only runs if paho still dispatches through the overridden name.
    source = inspect.getsource(mqtt.Client._packet_handle)
    assert 'self._handle_pubackcomp("PUBACK")' in source, (
        "paho's _packet_handle no longer calls self._handle_pubackcomp(\"PUBACK\"): the fast "
        "PUBACK decoder in link.py would be skipped or called wrongly")
    assert _Client._handle_pubackcomp is not mqtt.Client._handle_pubackcomp
    assert "_packet_read" not in vars(_Client) and "loop_read" not in vars(_Client)
