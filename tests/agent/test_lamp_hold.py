"""The lamp hold: a scan that latches something new shows its lamps only once the journal has
committed the latched set; every other scan shows them in the tick, as before.

A real journal file with its writer running, the agent's own RuleMemory and ScanLoop; the
scan loop runs (so holds can wait) with a period of an hour, and the test ticks it by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgpack
import pytest

from linelight.agent.journal import Journal
from linelight.agent.journal.queue import TEST_COMMIT_DELAY_ENV
from linelight.agent.memory import RuleMemory
from linelight.agent.scan import MachineLane, ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from linelight.rules.values import Pattern
from tests.agent.journal.support import rows, running
from tests.agent.test_scan import Clocks, Sink, good
from tests.rules.test_latches import LATCHING

pytestmark = pytest.mark.anyio

# The evaluator's latch tests' rules (a fault latching state `fault` and signal `drive_alarm`
# until reset) and a second latch of its own input, shown on the white lamp
RULES = LATCHING.replace("[inputs]\n", '[inputs]\nguard_open = { type = "bool" }\n') + """
[[signal]]
name = "guard_alarm"
priority = 70
when = "guard_open"
clear_when = "reset and not guard_open"
show = { white = "on" }
"""
LAMPS = ("red", "amber", "green", "blue", "white")
QUIET = {"drive_fault": False, "guard_open": False, "reset": False, "running": True}


class Rig:
    def __init__(self, journal: Journal, db: Path) -> None:
        self.journal, self.db = journal, db
        self.clocks = Clocks()
        self.table = InputTable(list(QUIET))
        self.tower = StackLight({lamp: VirtualOutput(lamp) for lamp in LAMPS},
                                clock=lambda: self.clocks.mono)
        self.memory = RuleMemory(journal, now_ns=lambda: self.clocks.wall,
                                 monotonic=lambda: self.clocks.mono)
        self.scan = ScanLoop(
            inputs=self.table, evaluator=Evaluator(load_rules([("r.toml", RULES)])),
            tower=self.tower, sink=Sink(), clock=self.clocks.watch(), period=3600.0,
            monotonic=lambda: self.clocks.mono, on_latches=self.memory.latches_changed,
            latches_saved=self.memory.latches_saved)

    def tick(self, **values: bool) -> None:
        """One scan, 20 ms after the last, with these inputs changed."""
        self.clocks.advance(0.02)
        good(self.table, self.clocks, **values)
        self.scan.tick()

    def lit(self) -> set[str]:
        return {lamp for lamp, p in self.tower.patterns().items() if p is Pattern.ON}

    def on_disk(self) -> list[str]:
        """The latches committed in the file, read beside the journal's own connection."""
        found = rows(self.db, "SELECT value FROM meta WHERE key = 'latches'")
        return sorted(x["name"] for x in msgpack.unpackb(found[0])) if found else []

    async def until_lit(self, lamp: str) -> list[str]:
        """Wait for `lamp`; returns what the file held at that very moment."""
        with anyio.fail_after(30):
            while True:
                if lamp in self.lit():  # no await before the read: the lamp cannot be ahead
                    return self.on_disk()
                await anyio.sleep(0.001)


@asynccontextmanager
async def rig(db: Path) -> AsyncIterator[Rig]:
    async with running(db) as journal:
        r = Rig(journal, db)
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.memory.run)
            await tg.start(r.scan.run)
            yield r
            tg.cancel_scope.cancel()


async def test_a_new_latch_lights_its_lamp_only_once_committed_other_changes_at_once(
        tmp_path: Path) -> None:
    async with rig(tmp_path / "q.db") as r:
        r.tick(**QUIET)
        assert r.lit() == {"green"}, "no latch involved: shown in the tick"
        r.tick(running=False)
        assert r.lit() == {"amber"}, "no latch involved: shown in the tick"
        r.tick(running=True, drive_fault=True)
        assert r.lit() == {"amber"}, "the new latch is not committed: the whole command waits"
        assert r.scan.stats.lamp_holds == 1
        assert await r.until_lit("red") == ["drive_alarm", "fault"]
        assert r.lit() == {"red", "blue"}
        assert r.scan.stats.lamp_hold_timeouts == r.scan.stats.lamp_hold_refused == 0
        r.tick(drive_fault=False)  # the fault goes; the latch holds: no change, no hold
        r.tick(running=False)
        assert r.lit() == {"red", "blue"}
        r.tick(reset=True)  # a released latch is no new latch: shown at once
        assert r.lit() == {"amber"}
        assert r.scan.stats.lamp_holds == 1
        with anyio.fail_after(30):  # the release is stored too, without anybody waiting
            while True:
                if not r.on_disk():
                    break
                await anyio.sleep(0.01)


