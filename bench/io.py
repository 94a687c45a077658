"""I/O benchmark: Modbus polling throughput and sim-input-to-lamp latency.

1. Modbus polling against pymodbus's own server running in a separate process on 127.0.0.1:
   100 inputs spread over 4 blocks (25 coils, 25 discrete inputs, 25 holding and 25 input
   registers), polled back to back. Peers measured in the same run: the same 100 inputs
   uncoalesced (one request per input), and pymodbus's bare client reading one block in a loop.
2. Latency from a simulator input change to the tower output write, through the real rules
   (examples/rules.d/machine.toml), the evaluator and the stack-light driver: once with a fixed
   20 ms scan (as the example config) and once with a scan woken by every input change.

3. S7 (python-snap7's server in its own process): 200 WORD addresses of one DB read coalesced
   (one request per poll) and one request each, next to python-snap7's bare AsyncClient reading
   the same 400 bytes in a loop and unpacking them, the two taking turns in 0.25 s slices while
   linelight's input table is read every 20 ms (as the scan loop does); rates and the client's
   CPU time per poll. Twice: with the DB unchanged, and with a server that changes every byte
   of it after every read (both clients see changed data on every read).
   `--s7-breakdown`: only the CPU and wall time of each piece of one poll, and a cProfile.
4. OPC UA (asyncua's server in its own process): 500 variables changing at 10 Hz, delivered
   through linelight's subscription into the input table, and at the same time to asyncua's
   bare client counting the notifications of its own subscription with the same settings.

Usage: python -m bench.io [--quick] [--s7-breakdown]. Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

import anyio

from harness.agent_proc import VIRTUAL_TOWER
from harness.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


# -- the server process --------------------------------------------------------------------------

def _serve(port: int, ready: multiprocessing.synchronize.Event) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        device = SimDevice(id=0, simdata=(
            [SimData(0, count=8, values=0x5555, datatype=DataType.BITS)],
            [SimData(0, count=8, values=0x00FF, datatype=DataType.BITS)],
            [SimData(0, count=200, values=1234, datatype=DataType.REGISTERS)],
            [SimData(0, count=200, values=4321, datatype=DataType.REGISTERS)]))
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


# -- 1. polling ----------------------------------------------------------------------------------

def _inputs_toml(port: int, max_count: int | None) -> str:
    lines = [f'[sources.plc]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}\n'
             'timeout = "2s"\n' + (f"max_count = {max_count}\n" if max_count else ""),
             "[sources.plc.inputs]"]
    lines += [f"c{a} = {{ coil = {a} }}" for a in range(25)]
    lines += [f"d{a} = {{ discrete_input = {a} }}" for a in range(25)]
    lines += [f"h{a} = {{ holding_register = {a} }}" for a in range(25)]
    lines += [f"i{a} = {{ input_register = {a + 100} }}" for a in range(25)]
    return "\n".join(lines)


def _read_config(text: str):  # type: ignore[no-untyped-def]
    from linelight.hw.config import read_sources, read_tower
    from linelight.rules.fields import Problems, Table
    from linelight.rules.tomldoc import TomlDoc

    problems = Problems()
    root = Table.root(TomlDoc.parse(text, "bench.toml"), problems)
    sources = read_sources(root)
    tower = read_tower(root, sources)
    problems.raise_if_any()
    return sources, tower


async def _poll_rate(port: int, seconds: float, max_count: int | None) -> dict[str, float]:
    from linelight.hw.build import build_hardware
    from linelight.hw.inputs import InputTable
    from linelight.hw.modbus import ModbusSource

    sources, _ = _read_config(_inputs_toml(port, max_count))
    hw = build_hardware(sources, None)
    source = hw.source("plc")
    assert isinstance(source, ModbusSource)
    table = InputTable()
    conn = hw.connections["plc"]
    await source.poll_once(table)  # connect and warm up
    requests0, samples0, polls = conn.stats.requests, source.counters.samples, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await source.poll_once(table)
        polls += 1
    elapsed = time.perf_counter() - t0
    hw.connections["plc"].close()
    requests = conn.stats.requests - requests0
    samples = source.counters.samples - samples0
    assert conn.stats.failures == 0, conn.stats.last_error
    return {"blocks": len(source.blocks), "polls_per_s": polls / elapsed,
            "requests_per_s": requests / elapsed, "samples_per_s": samples / elapsed}


async def _bare_pymodbus_rate(port: int, seconds: float) -> float:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rr = await client.read_holding_registers(0, count=25, device_id=1)
        assert not rr.isError()
        n += 1
    elapsed = time.perf_counter() - t0
    client.close()
    return n / elapsed


# -- 2. latency ----------------------------------------------------------------------------------

SIM_TOWER = """
[sources.machine]
type = "sim"
model = "machine"
period = "50ms"

