"""A latched fault survives a restart of the agent process (SIGTERM and kill -9).

The agent runs as a real subprocess; its inputs and lamps are on pymodbus's own server, which
this test runs in-process on a free 127.0.0.1 port and reads back directly. The fault latches
(`clear_when` needs the reset button), the fault itself goes away, the agent is stopped and
started again: the fault lamp must still be lit, no alarm "off" may be recorded, and only the
reset button clears it.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import anyio
import msgpack
import pytest

from harness.agent_proc import AgentProcess, journal_records, write_config
from tests.hw.modbus_server import ModbusTestServer
from tests.integration.test_shutdown_lamps import DEADLINE_S, wait_coils
from tests.rules.test_latches import LATCHING

RULES = LATCHING  # the evaluator's own latch tests use the same rules

# red, amber, green, blue on coils 0..3
GREEN = [False, False, True, False]
LATCHED = [True, False, False, True]


def modbus_io(port: int) -> tuple[str, str]:
    sources = f"""\
[sources.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll = "50ms"

[sources.io.inputs]
drive_fault = {{ discrete_input = 0 }}
reset = {{ discrete_input = 1 }}
running = {{ discrete_input = 2 }}
"""
    tower = """\
[tower]
source = "io"

[tower.lamps]
red = { coil = 0 }
amber = { coil = 1 }
green = { coil = 2 }
blue = { coil = 3 }
"""
    return sources, tower


def stored_latches(data: Path) -> list[str]:
    """What the journal holds under meta 'latches' (read-only, beside the running agent)."""
    db = data / "journal.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'latches'").fetchone()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return sorted(f"{x['kind']}:{x['name']}" for x in msgpack.unpackb(row[0])) if row else []


async def wait_stored(data: Path, want: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if await anyio.to_thread.run_sync(stored_latches, data) == want:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"journal meta 'latches' never became {want}")


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
async def test_a_latched_fault_is_still_latched_after_a_restart_until_reset(
        tmp_path: Path, how: str) -> None:
    server = ModbusTestServer()
    await server.start()
    data = tmp_path / "agent" / "data"
    try:
        sources, tower = modbus_io(server.port)
        config = write_config(tmp_path / "agent", rules=RULES, sources=sources, tower=tower)
        await server.set_discrete(0, [False, False, True])
        with AgentProcess(config) as agent:
            await anyio.to_thread.run_sync(agent.start)
            await wait_coils(server, agent, GREEN, "green for 'producing'", count=4)
            await server.set_discrete(0, [True])
            await wait_coils(server, agent, LATCHED, "red and blue for the fault", count=4)
            await server.set_discrete(0, [False])  # the fault goes away; reset not pressed
            await wait_stored(data, ["signal:drive_alarm", "state:fault"])
            await anyio.sleep(0.3)  # several scans with the fault gone: still latched
            assert await server.coils(0, 4) == LATCHED
            if how == "sigterm":
                agent.signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(agent.stop) == 0, agent.log()
            else:
                await anyio.to_thread.run_sync(agent.kill9)
            await server.set_coils(0, [False] * 4)  # a restarted tower must light them again
            await anyio.to_thread.run_sync(agent.start)
            await wait_coils(server, agent, LATCHED, "red and blue after the restart", count=4)
            status = await anyio.to_thread.run_sync(agent.status)
            assert status["state"]["name"] == "fault", status
            assert "restored 2 latches from the last run" in agent.log()
            await server.set_discrete(1, [True])  # reset pressed
            await wait_coils(server, agent, GREEN, "green after reset", count=4)
            await server.set_discrete(1, [False])
            await wait_stored(data, [])
            assert await anyio.to_thread.run_sync(agent.stop) == 0, agent.log()
    finally:
        await server.stop()
    records = await anyio.to_thread.run_sync(journal_records, data)
    alarms = [(r.boot, r.value) for r in records if r.kind == "alarm" and r.name == "drive_alarm"]
    # on in the first boot, off once (after reset) in the second: no false off at the restart
    assert alarms == [(1, True), (2, False)], alarms
    starts = [r for r in records if r.kind == "agent" and r.name == "start"]
    assert starts[-1].attrs.get("latched") == ["state 'fault'", "signal 'drive_alarm'"]
