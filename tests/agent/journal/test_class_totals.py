"""The per-class row and byte totals an open reads instead of counting the whole table.

A 1,000,000-row count took 0.46 s of every start before the first lamp write (bench/agent.py,
issue 16); the totals are written with the rows in each commit, and an open trusts them only
when nothing else has written the file since (docs/journal.md, "Opening a large queue").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linelight.agent.journal import JournalLimits
from tests.agent.journal.support import counted, drain, edit_file, event, running

pytestmark = pytest.mark.anyio


async def _fill(path: Path) -> None:
    """Mixed classes, retention drops (with their gap rows) and acks: every way rows change."""
    limits = JournalLimits(max_bytes=20_000)
    async with running(path, limits) as journal:
        for i in range(400):
            await journal.append(event("signal" if i % 3 else "state", f"n{i % 7}", i))
        assert journal.stats().dropped > 0, "the test needs retention drops"
        recs = await journal.peek(25)
        await journal.ack([r.seq for r in recs[::2]])
        assert (journal.stats().depth, journal.stats().bytes) == counted(path)


async def test_totals_written_with_the_rows_match_a_count_after_drops_acks_and_reopen(
        tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    await _fill(path)
    async with running(path) as journal:
        assert (journal.stats().depth, journal.stats().bytes) == counted(path)
        await drain(journal)
        assert (journal.stats().depth, journal.stats().bytes) == (0, 0) == counted(path)
    async with running(path) as journal:
        assert journal.stats().depth == 0


async def test_an_open_trusts_the_totals_its_own_last_commit_wrote(tmp_path: Path) -> None:
    """White box: a total changed behind the journal's back, with the boot, the high-water
    mark and both ends as they were, is what the next open reports: it did not count."""
    path = tmp_path / "q.db"
    await _fill(path)
    rows, _ = counted(path)
    edit_file(path, "UPDATE counters SET value = value - 1 WHERE key = 'class_depth.0'")
    async with running(path) as journal:
        assert journal.stats().depth == rows - 1


@pytest.mark.parametrize("edit", [
    # what an older linelight does to a file: every open increments the boot...
    "UPDATE counters SET value = value + 1 WHERE key = 'boot'",
    # ...and acks delete the oldest rows; a hand edit may delete the newest
    "DELETE FROM events WHERE seq = (SELECT min(seq) FROM events)",
    "DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)",
    # totals that cannot be right for the seq range they claim
    "UPDATE counters SET value = 10000000 WHERE key = 'class_depth.0'",
    "INSERT INTO counters(key, value) VALUES ('class_depth.99', 1)",
])
async def test_a_file_written_by_anything_else_is_counted_again(tmp_path: Path,
                                                                edit: str) -> None:
    path = tmp_path / "q.db"
    await _fill(path)
    if "boot" in edit:  # a foreign open that also took the oldest row
        edit_file(path, "DELETE FROM events WHERE seq = (SELECT min(seq) FROM events)")
    edit_file(path, edit)
    async with running(path) as journal:
        assert (journal.stats().depth, journal.stats().bytes) == counted(path)
