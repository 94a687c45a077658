"""Modbus sources and outputs against pymodbus's own server (TCP, and RTU over socket://)."""

from __future__ import annotations

import anyio
import pytest

from harness.waiting import wait_until
from linelight.hw.build import build_hardware
from linelight.hw.inputs import InputTable
from linelight.hw.modbus import ModbusSource
from linelight.hw.modbus_codec import DataType, Order, number_to_words
from linelight.rules.values import Pattern, Quality
from tests.hw.helpers import read_config, running_sources, wait_sample
from tests.hw.modbus_server import ModbusTestServer

pytestmark = pytest.mark.anyio

# (input, type, word_order, byte_order, value): every data type in every order
CASES = [
    (f"{dt.value}_{wo.value}_{bo.value}", dt, wo, bo, value)
    for dt, value in [(DataType.INT16, -1234), (DataType.UINT16, 54321),
                      (DataType.INT32, -123456789), (DataType.UINT32, 3_000_000_000),
                      (DataType.FLOAT32, 2.5)]
    for wo in Order for bo in Order
    if dt.registers == 2 or wo is Order.BIG  # word order means nothing for one register
]


def _source_toml(kind: str, where: str, inputs: str, extra: str = "") -> str:
    return f"""
[sources.plc]
type = "{kind}"
{where}
unit = 7
poll = "50ms"
timeout = "500ms"
stale_after = "1s"
reconnect_max = "1s"
{extra}

[sources.plc.inputs]
{inputs}
"""


async def _fill_all_types(server: ModbusTestServer) -> str:
    lines, address = [], 0
    for name, dt, wo, bo, value in CASES:
        await server.set_holding(address, number_to_words(value, dt, wo, bo))
        lines.append(f'{name} = {{ holding_register = {address}, type = "{dt.value}", '
                     f'word_order = "{wo.value}", byte_order = "{bo.value}" }}')
        address += dt.registers
    await server.set_holding(100, [0b101])
    await server.set_input(0, [250])
    await server.set_coils(3, [True])
    await server.set_discrete(4, [True])
    lines += ['bit2 = { holding_register = 100, bit = 2 }',
              'bit1 = { holding_register = 100, bit = 1 }',
              'temp = { input_register = 0, type = "int16", scale = 0.1, offset = -5.0 }',
              'coil3 = { coil = 3 }', 'di4 = { discrete_input = 4 }']
    return "\n".join(lines)


async def _run_and_check_all_types(toml: str) -> None:
    async with running_sources(toml) as (hw, table):
        await wait_until(lambda: all(s.quality is Quality.GOOD for s in table.snapshot().values())
                         and len(table.snapshot()) == len(CASES) + 5, what="every input GOOD")
    got = {name: s.value for name, s in table.snapshot().items()}
    for name, _dt, _wo, _bo, value in CASES:
        assert got[name] == value, name
    assert got["bit2"] is True and got["bit1"] is False
    assert got["temp"] == pytest.approx(20.0)
    assert got["coil3"] is True and got["di4"] is True


async def test_every_data_type_and_order_decodes_over_tcp(modbus_server: ModbusTestServer):
    inputs = await _fill_all_types(modbus_server)
    await _run_and_check_all_types(_source_toml(
        "modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}', inputs))


async def test_every_data_type_and_order_decodes_over_rtu_socket(
        modbus_rtu_server: ModbusTestServer):
    inputs = await _fill_all_types(modbus_rtu_server)
    await _run_and_check_all_types(_source_toml(
        "modbus_rtu", f'device = "{modbus_rtu_server.url}"\nbaudrate = 115200', inputs))


async def test_100_inputs_in_4_blocks_are_read_with_4_requests(modbus_server: ModbusTestServer):
    inputs = "\n".join(
        [f"c{a} = {{ coil = {a} }}" for a in range(25)]
        + [f"d{a} = {{ discrete_input = {a} }}" for a in range(25)]
        + [f"h{a} = {{ holding_register = {a} }}" for a in range(25)]
        + [f"i{a} = {{ input_register = {a + 100} }}" for a in range(25)])
    toml = _source_toml("modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}',
                        inputs).replace('poll = "50ms"', 'poll = "1h"')
    (spec,), _ = read_config(toml)
    hw = build_hardware([spec], None)
    source = hw.source("plc")
    assert isinstance(source, ModbusSource) and len(source.blocks) == 4
    table = InputTable()
    before = modbus_server.reads()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_until(lambda: source.counters.polls == 1 and all(
            s.quality is Quality.GOOD for s in table.snapshot().values()), what="one full poll")
        tg.cancel_scope.cancel()
    await hw.close()
    assert len(table.snapshot()) == 100
    assert modbus_server.reads() - before == 4  # counted by the server, one per block


async def test_stopped_server_makes_inputs_stale_and_restart_makes_them_good(
        modbus_server: ModbusTestServer):
    await modbus_server.set_holding(0, [11])
    toml = _source_toml("modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}',
                        "speed = { holding_register = 0 }")
    (spec,), _ = read_config(toml)
    async with running_sources(toml) as (hw, table):
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 11)
        await modbus_server.stop()
        last_good = table.get("speed")
        while True:  # the poller may still read once more before the stop took effect
            stale = await wait_sample(table, "speed", lambda s, after=last_good.at:
                                      s.quality is not Quality.GOOD or s.at > after)
            if stale.quality is not Quality.GOOD:
                break
            last_good = stale
        assert stale.quality is Quality.STALE
        assert stale.at - last_good.at >= spec.stale_after  # never early
        assert stale.value == 11  # the last value stays visible, marked stale
        assert "Modbus device 'plc'" in stale.reason and "unit 7" in stale.reason
        assert f"connection refused by 127.0.0.1:{modbus_server.port}" in stale.reason
        await modbus_server.start()
        await modbus_server.set_holding(0, [12])
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 12)
    assert hw.connections["plc"].stats.connects >= 2  # reconnected by itself


