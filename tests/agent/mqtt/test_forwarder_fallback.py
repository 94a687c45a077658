"""MQTT 5 to 3.1.1 fallback against a real broker that only speaks 3.1.1 (aedes, from npm).

aedes answers an MQTT 5 CONNECT with CONNACK return code 1 "unacceptable protocol version"
(aedes lib/handlers/connect.js); paho reports it as reason 0x84 "Unsupported protocol
version". The agent must then connect with 3.1.1, say so once, and forward as usual,
through an outage and its replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from harness.proxy import TcpProxy
from harness.subscriber import Subscriber
from tests.agent.mqtt.forwarder_proc import fill_journal, settings
from tests.agent.mqtt.test_forwarder import (
    EVENTS,
    assert_complete_in_order,
    running,
    wait_seqs,
    wait_until,
)
from tests.fixtures.aedes import Aedes

pytestmark = pytest.mark.anyio

FALLBACK = "does not support MQTT 5: connecting with MQTT 3.1.1"


def fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if FALLBACK in r.getMessage()]


async def test_a_broker_refusing_mqtt5_gets_311_next_and_replays_after_an_outage(
        tmp_path: Path, make_aedes: Callable[[], Aedes],
        make_proxy: Callable[[str, int], TcpProxy], make_subscriber: Callable[..., Subscriber],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "linelight.agent.mqtt")
    broker = make_aedes()
    proxy = make_proxy(broker.host, broker.port)
    sub = make_subscriber(broker.host, f"{EVENTS}#", port=broker.port, protocol=mqtt.MQTTv311)
    mqtt_settings = settings(proxy.host, proxy.port, keepalive=1.0, connect_timeout=2.0)
    async with running(tmp_path / "j.db", mqtt_settings) as (journal, fwd):
        first = await fill_journal(journal, 200)
        await wait_seqs(sub, first)
        assert fwd.link.protocol == "3.1.1" and fwd.link.connects == 1
        assert len(fallback_lines(caplog)) == 1, caplog.text

        proxy.stall()  # a silent outage: the link is dropped after 1.5 x keepalive
        await wait_until(lambda: not fwd.link.connected, "link down during the stall")
        last = await fill_journal(journal, 300)
        assert journal.stats().depth > 0
        proxy.resume()
        seqs = await wait_seqs(sub, last)
        assert fwd.link.reconnects >= 1
    assert_complete_in_order(seqs, last)
    assert len(fallback_lines(caplog)) == 1, "the fallback is said once, not per reconnect"
    assert all(m.user_properties == () for m in sub.snapshot())  # 3.1.1 has none


async def test_a_pinned_mqtt5_is_not_downgraded_and_the_refusal_is_logged(
        tmp_path: Path, make_aedes: Callable[[], Aedes],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "linelight.agent.mqtt")
    broker = make_aedes()
    pinned = settings(broker.host, broker.port, protocol="5", protocol_pinned=True)
    async with running(tmp_path / "j.db", pinned) as (_journal, fwd):
        await wait_until(lambda: fwd.link.attempts >= 3, "three refused attempts")
        assert not fwd.link.connected and fwd.link.protocol == "5"
    assert fallback_lines(caplog) == []
    refusals = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert refusals == [f"cannot connect to MQTT broker mqtt://127.0.0.1:{broker.port}: "
                        f"connection refused: Unsupported protocol version"], caplog.text
