"""`linelight browse` against asyncua's own Server: the tree, and a snippet `linelight check`
accepts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

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


async def _linelight(*args: str) -> subprocess.CompletedProcess[str]:
    # a subprocess: the command runs its own event loop (anyio.run), as from a shell
    return await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "linelight.agent", *args], capture_output=True, text=True,
        timeout=60, check=False))


async def test_browse_prints_the_tree_and_a_snippet_that_check_accepts(
        opcua_server: OpcUaTestServer, tmp_path: Path):
    await opcua_server.set("Line.Speed", 12.5)
    url = f"opcua://127.0.0.1:{opcua_server.port}"
    done = await _linelight("browse", url, "--path", "Line", "--snippet", "cell")
    assert done.returncode == 0, done.stderr
    tree, _, snippet = done.stdout.partition("\n\n")
    assert "Running  [ns=2;i=1042]  Boolean = False" in tree
    assert "Speed  [ns=2;s=Line.Speed]  Double = 12.5" in tree
    assert 'running = { node = "ns=2;i=1042" }  # Boolean' in snippet
    assert 'fault_code = { node = "ns=2;s=Line.FaultCode" }  # Int32' in snippet
    (tmp_path / "rules.toml").write_text(
        '[inputs]\nrunning = { type = "bool" }\n\n[[state]]\nname = "producing"\ncode = 1\n'
        'priority = 1\nwhen = "running"\nshow = { green = "on" }\n')
    (tmp_path / "agent.toml").write_text(
        f'data_dir = "{tmp_path}/state"\nrules = ["rules.toml"]\n\n{snippet}\n'
        '[tower.lamps]\ngreen = { opcua = "ns=2;s=Lamp.Green", source = "cell" }\n'
        'amber = { virtual = true }\n')
    checked = await _linelight("check", "--config", str(tmp_path / "agent.toml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_browse_snippet_of_selected_variables_only(opcua_server: OpcUaTestServer):
    url = f"opcua://127.0.0.1:{opcua_server.port}"
    done = await _linelight("browse", url, "--path", "Line", "--snippet", "cell",
                            "--only", "Speed", "--only", "ns=2;i=1042")
    assert done.returncode == 0, done.stderr
    snippet = done.stdout.partition("\n\n")[2]
    assert snippet.splitlines()[-2:] == ['running = { node = "ns=2;i=1042" }  # Boolean',
                                         'speed = { node = "ns=2;s=Line.Speed" }  # Double']
    wrong = await _linelight("browse", url, "--path", "Line", "--snippet", "cell",
                             "--only", "Sped")
    assert wrong.returncode == 1
    assert wrong.stderr == ("linelight browse: no variable named Sped in the tree above (--only "
                            "takes browse names or node ids)\n")


async def test_browse_of_a_closed_port_is_one_line_and_exit_1(tmp_path: Path):
    from tests.hw.modbus_server import free_port
    done = await _linelight("browse", f"opcua://127.0.0.1:{free_port()}", "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("linelight browse: cannot connect to OPC UA server 'browse' "
                                  "(opc.tcp://127.0.0.1:")
    assert done.stderr.count("\n") == 1
