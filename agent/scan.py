"""The scan loop: at a fixed period, snapshot inputs, step the rules, drive the tower, emit events.

Like a PLC scan: one consistent snapshot per tick, every rule sees the same one, the lamps
are commanded in the same tick. Nothing in a tick awaits: events are handed to the journal
with `submit` (non-blocking), so neither the disk nor the network can delay the lamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from linelight.agent import events as ev
from linelight.agent.clock import ClockWatch
from linelight.agent.journal import Event
from linelight.rules.values import Pattern, Sample

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def submit(self, event: Event) -> None: ...


class Tower(Protocol):
    def show(self, command: dict[str, Pattern]) -> None: ...


class Inputs(Protocol):
    def snapshot(self) -> dict[str, Sample]: ...


@dataclass(slots=True)
class ScanStats:
    ticks: int = 0
    overruns: int = 0  # ticks that took longer than the period
    skipped: int = 0  # periods skipped to catch up after an overrun
    last_tick: float = 0.0  # monotonic time of the last completed tick
    last_duration: float = 0.0
    max_duration: float = 0.0
    events: int = 0


@dataclass(slots=True)
class ScanView:
    """The latest results, for /status, the live lane and the demo."""

    state: str = "unknown"
    code: int = 30000
    reason: str = ""  # why the state is unknown, for people
    state_since_ns: int = 0
    state_since_mono: float = 0.0
    lamps: dict[str, Pattern] = field(default_factory=dict)
    signals: tuple[str, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)
    latched: tuple[str, ...] = ()  # rules held on by clear_when ("state:x", "signal:y")
    snapshot: dict[str, Sample] = field(default_factory=dict)


OnChange = Callable[[str, Any], None]  # (live key, value) for the forwarder's live lane


class ScanLoop:
    """Runs the evaluator every `period` seconds. `evaluator` may be swapped between ticks."""

    def __init__(self, *, inputs: Inputs, evaluator: Any, tower: Tower, sink: EventSink,
                 clock: ClockWatch, period: float, deadband: float = 0.0,
                 deadbands: Mapping[str, float] | None = None,
                 on_live: OnChange | None = None,
                 observe: Callable[[float], None] | None = None,
                 on_counters: Callable[[dict[str, int]], None] | None = None,
                 on_latches: Callable[[Any], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inputs = inputs
        self.evaluator = evaluator
        self.tower = tower
        self.sink = sink
        self.clock = clock
        self.period = period
        self.changes = ev.InputChanges(deadbands, deadband)
        self.on_live = on_live
        self.observe = observe
        self.on_counters = on_counters
        self.on_latches = on_latches
        self._mono = monotonic
        self.stats = ScanStats()
        self.view = ScanView(state_since_ns=clock.now_ns(), state_since_mono=monotonic())
        self._counters_seen: dict[str, int] = {}

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.tick()  # the first tick before `started`: lamps show `unknown` from the start
        task_status.started()
        deadline = self._mono()
        while True:
            deadline += self.period
            now = self._mono()
            if now > deadline:
                missed = int((now - deadline) / self.period) + 1
                self.stats.skipped += missed
                deadline += missed * self.period
            await anyio.sleep(max(0.0, deadline - now))
            self.tick()

    def swap(self, evaluator: Any) -> None:
        """Install a new evaluator (reload). Called from the event loop, between ticks."""
        self.evaluator = evaluator

    def tick(self) -> Any:
        """One scan. Returns the evaluator's Step."""
        started = self._mono()
        snapshot = self.inputs.snapshot()
        step = self.evaluator.step(snapshot, started)
        self.tower.show(step.lamps)
        now_ns = self.clock.now_ns()
        unsynced = not self.clock.synchronized
        submitted = 0

        for name, sample in self.changes.changes(snapshot):
            self.sink.submit(ev.signal_event(name, sample, now_ns, unsynced=unsynced))
            submitted += 1
        for rule_event in step.events:
            ts = now_ns - int((started - rule_event.at) * 1e9)
            self.sink.submit(ev.rule_event(rule_event.kind, rule_event.name, rule_event.value,
                                           rule_event.detail, ts, unsynced=unsynced))
            submitted += 1
        for lamp, pattern, previous in ev.lamp_changes(self.view.lamps, step.lamps):
            self.sink.submit(ev.lamp_event(lamp, pattern, previous, now_ns, unsynced=unsynced))
            submitted += 1
        submitted += self._check_clock(now_ns)
        self._update_view(step, snapshot, started, now_ns)

        self.stats.events += submitted
        self.stats.ticks += 1
        done = self._mono()
        duration = done - started
        self.stats.last_tick = done
        self.stats.last_duration = duration
        self.stats.max_duration = max(self.stats.max_duration, duration)
        if duration > self.period:
            self.stats.overruns += 1
        if self.observe is not None:
            self.observe(duration)
        return step

    # -- helpers ----------------------------------------------------------------------------
    def _check_clock(self, now_ns: int) -> int:
        jump, synced = self.clock.check()
        n = 0
        if jump is not None:
            self.sink.submit(ev.agent_event(
                "clock_jump", round(jump.delta_s, 3), jump.after_ns,
                unsynced=not self.clock.synchronized, expected_ns=jump.before_ns))
            n += 1
        if synced is not None:
            log.info("wall clock is %s", "synchronized" if synced else "no longer synchronized")
            self.sink.submit(ev.agent_event("clock_sync", synced, self.clock.now_ns(),
                                            unsynced=not synced))
            n += 1
        return n

    def _update_view(self, step: Any, snapshot: dict[str, Sample], mono: float,
                     now_ns: int) -> None:
        view = self.view
        state = step.state
        view.reason = step.reason
        if state.name != view.state:
            view.state, view.code = state.name, state.code
            view.state_since_mono = state.since
            view.state_since_ns = now_ns - int((mono - state.since) * 1e9)
            self._live("state", {"name": state.name, "code": state.code,
                                 "since_ns": view.state_since_ns})
        if step.lamps != view.lamps:
            view.lamps = dict(step.lamps)
            self._live("lamps", {lamp: p.value for lamp, p in step.lamps.items()})
        signals = tuple(step.signals)
        if signals != view.signals:
            view.signals = signals
            self._live("signals", list(signals))
        counters = dict(step.counters)
        if counters != view.counters:
            view.counters = counters
            if self.on_counters is not None:
                self.on_counters(counters)
            self._live("counters", counters)
        latched = tuple(getattr(step, "latched", ()))
        if latched != view.latched:
            view.latched = latched
            if self.on_latches is not None:
                self.on_latches(self.evaluator.latches())
        view.snapshot = snapshot

    def _live(self, key: str, value: Any) -> None:
        if self.on_live is not None:
            self.on_live(key, value)

    def view_status(self, now: float | None = None) -> dict[str, Any]:
        """The latest results as /status shows them: state, lamps, signals, counters, inputs."""
        now = self._mono() if now is None else now
        v = self.view
        return {
            "state": {"name": v.state, "code": v.code, "since_ns": v.state_since_ns,
                      "for_s": round(now - v.state_since_mono, 3), "reason": v.reason},
            "lamps": {lamp: p.value for lamp, p in v.lamps.items()},
            "signals": list(v.signals),
            "counters": dict(v.counters),
            "inputs": {name: {"value": s.value, "quality": s.quality.value,
                              "age_s": round(now - s.at, 3) if s.at else None,
                              "reason": s.reason}
                       for name, s in sorted(v.snapshot.items())},
        }

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The scan loop as /status shows it: tick counters and whether ticks keep coming."""
        now = self._mono() if now is None else now
        st = self.stats
        return {"period_s": self.period, "ticks": st.ticks, "overruns": st.overruns,
                "skipped": st.skipped, "last_duration_s": st.last_duration,
                "max_duration_s": st.max_duration, "healthy": self.healthy(now),
                "stall_limit_s": self.stall_limit(),
                "since_last_tick_s": round(now - st.last_tick, 3) if st.ticks else None,
                "events_submitted": st.events}

    def healthy(self, now: float | None = None, limit: float | None = None) -> bool:
        """True while ticks keep coming and finish in time (for the systemd watchdog).

        `limit` (default: 20 periods, at least 1 s) bounds both the time since the last tick
        ended and how long that tick took: a loop stuck in seconds-long scans (a rule set
        doing huge arithmetic) still ends a tick now and then, and must not count as alive.
        """
        now = self._mono() if now is None else now
        limit = self.stall_limit() if limit is None else limit
        return (self.stats.ticks > 0 and now - self.stats.last_tick < limit
                and self.stats.last_duration < limit)

    def stall_limit(self) -> float:
        """How long without a finished tick counts as a stall."""
        return max(1.0, 20 * self.period)
