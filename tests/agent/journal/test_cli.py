"""`linelight queue stats|tail|export`: reads the journal offline and never changes it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from linelight.agent.cli import main
from tests.agent.journal.support import event, running


async def _make(path: Path) -> None:
    async with running(path) as j:
        for i in range(20):
            await j.append(event("signal", "press.temp", i * 1.5))
        await j.append(event("alarm", "estop", True, by="operator"))
        await j.append(event("state", "machine", 10000, prev="idle", raw=b"\x00\x01"))
        await j.ack([1, 2])
        await j.dead_letter(3, "broker refused")


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    anyio.run(_make, path)
    return path


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.glob(path.name + "*")) if not p.name.endswith("-shm")}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["queue", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_reports_depth_range_drops_and_does_not_touch_the_file(journal_file, capsys):
    before = _digest(journal_file)
    code, out, _ = _run(capsys, "stats", "--db", str(journal_file), "--json")
    stats = json.loads(out)
    assert code == 0
    assert (stats["depth"], stats["oldest_seq"], stats["newest_seq"]) == (20, 4, 23)
    assert stats["by_kind"] == {"alarm": 1, "gap": 1, "signal": 17, "state": 1}
    assert stats["gaps_queued"] == 1 and stats["gaps_total"] == 1
    assert stats["dead_letters_total"] == 1 and stats["dropped"] == 0 and stats["boot"] == 1
    assert stats["oldest_ts"].endswith("Z") and stats["bytes"] > 0
    code, text, _ = _run(capsys, "stats", "--db", str(journal_file))
    assert code == 0 and "depth" in text and "20" in text
    assert _digest(journal_file) == before


def test_tail_shows_the_newest_events_oldest_first(journal_file, capsys):
    code, out, _ = _run(capsys, "tail", "-n", "3", "--db", str(journal_file))
    lines = out.splitlines()[:2]
    assert code == 0 and len(out.splitlines()) == 3
    assert "alarm" in lines[0] and 'estop = true  {"by": "operator"}' in lines[0]
    assert lines[1].split()[0] == "22" and "base64:AAE=" in lines[1]
    code, out, _ = _run(capsys, "tail", "--json", "--kind", "signal", "-n", "1",
                        "--db", str(journal_file))
    assert json.loads(out)["value"] == 28.5


def test_export_writes_json_lines_and_csv(journal_file, tmp_path, capsys):
    code, out, _ = _run(capsys, "export", "--db", str(journal_file), "--after", "20")
    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in recs] == [21, 22, 23]
    assert recs[1]["attrs"] == {"prev": "idle", "raw": "base64:AAE="}
    target = tmp_path / "out.csv"
    code, _, err = _run(capsys, "export", "--db", str(journal_file), "--format", "csv",
                        "--out", str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert code == 0 and "exported 20 events" in err
    assert [int(r["seq"]) for r in rows] == list(range(4, 24))
    assert rows[-2]["kind"] == "state" and json.loads(rows[-2]["attrs"])["prev"] == "idle"
    assert rows[-1]["kind"] == "gap" and rows[-1]["name"] == "dead_letter"
    code, out, _ = _run(capsys, "export", "--dead-letters", "--db", str(journal_file))
    dead = json.loads(out)
    assert (dead["seq"], dead["reason"]) == (3, "broker refused")


def test_reads_a_journal_the_agent_has_open(tmp_path, capsys):
    path = tmp_path / "live.db"

    async def live() -> tuple[int, str]:
        async with running(path) as j:
            for i in range(5):
                await j.append(event(value=i))
            code, out, _ = _run(capsys, "stats", "--json", "--db", str(path))
            await j.append(event(value=5))
            return code, out

    code, out = anyio.run(live)
    assert code == 0 and json.loads(out)["depth"] == 5


def test_missing_garbage_and_foreign_files_are_one_sentence_and_exit_1(tmp_path, capsys):
    code, _, err = _run(capsys, "stats", "--db", str(tmp_path / "none.db"))
    assert code == 1 and f"no journal at {tmp_path / 'none.db'}" in err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x07" * 8192)
    code, _, err = _run(capsys, "tail", "--db", str(garbage))
    assert code == 1 and "garbage.db cannot be read as a journal" in err
    assert garbage.read_bytes() == b"\x07" * 8192
    foreign = tmp_path / "foreign.db"  # an SQLite file, but not a journal
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (a)")
    conn.close()
    code, _, err = _run(capsys, "export", "--db", str(foreign))
    assert code == 1 and "is not a linelight journal" in err


def test_export_names_a_row_it_cannot_decode_and_lists_the_rest(journal_file, capsys):
    import msgpack

    conn = sqlite3.connect(journal_file)
    conn.execute("UPDATE events SET body = ? WHERE seq = 5", (msgpack.packb([1, 5]),))
    conn.commit()
    conn.close()
    code, out, err = _run(capsys, "export", "--db", str(journal_file))
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert code == 1
    assert 5 not in seqs and 4 in seqs and 6 in seqs
    assert "event seq 5 (signal/press.temp) cannot be decoded" in err
    assert "Traceback" not in err
