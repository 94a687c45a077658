"""A hostile broker on loopback: malformed PUBACKs and PUBACKs that never come.

A small MQTT fake (CONNACK, PINGRESP, and a PUBACK per PUBLISH as each test decides) stands
where mosquitto cannot misbehave on purpose. The forwarder runs against it with a real journal:
every fault must end the connection with a plain reason in the log, the forwarder must
reconnect as after any lost link, and no row may leave the journal without its PUBACK.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream

from harness.waiting import wait_until
from linelight.agent.journal import Journal
from linelight.agent.mqtt.forwarder import Forwarder
from tests.agent.mqtt.forwarder_proc import AGENT, fill_journal, settings

pytestmark = pytest.mark.anyio

CONNECT, CONNACK, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    0x10, 0x20, 0x30, 0x40, 0xC0, 0xD0, 0xE0)

# What the broker answers to the n-th PUBLISH of a connection: PUBACK bytes after the fixed
# header's type byte and length (None: no answer at all).
Answer = Callable[[int, int], bytes | None]  # (packet id, publishes so far) -> body


def _good(mid: int, _n: int) -> bytes:
    return mid.to_bytes(2, "big")


class FakeBroker:
    """Accepts MQTT connections on 127.0.0.1; connection k (0-based) answers with `answers[k]`
    (the last one for every later connection)."""

    def __init__(self, answers: list[Answer], *, v5: bool = True,
                 first_says: bytes = b"") -> None:
        self.answers = answers
        self.v5 = v5
        self.first_says = first_says  # sent after the first connection's first PUBACK
        self.connections = 0
        self.publishes = 0
        self.port = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._client)

    async def _client(self, stream: SocketStream) -> None:
        answer = self.answers[min(self.connections, len(self.answers) - 1)]
        self.connections += 1
        buffer = bytearray()
        n = 0
        async with stream:
            try:
                while True:
                    kind, body = await _read_packet(stream, buffer)
                    if kind == CONNECT:
                        await stream.send(bytes([CONNACK, 3, 0, 0, 0]) if self.v5
                                          else bytes([CONNACK, 2, 0, 0]))
                    elif kind == PINGREQ:
                        await stream.send(bytes([PINGRESP, 0]))
                    elif kind == PUBLISH:
                        n += 1
                        self.publishes += 1
                        topic_len = int.from_bytes(body[:2], "big")
                        mid = int.from_bytes(body[2 + topic_len:4 + topic_len], "big")
                        reply = answer(mid, n)
                        if reply is not None:
                            await stream.send(bytes([PUBACK, len(reply)]) + reply)
                        if self.first_says and self.connections == 1:
                            await stream.send(self.first_says)
                            return
                    elif kind == DISCONNECT:
                        return
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return


async def _read_packet(stream: SocketStream, buffer: bytearray) -> tuple[int, bytes]:
    async def need(count: int) -> None:
        while len(buffer) < count:
            buffer.extend(await stream.receive())

    await need(2)
    length, mult, pos = 0, 1, 1
    while True:
        await need(pos + 1)
        byte = buffer[pos]
        length += (byte & 0x7F) * mult
        mult *= 128
        pos += 1
        if not byte & 0x80:
            break
    await need(pos + length)
    kind, body = buffer[0] & 0xF0, bytes(buffer[pos:pos + length])
    del buffer[:pos + length]
    return kind, body


@asynccontextmanager
async def forwarding(tmp_path: Path, broker: FakeBroker, **kw: object
                     ) -> AsyncIterator[tuple[Journal, Forwarder]]:
    journal = Journal.open(str(tmp_path / "journal.db"))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(broker.serve)
            await tg.start(journal.run)
            forwarder = Forwarder(journal, settings("127.0.0.1", broker.port, **kw),
                                  agent_id=AGENT, boot=journal.boot, version="test")
            await tg.start(forwarder.run)
            yield journal, forwarder
            tg.cancel_scope.cancel()
    finally:
        journal.close()


def _once(bad: bytes) -> Answer:
    """The first PUBLISH of the connection gets `bad`, every other one a good PUBACK."""
    return lambda mid, n: bad if n == 1 else _good(mid, n)


MALFORMED = [
    pytest.param(_once(b""), "malformed PUBACK of 0 byte(s)", id="0-bytes"),
    pytest.param(_once(b"\x00"), "malformed PUBACK of 1 byte(s)", id="1-byte"),
    pytest.param(lambda mid, n: (mid + 1000).to_bytes(2, "big") if n == 1 else _good(mid, n),
                 "which is not in flight", id="unknown-packet-id"),
    pytest.param(lambda mid, n: mid.to_bytes(2, "big") + b"\x05" if n == 1 else _good(mid, n),
                 "reason code 0x05, which MQTT 5 does not define", id="reason-out-of-range"),
    pytest.param(lambda mid, n: mid.to_bytes(2, "big") + b"\xff" if n == 1 else _good(mid, n),
                 "reason code 0xff", id="reason-0xff"),
]


@pytest.mark.parametrize(("answer", "says"), MALFORMED)
async def test_a_malformed_puback_drops_the_link_with_a_protocol_error_and_reconnects(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: Answer, says: str) -> None:
    broker = FakeBroker([answer, _good])
    caplog.set_level(logging.WARNING, logger="linelight")
    async with forwarding(tmp_path, broker) as (journal, forwarder):
        last = await fill_journal(journal, 50)
        await wait_until(lambda: journal.stats().depth == 0, "every event acknowledged")
    assert last == 50 and forwarder.link.reconnects >= 1 and broker.connections >= 2
    lines = [r.getMessage() for r in caplog.records if "protocol error" in r.getMessage()]
    assert lines and says in lines[0], caplog.text
    assert f"MQTT link to mqtt://127.0.0.1:{broker.port} lost: protocol error" in lines[0]


async def test_disconnect_0x8e_is_logged_once_as_a_session_taken_over_with_the_remedy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker([_good], first_says=bytes([DISCONNECT, 2, 0x8E, 0]))
    caplog.set_level(logging.WARNING, logger="linelight")
    async with forwarding(tmp_path, broker) as (journal, forwarder):
        await fill_journal(journal, 20)
        await wait_until(lambda: journal.stats().depth == 0, "every event acknowledged")
    lines = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert lines[0].startswith(f"MQTT link to mqtt://127.0.0.1:{broker.port}: session taken "
                               "over (the broker says): another client connected to the broker "
                               "with the same client id")
    assert "give each agent a unique agent_id" in lines[0]
    assert "Unspecified error" not in caplog.text


async def test_a_3_byte_puback_on_mqtt_3_1_1_is_a_protocol_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker([lambda mid, n: mid.to_bytes(2, "big") + b"\x00" if n == 1
                         else _good(mid, n), _good], v5=False)
    caplog.set_level(logging.WARNING, logger="linelight")
    async with forwarding(tmp_path, broker, protocol="3.1.1") as (journal, forwarder):
        await fill_journal(journal, 20)
        await wait_until(lambda: journal.stats().depth == 0, "every event acknowledged")
    assert forwarder.link.reconnects >= 1
    assert "protocol error: the broker sent a malformed PUBACK of 3 byte(s)" in caplog.text


async def test_a_broker_that_answers_pings_but_never_pubacks_is_dropped_after_puback_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker([lambda mid, n: None, _good])
    caplog.set_level(logging.WARNING, logger="linelight")
    async with forwarding(tmp_path, broker, keepalive=2.0, puback_timeout=1.0) as (
            journal, forwarder):
        await fill_journal(journal, 30)
        await wait_until(lambda: journal.stats().depth == 0, "every event acknowledged")
    assert broker.connections >= 2 and forwarder.link.reconnects >= 1
    assert "no PUBACK for" in caplog.text and "(mqtt.puback_timeout 1s)" in caplog.text


async def test_an_idle_link_with_nothing_in_flight_is_not_dropped_for_missing_pubacks(
        tmp_path: Path) -> None:
    broker = FakeBroker([_good])
    async with forwarding(tmp_path, broker, keepalive=2.0, puback_timeout=1.0) as (
            journal, forwarder):
        await fill_journal(journal, 5)
        await wait_until(lambda: journal.stats().depth == 0, "every event acknowledged")
        await anyio.sleep(2.5)  # longer than puback_timeout, nothing in flight
        assert forwarder.link.connected and broker.connections == 1
