"""Disk full: appends are refused without exceptions, counted, reported as a gap, and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from linelight.agent.journal import Journal, JournalLimits, Record
from tests.agent.journal.support import drain, event, running
from tests.fixtures.diskfull import fill_disk

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[3]

PAD = "x" * 300


async def _fill_until_refused(j: Journal, refusals: int = 5) -> tuple[list[int], int]:
    """Append until the disk refuses `refusals` times; returns (accepted seqs, refused)."""
    accepted: list[int] = []
    refused = 0
    for i in range(200_000):
        seq = await j.append(event("count", "parts", i, pad=PAD))
        if seq is None:
            refused += 1
            if refused >= refusals:
                break
        else:
            assert refused == 0, "an append succeeded between refusals on a full disk"
            accepted.append(seq)
    assert refused == refusals, "the disk never filled up"
    return accepted, refused


def _disk_full_gap(recs: list[Record]) -> Record:
    gaps = [r for r in recs if r.kind == "gap"]
    assert len(gaps) == 1, gaps
    assert gaps[0].name == "disk_full"
    return gaps[0]


async def test_database_size_ceiling_refuses_counts_and_resumes(tmp_path: Path):
    limits = JournalLimits(max_file_bytes=256 * 1024, min_free_disk=0)
    async with running(tmp_path / "q.db", limits) as j:
        accepted, refused = await _fill_until_refused(j)
        for i in range(10):
            j.submit(event("signal", "lost", i))  # must not raise either
        await j.peek(1)  # requests run after the rows handed off before them
        assert j.stats().dropped == refused + 10
        health = j.health
        assert not health.ok and "disk full" in str(health)
        drained = await drain(j)  # acks free the space
        assert [r.seq for r in drained if r.kind == "count"] == accepted
        seq = await j.append(event("alarm", "back", True))
        recs = drained + await j.peek(100)
        stats = j.stats()
    assert seq is not None and seq > accepted[-1] + refused + 10
    gap = _disk_full_gap(recs)
    assert gap.attrs["first_seq"] == accepted[-1] + 1
    assert gap.attrs["last_seq"] == accepted[-1] + refused + 10
    assert gap.attrs["count"] == refused + 10
    assert gap.attrs["kinds"] == {"count": refused, "signal": 10}
    assert stats.health.ok
    assert stats.dropped == refused + 10 and stats.gaps == 1


def _leftovers(directory: Path) -> list[Path]:
    return [*directory.glob("q.db.rebuild*"), *directory.glob("q.db.corrupt*")]


def _remove(path: Path) -> None:
    path.unlink()


@pytest.mark.root
async def test_a_full_filesystem_refuses_then_resumes_when_space_returns(tiny_fs: Path):
    limits = JournalLimits(min_free_disk=0, maintenance_interval=0.05)
    async with running(tiny_fs / "q.db", limits) as j:
        first = await j.append(event("count", "parts", 0))
        ballast = fill_disk(tiny_fs)
        accepted, refused = await _fill_until_refused(j, refusals=3)
        assert not j.health.ok and "disk full" in str(j.health)
        _remove(ballast)
        seq = await j.append(event("alarm", "back", True))
        recs = await j.peek(100_000)
        stats = j.stats()
    assert seq is not None
    kept = [r.seq for r in recs if r.kind == "count"]
    assert kept == [first, *accepted]
    gap = _disk_full_gap(recs)
    assert gap.attrs["count"] == refused == stats.dropped
    assert gap.attrs["first_seq"] == (accepted or [first])[-1] + 1
    assert stats.health.ok


@pytest.mark.root
async def test_low_free_disk_caps_the_queue_and_drops_the_lowest_class_first(tiny_fs: Path):
    limits = JournalLimits(min_free_disk=1024 * 1024, maintenance_interval=3600)
    async with running(tiny_fs / "q.db", limits) as j:
        alarm = await j.append(event("alarm", "estop", True))
        for _ in range(120):
            for i in range(50):
                j.submit(event("signal", "press.temp", i, pad=PAD))
            await j.maintain()  # the free-disk check, after every chunk
        stats = j.stats()
        recs = await j.peek(100_000)
    assert any(r.seq == alarm for r in recs), "the alarm went before the signals"
    gaps = [r for r in recs if r.kind == "gap"]
    assert gaps and all(g.name == "low_disk" and g.attrs["kinds"] == {"signal": g.value}
                        for g in gaps), "refused or dropped for another reason than the reserve"
    assert not stats.health.ok and "below the reserve" in str(stats.health)
    assert stats.dropped == sum(g.value for g in gaps)
    assert len(gaps) * 20 <= stats.dropped, "room is made in steps, not one event per commit"


_REFUSE_THEN_HANG = """
import sys, time, anyio
from linelight.agent.journal import Event, Journal, JournalLimits

