"""The condition language: syntax, three-valued logic, types, functions, and its errors."""

from __future__ import annotations

from typing import Any

import pytest

from linelight.rules.compiler import Kind, SlotAllocator, Symbol, compile_tree
from linelight.rules.expressions import ExpressionError, parse, unparse

KINDS = {"running": Kind.BOOL, "estop_ok": Kind.BOOL, "door": Kind.BOOL,
         "fault_code": Kind.NUM, "speed": Kind.NUM, "mode": Kind.STR}


def compile_expr(text: str) -> tuple[Any, list[Any], dict[str, Symbol]]:
    slots = SlotAllocator()
    symbols = {}
    for name, kind in KINDS.items():
        symbols[name] = Symbol(name, kind, slots.take(), "input", slots.take(), slots.take())
    compiled = compile_tree(text, parse(text), symbols, slots, {"producing": "state"})
    return compiled, [None] * slots.count, symbols


def value(text: str, now: float = 0.0, **inputs: Any) -> Any:
    compiled, v, symbols = compile_expr(text)
    v[0] = now
    for name, sym in symbols.items():
        v[sym.slot] = inputs.get(name)
        v[sym.usable_slot] = inputs.get(name) is not None
        v[sym.at_slot] = inputs.get(f"{name}_at")
    return compiled.evaluate(v)


def error(text: str) -> tuple[int, str]:
    with pytest.raises(ExpressionError) as info:
        compile_expr(text)
    return info.value.offset, info.value.message


# -- three-valued logic ---------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "expected"), [
    (True, True, True), (True, False, False), (False, None, False), (None, False, False),
    (True, None, None), (None, None, None),
])
def test_and_is_false_if_either_side_is_false_even_when_the_other_is_unknown(a, b, expected):
    assert value("running and estop_ok", running=a, estop_ok=b) is expected


@pytest.mark.parametrize(("a", "b", "expected"), [
    (False, False, False), (True, None, True), (None, True, True), (False, None, None),
    (None, None, None),
])
def test_or_is_true_if_either_side_is_true_even_when_the_other_is_unknown(a, b, expected):
    assert value("running or estop_ok", running=a, estop_ok=b) is expected


def test_not_of_unknown_is_unknown():
    assert value("not running", running=None) is None
    assert value("not running", running=False) is True


def test_comparison_with_an_unknown_side_is_unknown():
    assert value("fault_code != 0", fault_code=None) is None
    assert value("fault_code != 0 or not estop_ok", fault_code=None, estop_ok=False) is True


def test_arithmetic_propagates_unknown():
    assert value("speed * 2 + 1 > 3", speed=None) is None


def test_division_by_zero_is_unknown_not_an_exception():
    assert value("speed / fault_code > 1", speed=5, fault_code=0) is None
    assert value("speed % fault_code == 1", speed=5, fault_code=0) is None


# -- operators and precedence -----------------------------------------------------------------

def test_and_binds_tighter_than_or():
    assert value("running or door and estop_ok", running=True, door=False, estop_ok=False) is True
    assert unparse(parse("a or b and c")) == "(a or (b and c))"


def test_not_binds_looser_than_comparison():
    assert unparse(parse("not fault_code == 0")) == "(not (fault_code == 0))"


def test_arithmetic_precedence_and_unary_minus():
    assert value("-speed + 2 * 3 == 1", speed=5) is True
    assert value("(speed + 2) * 3 == 21", speed=5) is True
    assert value("speed % 4 == 1", speed=5) is True
    assert value("speed / 2 == 2.5", speed=5) is True


def test_in_and_not_in_test_membership():
    assert value("fault_code in (1, 2, 3)", fault_code=2) is True
    assert value("fault_code not in (1, 2, 3)", fault_code=2) is False
    assert value("mode in ('auto', 'mdi')", mode="jog") is False


def test_in_with_an_unknown_choice_is_unknown_unless_found():
    assert value("fault_code in (1, speed)", fault_code=1, speed=None) is True
    assert value("fault_code in (2, speed)", fault_code=1, speed=None) is None


def test_text_compares_with_text():
    assert value("mode == 'auto'", mode="auto") is True
    assert value('mode != "auto"', mode="auto") is False


def test_durations_are_numbers_of_seconds():
    assert value("speed == 1500ms", speed=1.5) is True
    assert value("speed == 2min", speed=120) is True


def test_number_literals_with_underscores_and_exponents():
    assert value("speed == 1_000", speed=1000) is True
    assert value("speed == 1.5e3", speed=1500) is True


# -- functions --------------------------------------------------------------------------------

def test_between_is_inclusive():
    assert value("between(speed, 10, 20)", speed=10) is True
    assert value("between(speed, 10, 20)", speed=20.5) is False
    assert value("between(speed, 10, 20)", speed=None) is None


def test_abs_min_max():
    assert value("abs(speed) == 3", speed=-3) is True
    assert value("min(speed, fault_code, 7) == 2", speed=5, fault_code=2) is True
    assert value("max(speed, fault_code) == 5", speed=5, fault_code=2) is True
    assert value("max(speed, fault_code) == 5", speed=5, fault_code=None) is None


def test_bit_reads_one_bit_of_an_integer():
    assert value("bit(fault_code, 3)", fault_code=8) is True
    assert value("bit(fault_code, 2)", fault_code=8) is False
    assert value("bit(fault_code, 0)", fault_code=2.5) is None


