"""S7 sources and lamp bits against python-snap7's own server on a free loopback port."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import snap7
from snap7.datatypes import S7WordLen
from snap7.type import SrvArea

from harness.ports import free_port
from harness.waiting import wait_until
from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.hw.s7 import S7Connection, S7Source
from linelight.rules.values import Pattern, Quality, Sample
from tests.hw.helpers import (
    outputs_follow,
    read_config,
    read_outputs_config,
    running,
    running_sources,
    wait_sample,
)
from tests.hw.s7_server import S7TestServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def s7_server() -> Iterator[S7TestServer]:
    server = S7TestServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _toml(port: int, inputs: str, extra: str = "") -> str:
    return f"""
[sources.plc]
type = "s7"
host = "127.0.0.1"
port = {port}
rack = 0
slot = 1
poll = "50ms"
timeout = "500ms"
stale_after = "1s"
reconnect_max = "1s"

[sources.plc.inputs]
{inputs}
{extra}
"""


# (input, address, type, memory, byte offset, bytes the test writes, expected value)
def _cases(server: S7TestServer) -> list[tuple[str, str, str | None, bytearray, int, bytes, object]]:
    return [
        ("db_bit", "DB10.DBX4.0", None, server.db10, 4, b"\x01", True),
        ("db_bit5_off", "DB10.DBX5.3", None, server.db10, 5, b"\xf7", False),
        ("db_byte", "DB10.DBB3", None, server.db10, 3, b"\xc8", 200),
        ("db_word", "DB10.DBW6", None, server.db10, 6, b"\xd4\x31", 54321),
        ("db_int", "DB10.DBW12", "INT", server.db10, 12, struct.pack(">h", -1234), -1234),
        ("db_real", "DB10.DBD8", "REAL", server.db10, 8, struct.pack(">f", 2.5), 2.5),
        ("db_dint", "DB10.DBD16", "DINT", server.db10, 16, struct.pack(">i", -123456789),
         -123456789),
        ("db_dword", "DB10.DBD20", None, server.db10, 20, struct.pack(">I", 3_000_000_000),
         3_000_000_000),
        ("marker", "M0.1", None, server.m, 0, b"\x02", True),
        ("marker_word", "MW2", "INT", server.m, 2, struct.pack(">h", -2), -2),
        ("input_bit", "I0.3", None, server.i, 0, b"\x08", True),
        ("output_bit", "Q1.0", None, server.q, 1, b"\x01", True),
        ("output_real", "QD4", "REAL", server.q, 4, struct.pack(">f", -0.5), -0.5),
        ("db_string", "DB10.DBB30", "STRING[8]", server.db10, 30, b"\x08\x05HELLO", "HELLO"),
    ]


async def _run_until(hw, table: InputTable, condition, what: str) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_until(condition, what=what)
        tg.cancel_scope.cancel()


async def test_every_address_kind_and_type_decodes_from_bytes_the_test_wrote(
        s7_server: S7TestServer):
    cases = _cases(s7_server)
    lines = []
    for name, address, type_name, memory, offset, data, _ in cases:
        memory[offset : offset + len(data)] = data
        kind = f', type = "{type_name}"' if type_name else ""
        lines.append(f'{name} = {{ address = "{address}"{kind} }}')
    (spec,), _ = read_config(_toml(s7_server.port, "\n".join(lines)))
    hw = build_hardware([spec], None)
    table = InputTable()
    await _run_until(hw, table, lambda: len(table.snapshot()) == len(cases) and all(
        s.quality is Quality.GOOD for s in table.snapshot().values()), "every input GOOD")
    await hw.close()
    got = {name: s.value for name, s in table.snapshot().items()}
    assert got == {name: expected for name, *_, expected in cases}


async def test_200_addresses_are_read_with_one_request_per_area_within_the_pdu(
        s7_server: S7TestServer):
    inputs = [f'w{i} = {{ address = "DB20.DBW{i}" }}' for i in range(0, 280, 2)]  # 140 words
    inputs += [f'b{i} = {{ address = "M{i // 8}.{i % 8}" }}' for i in range(40)]
    inputs += [f'q{i} = {{ address = "Q{i // 8}.{i % 8}" }}' for i in range(20)]
    toml = _toml(s7_server.port, "\n".join(inputs)).replace('poll = "50ms"', 'poll = "1h"')
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    source = hw.source("plc")
    assert isinstance(source, S7Source)
    table = InputTable()
    before = s7_server.reads
    await _run_until(hw, table, lambda: source.counters.polls == 1 and all(
        s.quality is Quality.GOOD for s in table.snapshot().values()), "one full poll")
    await hw.close()
    assert len(table.snapshot()) == 200
    pdu = hw.s7_connections["plc"].stats.pdu
    assert pdu >= 240 and all(b.size <= pdu - 18 for b in source.blocks)
    # 280 DB bytes fit one answer of a 480-byte PDU; markers and outputs one read each
    assert [(b.area.value, b.size) for b in source.blocks] == [("DB", 280), ("M", 5), ("Q", 3)]
    assert s7_server.reads - before == 3  # counted by the server


async def test_a_refused_read_gives_bad_naming_the_plc_address_and_put_get(
        s7_server: S7TestServer):
    s7_server.db10[4] = 1
    toml = _toml(s7_server.port, 'missing = { address = "DB99.DBW0" }\n'
                                 'running = { address = "DB10.DBX4.0" }')
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    table = InputTable()
    await _run_until(hw, table, lambda: table.get("missing").quality is Quality.BAD
                     and table.get("running").quality is Quality.GOOD, "BAD next to GOOD")
    await hw.close()
    reason = table.get("missing").reason
    assert reason.startswith(f"S7 PLC 'plc' (127.0.0.1:{s7_server.port} rack 0 slot 1) refused "
                             "reading DB99.DBB0..1: ")
    assert "PUT/GET" in reason and "Optimized block access" in reason
    assert table.get("running").value is True  # one refused DB does not cost the others


# After the outage the CPU answers other bytes, or exactly those it answered before: the poller
# then has them decoded already and the table sees the same values, yet the input leaves STALE.
@pytest.mark.parametrize("answer_after", [b"\x00\x0c", b"\x00\x0b"], ids=["new", "same"])
async def test_server_gone_makes_inputs_stale_and_restart_makes_them_good(
        s7_server: S7TestServer, answer_after: bytes):
    s7_server.db10[6:8] = b"\x00\x0b"
    async with running_sources(_toml(s7_server.port, 'speed = { address = "DB10.DBW6" }')) as (hw, table):
        good = await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD)
        assert good.value == 11
        await anyio.to_thread.run_sync(s7_server.stop)
        stale = await wait_sample(table, "speed", lambda s: s.quality is Quality.STALE)
        assert stale.value == 11  # the last value stays visible, marked stale
        assert stale.reason.startswith("no answer from S7 PLC 'plc' (127.0.0.1:")
        assert "for DB10.DBW6 in " in stale.reason and "(stale_after 1 s)" in stale.reason
        changes = table.value_changes
        s7_server.db10[6:8] = answer_after
        s7_server.start()
        again = await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD)
    assert again.value == int.from_bytes(answer_after, "big") and again.at > stale.at
    assert not again.reason and table.value_changes > changes  # wakes a scan on change
    assert hw.s7_connections["plc"].stats.connects >= 2  # reconnected by itself


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _polled(server: S7TestServer, words: int, clock: _Clock) -> tuple[S7Source, Any]:
    """A source of `words` WORDs of DB20 in one block, connected, polled by the test."""
    inputs = "\n".join(f'w{i} = {{ address = "DB20.DBW{2 * i}" }}' for i in range(words))
    (spec,), _ = read_config(_toml(server.port, inputs))
    connection = S7Connection(spec)
    await connection.connect()
    source = S7Source(spec, connection, clock=clock)
    source.blocks = source._plan(connection.pdu)  # what run() does after a connect
    assert len(source.blocks) == 1
    return source, connection


async def test_a_block_read_again_unchanged_refreshes_every_age_without_a_value_change(
        s7_server: S7TestServer):
    s7_server.db20[0:200] = bytes(range(200))
    clock = _Clock()
    source, connection = await _polled(s7_server, 100, clock)
    table = InputTable()
    await source.poll_once(table)
    first = table.snapshot()
    assert first["w3"] == Sample(6 * 256 + 7, Quality.GOOD, 100.0, first["w3"].wall_ns)
    version, changes = table.version, table.value_changes
    clock.now = 101.0
    await source.poll_once(table)
    again = table.snapshot()
    await connection.close()
    assert {n: s.value for n, s in again.items()} == {n: s.value for n, s in first.items()}
    assert all(s.quality is Quality.GOOD and s.at == 101.0 and s.wall_ns >= first[n].wall_ns
               for n, s in again.items())
    assert table.value_changes == changes and table.version > version
    assert source.counters.samples == 200  # a refreshed input is a sample like any other


async def test_one_changed_byte_in_a_block_read_again_is_seen(s7_server: S7TestServer):
    s7_server.db20[0:200] = bytes(range(200))
    clock = _Clock()
    source, connection = await _polled(s7_server, 100, clock)
    table = InputTable()
    await source.poll_once(table)
    first = {n: s.value for n, s in table.snapshot().items()}
    for offset, name in ((101, "w50"), (199, "w99"), (0, "w0")):  # middle, last, first byte
        s7_server.db20[offset] ^= 0x10
        changes = table.value_changes
        clock.now += 1.0
        await source.poll_once(table)
        snap = table.snapshot()
        word = s7_server.db20[offset & ~1] * 256 + s7_server.db20[offset | 1]
        assert snap[name] == Sample(word, Quality.GOOD, clock.now, snap[name].wall_ns)
        assert word != first[name] and table.value_changes == changes + 1
        s7_server.db20[offset] ^= 0x10  # back, for the next round: seen as a change too
        await source.poll_once(table)
        assert table.get(name).value == first[name]
    await connection.close()


async def test_refused_connects_count_as_failures_with_the_next_attempt_in_status():
    port = free_port()  # nothing listens
    (spec,), _ = read_config(_toml(port, 'speed = { address = "DB10.DBW6" }').replace(
        'reconnect_max = "1s"', 'reconnect_min = "5s"\nreconnect_max = "10s"'))
    hw = build_hardware([spec], None)
    source = hw.source("plc")
    table = InputTable()
    await _run_until(hw, table, lambda: source.status()["link"]["failures"] >= 1  # type: ignore[index]
                     and source.status()["link"]["next_attempt_in"] > 0, "a failed connect")  # type: ignore[index]
    link = source.status()["link"]
    await hw.close()
    assert link["connects"] == 0 and link["failures"] == 1  # type: ignore[index]
    assert 0 < link["next_attempt_in"] <= 5.5  # type: ignore[index]  # reconnect_min + jitter
    assert link["last_error"].startswith(f"cannot connect to S7 PLC 'plc' (127.0.0.1:{port} ")  # type: ignore[index]


TOWER = """
[tower]
source = "plc"
on_exit = { red = "on" }

