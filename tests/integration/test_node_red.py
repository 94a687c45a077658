"""A real Node-RED reads linelight's default wire format as it is, outage included.

Node-RED (npm, headless on loopback) runs examples/node-red/flows.json: `mqtt in` nodes on the
event and live topics with Node-RED's default output (auto-detect), writing what they got to a
file. The agent runs as a subprocess with a config that says nothing about the codec. Every
event of the run (before, during and after a broker outage, up to the clean stop) must reach
Node-RED parsed as an object, with the same `ts`/`ts_sub_ns` numbers an independent Python
subscriber decodes (a nanosecond epoch would arrive rounded: JavaScript numbers are doubles).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, write_config
from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber
from tests.fixtures.node_red import NodeRed

pytestmark = pytest.mark.slow

AGENT = "it-press"
EVENTS = f"linelight/{AGENT}/events/"


def test_node_red_gets_every_event_as_an_object_with_exact_times_through_an_outage(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber],
        make_node_red: Callable[[int], NodeRed]) -> None:
    red = make_node_red(mosquitto.port)
    sub = make_subscriber(mosquitto, [f"{EVENTS}#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    with AgentProcess(config) as agent:
        agent.start()
        outage = agent.ride_out_an_outage(mosquitto)
        assert agent.stop() == 0

    reference = {m.seq: m.decoded for m in sub.wait_for(
        lambda ms: any(m.topic == f"{EVENTS}agent/stop" for m in ms), 60, "the stop event")}
    last = max(reference)
    assert set(reference) == set(range(1, last + 1)), "the Python subscriber missed events"

    def node_red_events() -> dict[int, dict]:  # type: ignore[type-arg]
        return {line["payload"]["seq"]: line for line in red.lines()
                if line["topic"].startswith(EVENTS) and line["parsed"]}

    sub.wait_for(lambda _: len(node_red_events()) >= last, 60, "Node-RED got every event")
    got = node_red_events()
    events = [line for line in red.lines() if line["topic"].startswith(EVENTS)]
    assert all(line["parsed"] for line in events), [e for e in events if not e["parsed"]][:3]
    assert set(got) == set(reference), sorted(set(reference) - set(got))[:20]
    for seq, line in got.items():
        body, want = line["payload"], reference[seq]
        assert (body["ts"], body["ts_sub_ns"]) == (want["ts"], want["ts_sub_ns"]), seq
        assert line["contentType"] == "application/json"
    assert outage["queue"]["seq_hwm"] in got  # recorded while the broker was down, replayed
    live = [line for line in red.lines() if "/live/" in line["topic"]]
    assert live and all(line["parsed"] and isinstance(line["payload"], dict) for line in live)
