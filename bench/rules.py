"""Rule evaluation speed: per-scan time for a large rule set, and its load + validate time;
whole scan ticks with 1, 4 and 16 machines of the example rules.

500 inputs, 100 states, 50 signals, 50 counters (target: <= 1 ms per scan, median).
Machines: the scan loop's tick (snapshot, every machine's rules, towers, events) with N machines
of examples/rules.d/machine.toml sharing 500 inputs in total (each machine its 6 inputs plus
its share of the rest); the time per machine should stay flat (linear growth). The
rolling-window lane adds 50 signals over 10-minute windows (25 `count_of`, 25 `increase`) to
the same set and steps it beside the plain set on the same snapshots for 10 minutes of 20 ms
scans, so the windows are full: it prints both medians, their ratio and the memory held.
Reload stall: a running agent reloads a 162 KiB rule file, then a second one, while a probe
measures how late the event loop wakes: without agent.heap (the collector as Python sets it),
with it, and with it and the reload's shorter GIL switch interval, rounds alternating in the
same run.
Run: .venv/bin/python -m bench.rules [--quick]. Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from linelight.agent.clock import ClockWatch
from linelight.agent.rulefiles import load_rule_files
from linelight.agent.scan import MachineLane, ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from linelight.rules.testing import load_test_text, run_file
from linelight.rules.values import Quality, Sample
from linelight.rules.windows import MAX_ENTRIES, Window

PRESS = Path(__file__).resolve().parents[1] / "examples" / "rules"
MACHINE_RULES = PRESS.parent / "rules.d" / "machine.toml"
MACHINE_COUNTS = (1, 4, 16)

N_INPUTS, N_STATES, N_SIGNALS, N_COUNTERS = 500, 100, 50, 50
N_WINDOWS, WINDOW, SCAN = 50, "10m", 0.02
TARGET_MEDIAN_US = 1000.0
ROUNDS = 5  # reload-stall rounds per side


def rule_text(rng: random.Random, scale: int = 1) -> str:
    """The bench's rule set; `scale` multiplies every count (a big file for the reload bench)."""
    n_inputs, n_states = N_INPUTS * scale, N_STATES * scale
    n_signals, n_counters = N_SIGNALS * scale, N_COUNTERS * scale
    lines = ["[inputs]"]
    kinds = {}
    for i in range(n_inputs):
        kind = "bool" if i % 10 < 6 else ("int" if i % 10 < 9 else "float")
        kinds[f"in{i}"] = kind
        extra = ""
        if i % 7 == 0:
            extra += ', debounce = "20ms"'
        if i % 3 == 0:
            extra += ', stale_after = "2s"'
        if kind == "int" and i % 4 == 0:
            extra += ", scale = 0.1"
        if kind == "bool" and i % 11 == 0:
            extra += ', on_stale = "hold:1s"'
        lines.append(f'in{i} = {{ type = "{kind}"{extra} }}')
    bools = [n for n, k in kinds.items() if k == "bool"]
    nums = [n for n, k in kinds.items() if k != "bool"]

    def condition() -> str:
        parts = []
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.6:
                parts.append(("not " if rng.random() < 0.3 else "") + rng.choice(bools))
            else:
                parts.append(f"{rng.choice(nums)} {rng.choice(['>', '<', '!=', '=='])} "
                             f"{rng.randint(0, 50)}")
        out = parts[0]
        for p in parts[1:]:
            out += f" {rng.choice(['and', 'or'])} {p}"
        return out

    lamps = ["red", "amber", "green", "blue", "white"]
    for i in range(n_states):
        lines += ["[[state]]", f'name = "state{i}"', f"code = {10000 + i}",
                  f"priority = {1000 * scale - i * 5}",
                  f'when = "{condition() if i < n_states - 1 else "true"}"',
                  f'show = {{ {lamps[i % 5]} = "on" }}']
        if i % 4 == 0:
            lines.append('on_delay = "500ms"')
        if i % 5 == 0:
            lines.append('off_delay = "1s"')
    for i in range(n_signals):
        lines += ["[[signal]]", f'name = "signal{i}"', f"priority = {1000 * scale - i * 5 - 2}",
                  f'when = "{condition()}"', f'show = {{ {lamps[i % 5]} = "blink_slow" }}']
        if i % 3 == 0:
            lines.append(f'clear_when = "{condition()}"')
    for i in range(n_counters):
        lines += ["[[counter]]", f'name = "count{i}"', f'rising = "{rng.choice(bools)}"']
    return "\n".join(lines) + "\n"


