"""The chaos harness's checks: the invariants, the book of what was seen, the status watcher.

Pure judgement over what the independent subscriber received and what `/status` showed; the
harness that injects the faults is bench/chaos.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.subscriber import Subscriber, dedup_in_order

AGENT = "chaos-press"
EVENTS = f"linelight/{AGENT}/events/"
# The inputs the `producing` state and every state above it read (examples/rules.d/machine.toml):
# while one of them is stale or bad, the tower must not show producing.
GUARDED_INPUTS = ("running", "fault_code", "estop_ok")
SMALL_MAX_BYTES = "64KiB"  # the smallest max_bytes the journal accepts
DISK_REASONS = frozenset({"disk_full", "low_disk", "write"})
# A -wal deleted or truncated between kills loses committed events: the journal names them
# with a `lost` gap (seq jumps past them), and only while such a fault was injected.
FILE_REASONS = frozenset({"lost"})
NOT_DROPS = frozenset({"dead_letter", "lost", "recovered"})  # gaps not counted in `dropped`


@dataclass(frozen=True)
class Variant:
    """How one run of the agent is configured; chosen at every (re)start."""

    name: str
    max_bytes: str = "256MiB"
    min_free_disk: str | None = None  # None: the harness's default for the data directory
    rpm_deadband: float = 10.0  # 0 records every rpm wiggle: ~50 events/s, to fill a journal

    def allowed_gaps(self) -> frozenset[str]:
        return frozenset({"max_bytes"}) if self.max_bytes == SMALL_MAX_BYTES else frozenset()


NORMAL = Variant("normal")
SMALL = Variant("small-journal", max_bytes=SMALL_MAX_BYTES, rpm_deadband=0.0)


class Violation(Exception):
    """An invariant did not hold; `kind` names it for the summary."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Window:
    """A stretch of wall time during which gaps with these reasons are explained."""

    reasons: frozenset[str]
    start_ns: int
    end_ns: int | None = None


@dataclass
class Book:
    """Everything the harness saw, shared by the fault loop and the status watcher."""

    faults: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    boots: dict[int, Variant] = field(default_factory=dict)
    drains: list[tuple[int, float, str]] = field(default_factory=list)  # (hwm, since, fault)
    drain_times: list[float] = field(default_factory=list)
    status_polls: int = 0
    stale_seen: int = 0  # status views with a guarded input not good
    states_seen: Counter[str] = field(default_factory=Counter)
    max_depth: int = 0
    max_dropped: int = 0  # the largest `dropped` /status ever showed
    max_hwm: int = 0  # the largest `seq_hwm` /status ever showed
    reloads_ok: int = 0
    reloads_rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violate(self, kind: str, message: str) -> None:
        with self.lock:
            self.violations.append((kind, message))
        print(f"chaos: VIOLATION {kind}: {message}", file=sys.stderr, flush=True)


def tower_violation(status: dict[str, Any]) -> str | None:
    """Why this /status view breaks "never producing while inputs are stale", or None."""
    inputs = status.get("inputs") or {}
    bad = {n: inputs[n].get("quality") for n in GUARDED_INPUTS
           if n in inputs and inputs[n].get("quality") != "good"}
    if not bad:
        return None
    state = (status.get("state") or {}).get("name")
    green = (status.get("lamps") or {}).get("green")
    # Any lit green (steady or blinking) tells the floor the machine runs; only off is safe.
    if state == "producing" or green not in (None, "off"):
        return (f"state {state}, green {green} while inputs are "
                + ", ".join(f"{n} {q}" for n, q in sorted(bad.items())))
    return None


class StatusSource(Protocol):
    def status(self, timeout: float = 3.0) -> dict[str, Any] | None: ...


class Watcher(threading.Thread):
    """Polls /status every 150 ms: the tower invariant, queue depth, drains in progress."""

    def __init__(self, agent: StatusSource, sub: Subscriber, book: Book) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.agent, self.sub, self.book = agent, sub, book
        self.halt = threading.Event()
        self.max_seq = 0
        self._seen = 0

    def run(self) -> None:
        while not self.halt.wait(0.15):
            self._drains()
            status = self.agent.status(timeout=2.0)
            if status is None or "state" not in status:
                continue
            with self.book.lock:
                self.book.status_polls += 1
                self.book.states_seen[status["state"]["name"]] += 1
                queue = status.get("queue") or {}
                depth = int(queue.get("depth") or 0)
                self.book.max_depth = max(self.book.max_depth, depth)
                inputs = status.get("inputs") or {}
                if any(inputs.get(n, {}).get("quality") not in (None, "good")
                       for n in GUARDED_INPUTS):
                    self.book.stale_seen += 1
            self._never_back(status.get("queue") or {})
            why = tower_violation(status)
            if why is not None:
                self.book.violate("tower", why)

    def _never_back(self, queue: dict[str, Any]) -> None:
        """seq_hwm and dropped never go backwards, across restarts and whatever the disk did."""
        hwm, dropped = int(queue.get("seq_hwm") or 0), int(queue.get("dropped") or 0)
        book = self.book
        if hwm and hwm < book.max_hwm:
            book.violate("seq", f"seq_hwm went back from {book.max_hwm} to {hwm} (boot "
                         f"{queue.get('boot')}): seqs would be issued twice")
        if dropped < book.max_dropped:
            book.violate("gap", f"dropped went back from {book.max_dropped} to {dropped} (boot "
                         f"{queue.get('boot')}): drops were forgotten")
        with book.lock:
            book.max_hwm = max(book.max_hwm, hwm)
            book.max_dropped = max(book.max_dropped, dropped)

    def settle_drains(self) -> None:
        self._drains()

    def _drains(self) -> None:
        msgs = self.sub.snapshot()
        for m in msgs[self._seen:]:
            if m.topic.startswith(EVENTS) and m.seq is not None:
                self.max_seq = max(self.max_seq, m.seq)
        self._seen = len(msgs)
        now = time.monotonic()
        with self.book.lock:
            left = []
            for hwm, since, fault in self.book.drains:
                if self.max_seq >= hwm:
                    self.book.drain_times.append(now - since)
                else:
                    left.append((hwm, since, fault))
            self.book.drains = left


