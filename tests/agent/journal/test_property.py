"""Property test: any sequence of append / submit / peek / ack / reopen keeps the queue's promises.

Never reorder, never lose a committed event, never reuse a seq, never go back in boot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linelight.agent.journal import Event, Journal
from tests.agent.journal.support import counted

pytestmark = pytest.mark.anyio

_KINDS = ["signal", "lamp", "state", "agent", "alarm", "count"]

_op = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("submit"), st.integers(1, 20)),
    st.tuples(st.just("peek"), st.integers(1, 30), st.integers(0, 3)),
    st.tuples(st.just("ack_prefix"), st.integers(0, 30)),
    st.tuples(st.just("ack_some"), st.lists(st.integers(0, 40), max_size=8)),
    st.tuples(st.just("reopen"), st.booleans()),
)


class _Model:
    """What the queue must hold: seq -> (kind, value), oldest first."""

    def __init__(self) -> None:
        self.queued: dict[int, tuple[str, Any]] = {}
        self.max_seq = 0
        self.boot = 0
        self.counter = 0

    def next_event(self) -> Event:
        self.counter += 1
        kind = _KINDS[self.counter % len(_KINDS)]
        return Event(kind, f"n{self.counter % 3}", self.counter, self.counter, {"i": self.counter})

    def committed(self, seq: int | None, ev: Event) -> None:
        assert seq is not None, "append refused on a healthy disk"
        assert seq > self.max_seq, f"seq {seq} reused or went back (max seen {self.max_seq})"
        self.max_seq = seq
        self.queued[seq] = (ev.kind, ev.value)


async def _run_ops(directory: str, ops: list[tuple[Any, ...]]) -> None:
    path = str(Path(directory) / "q.db")
    model = _Model()
    todo = list(ops)
    carried: list[Event] | None = []
    while carried is not None:
        journal = Journal.open(path)
        model.boot += 1
        assert journal.boot == model.boot
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(journal.run)
                await _learn_submitted(journal, model, carried)
                await _check_all(journal, model)
                carried = None
                while todo:
                    op = todo.pop(0)
                    if op[0] == "reopen":
                        # With op[1], leave events buffered: close() must commit them.
                        carried = [model.next_event() for _ in range(3)] if op[1] else []
                        for ev in carried:
                            journal.submit(ev)
                        break
                    await _step(op, journal, model)
                tg.cancel_scope.cancel()
        finally:
            journal.close()


async def _step(op: tuple[Any, ...], journal: Journal, model: _Model) -> None:
    name = op[0]
    if name == "append":
        for _ in range(op[1]):
            ev = model.next_event()
            model.committed(await journal.append(ev), ev)
    elif name == "submit":
        events = [model.next_event() for _ in range(op[1])]
        for ev in events:
            journal.submit(ev)
        with anyio.fail_after(60):
            while journal.stats().pending:
                await journal.wait_new(journal.newest_seq)
        await _learn_submitted(journal, model, events)
    elif name == "peek":
        queued = sorted(model.queued)
        after = queued[min(op[2], len(queued) - 1)] if queued and op[2] else 0
        recs = await journal.peek(op[1], after)
        want = [s for s in queued if s > after][: op[1]]
        assert [r.seq for r in recs] == want
        assert [(r.kind, r.value) for r in recs] == [model.queued[s] for s in want]
    else:
        queued = sorted(model.queued)
        if name == "ack_prefix":
            chosen = queued[: op[1]]
        else:
            chosen = sorted({queued[i % len(queued)] for i in op[1]}) if queued else []
        assert await journal.ack(chosen) == len(chosen)
        for s in chosen:
            del model.queued[s]


async def _learn_submitted(journal: Journal, model: _Model, events: list[Event]) -> None:
    recs = await journal.peek(10_000, model.max_seq)
    assert [(r.kind, r.value) for r in recs] == [(e.kind, e.value) for e in events]
    for rec, ev in zip(recs, events, strict=True):
        model.committed(rec.seq, ev)


async def _check_all(journal: Journal, model: _Model) -> None:
    recs = await journal.peek(100_000)
    assert [r.seq for r in recs] == sorted(model.queued)
    assert [(r.kind, r.value) for r in recs] == [model.queued[r.seq] for r in recs]
    assert journal.stats().depth == len(model.queued)
    assert journal.stats().seq_hwm >= model.max_seq
    # the per-class totals an open trusts instead of counting equal a count of the table
    assert (journal.stats().depth, journal.stats().bytes) == counted(journal.path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=25))
async def test_random_operations_never_reorder_lose_or_reuse(ops: list[tuple[Any, ...]]):
    with tempfile.TemporaryDirectory(prefix="journal-prop-") as directory:
        await _run_ops(directory, ops)
