"""OPC UA sources and Boolean lamps against asyncua's own Server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from asyncua import ua

from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.hw.opcua import quality_of
from linelight.rules.values import Pattern, Quality
from tests.hw.helpers import (
    config_problems,
    outputs_follow,
    read_config,
    read_outputs_config,
    running,
    wait_sample,
    wait_until,
)
from tests.hw.opcua_server import OpcUaTestServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def opcua_server() -> AsyncIterator[OpcUaTestServer]:
    server = OpcUaTestServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _toml(endpoint: str, extra: str = "") -> str:
    return f"""
[sources.cell]
type = "opcua"
endpoint = "{endpoint}"
publishing_interval = "50ms"
sampling_interval = "20ms"
timeout = "2s"
reconnect_max = "1s"

[sources.cell.inputs]
running = {{ node = "ns=2;i=1042" }}
speed = {{ node = "ns=2;s=Line.Speed" }}
fault_code = {{ node = "ns=2;s=Line.FaultCode" }}
{extra}
"""


@pytest.mark.parametrize(("code", "quality", "reason"), [
    (ua.StatusCodes.Good, Quality.GOOD, ""),
    (ua.StatusCodes.UncertainLastUsableValue, Quality.BAD,
     "the server reports the value as uncertain: UncertainLastUsableValue"),
    (ua.StatusCodes.BadSensorFailure, Quality.BAD,
     "the server reports the value as bad: BadSensorFailure"),
])
def test_status_codes_map_to_quality_never_good_unless_good(code, quality, reason):
    assert quality_of(ua.StatusCode(code)) == (quality, reason)


async def test_subscription_updates_reach_the_inputs_and_bad_status_makes_bad(
        opcua_server: OpcUaTestServer):
    await opcua_server.set(1042, True)
    await opcua_server.set("Line.Speed", 12.5)
    (spec,), _ = read_config(_toml(opcua_server.endpoint))
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD and s.value is True)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 12.5)
        await opcua_server.set("Line.Speed", 30.0)
        await wait_sample(table, "speed", lambda s: s.value == 30.0)
        await opcua_server.set(1042, True, ua.StatusCodes.BadSensorFailure)
        bad = await wait_sample(table, "running", lambda s: s.quality is Quality.BAD)
        assert bad.reason == (f"OPC UA server 'cell' ({opcua_server.endpoint}) node ns=2;i=1042: "
                              "the server reports the value as bad: BadSensorFailure")
        await opcua_server.set(1042, False, ua.StatusCodes.UncertainLastUsableValue)
        uncertain = await wait_sample(table, "running", lambda s: "uncertain" in s.reason)
        assert uncertain.quality is Quality.BAD
        await opcua_server.set(1042, True)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD)
        tg.cancel_scope.cancel()
    await hw.close()
    assert table.get("fault_code").quality is Quality.GOOD


async def test_unknown_node_is_bad_naming_the_node(opcua_server: OpcUaTestServer):
    toml = _toml(opcua_server.endpoint, 'ghost = { node = "ns=2;s=No.Such.Node" }')
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        ghost = await wait_sample(table, "ghost", lambda s: s.quality is Quality.BAD)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD)
        tg.cancel_scope.cancel()
    await hw.close()
    assert ghost.reason == (f"OPC UA server 'cell' ({opcua_server.endpoint}) refused to monitor "
                            "ns=2;s=No.Such.Node: BadNodeIdUnknown")


async def test_server_stopped_makes_inputs_stale_and_restart_resubscribes(
        opcua_server: OpcUaTestServer):
    await opcua_server.set("Line.Speed", 7.0)
    (spec,), _ = read_config(_toml(opcua_server.endpoint))
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 7.0)
        await opcua_server.stop()
        stale = await wait_sample(table, "speed", lambda s: s.quality is Quality.STALE)
        assert stale.value == 7.0  # the last value stays visible, marked stale
        assert stale.reason.startswith(f"session to 'cell' ({opcua_server.endpoint}) lost")
        await opcua_server.start()
        await opcua_server.set("Line.Speed", 8.0)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 8.0)
        tg.cancel_scope.cancel()
    await hw.close()
    link = hw.opcua_connections["cell"].stats
    assert link.connects >= 2 and link.subscriptions >= 2  # reconnected and re-subscribed


async def test_a_silent_subscription_makes_inputs_stale_and_is_created_again(
        opcua_server: OpcUaTestServer):
    """The session answers, the subscription does not (the server's publishing is stuck): no
    publish response or keep-alive for 3 keep-alive periods turns every input STALE, however
    often asyncua re-creates the subscription meanwhile, and the source starts over."""
    await opcua_server.set("Line.Speed", 6.0)
    async with running(_toml(opcua_server.endpoint)) as (hw, table):
        link = hw.opcua_connections["cell"].stats
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 6.0)
        await opcua_server.mute_subscriptions()
        stale = await wait_sample(table, "speed", lambda s: s.quality is Quality.STALE)
        assert stale.value == 6.0
        assert stale.reason.startswith(f"no publish response or keep-alive from OPC UA server "
                                       f"'cell' ({opcua_server.endpoint}) for ")
        assert stale.reason.endswith(" s (subscription silent); reconnecting")
        await opcua_server.set("Line.Speed", 9.0)
        await opcua_server.mute_subscriptions(False)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 9.0)
    assert link.connects >= 2 and link.subscriptions >= 2


async def test_a_server_that_cannot_subscribe_is_read_every_publishing_interval():
    server = OpcUaTestServer(subscriptions=False)
    await server.start()
    try:
        await server.set("Line.Speed", 3.5)
        toml = _toml(server.endpoint, 'ghost = { node = "ns=2;s=No.Such.Node" }')
        async with running(toml) as (hw, table):
            await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 3.5)
            await server.set("Line.Speed", 4.5)
            await wait_sample(table, "speed", lambda s: s.value == 4.5)
            await server.set(1042, True, ua.StatusCodes.BadSensorFailure)
            bad = await wait_sample(table, "running", lambda s: s.quality is Quality.BAD)
            ghost = table.get("ghost")
            status = hw.source("cell").status()
    finally:
        await server.stop()
    assert bad.reason == (f"OPC UA server 'cell' ({server.endpoint}) node ns=2;i=1042: "
                          "the server reports the value as bad: BadSensorFailure")
    assert ghost.quality is Quality.BAD and ghost.reason.endswith("BadNodeIdUnknown")
    assert status["mode"] == "polled" and status["polls"] >= 3  # type: ignore[operator]
    assert status["why_polled"] == ("the server refused a subscription: "
                                    "BadTooManySubscriptions (0x80770000)")
    assert status["link"]["subscriptions"] == 0  # type: ignore[index]


async def test_refused_connects_count_as_failures_with_the_next_attempt_in_status():
    from tests.hw.modbus_server import free_port

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"  # nothing listens
    toml = _toml(endpoint).replace('reconnect_max = "1s"',
                                   'reconnect_min = "5s"\nreconnect_max = "10s"')
    async with running(toml) as (hw, _):
        source = hw.source("cell")
        await wait_until(lambda: source.status()["link"]["failures"] >= 1  # type: ignore[index]
                         and source.status()["link"]["next_attempt_in"] > 0,  # type: ignore[index]
                         what="a failed connect")
        link = source.status()["link"]
    assert link["connects"] == 0 and link["failures"] == 1  # type: ignore[index]
    assert 0 < link["next_attempt_in"] <= 5.5  # type: ignore[index]  # reconnect_min + jitter
    assert link["last_error"].startswith(f"cannot connect to OPC UA server 'cell' ({endpoint})")  # type: ignore[index]


TOWER = """
[tower]
source = "cell"
on_exit = { red = "on" }

[tower.lamps]
green = { opcua = "ns=2;s=Lamp.Green" }
red = { opcua = "ns=2;s=Lamp.Red" }
"""


async def test_lamps_write_boolean_nodes_and_failures_are_retried(
        opcua_server: OpcUaTestServer):
    sources, tower = read_config(_toml(opcua_server.endpoint, TOWER))
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD)
        light.show({"green": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is True,
                         what="green written")
        assert await opcua_server.get("Lamp.Green") is True
        await opcua_server.stop()
        light.show({"red": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["red"]["failures"] >= 2,
                         what="failed writes counted and retried")
        error = light.status()["lamps"]["red"]["last_error"]
        assert error.startswith("lamp 'red' on cell ns=2;s=Lamp.Red: cannot switch ")
        assert f"OPC UA server 'cell' ({opcua_server.endpoint}) is not connected" in error
        await opcua_server.start()
        await wait_until(lambda: not light.status()["lamps"]["red"]["failing"],
                         what="writes working again")
        assert await opcua_server.get("Lamp.Red") is True
        tg.cancel_scope.cancel()
    assert await hw.close()  # on_exit: red on, green off
    assert await opcua_server.get("Lamp.Red") is True
    assert await opcua_server.get("Lamp.Green") is False


@pytest.mark.parametrize(("publishing", "period"), [(0.05, 1.0), (0.1, 1.0), (0.3, 1.2),
                                                    (1.0, 1.0), (5.0, 5.0)])
def test_a_quiet_subscription_is_asked_for_a_keep_alive_about_every_second(publishing, period):
    """The silence limit is 3 of these periods: with a 5 s publishing interval a keep-alive
    comes every 5 s, so 3 s of quiet is no silence."""
    from linelight.hw.opcua import keepalive_period

    assert keepalive_period(publishing) == pytest.approx(period)


def test_opcua_config_mistakes_are_located():
    toml = """
[sources.cell]
type = "opcua"
endpoint = "http://192.0.2.40:4840"

[sources.cell.inputs]
running = { node = "ns=2;x=1" }
ok = { node = 'ns=3;s="DB_Line"."Running"' }
"""
    assert config_problems(toml) == [
        "agent.toml:4:12: 'endpoint' must be an opc.tcp:// URL such as opc.tcp://192.0.2.40:4840, "
        "not 'http://192.0.2.40:4840'",
        "agent.toml:7:20: input 'running': 'ns=2;x=1' is not an OPC UA node id; write e.g. "
        'ns=2;i=1042 or ns=3;s="DB_Line"."Running"',
    ]


RULES = """
[inputs]
running = { type = "bool" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 10
when = "not running"
show = { red = "on" }
"""


async def test_subscription_drives_rules_and_a_bad_status_takes_the_green_lamp_off(
        opcua_server: OpcUaTestServer):
    """Server variable -> subscription -> rules -> tower -> lamp node on the same server."""
    from linelight.rules.evaluator import Evaluator
    from linelight.rules.loader import load_rules

    await opcua_server.set(1042, True)
    sources, tower = read_config(_toml(opcua_server.endpoint, TOWER))
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    evaluator = Evaluator(load_rules([("rules.toml", RULES)]))
    table = InputTable()

    async def scan() -> None:  # what agent.scan does each tick, on every input change
        version = -1
        while True:
            version = await table.wait_changed(version)
            light.show(evaluator.step(table.snapshot(), anyio.current_time()).lamps)

    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        tg.start_soon(scan)
        await wait_until(lambda: evaluator.state.name == "producing", what="producing")
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is True)
        assert await opcua_server.get("Lamp.Green") is True
        await opcua_server.set(1042, True, ua.StatusCodes.BadCommunicationError)
        await wait_until(lambda: evaluator.state.name == "unknown", what="state unknown")
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is False,
                         what="green off on a bad input")
        assert await opcua_server.get("Lamp.Green") is False
        tg.cancel_scope.cancel()
    await hw.close()


async def test_an_unchanging_value_stays_current_while_the_subscription_is_alive(
        opcua_server: OpcUaTestServer):
    """The server sends a value once; keep-alives prove it still holds, so a rule's
    stale_after on the input measures the link, not how often the value changes."""
    await opcua_server.set("Line.Speed", 5.0)
    (spec,), _ = read_config(_toml(opcua_server.endpoint))
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        first = await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD)
        later = await wait_sample(table, "speed", lambda s: s.at >= first.at + 1.0)
        tg.cancel_scope.cancel()
    await hw.close()
    assert later.quality is Quality.GOOD and later.value == 5.0
    assert later.wall_ns == first.wall_ns  # still the server's timestamp of the change
    assert hw.opcua_connections["cell"].stats.notifications == 3  # running, speed, fault_code


async def test_a_deadband_keeps_small_moves_away_and_passes_large_ones(
        opcua_server: OpcUaTestServer):
    await opcua_server.set("Line.Speed", 10.0)
    toml = _toml(opcua_server.endpoint).replace(
        'speed = { node = "ns=2;s=Line.Speed" }',
        'speed = { node = "ns=2;s=Line.Speed", deadband = 0.5 }')
    (spec,), _ = read_config(toml)
    assert spec.deadbands == (("speed", 0.5),)
    hw = build_hardware([spec], None)
    table = InputTable()
    seen: list[object] = []
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "speed", lambda s: s.value == 10.0)
        source = hw.source("cell")
        before = source.counters.samples  # type: ignore[attr-defined]
        await opcua_server.set("Line.Speed", 10.2)  # within the deadband: not reported
        await opcua_server.set("Line.FaultCode", 1)  # a marker that the server has published
        await wait_sample(table, "fault_code", lambda s: s.value == 1)
        seen.append(table.get("speed").value)
        await opcua_server.set("Line.Speed", 11.0)  # beyond it
        await wait_sample(table, "speed", lambda s: s.value == 11.0)
        tg.cancel_scope.cancel()
    await hw.close()
    assert seen == [10.0]
    assert source.counters.samples == before + 2  # fault_code and the 11.0, never 10.2


async def test_inputs_by_browse_path_resolve_and_a_missing_path_is_bad(
        opcua_server: OpcUaTestServer):
    await opcua_server.set("Line.Speed", 4.5)
    toml = _toml(opcua_server.endpoint, 'by_path = { path = "Line/Speed" }\n'
                                        'nowhere = { path = "Line/NoSuchThing" }')
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "by_path", lambda s: s.quality is Quality.GOOD and s.value == 4.5)
        missing = await wait_sample(table, "nowhere", lambda s: s.quality is Quality.BAD)
        tg.cancel_scope.cancel()
    await hw.close()
    assert missing.reason.startswith(f"OPC UA server 'cell' ({opcua_server.endpoint}) has no "
                                     "node at Objects/Line/NoSuchThing: ")


def test_an_input_needs_a_node_or_a_path():
    toml = _toml("opc.tcp://192.0.2.40:4840", 'both = { node = "ns=2;i=1", path = "A/B" }\n'
                                              'neither = { }')
    problems = config_problems(toml)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "input 'both' needs exactly one of node (a node id) or path (a browse path below "
        'Objects, e.g. "Line/Speed")',
        "input 'neither' needs exactly one of node (a node id) or path (a browse path below "
        'Objects, e.g. "Line/Speed")']


OUTPUTS = """
[outputs]
source = "cell"
on_exit = { horn = "on" }

[outputs.wiring]
may_start = { opcua = "ns=2;s=Lamp.Green" }
horn = { opcua = "ns=2;s=Lamp.Red" }
"""


async def test_output_rules_write_boolean_nodes_like_lamps_and_on_exit_at_close(
        opcua_server: OpcUaTestServer):
    sources, outputs = read_outputs_config(_toml(opcua_server.endpoint, OUTPUTS))
    hw = build_hardware(sources, None, outputs=outputs)
    await outputs_follow(hw, [({"may_start": True}, lambda: True)])  # the nodes: read below
    assert await opcua_server.get("Lamp.Green") is True
    assert await opcua_server.get("Lamp.Red") is False
    assert await hw.close()  # on_exit: the horn node on, the permit off
    assert await opcua_server.get("Lamp.Red") is True
    assert await opcua_server.get("Lamp.Green") is False