[tower]
refresh = "1h"
""" + VIRTUAL_TOWER


async def _latency(changes: int, scan_period: float | None) -> list[float]:
    """Seconds from `set_mode` on the sim to the green lamp's output write, per change."""
    from linelight.agent.rulefiles import load_rule_files
    from linelight.hw.build import build_hardware
    from linelight.hw.inputs import InputTable
    from linelight.hw.outputs import VirtualOutput
    from linelight.rules.evaluator import Evaluator

    ruleset = load_rule_files([ROOT / "examples" / "rules.d" / "machine.toml"])
    evaluator = Evaluator(ruleset)
    sources, tower = _read_config(SIM_TOWER)
    hw = build_hardware(sources, tower)
    light = hw.stacklight
    assert light is not None
    green = light.outputs["green"]
    assert isinstance(green, VirtualOutput)
    sim = hw.sim()
    table = InputTable()
    latencies: list[float] = []
    rng = random.Random(5)

    def scan() -> None:
        step = evaluator.step(table.snapshot(), time.monotonic())
        light.show(step.lamps)

    async def scan_loop() -> None:
        if scan_period is None:  # woken by every input change
            version = table.version
            while True:
                version = await table.wait_changed(version)
                scan()
        else:
            next_tick = time.monotonic()
            while True:
                scan()
                next_tick += scan_period
                await anyio.sleep(max(0.0, next_tick - time.monotonic()))

    async with anyio.create_task_group() as tg:
        await tg.start(hw.run, table)
        tg.start_soon(scan_loop)
        sim.set_mode("producing")
        # Polling on purpose here and below: the write time is stamped by the output itself,
        # so how soon this loop notices does not enter the figure.
        with anyio.fail_after(10):
            while green.level is not True:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        for i in range(changes):
            want = i % 2 == 1  # fault -> green off; producing -> on
            n = len(green.changes)
            t0 = time.monotonic()
            sim.set_mode("producing" if want else "fault")
            with anyio.fail_after(10):
                while len(green.changes) == n:  # noqa: ASYNC110
                    await anyio.sleep(0.0005)
            t1, level = green.changes[-1]
            assert level is want
            latencies.append(t1 - t0)
            # a random pause so changes land anywhere in the scan period, not in step with it
            await anyio.sleep(rng.uniform(0.0, 0.025))
        tg.cancel_scope.cancel()
    return latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- 3. S7 ---------------------------------------------------------------------------------------

S7_WORDS = 200


def _serve_s7(port: int, ready: multiprocessing.synchronize.Event, changing: bool = False) -> None:
    import snap7
    from snap7.type import SrvArea

    server = snap7.Server(log=False)
    db = bytearray(4 * S7_WORDS)
    server.register_area(SrvArea.DB, 20, db)
    if changing:  # after every read, every byte of the DB changes (two patterns, in turn)
        patterns = [bytes(len(db)), bytes([0x5A]) * len(db)]

        def flip(event: object) -> None:
            patterns.reverse()
            db[:] = patterns[0]

        server.set_read_events_callback(flip)
    server.start_to("127.0.0.1", port)
    ready.set()
    while True:
        time.sleep(3600)


