"""Crash-test subprocess: appends and acks forever, reporting on stdout what became durable.

    python -m tests.agent.journal.writer PATH

Lines: `B boot hwm` once opened; `C seq` after `append` returned (committed); `a s1 s2 ...`
before asking for an ack; `A s1 s2 ...` after the ack returned (deleted for good). The test
kills this process with SIGKILL at random moments and checks the file against these lines.
"""

from __future__ import annotations

import sys
import time

import anyio

from linelight.agent.journal import Event, Journal, JournalLimits


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _appender(journal: Journal, worker: int) -> None:
    n = 0
    while True:
        n += 1
        kind = ("signal", "state", "count", "alarm")[n % 4]
        seq = await journal.append(Event(kind, f"w{worker}", n, time.time_ns(), {"pad": "x" * 40}))
        _say(f"C {seq}")
        if n % 7 == 0:
            for i in range(5):  # fire-and-forget hand-offs share the next commit
                journal.submit(Event("signal", f"s{worker}", i, time.time_ns()))


async def _acker(journal: Journal) -> None:
    after = 0
    while True:
        await journal.wait_new(after)
        recs = await journal.peek(40)
        if not recs:
            after = journal.newest_seq
            continue
        chosen = [r.seq for r in recs[: max(1, len(recs) // 2)]]
        _say("a " + " ".join(map(str, chosen)))
        await journal.ack(chosen)
        _say("A " + " ".join(map(str, chosen)))
        after = recs[-1].seq


async def main(path: str) -> None:
    journal = Journal.open(path, JournalLimits(commit_window=0.001, maintenance_interval=0.05))
    _say(f"B {journal.boot} {journal.stats().seq_hwm}")
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        for worker in range(3):
            tg.start_soon(_appender, journal, worker)
        tg.start_soon(_acker, journal)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
