"""Loading rule files: every mistake is `file:line:col: one sentence`, found at load time."""

from __future__ import annotations

import pytest

from linelight.rules.errors import ConfigProblems
from linelight.rules.loader import load_rules
from linelight.rules.values import Pattern

from .util import BASIC, load, problems

STATES = """
[[state]]
name = "stopped"
code = 40000
priority = 0
when = true
"""


def test_basic_rules_load_with_states_sorted_by_priority():
    rs = load(BASIC)
    assert [s.name for s in rs.states] == ["fault", "producing", "stopped"]
    assert rs.inputs["running"].stale_after == 1.0
    assert rs.tower_lamps == ("red", "amber", "green", "blue", "white", "buzzer")
    assert rs.unknown.code == 30000


def test_unknown_input_in_an_expression_points_at_its_column_and_suggests():
    text = BASIC.replace('when = "running"', 'when = "runing"')
    line = text.splitlines().index('when = "runing"') + 1
    assert problems(text) == [
        f"rules.toml:{line}:9: unknown input 'runing'; did you mean 'running'?"]


def test_an_error_in_the_middle_of_an_expression_points_inside_the_string():
    text = BASIC.replace('when = "fault_code != 0"', 'when = "fault_code != 0 && running"')
    line = text.splitlines().index('when = "fault_code != 0 && running"') + 1
    assert problems(text) == [f"rules.toml:{line}:25: write 'and' instead of '&&'"]


def test_an_error_in_a_multiline_expression_points_at_its_own_line():
    text = STATES + '''
[[signal]]
name = "hot"
priority = 5
when = """
  running and
  speeed > 3"""
[inputs]
running = { type = "bool" }
speed = { type = "float" }
'''
    line = text.splitlines().index("  speeed > 3\"\"\"") + 1
    assert problems(text) == [
        f"rules.toml:{line}:3: unknown input 'speeed'; did you mean 'speed'?"]


def test_unknown_keys_are_errors_with_did_you_mean():
    text = BASIC.replace('priority = 50\n', 'priority = 50\non_dealy = "2s"\n')
    line = text.splitlines().index('on_dealy = "2s"') + 1
    assert problems(text) == [
        f"rules.toml:{line}:1: unknown key 'on_dealy' in state[1]; did you mean 'on_delay'?"]


def test_unknown_top_level_table_is_an_error():
    assert problems(BASIC + "\n[states]\nx = 1\n")[0].endswith(
        "unknown key 'states' in top level; did you mean 'state'?")


def test_duplicate_state_priorities_are_rejected():
    text = BASIC.replace("priority = 50", "priority = 90")
    msgs = problems(text)
    assert len(msgs) == 1
    assert "state 'producing' has the same priority 90 as state 'fault' at rules.toml:" in msgs[0]


def test_a_signal_and_a_state_tying_on_one_lamp_are_rejected():
    text = BASIC + '\n[[signal]]\nname = "warn"\npriority = 50\nwhen = "running"\n' \
                   'show = { green = "blink_slow" }\n'
    msgs = problems(text)
    assert len(msgs) == 1 and "both show the green lamp at priority 50" in msgs[0]


def test_a_signal_may_share_a_priority_with_a_state_on_another_lamp():
    text = BASIC + '\n[[signal]]\nname = "warn"\npriority = 50\nwhen = "running"\n' \
                   'show = { blue = "on" }\n'
    assert [s.name for s in load(text).signals] == ["warn"]


def test_a_lamp_the_tower_does_not_have_is_an_error():
    text = BASIC + '\n[tower]\nlamps = ["red", "amber"]\n'
    msgs = problems(text)
    assert len(msgs) == 1
    assert "the tower has no 'green' lamp; its lamps are red, amber (see rules.toml:" in msgs[0]


def test_a_lamp_name_that_does_not_exist_is_an_error_with_did_you_mean():
    text = BASIC.replace('show = { green = "on" }', 'show = { gren = "on" }')
    assert problems(text)[0].endswith("there is no lamp 'gren'; did you mean 'green'?")


def test_a_bad_lamp_pattern_is_an_error_with_did_you_mean():
    text = BASIC.replace('show = { green = "on" }', 'show = { green = "blink" }')
    assert problems(text)[0].endswith("'blink' is not a lamp pattern; did you mean 'blink_slow'?")


@pytest.mark.parametrize(("pattern", "message"), [
    ("on:0s", "'on:0s' lasts no time at all; give a duration longer than zero"),
    ("off:5s", "'off' cannot be timed"),
    ("on:5", "after 'on:' '5' is not a duration"),
])
def test_impossible_timed_patterns_are_errors(pattern, message):
    text = BASIC.replace('show = { red = "blink_fast" }', f'show = {{ buzzer = "{pattern}" }}')
    assert message in problems(text)[0]


@pytest.mark.parametrize(("setting", "message"), [
    ('stale_after = "0s"', "'stale_after' must be longer than zero"),
    ('stale_after = "1 sec"', "is not a duration"),
    ('on_stale = "hold:0s"', "'hold' needs a time longer than zero"),
    ('on_stale = "hold"', "needs a time to hold the last good value"),
    ('on_stale = "hodl:5s"', "'on_stale' cannot be 'hodl:5s'"),
    ('debounce = 5', "'debounce' needs a unit"),
])
def test_impossible_input_durations_are_errors(setting, message):
    text = BASIC.replace('running    = { type = "bool", stale_after = "1s" }',
                         f'running    = {{ type = "bool", {setting} }}')
    assert message in problems(text)[0]


def test_a_delay_longer_than_a_day_is_an_error():
    text = BASIC.replace("priority = 50\n", 'priority = 50\non_delay = "25h"\n')
    assert "longer than a day" in problems(text)[0]


