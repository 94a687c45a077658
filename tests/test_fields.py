"""Located TOML reading: every problem names file:line:col and reads as one sentence."""

from __future__ import annotations

import pytest

from linelight.rules.errors import ConfigProblems, LocatedError
from linelight.rules.fields import Problems, Table, parse_duration, parse_size
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
    ("text", "seconds"), [("20ms", 0.02), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0)]
)
def test_durations_parse_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_sizes_parse_binary_and_decimal_units() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096
