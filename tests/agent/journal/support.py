"""Helpers for the journal tests: a running journal, event factories, raw reads of the file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from linelight.agent.journal import Event, Journal, JournalLimits


@asynccontextmanager
async def running(path: Path | str, limits: JournalLimits | None = None,
                  clock: Callable[[], int] = time.time_ns) -> AsyncIterator[Journal]:
    """An open journal with its writer running; closed (and flushed) on exit."""
    journal = Journal.open(str(path), limits, clock=clock)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            yield journal
            tg.cancel_scope.cancel()
    finally:
        journal.close()


async def filled(path: Path | str, n: int) -> int:
    """A closed journal of `n` count events whose value is i (padded to about 100 bytes);
    returns its seq high-water mark."""
    async with running(path) as j:
        for i in range(n):
            j.submit(event("count", "parts", i, pad="p" * 60))
        with anyio.fail_after(60):
            await j.wait_new(n - 1)
        return j.stats().seq_hwm


def event(kind: str = "signal", name: str = "press.temp", value: Any = 1.5,
          **attrs: Any) -> Event:
    return Event(kind, name, value, time.time_ns(), attrs)


def rows(path: Path | str, sql: str = "SELECT seq FROM events ORDER BY seq") -> list[Any]:
    """Read the file directly (read-only), independent of the Journal class."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] if len(r) == 1 else r for r in conn.execute(sql)]
    finally:
        conn.close()


async def drain(journal: Journal, batch: int = 500) -> list[Any]:
    """Peek and ack everything queued; returns the records in the order they came."""
    out = []
    while True:
        recs = await journal.peek(batch)
        if not recs:
            return out
        out.extend(recs)
        await journal.ack([r.seq for r in recs])


def counted(path: Path | str) -> tuple[int, int]:
    """(rows, accounted bytes) of the queue as a full count of the file finds them."""
    [(n, size)] = rows(path, "SELECT count(*), coalesce(sum(size), 0) FROM events")
    return int(n), int(size)


def edit_file(path: Path | str, sql: str, *args: object) -> None:
    """Change the file behind the journal's back, as another program would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()