def test_on_stale_false_on_a_number_input_is_an_error():
    text = BASIC.replace('fault_code = { type = "int" }',
                         'fault_code = { type = "int", on_stale = false }')
    assert "on_stale = false only fits a bool input, not int" in problems(text)[0]


def test_scale_on_a_bool_input_is_an_error():
    text = BASIC.replace('fault_code = { type = "int" }', 'fault_code = { type = "bool", scale = 2 }')
    assert "'scale' only applies to int and float inputs" in problems(text)[0]


def test_a_cycle_between_defines_and_signals_is_an_error():
    text = BASIC + '''
[define]
a = "b and running"
[[signal]]
name = "b"
priority = 3
when = "a"
'''
    msgs = problems(text)
    assert len(msgs) == 1 and "depends on itself" in msgs[0]
    assert "a -> b -> a" in msgs[0] or "b -> a -> b" in msgs[0]


def test_a_state_condition_must_be_a_condition_not_a_number():
    text = BASIC.replace('when = "running"', 'when = "fault_code + 1"')
    assert "'when' must be a condition (true or false), but this is a number" in problems(text)[0]


def test_a_counter_needs_exactly_one_edge():
    both = BASIC + '[[counter]]\nname = "parts"\nrising = "running"\nfalling = "running"\n'
    none = BASIC + '[[counter]]\nname = "parts"\n'
    assert "either 'rising' or 'falling' edges, not both" in problems(both)[0]
    assert "needs 'rising' (or 'falling')" in problems(none)[0]


def test_a_counter_of_a_constant_is_an_error():
    text = BASIC + '[[counter]]\nname = "parts"\nrising = "1 == 1"\n'
    assert "reads no input, so it never changes" in problems(text)[0]


def test_names_must_be_plain_identifiers_and_not_reserved():
    assert "cannot be a name" in problems(BASIC + '[inputs.2fast]\ntype = "bool"\n')[0]
    text = BASIC.replace('name = "stopped"', 'name = "unknown"')
    assert "'unknown' is a reserved word" in problems(text)[0]


def test_several_files_merge_into_one_rule_set():
    inputs, states = BASIC.split("[[state]]", 1)
    rs = load_rules([("inputs.toml", inputs), ("states.toml", "[[state]]" + states)])
    assert rs.files == ("inputs.toml", "states.toml")
    assert len(rs.states) == 3


def test_a_name_defined_in_two_files_is_an_error_naming_both():
    with pytest.raises(ConfigProblems) as info:
        load_rules([("a.toml", BASIC), ("b.toml", '[inputs]\nrunning = { type = "bool" }\n')])
    assert [str(p) for p in info.value.problems] == [
        "b.toml:2:1: the name 'running' is already used by the input at a.toml:3:1"]


def test_problems_of_all_files_are_listed_together_in_file_order():
    with pytest.raises(ConfigProblems) as info:
        load_rules([("b.toml", "x = 1\n"), ("a.toml", BASIC + "y = 2\n")])
    assert [p.location.file for p in info.value.problems] == ["a.toml", "b.toml"]


def test_a_toml_syntax_error_is_located():
    msgs = problems('[inputs]\nrunning = { type = "bool" \n')
    assert msgs[0].startswith("rules.toml:2:") and "TOML syntax error" in msgs[0]


def test_no_states_at_all_is_an_error():
    assert "define no [[state]]" in problems('[inputs]\nrunning = { type = "bool" }\n')[0]


def test_the_fingerprint_ignores_comments_and_layout_but_not_meaning():
    a = load(BASIC).fingerprint
    b = load("# a comment\n" + BASIC.replace('"fault_code != 0"', '"fault_code!=0"')).fingerprint
    c = load(BASIC.replace("fault_code != 0", "fault_code != 1")).fingerprint
    assert a == b and a != c


def test_unknown_state_defaults_and_overrides():
    rs = load(BASIC + '[unknown]\ncode = 30001\nshow = { white = "blink_fast" }\n')
    assert rs.unknown.code == 30001
    assert [(s.lamp, s.pattern) for s in rs.unknown.show] == [("white", Pattern.BLINK_FAST)]


def test_when_may_be_a_toml_boolean():
    assert load(BASIC).states[-1].when.text == "true"


def test_an_input_with_errors_does_not_cascade_into_unknown_input_errors():
    text = BASIC.replace('fault_code = { type = "int" }', 'fault_code = { type = "integer" }')
    msgs = problems(text)
    assert len(msgs) == 1 and "'type' cannot be 'integer'" in msgs[0]


def test_a_define_or_input_that_is_not_written_right_does_not_cascade():
    msgs = problems(BASIC.replace('when = "running"', 'when = "running and ok"')
                    + '[define]\nok = 3\n')
    assert len(msgs) == 1 and "'ok' must be a string or true or false, not an integer (3)" in msgs[0]
    msgs = problems(BASIC.replace('fault_code = { type = "int" }', 'fault_code = "int"'))
    assert len(msgs) == 1 and "'fault_code' must be a table" in msgs[0]


@pytest.mark.parametrize(("written", "col"), [
    ('"mode == \\"auto\\" and runing"', 30),        # escapes count as they are written
    ("'mode == \"auto\" and runing'", 28),          # a literal string has no escapes
    ('"""mode == "auto" and runing"""', 30),        # one-line multi-line string
])
def test_expression_columns_count_what_the_editor_shows(written, col):
    text = BASIC.replace('when = "running"', f"when = {written}") + \
        '[inputs.mode]\ntype = "string"\n'
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "runing" in t)
    assert problems(text) == [f"rules.toml:{line}:{col}: unknown input 'runing'; "
                              "did you mean 'running'?"]
