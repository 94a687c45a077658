"""The scan loop: one snapshot per tick, lamps in the same tick, events handed off without waiting."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from linelight.agent.clock import ClockWatch
from linelight.agent.journal import Event, Journal
from linelight.agent.scan import ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from linelight.rules.values import Pattern, Quality, Sample

RULES = """\
[inputs]
running = { type = "bool" }
fault_code = { type = "int" }
part = { type = "bool" }
temp = { type = "float" }

[[state]]
name = "fault"
code = 180000
priority = 100
when = "fault_code != 0"
show = { red = "blink_fast" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 10
when = "not running"
show = { amber = "on" }

[[counter]]
name = "parts"
rising = "part"

[tower]
lamps = ["red", "amber", "green"]
"""


class Sink:
    """A list standing in for the journal's `submit` (the EventSink protocol)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000 * 10**9
        self.synced: bool | None = True

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall += int(s * 1e9)

    def watch(self) -> ClockWatch:
        return ClockWatch(monotonic=lambda: self.mono, wall_ns=lambda: self.wall,
                          synchronized=lambda: self.synced, sync_probe_every_s=1.0)


def make(sink: object, clocks: Clocks, table: InputTable, *, deadband: float = 0.0
         ) -> tuple[ScanLoop, StackLight]:
    tower = StackLight({lamp: VirtualOutput(lamp) for lamp in ("red", "amber", "green")},
                       clock=lambda: clocks.mono)
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
                    tower=tower, sink=sink, clock=clocks.watch(), period=0.02,  # type: ignore[arg-type]
                    deadband=deadband, monotonic=lambda: clocks.mono)
    return scan, tower


def good(table: InputTable, clocks: Clocks, **values: object) -> None:
    for name, value in values.items():
        table.update(name, Sample(value, Quality.GOOD, clocks.mono, clocks.wall))  # type: ignore[arg-type]


def test_state_starts_unknown_and_follows_inputs_with_lamps_in_the_same_tick() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable(["running", "fault_code", "part", "temp"])
    scan, tower = make(sink, clocks, table)
    scan.tick()
    assert scan.view.state == "unknown"
    good(table, clocks, running=True, fault_code=0, part=False, temp=20.0)
    clocks.advance(0.02)
    step = scan.tick()
    assert step.state.name == "producing"
    assert tower.patterns() == {"red": Pattern.OFF, "amber": Pattern.OFF, "green": Pattern.ON}
    clocks.advance(1.5)
    good(table, clocks, fault_code=17)
    scan.tick()
    assert tower.patterns()["red"] is Pattern.BLINK_FAST
    states = sink.of("state")
    assert [(e.name, e.value) for e in states] == [("producing", 10000), ("fault", 180000)]
    assert dict(states[1].attrs)["previous_state"] == "producing"
    assert dict(states[1].attrs)["previous_duration"] == pytest.approx(1.5)
    lamps = [(e.name, e.value) for e in sink.of("lamp")]
    assert ("green", "on") in lamps and ("red", "blink_fast") in lamps and lamps[-1] == (
        "green", "off")


def test_input_changes_become_signal_events_and_analog_ones_respect_the_deadband() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable(["running", "fault_code", "part", "temp"])
    scan, _ = make(sink, clocks, table, deadband=0.5)
    good(table, clocks, running=True, fault_code=0, part=False, temp=20.0)
    scan.tick()
    for t in (20.1, 20.3, 20.6, 20.7, 21.2):
        clocks.advance(0.02)
        good(table, clocks, temp=t)
        scan.tick()
    temps = [e.value for e in sink.of("signal") if e.name == "temp"]
    assert temps == [20.0, 20.6, 21.2]
    clocks.advance(0.02)
    table.update("temp", Sample(21.2, Quality.STALE, clocks.mono, clocks.wall, "poll timeout"))
    scan.tick()
    last = sink.of("signal")[-1]
    assert last.name == "temp" and dict(last.attrs)["quality"] == "stale"
    assert dict(last.attrs)["reason"] == "poll timeout"


def test_counter_increments_carry_cumulative_totals() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable(["running", "fault_code", "part", "temp"])
    scan, _ = make(sink, clocks, table)
    scan.evaluator.restore_counters({"parts": 41})
    good(table, clocks, running=True, fault_code=0, part=False, temp=1.0)
    scan.tick()
    for value in (True, False, True, False):
        clocks.advance(0.02)
        good(table, clocks, part=value)
        scan.tick()
    assert [e.value for e in sink.of("count")] == [42, 43]
    assert scan.view.counters == {"parts": 43}


def test_clock_jump_and_unsynchronized_clock_are_recorded() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable(["running"])
    clocks.synced = False
    scan, _ = make(sink, clocks, table)
    good(table, clocks, running=True)
    scan.tick()
    assert sink.events and all(dict(e.attrs).get("clock_unsynced") for e in sink.events)
    clocks.advance(0.02)
    clocks.wall += 3600 * 10**9  # NTP finally sets the clock
    clocks.synced = True
    scan.tick()
    agent = sink.of("agent")
    assert [e.name for e in agent] == ["clock_jump", "clock_sync"]
    assert round(agent[0].value) == 3600 and agent[1].value is True
    clocks.advance(0.02)
    good(table, clocks, running=False)
    scan.tick()
    assert "clock_unsynced" not in dict(sink.events[-1].attrs)


