"""Agent benchmark: input-change-to-tower latency with the broker up, down and while a backlog
drains; steady RSS with a large queue vs the dependencies' import floor; idle CPU; start-up
(process start to the first tower write, empty journal and 1,000,000 queued) and import time.

    python -m bench.agent [--quick] [--period 20ms] [--inflight N] [--machines 1,4,16]
                          [--in-process]
    python -m bench.agent --latch [--quick] [--period 20ms]

`--latch`: only the lamp latency of a latching change (a fault whose `clear_when` needs a
reset), with the lamp hold (the tower command waits for the journal's commit of the latch,
agent/scan.py) and without it (the old order: lamp first, store after), interleaved in one
run of one agent, beside a change that latches nothing (never held) as the control.

`--machines`: one run per count, 500 inputs in total each time. With 1 the agent has no
[machines] table (one unnamed machine, as before); with N > 1, machine m0 carries the
probe's rules and N - 1 machines run the example rules (examples/rules.d/machine.toml) on
their own simulated machine, so their states, lamps and events keep changing meanwhile.

The MQTT inflight window defaults to the agent's shipped default (MqttSettings.inflight), so
the figures describe what an unconfigured agent does; the window used is in the table and JSON.

Prints a table, then one JSON object as the last line. Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

from harness.ports import free_port
from linelight.agent.app import Agent
from linelight.agent.config import load_config
from linelight.agent.demo.broker import LocalBroker, find_mosquitto
from linelight.agent.journal import Event, Journal
from linelight.agent.mqtt.config import MqttSettings
from linelight.rules.fields import parse_duration
from linelight.rules.values import LAMPS

RULES = """\
[inputs]
trigger = { type = "bool" }

[[state]]
name = "on"
code = 10000
priority = 20
when = "trigger"
show = { green = "on" }

[[state]]
name = "off"
code = 40000
priority = 10
when = "not trigger"
show = { amber = "on" }
"""

CONFIG = """\
agent_id = "bench"
data_dir = "data"
rules = ["rules.d/*.toml"]

[scan]
period = "{period}"

[diagnostics]
listen = ["127.0.0.1:{diag}"]

[journal]
max_bytes = "1GiB"
min_free_disk = "16MiB"
{mqtt}
[sources.sim]
type = "sim"
period = "1s"

[sources.sim.inputs]
trigger = {{ wave = "constant", value = false, type = "bool" }}

[tower.lamps]
green = {{ virtual = true }}
amber = {{ virtual = true }}
"""

MQTT = """
[mqtt]
host = "127.0.0.1"
port = {port}
inflight = {inflight}
backoff = {{ initial = "200ms", max = "500ms" }}
{dialect}"""
# `--topic-mode sparkplug`: every run's agent is a Sparkplug B edge node (set by main)
DIALECTS = {"linelight": "", "sparkplug": 'topic_mode = "sparkplug"\n'
                                          'sparkplug = { group_id = "bench" }\n'}
dialect = {"mode": "linelight"}

# The agent's own default window, read from its settings so the benchmark cannot drift from it.
DEFAULT_INFLIGHT = MqttSettings().inflight
TOTAL_INPUTS = 500  # with --machines: every run has this many inputs, however many machines
EXAMPLE_RULES = Path(__file__).resolve().parents[1] / "examples" / "rules.d" / "machine.toml"
EXAMPLE_INPUTS = 6  # the simulator's machine model delivers the six the example rules read

MACHINE = """
[machines.{name}]
rules = ["rules.d/{rules}"]