[tower.lamps]
red = { s7 = "Q1.0" }
amber = { s7 = "Q1.1" }
green = { s7 = "DB10.DBX2.3" }
"""


async def test_lamp_bits_are_written_without_disturbing_bits_the_plc_owns(
        s7_server: S7TestServer):
    s7_server.q[1] = 0b1010_0100  # bits 2, 5 and 7 belong to the PLC program
    s7_server.db10[2] = 0b0100_0001
    sources, tower = read_config(_toml(s7_server.port, 'running = { address = "I0.0" }', TOWER))
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        light.show({"amber": Pattern.ON, "green": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is True
                         and light.status()["lamps"]["amber"]["level"] is True, what="lamps on")
        assert s7_server.q[1] == 0b1010_0110 and s7_server.db10[2] == 0b0100_1001
        # the PLC changes its own bits of the same byte between two of our writes
        s7_server.set_bit(s7_server.q, 1, 7, False)
        s7_server.set_bit(s7_server.q, 1, 6, True)
        light.show({"red": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["amber"]["level"] is False,
                         what="amber off, red on")
        assert s7_server.q[1] == 0b0110_0101
        tg.cancel_scope.cancel()
    assert await hw.close()  # on_exit: red on, the others off
    assert s7_server.q[1] == 0b0110_0101 and s7_server.db10[2] == 0b0100_0001


async def test_lamp_write_failure_is_reported_and_recovers_after_restart(
        s7_server: S7TestServer):
    sources, tower = read_config(_toml(s7_server.port, 'running = { address = "I0.0" }', TOWER))
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "running", lambda s: s.quality is Quality.GOOD)
        await anyio.to_thread.run_sync(s7_server.stop)
        light.show({"red": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["red"]["failures"] >= 2,
                         what="failed writes counted and retried")
        red = light.status()["lamps"]["red"]
        assert red["last_error"].startswith("lamp 'red' on plc Q1.0: cannot switch on: S7 PLC "
                                            "'plc'")
        s7_server.start()
        await wait_until(lambda: not light.status()["lamps"]["red"]["failing"],
                         what="writes working again")
        assert s7_server.q[1] & 1 == 1
        tg.cancel_scope.cancel()
    await hw.close()


def test_snap7_internals_used_for_bit_writes_exist():
    """S7Connection.write_bit uses AsyncClient._map_area and _send_receive (python-snap7 3.3)
    because no public call writes one bit with the bit transport."""
    client = snap7.AsyncClient()
    assert callable(getattr(client, "_map_area", None)), "AsyncClient._map_area is gone"
    assert callable(getattr(client, "_send_receive", None)), "AsyncClient._send_receive is gone"
    request = client.protocol.build_write_request(
        area=client._map_area(snap7.Area.PA), db_number=0, start=8 * 1 + 2,
        word_len=S7WordLen.BIT, data=b"\x01")
    assert request[-5:] == b"\x00\x03\x00\x01\x01"  # item: transport BIT, 1 bit, value 1


def test_stock_server_bit_write_is_byte_wide():
    """Why tests/hw/s7_server.py corrects bit writes: the library's server stores the data
    byte over the whole byte. When this fails, upstream writes bits like a CPU: drop the fix."""
    server = snap7.Server(log=False)
    q = bytearray(4)
    q[1] = 0b1000_0000
    server.register_area(SrvArea.PA, 0, q)
    port = free_port()
    server.start_to("127.0.0.1", port)

    async def write() -> None:
        client = snap7.AsyncClient()
        await client.connect("127.0.0.1", 0, 1, port)
        request = client.protocol.build_write_request(
            area=client._map_area(snap7.Area.PA), db_number=0, start=8 * 1 + 2,
            word_len=S7WordLen.BIT, data=b"\x01")
        client.protocol.check_write_response(await client._send_receive(request))
        await client.disconnect()

    try:
        anyio.run(write)
    finally:
        server.stop()
    assert q[1] == 0b0000_0001


def _doctor(port: int, inputs: str) -> Any:
    """`linelight doctor`'s finding for one S7 source on `port`."""
    from linelight.agent.cli.doctor import Report, check_s7

    (spec,), _ = read_config(_toml(port, inputs))
    report = Report()
    check_s7(report, spec)
    (finding,) = report.findings
    return finding


