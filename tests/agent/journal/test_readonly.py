"""The one read-only open (agent.journal.readonly): every reader finds the journal whatever
characters its path holds, and none of them writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from linelight.agent.cli import doctor, main
from linelight.agent.journal import Record, connect_readonly, read_records
from linelight.agent.journal.unopened import read_quietly
from tests.agent.journal.support import filled, running

# SQLite URI syntax: `#` starts a fragment, `?` the options, `%` an escape
ODD = "line #2 ?mode=rw %41"
N = 400


@pytest.fixture
def odd_journal(tmp_path: Path) -> Path:
    path = tmp_path / ODD / "journal.db"
    path.parent.mkdir()
    anyio.run(filled, path, N)
    return path


def test_queue_doctor_and_the_unopened_reader_find_a_journal_under_an_odd_path(
        odd_journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "stats", "--db", str(odd_journal), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["depth"] == N

    report = doctor.Report()
    doctor.check_journal(report, SimpleNamespace(journal_path=odd_journal,
                                                 data_dir=odd_journal.parent))
    [finding] = report.findings
    assert (finding.level, finding.detail) == ("ok", f"integrity ok, {N} events queued")

    counters, _ = read_quietly(str(odd_journal))
    assert counters["seq_hwm"] == N

    conn = connect_readonly(str(odd_journal), immutable=False)  # the forwarder process's
    try:
        assert len(read_records(conn, str(odd_journal), 10, 0, N)[0]) == 10
    finally:
        conn.close()
    # nothing opened (or created) a file where an unquoted URI would have pointed
    assert sorted(p.name for p in odd_journal.parent.parent.iterdir()) == [ODD]


def test_salvage_reads_a_damaged_journal_under_an_odd_path(odd_journal: Path) -> None:
    os.truncate(odd_journal, odd_journal.stat().st_size * 6 // 10)

    async def reopened() -> list[Record]:
        async with running(odd_journal) as j:
            return await j.peek(10 * N)

    recs = anyio.run(reopened)
    [gap] = [r for r in recs if r.kind == "gap" and r.name == "recovered"]
    kept = [r for r in recs if r.kind == "count"]
    assert gap.attrs["salvaged"] == len(kept) > N // 3
