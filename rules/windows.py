"""Rolling windows: how much happened within the last N seconds of scan time, in bounded memory.

`count_of(c, 10m)` counts the rising edges of a condition, `increase(parts, 10m)` sums a
counter's increments, both over a window that moves with the scan. A `Window` keeps one entry
(scan time, amount) per edge, so the count is exact; an entry leaves the window once it is
`width` seconds old. At most `MAX_ENTRIES` entries are kept: beyond that an edge is added to
the newest entry (which takes the edge's time), so a burst can only make the count stay high
for longer, never read lower than the truth. The evaluator keeps each window in an expression
slot; the agent stores `entries()` with the latches (agent.memory) so a restart keeps them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

MAX_ENTRIES = 1000  # per window: 1000 edges within one window is far beyond a microstop rate
MAX_WIDTH = 86400.0  # one day: a longer window is a historian's job, not a scan's
_EPS = 1e-9


class Window:
    """The amounts added within the last `width` seconds (scan time)."""

    __slots__ = ("width", "added", "_entries", "_total")

    def __init__(self, width: float) -> None:
        self.width = width
        self.added = 0  # edges taken since start: the caller stores entries when it moves
        self._entries: deque[list[float]] = deque()
        self._total = 0

    def add(self, now: float, amount: int) -> None:
        """Record `amount` at scan time `now` (times never go backwards)."""
        self.total(now)  # expire first: a window nobody read for a while must not fill up
        if len(self._entries) >= MAX_ENTRIES:
            newest = self._entries[-1]
            newest[0] = now
            newest[1] += amount
        else:
            self._entries.append([now, amount])
        self._total += amount
        self.added += 1

    def total(self, now: float) -> int:
        """The sum of what was added in (now - width, now]."""
        entries = self._entries
        edge = now - self.width + _EPS
        while entries and entries[0][0] < edge:
            self._total -= int(entries.popleft()[1])
        return self._total

    def entries(self) -> tuple[tuple[float, int], ...]:
        """(scan time, amount) of every entry still held, oldest first."""
        return tuple((t, int(a)) for t, a in self._entries)

    def restore(self, entries: Iterable[tuple[float, int]]) -> None:
        """Put back entries a previous run held (times already in this run's scan time)."""
        for at, amount in sorted(entries)[-MAX_ENTRIES:]:
            if amount > 0:
                self._entries.append([at, amount])
                self._total += amount

    def __len__(self) -> int:
        return len(self._entries)
