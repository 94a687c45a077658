"""Property: a run with a restart at a random scan equals the run without one.

What the agent persists (latches, counter totals, rolling windows) is carried over by
`rules.testing.restart`, the same hand-over the agent's start does through agent.memory.
Timers are what a restart loses by design, so the generated rules have none; and "the first
known value after a start is never an edge", so the inputs of the scan before the restart
and of the restart scan are good and equal (an edge there would be lost by design too).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linelight.rules.evaluator import Evaluator, Step
from linelight.rules.loader import load_rules
from linelight.rules.testing import restart
from linelight.rules.values import Quality, Sample
from tests.rules.test_properties import NAMES, exprs, text

PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

rule_parts = st.fixed_dictionaries({
    "when": exprs,
    "clear": st.one_of(st.none(), exprs),
})


def rules_text(states: list[dict[str, Any]], signals: list[dict[str, Any]],
               window: float, threshold: int) -> str:
    out = ["[inputs]"] + [f'{n} = {{ type = "bool" }}' for n in NAMES]
    for i, r in enumerate(states):
        out += ["[[state]]", f'name = "s{i}"', f"code = {i + 1}", f"priority = {100 - i}",
                f'when = "{text(r["when"])}"', 'show = { red = "on" }']
        if r["clear"] is not None:
            out.append(f'clear_when = "{text(r["clear"])}"')
    out += ["[[state]]", 'name = "fallback"', "code = 0", "priority = 0", "when = true"]
    for j, r in enumerate(signals):
        out += ["[[signal]]", f'name = "g{j}"', f"priority = {200 + j}",
                f'when = "{text(r["when"])}"', 'show = { blue = "on" }']
        if r["clear"] is not None:
            out.append(f'clear_when = "{text(r["clear"])}"')
    out += ["[[signal]]", 'name = "busy"', "priority = 300",
            f'when = "count_of(a, {window}s) >= {threshold} or increase(edges, {window}s) > 1"',
            'show = { amber = "on" }',
            "[[counter]]", 'name = "edges"', f'rising = "b or ({text(states[0]["when"])})"']
    return "\n".join(out) + "\n"


values = st.sampled_from(["true", "false", "bad"])
scans = st.fixed_dictionaries({n: values for n in NAMES})
good_scan = st.fixed_dictionaries({n: st.sampled_from(["true", "false"]) for n in NAMES})


def snapshot(scan: dict[str, str], now: float) -> dict[str, Sample]:
    return {n: Sample(v == "true", Quality.GOOD, now) if v != "bad"
            else Sample(None, Quality.BAD, now) for n, v in scan.items()}


def observed(step: Step) -> tuple[Any, ...]:
    return (step.state.name, dict(step.lamps), tuple(step.signals), dict(step.counters),
            step.latched)


@PROPS
@given(states=st.lists(rule_parts, min_size=1, max_size=4),
       signals=st.lists(rule_parts, max_size=3),
       window=st.sampled_from([0.5, 1.0, 3.0]), threshold=st.integers(1, 4),
       before=st.lists(scans, min_size=1, max_size=30), pivot=good_scan,
       after=st.lists(scans, max_size=30), dt=st.sampled_from([0.1, 0.25]))
def test_a_restart_at_any_scan_changes_nothing_but_timers_and_the_first_unknown_scan(
        states, signals, window, threshold, before, pivot, after, dt):
    rs = load_rules([("p.toml", rules_text(states, signals, window, threshold))])
    history = [*before, pivot, pivot, *after]
    at = len(before) + 1  # the restart scan: its inputs equal the previous scan's, all good
    straight, restarted = Evaluator(rs), Evaluator(rs)
    for k, scan in enumerate(history):
        now = k * dt
        if k == at:
            restarted = restart(restarted)
        a = straight.step(snapshot(scan, now), now)
        b = restarted.step(snapshot(scan, now), now)
        if k >= at:
            assert observed(b) == observed(a), f"scan {k} (restart at {at})"
            assert b.outputs == a.outputs