def _serve_s7_changing(port: int, ready: multiprocessing.synchronize.Event) -> None:
    _serve_s7(port, ready, changing=True)


def _s7_toml(port: int, spaced: bool) -> str:
    # spaced: every word 2 bytes apart with max_gap 0, so each address is a request of its own
    step, gap = (4, 0) if spaced else (2, 16)
    lines = [f'[sources.plc]\ntype = "s7"\nhost = "127.0.0.1"\nport = {port}\n'
             f'timeout = "2s"\nmax_gap = {gap}\n', "[sources.plc.inputs]"]
    lines += [f'w{i} = {{ address = "DB20.DBW{i * step}" }}' for i in range(S7_WORDS)]
    return "\n".join(lines)


SLICE = 0.25  # s: linelight and the bare client take turns in slices this long
SCAN = 0.020  # s: how often the table is read meanwhile (the example config's scan period)


async def _s7_source(port: int, spaced: bool):  # type: ignore[no-untyped-def]
    """linelight's S7 source of the 200 words, connected and polled once, with its connection
    and input table."""
    from linelight.hw.build import build_hardware
    from linelight.hw.inputs import InputTable
    from linelight.hw.s7 import S7Source

    sources, _ = _read_config(_s7_toml(port, spaced))
    hw = build_hardware(sources, None)
    source = hw.source("plc")
    assert isinstance(source, S7Source)
    conn = hw.s7_connections["plc"]
    await conn.connect()
    source.blocks = source._plan(conn.pdu)  # what run() does after a connect
    table = InputTable()
    await source.poll_once(table)
    return source, conn, table


async def _s7_rates(port: int, seconds: float, spaced: bool) -> dict[str, float]:
    """linelight's S7 poller (poll_once back to back) and python-snap7's bare AsyncClient
    reading the same 200 words (400 bytes) in one request and unpacking them (the least a
    program using the bare client does with what it reads), taking turns in SLICE-long slices
    for `seconds` each, so both see the same load on the shared machine. A task takes a
    snapshot of linelight's input table every 20 ms meanwhile, as the agent's scan loop does
    (the table makes a block's Samples when it is read). Rates, and the client process's CPU
    time per poll / per read (the server runs in its own process)."""
    import struct

    import snap7


    source, conn, table = await _s7_source(port, spaced)
    bare = snap7.AsyncClient()
    await bare.connect("127.0.0.1", 0, 1, port)
    ours = {"polls": 0, "time": 0.0, "cpu": 0.0}
    theirs = {"polls": 0, "time": 0.0, "cpu": 0.0}
    requests0, samples0 = conn.stats.requests, source.counters.samples

    async def scan() -> None:
        while True:
            table.snapshot()
            await anyio.sleep(SCAN)

    async with anyio.create_task_group() as tg:
        tg.start_soon(scan)
        for _ in range(max(1, round(seconds / SLICE))):
            t0, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < SLICE:
                await source.poll_once(table)
                ours["polls"] += 1
            ours["time"] += time.perf_counter() - t0
            ours["cpu"] += time.process_time() - cpu0
            t0, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < SLICE:
                data = await bare.read_area(snap7.Area.DB, 20, 0, 2 * S7_WORDS)
                assert len(struct.unpack(f">{S7_WORDS}H", data)) == S7_WORDS
                theirs["polls"] += 1
            theirs["time"] += time.perf_counter() - t0
            theirs["cpu"] += time.process_time() - cpu0
        tg.cancel_scope.cancel()
    await conn.close()
    await bare.disconnect()
    assert conn.stats.failures == 0, conn.stats.last_error
    return {"blocks": len(source.blocks),
            "requests_per_s": (conn.stats.requests - requests0) / ours["time"],
            "samples_per_s": (source.counters.samples - samples0) / ours["time"],
            "cpu_us_per_poll": ours["cpu"] / ours["polls"] * 1e6,
            "bare_samples_per_s": theirs["polls"] * S7_WORDS / theirs["time"],
            "bare_cpu_us_per_read": theirs["cpu"] / theirs["polls"] * 1e6}