def window_text(rng: random.Random, bools: list[str]) -> str:
    """50 signals over 10-minute rolling windows, half on input edges, half on counters."""
    lines = []
    for i in range(N_WINDOWS):
        call = (f"count_of({rng.choice(bools)}, {WINDOW}) >= {rng.randint(50, 2000)}"
                if i % 2 == 0 else f"increase(count{i}, {WINDOW}) > {rng.randint(50, 2000)}")
        lines += ["[[signal]]", f'name = "window{i}"', f"priority = {2000 + i}",
                  f'when = "{call}"']
    return "\n".join(lines) + "\n"


def window_bytes(ev: Evaluator) -> tuple[int, int]:
    """(entries, bytes) the evaluator's rolling windows hold: deques, entries, numbers."""
    entries = total = 0
    for value in ev._v:  # noqa: SLF001 - the bench looks at the slots to weigh the windows
        if isinstance(value, Window):
            held = value._entries  # noqa: SLF001
            entries += len(held)
            total += sys.getsizeof(value) + sys.getsizeof(held)
            total += sum(sys.getsizeof(e) + sys.getsizeof(e[0]) + sys.getsizeof(e[1])
                         for e in held)
    return entries, total


def window_lane(text: str, scans: int, rng: random.Random) -> dict[str, float]:
    """Step the plain set and the set with windows on the same snapshots."""
    bools = [line.split(" ")[0] for line in text.splitlines() if '"bool"' in line]
    plain = Evaluator(load_rules([("bench.toml", text)]))
    windowed = Evaluator(load_rules([("bench.toml", text + window_text(rng, bools))]))
    names = list(plain.ruleset.inputs)
    table = {n: Sample(rng.random() < 0.5 if plain.ruleset.inputs[n].type == "bool"
                       else rng.randint(0, 50), Quality.GOOD, 0.0) for n in names}
    base_us: list[float] = []
    win_us: list[float] = []
    for k in range(scans):
        now = k * SCAN
        for n in rng.sample(names, 50):
            spec = plain.ruleset.inputs[n]
            table[n] = Sample(rng.random() < 0.5 if spec.type == "bool" else rng.randint(0, 50),
                              Quality.GOOD, now)
        snapshot = dict(table)
        for ev, out in ((plain, base_us), (windowed, win_us)):
            t0 = time.perf_counter_ns()
            ev.step(snapshot, now)
            out.append((time.perf_counter_ns() - t0) / 1000)
    entries, held = window_bytes(windowed)
    return {"scans": scans, "plain_median_us": statistics.median(base_us),
            "windows_median_us": statistics.median(win_us),
            "plain_p99_us": percentile(base_us, 0.99), "windows_p99_us": percentile(win_us, 0.99),
            "window_entries": entries, "window_bytes": held}


