"""Rolling windows survive a restart through the journal's meta table, in wall-clock time."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from linelight.agent.memory import WINDOWS_META, RuleMemory
from linelight.agent.scan import ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from tests.agent.journal.support import running
from tests.agent.test_scan import Clocks, Sink, good

pytestmark = pytest.mark.anyio

RULES = """\
[inputs]
jam = { type = "bool" }

[[signal]]
name = "microstop"
priority = 1
when = "jam"

[[signal]]
name = "call_maintenance"
priority = 2
when = "count_of(microstop, 10m) >= 3"
show = { blue = "on" }

[[state]]
name = "running"
code = 10000
priority = 1
when = true

[tower]
lamps = ["blue"]
"""


def _loop(clocks: Clocks, memory: RuleMemory, evaluator: Evaluator,
          table: InputTable) -> ScanLoop:
    tower = StackLight({"blue": VirtualOutput("blue")}, clock=lambda: clocks.mono)
    return ScanLoop(inputs=table, evaluator=evaluator, tower=tower, sink=Sink(),
                    clock=clocks.watch(), period=0.02, monotonic=lambda: clocks.mono,
                    on_windows=memory.windows_changed)


def _boot(journal: object, clocks: Clocks) -> tuple[RuleMemory, Evaluator, InputTable]:
    memory = RuleMemory(journal, now_ns=lambda: clocks.wall,  # type: ignore[arg-type]
                        monotonic=lambda: clocks.mono)
    evaluator = Evaluator(load_rules([("r.toml", RULES)]))
    memory.restore(evaluator)
    return memory, evaluator, InputTable(["jam"])


def _jams(scan: ScanLoop, table: InputTable, clocks: Clocks, jams: tuple[bool, ...],
          every: float) -> None:
    """One tick per value of the jam input, `every` seconds apart."""
    for jam in jams:
        good(table, clocks, jam=jam)
        scan.tick()
        clocks.advance(every)


async def test_microstops_before_a_restart_still_count_after_it_and_age_in_wall_time(
        tmp_path: Path) -> None:
    clocks = Clocks()
    async with running(tmp_path / "q.db") as journal:
        memory, evaluator, table = _boot(journal, clocks)
        scan = _loop(clocks, memory, evaluator, table)
        for _ in range(3):  # three 1 s jams, one a minute
            _jams(scan, table, clocks, (False, True, False), 1.0)
            clocks.advance(60.0)
        assert "call_maintenance" in scan.tick().signals
        await memory.flush()
    clocks.advance(120.0)  # down for two minutes
    clocks.mono = 5.0  # a new boot: monotonic time starts again
    async with running(tmp_path / "q.db") as journal:
        assert len(journal.get_meta(WINDOWS_META)["count_of(microstop, 600.0)"]) == 3
        memory, evaluator, table = _boot(journal, clocks)
        scan = _loop(clocks, memory, evaluator, table)
        good(table, clocks, jam=False)
        assert "call_maintenance" in scan.tick().signals
        # the first jam was seen 1 s after the start; it is 309 s later now (3 x 63 s + 120 s
        # down): it leaves the window when it is 600 s old, at 601 s
        clocks.advance(601.0 - 309.0 - 1.0)
        good(table, clocks, jam=False)
        assert "call_maintenance" in scan.tick().signals
        clocks.advance(1.0)
        good(table, clocks, jam=False)
        assert "call_maintenance" not in scan.tick().signals


async def test_a_damaged_window_store_starts_the_windows_empty_and_the_agent_runs(
        tmp_path: Path) -> None:
    clocks = Clocks()
    async with running(tmp_path / "q.db") as journal:
        await journal.put_meta(WINDOWS_META, {"count_of(microstop, 600.0)": [["x", 1]],
                                              "other": 5})
        memory, evaluator, table = _boot(journal, clocks)
        assert evaluator.windows()[0].entries == ()
        await journal.put_meta(WINDOWS_META, "not a table")
        memory, evaluator, table = _boot(journal, clocks)
        good(table, clocks, jam=False)
        assert _loop(clocks, memory, evaluator, table).tick().signals == ()


async def test_the_running_store_writes_windows_soon_after_an_edge_off_the_scan(
        tmp_path: Path) -> None:
    clocks = Clocks()
    async with running(tmp_path / "q.db") as journal:
        memory, evaluator, table = _boot(journal, clocks)
        scan = _loop(clocks, memory, evaluator, table)
        async with anyio.create_task_group() as tg:
            tg.start_soon(memory.run)
            _jams(scan, table, clocks, (False, True), 0.02)
            with anyio.fail_after(10):
                while not journal.get_meta(WINDOWS_META):  # noqa: ASYNC110 - the store's own write
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        [[(at_ns, amount)]] = list(journal.get_meta(WINDOWS_META).values())
        assert amount == 1 and abs(at_ns - (clocks.wall - 20_000_000)) < 1000  # the edge's time