async def _s7_breakdown(port: int, polls: int) -> list[tuple[str, tuple[float, float]]]:
    """CPU and wall microseconds per call of each piece of one coalesced S7 poll, timed
    apart from each other on the same connection and data: the whole `poll_once`, the bare
    client's `read_area`, linelight's `connection.read` around it, the block's decoding, making
    its Samples and storing them in the input table. Then the whole poll under cProfile (its top
    functions by own time go to stderr)."""
    import cProfile
    import io
    import pstats

    import snap7

    from linelight.rules.values import Quality, Sample

    source, conn, table = await _s7_source(port, False)
    (block, decoder), = source._decoders
    names = decoder.names
    client = conn._client
    data = await conn.read(block)
    copy = bytes(bytearray(data))  # equal bytes, another object: what the next read returns
    values = decoder.values(data)
    equal = decoder.values(copy)  # equal values, another tuple
    changed = tuple(v + 1 for v in values)  # type: ignore[operator]
    samples = {n: Sample(v, Quality.GOOD, 1.0, 1) for n, v in zip(names, values, strict=True)}

    async def timed(call) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(polls):
            await call()
        return ((time.process_time() - cpu0) / polls * 1e6,
                (time.perf_counter() - t0) / polls * 1e6)

    async def bare_read() -> None:
        await client.read_area(snap7.Area.DB, 20, block.start, block.size)

    async def make_samples() -> None:
        now, wall = source._clock(), time.time_ns()
        {name: Sample(value, Quality.GOOD, now, wall)
         for name, value in zip(names, values, strict=True)}

    async def decode() -> None:
        decoder.values(data)

    async def compare() -> None:
        assert copy == data

    async def answered() -> None:
        source._answered(0, names)

    async def store_same() -> None:
        table.update_many(samples)

    async def good_same() -> None:
        table.update_good(names, values, 1.0, 1)

    async def snap() -> None:
        table.update_good(names, values, 1.0, 1)
        table.snapshot()

    async def snap_only() -> None:
        table.snapshot()

    async def good_equal() -> None:
        table.update_good(names, equal, 1.0, 1)
        table.update_good(names, values, 1.0, 1)

    async def good_alternating() -> None:
        table.update_good(names, changed, 1.0, 1)
        table.update_good(names, values, 1.0, 1)

    await timed(lambda: source.poll_once(table))  # warm-up: the first timed loop runs slower
    rows = [("poll_once, whole", await timed(lambda: source.poll_once(table))),
            ("  bare client read_area", await timed(bare_read)),
            ("  connection.read (read_area + lock, deadline)", await timed(lambda: conn.read(block))),
            ("  _answered (freshness of the names)", await timed(answered)),
            ("  bytes == the last decoded bytes", await timed(compare)),
            ("  BlockDecoder.values", await timed(decode)),
            ("  InputTable.update_good, the same tuple", await timed(good_same)),
            ("  InputTable.update_good, equal tuples (2 calls)", await timed(good_equal)),
            ("  InputTable.update_good, all changed (2 calls)", await timed(good_alternating)),
            ("  InputTable.update_good + snapshot (makes Samples)", await timed(snap)),
            ("  InputTable.snapshot, nothing pending", await timed(snap_only)),
            ("  (generic) 200 Sample(...) in a dict", await timed(make_samples)),
            ("  (generic) InputTable.update_many, same values", await timed(store_same))]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(polls):
        await source.poll_once(table)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
    print(out.getvalue(), file=sys.stderr)
    await conn.close()
    return rows


# -- 4. OPC UA -----------------------------------------------------------------------------------

UA_ITEMS = 500
UA_HZ = 10.0


