"""Retention: max_bytes and max_age drop the oldest events of the lowest class first, and the
gap events say exactly what went."""

from __future__ import annotations

from pathlib import Path

import pytest

from linelight.agent.journal import Journal, JournalLimits, Record
from tests.agent.journal.support import event, running

pytestmark = pytest.mark.anyio

CLASS = {"signal": 0, "lamp": 0, "state": 1, "agent": 1, "alarm": 2, "count": 2, "gap": 2}


class Clock:
    """A wall clock the test moves by hand (UTC epoch ns)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


async def _append_all(j: Journal, kinds: list[str]) -> dict[int, str]:
    sent: dict[int, str] = {}
    for i, kind in enumerate(kinds):
        seq = await j.append(event(kind, f"{kind}.x", i, pad="p" * 100))
        assert seq is not None
        sent[seq] = kind
    return sent


def _check_gaps_explain_exactly(sent: dict[int, str], recs: list[Record]) -> list[Record]:
    """Every missing event is named by exactly one gap; every gap names only missing events."""
    present = {r.seq for r in recs}
    gaps = [r for r in recs if r.kind == "gap"]
    missing = {s for s in sent if s not in present}
    explained: set[int] = set()
    for g in gaps:
        a = g.attrs
        covered = {s for s, k in sent.items()
                   if a["first_seq"] <= s <= a["last_seq"] and CLASS[k] == a["class"]}
        assert covered <= missing, f"gap {a} names events that are still queued"
        assert len(covered) == a["count"] == g.value
        kinds: dict[str, int] = {}
        for s in covered:
            kinds[sent[s]] = kinds.get(sent[s], 0) + 1
        assert kinds == a["kinds"]
        assert not covered & explained, "two gaps name the same event"
        explained |= covered
    assert explained == missing, f"dropped without a gap: {sorted(missing - explained)[:10]}"
    return gaps


async def test_max_bytes_drops_the_oldest_signals_before_any_state_or_alarm(tmp_path: Path):
    kinds = (["alarm", "state"] + ["signal", "lamp", "signal", "state"] * 60
             + ["count"] + ["signal"] * 150)
    limits = JournalLimits(max_bytes=40_000)
    async with running(tmp_path / "q.db", limits) as j:
        sent = await _append_all(j, kinds)
        recs = await j.peek(10_000)
        stats = j.stats()
    gaps = _check_gaps_explain_exactly(sent, recs)
    assert gaps and {g.name for g in gaps} == {"max_bytes"}
    assert all(g.attrs["class"] == 0 for g in gaps)
    kept_kinds = [r.kind for r in recs]
    assert kept_kinds.count("state") == 61 and "alarm" in kept_kinds and "count" in kept_kinds
    dropped_seqs = [s for s in sent if s not in {r.seq for r in recs}]
    kept_low = [r.seq for r in recs if CLASS[r.kind] == 0]
    assert max(dropped_seqs) < min(kept_low), "a newer signal went before an older one"
    assert stats.bytes <= limits.max_bytes
    assert stats.dropped == sum(g.value for g in gaps)


async def test_max_bytes_takes_states_before_alarms_and_never_gap_events(tmp_path: Path):
    kinds = ["alarm", "count"] * 20 + ["state", "agent"] * 100 + ["alarm"] * 10
    limits = JournalLimits(max_bytes=20_000)
    async with running(tmp_path / "q.db", limits) as j:
        sent = await _append_all(j, kinds)
        recs = await j.peek(10_000)
        stats = j.stats()
    gaps = _check_gaps_explain_exactly(sent, recs)
    assert all(g.attrs["class"] == 1 for g in gaps), "alarms went while states remained"
    assert sum(1 for r in recs if r.kind in ("alarm", "count")) == 50
    assert len(gaps) == stats.gaps, "a gap event was dropped"


async def test_when_only_alarms_remain_the_oldest_alarms_go_and_gaps_stay(tmp_path: Path):
    limits = JournalLimits(max_bytes=10_000)
    async with running(tmp_path / "q.db", limits) as j:
        sent = await _append_all(j, ["alarm"] * 300)
        recs = await j.peek(10_000)
        stats = j.stats()
    gaps = _check_gaps_explain_exactly(sent, recs)
    assert gaps and all(g.attrs["class"] == 2 for g in gaps)
    assert len(gaps) == stats.gaps
    alarms = [r.seq for r in recs if r.kind == "alarm"]
    assert alarms == sorted(sent)[-len(alarms):], "not the oldest alarms went first"


async def test_max_age_drops_old_events_class_by_class_with_exact_gaps(tmp_path: Path):
    clock = Clock()
    limits = JournalLimits(max_age=3600.0, maintenance_interval=3600)
    async with running(tmp_path / "q.db", limits, clock=clock) as j:
        old = await _append_all(j, ["signal", "state", "alarm", "count", "lamp", "agent"] * 5)
        clock.now += 3601 * 10**9
        young = await _append_all(j, ["signal", "alarm"])
        await j.maintain()
        recs = await j.peek(10_000)
    sent = old | young
    gaps = _check_gaps_explain_exactly(sent, recs)
    assert [g.attrs["class"] for g in gaps] == [0, 1, 2]  # lowest class first
    assert {g.name for g in gaps} == {"max_age"}
    assert {r.seq for r in recs if r.kind != "gap"} == set(young)


async def test_nothing_is_dropped_within_the_limits(tmp_path: Path):
    clock = Clock()
    limits = JournalLimits(max_bytes=1_000_000, max_age=3600.0, maintenance_interval=3600)
    async with running(tmp_path / "q.db", limits, clock=clock) as j:
        sent = await _append_all(j, ["signal", "alarm"] * 100)
        clock.now += 3599 * 10**9
        await j.maintain()
        await j.maintain()
        recs = await j.peek(10_000)
        stats = j.stats()
    assert [r.seq for r in recs] == sorted(sent)
    assert stats.dropped == 0 and stats.gaps == 0