async def test_a_block_read_again_unchanged_refreshes_ages_and_a_changed_register_is_seen(
        modbus_server: ModbusTestServer):
    await modbus_server.set_holding(0, list(range(10, 20)))
    await modbus_server.set_coils(0, [False, True, False, True])
    inputs = "\n".join([f"h{a} = {{ holding_register = {a} }}" for a in range(10)]
                       + [f"c{a} = {{ coil = {a} }}" for a in range(4)])
    (spec,), _ = read_config(_source_toml(
        "modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}', inputs))
    hw = build_hardware([spec], None)
    now = [100.0]
    source = ModbusSource(spec, hw.connections["plc"], clock=lambda: now[0])
    await hw.connections["plc"].connect()
    table = InputTable()
    await source.poll_once(table)
    first = table.snapshot()
    changes = table.value_changes
    now[0] = 101.0
    await source.poll_once(table)  # the same registers and coils again
    again = table.snapshot()
    assert {n: s.value for n, s in again.items()} == {n: s.value for n, s in first.items()}
    assert all(s.quality is Quality.GOOD and s.at == 101.0 for s in again.values())
    assert table.value_changes == changes
    await modbus_server.set_holding(5, [55])
    await modbus_server.set_coils(3, [False])
    now[0] = 102.0
    await source.poll_once(table)
    await hw.close()
    snap = table.snapshot()
    assert snap["h5"].value == 55 and snap["c3"].value is False
    assert snap["h4"].value == 14 and snap["c1"].value is True and snap["h4"].at == 102.0
    assert table.value_changes == changes + 2  # one per block that changed


async def test_illegal_address_gives_bad_naming_device_unit_function_and_address(
        modbus_server: ModbusTestServer):
    toml = _source_toml("modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}',
                        "ok = { holding_register = 1 }\nmissing = { holding_register = 5000 }")
    async with running_sources(toml) as (hw, table):
        bad = await wait_sample(table, "missing", lambda s: s.quality is Quality.BAD)
        await wait_sample(table, "ok", lambda s: s.quality is Quality.GOOD)
    assert bad.reason == (f"Modbus device 'plc' (127.0.0.1:{modbus_server.port}) unit 7 answered "
                          "read holding registers (03) at address 5000 with exception 2 "
                          "(illegal data address)")


async def test_device_busy_gives_bad_and_clears_when_the_device_answers(
        modbus_server: ModbusTestServer):
    modbus_server.busy_addresses.add(3)
    toml = _source_toml("modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}',
                        "load = { holding_register = 3 }")
    async with running_sources(toml) as (hw, table):
        bad = await wait_sample(table, "load", lambda s: s.quality is Quality.BAD)
        assert "exception 6 (device busy)" in bad.reason and "address 3" in bad.reason
        modbus_server.busy_addresses.clear()
        await wait_sample(table, "load", lambda s: s.quality is Quality.GOOD)


@pytest.mark.parametrize("kind", ["modbus_rtu", "modbus_tcp"])
async def test_a_dead_unit_goes_stale_without_cutting_off_the_others(
        kind: str, modbus_server: ModbusTestServer, modbus_rtu_server: ModbusTestServer):
    """An RS-485 bus, or a TCP gateway in front of one: unit 2 is dead, unit 1 keeps working."""
    server = modbus_rtu_server if kind == "modbus_rtu" else modbus_server
    where = (f'device = "{server.url}"' if kind == "modbus_rtu"
             else f'host = "127.0.0.1"\nport = {server.port}')
    server.silent_units.add(2)
    await server.set_holding(0, [1])
    toml = _source_toml(kind, where, "alive = { holding_register = 0, unit = 1 }\n"
                                     "dead = { holding_register = 1, unit = 2 }")
    async with running_sources(toml.replace('timeout = "500ms"', 'timeout = "200ms"')) as (hw, table):
        dead = await wait_sample(table, "dead", lambda s: bool(s.reason))
        assert "unit 2" in dead.reason and dead.quality is Quality.INIT  # never read: init
        for value in (2, 3):  # unit 1 keeps delivering fresh values meanwhile
            await server.set_holding(0, [value])
            await wait_sample(table, "alive", lambda s, v=value: s.quality is Quality.GOOD
                              and s.value == v)
        assert table.get("dead").quality is Quality.INIT
    assert hw.connections["plc"].stats.connects == 1  # the link was never dropped


async def test_a_silent_tcp_device_is_dropped_reconnected_and_recovers(
        modbus_server: ModbusTestServer):
    """No RST, no answer (a pulled cable, a hung device): STALE, then a fresh connection."""
    await modbus_server.set_holding(0, [5])
    toml = _source_toml("modbus_tcp", f'host = "127.0.0.1"\nport = {modbus_server.port}',
                        "speed = { holding_register = 0 }")
    (spec,), _ = read_config(toml.replace('timeout = "500ms"', 'timeout = "200ms"'))
    hw = build_hardware([spec], None)
    table = InputTable()
    conn = hw.connections["plc"]
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD)
        modbus_server.silent_units.add(7)
        await wait_sample(table, "speed", lambda s: s.quality is Quality.STALE)
        await wait_until(lambda: conn.stats.failures >= 3 and not conn.connected,
                         what="link dropped after 3 unanswered requests")
        modbus_server.silent_units.clear()
        await modbus_server.set_holding(0, [6])
        await wait_sample(table, "speed", lambda s: s.quality is Quality.GOOD and s.value == 6)
        tg.cancel_scope.cancel()
    await hw.close()
    assert conn.stats.connects >= 2


TOWER_TOML = """
[sources.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll = "50ms"
timeout = "300ms"
reconnect_max = "1s"

[sources.io.inputs]
machine_on = {{ discrete_input = 0 }}

[tower]
profile = "modbus-tcp-digital-io"
source = "io"
refresh = "1h"
retry = "100ms"
on_exit = {{ red = "on" }}

[tower.lamps]
buzzer = {{ holding_register = 20, bit = 3 }}
"""


async def test_tower_coils_are_read_back_from_the_server_and_share_the_source_client(
        modbus_server: ModbusTestServer):
    await modbus_server.set_holding(20, [0x8000])  # a bit the tower does not own
    sources, tower = read_config(TOWER_TOML.format(port=modbus_server.port))
    hw = build_hardware(sources, tower)
    assert hw.stacklight is not None and len(hw.connections) == 1
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        hw.stacklight.show({"green": Pattern.ON, "blue": Pattern.ON, "buzzer": Pattern.ON})
        await wait_until(lambda: hw.stacklight is not None
                         and hw.stacklight.status()["lamps"]["buzzer"]["level"] is True,
                         what="tower written")
        coils = await modbus_server.coils(0, 6)
        holding = await modbus_server.holding(20, 1)
        assert coils == [False, False, True, True, False, False]
        assert holding == [0x8000 | 0b1000]
        await wait_sample(table, "machine_on", lambda s: s.quality is Quality.GOOD)
        tg.cancel_scope.cancel()
    assert await hw.close()
    assert await modbus_server.coils(0, 6) == [True, False, False, False, False, False]
    assert await modbus_server.holding(20, 1) == [0x8000]
    assert hw.connections["io"].stats.connects == 1  # one client for inputs and lamps
    status = hw.status()
    assert status["sources"]["io"]["link"]["connects"] == 1  # type: ignore[index]
    assert status["tower"]["lamps"]["green"]["writes"] >= 1  # type: ignore[index]


async def test_tower_write_failure_is_reported_retried_and_recovers(
        modbus_server: ModbusTestServer):
    sources, tower = read_config(TOWER_TOML.format(port=modbus_server.port))
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    table = InputTable()
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        light.show({"green": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is True)
        await modbus_server.stop()
        light.show({"red": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["red"]["failures"] >= 2,
                         what="failed writes counted and retried")
        red = light.status()["lamps"]["red"]
        assert red["failing"] is True
        assert red["last_error"].startswith("lamp 'red' on io unit 1 coil 0 (manual 1): cannot "
                                            "switch on: Modbus device 'io'")
        assert light.status()["write_failures"] >= 2
        await modbus_server.start()
        await wait_until(lambda: not light.status()["lamps"]["red"]["failing"]
                         and not light.status()["lamps"]["green"]["failing"],
                         what="writes working again")
        assert (await modbus_server.coils(0, 3)) == [True, False, False]
        tg.cancel_scope.cancel()
    await hw.close()


async def test_refresh_corrects_a_remote_io_module_that_lost_its_outputs(
        modbus_server: ModbusTestServer):
    toml = TOWER_TOML.format(port=modbus_server.port).replace('refresh = "1h"',
                                                              'refresh = "200ms"')
    sources, tower = read_config(toml)
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, InputTable())
        light.show({"green": Pattern.ON})
        await wait_until(lambda: light.status()["lamps"]["green"]["level"] is True)
        assert await modbus_server.coils(2, 1) == [True]
        await modbus_server.set_coils(0, [False] * 6)  # the module was power-cycled
        written = light.status()["lamps"]["green"]["writes"]
        await wait_until(lambda: light.status()["lamps"]["green"]["writes"] > written)
        assert await modbus_server.coils(2, 1) == [True]  # rewritten by the refresh
        tg.cancel_scope.cancel()
    await hw.close()
