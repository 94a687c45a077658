"""Property tests: stale data never decides the state, same history same outputs, counters grow."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from linelight.rules.values import Quality, Sample

NAMES = ("a", "b", "c", "d")
PROPS = settings(max_examples=120, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# An expression is a nested tuple: ("in", name) | ("lit", bool) | ("not", e) | ("and"/"or", l, r)
exprs = st.recursive(
    st.one_of(st.sampled_from(NAMES).map(lambda n: ("in", n)),
              st.booleans().map(lambda b: ("lit", b))),
    lambda inner: st.one_of(
        inner.map(lambda e: ("not", e)),
        st.tuples(st.sampled_from(["and", "or"]), inner, inner)),
    max_leaves=6,
)


def text(e: tuple[Any, ...]) -> str:
    if e[0] == "in":
        return e[1]
    if e[0] == "lit":
        return "true" if e[1] else "false"
    if e[0] == "not":
        return f"(not {text(e[1])})"
    return f"({text(e[1])} {e[0]} {text(e[2])})"


def truth(e: tuple[Any, ...], env: dict[str, bool]) -> bool:
    if e[0] == "in":
        return env[e[1]]
    if e[0] == "lit":
        return bool(e[1])
    if e[0] == "not":
        return not truth(e[1], env)
    if e[0] == "and":
        return truth(e[1], env) and truth(e[2], env)
    return truth(e[1], env) or truth(e[2], env)


def rule_text(whens: list[tuple[Any, ...]]) -> str:
    out = ["[inputs]"] + [f'{n} = {{ type = "bool", stale_after = "1s" }}' for n in NAMES]
    for i, w in enumerate(whens):
        out += ["[[state]]", f'name = "s{i}"', f"code = {i + 1}", f"priority = {100 - i}",
                f'when = "{text(w)}"', 'show = { green = "on" }' if i % 2 else ""]
    out += ["[[state]]", 'name = "fallback"', "code = 0", "priority = 0", "when = true"]
    return "\n".join(out) + "\n"


def green_signals_text(whens: list[tuple[Any, ...]]) -> str:
    out = []
    for j, w in enumerate(whens):
        out += ["[[signal]]", f'name = "g{j}"', f"priority = {200 + j}", f'when = "{text(w)}"',
                'show = { green = "blink_slow" }']
    return "\n".join(out) + "\n"


# Per scan and input: a fresh good sample, nothing new (the old one ages), a bad one, or gone.
events = st.sampled_from(["true", "false", "none", "none", "bad", "gone"])
histories = st.lists(st.fixed_dictionaries({n: events for n in NAMES}), min_size=1, max_size=40)


def feed(table: dict[str, Sample], scan: dict[str, str], now: float) -> None:
    for name, what in scan.items():
        if what in ("true", "false"):
            table[name] = Sample(what == "true", Quality.GOOD, now)
        elif what == "bad":
            table[name] = Sample(None, Quality.BAD, now)
        elif what == "gone":
            table.pop(name, None)


def usable(table: dict[str, Sample], name: str, now: float) -> bool:
    s = table.get(name)
    return s is not None and s.quality is Quality.GOOD and now - s.at <= 1.0 + 1e-9


def outcomes(e: tuple[Any, ...], known: dict[str, bool], unknown: list[str]) -> set[bool]:
    """The values `e` takes over every possible value of the unknown inputs."""
    seen = set()
    for values in itertools.product([False, True], repeat=len(unknown)):
        seen.add(truth(e, {**known, **dict(zip(unknown, values, strict=True))}))
    return seen


@PROPS
@given(whens=st.lists(exprs, min_size=1, max_size=5), history=histories,
       dt=st.sampled_from([0.1, 0.3, 0.7]))
def test_a_stale_input_never_decides_which_state_wins(whens, history, dt):
    ev = Evaluator(load_rules([("p.toml", rule_text(whens))]))
    table: dict[str, Sample] = {}
    for k, scan in enumerate(history):
        now = k * dt
        feed(table, scan, now)
        step = ev.step(dict(table), now)
        known = {n: bool(table[n].value) for n in NAMES if usable(table, n, now)}
        unknown = [n for n in NAMES if n not in known]
        for i, w in enumerate(whens):
            possible = outcomes(w, known, unknown)
            if step.state.name == f"s{i}":
                # the winner is true whatever the unreadable inputs really are
                assert possible == {True}, (text(w), unknown)
                break
            # every state above the winner is false whatever they really are
            assert possible == {False} or step.state.name == "unknown", (text(w), unknown)
            if possible != {False}:
                break
        if step.state.name == "unknown":
            assert step.lamps["green"].value == "off"


@PROPS
@given(whens=st.lists(exprs, min_size=1, max_size=4), green=st.lists(exprs, max_size=3),
       history=histories, dt=st.sampled_from([0.1, 0.3, 0.7]))
def test_green_is_lit_only_by_a_condition_known_true_in_a_known_state(whens, green, history, dt):
    ev = Evaluator(load_rules([("p.toml", rule_text(whens) + green_signals_text(green))]))
    table: dict[str, Sample] = {}
    for k, scan in enumerate(history):
        now = k * dt
        feed(table, scan, now)
        step = ev.step(dict(table), now)
        if step.lamps["green"].value == "off":
            continue
        assert step.state.name != "unknown"
        known = {n: bool(table[n].value) for n in NAMES if usable(table, n, now)}
        unknown = [n for n in NAMES if n not in known]
        lit_by_state = step.state.name in {f"s{i}" for i in range(1, len(whens), 2)}
        lit_by_signal = any(outcomes(w, known, unknown) == {True} for w in green)
        assert lit_by_state or lit_by_signal, (step.state.name, unknown)


RICH = """
[inputs]
a = { type = "bool", stale_after = "1s", debounce = "150ms" }
b = { type = "bool", stale_after = "1s", on_stale = "hold:500ms" }
n = { type = "int", stale_after = "2s", scale = 0.5 }
[define]
edge = "rising(a) or falling(b)"
[[state]]
name = "hi"
code = 1
priority = 9
when = "n > 3 or (a and b)"
on_delay = "300ms"
off_delay = "200ms"
show = { red = "on", buzzer = "on:1s" }
[[state]]
name = "mid"
code = 2
priority = 5
when = "a or edge"
clear_when = "not a and not b"
show = { amber = "blink_slow" }
[[state]]
name = "lo"
code = 3
priority = 0
when = "not stale(n)"
show = { green = "on" }
[[signal]]
name = "warn"
priority = 7
when = "changed(n) or b"
off_delay = "400ms"
show = { blue = "blink_fast", amber = "on" }
[[counter]]
name = "edges"
rising = "edge"
[[counter]]
name = "falls"
falling = "a or b"
increment = 3
"""

values = st.one_of(st.booleans(), st.integers(-10, 10), st.integers(), st.floats(allow_nan=True),
                   st.text(max_size=2), st.none())
samples = st.one_of(st.none(), st.tuples(values, st.sampled_from(list(Quality))))
rich_history = st.lists(st.fixed_dictionaries({n: samples for n in ("a", "b", "n")}),
                        min_size=1, max_size=60)


def run_rich(history, dt: float):
    ev = Evaluator(load_rules([("rich.toml", RICH)]))
    table: dict[str, Sample] = {}
    out = []
    for k, scan in enumerate(history):
        now = k * dt
        for name, s in scan.items():
            if s is not None:
                table[name] = Sample(s[0], s[1], now)
        out.append(ev.step(dict(table), now))
    return out


@PROPS
@given(history=rich_history, dt=st.sampled_from([0.05, 0.1, 0.25]))
def test_the_same_history_gives_the_same_outputs(history, dt):
    assert run_rich(history, dt) == run_rich(history, dt)


@PROPS
@given(history=rich_history, dt=st.sampled_from([0.05, 0.1, 0.25]))
def test_counters_never_decrease_and_events_report_the_totals(history, dt):
    last = {"edges": 0, "falls": 0}
    for step in run_rich(history, dt):
        for name, total in step.counters.items():
            assert total >= last[name]
        counted = [e for e in step.events if e.kind == "count"]
        for e in counted:
            assert e.value == step.counters[e.name]
            assert e.value - dict(e.detail)["increment"] == last[e.name]
        last = dict(step.counters)
        assert set(step.lamps) == {"red", "amber", "green", "blue", "white", "buzzer"}


# -- latches, delays and reloads: green never rests on a stale input ----------------------------

rules_parts = st.fixed_dictionaries({
    "when": exprs,
    "clear": st.one_of(st.none(), exprs),
    "on_delay": st.sampled_from(["0s", "200ms", "500ms"]),
    "off_delay": st.sampled_from(["0s", "300ms"]),
    "green": st.booleans(),
})


def latch_rules_text(rules: list[dict[str, Any]], signals: list[dict[str, Any]]) -> str:
    out = ["[inputs]"] + [f'{n} = {{ type = "bool", stale_after = "1s" }}' for n in NAMES]
    for kind, items, base in (("state", rules, 100), ("signal", signals, 300)):
        for i, r in enumerate(items):
            out += [f"[[{kind}]]", f'name = "{kind[:2]}{i}"', f"priority = {base - i}",
                    f'when = "{text(r["when"])}"', f'on_delay = "{r["on_delay"]}"',
                    f'off_delay = "{r["off_delay"]}"']
            if kind == "state":
                out.append(f"code = {i + 1}")
            if r["clear"] is not None:
                out.append(f'clear_when = "{text(r["clear"])}"')
            if r["green"]:
                out.append('show = { green = "on" }' if kind == "state"
                           else 'show = { green = "blink_slow" }')
    out += ["[[state]]", 'name = "fallback"', "code = 0", "priority = 0", "when = true"]
    return "\n".join(out) + "\n"


def green_rests_on_known_inputs(r: dict[str, Any], known: dict[str, bool],
                                unknown: list[str]) -> bool:
    """A rule lighting green must be decided without the stale inputs: its `when` and its
    `clear_when` each take one value whatever the stale inputs really are (true, a latch
    held by a known-false `when`, or an off_delay running after a known release)."""
    decided = len(outcomes(r["when"], known, unknown)) == 1
    return decided and (r["clear"] is None or len(outcomes(r["clear"], known, unknown)) == 1)


@PROPS
@given(rules=st.lists(rules_parts, min_size=1, max_size=4),
       signals=st.lists(rules_parts, max_size=2), history=histories,
       dt=st.sampled_from([0.1, 0.3, 0.7]), reload_at=st.integers(0, 40),
       shuffled=st.permutations(range(4)))
def test_no_lit_green_while_an_input_its_latched_or_delayed_rule_reads_is_stale(
        rules, signals, history, dt, reload_at, shuffled):
    ev = Evaluator(load_rules([("p.toml", latch_rules_text(rules, signals))]))
    table: dict[str, Sample] = {}
    for k, scan in enumerate(history):
        if k == reload_at:  # a hot reload: reordered priorities, memory carried over
            order = [i for i in shuffled if i < len(rules)]
            rules = [rules[i] for i in order]
            new = Evaluator(load_rules([("p.toml", latch_rules_text(rules, signals))]))
            new.carry_over(ev)
            ev = new
        now = k * dt
        feed(table, scan, now)
        step = ev.step(dict(table), now)
        if step.lamps["green"].value == "off":
            continue
        assert step.state.name != "unknown"
        known = {n: bool(table[n].value) for n in NAMES if usable(table, n, now)}
        unknown = [n for n in NAMES if n not in known]
        lighting = [r for i, r in enumerate(rules) if r["green"] and step.state.name == f"st{i}"]
        lighting += [r for i, r in enumerate(signals) if r["green"] and f"si{i}" in step.signals]
        assert any(green_rests_on_known_inputs(r, known, unknown) for r in lighting), (
            step.state.name, step.signals, unknown)
