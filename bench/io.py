"""I/O benchmark: Modbus polling throughput and sim-input-to-lamp latency.

1. Modbus polling against pymodbus's own server running in a separate process on 127.0.0.1:
   100 inputs spread over 4 blocks (25 coils, 25 discrete inputs, 25 holding and 25 input
   registers), polled back to back. Peers measured in the same run: the same 100 inputs
   uncoalesced (one request per input), and pymodbus's bare client reading one block in a loop.
2. Latency from a simulator input change to the tower output write, through the real rules
   (examples/rules.d/machine.toml), the evaluator and the stack-light driver: once with a fixed
   20 ms scan (as the example config) and once with a scan woken by every input change.

Usage: python -m bench.io [--quick]. Prints a table; the last line is one JSON object.
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


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
[tower.lamps]
red = { virtual = true }
amber = { virtual = true }
green = { virtual = true }
blue = { virtual = true }
buzzer = { virtual = true }
"""


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


# -- main ----------------------------------------------------------------------------------------

async def _main(quick: bool) -> dict[str, float]:
    seconds = 1.0 if quick else 3.0
    changes = 60 if quick else 300
    port = _free_port()
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
    return {
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
    args = parser.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
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
    print(f"{'measurement':40} {'rate / median':>22} {'per sample / p99':>22}")
    for name, a, b in rows:
        print(f"{name:40} {a:>22} {b:>22}")
    print(f"ratios: coalesced/uncoalesced samples/s = "
          f"{r['ratio_samples_coalesced_vs_uncoalesced']}, linelight/bare pymodbus req/s = "
          f"{r['ratio_requests_linelight_vs_bare_pymodbus']} (machine shared, figures noisy)")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
