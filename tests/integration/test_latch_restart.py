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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgpack
import pytest

from linelight.agent.journal.queue import TEST_COMMIT_DELAY_ENV
from linelight.agent.scan import LAMP_HOLD_MAX_S
from tests.fixtures.diskfull import fill_disk
from tests.hw.modbus_server import ModbusTestServer
from tests.integration.agent_proc import AgentProcess, journal_records, write_config
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


@asynccontextmanager
async def modbus_agent(tmp_path: Path, env: dict[str, str] | None = None
                       ) -> AsyncIterator[tuple[ModbusTestServer, AgentProcess]]:
    """pymodbus's server with the machine running and no fault, and the agent (not started)
    whose inputs and lamps are on it."""
    server = ModbusTestServer()
    await server.start()
    try:
        sources, tower = modbus_io(server.port)
        config = write_config(tmp_path / "agent", rules=RULES, sources=sources, tower=tower)
        await server.set_discrete(0, [False, False, True])
        with AgentProcess(config, env=env) as agent:
            yield server, agent
    finally:
        await server.stop()


async def start_and_latch(server: ModbusTestServer, agent: AgentProcess, what: str) -> None:
    """Start the agent, see it green, raise the drive fault, see red and blue latched."""
    await anyio.to_thread.run_sync(agent.start)
    await wait_coils(server, agent, GREEN, f"{what}: green for 'producing'", count=4)
    await server.set_discrete(0, [True])
    await wait_coils(server, agent, LATCHED, f"{what}: red and blue for the fault", count=4)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
async def test_a_latched_fault_is_still_latched_after_a_restart_until_reset(
        tmp_path: Path, how: str) -> None:
    data = tmp_path / "agent" / "data"
    async with modbus_agent(tmp_path) as (server, agent):
        await start_and_latch(server, agent, how)
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
        await restart_latched_then_reset(server, agent, data, how)
    records = await anyio.to_thread.run_sync(journal_records, data)
    alarms = [(r.boot, r.value) for r in records if r.kind == "alarm" and r.name == "drive_alarm"]
    # on in the first boot, off once (after reset) in the second: no false off at the restart
    assert alarms == [(1, True), (2, False)], alarms
    starts = [r for r in records if r.kind == "agent" and r.name == "start"]
    assert starts[-1].attrs.get("latched") == ["state 'fault'", "signal 'drive_alarm'"]


async def restart_latched_then_reset(server: ModbusTestServer, agent: AgentProcess,
                                     data: Path, what: str) -> None:
    """Start the stopped agent: the fault is still latched; press reset: it is released (and
    the release stored); stop it cleanly."""
    await anyio.to_thread.run_sync(agent.start)
    await wait_coils(server, agent, LATCHED, f"{what}: red and blue after the restart", count=4)
    status = await anyio.to_thread.run_sync(agent.status)
    assert status["state"]["name"] == "fault", status
    assert "restored 2 latches from the last run" in agent.log()
    await server.set_discrete(1, [True])  # reset pressed
    await wait_coils(server, agent, GREEN, f"{what}: green after reset", count=4)
    await server.set_discrete(1, [False])
    await wait_stored(data, [])
    assert await anyio.to_thread.run_sync(agent.stop) == 0, agent.log()


# Every journal commit sleeps this long first (a slow disk): wide enough that the test sees
# a lamp the old order (lamp first, store in the next commit) lit before the store, well
# inside the lamp hold's bound even with a commit already in flight.
SLOW_COMMIT_S = LAMP_HOLD_MAX_S / 5


@pytest.mark.anyio
async def test_a_kill_9_the_moment_the_lamp_shows_a_new_latch_keeps_the_latch(
        tmp_path: Path) -> None:
    """The lamp shows a latch only once it is committed: the moment the coils show the fault,
    kill -9; after the restart the fault is still latched. With the old order the store
    followed the lamp by one (slowed) commit, and the restart had forgotten it, every time."""
    data = tmp_path / "agent" / "data"
    async with modbus_agent(tmp_path, {TEST_COMMIT_DELAY_ENV: str(SLOW_COMMIT_S)}) as (
            server, agent):
        for round_ in range(2):  # the second round latches after a restart
            await start_and_latch(server, agent, f"round {round_}")
            await anyio.to_thread.run_sync(agent.kill9)  # at once: no wait for the store
            assert await anyio.to_thread.run_sync(stored_latches, data) == [
                "signal:drive_alarm", "state:fault"], f"round {round_}: latch not stored"
            await server.set_discrete(0, [False])  # the fault is gone while it is down
            await server.set_coils(0, [False] * 4)
            await restart_latched_then_reset(server, agent, data, f"round {round_}")
    assert agent.log().count("restored 2 latches from the last run") == 2, agent.log()


@pytest.mark.anyio
async def test_a_stuck_journal_writer_delays_a_new_latch_lamp_by_the_bound_and_counts_it(
        tmp_path: Path) -> None:
    """A writer slower than the lamp hold's bound: the lamp shows the fault anyway (after the
    bound), /status counts the timeout and the log says a restart now would lose it."""
    async with modbus_agent(tmp_path, {TEST_COMMIT_DELAY_ENV: str(LAMP_HOLD_MAX_S * 4)}) as (
            server, agent):
        await start_and_latch(server, agent, "a stuck writer")
        scan = (await anyio.to_thread.run_sync(agent.status))["scan"]
        assert (scan["lamp_holds"], scan["lamp_hold_timeouts"],
                scan["lamp_hold_refused"]) == (1, 1, 0), scan
        assert scan["lamp_hold_limit_s"] == LAMP_HOLD_MAX_S
        assert "without it being stored: the journal did not commit it" in agent.log()
        await anyio.to_thread.run_sync(agent.kill9)


@pytest.mark.root
@pytest.mark.anyio
async def test_a_journal_that_cannot_store_the_latch_does_not_keep_the_lamp_dark(
        tmp_path: Path, tiny_fs: Path) -> None:
    """Safety first: on a full disk (the journal cannot even open) a new latch cannot be
    stored; its lamp shows at once instead of waiting out the bound, and /status counts it.
    Once there is room again the journal opens and the latch is stored without any change."""
    data = tmp_path / "agent" / "data"
    async with modbus_agent(tmp_path) as (server, agent):
        data.symlink_to(tiny_fs)
        ballast = fill_disk(tiny_fs)
        await start_and_latch(server, agent, "a full disk")
        scan = (await anyio.to_thread.run_sync(agent.status))["scan"]
        assert (scan["lamp_holds"], scan["lamp_hold_refused"],
                scan["lamp_hold_timeouts"]) == (1, 1, 0), scan
        assert "the journal refused the latched set (2 latches)" in agent.log()
        ballast.unlink()
        await wait_stored(data, ["signal:drive_alarm", "state:fault"])
        assert "the latched set is stored again" in agent.log()
        await anyio.to_thread.run_sync(agent.kill9)
