"""Three machines on one agent, as a real subprocess: press-1 on a shared Modbus device (which
also carries press-1's and press-2's lamp coils), press-2 on its own Modbus device, a capper
on its own simulator. Through a broker outage and a kill -9 every machine's lamps follow its
own rules and every event arrives in the agent's seq order; a stopped device makes only its
machine `unknown`; a reload with one machine's file broken switches only the others."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness.agent_proc import (
    EXAMPLE_RULES,
    AgentProcess,
    delivered_in_order,
)
from harness.mosquitto import Mosquitto
from harness.ports import free_port
from harness.subscriber import Subscriber
from linelight.agent.cli.status import summary
from tests.agent.test_machines import RULES as PRESS_RULES
from tests.hw.modbus_server import ModbusTestServer

pytestmark = pytest.mark.slow

AGENT = "it-line"
TOPICS = f"linelight/{AGENT}/"

# press-1's lamps red, amber, green on coils 0..2 of the shared device, press-2's on 4..6
PRESS_1_COILS, PRESS_2_COILS = 0, 4
RED, AMBER, GREEN = [True, False, False], [False, True, False], [False, False, True]


def line_config(directory: Path, *, cell: int, plc: int, mqtt: int) -> Path:
    """The agent's config: three machines, one shared source, two own sources."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules").mkdir(exist_ok=True)
    (directory / "rules" / "press-1.toml").write_text(PRESS_RULES)
    (directory / "rules" / "press-2.toml").write_text(PRESS_RULES)
    (directory / "rules" / "capper.toml").write_text(EXAMPLE_RULES.read_text())
    lamps = "red = {{ coil = {} }}\namber = {{ coil = {} }}\ngreen = {{ coil = {} }}\n"
    text = f"""\
agent_id = "{AGENT}"
data_dir = "data"

[scan]
period = "20ms"

[diagnostics]
listen = ["127.0.0.1:{free_port()}"]

[mqtt]
host = "127.0.0.1"
port = {mqtt}
keepalive = "5s"
backoff = {{ initial = "200ms", max = "1s" }}

[sources.cell]
type = "modbus_tcp"
host = "127.0.0.1"
port = {cell}
poll = "50ms"
reconnect_max = "1s"

[sources.cell.inputs]
p1_running = {{ discrete_input = 0 }}

[machines.press-1]
rules = ["rules/press-1.toml"]
inputs = {{ running = "p1_running" }}

[machines.press-1.tower]
source = "cell"

[machines.press-1.tower.lamps]
{lamps.format(*range(PRESS_1_COILS, PRESS_1_COILS + 3))}
[machines.press-2]
rules = ["rules/press-2.toml"]

[machines.press-2.sources.press-2-plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = {plc}
poll = "50ms"
timeout = "200ms"
reconnect_max = "1s"

[machines.press-2.sources.press-2-plc.inputs]
running = {{ discrete_input = 0 }}

[machines.press-2.tower]
source = "cell"

[machines.press-2.tower.lamps]
{lamps.format(*range(PRESS_2_COILS, PRESS_2_COILS + 3))}
[machines.capper]
rules = ["rules/capper.toml"]

[machines.capper.sources.capper-sim]
type = "sim"
model = "machine"
period = "20ms"
machine = {{ producing = "2s", microstop = "1s", fault = "1500ms", idle = "1500ms", cycle = "400ms" }}

[machines.capper.tower.lamps]
red = {{ virtual = true }}
amber = {{ virtual = true }}
green = {{ virtual = true }}
blue = {{ virtual = true }}
buzzer = {{ virtual = true }}
"""
    path = directory / "agent.toml"
    path.write_text(text)
    return path


class Line:
    """The two Modbus devices the agent talks to, read and written from the test."""

    def __init__(self, cell: ModbusTestServer, plc: ModbusTestServer, agent: AgentProcess):
        self.cell, self.plc, self.agent = cell, plc, agent

    async def wait_lamps(self, first_coil: int, want: list[bool], what: str) -> None:
        deadline = time.monotonic() + 60
        got: list[bool] = []
        while time.monotonic() < deadline:
            got = await self.cell.coils(first_coil, 3)
            if got == want:
                return
            if self.agent.proc is not None and self.agent.proc.poll() is not None:
                raise AssertionError(f"agent exited while waiting for {what}:\n"
                                     f"{self.agent.log()[-4000:]}")
            await anyio.sleep(0.05)
        raise AssertionError(f"{what}: coils {first_coil}.. (red, amber, green) of "
                             f"{self.cell.url} are {got}, not {want} after 60 s\n"
                             f"{self.agent.log()[-3000:]}")

    async def status(self, predicate: Callable[[dict[str, Any]], bool], what: str
                     ) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(
            lambda: self.agent.wait_status(predicate, what=what))