def test_doctor_names_put_get_when_the_cpu_refuses_a_read(s7_server: S7TestServer, capsys):
    finding = _doctor(s7_server.port, 'running = { address = "DB10.DBX4.0" }\n'
                                      'missing = { address = "DB99.DBW0" }')
    assert finding.level == "fail"
    assert finding.detail.startswith(f"S7 PLC 'plc' (127.0.0.1:{s7_server.port} rack 0 slot 1) "
                                     "refused reading DB99.DBB0..1")
    assert "PUT/GET" in finding.detail
    ok = _doctor(s7_server.port, 'running = { address = "DB10.DBX4.0" }')
    assert (ok.level, ok.detail) == ("ok", "connected (PDU 480), 1 reads answered")


def test_doctor_names_put_get_when_the_cpu_refuses_every_read_as_an_s7_1200_does(capsys):
    server = S7TestServer(put_get=False)
    server.start()
    try:
        finding = _doctor(server.port, 'running = { address = "DB10.DBX4.0" }')
    finally:
        server.stop()
    assert finding.level == "fail"
    assert finding.detail == (
        f"S7 PLC 'plc' (127.0.0.1:{server.port} rack 0 slot 1) refused reading DB10.DBB4: S7 "
        "protocol error (class=0x81, code=0x04): This service is not implemented on the module "
        "or a frame error was reported (on an S7-1200/1500, tick 'Permit access with PUT/GET "
        "communication' in the CPU's protection settings and clear 'Optimized block access' on "
        "the DB)")


