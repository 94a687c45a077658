"""What the scan loop records: input changes (with deadband), rule events, lamps, agent events.

Pure functions from scan results to `linelight.agent.journal.Event`. Timestamps are UTC epoch ns; an
event taken while the wall clock is not synchronized carries `clock_unsynced = true` so a
consumer knows not to trust its `ts` (the `seq` order is always right).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from linelight.agent.journal import Event
from linelight.rules.values import Pattern, Quality, Sample, Value

UNSYNCED = "clock_unsynced"
MACHINE = "machine"  # the attr naming a named machine's events (agent.machines)


def _attrs(base: Mapping[str, Any], unsynced: bool, machine: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {MACHINE: machine} if machine is not None else {}
    out.update(base)
    if unsynced:
        out[UNSYNCED] = True
    return out


def _plain(value: Any) -> Any:
    """Values in events must be msgpack-able: enums become their value."""
    if isinstance(value, Pattern | Quality):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class InputChanges:
    """Remembers the last value recorded per input and says which inputs changed enough.

    A numeric input is recorded when it moved by at least its deadband since the last recorded
    value (so a slow drift is still recorded, in deadband-sized steps); any other input on
    every change. A change of quality is always recorded.
    """

    def __init__(self, deadband: Mapping[str, float] | None = None, default: float = 0.0) -> None:
        self._deadband = dict(deadband or {})
        self._default = default
        self._last: dict[str, tuple[Value, Quality]] = {}

    def changes(self, snapshot: Mapping[str, Sample]) -> list[tuple[str, Sample]]:
        out: list[tuple[str, Sample]] = []
        for name, sample in snapshot.items():
            last = self._last.get(name)
            if last is None:
                if sample.quality is Quality.INIT:
                    continue  # nothing read yet: not an event
            elif last[1] is sample.quality and not self._moved(name, last[0], sample.value):
                continue
            self._last[name] = (sample.value, sample.quality)
            out.append((name, sample))
        return out

    def _moved(self, name: str, old: Value, new: Value) -> bool:
        if old == new and type(old) is type(new):
            return False
        numeric = (int, float)
        if (isinstance(old, numeric) and isinstance(new, numeric)
                and not isinstance(old, bool) and not isinstance(new, bool)):
            band = self._deadband.get(name, self._default)
            return abs(float(new) - float(old)) >= band if band > 0 else old != new
        return True


def signal_event(name: str, sample: Sample, now_ns: int, *, unsynced: bool,
                 machine: str | None = None) -> Event:
    attrs: dict[str, Any] = {"quality": sample.quality.value}
    if sample.reason:
        attrs["reason"] = sample.reason
    return Event("signal", name, _plain(sample.value), sample.wall_ns or now_ns,
                 _attrs(attrs, unsynced, machine))


def rule_event(kind: str, name: str, value: Any, detail: Iterable[tuple[str, Any]], ts_ns: int,
               *, unsynced: bool, machine: str | None = None) -> Event:
    """A RuleEvent from the evaluator (state, alarm, count) as a journal Event."""
    attrs = {k: _plain(v) for k, v in detail}
    return Event(kind, name, _plain(value), ts_ns, _attrs(attrs, unsynced, machine))


def lamp_event(lamp: str, pattern: Pattern, previous: Pattern | None, ts_ns: int, *,
               unsynced: bool, machine: str | None = None) -> Event:
    attrs = {"previous": previous.value} if previous is not None else {}
    return Event("lamp", lamp, pattern.value, ts_ns, _attrs(attrs, unsynced, machine))


def agent_event(name: str, value: Any, ts_ns: int, *, unsynced: bool,
                machine: str | None = None, **attrs: Any) -> Event:
    """Agent life events: start, stop, rules_reloaded, rules_rejected, clock_jump, clock_sync
    (the rules ones of a named machine carry it)."""
    return Event("agent", name, _plain(value), ts_ns,
                 _attrs({k: _plain(v) for k, v in attrs.items()}, unsynced, machine))


def lamp_changes(old: Mapping[str, Pattern], new: Mapping[str, Pattern]
                 ) -> list[tuple[str, Pattern, Pattern | None]]:
    return [(lamp, p, old.get(lamp)) for lamp, p in new.items() if old.get(lamp) is not p]
