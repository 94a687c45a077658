"""The whole agent as a subprocess: sim machine, example rules, a real mosquitto, an outage.

While the broker is down the machine keeps changing state and the tower keeps following the
rules; when it returns, an independent subscriber receives every event, in order after dedup,
each with the MQTT 5 user properties `agent` and `seq`.
A `kill -9` loses nothing that was committed and the sequence continues.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.subscriber import Subscriber
from tests.integration.agent_proc import (
    AgentProcess,
    delivered_in_order,
    process_gone,
    write_config,
)

pytestmark = pytest.mark.slow

AGENT = "it-press"
EVENTS = f"linelight/{AGENT}/events/"

# What the example rules light for each state (lamps not named are off).
EXPECTED_LAMPS = {
    "producing": {"green": "on"},
    "microstop": {"amber": "blink_slow"},
    "idle": {"amber": "on", "blue": "on"},  # door open: the door_open signal lights blue
    "unknown": {"amber": "blink_fast"},
}


def lamps_follow_rules(status: dict[str, Any]) -> bool:
    state = status["state"]["name"]
    lit = {lamp: p for lamp, p in status["lamps"].items() if p != "off"}
    if state == "fault":
        return lit.get("red") == "blink_fast"  # the buzzer sounds for 2 s only
    return state not in EXPECTED_LAMPS or lit == EXPECTED_LAMPS[state]


def test_events_survive_a_broker_outage_in_order_while_lamps_follow_the_rules(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"linelight/{AGENT}/#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["state"]["name"] != "unknown",
                          what="connected and in a known state")
        sub.wait_for(lambda msgs: any(m.topic.startswith(EVENTS + "state/") for m in msgs),
                     what="a state event")

        mosquitto.stop()
        agent.wait_status(lambda s: not s["broker"]["connected"], what="broker link down")
        seen_states: set[str] = set()
        checked = 0
        deadline = time.monotonic() + 60
        while (len(seen_states) < 3 or checked < 20) and time.monotonic() < deadline:
            status = agent.status()
            assert lamps_follow_rules(status), status
            seen_states.add(status["state"]["name"])
            checked += 1
            time.sleep(0.1)
        assert len(seen_states) >= 3, seen_states
        during = agent.status()
        assert during["queue"]["depth"] > 0
        hwm_during_outage = during["queue"]["seq_hwm"]

        mosquitto.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                          and s["queue"]["seq_hwm"] > hwm_during_outage,
                          timeout=90, what="backlog drained after the broker returned")
        assert agent.stop() == 0

    seqs, left = delivered_in_order(sub, tmp_path / "agent" / "data", EVENTS)
    assert len(seqs) >= hwm_during_outage
    delivered = {m.seq: m.decoded for m in sub.snapshot() if m.topic.startswith(EVENTS)}
    assert any(r.kind == "agent" and r.name == "stop" for r in left) or any(
        d["kind"] == "agent" and d["name"] == "stop" for d in delivered.values())
    states = [m.decoded for m in sub.snapshot() if m.topic.startswith(EVENTS + "state/")]
    assert len({s["name"] for s in states}) >= 3
    # MQTT 5 user properties, as an independent paho client decodes them: every event message
    # (replayed or live, re-sent duplicates included) carries agent and seq, as strings.
    events = [m for m in sub.snapshot() if m.topic.startswith(EVENTS)]
    wrong = [(m.topic, m.decoded.get("seq"), m.user_properties) for m in events
             if sorted(m.user_properties) != [("agent", AGENT), ("seq", str(m.decoded["seq"]))]]
    assert not wrong, f"{len(wrong)} of {len(events)} event messages with wrong user properties, " \
                      f"first {wrong[:3]}"


def test_kill_9_loses_nothing_committed_and_the_sequence_continues(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"linelight/{AGENT}/events/#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: any(v > 0 for v in s["counters"].values())
                          and s["queue"]["seq_hwm"] > 50, what="some parts counted")
        # some events delivered before the kill (on a loaded machine the forwarder process may
        # not have published any yet: the comparison below needs a last one)
        sub.wait_for(lambda msgs: any(m.topic.startswith(EVENTS) for m in msgs),
                     what="a first event delivered")
        agent.kill9()
        before = sorted(set(sub.seqs(EVENTS)))

        agent.start()
        restarted = agent.wait_status(lambda s: s["state"]["name"] != "unknown",
                                      what="a known state after the restart")
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                          and s["queue"]["seq_hwm"] > restarted["queue"]["seq_hwm"],
                          timeout=90, what="queue drained after restart")
        assert agent.stop() == 0

    seqs = delivered_after_stop(sub, tmp_path / "agent" / "data")
    assert seqs[-1] > before[-1]
    msgs = {m.seq: m.decoded for m in sub.snapshot() if m.topic.startswith(EVENTS)}
    starts = [s for s in seqs if msgs[s]["kind"] == "agent" and msgs[s]["name"] == "start"]
    assert len(starts) == 2 and starts[1] > before[-1]
    assert msgs[starts[1]]["boot"] == msgs[starts[0]]["boot"] + 1
    first_state_after = next(msgs[s] for s in seqs
                             if s > starts[1] and msgs[s]["kind"] == "state")
    assert first_state_after["previous_state"] == "unknown"
    counts = [msgs[s]["value"] for s in seqs if msgs[s]["kind"] == "count"]
    assert counts == sorted(counts), "counter totals went backwards across the restart"


def test_kill_9_of_the_forwarder_process_loses_nothing_and_it_comes_back(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"linelight/{AGENT}/events/#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["seq_hwm"] > 50,
                          what="connected, some events made")
        first = agent.forwarder_pid()
        assert first is not None, "the agent runs no forwarder process"
        os.kill(first, signal.SIGKILL)
        agent.wait_status(lambda s: s["components"]["forwarder"]["restarts"] >= 1
                          and s["broker"]["connected"], timeout=60,
                          what="the forwarder process restarted and connected")
        second = agent.forwarder_pid()
        assert second is not None and second != first
        # the lamps never stopped following the machine while the forwarder was gone
        assert agent.status()["scan"]["healthy"]
        before = agent.status()["queue"]["seq_hwm"]
        agent.kill9()  # now the agent: its forwarder must not outlive it
        _wait(lambda: process_gone(second), "the forwarder process to end with its agent")

        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                          and s["queue"]["seq_hwm"] > before,
                          timeout=90, what="queue drained after restart")
        assert agent.stop() == 0

    seqs = delivered_after_stop(sub, tmp_path / "agent" / "data")
    assert seqs[-1] > before


def delivered_after_stop(sub: Subscriber, data: Path) -> list[int]:
    """The event seqs the subscriber got, deduplicated, checked to be 1..N with none lost."""
    return delivered_in_order(sub, data, EVENTS)[0]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout}s"
        time.sleep(0.05)
