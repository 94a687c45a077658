"""`[[output]]` rules drive real lines: a coil on pymodbus's own server and a gpiozero
MockFactory pin follow the rule; an input going stale turns them off at once; a stop applies
`on_exit`; a line that cannot be written is counted and fails /status, like a lamp.

The inputs come from one Modbus server (the PLC), the outputs go to another (a remote I/O
module), both in-process on free 127.0.0.1 ports, so the PLC can go silent while the I/O
module still answers. The SIGTERM case runs the agent as a subprocess.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from gpiozero.pins.mock import MockFactory

from linelight.agent.app import Agent
from linelight.agent.config import load_config
from tests.hw.modbus_server import ModbusTestServer, free_port
from tests.integration.agent_proc import AgentProcess, write_config

STOPPED = """\
[[state]]
name = "stopped"
code = 40000
priority = 0
when = true
show = { amber = "on" }
"""

RULES = """\
[inputs]
guard_closed = { type = "bool", stale_after = "400ms" }
drive_fault  = { type = "bool", stale_after = "400ms" }

[[state]]
name = "fault"
code = 180000
priority = 100
when = "drive_fault"
show = { red = "on" }

{STOPPED}
[[output]]
name = "may_start"
when = "guard_closed and not drive_fault and state == 'stopped'"

[[output]]
name = "horn"
when = "drive_fault"

[[output]]
name = "agent_down"    # tells the PLC the line monitor is not running
when = false
""".replace("{STOPPED}", STOPPED)

MAY_START, AGENT_DOWN = 4, 5  # coils of the I/O module
HORN_PIN = 17
GUARD, FAULT = 0, 1  # discrete inputs of the PLC


def config_text(plc_port: int, io_port: int, *, horn: str = f"{{ pin = {HORN_PIN} }}") -> tuple[
        str, str]:
    sources = f"""\
