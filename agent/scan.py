"""The scan loop: at a fixed period, snapshot inputs, step the rules, drive the tower, emit events.

Like a PLC scan: one consistent snapshot per tick, every rule sees the same one, the lamps
and the [[output]] rules' lines are commanded in the same tick. Nothing in a tick awaits: events are handed to the journal
with `submit` (non-blocking), so neither the disk nor the network can delay the lamps.

One exception, the lamp hold: a tick that latches something new (a state or signal held by
`clear_when`) hands the latched set to the machine's memory (agent.memory) and commands its
tower only once the journal has committed that set, so a lamp never shows a latch a crash
could still lose. The scan loop goes on meanwhile (later ticks' commands replace the held
one; the [[output]] lines are driven at once: an output that stops a machine never waits for
the disk). The hold ends when the store is committed, at once when the journal refuses it
(disk full, journal not open: showing a fault not yet stored beats hiding it), and after
`hold_max` seconds at most (a stuck writer must not freeze the lamps); refusals and timeouts
are counted in /status and logged. Every other tick shows its lamps at once, as before.

Several machines (agent.machines) are several `MachineLane`s of one loop: each tick takes one
snapshot, steps every machine's evaluator on its part of it and shows every machine's lamps
before any event is submitted. A machine whose inputs fail is `unknown` by its own rules; the
others never see its inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from linelight.agent import events as ev
from linelight.agent.clock import ClockWatch
from linelight.agent.journal import Event
from linelight.rules.values import Pattern, Quality, Sample

log = logging.getLogger(__name__)

# The longest a tick that latched something new holds its lamps for the journal's commit
# (usually a few ms: one fsync). Beyond it the lamps show the latch anyway: a stuck disk must
# not keep a fault off the tower.
LAMP_HOLD_MAX_S = 1.0


class EventSink(Protocol):
    def submit(self, event: Event) -> None: ...


class Tower(Protocol):
    def show(self, command: dict[str, Pattern]) -> None: ...


class OutputLines(Protocol):
    """Where the [[output]] rules' values go (hw.stacklight.OutputBank)."""

    def drive(self, values: Mapping[str, bool]) -> None: ...


class Inputs(Protocol):
    def snapshot(self) -> dict[str, Sample]: ...


class ChangingInputs(Inputs, Protocol):
    """Inputs that can say when a value changed (hw.inputs.InputTable): scan on change."""

    @property
    def value_changes(self) -> int: ...

    async def wait_value_change(self, after: int) -> int: ...


@dataclass(slots=True)
class ScanStats:
    ticks: int = 0
    overruns: int = 0  # ticks that took longer than the period
    skipped: int = 0  # periods skipped to catch up after an overrun
    on_change: int = 0  # ticks run at once because an input changed (scan on change)
    last_tick: float = 0.0  # monotonic time of the last completed tick
    last_duration: float = 0.0
    max_duration: float = 0.0
    events: int = 0
    lamp_holds: int = 0  # ticks whose lamps waited for a new latch to be committed
    lamp_hold_timeouts: int = 0  # ... and were shown after `hold_max` without the commit
    lamp_hold_refused: int = 0  # ... and were shown when the journal refused the store
    lamp_hold_max_s: float = 0.0  # the longest hold


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
    outputs: dict[str, bool] = field(default_factory=dict)  # [[output]] rules, as computed
    window_edges: int = 0  # edges the rolling windows took: a change means store them
    snapshot: dict[str, Sample] = field(default_factory=dict)


OnChange = Callable[[str, Any], None]  # (live key, value) for the forwarder's live lane


@dataclass(slots=True)
class MachineLane:
    """One machine in the scan loop: its evaluator, tower, inputs and latest results.

    `inputs` maps the rule inputs (and the machine's own source inputs) to input-table keys;
    None is the single unnamed machine, which sees the whole snapshot as it is. `states`
    maps a rule input to the machine whose state code it reads (as of the previous scan).
    """

    evaluator: Any
    tower: Tower
    name: str | None = None  # on the wire; None: the unnamed single machine
    inputs: Mapping[str, str] | None = None
    states: Mapping[str, str] = field(default_factory=dict)
    on_live: OnChange | None = None
    on_counters: Callable[[dict[str, int]], None] | None = None
    on_latches: Callable[[Any], Any] | None = None  # returns the set's generation
    on_windows: Callable[[Any], None] | None = None
    # waits until the latched set of a generation is stored: True committed, False refused
    latches_saved: Callable[[int], Awaitable[bool]] | None = None
    label: str = ""  # for /status and logs (the agent id for the unnamed machine)
    outputs: OutputLines | None = None  # the [[output]] rules' wired lines, driven every scan
    view: ScanView = field(default_factory=ScanView)
    changes: ev.InputChanges = field(default_factory=ev.InputChanges)
    held: dict[str, Pattern] | None = None  # the newest tower command a lamp hold keeps back
    hold_generation: int = 0  # the latched set the hold waits for

    def select(self, snapshot: dict[str, Sample], states: Mapping[str, Sample]
               ) -> dict[str, Sample]:
        """This machine's part of the tick's snapshot, under its rules' input names."""
        if self.inputs is None:
            return snapshot
        init = _INIT
        part = {rule: snapshot.get(key, init) for rule, key in self.inputs.items()}
        for rule, machine in self.states.items():
            part[rule] = states.get(machine, init)
        return part


