"""The PLC-style scan: one snapshot in, one state, the lamps and the events out.

`Evaluator.step(snapshot, now)` resolves every input once (quality, staleness, scale,
debounce, on_stale), computes [define]s and signals in dependency order, runs every state's
timers, picks exactly one state, resolves the lamps, and counts edges. It keeps its own
memory (timers, debounce, edges, totals) and reads no clock: `now` is the caller's scan time.

Fail-safe rule: a state whose condition is unknown blocks every state below it, and the
result is the `unknown` state. The evaluator starts in `unknown`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.compiler import NOW_SLOT, Compiled
from linelight.rules.expressions import MAX_INT
from linelight.rules.model import (
    UNKNOWN_STATE,
    Define,
    InputSlots,
    InputSpec,
    LampShow,
    Output,
    Rule,
    RuleSet,
)
from linelight.rules.values import Pattern, Quality, Sample, TowerCommand, Value
from linelight.rules.windows import Window

_GOOD = Quality.GOOD
_INIT = Quality.INIT
_EPS = 1e-9  # scan times are floats: 3 x 0.1 s must count as 0.3 s
GREEN = "green"


@dataclass(frozen=True, slots=True)
class StateInfo:
    """The machine state: its name, numeric code and the scan time it began."""

    name: str
    code: int
    since: float


@dataclass(frozen=True, slots=True)
class RuleEvent:
    """Something worth recording: kind is "state", "alarm" or "count"; `at` is scan time."""

    kind: str
    name: str
    value: Value
    at: float
    detail: tuple[tuple[str, Value], ...] = ()


@dataclass(frozen=True, slots=True)
class Latch:
    """A state or signal held on by its `clear_when`, for the journal to keep across restarts.

    `key` is the rule's timer identity (`_timer_key`): a rule whose condition, release,
    priority or delays changed does not inherit the latch. `since` is scan time.
    """

    kind: str  # "state" | "signal"
    name: str
    key: str
    since: float


@dataclass(frozen=True, slots=True)
class WindowMemory:
    """What one rolling window holds, for the journal to keep across restarts.

    `key` is the window's call text (`count_of(microstop, 600.0)`); `entries` are
    (scan time, amount), oldest first."""

    key: str
    entries: tuple[tuple[float, int], ...]


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one scan. `reason` says, for people, why the state is unknown.

    `latched` names the rules held on by `clear_when` ("state:x", "signal:y"): when it
    changes, the caller stores `Evaluator.latches()` so a restart cannot release them."""

    state: StateInfo
    lamps: TowerCommand
    signals: tuple[str, ...]
    counters: Mapping[str, int]
    events: tuple[RuleEvent, ...]
    reason: str = ""
    latched: tuple[str, ...] = ()
    outputs: Mapping[str, bool] = field(default_factory=dict)
    # how many edges the rolling windows have taken so far: when it changes, the caller
    # stores `Evaluator.windows()` (as it stores latches)
    window_edges: int = 0


class _Timer:
    """on_delay / off_delay / clear_when for one state or signal, in scan time."""

    __slots__ = ("on_delay", "off_delay", "active", "pending_since", "off_since", "active_since")

    def __init__(self, rule: Rule | Output) -> None:
        self.on_delay = rule.on_delay
        self.off_delay = rule.off_delay
        self.active = False
        self.pending_since: float | None = None
        self.off_since: float | None = None
        self.active_since = 0.0

    def update(self, when: Any, release: Any, now: float) -> Any:
        """Advance with this scan's `when` and release value; True, False or None (unknown).

        An unknown condition restarts a running delay and keeps the latch as it was.
        """
        if not self.active:
            if when is True:
                if self.pending_since is None:
                    self.pending_since = now
                if now - self.pending_since >= self.on_delay - _EPS:
                    self.active = True
                    self.active_since = now
                    self.pending_since = None
                    self.off_since = None
                    # on, but held by a release that cannot be read: unknown from the start,
                    # as in every later scan (only a `clear_when` can be unknown here)
                    return None if release is None else True
                return False
            self.pending_since = None
            return None if when is None else False
        if release is False:
            self.off_since = None
            return True
        if release is None:
            self.off_since = None
            return None
        if self.off_since is None:
            self.off_since = now
        if now - self.off_since >= self.off_delay - _EPS:
            self.active = False
            self.off_since = None
            return False
        return True

    def copy_from(self, other: _Timer) -> None:
        self.active = other.active
        self.pending_since = other.pending_since
        self.off_since = other.off_since
        self.active_since = other.active_since


