"""Damaged or deleted files beside the journal: announced, seq never reused, no crash loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from linelight.agent.journal import Journal, JournalError, Record
from tests.agent.journal.support import drain, edit_file, event, running

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[3]

# Commits events and is killed before it can checkpoint: the events live in the -wal only.
_WRITE_THEN_DIE = """
import os, sys, time, anyio
from linelight.agent.journal import Event, Journal

async def main():
    j = Journal.open(sys.argv[1])
    j._store.conn.execute("PRAGMA wal_autocheckpoint = 0")  # keep every commit in the -wal
    async with anyio.create_task_group() as tg:
        await tg.start(j.run)
        for i in range(int(sys.argv[2])):
            await j.append(Event("count", "parts", i, time.time_ns(), {}))
        os.kill(os.getpid(), 9)

anyio.run(main)
"""


def _write_then_die(path: Path, n: int) -> None:
    done = subprocess.run([sys.executable, "-c", _WRITE_THEN_DIE, str(path), str(n)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr


def _cut_wal(path: Path, keep: float) -> None:
    """Delete the -wal (keep 0) or cut it to that fraction of its size."""
    wal = Path(str(path) + "-wal")
    if keep == 0:
        wal.unlink()
    else:
        os.truncate(wal, int(wal.stat().st_size * keep))


def _write_lock(path: Path, text: bytes) -> None:
    Path(str(path) + ".lock").write_bytes(text)


async def _everything(path: Path) -> tuple[list[Record], int | None, int]:
    async with running(path) as j:
        recs = await drain(j)
        seq = await j.append(event("alarm", "after", True))
        return recs, seq, j.boot


def _lost(recs: list[Record]) -> Record:
    gaps = [r for r in recs if r.kind == "gap" and r.name == "lost"]
    assert len(gaps) == 1, f"expected one 'lost' gap, got {gaps}"
    return gaps[0]


async def test_a_deleted_wal_is_announced_and_seq_and_boot_jump_past_it(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:  # boot 1: a checkpointed row, so the file has its tables
        await j.append(event("count", "parts", -1))
    _write_then_die(path, 50)  # boot 2: seqs 2..51 (plus its start) only in the -wal
    _cut_wal(path, keep=0)
    recs, seq, boot = await _everything(path)
    gap = _lost(recs)
    assert gap.attrs["last_seq"] >= 51 and gap.attrs["first_seq"] <= 2
    assert seq is not None and seq > gap.attrs["last_seq"], "a seq was issued twice"
    assert boot == 3, "boot went back with the lost -wal"


async def test_a_truncated_wal_is_announced_and_no_seq_is_reused(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        await j.append(event("count", "parts", -1))
    _write_then_die(path, 200)
    _cut_wal(path, keep=0.5)
    recs, seq, _ = await _everything(path)
    kept = [r.seq for r in recs if r.kind == "count"]
    gap = _lost(recs)
    assert kept and gap.attrs["first_seq"] == max(kept) + 1
    assert gap.attrs["last_seq"] >= 201
    assert seq is not None and seq > gap.attrs["last_seq"]


@pytest.mark.parametrize("value", ["'abc'", "x'c1'", "1.5", "-3"])
async def test_a_counter_sqlite_cannot_see_is_wrong_is_salvaged_not_a_crash(
        tmp_path: Path, value: str):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for i in range(20):
            await j.append(event("count", "parts", i))
        hwm = j.stats().seq_hwm
    edit_file(path, f"UPDATE counters SET value = {value} WHERE key = 'seq_hwm'")
    recs, seq, _ = await _everything(path)
    assert [r.value for r in recs if r.kind == "count"] == list(range(20))
    assert any(r.name == "recovered" and "seq_hwm" in r.attrs["error"] for r in recs)
    assert seq is not None and seq > hwm


async def test_a_meta_value_that_cannot_be_decoded_is_salvaged_not_a_crash(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        await j.put_meta("good", {"parts": 3})
        await j.append(event("count", "parts", 1))
    edit_file(path, "INSERT INTO meta(key, value) VALUES ('bad', x'c1')")
    async with running(path) as j:
        recs = await j.peek(100)
        assert j.get_meta("good") == {"parts": 3}
        assert j.get_meta("bad") is None
    assert any(r.name == "recovered" and "meta value 'bad'" in r.attrs["error"] for r in recs)


async def test_a_body_of_the_wrong_shape_is_dead_lettered_and_the_rest_flows(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for i in range(5):
            await j.append(event("count", "parts", i))
    edit_file(path, "UPDATE events SET body = ? WHERE seq = 3", msgpack.packb([1, 5]))
    async with running(path) as j:
        recs = await drain(j)
        stats = j.stats()
    assert [r.value for r in recs if r.kind == "count"] == [0, 1, 3, 4]
    gap = next(r for r in recs if r.kind == "gap")
    assert gap.attrs["reason"] == "dead_letter" and gap.attrs["first_seq"] == 3
    assert stats.dead_letters == 1


def test_deleting_the_lock_file_does_not_let_a_second_journal_open(tmp_path: Path):
    path = tmp_path / "q.db"
    first = Journal.open(str(path))
    try:
        Path(str(path) + ".lock").unlink()
        with pytest.raises(JournalError, match="already open in another process"):
            Journal.open(str(path))
    finally:
        first.close()


@pytest.mark.parametrize("text", [b"\xff\xfe garbage", b'{"counters": {"seq_hwm": "x"}}',
                                  b'{"counters": {"boot": 99999999999999999999999}}', b"[1,2]"])
async def test_a_garbled_lock_file_never_stops_the_journal(tmp_path: Path, text: bytes):
    path = tmp_path / "q.db"
    async with running(path) as j:
        first = await j.append(event("count", "parts", 1))
    _write_lock(path, text)
    recs, seq, boot = await _everything(path)
    assert [r.seq for r in recs if r.kind == "count"] == [first]
    assert seq is not None and first is not None and seq > first
    assert boot == 2