@pytest.mark.anyio
async def test_ticks_go_on_when_the_journal_writer_is_stuck(tmp_path: Path) -> None:
    """The journal's writer task is never started: nothing is committed, lamps still follow."""
    journal = Journal.open(str(tmp_path / "j.db"))
    try:
        clocks = Clocks()
        table = InputTable(["running", "fault_code", "part", "temp"])
        scan, tower = make(journal, clocks, table)
        good(table, clocks, running=True, fault_code=0, part=False, temp=1.0)
        for i in range(200):
            clocks.advance(0.02)
            good(table, clocks, running=i % 2 == 0)
            scan.tick()
        assert tower.patterns()["amber"] is Pattern.ON
        assert journal.stats().pending > 200 and journal.stats().depth == 0
    finally:
        journal.close()
    reopened = Journal.open(str(tmp_path / "j.db"))
    try:
        assert reopened.stats().depth > 200  # close() committed what was handed off
    finally:
        reopened.close()


@pytest.mark.anyio
async def test_run_ticks_at_the_period_and_stops_on_cancel() -> None:
    sink, table = Sink(), InputTable(["running"])
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
                    tower=StackLight({}), sink=sink, clock=ClockWatch(), period=0.005)
    async with anyio.create_task_group() as tg:
        await tg.start(scan.run)
        assert scan.stats.ticks == 1
        with anyio.fail_after(30):
            while scan.stats.ticks < 20:  # noqa: ASYNC110 - waiting on the loop's own progress
                await anyio.sleep(0.01)
        assert scan.healthy()
        tg.cancel_scope.cancel()


def test_status_shows_the_outputs_the_rules_compute() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable(["running", "fault_code", "part", "temp"])
    rules = RULES + '[[output]]\nname = "may_start"\nwhen = "not running and fault_code == 0"\n'
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", rules)])),
                    tower=StackLight({}, clock=lambda: clocks.mono), sink=sink,
                    clock=clocks.watch(), period=0.02, monotonic=lambda: clocks.mono)
    good(table, clocks, running=False, fault_code=0, part=False, temp=20.0)
    scan.tick()
    assert scan.view_status()["outputs"] == {"may_start": True}
    clocks.advance(0.02)
    good(table, clocks, fault_code=3)
    scan.tick()
    assert scan.view_status()["outputs"] == {"may_start": False}


def _slow_scan(table: InputTable, *, on_change: bool) -> tuple[ScanLoop, StackLight]:
    # A one-second period: a lamp that follows sooner was scanned by the change, not the tick.
    tower = StackLight({lamp: VirtualOutput(lamp) for lamp in ("red", "amber", "green")})
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
                    tower=tower, sink=Sink(), clock=ClockWatch(), period=1.0,
                    on_change=on_change)
    return scan, tower


@pytest.mark.anyio
@pytest.mark.parametrize("on_change", [True, False])
async def test_an_input_change_runs_a_scan_at_once_when_scan_on_change_is_on(
        on_change: bool) -> None:
    table = InputTable(["running", "fault_code", "part", "temp"])
    scan, tower = _slow_scan(table, on_change=on_change)
    async with anyio.create_task_group() as tg:
        await tg.start(scan.run)
        assert scan.view.state == "unknown"
        now = time.monotonic()
        table.update_many({name: Sample(value, Quality.GOOD, now) for name, value in
                           (("running", True), ("fault_code", 0), ("part", False), ("temp", 1.0))})
        with anyio.fail_after(30):
            while tower.patterns().get("green") is not Pattern.ON:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        # the lamp followed in a tick the change ran, or (scan on change off) the next period's
        assert scan.stats.on_change == (1 if on_change else 0)
        assert scan.status()["ticks_on_change"] == scan.stats.on_change
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_an_update_with_the_same_values_does_not_run_a_scan() -> None:
    table = InputTable(["running"])
    scan, _ = _slow_scan(table, on_change=True)
    async with anyio.create_task_group() as tg:
        table.update("running", Sample(True, Quality.GOOD, time.monotonic()))
        await tg.start(scan.run)
        for _ in range(50):  # a poller reading the same value again and again
            table.update("running", Sample(True, Quality.GOOD, time.monotonic()))
            await anyio.lowlevel.checkpoint()
        table.update("running", Sample(True, Quality.STALE, time.monotonic(), reason="timeout"))
        with anyio.fail_after(30):
            while scan.stats.on_change == 0:  # noqa: ASYNC110 - the quality change wakes it
                await anyio.sleep(0.001)
        assert scan.stats.on_change == 1
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("on_change", [True, False])
async def test_a_halted_loop_scans_no_more_so_the_stop_event_stays_the_last(
        on_change: bool) -> None:
    """A planned stop halts the loop before closing the sources: their inputs going bad then
    must not light another pattern or submit a signal event after the `stop` event."""
    table = InputTable(["running", "fault_code", "part", "temp"])
    tower = StackLight({lamp: VirtualOutput(lamp) for lamp in ("red", "amber", "green")})
    sink = Sink()
    scan = ScanLoop(inputs=table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
                    tower=tower, sink=sink, clock=ClockWatch(), period=0.005,
                    on_change=on_change)
    async with anyio.create_task_group() as tg:
        now = time.monotonic()
        table.update_many({name: Sample(value, Quality.GOOD, now) for name, value in
                           (("running", True), ("fault_code", 0), ("part", False), ("temp", 1.0))})
        await tg.start(scan.run)
        with anyio.fail_after(30):
            while tower.patterns().get("green") is not Pattern.ON:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        scan.halt()
        ticks, events = scan.stats.ticks, len(sink.events)
        table.update("running", Sample(True, Quality.STALE, time.monotonic(), reason="closed"))
        await anyio.sleep(0.1)  # twenty periods: a running loop would have scanned the change
        assert (scan.stats.ticks, len(sink.events)) == (ticks, events)
        tg.cancel_scope.cancel()
