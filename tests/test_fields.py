"""Located TOML reading: every problem names file:line:col and reads as one sentence."""

from __future__ import annotations

import re

import pytest

from linelight.rules.errors import ConfigProblems, LocatedError
from linelight.rules.expressions import Binary, Literal, parse
from linelight.rules.fields import DURATION_PATTERN, Problems, Table, parse_duration, parse_size
from linelight.rules.tomldoc import TomlDoc

TEXT = """\
# a comment
[inputs]
running = { type = "bool", stale_after = "1s" }

[[state]]
name = "fault"
when = "fault_code != 0"
on_delay = "3 parsecs"

[[state]]
name = "idle"
prority = 5
"""


def _read_states(text: str) -> Problems:
    problems = Problems()
    root = Table.root(TomlDoc.parse(text, "r.toml"), problems)
    root.table("inputs")
    for state in root.tables("state"):
        state.string("name")
        state.string("when", "true")
        state.duration("on_delay", 0.0)
        state.integer("priority", 0)
        state.finish()
    root.finish()
    return problems


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(LocatedError) as err:
        TomlDoc.parse("a = 1\nb = \n", "bad.toml")
    assert str(err.value).startswith("bad.toml:2:5: TOML syntax error")


def test_bad_duration_points_at_the_value() -> None:
    problems = _read_states(TEXT)
    messages = [str(p) for p in problems.items]
    assert any(m.startswith("r.toml:8:12: '3 parsecs' is not a duration") for m in messages)


def test_unknown_key_is_an_error_with_a_suggestion() -> None:
    problems = _read_states(TEXT)
    messages = [str(p) for p in problems.items]
    assert "r.toml:12:1: unknown key 'prority' in state[1]; did you mean 'priority'?" in messages


def test_all_problems_are_reported_together_in_file_order() -> None:
    with pytest.raises(ConfigProblems) as err:
        _read_states(TEXT).raise_if_any()
    lines = [p.location.line for p in err.value.problems]
    assert lines == sorted(lines) and len(lines) == 2


def test_wrong_type_names_the_key_and_what_was_given() -> None:
    problems = _read_states('[[state]]\nname = 5\n')
    assert [str(p) for p in problems.items] == [
        "r.toml:2:8: 'name' must be a string, not an integer (5)"
    ]


def test_expression_columns_count_inside_the_string() -> None:
    doc = TomlDoc.parse(TEXT, "r.toml")
    # `fault_code` starts at offset 0 of the string on line 7; the quote is column 8.
    assert str(doc.string_offset(("state", 0, "when"), 0)) == "r.toml:7:9"


@pytest.mark.parametrize(
    ("text", "seconds"), [("20ms", 0.02), ("1.5s", 1.5), ("2m", 120.0), ("3min", 180.0),
                          ("1h", 3600.0), ("7d", 7 * 86400.0), ("250us", 250e-6)]
)
def test_durations_parse_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_sizes_parse_binary_and_decimal_units() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096


def test_a_bad_duration_names_every_unit_the_grammar_accepts() -> None:
    with pytest.raises(ValueError) as err:
        parse_duration("2 weeks")
    assert "(us, ms, s, m, min, h or d)" in str(err.value) and "'7d'" in str(err.value)


@pytest.mark.parametrize("text", ["20ms", "1.5 s", " 7d ", "3min", "250us"])
def test_the_schema_pattern_accepts_what_the_reader_accepts(text: str) -> None:
    parse_duration(text)
    assert re.match(DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["7", "2 weeks", "1.s", "ms", "-1s"])
def test_the_schema_pattern_rejects_what_the_reader_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    assert not re.match(DURATION_PATTERN, text)


def test_a_duration_in_days_reads_in_a_rule_expression() -> None:
    node = parse("x > 2d")
    assert isinstance(node, Binary) and node.right == Literal(4, 2 * 86400.0)


def test_quoted_keys_keep_non_ascii_letters_and_their_location() -> None:
    text = '[inputs]\n"grün" = 1\n"gr\\u00fcn-ü" = 2\n"a\\"b" = 3\n\'tür\' = 4\n'
    doc = TomlDoc.parse(text, "r.toml")
    assert doc.data["inputs"] == {"grün": 1, "grün-ü": 2, 'a"b': 3, "tür": 4}
    where = {k[-1]: str(v) for k, v in doc.keys.items() if len(k) == 2}
    assert where == {"grün": "r.toml:2:1", "grün-ü": "r.toml:3:1", 'a"b': "r.toml:4:1",
                     "tür": "r.toml:5:1"}


def test_an_unknown_non_ascii_key_is_reported_at_its_own_line() -> None:
    problems = Problems()
    root = Table.root(TomlDoc.parse('a = 1\n"t\\u00fcr" = 2\n', "r.toml"), problems)
    root.integer("a")
    root.finish()
    assert [str(p) for p in problems.items] == ["r.toml:2:1: unknown key 'tür' in top level"]
