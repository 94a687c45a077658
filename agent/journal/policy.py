"""Retention policy, pure: which events to drop for max_age / max_bytes, and the gaps that say so.

The store feeds these functions rows in seq order; they decide and return `Gap`s, one per
retention class, each meaning exactly: "every unacknowledged event of class `cls` with a seq in
`first_seq..last_seq` was dropped; there were `count` of them". Gap events themselves are never
candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from linelight.agent.journal.schema import NEVER_DROPPED


@dataclass(slots=True)
class Gap:
    """Events that will never reach the broker, as one journaled `gap` event describes them."""

    reason: str  # max_bytes | max_age | low_disk | overflow | disk_full | write | recovered
    first_seq: int
    last_seq: int
    count: int
    kinds: dict[str, int] = field(default_factory=dict)
    cls: int | None = None  # retention class for retention drops; None for whole ranges
    detail: tuple[tuple[str, Any], ...] = ()


def merge_gap(gaps: list[Gap], gap: Gap) -> None:
    """Append `gap`, or extend the last one when it continues the same reason's seq range."""
    if gaps:
        last = gaps[-1]
        if (last.reason == gap.reason and last.cls == gap.cls and not last.detail
                and not gap.detail and last.last_seq + 1 == gap.first_seq):
            last.last_seq = gap.last_seq
            last.count += gap.count
            for kind, n in gap.kinds.items():
                last.kinds[kind] = last.kinds.get(kind, 0) + n
            return
    gaps.append(gap)


class _Span:
    __slots__ = ("first", "last", "count", "kinds")

    def __init__(self, seq: int) -> None:
        self.first = seq
        self.last = seq
        self.count = 0
        self.kinds: dict[str, int] = {}

    def add(self, seq: int, kind: str) -> None:
        self.last = seq
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def _gaps(spans: dict[int, _Span], reason: str) -> list[Gap]:
    return [
        Gap(reason, s.first, s.last, s.count, s.kinds, cls)
        for cls, s in sorted(spans.items())
        if s.count
    ]


def plan_age_drops(rows: Iterable[tuple[int, int, str, int]], cutoff_ns: int) -> list[Gap]:
    """Rows `(seq, cls, kind, enq_ns)` in seq order: drop the leading run older than the cutoff.

    Scanning stops at the first row committed at or after the cutoff, so each class's range
    covers rows that were all looked at (a wall-clock step back keeps the later rows).
    """
    spans: dict[int, _Span] = {}
    for seq, cls, kind, enq_ns in rows:
        if enq_ns >= cutoff_ns:
            break
        if kind in NEVER_DROPPED:
            continue
        spans.setdefault(cls, _Span(seq)).add(seq, kind)
    return _gaps(spans, "max_age")


def plan_byte_drops(
    class_depth: dict[int, int],
    rows_of_class: Callable[[int], Iterable[tuple[int, str, int]]],
    target_bytes: int,
    reason: str = "max_bytes",
) -> list[Gap]:
    """Free at least `target_bytes`: the oldest events of the lowest class first.

    `rows_of_class(cls)` yields `(seq, kind, size)` of that class in seq order. Higher classes
    are touched only when every droppable lower-class event is gone.
    """
    spans: dict[int, _Span] = {}
    freed = 0
    for cls in sorted(c for c, n in class_depth.items() if n > 0):
        if freed >= target_bytes:
            break
        for seq, kind, size in rows_of_class(cls):
            if kind in NEVER_DROPPED:
                continue
            spans.setdefault(cls, _Span(seq)).add(seq, kind)
            freed += size
            if freed >= target_bytes:
                break
    return _gaps(spans, reason)