def state(s: dict[str, Any], machine: str) -> str:
    return str(s["machines"][machine]["state"]["name"])


@pytest.fixture
async def running_line(tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]
               ) -> AsyncIterator[tuple[Line, Subscriber]]:
    """The two devices, a subscriber to every topic of the agent, and the agent started."""
    cell, plc = ModbusTestServer(), ModbusTestServer()
    await cell.start()
    await plc.start()
    sub = make_subscriber(mosquitto, [f"{TOPICS}#"])
    config = line_config(tmp_path / "agent", cell=cell.port, plc=plc.port, mqtt=mosquitto.port)
    try:
        with AgentProcess(config) as agent:
            await anyio.to_thread.run_sync(agent.start)
            yield Line(cell, plc, agent), sub
    finally:
        await plc.stop()
        await cell.stop()


@pytest.mark.anyio
async def test_three_machines_keep_their_own_lamps_and_every_event_through_outage_and_kill_9(
        tmp_path: Path, mosquitto: Mosquitto, running_line: tuple[Line, Subscriber]) -> None:
    line, sub = running_line
    cell, plc, agent = line.cell, line.plc, line.agent
    await line.wait_lamps(PRESS_1_COILS, RED, "press-1 stopped")
    await line.wait_lamps(PRESS_2_COILS, RED, "press-2 stopped")
    await line.status(lambda s: s["broker"]["connected"]
                      and state(s, "capper") != "unknown", "connected, capper running")

    mosquitto.stop()
    await line.status(lambda s: not s["broker"]["connected"], "broker link down")
    # each machine follows only its own inputs: one changes while the other holds
    for p1, p2 in [(True, False), (True, True), (False, True), (True, True)]:
        await cell.set_discrete(0, [p1])
        await plc.set_discrete(0, [p2])
        await line.wait_lamps(PRESS_1_COILS, GREEN if p1 else RED, f"press-1 running={p1}")
        await line.wait_lamps(PRESS_2_COILS, GREEN if p2 else RED, f"press-2 running={p2}")
    capper = await line.status(lambda s: state(s, "capper") == "fault",
                               "capper's own cycle reaching fault during the outage")
    assert capper["machines"]["capper"]["lamps"]["red"] == "blink_fast"
    await anyio.to_thread.run_sync(agent.kill9)

    await anyio.to_thread.run_sync(agent.start)
    restarted = await line.status(lambda s: state(s, "press-1") == "producing"
                                  and state(s, "press-2") == "producing",
                                  "both presses producing again after kill -9")
    await line.wait_lamps(PRESS_1_COILS, GREEN, "press-1 green after the restart")
    mosquitto.start()
    await line.status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                      and s["queue"]["seq_hwm"] > restarted["queue"]["seq_hwm"],
                      "backlog drained after the broker returned")
    assert await anyio.to_thread.run_sync(agent.stop) == 0

    data = tmp_path / "agent" / "data"
    await anyio.to_thread.run_sync(delivered_in_order, sub, data, TOPICS)
    events = {m.seq: (m.topic, m.decoded) for m in sub.snapshot()
              if m.seq is not None and m.topic.startswith(TOPICS)}
    for seq, (topic, body) in events.items():  # the topic and the payload name one machine
        machine = body.get("machine")
        assert topic.startswith(f"{TOPICS}{machine}/events/" if machine else f"{TOPICS}events/"), \
            (seq, topic, body)
    states = {m: [b["name"] for _, b in events.values()
                  if b.get("machine") == m and b["kind"] == "state"]
              for m in ("press-1", "press-2", "capper")}
    assert states["press-1"].count("producing") >= 3, states["press-1"]
    assert states["press-2"].count("producing") >= 2, states["press-2"]
    assert {"producing", "fault"} <= set(states["capper"]), states["capper"]
    starts = [b for _, b in events.values() if b["kind"] == "agent" and b["name"] == "start"]
    assert [s["machines"] for s in starts] == [["press-1", "press-2", "capper"]] * 2


