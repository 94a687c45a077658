"""Modbus devices that answer wrongly or drop the connection: BAD or STALE with a reason a
person can act on, and none of pymodbus's own tracebacks or hex dumps in the agent log.

pymodbus's server cannot answer a request with another function or a wrong byte count, so a
small Modbus TCP fake on 127.0.0.1 does; refused connections use pymodbus's own server, stopped.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality
from tests.hw.helpers import read_config, wait_sample
from tests.hw.modbus_server import ModbusTestServer

pytestmark = pytest.mark.anyio

# (function, pdu after the function byte) -> the reply PDU (function byte included), or None to
# reset the connection instead of answering.
Reply = Callable[[int, bytes], bytes | None]


class FakeDevice:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.port = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._client)

    async def _client(self, stream: SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            try:
                while True:
                    while len(buffer) < 7 or len(buffer) < 6 + int.from_bytes(buffer[4:6]):
                        buffer.extend(await stream.receive())
                    tid, _, length, unit = struct.unpack(">HHHB", buffer[:7])
                    pdu = bytes(buffer[7:6 + length])
                    del buffer[:6 + length]
                    answer = self.reply(pdu[0], pdu[1:])
                    if answer is None:  # RST: linger 0, then close
                        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        return
                    await stream.send(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit)
                                      + answer)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return


def _toml(port: int, inputs: str, *, link: str = "") -> str:
    link = link or f'type = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}'
    return f"""
[sources.plc]
{link}
unit = 1
poll = "50ms"
timeout = "500ms"
stale_after = "1s"
reconnect_max = "1s"

[sources.plc.inputs]
{inputs}
"""


@asynccontextmanager
async def polling(port: int, inputs: str, device: FakeDevice | None = None,
                  sources: list[dict[str, object]] | None = None
                  ) -> AsyncIterator[InputTable]:
    """Poll one Modbus source into a table; `sources`, if given, receives its /status."""
    table = InputTable()
    async with anyio.create_task_group() as tg:
        if device is not None:
            await tg.start(device.serve)
            port = device.port
        (spec,), _ = read_config(_toml(port, inputs))
        hw = build_hardware([spec], None)
        await tg.start(hw.run, table)
        yield table
        if sources is not None:
            sources.extend(src.status() for src in hw.sources)
        tg.cancel_scope.cancel()
    await hw.close()


class AgentLog(logging.Handler):
    """Stands for the agent's stderr handler on the root logger. (caplog cannot tell: pytest
    attaches its handler to non-propagating loggers as well.)"""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def agent_log() -> Iterator[AgentLog]:
    handler = AgentLog()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _no_pymodbus_lines(log: AgentLog) -> None:
    leaked = [r.getMessage() for r in log.records if r.name.startswith("pymodbus")]
    assert not leaked, leaked
    text = "\n".join(r.getMessage() for r in log.records)
    assert "Traceback" not in text and "0x0 0x1" not in text and not any(
        r.exc_info for r in log.records)


async def test_an_answer_with_another_function_is_bad_with_a_reason(
        agent_log: AgentLog) -> None:
    device = FakeDevice(lambda fn, _: bytes([4, 2, 0, 7]))  # input registers for a holding read
    async with polling(0, "speed = { holding_register = 0 }", device) as table:
        bad = await wait_sample(table, "speed", lambda s: s.quality is not Quality.INIT)
    assert bad.quality is Quality.BAD and bad.value is None
    assert bad.reason == (f"Modbus device 'plc' (127.0.0.1:{device.port}) unit 1 answered read "
                          f"holding registers (03) at address 0 with an answer to read input "
                          f"registers (04) instead")
    _no_pymodbus_lines(agent_log)


@pytest.mark.parametrize("data", [b"\xff", b"\x01\x02\x03"], ids=["too-few", "too-many"])
async def test_a_coil_answer_with_a_wrong_byte_count_is_bad_with_a_reason(
        agent_log: AgentLog, data: bytes) -> None:
    device = FakeDevice(lambda fn, _: bytes([1, len(data)]) + data)
    inputs = "\n".join(f"c{i} = {{ coil = {i} }}" for i in range(16))
    async with polling(0, inputs, device) as table:
        bad = await wait_sample(table, "c0", lambda s: s.quality is not Quality.INIT)
    assert bad.quality is Quality.BAD
    assert f"{len(data)} data byte(s) for" in bad.reason and "expected 2" in bad.reason
    assert all(s.quality is Quality.BAD for s in table.snapshot().values())
    _no_pymodbus_lines(agent_log)


async def test_a_refused_connection_says_refused_with_host_and_port(
        modbus_server: ModbusTestServer, agent_log: AgentLog) -> None:
    port = modbus_server.port
    await modbus_server.stop()
    status: list[dict[str, object]] = []
    async with polling(port, "speed = { holding_register = 0 }", sources=status) as table:
        stale = await wait_sample(table, "speed", lambda s: bool(s.reason))
        assert stale.quality is Quality.INIT  # never read: not stale, still `init`
    assert f"connection refused by 127.0.0.1:{port}" in stale.reason
    link = status[0]["link"]
    assert isinstance(link, dict)  # /status counts the refused attempts as failures
    assert link["connects"] == 0 and link["failures"] >= 1
    assert "no answer" not in stale.reason
    _no_pymodbus_lines(agent_log)


async def test_a_reset_connection_says_reset_by_peer_with_host_and_port(
        agent_log: AgentLog) -> None:
    device = FakeDevice(lambda fn, _: None)
    async with polling(0, "speed = { holding_register = 0 }", device) as table:
        stale = await wait_sample(table, "speed", lambda s: bool(s.reason))
        assert stale.quality is Quality.INIT  # never read: not stale, still `init`
    assert "reset by peer" in stale.reason and f"127.0.0.1:{device.port}" in stale.reason
    assert "no answer" not in stale.reason
    lost = [r.getMessage() for r in agent_log.records if "lost" in r.getMessage()]
    assert lost and "reset by peer" in lost[0]
    _no_pymodbus_lines(agent_log)


@pytest.mark.parametrize("where", ["socket", "missing-port"])
async def test_an_rtu_link_that_cannot_open_says_why(
        modbus_rtu_server: ModbusTestServer, agent_log: AgentLog, where: str) -> None:
    port = modbus_rtu_server.port
    await modbus_rtu_server.stop()
    device = f"socket://127.0.0.1:{port}" if where == "socket" else "/dev/ttyLINELIGHT-nope"
    (spec,), _ = read_config(_toml(0, "speed = { holding_register = 0 }",
                                   link=f'type = "modbus_rtu"\ndevice = "{device}"'))
    hw = build_hardware([spec], None)
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        stale = await wait_sample(table, "speed", lambda s: bool(s.reason))
        assert stale.quality is Quality.INIT  # never read: not stale, still `init`
        tg.cancel_scope.cancel()
    await hw.close()
    expected = (f"connection refused by {device}" if where == "socket"
                else f"serial port {device} does not exist")
    assert expected in stale.reason, stale.reason
    _no_pymodbus_lines(agent_log)