[sources.plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = {plc_port}
poll = "50ms"
timeout = "200ms"
[sources.plc.inputs]
guard_closed = {{ discrete_input = {GUARD} }}
drive_fault  = {{ discrete_input = {FAULT} }}

[sources.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {io_port}
timeout = "200ms"
"""
    wiring = f"""\
[tower.lamps]
red = {{ virtual = true }}
amber = {{ virtual = true }}

[outputs]
source = "io"
retry = "100ms"
on_exit = {{ agent_down = "on" }}

[outputs.wiring]
may_start = {{ coil = {MAY_START} }}
horn = {horn}
agent_down = {{ coil = {AGENT_DOWN} }}
"""
    return sources, wiring


async def until(check: Callable[[], Awaitable[bool]], what: str, log: Callable[[], str] = str,
                within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {within} s waiting for {what}\n{log()[-3000:]}")


@pytest.mark.anyio
async def test_a_coil_and_a_gpio_pin_follow_the_output_rules_and_go_off_when_inputs_go_stale(
        tmp_path: Path) -> None:
    plc, io = ModbusTestServer(), ModbusTestServer()
    await plc.start()
    await io.start()
    factory = MockFactory()
    horn = factory.pin(HORN_PIN)
    try:
        await plc.set_discrete(GUARD, [True, False])
        sources, wiring = config_text(plc.port, io.port)
        path = write_config(tmp_path, rules=RULES, sources=sources, tower=wiring)
        agent = Agent(load_config(path), pin_factory=factory, handle_signals=False,
                      watch_files=False)

        async def lines(may_start: bool, horn_on: bool) -> bool:
            return (await io.coils(MAY_START, 1) == [may_start]
                    and bool(horn.state) == horn_on)

        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            await until(lambda: lines(True, False), "the permit on, the horn off")
            await plc.set_discrete(FAULT, [True])
            await until(lambda: lines(False, True), "the fault: permit off, horn on")
            await plc.stop()  # the PLC goes silent: drive_fault is stale, the horn goes off
            await until(lambda: lines(False, False), "a stale drive_fault: the horn off")
            assert agent.scan is not None and agent.scan.view.outputs["horn"] is False
            await plc.start()  # the link comes back, with the fault gone
            await plc.set_discrete(FAULT, [False])
            await until(lambda: lines(True, False), "the permit back with good inputs")
            await plc.stop()  # now the permit is on: stale inputs take it away at once
            await until(lambda: lines(False, False), "stale inputs: the permit off")
            status = agent.status()
            assert await io.coils(AGENT_DOWN, 1) == [False]
            await agent.stop()
        assert await io.coils(MAY_START, 2) == [False, True], "on_exit: agent_down on"
        assert horn.state is False or horn.state == 0
    finally:
        await io.stop()
        factory.close()
    assert status["outputs"] == {"may_start": False, "horn": False, "agent_down": False}
    lines_status = status["output_lines"]["outputs"]
    assert lines_status["may_start"]["output"] == f"io unit 1 coil {MAY_START} (manual {MAY_START + 1})"
    assert lines_status["may_start"]["writes"] >= 4 and lines_status["may_start"]["failures"] == 0
    assert lines_status["horn"]["output"] == f"gpiozero pin {HORN_PIN}"
    assert lines_status["horn"]["level"] is False and lines_status["horn"]["on"] is False


@pytest.mark.anyio
async def test_an_output_that_cannot_be_written_is_counted_and_fails_the_status(
        tmp_path: Path) -> None:
    plc = ModbusTestServer()
    await plc.start()
    factory = MockFactory()
    try:
        await plc.set_discrete(GUARD, [True, False])
        sources, wiring = config_text(plc.port, free_port())  # nothing listens: no I/O module
        path = write_config(tmp_path, rules=RULES, sources=sources, tower=wiring)
        agent = Agent(load_config(path), pin_factory=factory, handle_signals=False,
                      watch_files=False)
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)

            async def failing() -> bool:
                st: dict[str, Any] = agent.status()["output_lines"]["outputs"]["may_start"]
                return bool(st["failing"] and st["failures"] >= 2 and agent.status()[
                    "outputs"]["may_start"])

            await until(failing, "may_start failing while the rule wants it on")
            status = agent.status()
            metrics = agent.metrics().decode()
            await agent.stop()
    finally:
        await plc.stop()
        factory.close()
    assert status["health"]["status"] == "failed"
    [reason] = [r for r in status["health"]["reasons"] if r.startswith("outputs:")]
    assert reason.startswith("outputs: cannot write may_start, agent_down (output '")
    assert status["output_lines"]["write_failures"] >= 2
    assert status["output_lines"]["outputs"]["horn"]["failing"] is False  # the GPIO pin works
    assert 'linelight_output_on{machine="it-press",output="may_start"} 1.0' in metrics
    assert 'linelight_output_on{machine="it-press",output="horn"} 0.0' in metrics
    [line] = [m for m in metrics.splitlines() if m.startswith(
        'linelight_output_write_failures_total{machine="it-press",output="may_start"}')]
    assert float(line.split()[-1]) >= 2


@pytest.mark.anyio
async def test_sigterm_applies_the_outputs_on_exit_to_real_coils(tmp_path: Path) -> None:
    plc, io = ModbusTestServer(), ModbusTestServer()
    await plc.start()
    await io.start()
    try:
        await plc.set_discrete(GUARD, [True, False])
        # the horn on a coil too: the subprocess has no MockFactory
        sources, wiring = config_text(plc.port, io.port, horn="{ coil = 6 }")
        config = write_config(tmp_path / "agent", rules=RULES, sources=sources, tower=wiring)
        with AgentProcess(config) as agent:
            await anyio.to_thread.run_sync(agent.start)

            async def coils(want: list[bool]) -> bool:
                return await io.coils(MAY_START, 3) == want

            await until(lambda: coils([True, False, False]), "may_start on", agent.log)
            agent.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(agent.stop)
            assert code == 0, agent.log()
        # may_start, agent_down, horn: the permit off, "agent down" on, the horn off
        assert await io.coils(MAY_START, 3) == [False, True, False], agent.log()
    finally:
        await io.stop()
        await plc.stop()


MACHINE_RULES = """\
[inputs]
running = { type = "bool", stale_after = "1s" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
{STOPPED}
[[output]]
name = "go"
when = "running"
""".replace("{STOPPED}", STOPPED)


@pytest.mark.anyio
async def test_each_machine_drives_its_own_outputs(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "m.toml").write_text(MACHINE_RULES)
    machines = "".join(f"""
[machines.{name}]
rules = ["rules/m.toml"]
[machines.{name}.sources.{name}_sim]
type = "sim"
period = "20ms"
[machines.{name}.sources.{name}_sim.inputs]
running = {{ wave = "constant", value = {value} }}
[machines.{name}.outputs.wiring]
go = {{ virtual = true }}
""" for name, value in (("a", "true"), ("b", "false")))
    path = tmp_path / "agent.toml"
    path.write_text('agent_id = "t"\ndata_dir = "data"\n[diagnostics]\nenabled = false\n'
                    + machines)
    agent = Agent(load_config(path), handle_signals=False, watch_files=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        assert agent.hardware is not None
        banks = agent.hardware.machine_outputs

        async def driven() -> bool:
            return [getattr(banks[m].outputs["go"], "level", None) for m in "ab"] == [True, False]

        await until(driven, "machine a's output on, machine b's off")
        status = agent.status()
        await agent.stop()
    assert [getattr(banks[m].outputs["go"], "level", None) for m in "ab"] == [False, False]
    for name, on in (("a", True), ("b", False)):
        machine = status["machines"][name]
        assert machine["outputs"] == {"go": on}
        assert machine["output_lines"]["outputs"]["go"]["on"] is on
        assert machine["output_lines"]["outputs"]["go"]["output"] == "virtual"


@pytest.mark.anyio
async def test_a_lamp_test_never_touches_the_outputs(tmp_path: Path) -> None:
    """A permit must not flash because someone tests the lamps."""
    rules = MACHINE_RULES.replace('priority = 50\nwhen = "running"\n',
                                  'priority = 50\nwhen = "running"\nshow = { green = "on" }\n')
    path = write_config(tmp_path, rules=rules,
                        sources='[sources.s]\ntype = "sim"\n[sources.s.inputs]\n'
                                'running = { wave = "constant", value = false }\n',
                        tower="[tower.lamps]\ngreen = { virtual = true }\namber = { virtual = true }\n"
                              "[outputs.wiring]\ngo = { virtual = true }\n")
    agent = Agent(load_config(path), handle_signals=False, watch_files=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        assert agent.hardware is not None and agent.hardware.outputs is not None
        line = agent.hardware.outputs.outputs["go"]

        async def written() -> bool:
            return getattr(line, "writes", 0) > 0

        await until(written, "the output written")
        before = list(getattr(line, "changes", []))
        assert await agent.lamp_test() == "lamp test started on 2 lamps"

        async def lamp_test(running: bool) -> bool:
            return bool(agent.status()["tower"]["lamp_test"] is running)

        await until(lambda: lamp_test(True), "the lamp test running")
        await until(lambda: lamp_test(False), "the lamp test over")
        after = list(getattr(line, "changes", []))
        await agent.stop()
    assert before == after and [level for _, level in after] == [False]
