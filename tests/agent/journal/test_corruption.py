"""Corruption: damaged pages, truncation, garbage. Opening succeeds, rows survive, damage is told."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from linelight.agent.journal import Journal, Record, salvage
from linelight.agent.journal import schema as schema
from tests.agent.journal.support import event, filled, running

pytestmark = pytest.mark.anyio

N = 4000


def _event_pages(path: Path) -> tuple[int, list[int]]:
    """(page size, leaf pages of the events table in key order)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        leaves = [int(r[0]) for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' ORDER BY path")]
    finally:
        conn.close()
    return size, leaves


def _overwrite(path: Path, page_size: int, pages: list[int], rng: random.Random) -> None:
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(rng.randbytes(page_size))


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _moved_aside(directory: Path) -> list[Path]:
    """The damaged files kept for forensics (not their -wal / -shm companions)."""
    return sorted(p for p in directory.glob("q.db.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _replace(path: Path, data: bytes) -> None:
    """The file becomes `data`; its -wal and -shm go (as after a bad copy)."""
    _write(path, data)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def _reopened(path: Path) -> tuple[list[Record], Journal]:
    """Open the damaged file, read everything it now holds, keep it open for more checks."""
    journal = Journal.open(str(path))
    recs: list[Record] = []
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        recs = await journal.peek(10 * N)
        tg.cancel_scope.cancel()
    return recs, journal


def _recovered_gap(recs: list[Record]) -> Record:
    gaps = [r for r in recs if r.kind == "gap" and r.name == "recovered"]
    assert len(gaps) == 1, f"expected one 'recovered' gap event, got {gaps}"
    return gaps[0]


async def test_overwritten_pages_in_the_middle_lose_only_those_rows(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    page_size, leaves = _event_pages(path)
    middle = leaves[len(leaves) // 2 - 1 : len(leaves) // 2 + 2]
    _overwrite(path, page_size, middle, random.Random(1))
    recs, journal = await _reopened(path)
    try:
        stats = journal.stats()
        new_seq = None
        async with running_again(journal) as j:
            new_seq = await j.append(event())
    finally:
        journal.close()
    kept = [r for r in recs if r.kind == "count"]
    per_page = N // len(leaves) + 2
    assert N - 3 * per_page <= len(kept) < N
    assert all(r.value == r.seq - 1 for r in kept), "a salvaged row changed"
    assert [r.seq for r in kept] == sorted(r.seq for r in kept)
    gap = _recovered_gap(recs)
    assert gap.attrs["salvaged"] == len(kept)
    assert gap.attrs["hwm_known"] is True and gap.attrs["last_seq"] == hwm
    assert "malformed" in gap.attrs["error"] or "integrity check failed" in gap.attrs["error"]
    assert _exists(gap.attrs["moved_to"])
    assert stats.recovered == 1
    assert new_seq is not None and new_seq > gap.seq > hwm


async def test_a_truncated_file_keeps_the_rows_before_the_cut(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    size = path.stat().st_size
    os.truncate(path, size * 6 // 10)
    recs, journal = await _reopened(path)
    journal.close()
    kept = [r for r in recs if r.kind == "count"]
    assert 0 < len(kept) < N
    assert all(r.value == r.seq - 1 for r in kept)
    gap = _recovered_gap(recs)
    assert gap.seq > hwm
    assert _moved_aside(tmp_path)


async def test_a_garbage_file_opens_empty_and_seq_jumps_above_anything_possible(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    _replace(path, random.Random(2).randbytes(256 * 1024))
    recs, journal = await _reopened(path)
    journal.close()
    assert journal.boot == 2, "boot went back: the lock file remembers it"
    gap = _recovered_gap(recs)
    assert [r.kind for r in recs] == ["gap"]
    assert gap.attrs["salvaged"] == 0 and gap.attrs["hwm_known"] is False
    assert gap.seq > hwm
    assert "not a database" in gap.attrs["error"]


async def test_garbage_text_where_the_file_should_be_is_salvaged_not_fatal(tmp_path: Path):
    path = tmp_path / "q.db"
    _write(path, b"this is not a database\n" * 100)
    recs, journal = await _reopened(path)
    journal.close()
    assert [r.name for r in recs] == ["recovered"]
    moved = _moved_aside(tmp_path)
    assert len(moved) == 1 and moved[0].read_text().startswith("this is not a database")


async def test_a_garbage_wal_does_not_lose_checkpointed_rows(tmp_path: Path):
    path = tmp_path / "q.db"
    await filled(path, N)
    _write(Path(str(path) + "-wal"), random.Random(3).randbytes(64 * 1024))
    recs, journal = await _reopened(path)
    journal.close()
    assert [r.value for r in recs] == list(range(N))
    assert not _moved_aside(tmp_path)


async def test_a_damaged_root_page_still_opens_and_carries_on(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'events'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    _overwrite(path, page_size, [root], random.Random(4))
    recs, journal = await _reopened(path)
    try:
        async with running_again(journal) as j:
            seq = await j.append(event())
    finally:
        journal.close()
    _recovered_gap(recs)
    assert seq is not None and seq > hwm


@asynccontextmanager
async def running_again(journal: Journal) -> AsyncIterator[Journal]:
    """Run the writer of an already open journal for a block (without closing it)."""
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        yield journal
        tg.cancel_scope.cancel()


async def test_random_damage_never_stops_the_journal_from_opening(tmp_path: Path):
    pristine = tmp_path / "pristine.db"
    hwm = await filled(pristine, N)
    data = _read(pristine)
    for seed in range(12):
        rng = random.Random(seed)
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(damaged))
            length = rng.choice([1, 16, 512, 4096, 20000])
            damaged[at : at + length] = rng.randbytes(min(length, len(damaged) - at))
        if seed % 4 == 3:
            damaged = damaged[: rng.randrange(len(damaged))]
        path = tmp_path / f"case{seed}" / "q.db"
        _write(path, bytes(damaged))
        recs, journal = await _reopened(path)
        try:
            async with running_again(journal) as j:
                seq = await j.append(event())
        finally:
            journal.close()
        kept = [r for r in recs if r.kind == "count"]
        assert all(r.value == r.seq - 1 for r in kept), f"seed {seed}: a row changed"
        assert seq is not None and seq > hwm, f"seed {seed}: seq went back to {seq}"


async def test_a_row_damaged_after_it_was_written_is_dead_lettered_not_handed_out(
        tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for i in range(5):
            await j.append(event(value=i))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET body = X'c1' WHERE seq = 3")  # 0xc1: never valid msgpack
    conn.commit()
    conn.close()
    async with running(path) as j:
        first = await j.peek(10)
        second = await j.peek(10)
        stats = j.stats()
    assert [r.seq for r in first] == [1, 2, 4, 5]
    assert [r.seq for r in second] == [1, 2, 4, 5, 6]  # 6: the gap naming seq 3
    assert second[-1].name == "dead_letter" and second[-1].attrs["first_seq"] == 3
    assert stats.dead_letters == 1 and stats.depth == 5


async def test_an_unfinished_salvage_is_thrown_away_and_done_again(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    page_size, leaves = _event_pages(path)
    _overwrite(path, page_size, leaves[5:6], random.Random(5))
    _write(Path(str(path) + ".rebuild"), b"half-written salvage" * 100)  # a crash mid-salvage
    recs, journal = await _reopened(path)
    journal.close()
    gap = _recovered_gap(recs)
    assert gap.attrs["last_seq"] == hwm and gap.attrs["salvaged"] > N // 2
    assert not _exists(str(path) + ".rebuild")
    assert len(_moved_aside(tmp_path)) == 1


async def test_a_salvage_finished_just_before_a_crash_is_put_in_place(tmp_path: Path):
    path = tmp_path / "q.db"
    hwm = await filled(path, N)
    page_size, leaves = _event_pages(path)
    _overwrite(path, page_size, leaves[5:6], random.Random(6))
    # Salvage completes into q.db.rebuild, then the process dies before the swap.
    tmp = str(path) + salvage.REBUILD_SUFFIX
    new = salvage.connect(tmp)
    schema.migrate(new, tmp)
    salvage._salvage_into(str(path), new, "test damage", str(path) + ".corrupt-test")
    salvage._fold_wal(new)
    new.close()
    recs, journal = await _reopened(path)
    journal.close()
    gap = _recovered_gap(recs)
    assert gap.attrs["error"] == "test damage" and gap.attrs["last_seq"] == hwm
    assert [r.value for r in recs if r.kind == "count"] == [
        r.seq - 1 for r in recs if r.kind == "count"]
    assert not _exists(tmp) and len(_moved_aside(tmp_path)) == 1