def test_doctor_names_put_get_and_rack_slot_when_the_connection_is_refused():
    port = free_port()  # nothing listens
    finding = _doctor(port, 'running = { address = "DB10.DBX4.0" }')
    assert finding.level == "fail"
    assert finding.detail.startswith(f"cannot connect to S7 PLC 'plc' (127.0.0.1:{port} rack 0 "
                                     "slot 1): ")
    assert finding.todo == ("an S7-1200/1500 answers only with PUT/GET access permitted and DBs "
                            "without optimized block access; check rack and slot (S7-1200/1500: "
                            "0/1, S7-300: 0/2)")


async def test_a_cpu_without_put_get_makes_inputs_bad_naming_put_get():
    server = S7TestServer(put_get=False)
    server.start()
    try:
        (spec,), _ = read_config(_toml(server.port, 'running = { address = "DB10.DBX4.0" }'))
        hw = build_hardware([spec], None)
        table = InputTable()
        await _run_until(hw, table, lambda: table.get("running").quality is Quality.BAD,
                         "refused read BAD")
        await hw.close()
    finally:
        server.stop()
    assert "PUT/GET" in table.get("running").reason


async def test_a_lamp_on_a_cpu_without_put_get_fails_naming_put_get():
    server = S7TestServer(put_get=False)
    server.start()
    try:
        async with running(_toml(server.port, 'running = { address = "I0.0" }', TOWER)) as (hw, _):
            light = hw.stacklight
            light.show({"red": Pattern.ON})
            await wait_until(lambda: light.status()["lamps"]["red"]["failures"] >= 1,
                             what="a refused lamp write")
            error = light.status()["lamps"]["red"]["last_error"]
    finally:
        server.stop()
    assert error.startswith(f"lamp 'red' on plc Q1.0: cannot switch on: S7 PLC 'plc' "
                            f"(127.0.0.1:{server.port} rack 0 slot 1) refused writing Q1.0 = 1: ")
    assert "PUT/GET" in error
    assert server.q[1] == 0


