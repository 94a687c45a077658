"""The running agent's /history: a broker outage with the queue growing, a reload, a rejected
reload, and a kill -9 followed by a start that says the previous run did not end cleanly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.agent_proc import EXAMPLE_RULES, AgentProcess, write_config
from harness.mosquitto import Mosquitto

pytestmark = pytest.mark.slow


def history(agent: AgentProcess, query: str = "hours=1") -> dict[str, Any]:
    code, body = agent.http("GET", f"/history?{query}")
    assert code == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def wait_history(agent: AgentProcess, predicate: Any, what: str, timeout: float = 40.0
                 ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = history(agent)
        if predicate(doc):
            return doc
        time.sleep(0.3)
    raise AssertionError(f"/history never showed {what} within {timeout:.0f} s: "
                         f"{json.dumps(doc)[:3000]}\nagent log:\n{agent.log()[-3000:]}")


def kinds(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in doc["marks"]]


def test_history_records_outage_reloads_and_an_unclean_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port)
    rules = config.parent / "rules.d" / "machine.toml"
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"], what="connected")
        wait_history(agent, lambda d: ("link", "broker up") in kinds(d), "broker up")
        mosquitto.stop()
        doc = wait_history(agent, lambda d: ("link", "broker down") in kinds(d)
                           and any(p[1] > 0 and p[2] == 0 for p in d["depth"]),
                           "broker down and a queue sample while it was down")
        down = [m for m in doc["marks"] if m[2] == "broker down"][-1]
        assert down[4], "the down mark says why"
        mosquitto.start()
        wait_history(agent, lambda d: kinds(d).count(("link", "broker up")) == 2, "broker up")

        rules.write_text(EXAMPLE_RULES.read_text() + '\n[[signal]]\nname = "slow"\npriority = 5\n'
                         'when = "spindle_rpm < 10"\nshow = { amber = "on" }\n')
        wait_history(agent, lambda d: ("reload", "rules reloaded") in kinds(d), "the reload")
        rules.write_text(EXAMPLE_RULES.read_text().replace('name = "producing"',
                                                           'name = "producing"\nbogus = 1'))
        doc = wait_history(agent, lambda d: ("reject", "rules rejected") in kinds(d),
                           "the rejected reload")
        reject = [m for m in doc["marks"] if m[1] == "reject"][-1]
        assert "bogus" in reject[4]
        states = {s[1] for s in doc["states"]}
        assert {"producing", "fault"} <= states, states
        rules.write_text(EXAMPLE_RULES.read_text())
        agent.kill9()
        agent.start()
        doc = wait_history(agent, lambda d: sum(m[1] == "start" for m in d["marks"]) == 2,
                           "the second start")
        starts = [m for m in doc["marks"] if m[1] == "start"]
        assert starts[0][4] is None and "without a clean stop" in starts[1][4]
        assert agent.stop() == 0
    # a clean stop is the last mark the next start reads: that start has no complaint
    with AgentProcess(config) as agent:
        agent.start()
        doc = wait_history(agent, lambda d: sum(m[1] == "start" for m in d["marks"]) == 3,
                           "the third start")
        assert [m[1] for m in doc["marks"]].count("stop") == 1
        assert [m for m in doc["marks"] if m[1] == "start"][-1][4] is None
        assert agent.stop() == 0
