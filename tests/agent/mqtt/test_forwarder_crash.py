"""The forwarder as a real process, killed with SIGKILL: nothing lost, order kept, will fires."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber, dedup_in_order
from linelight.agent.journal import Journal
from tests.agent.mqtt.forwarder_proc import AGENT, fill_journal

pytestmark = pytest.mark.slow

PROC = Path(__file__).with_name("forwarder_proc.py")
EVENTS = f"linelight/{AGENT}/events/"
STATUS = f"linelight/{AGENT}/status"
REPO = Path(__file__).resolve().parents[3]


class Proc:
    """forwarder_proc.py as a child process; `wait_line` reads its stdout with a deadline."""

    def __init__(self, db: Path, broker: Mosquitto, inflight: int) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(PROC), "--db", str(db), "--host", broker.host,
             "--port", str(broker.port), "--inflight", str(inflight)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()

    def wait_line(self, text: str, timeout: float = 60) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: text in self.lines or self.popen.poll() is not None,
                                       timeout):
                raise TimeoutError(f"forwarder process did not print {text!r} in {timeout}s")
            if text not in self.lines:
                raise RuntimeError(f"forwarder process exited with {self.popen.returncode} "
                                   f"before printing {text!r}")

    def kill9(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)
        self._thread.join(10)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@contextmanager
def forwarder_process(db: Path, broker: Mosquitto, inflight: int = 64) -> Iterator[Proc]:
    proc = Proc(db, broker, inflight)
    try:
        yield proc
    finally:
        if proc.popen.poll() is None:
            proc.kill9()


def make_backlog(db: Path, count: int) -> int:
    async def fill() -> int:
        journal = Journal.open(str(db))
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(journal.run)
                last = await fill_journal(journal, count)
                tg.cancel_scope.cancel()
            return last
        finally:
            journal.close()
    return anyio.run(fill)


def journal_depth(db: Path) -> int:
    journal = Journal.open(str(db))
    try:
        return journal.stats().depth
    finally:
        journal.close()


def test_kill_9_during_replay_loses_nothing_and_keeps_order(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    inflight, kills, backlog = 64, 22, 60_000
    db = tmp_path / "journal.db"
    last = make_backlog(db, backlog)
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    rng = random.Random(20261122)
    progress = []
    for _ in range(kills):
        before = len(sub.seqs(EVENTS))
        with forwarder_process(db, mosquitto, inflight) as proc:
            proc.wait_line("connected")
            # A random moment during the replay: after some deliveries, at a random delay.
            sub.wait_for(lambda ms, b=before: len(ms) > b, 60, "progress after restart")
            threading.Event().wait(rng.uniform(0.0, 0.05))
            proc.kill9()
        progress.append(len(sub.seqs(EVENTS)) - before)
    with forwarder_process(db, mosquitto, inflight) as proc:
        seqs = sub.wait_for_seqs(set(range(1, last + 1)), EVENTS, 110)
        proc.wait_line("drained")
    assert journal_depth(db) == 0
    assert dedup_in_order(seqs) == list(range(1, last + 1)), "lost or reordered events"
    duplicates = sum(n - 1 for n in Counter(seqs).values())
    assert duplicates <= kills * inflight, (duplicates, kills * inflight)
    # Every run was killed mid-replay: after delivering something, before the end.
    assert all(p > 0 for p in progress) and sum(progress) < last, progress


def test_last_will_reads_offline_after_the_agent_is_killed(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, STATUS)
    with forwarder_process(tmp_path / "journal.db", mosquitto) as proc:
        proc.wait_line("connected")
        sub.wait_for(lambda ms: sub.last_on(STATUS) is not None
                     and sub.last_on(STATUS).decoded.get("status") == "online",  # type: ignore[union-attr]
                     30, "online status")
        online = sub.last_on(STATUS)
        proc.kill9()
    assert online is not None and online.decoded["agent"] == AGENT
    assert online.decoded["version"] == "test" and online.decoded["boot"] >= 1
    sub.wait_for(lambda ms: sub.last_on(STATUS).decoded.get("status") == "offline",  # type: ignore[union-attr]
                 30, "offline will")
    # Retained: a consumer that looks later still reads `offline`.
    late = make_subscriber(mosquitto, STATUS)
    got = late.wait_for(lambda ms: len(ms) >= 1, 30, "retained status")
    assert got[0].retain and got[0].decoded["status"] == "offline"