def _serve_opcua(port: int, ready: multiprocessing.synchronize.Event) -> None:
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def main() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        idx = await server.register_namespace("urn:linelight:bench")
        obj = await server.nodes.objects.add_object(idx, "Bench")
        nodes = [await obj.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0)
                 for i in range(UA_ITEMS)]
        async with server:
            ready.set()
            tick = 0
            while True:
                tick += 1
                for node in nodes:
                    await server.write_attribute_value(node.nodeid, ua.DataValue(float(tick)))
                await asyncio.sleep(1 / UA_HZ)

    asyncio.run(main())


def _opcua_toml(port: int) -> str:
    lines = [f'[sources.cell]\ntype = "opcua"\nendpoint = "opc.tcp://127.0.0.1:{port}"\n'
             'publishing_interval = "100ms"\nsampling_interval = "50ms"\ntimeout = "5s"\n',
             "[sources.cell.inputs]"]
    lines += [f'v{i} = {{ node = "ns=2;s=v{i}" }}' for i in range(UA_ITEMS)]
    return "\n".join(lines)


async def _opcua_rates(port: int, seconds: float) -> tuple[float, float]:
    """Notifications/s delivered by linelight's source into the input table and by asyncua's
    bare client (its own session, a subscription with the same intervals) to a handler that
    counts them, both subscribed to the same 500 variables at the same time, counted over the
    same `seconds`: each receives what the server sends, whatever the load."""
    from asyncua import Client, ua

    from linelight.hw.build import build_hardware
    from linelight.hw.inputs import InputTable

    count = 0

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            nonlocal count
            count += 1

    sources, _ = _read_config(_opcua_toml(port))
    hw = build_hardware(sources, None)
    source = hw.source("cell")
    table = InputTable()
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=5)
    await client.connect()
    try:
        sub = await client.create_subscription(100, Handler())
        nodes = [client.get_node(ua.NodeId(f"v{i}", 2)) for i in range(UA_ITEMS)]
        await sub.subscribe_data_change(nodes, sampling_interval=50)
        async with anyio.create_task_group() as tg:
            await tg.start(hw.run, table)
            while source.counters.samples < UA_ITEMS:  # type: ignore[attr-defined]  # noqa: ASYNC110
                await anyio.sleep(0.05)
            await anyio.sleep(1.0)  # past the initial values
            s0, c0, t0 = source.counters.samples, count, time.perf_counter()  # type: ignore[attr-defined]
            await anyio.sleep(seconds)
            elapsed = time.perf_counter() - t0
            ours = (source.counters.samples - s0) / elapsed  # type: ignore[attr-defined]
            theirs = (count - c0) / elapsed
            tg.cancel_scope.cancel()
        await hw.close()
    finally:
        await client.disconnect()
    return float(ours), float(theirs)


async def _in_server_process(serve, measure):  # type: ignore[no-untyped-def]
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=serve, args=(port, ready), daemon=True)
    proc.start()
    try:
        if not await anyio.to_thread.run_sync(ready.wait, 60):
            raise RuntimeError(f"the benchmark's server ({serve.__name__}) did not start")
        return await measure(port)
    finally:
        proc.terminate()
        proc.join(5)