def test_stale_is_never_unknown():
    assert value("stale(running)", running=None) is True
    assert value("stale(running)", running=True) is False


def test_age_counts_from_the_sample_time():
    assert value("age(running) > 2s", now=10.0, running=True, running_at=7.0) is True
    assert value("age(running) > 2s", now=10.0, running=None) is None


def test_known_tells_unknown_apart():
    assert value("known(speed)", speed=None) is False
    assert value("known(speed > 3)", speed=1) is True


def _run_edges(text: str, series: list[Any]) -> list[Any]:
    compiled, v, symbols = compile_expr(text)
    out = []
    for x in series:
        v[symbols["running"].slot] = x
        out.append(compiled.evaluate(v))
    return out


def test_rising_is_true_for_one_scan_on_a_false_to_true_edge():
    assert _run_edges("rising(running)", [True, False, True, True, False]) == \
        [False, False, True, False, False]


def test_falling_is_true_for_one_scan_on_a_true_to_false_edge():
    assert _run_edges("falling(running)", [True, False, False, True]) == [False, True, False, False]


def test_edges_skip_unknown_scans_and_compare_known_values():
    assert _run_edges("rising(running)", [False, None, True]) == [False, None, True]
    assert _run_edges("changed(running)", [True, None, True]) == [False, None, False]


def test_edges_update_even_when_and_short_circuits():
    compiled, v, symbols = compile_expr("estop_ok and rising(running)")
    seen = []
    for estop, run in [(False, False), (False, True), (True, True), (True, False), (True, True)]:
        v[symbols["estop_ok"].slot] = estop
        v[symbols["running"].slot] = run
        seen.append(compiled.evaluate(v))
    # the edge at scan 2 happened while estop_ok was false: it must not show up later
    assert seen == [False, False, False, False, True]


# -- type checking at load ------------------------------------------------------------------

def test_and_of_a_number_is_a_type_error_with_a_hint():
    pos, msg = error("fault_code and running")
    assert pos == 0
    assert msg == "'and' needs a condition (true or false), but this is a number; " \
                  "compare it, e.g. 'fault_code != 0'"


def test_comparing_a_condition_with_a_number_is_a_type_error():
    pos, msg = error("running > 1")
    assert pos == 8 and "cannot compare a condition (true or false) with a number" in msg


def test_ordering_text_is_a_type_error():
    _, msg = error("mode < 'b'")
    assert "needs numbers on both sides" in msg


def test_unknown_name_suggests_the_closest_input():
    assert error("runing and estop_ok") == (0, "unknown input 'runing'; did you mean 'running'?")


def test_a_state_name_is_not_readable():
    _, msg = error("producing")
    assert msg.startswith("'producing' is a state;")


def test_unknown_function_suggests_the_closest():
    assert error("rissing(running)") == (0, "unknown function 'rissing'; did you mean 'rising'?")


def test_function_arity_is_checked():
    pos, msg = error("running and between(speed, 1)")
    assert pos == 12
    assert msg == "between() takes 3 arguments, not 2: write between(x, low, high)"


def test_stale_needs_an_input_name():
    _, msg = error("stale(speed + 1)")
    assert "stale() needs the plain name of an input" in msg


def test_a_function_name_without_parentheses_is_explained():
    assert error("rising") == (0, "'rising' is a function; write rising(c)")


def test_bit_number_must_be_a_literal():
    _, msg = error("bit(fault_code, speed)")
    assert "bit number from 0 to 63" in msg


# -- syntax errors point at the character ----------------------------------------------------

@pytest.mark.parametrize(("text", "pos", "fragment"), [
    ("running && estop_ok", 8, "write 'and' instead of '&&'"),
    ("running || estop_ok", 8, "write 'or' instead of '||'"),
    ("fault_code = 0", 11, "write '==' to compare"),
    ("!running", 0, "write 'not' instead of '!'"),
    ("running.__class__", 7, "'.' is not allowed"),
    ("speed ** 2", 6, "no power operator"),
    ("(running and estop_ok", 0, "this '(' is never closed"),
    ("running)", 7, "this ')' has no matching '('"),
    ("running estop_ok", 8, "did you forget 'and' or 'or'?"),
    ("", 0, "the expression is empty"),
    ("running and", 11, "ends too early"),
    ("0 < speed < 5", 10, "comparisons cannot be chained"),
    ("mode == 'auto", 8, "no closing '"),
    ("speed > 5 kg", 10, "unexpected name 'kg'"),
    ("speed > 5kg", 9, "'5kg' is not a number or a duration"),
    ("speed $ 2", 6, "unexpected character '$'"),
    ("fault_code not 3", 11, "did you mean 'not in'?"),
    ("x in 3", 5, "needs a list of choices in parentheses"),
])
def test_syntax_errors_name_the_offending_character(text, pos, fragment):
    offset, msg = error(text)
    assert (offset, fragment in msg) == (pos, True), msg


def test_deep_nesting_is_an_error_not_a_crash():
    _, msg = error("(" * 500 + "running" + ")" * 500)
    assert "nests deeper than" in msg


def test_no_python_is_reachable_from_an_expression():
    for text in ("__import__('os')", "running.__class__", "eval('1')", "open('x')"):
        with pytest.raises(ExpressionError):
            compile_expr(text)


def test_arithmetic_overflow_is_unknown_not_an_exception():
    assert value("speed / 3 > 1", speed=10**400) is None
    assert value("speed * 1.5 > 1", speed=10**400) is None
