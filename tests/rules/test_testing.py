"""Rule unit tests: series on a virtual clock, expectations, failures that say what differed."""

from __future__ import annotations

import pytest

from linelight.rules.errors import ConfigProblems
from linelight.rules.testing import SeriesError, load_test_text, parse_series, run_file

from .util import BASIC, load


def test_series_repeat_values_for_n_scans():
    assert parse_series("1x3 0 _x2") == [1, 1, 1, 0, "_", "_"]


def test_series_ramps_add_an_increment_per_scan():
    assert parse_series("0+5x3 10-2.5x2") == [0, 5, 10, 10.0, 7.5]


def test_series_know_bad_stale_text_and_booleans():
    assert parse_series("bad stalex2 true 'auto' 1.5") == ["bad", "stale", "stale", True, "auto", 1.5]


@pytest.mark.parametrize(("text", "offset"), [("1x3 2y", 4), ("1x0", 0), ("truex1+2", 0)])
def test_a_bad_series_entry_is_located(text, offset):
    with pytest.raises(SeriesError) as info:
        parse_series(text)
    assert info.value.offset == offset


def _load(text: str):
    return load_test_text("t.toml", text, lambda files: load(BASIC, files[0]))


CASE = """
rules = ["basic.toml"]
step = "100ms"
[[test]]
name = "producing then fault"
[test.inputs]
running = "1x30"
fault_code = "0x20 3x10"
[[test.expect]]
at = "1s"
state = "producing"
lamps = { green = "on", red = "off" }
[[test.expect]]
at = "2.5s"
state = "fault"
code = 180000
"""


def test_a_passing_case_reports_no_failures():
    results = run_file(_load(CASE))
    assert [(r.name, r.passed, r.scans) for r in results] == [("producing then fault", True, 30)]


def test_a_failing_expectation_says_expected_and_actual_at_its_time_and_line():
    results = run_file(_load(CASE.replace('at = "2.5s"\nstate = "fault"',
                                          'at = "2.5s"\nstate = "stopped"')))
    lines = [str(f) for f in results[0].failures]
    assert lines == ["t.toml:13:3: test 'producing then fault' at 2.5s: state: "
                     "expected 'stopped', got 'fault'"]


def test_a_failing_lamp_expectation_names_the_lamp_and_the_state():
    results = run_file(_load(CASE.replace('green = "on"', 'green = "blink_fast"')))
    assert str(results[0].failures[0]).endswith(
        "lamp green: expected 'blink_fast', got 'on' (state producing)")


def test_an_unknown_state_failure_says_why():
    text = CASE.replace('running = "1x30"', 'running = "1x5 _x25"').replace("3x10", "0x10")
    failure = run_file(_load(text))[0].failures[0]
    assert (failure.at_text, failure.actual) == ("2.5s", "'unknown'")
    assert failure.note == "state 'producing' cannot be decided: running is not known"


def test_no_sample_lets_the_last_one_age_until_stale():
    text = CASE.replace('running = "1x30"', 'running = "1x10 _x20"').replace("3x10", "0x10")
    text = text.replace('at = "1s"', 'at = "1.9s"')  # last sample at 0.9 s: 1 s old, fresh
    text = text.replace('at = "2.5s"\nstate = "fault"', 'at = "2s"\nstate = "unknown"')
    text = text.replace("code = 180000", "code = 30000")
    assert [r.failures for r in run_file(_load(text))] == [()]


@pytest.mark.parametrize(("change", "message"), [
    (('running = "1x30"', 'runing = "1x30"'), "the rules have no input 'runing'; did you mean 'running'?"),
    (('at = "1s"', 'at = "1.05s"'), "'1.05s' falls between scans"),
    (('state = "producing"', 'state = "produce"'), "the rules have no state 'produce'"),
    (('green = "on"', 'gren = "on"'), "the tower has no 'gren' lamp"),
    (('green = "on"', 'green = "lit"'), "'green' cannot be 'lit'"),
    (('[[test.expect]]\nat = "1s"', '[[test.expect]]\nwhen = "1s"'), "unknown key 'when'"),
    (('fault_code = "0x20 3x10"', 'fault_code = "0x20 3z10"'), "'3z10' is not a series entry"),
])
def test_mistakes_in_test_files_are_located_errors(change, message):
    with pytest.raises(ConfigProblems) as info:
        _load(CASE.replace(*change))
    assert any(message in str(p) for p in info.value.problems), info.value