class _InputState:
    """Per-input memory: debounce candidate, last good value for `hold`."""

    __slots__ = ("candidate", "candidate_since", "stable", "last_good", "bad_since")

    def __init__(self) -> None:
        self.candidate: Any = None
        self.candidate_since = 0.0
        self.stable: Any = None
        self.last_good: Any = None
        self.bad_since: float | None = None


def _coerce(spec: InputSpec, raw: Any) -> Any:
    """The sample value as the input's type, scaled; None when it does not fit (bad)."""
    t = spec.type
    if t == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) or (isinstance(raw, float) and math.isfinite(raw)):
            return raw != 0
        return None
    if t == "string":
        return raw if isinstance(raw, str) else None
    if isinstance(raw, bool):
        raw = int(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        if t == "int":
            if not raw.is_integer():
                return None
            raw = int(raw)
    elif not isinstance(raw, int):
        return None
    try:
        if t == "float":
            raw = float(raw)
        if spec.scale is not None:
            raw = raw * spec.scale
    except OverflowError:
        return None  # an integer too large for a float: the value cannot be right
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    if isinstance(raw, int) and not -MAX_INT - 1 <= raw <= MAX_INT:
        return None  # beyond 64 bits: no device sends that, and arithmetic on it is unbounded
    return raw


class Evaluator:
    """Runs one RuleSet scan after scan. Not thread-safe: one scan loop owns it."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._v: list[Any] = [None] * ruleset.slot_count
        self._inputs: list[tuple[InputSlots, InputSpec, _InputState]] = [
            (s, s.spec, _InputState()) for s in ruleset.input_slots
        ]
        # states and signals have separate namespaces: a state may share a signal's name
        self._timers: dict[str, dict[str, _Timer]] = {
            "states": {r.name: _Timer(r) for r in ruleset.states},
            "signals": {r.name: _Timer(r) for r in ruleset.signals},
        }
        self._state_timers = [(s, self._timers["states"][s.name]) for s in ruleset.states]
        self._derived: list[tuple[Define | Rule, _Timer | None]] = [
            (d, self._timers["signals"][d.name] if isinstance(d, Rule) else None)
            for d in ruleset.derived
        ]
        self._totals: dict[str, int] = {c.name: 0 for c in ruleset.counters}
        self._last: dict[str, Any] = {c.name: None for c in ruleset.counters}
        self._outputs = [(o, _Timer(o)) for o in ruleset.outputs]
        self._windows: dict[str, list[Window]] = {}
        self._feeds: dict[str, list[int]] = {}  # counter -> slots of its `increase` windows
        for expr in _compiled(ruleset):
            for key, slot, width in expr.windows:
                self._v[slot] = Window(width)
                self._windows.setdefault(key, []).append(self._v[slot])
            for counter, slot in expr.feeds:
                self._feeds.setdefault(counter, []).append(slot)
        for c in ruleset.counters:
            self._v[c.slot] = 0
        name_slot, code_slot, _ = ruleset.state_slots
        if name_slot >= 0:
            self._v[name_slot] = UNKNOWN_STATE
            self._v[code_slot] = ruleset.unknown.code
        self._current: StateInfo | None = None
        self._left: StateInfo | None = None  # a reload removed this current state
        # signals that were on when a reload removed or restarted them: (name, on since)
        self._ended: tuple[tuple[str, float], ...] = ()
        self._depends = _input_dependencies(ruleset)
        # rules that latch (a clear_when holds them on): their memory must survive restarts
        self._latching: tuple[tuple[str, Rule, _Timer], ...] = tuple(
            (kind[:-1], rule, self._timers[kind][rule.name])
            for kind in ("states", "signals") for rule in getattr(ruleset, kind)
            if rule.clear_when is not None)

    # -- public ----------------------------------------------------------------------------
    @property
    def state(self) -> StateInfo:
        """The current state (`unknown` before the first scan)."""
        if self._current is None:
            return StateInfo(UNKNOWN_STATE, self.ruleset.unknown.code, 0.0)
        return self._current

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._totals)

    def restore_counters(self, totals: Mapping[str, int]) -> None:
        """Seed persisted cumulative totals; names this rule set does not count are ignored."""
        for name, total in totals.items():
            if name in self._totals:
                self._totals[name] = int(total)
        for c in self.ruleset.counters:
            self._v[c.slot] = self._totals[c.name]

    def latches(self) -> tuple[Latch, ...]:
        """Every state and signal held on by its `clear_when` now (see `restore_latches`)."""
        return tuple(Latch(kind, rule.name, _timer_key(rule), timer.active_since)
                     for kind, rule, timer in self._latching if timer.active)

    def restore_latches(self, latches: Iterable[Latch]) -> int:
        """Latch again what a previous run had latched (before the first scan of a start).

        A latch is restored only onto a rule of the same kind, name and timer identity that
        latches: a rule that changed, or lost its `clear_when`, starts released. Timers
        (on/off delays) are not restored: they restart from zero. Returns how many were
        restored. The state stays `unknown` until a scan decides it; a restored signal is
        already on, so its first scan sends no "on" event, and its lamp shows as soon as its
        condition is known.
        """
        wanted = {(latch.kind, latch.name): latch for latch in latches}
        restored = 0
        for kind, rule, timer in self._latching:
            latch = wanted.get((kind, rule.name))
            if latch is None or latch.key != _timer_key(rule):
                continue
            timer.active = True
            timer.active_since = latch.since
            timer.pending_since = timer.off_since = None
            restored += 1
        return restored

    def windows(self) -> tuple[WindowMemory, ...]:
        """What every rolling window holds now (see `restore_windows`)."""
        return tuple(WindowMemory(key, ws[0].entries()) for key, ws in self._windows.items())

    def restore_windows(self, memories: Iterable[WindowMemory]) -> int:
        """Put back what a previous run's windows held (before the first scan of a start).

        Windows are matched by their call text; a window whose call changed starts empty.
        Returns how many windows were restored."""
        restored = 0
        for memory in memories:
            for window in self._windows.get(memory.key, ()):
                window.restore(memory.entries)
                restored += 1
        return restored

    def carry_over(self, old: Evaluator) -> None:
        """Keep the memory of every unchanged rule from `old` (a hot reload).

        Inputs, [define]s, states, signals and counters whose definition is identical keep
        their debounce, hold, timers, latches and edge memory; a state or signal whose only
        change is its code, lamps or description keeps them too. Counter totals are kept by
        name whatever changed. The current state becomes this rule set's state of the same
        name (its new code and lamps) and keeps its start time; if this rule set has no state
        of that name, the current state is `unknown` and the next scan reports it left.
        """
        old_inputs = {spec.key: mem for _, spec, mem in old._inputs}
        for _, spec, mem in self._inputs:
            prev = old_inputs.get(spec.key)
            if prev is not None:
                for name in _InputState.__slots__:
                    setattr(mem, name, getattr(prev, name))
        old_exprs = _expressions_by_key(old.ruleset)
        for key, exprs in _expressions_by_key(self.ruleset).items():
            before = old_exprs.get(key)
            if before is None:
                continue
            for new_c, old_c in zip(exprs, before, strict=True):
                for new_slot, old_slot in zip(new_c.memory, old_c.memory, strict=True):
                    self._v[new_slot] = old._v[old_slot]
        self._windows = {}
        for expr in _compiled(self.ruleset):
            for key, slot, _ in expr.windows:
                self._windows.setdefault(key, []).append(self._v[slot])
        old_outputs = {o.key: t for o, t in old._outputs}
        for o, timer in self._outputs:
            if o.key in old_outputs:
                timer.copy_from(old_outputs[o.key])
        for kind in ("states", "signals"):
            old_rules = {_timer_key(r): r for r in getattr(old.ruleset, kind)}
            for rule in getattr(self.ruleset, kind):
                same = old_rules.get(_timer_key(rule))
                if same is not None:
                    self._timers[kind][rule.name].copy_from(old._timers[kind][same.name])
        # a signal that was on and is gone or starts again from off must be reported off,
        # or whoever follows the events believes it is still on (an on from the new rule
        # may follow in the same scan)
        kept = {name for name, t in self._timers["signals"].items() if t.active}
        self._ended = old._ended + tuple(
            (name, t.active_since) for name, t in old._timers["signals"].items()
            if t.active and name not in kept)
        old_counters = {c.key for c in old.ruleset.counters}
        for c in self.ruleset.counters:
            if c.name in old._totals:
                self._totals[c.name] = old._totals[c.name]
                self._v[c.slot] = old._totals[c.name]
            if c.key in old_counters:
                self._last[c.name] = old._last[c.name]
        self._current = self._left = None
        current = old._current
        if current is not None:
            unknown = StateInfo(UNKNOWN_STATE, self.ruleset.unknown.code, current.since)
            if current.name == UNKNOWN_STATE:
                self._current = unknown
            elif (rule := self.ruleset.state(current.name)) is not None:
                self._current = StateInfo(rule.name, rule.code, current.since)
            else:  # the state is gone: `unknown` until a scan decides, and that scan says so
                self._current, self._left = unknown, current
        name_slot, code_slot, _ = self.ruleset.state_slots
        if name_slot >= 0 and self._current is not None:
            # expressions go on reading the state as the last scan before the reload left it
            self._v[name_slot] = self._current.name
            self._v[code_slot] = self._current.code

    def step(self, snapshot: Mapping[str, Sample], now: float) -> Step:
        """One scan over one consistent snapshot at scan time `now`."""
        v = self._v
        v[NOW_SLOT] = now
        for_slot = self.ruleset.state_slots[2]
        if for_slot >= 0 and self._current is not None:
            v[for_slot] = now - self._current.since  # in the previous scan's state until now
        self._resolve_inputs(snapshot, now)
        events: list[RuleEvent] = []
        if self._ended:
            events.extend(RuleEvent("alarm", name, False, now, (("duration", round(now - t, 6)),))
                          for name, t in self._ended)
            self._ended = ()
        self._derive(now, events)
        winner, blocker = self._choose(now)
        state = self._transition(winner, now, events)
        lamps = self._lamps(winner, state, now)
        outputs = self._drive(now)
        self._count(now, events)
        signals = tuple(r.name for r, t in self._derived if t is not None and t.active)
        reason = "" if winner is not None else self._reason(blocker)
        latched = tuple(f"{kind}:{rule.name}" for kind, rule, timer in self._latching
                        if timer.active)
        self._remember_state(state, now)
        return Step(state, lamps, signals, dict(self._totals), tuple(events), reason, latched,
                    outputs, self._window_edges())

    # -- the scan --------------------------------------------------------------------------
    def _resolve_inputs(self, snapshot: Mapping[str, Sample], now: float) -> None:
        v = self._v
        for slots, spec, mem in self._inputs:
            sample = snapshot.get(spec.name)
            value: Any = None
            if sample is None or sample.quality is _INIT:
                v[slots.at] = None
                usable = False
            else:
                v[slots.at] = sample.at
                usable = sample.quality is _GOOD and (
                    spec.stale_after is None or now - sample.at <= spec.stale_after + _EPS)
                if usable:
                    value = _coerce(spec, sample.value)
                    usable = value is not None
            if usable:
                if spec.debounce > 0:
                    if value != mem.candidate or mem.candidate is None:
                        mem.candidate = value
                        mem.candidate_since = v[slots.at]  # when the value was first seen
                    if now - mem.candidate_since >= spec.debounce - _EPS:
                        mem.stable = mem.candidate
                    value = mem.stable
                mem.bad_since = None
                if value is not None:
                    mem.last_good = value
            else:
                mem.candidate = None
                mem.stable = None
                if mem.bad_since is None:
                    mem.bad_since = now
                mode = spec.on_stale
                if mode == "hold":
                    if mem.last_good is not None and now - mem.bad_since < spec.hold_for - _EPS:
                        value = mem.last_good
                elif mode == "false":
                    value = False
                elif mode == "true":
                    value = True
            v[slots.usable] = usable
            v[slots.value] = value

    def _derive(self, now: float, events: list[RuleEvent]) -> None:
        v = self._v
        for item, timer in self._derived:
            if timer is None:
                assert isinstance(item, Define)
                v[item.slot] = item.expr.evaluate(v)
                continue
            assert isinstance(item, Rule)
            was = timer.active
            since = timer.active_since
            v[item.slot] = _run_rule(item, timer, v, now)
            v[item.since_slot] = timer.active_since if timer.active else None
            if timer.active != was:
                detail: tuple[tuple[str, Value], ...] = ()
                if not timer.active:
                    detail = (("duration", round(now - since, 6)),)
                events.append(RuleEvent("alarm", item.name, timer.active, now, detail))

    def _choose(self, now: float) -> tuple[Rule | None, Rule | None]:
        """(winner, None), or (None, the highest state whose condition is unknown)."""
        v = self._v
        winner: Rule | None = None
        blocker: Rule | None = None
        for rule, timer in self._state_timers:
            out = _run_rule(rule, timer, v, now)  # every timer runs every scan
            if winner is None and blocker is None:
                if out is True:
                    winner = rule
                elif out is None:
                    blocker = rule
        return winner, blocker

    def _transition(self, winner: Rule | None, now: float, events: list[RuleEvent]) -> StateInfo:
        unknown = self.ruleset.unknown
        name, code = (winner.name, winner.code) if winner else (UNKNOWN_STATE, unknown.code)
        current = self._current
        if current is None:
            current = self._current = StateInfo(UNKNOWN_STATE, unknown.code, now)
        left, self._left = self._left, None
        if left is not None:  # the reload removed it: it ends here, through `unknown`
            events.append(_state_event(UNKNOWN_STATE, unknown.code, left, now))
            current = self._current = StateInfo(UNKNOWN_STATE, unknown.code, now)
        if current.name == name and current.code == code:
            return current
        events.append(_state_event(name, code, current, now))
        self._current = StateInfo(name, code, now)
        return self._current

    def _lamps(self, winner: Rule | None, state: StateInfo, now: float) -> TowerCommand:
        best: dict[str, tuple[float, Pattern]] = {}
        if winner is not None:
            _offer(best, winner.show, float(winner.priority), state.since, now)
        else:
            unknown = self.ruleset.unknown
            prio = math.inf if unknown.priority is None else float(unknown.priority)
            _offer(best, unknown.show, prio, state.since, now)
        v = self._v
        for rule, timer in self._derived:
            # A lamp is lit only by a condition known to hold in this scan: a signal latched
            # on whose condition has become unknown keeps its on/off for events, not its lamps.
            if timer is not None and timer.active and isinstance(rule, Rule) and v[rule.slot]:
                _offer(best, rule.show, float(rule.priority), timer.active_since, now)
        if winner is None and not any(s.lamp == GREEN for s in self.ruleset.unknown.show):
            best.pop(GREEN, None)  # green means a known state: never while the state is unknown
        off = Pattern.OFF
        return {lamp: best[lamp][1] if lamp in best else off
                for lamp in self.ruleset.tower_lamps}

    def _drive(self, now: float) -> dict[str, bool]:
        """Each [[output]]: on only while its condition is known true (after its delays) and
        every input whose value it reads is usable (fresh and good, whatever its on_stale)."""
        v = self._v
        out: dict[str, bool] = {}
        for o, timer in self._outputs:
            when = o.when.evaluate(v)
            if when is not None and not all(v[slot] for slot in o.guards):
                when = None  # `a or b` with `b` stale: decided for a lamp, never for a permit
            out[o.name] = timer.update(when, None if when is None else not when, now) is True
        return out

    def _count(self, now: float, events: list[RuleEvent]) -> None:
        v = self._v
        totals = self._totals
        last_known = self._last
        for c in self.ruleset.counters:
            cur = c.expr.evaluate(v)
            if c.reset is not None and c.reset.evaluate(v) is True and totals[c.name] != 0:
                totals[c.name] = 0
                events.append(RuleEvent("count", c.name, 0, now, (("reset", True),)))
            if cur is not None:  # unknown scans are skipped: edges compare known values only
                last = last_known[c.name]
                last_known[c.name] = cur
                if last is not None and last != cur and cur == (c.edge == "rising"):
                    totals[c.name] += c.increment
                    for slot in self._feeds.get(c.name, ()):
                        v[slot].add(now, c.increment)
                    events.append(RuleEvent("count", c.name, totals[c.name], now,
                                            (("increment", c.increment),)))
            v[c.slot] = totals[c.name]  # what expressions read in the next scan

    def _remember_state(self, state: StateInfo, now: float) -> None:
        """The state as the next scan's expressions read it (`state`, `state_code`, ...)."""
        name_slot, code_slot, for_slot = self.ruleset.state_slots
        if name_slot < 0:
            return
        v = self._v
        v[name_slot] = state.name
        v[code_slot] = state.code
        v[for_slot] = now - state.since

    def _window_edges(self) -> int:
        return sum(ws[0].added for ws in self._windows.values())

    def _reason(self, blocker: Rule | None) -> str:
        if blocker is None:
            return "no state's condition is true"
        v = self._v
        bad = [s.spec.name for s in self.ruleset.input_slots
               if s.spec.name in self._depends.get(blocker.name, ()) and v[s.value] is None]
        if bad:
            return (f"state '{blocker.name}' cannot be decided: "
                    f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not known")
        return (f"state '{blocker.name}' cannot be decided: a value in its conditions is not "
                "known (a division by zero, or a result beyond 64 bits)")


def _state_event(name: str, code: int, previous: StateInfo, now: float) -> RuleEvent:
    return RuleEvent("state", name, code, now, (
        ("previous_state", previous.name),
        ("previous_code", previous.code),
        ("previous_duration", round(now - previous.since, 6)),
    ))


def _timer_key(rule: Rule) -> str:
    """What a state's or signal's timers depend on: its code and lamps do not count."""
    clear = rule.clear_when.text if rule.clear_when else "-"
    return (f"{rule.name} {rule.priority} {rule.when.text} {clear} "
            f"{rule.on_delay} {rule.off_delay}")


def _run_rule(rule: Rule, timer: _Timer, v: list[Any], now: float) -> Any:
    when = rule.when.evaluate(v)
    if rule.clear_when is not None:
        clear = rule.clear_when.evaluate(v)
        if when is None and timer.active and not rule.hold_on_stale:
            # Latched by `when`, which cannot be read now (a stale or bad input): unknown, not
            # held, or a silent device would keep green lit. The latch itself is kept: it
            # holds again once `when` can be read, unless `clear_when` released it meanwhile.
            clear = None
    else:
        clear = None if when is None else not when
    return timer.update(when, clear, now)


def _offer(best: dict[str, tuple[float, Pattern]], show: tuple[LampShow, ...], priority: float,
           since: float, now: float) -> None:
    for s in show:
        if s.seconds is not None and now - since >= s.seconds - _EPS:
            continue  # a timed pattern has run out: it no longer claims the lamp
        held = best.get(s.lamp)
        if held is None or held[0] < priority:
            best[s.lamp] = (priority, s.pattern)


def _expressions_by_key(rs: RuleSet) -> dict[str, list[Compiled]]:
    out: dict[str, list[Compiled]] = {}
    for d in rs.defines:
        out[d.key] = [d.expr]
    for r in rs.states:
        out["state " + _timer_key(r)] = [r.when] + ([r.clear_when] if r.clear_when else [])
    for r in rs.signals:
        out["signal " + _timer_key(r)] = [r.when] + ([r.clear_when] if r.clear_when else [])
    for c in rs.counters:
        out[c.key] = [c.expr] + ([c.reset] if c.reset else [])
    for o in rs.outputs:
        out[o.key] = [o.when]
    return out


def _compiled(rs: RuleSet) -> list[Compiled]:
    """Every compiled expression of the rule set."""
    return [c for exprs in _expressions_by_key(rs).values() for c in exprs]


def _input_dependencies(rs: RuleSet) -> dict[str, frozenset[str]]:
    """For each state, every input its conditions read, through defines and signals."""
    reads: dict[str, set[str]] = {}
    for d in rs.defines:
        reads[d.name] = set(d.expr.reads)
    for r in rs.signals:
        reads[r.name] = set(r.when.reads) | (set(r.clear_when.reads) if r.clear_when else set())

    def expand(names: set[str]) -> set[str]:
        out: set[str] = set()
        todo, seen = list(names), set(names)
        while todo:  # a loop: a chain of a thousand [define]s must not overflow the stack
            n = todo.pop()
            if n in rs.inputs:
                out.add(n)
            for m in reads.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return out

    result: dict[str, frozenset[str]] = {}
    for s in rs.states:
        names = set(s.when.reads) | (set(s.clear_when.reads) if s.clear_when else set())
        result[s.name] = frozenset(expand(names))
    return result
