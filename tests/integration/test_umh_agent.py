"""The whole agent in each UMH mode, as a subprocess: every message of a run with a broker
outage, the replay and the clean stop passes UMH's rules (the checks of
tests/agent/mqtt/test_wire_umh_core.py and test_wire_umh_classic.py, which cite them), and
no event is missing after dedup by the `seq` user property."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, write_config
from harness.mosquitto import Mosquitto
from harness.subscriber import Received, Subscriber, dedup_in_order
from linelight.agent.mqtt.wire import Message
from tests.agent.mqtt.test_wire_umh_classic import real, rows
from tests.agent.mqtt.test_wire_umh_core import check_time_series, parse_uns_topic

pytestmark = pytest.mark.slow

UMH = 'umh = { enterprise = "acme", site = "cologne", area = "packaging", line = "line-1", ' \
      'workcell = "press-7" }\n'


def run_agent_with_an_outage(tmp_path: Path, mosquitto: Mosquitto, mode: str) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    config.write_text(config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\ntopic_mode = "{mode}"\n{UMH}', 1))
    with AgentProcess(config) as agent:
        agent.start()
        agent.ride_out_an_outage(mosquitto)
        assert agent.stop() == 0


def as_message(m: Received) -> Message:
    return Message(m.topic, m.payload, m.user_properties)


def delivered_seqs(messages: list[Received]) -> list[int]:
    return dedup_in_order([m.seq for m in messages if m.seq is not None])


@pytest.mark.parametrize("mode", ["umh-core", "umh"])
def test_every_message_of_an_agent_run_passes_umhs_rules(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber],
        mode: str) -> None:
    sub = make_subscriber(mosquitto, "#")
    run_agent_with_an_outage(tmp_path, mosquitto, mode)
    prefix = "umh.v1." if mode == "umh-core" else "umh/v1/"

    def is_stop(m: Received) -> bool:
        return m.topic.startswith(prefix) and (
            m.topic.endswith(".agent.stop") if mode == "umh-core"
            else m.topic.endswith("/agent") and "stop" in json.loads(m.payload))

    def offline_after_stop(ms: list[Received]) -> bool:
        stop = next((i for i, m in enumerate(ms) if is_stop(m)), None)
        # An earlier `offline` can be the will mosquitto restored from before its restart.
        return stop is not None and any(
            m.decoded == {"status": "offline", "agent": "it-press"} for m in ms[stop:])

    got = sub.wait_for(offline_after_stop, 60, "the stop event, then offline")
    umh = [m for m in got if m.topic.startswith(prefix)]
    assert umh
    for m in umh:
        if mode == "umh-core":
            parse_uns_topic(m.topic)
            check_time_series(as_message(m))
        else:
            for name, (table, value) in rows(as_message(m)).items():
                if table == "tag" and isinstance(value, int):
                    assert real(value) == value, (name, value)
                assert not isinstance(value, bool), name
    seqs = delivered_seqs(umh)
    assert seqs == list(range(1, seqs[-1] + 1)), "an event is missing or out of order"