async def test_a_remote_tsap_instead_of_rack_and_slot_connects(s7_server: S7TestServer):
    s7_server.db10[4] = 1
    toml = _toml(s7_server.port, 'running = { address = "DB10.DBX4.0" }').replace(
        "rack = 0\nslot = 1\n", 'remote_tsap = "03.01"\nlocal_tsap = "10.00"\n')
    (spec,), _ = read_config(toml)
    assert (spec.remote_tsap, spec.local_tsap) == (0x0301, 0x1000)
    hw = build_hardware([spec], None)
    table = InputTable()
    await _run_until(hw, table, lambda: table.get("running").quality is Quality.GOOD,
                     "read through the TSAP connection")
    await hw.close()
    assert spec.describe() == f"127.0.0.1:{s7_server.port} TSAP 03.01"


OUTPUTS = """
[outputs]
source = "plc"
on_exit = { agent_down = "on" }

[outputs.wiring]
may_start = { s7 = "M10.0" }
agent_down = { s7 = "DB10.DBX3.1" }
"""


async def test_output_rules_write_s7_bits_like_lamps_and_on_exit_at_close(
        s7_server: S7TestServer):
    s7_server.m[10] = 0b1000_0000  # bit 7 of MB10 belongs to the PLC program
    sources, outputs = read_outputs_config(
        _toml(s7_server.port, 'running = { address = "I0.0" }', OUTPUTS))
    hw = build_hardware(sources, None, outputs=outputs)
    await outputs_follow(hw, [
        ({"may_start": True, "agent_down": False},
         lambda: s7_server.m[10] == 0b1000_0001 and s7_server.db10[3] == 0),
        ({}, lambda: s7_server.m[10] == 0b1000_0000),  # an output the rules leave out: off
    ])
    assert await hw.close()
    assert s7_server.db10[3] == 0b0000_0010 and s7_server.m[10] == 0b1000_0000
