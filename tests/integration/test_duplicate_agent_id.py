"""Two agents with one agent_id (a copied config) against a real mosquitto: each one says so.

The broker lets only one client hold a client id; each new connection closes the other's
(MQTT 5 brokers may send DISCONNECT 0x8E "session taken over", mosquitto 2.0.11 just closes
the socket). Both agents must log that cause once, with the remedy, not a generic
"Unspecified error" on every round.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, write_config
from harness.mosquitto import Mosquitto

pytestmark = pytest.mark.slow

CAUSE = "session taken over"
REMEDY = "give each agent a unique agent_id"


def test_two_agents_with_one_agent_id_each_log_the_takeover_once(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    first = write_config(tmp_path / "a", mqtt_port=mosquitto.port)
    second = write_config(tmp_path / "b", mqtt_port=mosquitto.port)
    with AgentProcess(first) as a, AgentProcess(second) as b:
        a.start()
        b.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(CAUSE in p.log() for p in (a, b)):
            time.sleep(0.2)
        time.sleep(3)  # several more rounds of knocking each other off
        status = b.status()
        assert a.stop() == 0 and b.stop() == 0
        logs = [a.log(), b.log()]
    for text in logs:
        lines = [ln for ln in text.splitlines() if CAUSE in ln]
        assert len(lines) == 1, text[-3000:]
        assert "same client id 'linelight-it-press'" in lines[0]
        assert REMEDY in lines[0]
        assert "Unspecified error" not in text
    assert status["broker"]["last_error"] is None or CAUSE in status["broker"]["last_error"]