async def main():
    j = Journal.open(sys.argv[1], JournalLimits(max_file_bytes=256 * 1024, min_free_disk=0))
    async with anyio.create_task_group() as tg:
        await tg.start(j.run)
        accepted, refused = [], 0
        while refused < 3:
            seq = await j.append(Event("count", "parts", 1, time.time_ns(), {"pad": "x" * 300}))
            if seq is None:
                refused += 1
            else:
                accepted.append(seq)
        await j.ack([accepted[0]])  # this commit succeeds: acks make room
        print("READY", accepted[-1], flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


def test_a_crash_while_refused_events_wait_for_their_gap_leaves_no_unexplained_hole(
        tmp_path: Path):
    path = tmp_path / "q.db"
    proc = subprocess.Popen([sys.executable, "-c", _REFUSE_THEN_HANG, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "READY", f"writer said {line}"
        last_accepted = int(line[1])
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    async def reopen() -> tuple[int | None, list[Record]]:
        async with running(path, JournalLimits(min_free_disk=0)) as j:
            queued = await j.peek(100_000)
            await j.ack([r.seq for r in queued])
            return await j.append(event("alarm", "after", True)), queued

    seq, queued = anyio.run(reopen)
    assert seq is not None
    gaps = [r for r in queued if r.kind == "gap"]
    explained = {g.seq for g in gaps}
    for g in gaps:
        explained.update(range(g.attrs["first_seq"], g.attrs["last_seq"] + 1))
    # Either the refused events' gap became durable before the crash, or their seqs were
    # never persisted and are used again: never a hole that no gap explains.
    hole = [s for s in range(last_accepted + 1, seq) if s not in explained]
    assert not hole, f"seqs {hole} are missing and no gap names them"


@pytest.mark.root
async def test_a_full_disk_at_open_starts_degraded_counts_and_recovers(tiny_fs: Path):
    path = tiny_fs / "q.db"
    async with running(path, JournalLimits(min_free_disk=0)) as j:
        kept = await j.append(event("count", "parts", 1))
        boot = j.boot
    ballast = fill_disk(tiny_fs)
    limits = JournalLimits(min_free_disk=0, maintenance_interval=0.05)
    async with running(path, limits) as j:  # a healthy journal on a full disk: no exception
        assert j.boot == boot + 1
        assert not j.health.ok and "cannot be opened" in str(j.health)
        refused = [await j.append(event("signal", "lost", i)) for i in range(7)]
        assert refused == [None] * 7
        assert j.stats().dropped == 7
        _remove(ballast)
        with anyio.fail_after(10):
            while not j.health.ok:  # a maintenance pass opens the file
                await j.maintain()
        seq = await j.append(event("alarm", "back", True))
        assert seq is not None
        recs = await j.peek(1000)
        stats = j.stats()
    assert not _leftovers(tiny_fs), "a full disk was taken for damage"
    assert [r.seq for r in recs if r.kind == "count"] == [kept]
    gap = _disk_full_gap(recs)
    assert gap.attrs["count"] == 7 and gap.attrs["first_seq"] > kept
    assert seq > gap.attrs["last_seq"]
    assert stats.health.ok and stats.dropped == 7 and stats.boot == boot + 1


_FULL_THEN_DIE = """
import os, sys, time, anyio
from linelight.agent.journal import Event, Journal, JournalLimits

async def main():
    j = Journal.open(sys.argv[1], JournalLimits(min_free_disk=0))
    async with anyio.create_task_group() as tg:
        await tg.start(j.run)
        for i in range(int(sys.argv[2])):
            await j.append(Event("signal", "lost", i, time.time_ns(), {}))
        print("HWM", j.stats().seq_hwm, j.stats().dropped, flush=True)
        os.kill(os.getpid(), 9)

anyio.run(main)
"""


@pytest.mark.root
def test_events_refused_on_a_full_disk_are_announced_after_a_kill_and_no_seq_is_reused(
        tiny_fs: Path):
    path = tiny_fs / "q.db"

    async def first() -> int:
        async with running(path, JournalLimits(min_free_disk=0)) as j:
            seq = await j.append(event("count", "parts", 1))
            assert seq is not None
            return seq

    kept = anyio.run(first)
    ballast = fill_disk(tiny_fs)
    done = subprocess.run([sys.executable, "-c", _FULL_THEN_DIE, str(path), "300"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    _hwm, hwm, dropped = done.stdout.split()
    _remove(ballast)

    async def reopen() -> tuple[list[Record], int | None, int]:
        async with running(path, JournalLimits(min_free_disk=0)) as j:
            recs = await drain(j)
            return recs, await j.append(event("alarm", "after", True)), j.stats().dropped

    recs, seq, dropped_after = anyio.run(reopen)
    gap = _disk_full_gap(recs)
    assert gap.attrs["count"] == 300 and gap.attrs["first_seq"] > kept
    assert gap.attrs["last_seq"] <= int(hwm)
    assert seq is not None and seq > int(hwm), "a seq announced as lost was issued again"
    assert dropped_after >= int(dropped) == 300, "the drop counter went backwards"


@pytest.mark.root
async def test_a_long_outage_on_a_small_disk_leaves_few_gap_rows_and_never_wedges(
        tiny_fs: Path):
    limits = JournalLimits(maintenance_interval=3600)  # the shipped 64MiB reserve, 2MiB disk
    async with running(tiny_fs / "q.db", limits) as j:
        for chunk in range(300):
            for i in range(50):
                j.submit(event("signal", "press.temp", i, pad=PAD))
            j.submit(event("state", "machine", chunk))
            await j.maintain()
        last = await j.append(event("alarm", "estop", True))
        recs = await j.peek(1_000_000)
        stats = j.stats()
    gaps = [r for r in recs if r.kind == "gap"]
    assert last is not None, "the queue wedged: an alarm was refused after the outage"
    assert gaps and {g.name for g in gaps} == {"low_disk"}, [g.attrs for g in gaps]
    assert len(gaps) <= 4, f"{len(gaps)} gap rows: gaps do not coalesce"
    assert stats.dropped == sum(g.attrs["count"] for g in gaps)
    signals = {r.seq for r in recs if r.kind == "signal"}
    for g in gaps:  # each range means exactly: no event of its class in it was kept
        assert not any(g.attrs["first_seq"] <= s <= g.attrs["last_seq"] for s in signals
                       if g.attrs["class"] == 0)


@pytest.mark.root
def test_a_start_on_a_full_disk_after_a_kill_keeps_every_committed_event(tiny_fs: Path):
    path = tiny_fs / "q.db"
    done = subprocess.run([sys.executable, "-c", _FULL_THEN_DIE, str(path), "50"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr  # killed with its events in the -wal
    ballast = fill_disk(tiny_fs)

    async def on_full_disk() -> tuple[bool, int | None]:
        async with running(path, JournalLimits(min_free_disk=0)) as j:
            return j.health.ok, await j.append(event("alarm", "full", True))

    healthy, refused = anyio.run(on_full_disk)
    assert refused is None and not healthy
    assert not _leftovers(tiny_fs), "a full disk was taken for damage"
    _remove(ballast)

    async def after() -> list[Record]:
        async with running(path, JournalLimits(min_free_disk=0)) as j:
            return await j.peek(1000)

    recs = anyio.run(after)
    assert [r.value for r in recs if r.kind == "signal"] == list(range(50))
    assert [r.attrs["count"] for r in recs if r.kind == "gap"] == [1]