async def _plc_figures(seconds: float) -> dict[str, float]:
    async def s7(port: int) -> tuple[dict[str, float], dict[str, float]]:
        return await _s7_rates(port, seconds, False), await _s7_rates(port, seconds / 2, True)

    coalesced, single = await _in_server_process(_serve_s7, s7)
    changing = await _in_server_process(_serve_s7_changing,
                                        lambda port: _s7_rates(port, seconds, False))
    ua_linelight, ua_bare = await _in_server_process(
        _serve_opcua, lambda port: _opcua_rates(port, seconds))
    bare = coalesced["bare_samples_per_s"]
    return {
        "s7_blocks": coalesced["blocks"],
        "s7_samples_per_s": round(coalesced["samples_per_s"], 1),
        "s7_requests_per_s": round(coalesced["requests_per_s"], 1),
        "s7_uncoalesced_samples_per_s": round(single["samples_per_s"], 1),
        "s7_bare_snap7_samples_per_s": round(bare, 1),
        "ratio_s7_coalesced_vs_uncoalesced": round(coalesced["samples_per_s"]
                                                   / single["samples_per_s"], 2),
        "ratio_s7_linelight_vs_bare_snap7": round(coalesced["samples_per_s"] / bare, 2),
        "s7_cpu_us_per_poll": round(coalesced["cpu_us_per_poll"], 1),
        "s7_bare_snap7_cpu_us_per_read": round(coalesced["bare_cpu_us_per_read"], 1),
        "ratio_s7_cpu_bare_vs_linelight": round(coalesced["bare_cpu_us_per_read"]
                                                / coalesced["cpu_us_per_poll"], 2),
        "s7_changing_samples_per_s": round(changing["samples_per_s"], 1),
        "s7_changing_bare_snap7_samples_per_s": round(changing["bare_samples_per_s"], 1),
        "ratio_s7_changing_linelight_vs_bare_snap7": round(
            changing["samples_per_s"] / changing["bare_samples_per_s"], 2),
        "s7_changing_cpu_us_per_poll": round(changing["cpu_us_per_poll"], 1),
        "s7_changing_bare_snap7_cpu_us_per_read": round(changing["bare_cpu_us_per_read"], 1),
        "opcua_samples_per_s": round(ua_linelight, 1),
        "opcua_bare_asyncua_samples_per_s": round(ua_bare, 1),
        "ratio_opcua_linelight_vs_bare_asyncua": round(ua_linelight / ua_bare, 2),
    }


# -- main ----------------------------------------------------------------------------------------