[machines.{name}.sources.{name}-sim]
type = "sim"
period = "{sim_period}"
{model}
[machines.{name}.sources.{name}-sim.inputs]
{inputs}
[machines.{name}.tower.lamps]
{lamps}
"""

IMPORT_FLOOR = ("import anyio, paho.mqtt.client, msgpack, tenacity, sqlite3, prometheus_client, "
                "pymodbus.client, gpiozero; import time; print('ready', flush=True); "
                "time.sleep(60)")


def write_setup(directory: Path, period: str, broker_port: int | None,
                inflight: int = DEFAULT_INFLIGHT, machines: int = 0) -> tuple[Path, int]:
    """The benchmark's config; `machines` 0: as always (one input), 1: the same with filler
    inputs up to TOTAL_INPUTS, N > 1: N machines (see the module docstring)."""
    (directory / "rules.d").mkdir(parents=True, exist_ok=True)
    (directory / "rules.d" / "bench.toml").write_text(RULES)
    mqtt = (MQTT.format(port=broker_port, inflight=inflight,
                        dialect=DIALECTS[dialect["mode"]]) if broker_port else "")
    path = directory / "agent.toml"
    diag = free_port()
    text = CONFIG.format(period=period, diag=diag, mqtt=mqtt)
    if machines == 1:
        text = text.replace("[tower.lamps]", _filler(0, TOTAL_INPUTS - 1) + "\n[tower.lamps]")
    elif machines > 1:
        (directory / "rules.d" / "machine.toml").write_text(EXAMPLE_RULES.read_text())
        text = text[:text.index("[sources.sim]")] + _machines(machines)
        text = text.replace('rules = ["rules.d/*.toml"]\n', "")
    path.write_text(text)
    return path, diag


def _filler(first: int, n: int) -> str:
    """`n` constant inputs: they cost the snapshot and the input table, never an event."""
    return "".join(f"extra{i} = {{ wave = \"constant\", value = 0 }}\n"
                   for i in range(first, first + n))


def _machines(n: int) -> str:
    extras = TOTAL_INPUTS - 1 - EXAMPLE_INPUTS * (n - 1)
    share = [extras // n + (1 if i < extras % n else 0) for i in range(n)]
    out = []
    for i in range(n):
        probe = i == 0
        lamps = ("green", "amber") if probe else tuple(lamp for lamp in LAMPS if lamp != "white")
        inputs = ('trigger = { wave = "constant", value = false, type = "bool" }\n'
                  if probe else "") + _filler(0, share[i])
        model = ("" if probe else
                 f'model = "machine"\nseed = {i}\nmachine = {{ producing = "3s", '
                 'microstop = "1s", fault = "2s", idle = "1s", cycle = "500ms" }\n')
        out.append(MACHINE.format(
            name=f"m{i}", rules="bench.toml" if probe else "machine.toml",
            sim_period="1s" if probe else "50ms", model=model, inputs=inputs,
            lamps="".join(f"{lamp} = {{ virtual = true }}\n" for lamp in lamps)))
    return "".join(out)


# -- latency ---------------------------------------------------------------------------------

class Probe:
    """Times each input change to the tower command (StackLight.show) and the lamp write."""

    def __init__(self, agent: Agent) -> None:
        assert agent.hardware is not None and agent.hardware.stacklight is not None
        named = bool(agent.hardware.towers)  # several machines: the probe is machine m0
        self.sim = agent.hardware.sim("m0-sim" if named else None)
        self.tower = agent.hardware.towers["m0"] if named else agent.hardware.stacklight
        self.green = self.tower.outputs["green"]
        self.value = False
        self.shown: list[tuple[float, bool]] = []
        original = self.tower.show

        def show(command: Any) -> None:
            lit = command.get("green") is not None and command["green"].value == "on"
            if not self.shown or self.shown[-1][1] != lit:
                self.shown.append((time.monotonic(), lit))
            original(command)

        self.tower.show = show  # type: ignore[method-assign]

    async def sample(self, period: float) -> tuple[float, float]:
        await anyio.sleep(random.uniform(0, period))  # land anywhere in the scan cycle
        self.value = not self.value
        n_shown = len(self.shown)
        changes: list[tuple[float, bool]] = self.green.changes  # type: ignore[attr-defined]
        before = changes[-1] if changes else None  # the list is capped: compare identities
        t0 = time.monotonic()
        self.sim.force("trigger", self.value)
        with anyio.fail_after(10):
            while len(self.shown) == n_shown or not changes or changes[-1] is before:  # noqa: ASYNC110
                await anyio.sleep(0.0005)
        return self.shown[n_shown][0] - t0, changes[-1][0] - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency_runs(period: str, samples: int, backlog: int, workdir: Path,
                       inflight: int, machines: int = 0, in_process: bool = False
                       ) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("bench.agent needs mosquitto (apt install mosquitto)")
    broker = LocalBroker(binary, workdir / "mosquitto")
    broker.start()
    config = load_config(write_setup(workdir / "lat", period, broker.port, inflight,
                                     machines)[0])
    period_s = parse_duration(period)
    results: dict[str, Any] = {}
    agent = Agent(config, handle_signals=False, watch_files=False,
                  forwarder_process=not in_process)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        assert agent.forwarder is not None and agent.journal is not None
        probe = Probe(agent)
        with anyio.fail_after(30):
            while not agent.forwarder.link.connected:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        scan = agent.scan
        assert scan is not None
        skipped = scan.stats.skipped
        results["broker_up"] = [await probe.sample(period_s) for _ in range(samples)]
        results["_skipped_broker_up"] = scan.stats.skipped - skipped

        await anyio.to_thread.run_sync(broker.stop)
        with anyio.fail_after(30):
            while agent.forwarder.link.connected:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        skipped = scan.stats.skipped
        results["broker_down"] = [await probe.sample(period_s) for _ in range(samples)]
        results["_skipped_broker_down"] = scan.stats.skipped - skipped

        # A backlog while the broker is down, then measure while it drains.
        journal = agent.journal
        await fill_backlog(journal, backlog)
        await anyio.to_thread.run_sync(broker.start)
        # Rates count from the reconnect: the wait for the forwarder's next attempt (its
        # backoff grew while the broker was down) is no replay time, and in the shorter
        # sampled stretch it weighed more than in the quiet whole drain it is compared with.
        depth_before = await _reconnected(agent, journal)
        drain: list[tuple[float, float]] = []
        skipped = scan.stats.skipped
        t_start = time.monotonic()
        while journal.stats().depth > 100 and len(drain) < samples * 5:
            drain.append(await probe.sample(period_s))
        sampled_s, sampled = time.monotonic() - t_start, depth_before - journal.stats().depth
        with anyio.fail_after(600):
            while journal.stats().depth > 10:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        drain_s = time.monotonic() - t_start
        results["backlog_drain"] = drain
        results["_skipped_backlog_drain"] = scan.stats.skipped - skipped
        results["_backlog"] = {"events": depth_before, "drain_s": drain_s,
                               "rate_per_s": depth_before / drain_s if drain_s else 0.0,
                               "sampled_rate_per_s": sampled / sampled_s if sampled_s else 0.0}

        # The same backlog again, drained with no input change at all: the replay rate the
        # lamp work is compared with (the scan still ticks, as in any running agent).
        await anyio.to_thread.run_sync(broker.stop)
        with anyio.fail_after(30):
            while agent.forwarder.link.connected:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await fill_backlog(journal, backlog)
        await anyio.to_thread.run_sync(broker.start)
        quiet_events = await _reconnected(agent, journal)
        t_start = time.monotonic()
        with anyio.fail_after(600):
            while journal.stats().depth > 10:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        quiet_s = time.monotonic() - t_start
        results["_backlog"]["no_lamp_work_rate_per_s"] = quiet_events / quiet_s if quiet_s else 0.0
        await agent.stop()
        tg.cancel_scope.cancel()
    broker.stop()
    return results


async def _reconnected(agent: Agent, journal: Journal) -> int:
    """Wait for the forwarder's link to the restarted broker; the queue depth then."""
    assert agent.forwarder is not None
    with anyio.fail_after(120):
        while not agent.forwarder.link.connected:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return journal.stats().depth