def reload_stall(text: str, bigs: tuple[str, str], seconds: float, *,
                 freeze: bool) -> dict[str, float]:
    """How long the event loop (which the scan loop shares) is held while the agent reloads
    `bigs[0]` in place of `text`, then `bigs[1]` (a second reload: the first one's rules are
    not frozen), against the same agent idling for `seconds` first (baseline): a probe
    sleeps 1 ms at a time and records how late each wake-up is. `freeze`: the agent
    as shipped (agent.heap); False: the collector as Python sets it, as before agent.heap.
    Also the longest garbage collection during the reload (gc.callbacks, the collecting
    thread's CPU time)."""
    import gc
    import tempfile

    import anyio

    from linelight.agent.app import Agent
    from linelight.agent.config import load_config

    collections: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # CPU time: no preemption counted
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collections.append((time.thread_time() - started[0]) * 1000)

    async def probe(late: list[float], stop: anyio.Event) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await anyio.sleep(0.001)
            late.append((time.perf_counter() - t0 - 0.001) * 1000)

    async def measure() -> dict[str, float]:
        gc.collect()  # each round from the same heap: the live objects, no earlier round's
        with tempfile.TemporaryDirectory(prefix="linelight-bench-") as tmp:
            root = Path(tmp)
            (root / "rules.d").mkdir()
            rules = root / "rules.d" / "bench.toml"
            rules.write_text(text)
            (root / "agent.toml").write_text('agent_id = "bench"\ndata_dir = "data"\n'
                                             '[diagnostics]\nenabled = false\n')
            agent = Agent(load_config(root / "agent.toml"), handle_signals=False,
                          watch_files=False, freeze_heap=freeze)
            async with anyio.create_task_group() as tg:
                await tg.start(agent.run)
                idle: list[float] = []
                stop = anyio.Event()
                tg.start_soon(probe, idle, stop)
                await anyio.sleep(seconds)
                stop.set()
                out = {"idle_p99_ms": percentile(idle, 0.99), "idle_max_ms": max(idle),
                       "big_kib": len(bigs[0]) / 1024}
                for n, big in enumerate(bigs, 1):
                    rules.write_text(big)
                    during: list[float] = []
                    collections.clear()
                    stop = anyio.Event()
                    tg.start_soon(probe, during, stop)
                    t0 = time.perf_counter()
                    assert agent.reloader is not None and agent.scan is not None
                    skipped = agent.scan.stats.skipped
                    gc.callbacks.append(on_gc)
                    try:
                        result = await agent.reloader.reload("bench")
                    finally:
                        gc.callbacks.remove(on_gc)
                    took = time.perf_counter() - t0
                    stop.set()
                    await anyio.sleep(0.01)  # the probe's last wake-up
                    assert result.ok and result.changed, result.describe()
                    out |= {f"reload{n}_p99_ms": percentile(during, 0.99),
                            f"reload{n}_max_ms": max(during),
                            f"gc{n}_max_ms": max(collections, default=0.0),
                            f"reload{n}_s": took,
                            # scan periods the loop skipped to catch up (20 ms each)
                            f"reload{n}_skipped": agent.scan.stats.skipped - skipped}
                await agent.stop()
        return out

    return anyio.run(measure)  # the agent thaws its heap when it stops


def reload_rounds(text: str, bigs: tuple[str, str], seconds: float,
                  rounds: int) -> dict[str, dict[str, float]]:
    """`reload_stall` on three sides, alternating, `rounds` each: `before` (the collector as
    Python sets it, the GIL switch interval as it is), `heap` (agent.heap, the interval as
    it is) and `shipped` (agent.heap and the Reloader's shorter switch interval). Per side
    the median of the rounds' figures, and as `best_KEY` the lowest (this machine is shared:
    a round in which another process took the CPU shows a stall that is not the agent's)."""
    from linelight.agent import reload

    shipped = reload.RELOAD_SWITCH_INTERVAL
    runs: dict[str, list[dict[str, float]]] = {"before": [], "heap": [], "shipped": []}
    try:
        for _ in range(rounds):
            for side in runs:
                reload.RELOAD_SWITCH_INTERVAL = shipped if side == "shipped" else None
                runs[side].append(reload_stall(text, bigs, seconds, freeze=side != "before"))
    finally:
        reload.RELOAD_SWITCH_INTERVAL = shipped
    return {side: {**{key: statistics.median(r[key] for r in results) for key in results[0]},
                   **{f"best_{key}": min(r[key] for r in results) for key in results[0]}}
            for side, results in runs.items()}


