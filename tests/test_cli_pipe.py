"""Printing commands piped into a reader that stops early (`| head`) exit quietly with 141."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.agent.journal.support import event, running

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "rules"


async def _make_journal(path: Path, count: int = 50) -> None:
    async with running(path) as j:
        for i in range(count):
            await j.append(event("signal", "press.temp", i * 1.5))


def _closed_reader(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run `linelight ARGV` with a stdout pipe whose reader has gone before anything is written
    (like `head -0`): every write to stdout fails with EPIPE, deterministically."""
    proc = subprocess.Popen([sys.executable, "-m", "linelight.agent", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=60), b"", err)


@pytest.mark.parametrize("argv", [
    ["schema", "rules"],
    ["schema", "config"],
    ["check", "--rules", str(EXAMPLES / "press.toml")],
    ["rules", "test", *sorted(str(p) for p in (EXAMPLES / "tests").glob("*.toml"))],
], ids=["schema rules", "schema config", "check", "rules test"])
def test_a_reader_that_closes_early_gets_no_traceback(argv: list[str]) -> None:
    done = _closed_reader(*argv)
    assert done.stderr.decode() == ""
    assert done.returncode == 141


@pytest.mark.parametrize("how", [["tail", "-n", "50"], ["export"]])
def test_queue_tail_and_export_into_a_closed_pipe_exit_quietly(tmp_path: Path,
                                                               how: list[str]) -> None:
    db = tmp_path / "journal.db"
    anyio.run(_make_journal, db)
    done = _closed_reader("queue", *how[:1], "--db", str(db), *how[1:])
    assert done.stderr.decode() == ""
    assert done.returncode == 141


def test_head_reading_one_line_of_a_long_export_leaves_no_traceback(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    anyio.run(_make_journal, db, 5000)  # far more than a pipe buffer holds: head cuts it short
    script = (f"{sys.executable} -m agent queue export --db {db} 2>err | head -n 1 >first; "
              "echo ${PIPESTATUS[0]} >rc")
    subprocess.run(script, shell=True, executable="/bin/bash", cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert '"press.temp"' in (tmp_path / "first").read_text()
    assert (tmp_path / "err").read_text() == ""
    assert (tmp_path / "rc").read_text().strip() == "141"
