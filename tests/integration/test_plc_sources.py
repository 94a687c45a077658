"""The whole agent as a subprocess reading an S7 CPU (python-snap7's server) and an OPC UA
server (asyncua's) together, lamps on both, and a broker outage in the middle: the lamps follow
the PLC signals throughout and every event arrives, in order, after the broker returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from harness.agent_proc import AgentProcess, delivered_in_order, write_config
from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber
from tests.hw.opcua_server import OpcUaTestServer
from tests.hw.s7_server import S7TestServer

pytestmark = pytest.mark.slow

AGENT = "it-plc"
EVENTS = f"linelight/{AGENT}/events/"

RULES = """
[inputs]
running = { type = "bool", description = "S7 DB10.DBX4.0" }
speed = { type = "float", description = "OPC UA ns=2;s=Line.Speed" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running and speed > 0"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 10
when = "not running or speed <= 0"
show = { red = "on" }
"""


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:  # the OPC UA server's event loop, in a thread
        yield p


@pytest.fixture
def plc() -> Iterator[S7TestServer]:
    server = S7TestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ua_server(portal: BlockingPortal) -> Iterator[OpcUaTestServer]:
    server = OpcUaTestServer()
    portal.call(server.start)
    try:
        yield server
    finally:
        portal.call(server.stop)


def test_s7_and_opcua_drive_rules_and_lamps_through_a_broker_outage(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber],
        plc: S7TestServer, ua_server: OpcUaTestServer, portal: BlockingPortal) -> None:
    sources = f"""
[sources.plc]
type = "s7"
host = "127.0.0.1"
port = {plc.port}
poll = "50ms"
reconnect_max = "1s"

[sources.plc.inputs]
running = {{ address = "DB10.DBX4.0" }}

[sources.cell]
type = "opcua"
endpoint = "{ua_server.endpoint}"
publishing_interval = "50ms"
reconnect_max = "1s"

[sources.cell.inputs]
speed = {{ node = "ns=2;s=Line.Speed" }}
"""
    tower = """
[tower.lamps]
green = { s7 = "Q1.0", source = "plc" }
red = { opcua = "ns=2;s=Lamp.Red", source = "cell" }
amber = { virtual = true }
"""
    plc.q[1] = 0b1000_0000  # a bit of the PLC program's, next to the green lamp
    sub = make_subscriber(mosquitto, [f"linelight/{AGENT}/#"])
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port, rules=RULES,
                          sources=sources, tower=tower, agent_id=AGENT)

    def machine(running: bool, speed: float) -> None:
        plc.set_bit(plc.db10, 4, 0, running)
        portal.call(ua_server.set, "Line.Speed", speed)

    def lamps_show(state: str) -> Callable[[dict], bool]:
        return lambda s: s["state"]["name"] == state and s["lamps"]["green"] == (
            "on" if state == "producing" else "off")

    with AgentProcess(config) as agent:
        agent.start()
        machine(True, 12.0)
        agent.wait_status(lambda s: s["broker"]["connected"] and lamps_show("producing")(s),
                          what="producing with the broker connected")
        deadline = time.monotonic() + 30
        while plc.q[1] != 0b1000_0001 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plc.q[1] == 0b1000_0001  # green on the S7 bit, the PLC's bit untouched

        mosquitto.stop()
        agent.wait_status(lambda s: not s["broker"]["connected"], what="broker link down")
        for running, speed, state in [(False, 12.0, "stopped"), (True, 3.0, "producing"),
                                      (True, 0.0, "stopped"), (True, 5.0, "producing")]:
            machine(running, speed)
            agent.wait_status(lamps_show(state), what=f"{state} during the outage")
        machine(False, 5.0)
        agent.wait_status(lamps_show("stopped"), what="stopped during the outage")
        deadline = time.monotonic() + 30
        while not portal.call(ua_server.get, "Lamp.Red") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert portal.call(ua_server.get, "Lamp.Red") is True  # red on the OPC UA node
        assert plc.q[1] == 0b1000_0000
        hwm = agent.status()["queue"]["seq_hwm"]

        mosquitto.start()
        agent.wait_status(lambda s: s["broker"]["connected"] and s["queue"]["committed"] == 0
                          and s["queue"]["seq_hwm"] >= hwm, timeout=90,
                          what="backlog drained after the broker returned")
        assert agent.stop() == 0

    delivered_in_order(sub, tmp_path / "agent" / "data", EVENTS)
    states = [m.decoded["name"] for m in sub.snapshot() if m.topic.startswith(EVENTS + "state/")]
    assert states.count("producing") >= 3 and states.count("stopped") >= 3, states

