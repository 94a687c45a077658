"""Fuzzing the loader: whatever the text, the answer is a rule set or located problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linelight.rules.errors import ConfigProblems
from linelight.rules.loader import load_rules
from linelight.rules.testing import load_test_text

from .util import BASIC, load

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"
SEEDS = [BASIC] + [p.read_text() for p in sorted(EXAMPLES.glob("*.toml"))]


def outcome(text: str, file: str = "fuzz.toml") -> str:
    """Load `text`: fine, or ConfigProblems whose every problem is located in that file."""
    try:
        load_rules([(file, text)])
    except ConfigProblems as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.location.file == file
            assert p.location.line >= 1 and p.location.col >= 1
            assert str(p).startswith(f"{file}:{p.location.line}:{p.location.col}: ")
            assert p.message and "\n" not in p.message and "Traceback" not in p.message
        return "problems"
    return "ok"


@FUZZ
@given(st.text(max_size=400))
def test_random_text_gives_a_rule_set_or_located_problems(text):
    outcome(text)


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_rule_files_give_a_rule_set_or_located_problems(seed, data):
    text = seed
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 12))
        insert = data.draw(st.text(alphabet=st.sampled_from(list('"=[]{},.#\n 0129aZ_:-\'\\tx')),
                                   max_size=6))
        text = text[:at] + insert + text[at + cut:]
    outcome(text)


expression_chars = st.sampled_from(list("abcdefgimnorstuwx_0123456789 ()+-*/%<>=!&|.,'\"") +
                                   ["running", "fault_code", " and ", " or ", "not ", " in ",
                                    "rising(", "between(", "stale(", "age(", "true", "1.5e3",
                                    "500ms", "bit(", "max(", "\\", "\t", "\u00e9", "\u0000"])


@FUZZ
@given(st.lists(expression_chars, max_size=25).map("".join))
def test_random_expressions_give_a_rule_set_or_located_problems(expr):
    quoted = json.dumps(expr)  # a valid TOML basic string for any text
    outcome(BASIC.replace('when = "running"', f"when = {quoted}"))
    outcome(BASIC.replace('when = "running"', f"when = '''{expr}'''") if "'''" not in expr else "")


scalars = st.one_of(st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["bool", "int", "on:5s", "20ms", "x and y"]))
keys = st.one_of(st.sampled_from(["inputs", "state", "signal", "counter", "tower", "unknown",
                                  "define", "name", "code", "priority", "when", "show", "type",
                                  "lamps", "rising", "on_stale", "red", "debounce", "green"]),
                 st.text(min_size=1, max_size=6))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def to_toml(data: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if not isinstance(v, float) or v == v and abs(v) != float("inf") \
                else "nan"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"

    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in data.items())


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_random_toml_structures_give_a_rule_set_or_located_problems(data):
    outcome(to_toml(data))


@FUZZ
@given(st.text(max_size=300))
def test_random_rule_test_files_give_located_problems(text):
    try:
        load_test_text("t.toml", text, lambda files: load(BASIC))
    except ConfigProblems as exc:
        assert all(p.location.line >= 1 for p in exc.problems)
