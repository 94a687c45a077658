"""SIGTERM applies the tower's `on_exit` to real Modbus coils before the agent exits.

The agent runs as a real subprocess; its inputs and its lamps are on pymodbus's own server,
which this test runs in-process on a free 127.0.0.1 port and reads back directly.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from harness.agent_proc import AgentProcess, journal_records, write_config
from tests.hw.modbus_server import ModbusTestServer

RULES = """\
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

# red, amber, green on coils 0, 1, 2; on_exit lights amber alone, a pattern no rule shows.
LAMP_COILS = 3


def modbus_io(port: int) -> tuple[str, str]:
    sources = f"""\
[sources.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll = "50ms"

[sources.io.inputs]
running = {{ discrete_input = 0 }}
"""
    tower = """\
[tower]
source = "io"
on_exit = { amber = "on" }

[tower.lamps]
red = { coil = 0 }
amber = { coil = 1 }
green = { coil = 2 }
"""
    return sources, tower


DEADLINE_S = 60.0


async def wait_coils(server: ModbusTestServer, agent: AgentProcess, want: list[bool],
                     what: str, count: int = LAMP_COILS) -> None:
    deadline = time.monotonic() + DEADLINE_S
    got: list[bool] = []
    while time.monotonic() < deadline:
        got = await server.coils(0, count)
        if got == want:
            return
        if agent.proc is not None and agent.proc.poll() is not None:
            raise AssertionError(f"agent exited with {agent.proc.returncode} while waiting for "
                                 f"{what}:\n{agent.log()}")
        await anyio.sleep(0.05)
    raise AssertionError(f"{what}: coils from 0 (red, amber, green, ...) are {got}, not {want} after "
                         f"{DEADLINE_S}s\nagent log:\n{agent.log()[-4000:]}")


@pytest.mark.anyio
async def test_sigterm_sets_modbus_lamps_to_on_exit_and_records_a_stop_event(
        tmp_path: Path) -> None:
    server = ModbusTestServer()
    await server.start()
    try:
        sources, tower = modbus_io(server.port)
        config = write_config(tmp_path / "agent", rules=RULES, sources=sources, tower=tower)
        with AgentProcess(config) as agent:
            # Blocking calls go to a thread: the server answers on this test's event loop.
            await anyio.to_thread.run_sync(agent.start)
            await wait_coils(server, agent, [True, False, False], "red for 'stopped'")
            await server.set_discrete(0, [True])
            await wait_coils(server, agent, [False, False, True], "green for 'producing'")
            agent.signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(agent.stop)
            assert code == 0, agent.log()
        assert await server.coils(0, LAMP_COILS) == [False, True, False], agent.log()
    finally:
        await server.stop()
    # journal_records runs its own event loop: not on this one.
    records = await anyio.to_thread.run_sync(journal_records, tmp_path / "agent" / "data")
    assert records[-1].kind == "agent" and records[-1].name == "stop", records[-3:]
    assert "SIGTERM received: stopping" in agent.log()