async def test_a_second_latch_during_a_hold_keeps_the_lamps_back_until_it_is_committed_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a slow disk the second latch's store starts after the first one's commit: lamps
    shown at that commit would show a latch not yet stored."""
    monkeypatch.setenv(TEST_COMMIT_DELAY_ENV, "0.1")
    async with rig(tmp_path / "q.db") as r:
        r.tick(**QUIET)
        r.tick(drive_fault=True)
        await anyio.sleep(0.02)  # the first store is on its way to the disk
        r.tick(guard_open=True)
        assert r.lit() == {"green"}
        assert await r.until_lit("white") == ["drive_alarm", "fault", "guard_alarm"]
        assert r.lit() == {"red", "blue", "white"}
        assert r.scan.stats.lamp_holds == 1  # one hold, extended
        assert r.scan.stats.lamp_hold_timeouts == 0


async def test_without_a_running_scan_loop_the_lamps_are_shown_in_the_tick(
        tmp_path: Path) -> None:
    """Nothing could wait for the store (no `run`): the old order, and the latch is stored."""
    async with running(tmp_path / "q.db") as journal:
        r = Rig(journal, tmp_path / "q.db")
        r.tick(**QUIET)
        r.tick(drive_fault=True)
        assert r.lit() == {"red", "blue"}
        assert r.scan.stats.lamp_holds == 0
        await r.memory.flush()
        assert r.on_disk() == ["drive_alarm", "fault"]


async def test_one_machine_holding_its_lamps_for_a_latch_does_not_hold_another_machines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_COMMIT_DELAY_ENV, "0.1")
    names = ("press", "filler")
    db = tmp_path / "q.db"
    clocks, table = Clocks(), InputTable([f"{m}/{i}" for m in names for i in QUIET])
    async with running(db) as journal:
        towers = {m: StackLight({lamp: VirtualOutput(lamp) for lamp in LAMPS},
                                clock=lambda: clocks.mono) for m in names}
        memories = {m: RuleMemory(journal, now_ns=lambda: clocks.wall,
                                  monotonic=lambda: clocks.mono, machine=m) for m in names}
        lanes = [MachineLane(Evaluator(load_rules([("r.toml", RULES)])), towers[m], name=m,
                             inputs={i: f"{m}/{i}" for i in QUIET}, label=m,
                             on_latches=memories[m].latches_changed,
                             latches_saved=memories[m].latches_saved) for m in names]
        scan = ScanLoop(inputs=table, sink=Sink(), clock=clocks.watch(), period=3600.0,
                        machines=lanes, monotonic=lambda: clocks.mono)

        def lit(machine: str) -> set[str]:
            return {lamp for lamp, p in towers[machine].patterns().items() if p is Pattern.ON}

        def tick(**values: bool) -> None:
            clocks.advance(0.02)
            good(table, clocks, **values)
            scan.tick()

        async with anyio.create_task_group() as tg:
            for memory in memories.values():
                tg.start_soon(memory.run)
            await tg.start(scan.run)
            tick(**{f"{m}/{i}": v for m in names for i, v in QUIET.items()})
            assert lit("press") == lit("filler") == {"green"}
            tick(**{"press/drive_fault": True, "filler/running": False})
            assert lit("press") == {"green"}, "the press's new latch is not stored yet"
            assert lit("filler") == {"amber"}, "the filler latched nothing: shown in the tick"
            assert scan.stats.lamp_holds == 1
            with anyio.fail_after(30):
                while True:
                    if lit("press") == {"red", "blue"}:
                        break
                    await anyio.sleep(0.001)
            assert rows(db, "SELECT key FROM meta WHERE key LIKE 'latches%'") == ["latches/press"]
            tg.cancel_scope.cancel()