_INIT = Sample.init()


class ScanLoop:
    """Runs the evaluators every `period` seconds. An evaluator may be swapped between ticks.

    One machine: `evaluator` and `tower` (and the callbacks); several: `machines`."""

    def __init__(self, *, inputs: Inputs, evaluator: Any = None, tower: Tower | None = None,
                 sink: EventSink, clock: ClockWatch, period: float, deadband: float = 0.0,
                 deadbands: Mapping[str, float] | None = None,
                 on_live: OnChange | None = None,
                 observe: Callable[[float], None] | None = None,
                 on_counters: Callable[[dict[str, int]], None] | None = None,
                 on_latches: Callable[[Any], Any] | None = None,
                 on_windows: Callable[[Any], None] | None = None,
                 latches_saved: Callable[[int], Awaitable[bool]] | None = None,
                 machines: list[MachineLane] | None = None,
                 on_change: bool = False,
                 hold_lamps: bool = True, hold_max: float = LAMP_HOLD_MAX_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inputs = inputs
        self.sink = sink
        self.clock = clock
        self.period = period
        self.changes = ev.InputChanges(deadbands, deadband)  # inputs no named machine reads
        self.observe = observe
        self._mono = monotonic
        self.stats = ScanStats()
        if machines is None:
            assert evaluator is not None and tower is not None
            machines = [MachineLane(evaluator, tower, on_live=on_live, on_counters=on_counters,
                                    on_latches=on_latches, on_windows=on_windows,
                                    latches_saved=latches_saved)]
        for lane in machines:
            lane.changes = self.changes if lane.inputs is None else ev.InputChanges(deadbands,
                                                                                    deadband)
            lane.view = ScanView(state_since_ns=clock.now_ns(), state_since_mono=monotonic())
        self.machines = machines
        self._claimed = self._claimed_keys()
        self._states: dict[str, Sample] = {}
        # Scan on change: an input change runs a tick at once, between the periodic ones,
        # which keep their fixed grid (timers, debounce and stale_after run on the `now`
        # each tick is given, so an extra tick never shortens them).
        self.on_change = on_change and hasattr(inputs, "wait_value_change")
        self._changes_seen = 0
        self.halted = False
        # hold_lamps=False is the old order (the lamp first, the store after), for bench/
        self.hold_lamps = hold_lamps
        self.hold_max = hold_max
        self._holds: TaskGroup | None = None  # where lamp holds wait (while `run` runs)

    @property
    def evaluator(self) -> Any:
        """The first machine's evaluator (the only one of a single-machine agent)."""
        return self.machines[0].evaluator

    @property
    def tower(self) -> Tower:
        return self.machines[0].tower

    @property
    def view(self) -> ScanView:
        return self.machines[0].view

    def machine(self, name: str | None) -> MachineLane:
        for lane in self.machines:
            if lane.name == name:
                return lane
        raise KeyError(f"no machine '{name}' in the scan loop")

    # -- the loop ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as holds:
            self._holds = holds
            try:
                await self._run(task_status)
            finally:
                self._holds = None

    async def _run(self, task_status: TaskStatus[None]) -> None:
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
            if self.on_change:
                await self._ticks_on_change(deadline)
            else:
                await anyio.sleep(max(0.0, deadline - now))
            if self.halted:
                await anyio.sleep_forever()
            self.tick()

    async def _ticks_on_change(self, deadline: float) -> None:
        """Until `deadline`, run a tick as soon as an input changes."""
        inputs: ChangingInputs = self.inputs  # type: ignore[assignment]
        while True:
            with anyio.move_on_after(max(0.0, deadline - self._mono())):
                await inputs.wait_value_change(self._changes_seen)
                if self.halted:
                    return
                self.stats.on_change += 1
                self.tick()
                continue
            return

    def halt(self) -> None:
        """No tick after this one (a planned stop): the lamps keep what shutdown shows them,
        and the stop event stays the last event of the run, whatever the closing sources do to
        their inputs."""
        self.halted = True

    def swap(self, evaluator: Any, machine: str | None = None,
             inputs: Mapping[str, str] | None = None) -> None:
        """Install a new evaluator (reload), with the machine's new input map if it has one.
        Called from the event loop, between ticks."""
        lane = self.machine(machine) if machine is not None else self.machines[0]
        lane.evaluator = evaluator
        if inputs is not None and lane.inputs is not None:
            lane.inputs = dict(inputs)
            self._claimed = self._claimed_keys()

    def _claimed_keys(self) -> set[str] | None:
        """Input-table keys some named machine reads; None when one machine sees them all."""
        if any(lane.inputs is None for lane in self.machines):
            return None
        return {key for lane in self.machines for key in (lane.inputs or {}).values()}

    def tick(self) -> Any:
        """One scan. Returns the first machine's Step."""
        started = self._mono()
        if self.on_change:  # read before the snapshot: a later change wakes the next tick
            self._changes_seen = self.inputs.value_changes  # type: ignore[attr-defined]
        snapshot = self.inputs.snapshot()
        steps = []
        for lane in self.machines:  # every machine's lamps before any event is submitted
            part = lane.select(snapshot, self._states)
            step = lane.evaluator.step(part, started)
            if self._latches(lane, step, started) or lane.held is not None:
                lane.held = dict(step.lamps)  # shown when the latch is stored
            else:
                lane.tower.show(step.lamps)
            if lane.outputs is not None:
                lane.outputs.drive(step.outputs)
            steps.append((lane, part, step))
        now_ns = self.clock.now_ns()
        unsynced = not self.clock.synchronized
        submitted = 0
        for lane, part, step in steps:
            submitted += self._record(lane, part, step, started, now_ns, unsynced)
        if self._claimed is not None:  # shared inputs no machine reads: the agent's own
            unclaimed = {k: s for k, s in snapshot.items() if k not in self._claimed}
            for name, sample in self.changes.changes(unclaimed):
                self.sink.submit(ev.signal_event(name, sample, now_ns, unsynced=unsynced))
                submitted += 1
        submitted += self._check_clock(now_ns)
        if len(self.machines) > 1:
            self._states = {lane.label: Sample(lane.view.code, Quality.GOOD, started, now_ns)
                            for lane in self.machines}

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
        return steps[0][2]

    def _record(self, lane: MachineLane, part: dict[str, Sample], step: Any, started: float,
                now_ns: int, unsynced: bool) -> int:
        """One machine's events of this tick, and its view; returns how many were submitted."""
        machine = lane.name
        submitted = 0
        # another machine's state read by this one is that machine's state event, not a signal
        signals = {k: v for k, v in part.items() if k not in lane.states} if lane.states else part
        for name, sample in lane.changes.changes(signals):
            self.sink.submit(ev.signal_event(name, sample, now_ns, unsynced=unsynced,
                                             machine=machine))
            submitted += 1
        for rule_event in step.events:
            ts = now_ns - int((started - rule_event.at) * 1e9)
            self.sink.submit(ev.rule_event(rule_event.kind, rule_event.name, rule_event.value,
                                           rule_event.detail, ts, unsynced=unsynced,
                                           machine=machine))
            submitted += 1
        for lamp, pattern, previous in ev.lamp_changes(lane.view.lamps, step.lamps):
            self.sink.submit(ev.lamp_event(lamp, pattern, previous, now_ns, unsynced=unsynced,
                                           machine=machine))
            submitted += 1
        self._update_view(lane, step, part, started, now_ns)
        return submitted

    # -- the lamp hold -----------------------------------------------------------------------
    def _latches(self, lane: MachineLane, step: Any, started: float) -> bool:
        """Hand a changed latched set to the memory; True when this tick's lamps must wait
        for it (something new latched, and a hold can wait: `run` is running)."""
        latched = tuple(getattr(step, "latched", ()))
        before = lane.view.latched
        if latched == before:
            return False
        lane.view.latched = latched
        if lane.on_latches is None:
            return False
        generation = lane.on_latches(lane.evaluator.latches())
        if (not self.hold_lamps or lane.latches_saved is None or self._holds is None
                or not isinstance(generation, int) or set(latched) <= set(before)):
            return False  # a latch released (reset) is stored without holding the lamps
        lane.hold_generation = generation
        if lane.held is None:
            self.stats.lamp_holds += 1
            self._holds.start_soon(self._hold, lane, started)
        return True

    async def _hold(self, lane: MachineLane, since: float) -> None:
        """Keep the lane's tower command back until its latches are stored (bounded)."""
        assert lane.latches_saved is not None
        refused = False
        with anyio.move_on_after(max(0.0, since + self.hold_max - self._mono())) as scope:
            while True:
                generation = lane.hold_generation
                if not await lane.latches_saved(generation):
                    refused = True
                    break
                if lane.hold_generation == generation:  # nothing newer latched meanwhile
                    break
        command, lane.held = lane.held, None
        waited = self._mono() - since
        self.stats.lamp_hold_max_s = max(self.stats.lamp_hold_max_s, waited)
        who = f"machine '{lane.label}'" if lane.name is not None else "the tower"
        if scope.cancelled_caught:
            self.stats.lamp_hold_timeouts += 1
            log.warning("%s shows a new latch %.3f s after its scan without it being stored: "
                        "the journal did not commit it within %g s (a restart now would lose "
                        "it)", who, waited, self.hold_max)
        elif refused:
            self.stats.lamp_hold_refused += 1
            log.warning("%s shows a new latch the journal refused to store (a restart now "
                        "would lose it)", who)
        if command is not None and not self.halted:  # a planned stop shows on_exit instead
            lane.tower.show(command)

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

    def _update_view(self, lane: MachineLane, step: Any, snapshot: dict[str, Sample],
                     mono: float, now_ns: int) -> None:
        view = lane.view
        live = lane.on_live
        state = step.state
        view.reason = step.reason
        if state.name != view.state:
            view.state, view.code = state.name, state.code
            view.state_since_mono = state.since
            view.state_since_ns = now_ns - int((mono - state.since) * 1e9)
            if live is not None:
                live("state", {"name": state.name, "code": state.code,
                               "since_ns": view.state_since_ns})
        if step.lamps != view.lamps:
            view.lamps = dict(step.lamps)
            if live is not None:
                live("lamps", {lamp: p.value for lamp, p in step.lamps.items()})
        signals = tuple(step.signals)
        if signals != view.signals:
            view.signals = signals
            if live is not None:
                live("signals", list(signals))
        counters = dict(step.counters)
        if counters != view.counters:
            view.counters = counters
            if lane.on_counters is not None:
                lane.on_counters(counters)
            if live is not None:
                live("counters", counters)
        edges = getattr(step, "window_edges", 0)  # rolling windows took an edge: store them
        if edges != view.window_edges:
            view.window_edges = edges
            if lane.on_windows is not None:
                lane.on_windows(lane.evaluator.windows)  # taken when stored, off the scan
        view.outputs = dict(getattr(step, "outputs", {}))
        view.snapshot = snapshot

    def view_status(self, now: float | None = None, machine: MachineLane | None = None
                    ) -> dict[str, Any]:
        """The latest results (of the first machine, or `machine`) as /status shows them:
        state, lamps, signals, counters, inputs."""
        now = self._mono() if now is None else now
        v = (machine or self.machines[0]).view
        return {
            "state": {"name": v.state, "code": v.code, "since_ns": v.state_since_ns,
                      "for_s": round(now - v.state_since_mono, 3), "reason": v.reason},
            "lamps": {lamp: p.value for lamp, p in v.lamps.items()},
            "signals": list(v.signals),
            "counters": dict(v.counters),
            "outputs": dict(v.outputs),
            "inputs": inputs_status(v.snapshot, now),
        }

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The scan loop as /status shows it: tick counters and whether ticks keep coming."""
        now = self._mono() if now is None else now
        st = self.stats
        return {"period_s": self.period, "on_change": self.on_change,
                "ticks_on_change": st.on_change, "ticks": st.ticks, "overruns": st.overruns,
                "skipped": st.skipped, "last_duration_s": st.last_duration,
                "max_duration_s": st.max_duration, "healthy": self.healthy(now),
                "stall_limit_s": self.stall_limit(),
                "since_last_tick_s": round(now - st.last_tick, 3) if st.ticks else None,
                "events_submitted": st.events, "lamp_holds": st.lamp_holds,
                "lamp_hold_timeouts": st.lamp_hold_timeouts,
                "lamp_hold_refused": st.lamp_hold_refused,
                "lamp_hold_max_s": round(st.lamp_hold_max_s, 6),
                "lamp_hold_limit_s": self.hold_max}

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


def inputs_status(snapshot: Mapping[str, Sample], now: float) -> dict[str, Any]:
    """Inputs as /status shows them: value, quality, age and reason, by name."""
    return {name: {"value": s.value, "quality": s.quality.value,
                   "age_s": round(now - s.at, 3) if s.at else None, "reason": s.reason}
            for name, s in sorted(snapshot.items())}