async def _main(quick: bool) -> dict[str, float]:
    seconds = 1.0 if quick else 3.0
    changes = 60 if quick else 300
    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, ready),
                                                        daemon=True)
    proc.start()
    try:
        if not await anyio.to_thread.run_sync(ready.wait, 30):
            raise RuntimeError("the benchmark's Modbus server did not start")
        coalesced = await _poll_rate(port, seconds, None)
        single = await _poll_rate(port, seconds, 1)
        bare = await _bare_pymodbus_rate(port, seconds)
    finally:
        proc.terminate()
        proc.join(5)
    scan20 = await _latency(changes, 0.020)
    woken = await _latency(changes, None)
    plc = await _plc_figures(seconds)
    return {
        **plc,
        "modbus_blocks": coalesced["blocks"],
        "modbus_requests_per_s": round(coalesced["requests_per_s"], 1),
        "modbus_samples_per_s": round(coalesced["samples_per_s"], 1),
        "modbus_polls_per_s": round(coalesced["polls_per_s"], 1),
        "uncoalesced_requests_per_s": round(single["requests_per_s"], 1),
        "uncoalesced_samples_per_s": round(single["samples_per_s"], 1),
        "bare_pymodbus_requests_per_s": round(bare, 1),
        "ratio_samples_coalesced_vs_uncoalesced": round(
            coalesced["samples_per_s"] / single["samples_per_s"], 2),
        "ratio_requests_linelight_vs_bare_pymodbus": round(coalesced["requests_per_s"] / bare, 2),
        "latency_scan20ms_median_ms": round(statistics.median(scan20) * 1000, 2),
        "latency_scan20ms_p99_ms": round(_pct(scan20, 99) * 1000, 2),
        "latency_on_change_median_ms": round(statistics.median(woken) * 1000, 3),
        "latency_on_change_p99_ms": round(_pct(woken, 99) * 1000, 3),
        "latency_samples": len(scan20),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--s7-breakdown", action="store_true",
                        help="only: CPU time of each piece of one S7 poll, and a profile")
    args = parser.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    if args.s7_breakdown:
        async def breakdown() -> list[tuple[str, tuple[float, float]]]:
            return await _in_server_process(  # type: ignore[no-any-return]
                _serve_s7, lambda port: _s7_breakdown(port, 500 if args.quick else 2000))
        print(f"{'piece of one S7 poll (per call)':52} {'CPU':>8} {'wall':>8}")
        for name, (cpu, wall) in anyio.run(breakdown):
            print(f"{name:52} {cpu:5.1f} us {wall:5.1f} us")
        return 0
    r = anyio.run(_main, args.quick)
    rows = [
        ("Modbus poll, 100 inputs in 4 blocks", f"{r['modbus_requests_per_s']:.0f} req/s",
         f"{r['modbus_samples_per_s']:.0f} samples/s"),
        ("same inputs, one request each", f"{r['uncoalesced_requests_per_s']:.0f} req/s",
         f"{r['uncoalesced_samples_per_s']:.0f} samples/s"),
        ("bare pymodbus client, 1 block loop", f"{r['bare_pymodbus_requests_per_s']:.0f} req/s", ""),
        ("sim -> lamp, 20 ms scan", f"median {r['latency_scan20ms_median_ms']:.1f} ms",
         f"p99 {r['latency_scan20ms_p99_ms']:.1f} ms"),
        ("sim -> lamp, scan on change", f"median {r['latency_on_change_median_ms']:.2f} ms",
         f"p99 {r['latency_on_change_p99_ms']:.2f} ms"),
    ]
    rows += [
        (f"S7, {S7_WORDS} words coalesced", f"{r['s7_requests_per_s']:.0f} req/s",
         f"{r['s7_samples_per_s']:.0f} samples/s"),
        ("S7, one request per address", "", f"{r['s7_uncoalesced_samples_per_s']:.0f} samples/s"),
        ("S7, bare python-snap7 read loop", "", f"{r['s7_bare_snap7_samples_per_s']:.0f} samples/s"),
        ("S7 client CPU per poll / bare per read", f"{r['s7_cpu_us_per_poll']:.0f} us",
         f"{r['s7_bare_snap7_cpu_us_per_read']:.0f} us"),
        ("S7, every byte changed on every read", "",
         f"{r['s7_changing_samples_per_s']:.0f} samples/s"),
        ("S7, same, bare python-snap7 read loop", "",
         f"{r['s7_changing_bare_snap7_samples_per_s']:.0f} samples/s"),
        ("S7 changing: CPU per poll / bare per read", f"{r['s7_changing_cpu_us_per_poll']:.0f} us",
         f"{r['s7_changing_bare_snap7_cpu_us_per_read']:.0f} us"),
        (f"OPC UA, {UA_ITEMS} items at {UA_HZ:g} Hz", "",
         f"{r['opcua_samples_per_s']:.0f} samples/s"),
        ("OPC UA, bare asyncua subscription", "",
         f"{r['opcua_bare_asyncua_samples_per_s']:.0f} samples/s"),
    ]
    print(f"{'measurement':40} {'rate / median':>22} {'per sample / p99':>22}")
    for name, a, b in rows:
        print(f"{name:40} {a:>22} {b:>22}")
    print(f"ratios: coalesced/uncoalesced samples/s = "
          f"{r['ratio_samples_coalesced_vs_uncoalesced']}, linelight/bare pymodbus req/s = "
          f"{r['ratio_requests_linelight_vs_bare_pymodbus']} (machine shared, figures noisy)")
    print(f"ratios: S7 coalesced/one-each = {r['ratio_s7_coalesced_vs_uncoalesced']}, S7 "
          f"linelight/bare snap7 = {r['ratio_s7_linelight_vs_bare_snap7']} (unchanged data), "
          f"{r['ratio_s7_changing_linelight_vs_bare_snap7']} (every byte changing), OPC UA "
          f"linelight/bare asyncua = {r['ratio_opcua_linelight_vs_bare_asyncua']}")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