def test_duplicate_test_names_are_an_error():
    with pytest.raises(ConfigProblems) as info:
        _load(CASE + CASE.split("step = \"100ms\"")[1])
    assert "another test is already named 'producing then fault'" in str(info.value)


def test_counters_start_seeds_totals():
    text = """
rules = ["x.toml"]
[[test]]
name = "count"
counters_start = { parts = 10 }
[test.inputs]
running = "1x4"
fault_code = "0x4"
part = "0 1 0 1"
[[test.expect]]
at = "0.3s"
counters = { parts = 12 }
"""
    rules = BASIC + '[inputs.part]\ntype = "bool"\n[[counter]]\nname = "parts"\nrising = "part"\n'
    tf = load_test_text("t.toml", text, lambda files: load(rules))
    assert run_file(tf)[0].passed


def test_a_hundred_cases_run_on_the_virtual_clock():
    cases = "".join(CASE.split('step = "100ms"')[1].replace("producing then fault", f"case {i}")
                    for i in range(100))
    results = run_file(_load('rules = ["basic.toml"]\n' + cases))
    assert len(results) == 100 and all(r.passed for r in results)


def test_events_at_a_scan_can_be_expected_exactly():
    text = CASE.replace('at = "2.5s"\nstate = "fault"\ncode = 180000',
                        'at = "2s"\nevents = ["state fault 180000"]')
    assert run_file(_load(text))[0].passed
    wrong = run_file(_load(text.replace('"state fault 180000"', '"count parts 1"')))
    assert str(wrong[0].failures[0]).endswith(
        "events: expected [count parts 1], got [state fault 180000]")


LATCH = BASIC.replace('when = "fault_code != 0"',
                      'when = "fault_code != 0"\nclear_when = "fault_code == 0 and not running"')


def _latch_case(extra: str) -> str:
    return CASE.replace("[test.inputs]", extra + "\n[test.inputs]").replace(
        'at = "2.5s"\nstate = "fault"', 'at = "2.9s"\nstate = "fault"')


def _run_latch(extra: str, fault: str = "0x20 3x5 0x5") -> list[str]:
    text = _latch_case(extra).replace('fault_code = "0x20 3x10"', f'fault_code = "{fault}"')
    tf = load_test_text("t.toml", text, lambda files: load(LATCH, files[0]))
    return [str(f) for r in run_file(tf) for f in r.failures]


def test_a_restart_keeps_a_latch_and_loses_the_samples():
    assert _run_latch('[[test.restart]]\nat = "2.7s"') == []
    # an expectation while the agent is down cannot hold: it says so
    failures = _run_latch('[[test.restart]]\nat = "2.7s"\ndown = "1s"')
    assert len(failures) == 1 and "at 2.9s: scan: expected a scan, got none" in failures[0]


def test_a_restart_that_lost_the_latch_would_fail_the_case():
    # the same case with the latch removed by a reload to rules without clear_when fails:
    # the test runner tells a kept latch from a lost one
    text = _latch_case('[[test.reload]]\nat = "2.7s"\nrules = ["plain.toml"]').replace(
        'fault_code = "0x20 3x10"', 'fault_code = "0x20 3x5 0x5"')
    tf = load_test_text("t.toml", text, lambda files: load(
        BASIC if files[0] == "plain.toml" else LATCH, files[0]))
    failures = [str(f) for r in run_file(tf) for f in r.failures]
    assert any("at 2.9s: state: expected 'fault', got 'producing'" in f for f in failures)


@pytest.mark.parametrize(("extra", "message"), [
    ('[[test.restart]]\nat = "2.75s"', "'2.75s' falls between scans"),
    ('[[test.restart]]\nwhen = "2s"', "unknown key 'when'"),
    ('[[test.reload]]\nat = "2s"\nrules = []', "'rules' must list the rule files to load"),
])
def test_mistakes_in_restarts_and_reloads_are_located_errors(extra, message):
    with pytest.raises(ConfigProblems) as info:
        load_test_text("t.toml", _latch_case(extra), lambda files: load(LATCH, files[0]))
    assert any(message in str(p) for p in info.value.problems), info.value
