"""Latches survive a restart: `Evaluator.latches()` out, `restore_latches()` into a new one."""

from __future__ import annotations

from linelight.rules.evaluator import Evaluator, Latch
from linelight.rules.values import Pattern
from tests.rules.util import good, load, run

LATCHING = """
[inputs]
drive_fault = { type = "bool", stale_after = "2s" }
reset       = { type = "bool", stale_after = "2s" }
running     = { type = "bool", stale_after = "2s" }

[[signal]]
name = "drive_alarm"
priority = 80
when = "drive_fault"
clear_when = "reset and not drive_fault"
show = { blue = "on" }

[[state]]
name = "fault"
code = 180000
priority = 90
when = "drive_fault"
clear_when = "reset and not drive_fault"
show = { red = "on" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 0
when = true
show = { amber = "on" }
"""

QUIET = {"drive_fault": False, "reset": False, "running": True}


def _latched_evaluator() -> Evaluator:
    ev = Evaluator(load(LATCHING))
    run(ev, QUIET, 0.0, 1.0)
    run(ev, {**QUIET, "drive_fault": True}, 1.1, 1.5)
    step = run(ev, QUIET, 1.6, 2.0)  # the fault is gone, reset never pressed
    assert step.state.name == "fault" and "drive_alarm" in step.signals
    assert step.latched == ("state:fault", "signal:drive_alarm")
    return ev


def test_latches_lists_what_clear_when_holds_on_with_its_start() -> None:
    latches = _latched_evaluator().latches()
    assert {(x.kind, x.name, round(x.since, 3)) for x in latches} == {
        ("state", "fault", 1.1), ("signal", "drive_alarm", 1.1)}


def test_a_restored_latch_keeps_fault_and_lamp_and_sends_no_alarm_on_again() -> None:
    latches = _latched_evaluator().latches()
    fresh = Evaluator(load(LATCHING))  # a new process: scan time starts anew
    assert fresh.restore_latches(latches) == 2
    first = fresh.step(good(QUIET, 100.0), 100.0)
    assert first.state.name == "fault"
    assert first.lamps["red"] is Pattern.ON and first.lamps["blue"] is Pattern.ON
    assert first.lamps["green"] is Pattern.OFF
    assert [e.kind for e in first.events] == ["state"]  # unknown -> fault; no alarm event
    cleared = run(fresh, {**QUIET, "reset": True}, 100.1, 100.3)
    assert cleared.state.name == "producing" and "drive_alarm" not in cleared.signals
    off = [e for e in _events(fresh, {**QUIET, "reset": True}, 100.4) if e.kind == "alarm"]
    assert off == []  # the off event came with the clearing scan, once


def test_without_restore_a_restart_would_release_the_latch() -> None:
    """The failure the journal's latch memory exists for."""
    fresh = Evaluator(load(LATCHING))
    assert fresh.step(good(QUIET, 100.0), 100.0).state.name == "producing"


def test_a_latch_of_a_changed_rule_is_not_restored() -> None:
    latches = _latched_evaluator().latches()
    changed = Evaluator(load(LATCHING.replace('clear_when = "reset and not drive_fault"\nshow = '
                                              '{ red', 'clear_when = "reset"\nshow = { red')))
    assert changed.restore_latches(latches) == 1  # the signal is unchanged; the state is not
    step = changed.step(good(QUIET, 100.0), 100.0)
    assert step.state.name == "producing" and step.signals == ("drive_alarm",)


def test_a_latch_for_a_rule_that_no_longer_latches_or_exists_is_ignored() -> None:
    ev = Evaluator(load(LATCHING))
    assert ev.restore_latches([Latch("state", "gone", "x", 0.0),
                               Latch("signal", "fault", "y", 0.0)]) == 0


def test_a_restored_latch_on_stale_inputs_stays_latched_and_dark_until_known() -> None:
    latches = _latched_evaluator().latches()
    fresh = Evaluator(load(LATCHING))
    fresh.restore_latches(latches)
    dark = fresh.step({}, 100.0)  # nothing read yet
    assert dark.state.name == "unknown" and dark.latched == ("state:fault", "signal:drive_alarm")
    assert dark.lamps["blue"] is Pattern.OFF and dark.lamps["green"] is Pattern.OFF
    assert fresh.step(good(QUIET, 100.1), 100.1).state.name == "fault"


def _events(ev: Evaluator, values: dict[str, bool], now: float) -> list:
    return list(ev.step(good(values, now), now).events)