@pytest.mark.anyio
async def test_a_stopped_modbus_device_makes_only_its_machine_unknown(
        tmp_path: Path, mosquitto: Mosquitto, running_line: tuple[Line, Subscriber]) -> None:
    line, sub = running_line
    cell, plc, agent = line.cell, line.plc, line.agent
    await plc.set_discrete(0, [True])
    await line.wait_lamps(PRESS_2_COILS, GREEN, "press-2 producing")

    await plc.stop()  # press-2's own device is gone
    await line.wait_lamps(PRESS_2_COILS, AMBER, "press-2's unknown pattern")
    gone = await line.status(lambda s: state(s, "press-2") == "unknown", "press-2 unknown")
    assert any("machine press-2: state unknown" in r for r in gone["health"]["reasons"])
    # the others go on: press-1's lamps follow its inputs, the capper's cycle its own
    for running in (True, False, True):
        await cell.set_discrete(0, [running])
        await line.wait_lamps(PRESS_1_COILS, GREEN if running else RED,
                              f"press-1 running={running} with press-2's device stopped")
    seen: set[str] = set()

    def capper_moves(s: dict[str, Any]) -> bool:
        seen.add(state(s, "capper"))
        return {"producing", "fault"} <= seen and state(s, "press-2") == "unknown"

    await line.status(capper_moves, "the capper cycling while press-2 is unknown")
    assert await line.wait_lamps(PRESS_2_COILS, AMBER, "press-2 still unknown") is None

    await plc.start()
    await line.wait_lamps(PRESS_2_COILS, GREEN, "press-2 back to producing")
    assert await anyio.to_thread.run_sync(agent.stop) == 0
    press_2 = [m.decoded["name"] for m in sub.snapshot()
               if m.topic.startswith(f"{TOPICS}press-2/events/state/")]
    assert press_2[-3:] == ["producing", "unknown", "producing"], press_2
    press_1 = [m.decoded["name"] for m in sub.snapshot()
               if m.topic.startswith(f"{TOPICS}press-1/events/state/")]
    assert "unknown" not in press_1[1:], press_1  # only the start-up unknown -> stopped


@pytest.mark.anyio
async def test_reload_with_one_broken_machine_file_keeps_its_rules_and_switches_the_others(
        tmp_path: Path, mosquitto: Mosquitto, running_line: tuple[Line, Subscriber]) -> None:
    line, sub = running_line
    plc, agent = line.plc, line.agent
    rules = tmp_path / "agent" / "rules"
    await line.wait_lamps(PRESS_1_COILS, RED, "press-1 stopped")
    await line.wait_lamps(PRESS_2_COILS, RED, "press-2 stopped")
    # press-1's new rules show stopped as amber; press-2's new file is broken
    (rules / "press-1.toml").write_text(PRESS_RULES.replace('show = { red = "on" }',
                                                            'show = { amber = "on" }'))
    (rules / "press-2.toml").write_text(PRESS_RULES.replace('when = "running"',
                                                            'when = "runing"', 1))
    await line.wait_lamps(PRESS_1_COILS, AMBER, "press-1 on its new rules")
    rejected_now = await line.status(
        lambda s: (s["rules"]["last_reload"] or {}).get("ok") is False, "press-2's file rejected")
    assert rejected_now["rules"]["last_reload"]["rejected_machines"] == ["press-2"]
    assert ("rules: the last reload was rejected for machine press-2: its previous rules are "
            "running, the other machines reloaded") in rejected_now["health"]["reasons"]
    assert "last reload REJECTED for machine press-2 (its old rules run, the others reloaded)" \
        in summary(rejected_now, "http://127.0.0.1")
    # press-2 keeps its old rules: stopped is still red, producing still green
    await line.wait_lamps(PRESS_2_COILS, RED, "press-2 on its old rules")
    await plc.set_discrete(0, [True])
    await line.wait_lamps(PRESS_2_COILS, GREEN, "press-2's old rules still running")
    assert await anyio.to_thread.run_sync(agent.stop) == 0
    agent_events = [m.decoded for m in sub.snapshot()
                    if m.topic.startswith(f"{TOPICS}press-2/events/agent/")
                    or m.topic.startswith(f"{TOPICS}press-1/events/agent/")]
    rejected = [e for e in agent_events if e["name"] == "rules_rejected"]
    reloaded = [e for e in agent_events if e["name"] == "rules_reloaded"]
    assert [e["machine"] for e in rejected] == ["press-2"], agent_events
    assert [e["machine"] for e in reloaded] == ["press-1"], agent_events
    broken = str(rules / "press-2.toml")
    assert any(err.startswith(f"{broken}:8:9: ") and "machine 'press-2'" in err
               and "runing" in err for err in rejected[0]["errors"]), rejected[0]["errors"]