async def fill_backlog(journal: Journal, n: int) -> int:
    """Commit `n` filler events (the broker is down); the queue depth then."""
    target = journal.newest_seq + n
    for i in range(n):
        journal.submit(Event("signal", "filler", i, time.time_ns(), {"bench": True}))
        if i % 5000 == 4999:
            with anyio.fail_after(120):
                while journal.stats().pending > 5000:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
    with anyio.fail_after(120):
        while journal.newest_seq < target:  # noqa: ASYNC110 - committed, not just taken
            await anyio.sleep(0.01)
    return journal.stats().depth


# -- memory and CPU --------------------------------------------------------------------------

async def prefill(path: Path, n: int) -> None:
    journal = Journal.open(str(path))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            for i in range(n):
                journal.submit(Event("signal", "filler", i, time.time_ns(), {"bench": True}))
                if i % 10000 == 9999:
                    while journal.stats().pending > 20000:  # noqa: ASYNC110
                        await anyio.sleep(0.005)
            while journal.newest_seq < n:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    finally:
        journal.close()


def rss_mb(pid: int) -> float:
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:") / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes (the interpreter, the
    libraries both processes map) counted by share, so the PSS of several processes adds
    up to what they cost together; their RSS counts the shared pages in each."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024


def _proc_kib(path: str, field: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def child_pids(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").glob("*")
            for child in (task / "children").read_text().split()]


def memory_tree(pid: int) -> dict[str, float]:
    """RSS and PSS of `pid` (the agent) and of its children (its forwarder process)."""
    children = child_pids(pid)
    return {"agent_rss_mb": rss_mb(pid), "agent_pss_mb": pss_mb(pid),
            "children_rss_mb": sum(rss_mb(c) for c in children),
            "children_pss_mb": sum(pss_mb(c) for c in children)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
                if json.loads(r.read()).get("ready"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("agent did not become ready")


def run_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "linelight.agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def import_floor_mb() -> float:
    proc = subprocess.Popen([sys.executable, "-c", IMPORT_FLOOR], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.5)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def memory_and_cpu(period: str, queued: int, settle: float, idle_s: float,
                   workdir: Path, machines: int = 0) -> dict[str, float]:
    # Steady RSS with `queued` events waiting (no broker: nothing drains).
    config, diag = write_setup(workdir / "mem", period, free_port(), machines=machines)
    (workdir / "mem" / "data").mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    anyio.run(prefill, workdir / "mem" / "data" / "journal.db", queued)
    fill_s = time.monotonic() - t
    proc = run_agent(config)
    try:
        wait_ready(diag)
        time.sleep(settle)
        first = memory_tree(proc.pid)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        after = memory_tree(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    split = max(first, after, key=lambda m: m["agent_rss_mb"] + m["children_rss_mb"])
    return {"rss_queued_mb": split["agent_rss_mb"] + split["children_rss_mb"],
            "pss_queued_mb": split["agent_pss_mb"] + split["children_pss_mb"], **split,
            "idle_cpu_percent": idle_cpu, "fill_s": fill_s, "floor_mb": import_floor_mb()}


CONDITIONS = ("broker_up", "broker_down", "backlog_drain")


def verdict(figures: dict[str, Any], period_ms: float) -> dict[str, Any]:
    """Whether every condition's p99 (tower command) is within one scan period.

    Each p99 is compared with the period itself, not the spread of the p99s: three p99s of
    30 ms have no spread and are still a period and a half late."""
    late = [name for name in CONDITIONS if figures[name]["command_p99_ms"] > period_ms]
    return {"within_one_period": not late, "late_conditions": late}


# Runs `linelight run` with the virtual lamp's write timed: prints the monotonic time (one
# clock for every process on Linux) of the first tower write, so start-up counts from exec.
FIRST_WRITE = """\
import sys, time
from linelight.hw import outputs
original = outputs.VirtualOutput.write
async def write(self, value):
    if not getattr(outputs, "_bench_seen", False):
        outputs._bench_seen = True
        print("first-write", time.monotonic(), flush=True)
    await original(self, value)
outputs.VirtualOutput.write = write
from linelight.agent.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def first_write_s(config: Path) -> float:
    """Seconds from process start (before exec) to the agent's first tower write."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", FIRST_WRITE, str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("first-write"):
                return float(line.split()[1]) - t0
        raise SystemExit("the agent ended before its first tower write")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def import_s(module: str = "linelight.agent.app") -> float:
    """Seconds a fresh interpreter takes to import `module` (after its own start)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def start_up(period: str, queued: int, workdir: Path, runs: int) -> dict[str, float]:
    """Median start-up to first tower write, empty journal and `queued` events; import time."""
    empty, _ = write_setup(workdir / "start-empty", period, free_port())
    full, _ = write_setup(workdir / "start-full", period, free_port())
    (workdir / "start-full" / "data").mkdir(parents=True, exist_ok=True)
    anyio.run(prefill, workdir / "start-full" / "data" / "journal.db", queued)
    first_write_s(empty)  # warm the page cache and the bytecode cache like a restart would
    return {"empty_s": statistics.median(first_write_s(empty) for _ in range(runs)),
            "queued_s": statistics.median(first_write_s(full) for _ in range(runs)),
            "import_s": statistics.median(import_s() for _ in range(runs))}


# -- the lamp hold ---------------------------------------------------------------------------

# The latency lane's rules (RULES: `trigger` switches green and amber, never latched) with a
# fault that latches until a reset.
LATCH_RULES = RULES.replace("[inputs]\n", """[inputs]
fault = { type = "bool" }
reset = { type = "bool" }
""") + """
[[state]]
name = "fault"
code = 180000
priority = 90
when = "fault"
clear_when = "reset and not fault"
show = { red = "on" }
"""

LATCH_SIM = """\
[sources.sim]
type = "sim"
period = "1s"

[sources.sim.inputs]
fault = { wave = "constant", value = false, type = "bool" }
reset = { wave = "constant", value = false, type = "bool" }
trigger = { wave = "constant", value = true, type = "bool" }

[tower.lamps]
red = { virtual = true }
green = { virtual = true }
amber = { virtual = true }
"""


class LampWatch:
    """When the tower is commanded to light `lamp` (StackLight.show) and when it is written."""

    def __init__(self, tower: Any, lamp: str) -> None:
        self.output = tower.outputs[lamp]
        self.commands: list[tuple[float, bool]] = []
        original = tower.show

        def show(command: Any) -> None:
            lit = command.get(lamp) is not None and command[lamp].value == "on"
            if not self.commands or self.commands[-1][1] != lit:
                self.commands.append((time.monotonic(), lit))
            original(command)

        tower.show = show

    async def until(self, lit: bool, since: int, before: Any) -> tuple[float, float]:
        """Wait for the command after index `since` and a new write; their times."""
        changes: list[tuple[float, bool]] = self.output.changes
        with anyio.fail_after(10):
            while (len(self.commands) <= since or self.commands[since][1] != lit  # noqa: ASYNC110
                   or not changes or changes[-1] is before):
                await anyio.sleep(0.0002)
        return self.commands[since][0], changes[-1][0]


async def latch_runs(period: str, samples: int, workdir: Path) -> dict[str, Any]:
    """`samples` latching changes with the hold and as many without, interleaved, plus
    `samples` changes that latch nothing; each (command, write) latency in seconds."""
    directory = workdir / "latch"
    (directory / "rules.d").mkdir(parents=True, exist_ok=True)
    (directory / "rules.d" / "bench.toml").write_text(LATCH_RULES)
    text = CONFIG.format(period=period, diag=free_port(), mqtt="")
    text = text[:text.index("[sources.sim]")] + LATCH_SIM
    (directory / "agent.toml").write_text(text)
    config = load_config(directory / "agent.toml")
    period_s = parse_duration(period)
    agent = Agent(config, handle_signals=False, watch_files=False)
    out: dict[str, Any] = {"held": [], "old_order": [], "no_latch": []}
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        assert agent.hardware is not None and agent.scan is not None
        sim, scan = agent.hardware.sim(None), agent.scan
        red = LampWatch(agent.hardware.stacklight, "red")
        green = LampWatch(agent.hardware.stacklight, "green")

        async def change(watch: LampWatch, name: str, value: bool, lit: bool
                         ) -> tuple[float, float]:
            await anyio.sleep(random.uniform(0, period_s))  # anywhere in the scan cycle
            since, writes = len(watch.commands), watch.output.changes
            before = writes[-1] if writes else None
            t0 = time.monotonic()
            sim.force(name, value)
            command, write = await watch.until(lit, since, before)
            return command - t0, write - t0

        await anyio.sleep(0.5)  # the first scans decided the state
        for i in range(2 * samples):
            hold = i % 2 == 0
            scan.hold_lamps = hold
            out["held" if hold else "old_order"].append(await change(red, "fault", True, True))
            sim.force("fault", False)
            await change(red, "reset", True, False)  # a release: never held
            sim.force("reset", False)
            await anyio.sleep(2 * period_s)  # the release is stored before the next latch
            if hold:
                out["no_latch"].append(await change(green, "trigger", False, False))
                sim.force("trigger", True)
                await anyio.sleep(2 * period_s)
        out["_stats"] = scan.status()
        await agent.stop()
        tg.cancel_scope.cancel()
    return out


def latch_main(args: argparse.Namespace) -> None:
    samples = 40 if args.quick else 300
    period_s = parse_duration(args.period)
    workdir = Path(tempfile.mkdtemp(prefix="linelight-bench-"))
    try:
        runs = anyio.run(latch_runs, args.period, samples, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures: dict[str, Any] = {"bench": "agent.latch", "scan_period_ms": period_s * 1000,
                               "samples": samples}
    print(f"scan period {period_s * 1000:g} ms, scan on change; latency from the input change "
          "to the tower command (and to the virtual lamp's write), in one run")
    print(f"{'change':<34}{'n':>5}{'cmd median':>12}{'cmd p99':>10}{'lamp median':>13}"
          f"{'lamp p99':>10}")
    labels = {"held": "latch, lamp waits for the commit", "old_order": "latch, old order (no wait)",
              "no_latch": "no latch (never waits)"}
    for name, label in labels.items():
        cmd = [c * 1000 for c, _ in runs[name]]
        lamp = [w * 1000 for _, w in runs[name]]
        figures[name] = {"samples": len(cmd), "command_median_ms": statistics.median(cmd),
                         "command_p99_ms": pct(cmd, 0.99),
                         "lamp_median_ms": statistics.median(lamp), "lamp_p99_ms": pct(lamp, 0.99)}
        f = figures[name]
        print(f"{label:<34}{len(cmd):>5}{f['command_median_ms']:>10.2f}ms"
              f"{f['command_p99_ms']:>8.2f}ms{f['lamp_median_ms']:>11.2f}ms{f['lamp_p99_ms']:>8.2f}ms")
    stats = runs["_stats"]
    figures["added_median_ms"] = (figures["held"]["command_median_ms"]
                                  - figures["old_order"]["command_median_ms"])
    figures.update({k: stats[k] for k in ("lamp_holds", "lamp_hold_timeouts",
                                          "lamp_hold_refused", "lamp_hold_max_s")})
    print(f"the hold adds {figures['added_median_ms']:.2f} ms (median) to a latching change; "
          f"holds {stats['lamp_holds']}, timed out {stats['lamp_hold_timeouts']}, refused "
          f"{stats['lamp_hold_refused']}, longest {stats['lamp_hold_max_s'] * 1000:.2f} ms")
    print(json.dumps(figures, separators=(",", ":")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller queues")
    parser.add_argument("--period", default="20ms", help="scan period (default 20ms)")
    parser.add_argument("--inflight", type=int, default=DEFAULT_INFLIGHT,
                        help="[mqtt] inflight window during the runs (default "
                             f"{DEFAULT_INFLIGHT}, the agent's shipped default)")
    parser.add_argument("--machines", default="",
                        help="comma-separated machine counts, one run each with "
                             f"{TOTAL_INPUTS} inputs in total (e.g. 1,4,16); default: the "
                             "one-input agent")
    parser.add_argument("--topic-mode", choices=sorted(DIALECTS), default="linelight",
                        help="the agent's [mqtt] topic_mode in every run (default linelight)")
    parser.add_argument("--in-process", action="store_true",
                        help="the forwarder in the agent's event loop (as before agent/uplink) "
                             "instead of its own process")
    parser.add_argument("--latch", action="store_true",
                        help="only the lamp latency of a latching change, with the lamp hold "
                             "and in the old order (no wait), in one run")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    dialect["mode"] = args.topic_mode
    if args.latch:
        latch_main(args)
        return
    counts = [int(n) for n in args.machines.split(",") if n.strip()] or [0]
    results = [measure(args, n) for n in counts]
    if len(results) > 1:
        print(f"{'machines':>8}{'inputs':>8}{'up p99':>9}{'down p99':>10}{'drain p99':>11}"
              f"{'drain p99 / period':>20}{'RSS MB':>8}{'idle CPU':>10}")
        for n, f in zip(counts, results, strict=True):
            print(f"{n:>8}{TOTAL_INPUTS:>8}{f['broker_up']['command_p99_ms']:>7.2f}ms"
                  f"{f['broker_down']['command_p99_ms']:>8.2f}ms"
                  f"{f['backlog_drain']['command_p99_ms']:>9.2f}ms"
                  f"{f['backlog_drain']['command_p99_ms'] / f['scan_period_ms']:>20.2f}"
                  f"{f['rss_queued_mb']:>8.1f}{f['idle_cpu_percent']:>9.2f}%")
        print(json.dumps({"bench": "agent", "runs": results}, separators=(",", ":")))
    else:
        print(json.dumps(results[0], separators=(",", ":")))


def measure(args: argparse.Namespace, machines: int) -> dict[str, Any]:
    """One latency + memory run; prints its table and returns its figures."""
    samples = 60 if args.quick else 500  # issue 16: at least 500 per condition
    backlog = 20_000 if args.quick else 1_000_000
    queued = 100_000 if args.quick else 1_000_000
    period_s = parse_duration(args.period)
    workdir = Path(tempfile.mkdtemp(prefix="linelight-bench-"))
    try:
        lat = anyio.run(latency_runs, args.period, samples, backlog, workdir, args.inflight,
                        machines, args.in_process)
        mem = memory_and_cpu(args.period, queued, 5.0 if args.quick else 10.0,
                             5.0 if args.quick else 10.0, workdir, machines)
        start = start_up(args.period, 1_000_000, workdir, 3 if args.quick else 5)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    figures: dict[str, Any] = {"machines": machines, "scan_period_ms": period_s * 1000,
                               "inflight": args.inflight,
                               "forwarder": "in-process" if args.in_process else "process",
                               "topic_mode": args.topic_mode,
                               "inflight_is_default": args.inflight == DEFAULT_INFLIGHT}
    for name in CONDITIONS:
        cmd = [c * 1000 for c, _ in lat[name]]
        lamp = [w * 1000 for _, w in lat[name]]
        figures[name] = {"samples": len(cmd), "ticks_late": lat[f"_skipped_{name}"],
                         "command_median_ms": statistics.median(cmd),
                         "command_p99_ms": pct(cmd, 0.99), "lamp_median_ms": statistics.median(lamp),
                         "lamp_p99_ms": pct(lamp, 0.99)}
        rows.append((name, len(cmd), statistics.median(cmd), pct(cmd, 0.99),
                     statistics.median(lamp), pct(lamp, 0.99)))
    medians = [figures[n]["command_median_ms"] for n in CONDITIONS]
    p99s = [figures[n]["command_p99_ms"] for n in CONDITIONS]
    figures["median_spread_ms"] = max(medians) - min(medians)
    figures["p99_spread_ms"] = max(p99s) - min(p99s)
    figures.update(verdict(figures, period_s * 1000))
    figures["backlog"] = lat["_backlog"]
    figures["queued_events"] = queued
    figures["rss_queued_mb"] = mem["rss_queued_mb"]
    figures["pss_queued_mb"] = mem["pss_queued_mb"]
    figures |= {key: mem[key] for key in ("agent_rss_mb", "agent_pss_mb", "children_rss_mb",
                                          "children_pss_mb")}
    figures["rss_import_floor_mb"] = mem["floor_mb"]
    figures["rss_ratio_vs_floor"] = mem["rss_queued_mb"] / mem["floor_mb"]
    figures["idle_cpu_percent"] = mem["idle_cpu_percent"]
    figures["prefill_events_per_s"] = queued / mem["fill_s"]
    figures["start_to_first_write_s"] = start["empty_s"]
    figures["start_to_first_write_1m_queued_s"] = start["queued_s"]
    figures["import_app_s"] = start["import_s"]

    window = ("the shipped default" if args.inflight == DEFAULT_INFLIGHT
              else f"shipped default {DEFAULT_INFLIGHT}")
    if machines:
        print(f"{machines} machine{'s' if machines > 1 else ''}, {TOTAL_INPUTS} inputs in total")
    print(f"scan period {period_s * 1000:g} ms; MQTT inflight window {args.inflight} ({window}); "
          f"forwarder {figures['forwarder']}; "
          "latency from input change to tower command (and to the virtual lamp's write)")
    print(f"{'condition':<15}{'n':>6}{'cmd median':>12}{'cmd p99':>10}{'lamp median':>13}"
          f"{'lamp p99':>10}{'ticks late':>12}")
    for name, n, med, p99, lmed, lp99 in rows:
        print(f"{name:<15}{n:>6}{med:>10.2f}ms{p99:>8.2f}ms{lmed:>11.2f}ms{lp99:>8.2f}ms"
              f"{figures[name]['ticks_late']:>12}")
    b = figures["backlog"]
    b["sampled_vs_no_lamp_work"] = (b["sampled_rate_per_s"] / b["no_lamp_work_rate_per_s"]
                                    if b["no_lamp_work_rate_per_s"] else 0.0)
    print(f"backlog        {b['events']} events drained in {b['drain_s']:.1f} s "
          f"({b['rate_per_s']:.0f}/s); {b['sampled_rate_per_s']:.0f}/s while sampling, "
          f"{b['no_lamp_work_rate_per_s']:.0f}/s with no input changes (same backlog again): "
          f"ratio {b['sampled_vs_no_lamp_work']:.2f}")
    late = ", ".join(figures["late_conditions"]) or "none"
    print(f"spread         median {figures['median_spread_ms']:.2f} ms, p99 "
          f"{figures['p99_spread_ms']:.2f} ms")
    print(f"verdict        every p99 {'within' if figures['within_one_period'] else 'NOT within'}"
          f" one period ({period_s * 1000:g} ms); p99 above it: {late}")
    print(f"memory         RSS {mem['rss_queued_mb']:.1f} MB (agent and forwarder process) with "
          f"{queued} events queued; "
          f"import floor {mem['floor_mb']:.1f} MB; ratio {figures['rss_ratio_vs_floor']:.2f}")
    print(f"               RSS agent {mem['agent_rss_mb']:.1f} + forwarder "
          f"{mem['children_rss_mb']:.1f} MB; PSS (shared pages counted once) "
          f"{mem['pss_queued_mb']:.1f} MB: agent {mem['agent_pss_mb']:.1f} + forwarder "
          f"{mem['children_pss_mb']:.1f} MB")
    print(f"idle CPU       {mem['idle_cpu_percent']:.2f} % of one core (scan every "
          f"{period_s * 1000:g} ms, no input changes, no broker)")
    print(f"start-up       exec to first tower write {start['empty_s']:.3f} s (empty journal), "
          f"{start['queued_s']:.3f} s (1,000,000 queued); import linelight.agent.app "
          f"{start['import_s']:.3f} s (medians)")
    return figures


if __name__ == "__main__":
    main()