def check_delivery(sub: Subscriber, hwm: int, book: Book, *, first_seq: int) -> dict[str, Any]:
    """The end-of-run checks over everything the subscriber received."""
    msgs = [m for m in sub.snapshot() if m.topic.startswith(EVENTS) and m.seq is not None]
    seqs = [int(m.seq) for m in msgs if m.seq is not None]
    unique = dedup_in_order(seqs)
    out: dict[str, Any] = {"received": len(seqs), "unique": len(unique),
                           "duplicates": len(seqs) - len(unique), "hwm": hwm}
    for a, b in zip(unique, unique[1:], strict=False):
        if b < a:
            book.violate("order", f"seq {b} arrived after seq {a} (first copies, after dedup)")
            break
    _seq_never_reused(msgs, book)
    gaps = []
    seen_gap: set[int] = set()
    for m in msgs:
        d = m.decoded if isinstance(m.decoded, dict) else {}
        if d.get("kind") == "gap" and m.seq not in seen_gap:
            seen_gap.add(int(m.seq))  # type: ignore[arg-type]
            gaps.append(d)
    covered: set[int] = set()
    reasons: Counter[str] = Counter()
    dropped = 0
    lost = 0  # seqs named by `lost` gaps: their count is unknown, the whole range may be gone
    for g in gaps:
        reason = str(g.get("reason") or g.get("name"))
        reasons[reason] += int(g.get("count") or 0)
        dropped += int(g.get("count") or 0)
        if reason in FILE_REASONS:
            lost += max(0, int(g.get("last_seq", -1)) - int(g.get("first_seq", 0)) + 1)
        lo, hi = int(g.get("first_seq", 0)), int(g.get("last_seq", -1))
        covered.update(range(lo, hi + 1))
        if not _gap_explained(g, reason, book):
            book.violate("gap", f"gap seq {g.get('seq')} ({reason}, {g.get('count')} events, "
                         f"seqs {lo}..{hi}, boot {g.get('boot')}) is not explained by any "
                         "configured limit in force at that time")
    got = set(unique)
    missing = [s for s in range(first_seq, hwm + 1) if s not in got and s not in covered]
    if missing:
        book.violate("lost", f"{len(missing)} committed events never arrived and no gap names "
                     f"them: seqs {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    unexplained = [s for s in range(first_seq, hwm + 1) if s not in got]
    if len(unexplained) > dropped + lost:
        book.violate("gap", f"{len(unexplained)} seqs are missing but the gap events account "
                     f"for only {dropped} dropped events")
    announced = sum(int(g.get("count") or 0) for g in gaps
                    if str(g.get("reason") or g.get("name")) not in NOT_DROPS)
    if announced < book.max_dropped:
        book.violate("gap", f"the agent counted {book.max_dropped} dropped events but gap "
                     f"events announce only {announced}: a drop had no durable gap")
    out.update(gap_events=len(gaps), dropped=dropped, drop_reasons=dict(reasons),
               missing_unexplained=len(missing), announced_drops=announced)
    return out


def _seq_never_reused(msgs: list[Any], book: Book) -> None:
    """Copies of one seq (re-sends) are the same event; a different one means seq was reused."""
    first: dict[int, tuple[Any, ...]] = {}
    for m in msgs:
        d = m.decoded if isinstance(m.decoded, dict) else {}
        ident = (d.get("boot"), d.get("kind"), d.get("name"), d.get("ts"))
        seen = first.setdefault(int(m.seq), ident)
        if seen != ident:
            book.violate("seq", f"seq {m.seq} was issued twice: {seen} and then {ident} "
                         "(boot, kind, name, ts)")
            return


def _gap_explained(gap: dict[str, Any], reason: str, book: Book) -> bool:
    boot = gap.get("boot")
    if isinstance(boot, int) and reason in book.boots.get(boot, NORMAL).allowed_gaps():
        return True
    # The wire's time: integer ms plus the ns within it (docs/wire-format.md).
    ts = int(gap.get("ts") or 0) * 1_000_000 + int(gap.get("ts_sub_ns") or 0)
    grace = 30_000_000_000  # a gap is written once the journal can write again
    return any(reason in w.reasons and w.start_ns <= ts <= (w.end_ns or ts) + grace
               for w in book.windows)