def tracked_objects(text: str) -> tuple[int, float]:
    """The objects Python's collector tracks that `text`'s rule set and evaluator keep alive
    (each is one more for a collection to scan after a reload, agent/heap.py), and the CPU
    time of one full collection of them alone (the median of 5)."""
    import gc

    gc.collect()
    gc.freeze()  # what lives now is not counted, and no collection scans it
    try:
        gc.disable()
        try:
            kept = (Evaluator(load_rules([("bench.toml", text)])),)
            gc.collect()
            count = len(gc.get_objects())
            took = []
            for _ in range(5):
                t0 = time.process_time()
                gc.collect()
                took.append((time.process_time() - t0) * 1000)
            del kept
        finally:
            gc.enable()
    finally:
        gc.unfreeze()
    return count, statistics.median(took)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rule_test_suite_ms() -> tuple[int, int, float]:
    """(cases, scans, ms) for 100 rule-test cases: the press example's cases, repeated."""
    text = (PRESS / "tests" / "press_test.toml").read_text()
    head, _, body = text.partition("[[test]]")
    copies = [("[[test]]" + body).replace('name = "', f'name = "{i}: ') for i in range(10)]
    ruleset = load_rule_files([PRESS / "press.toml"])
    suite = load_test_text("bench_test.toml", head + "".join(copies), lambda files: ruleset)
    t0 = time.perf_counter()
    results = run_file(suite)
    ms = (time.perf_counter() - t0) * 1000
    assert all(r.passed for r in results)
    return len(results), sum(r.scans for r in results), ms


class _NullSink:
    def __init__(self) -> None:
        self.events = 0

    def submit(self, event: object) -> None:
        self.events += 1