def test_a_single_machine_config_from_before_machines_publishes_the_same_topics(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    """A config without [machines.*] (written as before this change) publishes exactly the
    topics an agent before machines published, and no payload names a machine."""
    from harness.agent_proc import write_config
    from linelight.rules.loader import load_rules

    agent_id = "it-single"
    prefix = f"linelight/{agent_id}"
    rules = load_rules([("machine.toml", EXAMPLE_RULES.read_text())])
    lamps = ("red", "amber", "green", "blue", "white", "buzzer")
    # the topics of an agent before machines: {prefix}/events/{kind}/{name}, four live keys,
    # the status (docs/wire-format.md, as generated from that code)
    before = ({f"{prefix}/status"} | {f"{prefix}/live/{k}"
                                      for k in ("state", "lamps", "signals", "counters")}
              | {f"{prefix}/events/agent/{n}" for n in ("start", "stop", "clock_sync")}
              | {f"{prefix}/events/state/{s}" for s in ("unknown", *(r.name for r in rules.states))}
              | {f"{prefix}/events/alarm/{s.name}" for s in rules.signals}
              | {f"{prefix}/events/signal/{i}" for i in rules.inputs}
              | {f"{prefix}/events/count/{c.name}" for c in rules.counters}
              | {f"{prefix}/events/lamp/{lamp}" for lamp in lamps})
    sub = make_subscriber(mosquitto, [f"{prefix}/#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port, agent_id=agent_id)
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["state"]["name"] == "fault"
                          and s["counters"]["parts"] > 0, what="a fault after some parts")
        assert agent.stop() == 0
    got = sub.wait_for(lambda msgs: any(m.topic.endswith("/events/agent/stop") for m in msgs))
    topics = {m.topic for m in got}
    assert topics <= before, f"topics an agent before machines never published: " \
                             f"{sorted(topics - before)}"
    assert {f"{prefix}/live/state", f"{prefix}/events/state/fault",
            f"{prefix}/events/count/parts"} <= topics
    named = [m.topic for m in got if isinstance(m.decoded, dict)
             and ("machine" in m.decoded or "machines" in m.decoded)]
    assert not named, f"payloads naming a machine: {named[:5]}"


def test_the_demo_runs_a_line_of_three_machines_side_by_side(tmp_path: Path) -> None:
    import subprocess
    import sys

    from harness.agent_proc import ROOT
    from linelight.agent.demo.view import Frame, MachineFrame, render_screen

    proc = subprocess.run(
        [sys.executable, "-m", "linelight.agent", "demo", "--line", "--seconds", "8",
         "--outage-every", "3", "--outage-length", "2", "--data-dir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    ticks = [line for line in proc.stdout.splitlines() if line.startswith("t=")]
    assert len(ticks) >= 5 and all("machines=[press-1:" in t and " press-2:" in t
                                   and " capper:" in t for t in ticks), ticks
    assert any("press-1:producing" in t for t in ticks), ticks
    assert all("in_order=yes" in t for t in ticks) and any("broker=DOWN" in t for t in ticks)
    assert "(in order," in proc.stdout.splitlines()[-1]
    machine = MachineFrame("press-2", "fault", "fault", 180000, 2.0, {"red": "blink_fast"},
                           {"red": True}, {"parts": 3})
    frame = Frame(0.0, "demo-line-1", "-", False, "unknown", 30000, 0.0, "", {}, {}, (), {}, {},
                  0, 0.0, 0, 0, "none", "", "", "", machines=[machine])
    screen = render_screen(frame)
    assert "a line of 1 machines on agent 'demo-line-1'" in screen and "FAULT" in screen
