"""agent.heap: the built heap frozen, the collector paused during a reload and one collection
after it; and the premise that makes freezing the rules safe (they hold no reference cycle)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from linelight.agent import heap
from linelight.agent.rulefiles import load_rule_files
from linelight.rules.evaluator import Evaluator
from linelight.rules.values import Quality, Sample

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    heap.thaw()  # the rest of the test run keeps Python's own collector


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_paused_collects_nothing_inside_and_collect_frees_the_garbage() -> None:
    assert gc.isenabled()
    with heap.paused():
        assert not gc.isenabled()
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        for _ in range(10_000):  # enough allocations for automatic collections: none runs
            _Node()
        assert gone() is not None
        heap.collect()
        assert gone() is None
    assert gc.isenabled()


def test_settle_frees_the_garbage_and_freezes_what_lives() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    kept = _Node()
    assert any(o is kept for o in gc.get_objects())  # tracked, collectable
    heap.settle()
    assert gone() is None  # collected, not frozen for good
    assert not any(o is kept for o in gc.get_objects())  # frozen: no collection scans it
    heap.thaw()
    assert any(o is kept for o in gc.get_objects())


def test_paused_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with heap.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("rules", ["rules/press.toml", "rules.d/machine.toml"])
def test_a_rule_set_and_its_evaluator_hold_no_reference_cycle(rules: str) -> None:
    """A frozen object is freed by reference counting only: the old rules after a reload are
    freed only if they hold no cycle (else every reload would leak its predecessor)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        ruleset = load_rule_files([EXAMPLES / rules])
        evaluator = Evaluator(ruleset)
        for k in range(50):  # timers, debounce and edge memory in use
            snapshot = {name: Sample(k % 2 == 0 if spec.type == "bool" else k, Quality.GOOD,
                                     k * 0.1) for name, spec in ruleset.inputs.items()}
            evaluator.step(snapshot, k * 0.1)
        successor = Evaluator(ruleset)
        successor.carry_over(evaluator)
        del ruleset, evaluator, successor
        gc.collect()
        ours = [type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.startswith("linelight.")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []


@pytest.mark.anyio
async def test_a_running_agent_keeps_its_built_heap_frozen_and_thaws_it_when_it_stops(
        tmp_path: Path) -> None:
    import anyio

    from linelight.agent.app import Agent
    from linelight.agent.config import load_config

    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "machine.toml").write_text(
        (EXAMPLES / "rules.d" / "machine.toml").read_text())
    (tmp_path / "agent.toml").write_text('agent_id = "heap"\ndata_dir = "data"\n'
                                         '[diagnostics]\nenabled = false\n')
    agent = Agent(load_config(tmp_path / "agent.toml"), handle_signals=False, watch_files=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        assert agent.scan is not None
        evaluator = agent.scan.evaluator
        assert not any(o is evaluator for o in gc.get_objects())  # frozen
        await agent.stop()
    assert gc.get_freeze_count() == 0
    assert any(o is evaluator for o in gc.get_objects())