def machines_scan(n_machines: int, ticks: int, rng: random.Random) -> dict[str, float]:
    """Scan ticks with `n_machines` machines of the example rules, 500 inputs in total:
    each tick 10 % of the inputs change, every machine's rules run and its tower is shown."""
    ruleset = load_rule_files([MACHINE_RULES])
    rule_inputs = list(ruleset.inputs)
    extra = (N_INPUTS - n_machines * len(rule_inputs)) // n_machines  # unread inputs
    clock_now = [0.0]
    clock = ClockWatch(monotonic=lambda: clock_now[0], synchronized=lambda: True)
    table = InputTable()
    lanes: list[MachineLane] = []
    keys: list[str] = []
    for m in range(n_machines):
        name = f"m{m}"
        own = [*rule_inputs, *(f"extra{i}" for i in range(extra))]
        tower = StackLight({lamp: VirtualOutput(lamp) for lamp in ("red", "amber", "green",
                                                                  "blue", "buzzer")})
        lanes.append(MachineLane(Evaluator(ruleset), tower, name=name, label=name,
                                 inputs={i: f"{name}/{i}" for i in own}))
        keys += [f"{name}/{i}" for i in own]
    sink = _NullSink()
    scan = ScanLoop(inputs=table, sink=sink, clock=clock, period=0.02,  # type: ignore[arg-type]
                    machines=lanes, monotonic=lambda: clock_now[0])

    def value(key: str) -> object:
        leaf = key.rsplit("/", 1)[1]
        if leaf in ("fault_code",):
            return 0 if rng.random() < 0.9 else 17
        if leaf == "spindle_rpm" or leaf.startswith("extra"):
            return float(rng.randint(2900, 3200))
        return rng.random() < 0.5

    for key in keys:
        table.update(key, Sample(value(key), Quality.GOOD, 0.0))  # type: ignore[arg-type]
    times = []
    for k in range(ticks):
        clock_now[0] = k * 0.02
        for key in rng.sample(keys, len(keys) // 10):
            table.update(key, Sample(value(key), Quality.GOOD, clock_now[0]))  # type: ignore[arg-type]
        t0 = time.perf_counter_ns()
        scan.tick()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return {"machines": n_machines, "inputs": len(keys), "rules": n_machines * (
        len(ruleset.states) + len(ruleset.signals) + len(ruleset.counters)),
        "tick_median_us": statistics.median(times), "tick_p99_us": percentile(times, 0.99),
        "events_per_tick": sink.events / ticks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer scans")
    parser.add_argument("--scans", type=int, default=5000)
    parser.add_argument("--window-scans", type=int, default=30_000,
                        help="scans of the rolling-window lane (default: 10 minutes of 20 ms)")
    args = parser.parse_args()
    scans = 1000 if args.quick else args.scans
    window_scans = 3000 if args.quick else args.window_scans
    rng = random.Random(7)
    text = rule_text(rng)

    loads = []
    for _ in range(3 if args.quick else 7):
        t0 = time.perf_counter()
        ruleset = load_rules([("bench.toml", text)])
        loads.append(time.perf_counter() - t0)

    ev = Evaluator(ruleset)
    names = list(ruleset.inputs)
    values = {n: (rng.random() < 0.5 if ruleset.inputs[n].type == "bool" else rng.randint(0, 50))
              for n in names}
    table = {n: Sample(v, Quality.GOOD, 0.0) for n, v in values.items()}
    times = []
    events = 0
    for k in range(scans):
        now = k * 0.02
        for n in rng.sample(names, 50):  # 10 % of the inputs change per scan
            spec = ruleset.inputs[n]
            v = rng.random() < 0.5 if spec.type == "bool" else rng.randint(0, 50)
            q = Quality.BAD if rng.random() < 0.01 else Quality.GOOD
            table[n] = Sample(v, q, now)
        snapshot = dict(table)
        t0 = time.perf_counter_ns()
        step = ev.step(snapshot, now)
        times.append((time.perf_counter_ns() - t0) / 1000)
        events += len(step.events)
    median = statistics.median(times)
    p99 = percentile(times, 0.99)
    load_ms = statistics.median(loads) * 1000
    cases, case_scans, suite_ms = rule_test_suite_ms()
    machine_runs = [machines_scan(n, scans, random.Random(11)) for n in MACHINE_COUNTS]
    one = machine_runs[0]["tick_median_us"]
    lane = window_lane(text, window_scans, random.Random(11))
    ratio = lane["windows_median_us"] / lane["plain_median_us"]
    bigs = (rule_text(random.Random(8), scale=4), rule_text(random.Random(9), scale=4))
    stalls = reload_rounds(text, bigs, 1.0 if args.quick else 3.0, ROUNDS)
    heaps = [(len(t) / 1024, *tracked_objects(t))
             for t in (text, bigs[0], rule_text(random.Random(8), scale=8))]

    print(f"rules: {N_INPUTS} inputs, {N_STATES} states, {N_SIGNALS} signals, "
          f"{N_COUNTERS} counters; {scans} scans, 10 % of inputs change per scan")
    print(f"{'figure':<28}{'value':>12}")
    print(f"{'scan median':<28}{median:>10.1f} us")
    print(f"{'scan p99':<28}{p99:>10.1f} us")
    print(f"{'scan max':<28}{max(times):>10.1f} us")
    print(f"{'load + validate (median)':<28}{load_ms:>10.1f} ms")
    print(f"{'rule text':<28}{len(text) / 1024:>10.1f} KiB")
    print(f"{'events per scan':<28}{events / scans:>12.2f}")
    print(f"{'median vs 1 ms target':<28}{median / TARGET_MEDIAN_US:>12.2f}")
    print(f"{f'{cases} rule-test cases':<28}{suite_ms:>10.1f} ms  ({case_scans} scans)")
    print(f"scan ticks with machines of {MACHINE_RULES.name}, {N_INPUTS} inputs in total, "
          "10 % changing per tick (whole tick: snapshot, rules, towers, events)")
    print(f"{'machines':>8}{'inputs':>8}{'rules':>7}{'tick median':>13}{'tick p99':>11}"
          f"{'per machine':>13}{'vs 1 machine':>14}{'events/tick':>13}")
    for run in machine_runs:
        per = run["tick_median_us"] / run["machines"]
        run["per_machine_us"] = per
        run["median_to_one_machine"] = run["tick_median_us"] / one
        print(f"{run['machines']:>8}{run['inputs']:>8}{run['rules']:>7}"
              f"{run['tick_median_us']:>10.1f} us{run['tick_p99_us']:>8.1f} us{per:>10.1f} us"
              f"{run['median_to_one_machine']:>13.2f}x{run['events_per_tick']:>13.2f}")
    print(f"rolling windows: +{N_WINDOWS} signals over {WINDOW} windows, {window_scans} scans "
          f"of {SCAN * 1000:g} ms ({window_scans * SCAN / 60:g} min), same snapshots")
    print(f"{'plain median / p99':<28}{lane['plain_median_us']:>10.1f} / "
          f"{lane['plain_p99_us']:.1f} us")
    print(f"{'with windows median / p99':<28}{lane['windows_median_us']:>10.1f} / "
          f"{lane['windows_p99_us']:.1f} us")
    print(f"{'windows / plain (median)':<28}{ratio:>12.2f}")
    print(f"{'window entries held':<28}{lane['window_entries']:>12.0f}  (cap {MAX_ENTRIES} "
          f"per window, {N_WINDOWS * MAX_ENTRIES} in all)")
    print(f"{'window memory':<28}{lane['window_bytes'] / 1024:>10.1f} KiB")
    sides = ("before", "heap", "shipped")
    print(f"reload of a {stalls['shipped']['big_kib']:.0f} KiB rule file in a running agent, "
          f"median of {ROUNDS} rounds each; event-loop lateness (1 ms probe, the scan loop "
          "shares the loop); before: without agent.heap; heap: with it; shipped: with it and "
          "the reload's shorter GIL switch interval (same run):")
    print(f"{'':<28}" + "".join(f"{side:>12}" for side in sides))
    rows = [("idle p99", "idle_p99_ms"), ("idle max", "idle_max_ms")]
    for n in (1, 2):
        rows += [(f"reload {n}: took", f"reload{n}_s"), (f"reload {n}: p99", f"reload{n}_p99_ms"),
                 (f"reload {n}: max", f"reload{n}_max_ms"),
                 (f"reload {n}: max, best round", f"best_reload{n}_max_ms"),
                 (f"reload {n}: longest gc (CPU)", f"gc{n}_max_ms"),
                 (f"reload {n}: scans skipped", f"reload{n}_skipped")]
    for label, key in rows:
        scale, unit = (1000, "ms") if key.endswith("_s") else (1, "ms")
        if key.endswith("_skipped"):
            unit = "  "
        print(f"{'  ' + label:<28}"
              + "".join(f"{stalls[side][key] * scale:>9.2f} {unit}" for side in sides))
    for n in (1, 2):
        print(f"{f'  reload {n}: max vs idle max':<28}" + "".join(
            f"{stalls[side][f'reload{n}_max_ms'] / max(stalls[side]['idle_max_ms'], 1e-3):>11.1f}x"
            for side in sides))
    print("what a loaded rule set keeps for the collector to scan (tracked objects, and one "
          "collection of them alone, CPU):")
    for kib, count, ms in heaps:
        print(f"{f'  {kib:.0f} KiB rule file':<28}{count:>12,} objects{ms:>9.2f} ms")
    print(json.dumps({
        "bench": "rules", "inputs": N_INPUTS, "states": N_STATES, "signals": N_SIGNALS,
        "counters": N_COUNTERS, "scans": scans,
        "step_median_us": round(median, 1), "step_p99_us": round(p99, 1),
        "step_max_us": round(max(times), 1), "load_validate_ms": round(load_ms, 1),
        "events_per_scan": round(events / scans, 2),
        "median_to_target_ratio": round(median / TARGET_MEDIAN_US, 3),
        "rule_test_cases": cases, "rule_test_scans": case_scans,
        "rule_test_suite_ms": round(suite_ms, 1),
        "machines": [{k: round(v, 2) for k, v in run.items()} for run in machine_runs],
        "window_scans": window_scans, "windows": N_WINDOWS,
        "window_plain_median_us": round(lane["plain_median_us"], 1),
        "window_median_us": round(lane["windows_median_us"], 1),
        "window_p99_us": round(lane["windows_p99_us"], 1),
        "window_to_plain_ratio": round(ratio, 3),
        "window_entries": lane["window_entries"], "window_bytes": lane["window_bytes"],
        "reload_big_kib": round(stalls["shipped"]["big_kib"]),
        "heap": [{"kib": round(kib), "tracked_objects": count, "collect_ms": round(ms, 2)}
                 for kib, count, ms in heaps],
        "reload": {side: {key: round(value * 1000 if key.endswith("_s") else value, 2)
                          for key, value in r.items()} for side, r in stalls.items()},
    }))


if __name__ == "__main__":
    main()
