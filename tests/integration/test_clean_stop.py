"""A clean stop with the broker connected sends what the journal holds, then `offline`.

The agent runs as a subprocess against a real mosquitto; an independent subscriber on the
agent's whole tree checks that the `stop` event arrives, and arrives before the retained
`offline` status, and the journal left on disk holds nothing up to the `stop` event.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.agent_proc import (
    AgentProcess,
    journal_newest_seq,
    journal_records,
    write_config,
)
from harness.mosquitto import Mosquitto
from harness.subscriber import Received, Subscriber

pytestmark = pytest.mark.slow

AGENT = "it-press"
TREE = f"linelight/{AGENT}/"


def is_stop(m: Received) -> bool:
    return m.topic == f"{TREE}events/agent/stop"


def is_offline(m: Received) -> bool:
    return m.topic == f"{TREE}status" and m.decoded == {"status": "offline", "agent": AGENT}


def test_sigterm_sends_the_stop_event_before_offline_and_leaves_nothing_up_to_it(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"{TREE}#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["seq_hwm"] > 20,
                          what="connected, with some events recorded")
        assert agent.stop() == 0, agent.log()

    got = sub.wait_for(lambda ms: any(is_offline(m) for m in ms), 60, "offline status")
    stops = [i for i, m in enumerate(got) if is_stop(m)]
    offline = next(i for i, m in enumerate(got) if is_offline(m))
    assert stops, f"no stop event reached the subscriber; agent log:\n{agent.log()[-3000:]}"
    assert stops[0] < offline, "offline arrived before the stop event"
    stop_seq = got[stops[0]].seq
    assert stop_seq is not None
    # Everything up to the stop event was acknowledged, so deleted from the journal.
    left = journal_records(tmp_path / "agent" / "data")
    assert all(r.seq > stop_seq for r in left), [(r.seq, r.kind, r.name) for r in left[:5]]
    assert journal_newest_seq(tmp_path / "agent" / "data") >= stop_seq
    received = {m.seq for m in got if m.topic.startswith(f"{TREE}events/")}
    assert set(range(1, stop_seq + 1)) <= received, "an event before the stop is missing"
    # Every message says what it carries (MQTT 5 payload format indicator, content type).
    assert {(m.payload_format, m.content_type) for m in got} == {(1, "application/json")}
