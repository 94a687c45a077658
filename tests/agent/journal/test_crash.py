"""Crash test: a writer process is killed with SIGKILL at random moments, again and again.

After every kill the file must hold every seq the writer reported committed (unless it asked
for that seq's ack), none it reported acked, and seqs must keep increasing across restarts.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
KILLS = int(os.environ.get("LINELIGHT_CRASH_KILLS", "30"))


@dataclass
class Reported:
    committed: set[int] = field(default_factory=set)
    ack_asked: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    boots: list[tuple[int, int]] = field(default_factory=list)  # (boot, hwm at open)

    def parse(self, line: str) -> None:
        word, *rest = line.split()
        nums = [int(x) for x in rest]
        if word == "B":
            self.boots.append((nums[0], nums[1]))
        elif word == "C":
            self.committed.add(nums[0])
        elif word == "a":
            self.ack_asked.update(nums)
        elif word == "A":
            self.acked.update(nums)


def _run_and_kill(path: Path, rng: random.Random, rep: Reported) -> int:
    """Start the writer, kill -9 it after a random amount of work; returns lines read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.journal.writer", str(path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    mode = rng.random()
    seen = 0
    deadline = time.monotonic() + 60
    if mode < 0.15:
        time.sleep(rng.uniform(0.0, 0.4))  # often lands while opening or checking the file
    else:
        want = rng.randint(1, 800)
        while seen < want and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            rep.parse(line)
            seen += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=60)
    while True:
        line = lines.get(timeout=60)
        if line is None:
            break
        rep.parse(line)
        seen += 1
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"writer ended by itself ({proc.returncode})"
    return seen


def _file_state(path: Path) -> tuple[set[int], int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        seqs = {r[0] for r in conn.execute("SELECT seq FROM events")}
        hwm = conn.execute("SELECT value FROM counters WHERE key = 'seq_hwm'").fetchone()
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return seqs, int(hwm[0]) if hwm else 0, str(check)


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_committed_event(tmp_path: Path):
    path = tmp_path / "q.db"
    rng = random.Random(0x11E11647)
    rep = Reported()
    total_lines = 0
    for _ in range(KILLS):
        highest_before = max(rep.committed, default=0)
        boots_before = len(rep.boots)
        total_lines += _run_and_kill(path, rng, rep)
        if not path.exists():
            continue  # killed before the file was created
        seqs, hwm, check = _file_state(path)
        assert check == "ok"
        lost = rep.committed - rep.ack_asked - seqs
        assert not lost, f"committed seqs missing after kill -9: {sorted(lost)[:10]}"
        resurrected = rep.acked & seqs
        assert not resurrected, f"acked seqs back in the queue: {sorted(resurrected)[:10]}"
        assert hwm >= max(seqs | rep.committed, default=0)
        if len(rep.boots) > boots_before:
            boot, hwm_at_open = rep.boots[-1]
            assert hwm_at_open >= highest_before, "seq high-water mark went backwards"
            new = {s for s in rep.committed if s > hwm_at_open}
            assert all(s > highest_before for s in new)
    boots = [b for b, _ in rep.boots]
    assert boots == sorted(boots) and len(set(boots)) == len(boots), "boot went backwards"
    assert total_lines > KILLS, "the writer never got going"
    assert len(rep.committed) > 100
    assert not list(tmp_path.glob("*.corrupt-*")), "a crash made the file look corrupt"
