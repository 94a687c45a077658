"""The scan: one snapshot, exactly one state, fail-safe unknown, timers, lamps, events."""

from __future__ import annotations

import math

from linelight.rules.evaluator import Evaluator, RuleEvent, StateInfo
from linelight.rules.values import Pattern, Quality, Sample

from .util import BASIC, good, load, run

OK = {"running": True, "fault_code": 0}


def lit(step):
    return {lamp: p.value for lamp, p in step.lamps.items() if p is not Pattern.OFF}


# -- exactly one state, fail safe ------------------------------------------------------------

def test_the_evaluator_starts_in_unknown():
    ev = Evaluator(load(BASIC))
    assert ev.state.name == "unknown" and ev.state.code == 30000


def test_an_input_missing_from_the_snapshot_counts_as_init_and_is_unknown():
    step = Evaluator(load(BASIC)).step(good({"running": True}, 0.0), 0.0)
    assert step.state.name == "unknown"
    assert step.reason == "state 'fault' cannot be decided: fault_code is not known"


def test_the_highest_priority_true_state_wins():
    ev = Evaluator(load(BASIC))
    assert ev.step(good(OK, 0.0), 0.0).state.name == "producing"
    assert ev.step(good({"running": True, "fault_code": 3}, 0.1), 0.1).state.name == "fault"
    assert ev.step(good({"running": False, "fault_code": 0}, 0.2), 0.2).state.name == "stopped"


def test_an_unknown_condition_above_the_winner_makes_the_state_unknown():
    ev = Evaluator(load(BASIC))
    snap = good({"running": True}, 0.0) | {"fault_code": Sample(None, Quality.BAD, 0.0)}
    step = ev.step(snap, 0.0)
    assert step.state.name == "unknown"
    assert lit(step) == {"amber": "blink_slow"}


def test_an_unknown_condition_below_the_winner_does_not_matter():
    ev = Evaluator(load(BASIC))
    snap = good({"fault_code": 7}, 0.0)  # running missing
    assert ev.step(snap, 0.0).state.name == "fault"


def test_no_true_state_is_unknown():
    rs = load(BASIC.replace("when = true", 'when = "false"'))
    step = Evaluator(rs).step(good({"running": False, "fault_code": 0}, 0.0), 0.0)
    assert step.state.name == "unknown" and step.reason == "no state's condition is true"


def test_an_input_older_than_stale_after_is_unknown():
    ev = Evaluator(load(BASIC))
    snap = {"running": Sample(True, Quality.GOOD, 0.0), "fault_code": Sample(0, Quality.GOOD, 0.0)}
    assert ev.step(snap, 1.0).state.name == "producing"  # exactly stale_after old: still fresh
    step = ev.step(snap, 1.2)
    assert step.state.name == "unknown"
    assert step.reason == "state 'producing' cannot be decided: running is not known"


def test_stale_and_bad_and_init_quality_are_unknown():
    for quality in (Quality.STALE, Quality.BAD, Quality.INIT):
        ev = Evaluator(load(BASIC))
        snap = good({"fault_code": 0}, 0.0) | {"running": Sample(True, quality, 0.0)}
        assert ev.step(snap, 0.0).state.name == "unknown", quality


def test_a_value_that_does_not_fit_the_input_type_is_bad():
    ev = Evaluator(load(BASIC))
    for wrong in ("3", 2.5, math.nan, None):
        assert ev.step(good({"running": False, "fault_code": wrong}, 0.0), 0.0).state.name \
            == "unknown", wrong


def test_numbers_for_a_bool_input_read_as_zero_or_not():
    ev = Evaluator(load(BASIC))
    assert ev.step(good({"running": 1, "fault_code": 0.0}, 0.0), 0.0).state.name == "producing"


# -- on_stale ---------------------------------------------------------------------------------

def _door_rules(on_stale: str) -> str:
    return BASIC.replace('running    = { type = "bool", stale_after = "1s" }',
                         f'running    = {{ type = "bool", stale_after = "1s", on_stale = {on_stale} }}')


def test_on_stale_false_reads_a_stale_input_as_false():
    ev = Evaluator(load(_door_rules("false")))
    snap = good({"fault_code": 0}, 5.0) | {"running": Sample(True, Quality.GOOD, 0.0)}
    assert ev.step(snap, 5.0).state.name == "stopped"


def test_on_stale_true_reads_a_stale_input_as_true():
    ev = Evaluator(load(_door_rules("true")))
    snap = good({"fault_code": 0}, 0.0) | {"running": Sample(None, Quality.BAD, 0.0)}
    assert ev.step(snap, 0.0).state.name == "producing"


def test_on_stale_hold_keeps_the_last_good_value_for_a_while_then_unknown():
    ev = Evaluator(load(_door_rules('"hold:2s"')))
    run(ev, OK, 0.0, 1.0)
    bad = good({"fault_code": 0}, 0) | {"running": Sample(None, Quality.BAD, 1.1)}
    assert ev.step(bad, 1.1).state.name == "producing"
    assert ev.step(bad, 3.0).state.name == "producing"
    assert ev.step(bad, 3.1).state.name == "unknown"


# -- inputs: scale and debounce ---------------------------------------------------------------

SPEED = """
[inputs]
speed = { type = "int", scale = 0.1 }
button = { type = "bool", debounce = "250ms" }
[[state]]
name = "fast"
code = 1
priority = 2
when = "speed > 10"
[[state]]
name = "pressed"
code = 2
priority = 1
when = "button"
[[state]]
name = "other"
code = 3
priority = 0
when = true
"""


def test_scale_multiplies_the_raw_value():
    ev = Evaluator(load(SPEED))
    assert ev.step(good({"speed": 101, "button": False}, 0.0), 0.0).state.name == "fast"
    assert ev.step(good({"speed": 100, "button": False}, 0.3), 0.3).state.name == "other"
    assert ev.step(good({"speed": 99, "button": False}, 0.4), 0.4).state.name == "other"


def test_debounce_takes_a_value_only_after_it_stayed_that_long():
    ev = Evaluator(load(SPEED))
    run(ev, {"speed": 0, "button": False}, 0.0, 1.0)
    assert ev.step(good({"speed": 0, "button": True}, 1.1), 1.1).state.name == "other"
    assert ev.step(good({"speed": 0, "button": False}, 1.2), 1.2).state.name == "other"  # bounce
    assert run(ev, {"speed": 0, "button": True}, 1.3, 1.5).state.name == "other"
    assert ev.step(good({"speed": 0, "button": True}, 1.55), 1.55).state.name == "pressed"


def test_debounce_starts_over_after_the_input_was_unusable():
    ev = Evaluator(load(SPEED))
    run(ev, {"speed": 0, "button": True}, 0.0, 1.0)
    ev.step({"speed": Sample(0, Quality.GOOD, 1.1), "button": Sample(None, Quality.BAD, 1.1)}, 1.1)
    assert ev.step(good({"speed": 0, "button": True}, 1.2), 1.2).state.name == "unknown"
    assert ev.step(good({"speed": 0, "button": True}, 1.45), 1.45).state.name == "pressed"


# -- timers and hysteresis --------------------------------------------------------------------

TIMED = BASIC.replace("priority = 50\n", 'priority = 50\non_delay = "2s"\noff_delay = "1s"\n')


def test_on_delay_needs_the_condition_true_that_long():
    ev = Evaluator(load(TIMED))
    run(ev, {"running": False, "fault_code": 0}, 0.0, 1.0)
    assert run(ev, OK, 1.1, 3.0).state.name == "stopped"
    assert ev.step(good(OK, 3.1), 3.1).state.name == "producing"


def test_off_delay_keeps_the_state_after_its_condition_ends():
    ev = Evaluator(load(TIMED))
    run(ev, OK, 0.0, 3.0)
    off = {"running": False, "fault_code": 0}
    assert run(ev, off, 3.1, 4.0).state.name == "producing"
    assert ev.step(good(off, 4.1), 4.1).state.name == "stopped"


def test_a_condition_back_within_the_off_delay_keeps_the_state_without_a_new_event():
    ev = Evaluator(load(TIMED))
    run(ev, OK, 0.0, 3.0)
    run(ev, {"running": False, "fault_code": 0}, 3.1, 3.5)
    step = ev.step(good(OK, 3.6), 3.6)
    assert step.state.name == "producing" and step.events == ()


def test_an_unknown_scan_restarts_a_running_on_delay():
    ev = Evaluator(load(TIMED))
    run(ev, OK, 0.0, 1.5)
    ev.step(good({"fault_code": 0}, 1.6), 1.6)  # running missing for one scan
    assert run(ev, OK, 1.7, 3.6).state.name == "stopped"
    assert ev.step(good(OK, 3.7), 3.7).state.name == "producing"


HYST = """
[inputs]
temp = { type = "float" }
[[state]]
name = "hot"
code = 1
priority = 1
when = "temp > 80"
clear_when = "temp < 70"
[[state]]
name = "ok"
code = 2
priority = 0
when = true
"""


def test_clear_when_gives_hysteresis():
    ev = Evaluator(load(HYST))
    names = [ev.step(good({"temp": t}, i * 0.1), i * 0.1).state.name
             for i, t in enumerate([60, 85, 75, 71, 69, 75, 81])]
    assert names == ["ok", "hot", "hot", "hot", "ok", "ok", "hot"]


# -- lamps ------------------------------------------------------------------------------------

LAMPS = BASIC + """
[[signal]]
name = "door_warning"
priority = 60
when = "fault_code == 5"
show = { green = "blink_fast", blue = "on" }

[[signal]]
name = "low"
priority = 10
when = "fault_code == 5"
show = { blue = "blink_slow", amber = "blink_slow" }
"""


def test_each_lamp_shows_the_highest_priority_entry_naming_it():
    rs = load(LAMPS.replace('when = "fault_code != 0"', 'when = "fault_code > 10"'))
    step = run(Evaluator(rs), {"running": True, "fault_code": 5}, 0.0, 0.2)
    assert step.state.name == "producing"
    assert lit(step) == {"green": "blink_fast", "blue": "on", "amber": "blink_slow"}


def test_every_tower_lamp_is_present_and_off_when_nothing_names_it():
    step = Evaluator(load(BASIC)).step(good(OK, 0.0), 0.0)
    assert step.lamps == {"red": Pattern.OFF, "amber": Pattern.OFF, "green": Pattern.ON,
                          "blue": Pattern.OFF, "white": Pattern.OFF, "buzzer": Pattern.OFF}


BUZZ = BASIC.replace('show = { red = "blink_fast" }',
                     'show = { red = "blink_fast", buzzer = "on:5s" }') + """
[[signal]]
name = "horn"
priority = 5
when = "fault_code == 9"
show = { buzzer = "blink_slow" }
"""


def test_a_timed_pattern_is_on_then_off_after_its_time():
    ev = Evaluator(load(BUZZ))
    assert ev.step(good({"running": True, "fault_code": 1}, 0.0), 0.0).lamps["buzzer"] is Pattern.ON
    assert run(ev, {"running": True, "fault_code": 1}, 0.1, 4.9).lamps["buzzer"] is Pattern.ON
    step = ev.step(good({"running": True, "fault_code": 1}, 5.0), 5.0)
    assert step.lamps["buzzer"] is Pattern.OFF and step.lamps["red"] is Pattern.BLINK_FAST


def test_an_expired_timed_pattern_lets_the_next_entry_show_the_lamp():
    ev = Evaluator(load(BUZZ))
    step = run(ev, {"running": True, "fault_code": 9}, 0.0, 5.0)
    assert step.lamps["buzzer"] is Pattern.BLINK_SLOW


def test_a_timed_pattern_starts_again_when_the_state_is_entered_again():
    ev = Evaluator(load(BUZZ))
    run(ev, {"running": True, "fault_code": 1}, 0.0, 6.0)
    run(ev, OK, 6.1, 7.0)
    assert ev.step(good({"running": True, "fault_code": 1}, 7.1), 7.1).lamps["buzzer"] is Pattern.ON


def test_the_unknown_state_lamps_outrank_signals_by_default():
    ev = Evaluator(load(LAMPS))
    snap = good({"fault_code": 5}, 0.0) | {"running": Sample(None, Quality.BAD, 0.0)}
    rs = load(LAMPS.replace('when = "fault_code != 0"', 'when = "fault_code > 10"'))
    ev = Evaluator(rs)
    step = ev.step(snap, 0.0)
    assert step.state.name == "unknown"
    assert step.lamps["amber"] is Pattern.BLINK_SLOW and step.lamps["blue"] is Pattern.ON


def test_a_signal_whose_input_went_stale_no_longer_lights_its_lamps():
    rs = load(LAMPS.replace('when = "fault_code != 0"', 'when = "fault_code > 10"'))
    ev = Evaluator(rs)
    assert lit(run(ev, {"running": True, "fault_code": 5}, 0.0, 0.2))["green"] == "blink_fast"
    stale = good({"running": True}, 0.3) | {"fault_code": Sample(None, Quality.STALE, 0.3)}
    step = ev.step(stale, 0.3)
    assert step.lamps["green"] is Pattern.OFF and step.lamps["blue"] is Pattern.OFF
    assert "door_warning" in step.signals and step.events == (  # latched: no off event
        RuleEvent("state", "unknown", 30000, 0.3, (
            ("previous_state", "producing"), ("previous_code", 10000),
            ("previous_duration", 0.3))),)


def test_green_is_off_while_the_state_is_unknown_even_from_a_signal_on_good_data():
    rs = load(LAMPS.replace('when = "fault_code != 0"', 'when = "fault_code > 10"')
              .replace('when = "fault_code == 5"', 'when = "true"', 1))
    snap = good({"fault_code": 5}, 0.0) | {"running": Sample(None, Quality.BAD, 0.0)}
    step = Evaluator(rs).step(snap, 0.0)
    assert step.state.name == "unknown" and "door_warning" in step.signals
    assert step.lamps["green"] is Pattern.OFF and step.lamps["blue"] is Pattern.ON


def test_the_unknown_state_may_name_green_itself():
    rs = load(BASIC + '[unknown]\nshow = { green = "blink_fast" }\n')
    snap = good({"running": True}, 0.0) | {"fault_code": Sample(None, Quality.BAD, 0.0)}
    step = Evaluator(rs).step(snap, 0.0)
    assert step.state.name == "unknown" and step.lamps["green"] is Pattern.BLINK_FAST


def test_the_unknown_state_priority_can_be_set_below_signals():
    rs = load(LAMPS.replace('when = "fault_code != 0"', 'when = "fault_code > 10"')
              + '[unknown]\npriority = 1\nshow = { blue = "blink_fast" }\n')
    snap = good({"fault_code": 5}, 0.0) | {"running": Sample(None, Quality.BAD, 0.0)}
    assert Evaluator(rs).step(snap, 0.0).lamps["blue"] is Pattern.ON


# -- events -----------------------------------------------------------------------------------

def test_a_state_transition_event_carries_the_previous_state_and_its_duration():
    ev = Evaluator(load(BASIC))
    run(ev, OK, 0.0, 2.0)
    step = ev.step(good({"running": True, "fault_code": 4}, 2.5), 2.5)
    assert step.events == (RuleEvent("state", "fault", 180000, 2.5, (
        ("previous_state", "producing"), ("previous_code", 10000), ("previous_duration", 2.5))),)
    assert step.state.since == 2.5


def test_the_first_decided_state_reports_unknown_as_previous():
    ev = Evaluator(load(BASIC))
    ev.step(good({"running": True}, 0.0), 0.0)
    step = ev.step(good(OK, 0.4), 0.4)
    assert step.events[0].detail[0] == ("previous_state", "unknown")
    assert step.events[0].detail[2] == ("previous_duration", 0.4)


def test_no_event_while_the_state_stays():
    ev = Evaluator(load(BASIC))
    ev.step(good(OK, 0.0), 0.0)
    assert ev.step(good(OK, 0.1), 0.1).events == ()


def test_a_signal_turning_on_and_off_are_alarm_events():
    ev = Evaluator(load(LAMPS))
    ev.step(good(OK, 0.0), 0.0)
    on = ev.step(good({"running": True, "fault_code": 5}, 1.0), 1.0)
    assert [e for e in on.events if e.kind == "alarm"] == [
        RuleEvent("alarm", "door_warning", True, 1.0), RuleEvent("alarm", "low", True, 1.0)]
    assert on.signals == ("door_warning", "low")
    off = ev.step(good(OK, 3.0), 3.0)
    assert [e for e in off.events if e.kind == "alarm"][0] == \
        RuleEvent("alarm", "door_warning", False, 3.0, (("duration", 2.0),))
    assert off.signals == ()


def test_a_signal_keeps_its_last_state_while_its_condition_is_unknown():
    ev = Evaluator(load(LAMPS))
    ev.step(good({"running": True, "fault_code": 5}, 0.0), 0.0)
    step = ev.step(good({"running": True}, 0.1), 0.1)
    assert step.signals == ("door_warning", "low")
    assert [e for e in step.events if e.kind == "alarm"] == []


def test_a_signal_read_by_a_state_is_unknown_while_its_condition_is():
    rs = load(BASIC.replace('when = "running"', 'when = "running and not jam"') + """
[[signal]]
name = "jam"
priority = 1
when = "fault_code == 2"
""")
    ev = Evaluator(rs)
    ev.step(good(OK, 0.0), 0.0)
    assert ev.step(good({"running": True}, 0.1), 0.1).state.name == "unknown"


# -- counters ---------------------------------------------------------------------------------

COUNT = BASIC + """
[inputs.part]
type = "bool"
[[counter]]
name = "parts"
rising = "part"
[[counter]]
name = "pairs"
falling = "part"
increment = 2
"""


def _feed_parts(ev, values, start=0.0):
    out = []
    for i, p in enumerate(values):
        snap = good(OK, start + i * 0.1)
        if p is not None:
            snap["part"] = Sample(p, Quality.GOOD, start + i * 0.1)
        out.append(ev.step(snap, start + i * 0.1))
    return out


def test_a_counter_counts_rising_edges_and_reports_the_total():
    steps = _feed_parts(Evaluator(load(COUNT)), [0, 1, 1, 0, 1, 0])
    counts = [e for s in steps for e in s.events if e.kind == "count" and e.name == "parts"]
    assert [(e.value, e.at, e.detail) for e in counts] == [
        (1, 0.1, (("increment", 1),)), (2, 0.4, (("increment", 1),))]
    assert steps[-1].counters["parts"] == 2


def test_a_falling_counter_counts_falling_edges_with_its_increment():
    steps = _feed_parts(Evaluator(load(COUNT)), [0, 1, 0, 1, 0])
    assert steps[-1].counters["pairs"] == 4


def test_a_counter_does_not_count_the_first_value_nor_across_an_unknown_gap_of_same_value():
    steps = _feed_parts(Evaluator(load(COUNT)), [1, 1, None, 1, 0, None, 1])
    assert steps[-1].counters["parts"] == 1  # only the 0 -> (gap) -> 1 edge


def test_restore_counters_seeds_persisted_totals():
    ev = Evaluator(load(COUNT))
    ev.restore_counters({"parts": 41, "removed_counter": 7})
    steps = _feed_parts(ev, [0, 1])
    assert steps[-1].counters == {"parts": 42, "pairs": 0}
    assert steps[-1].events[-1] == RuleEvent("count", "parts", 42, 0.1, (("increment", 1),))


# -- reload ------------------------------------------------------------------------------------

def test_carry_over_keeps_the_timers_of_unchanged_rules():
    old = Evaluator(load(TIMED))
    run(old, OK, 0.0, 1.5)  # producing's on_delay is 1.5 s along
    new = Evaluator(load(TIMED + "\n# reloaded\n"))
    new.carry_over(old)
    assert new.step(good(OK, 2.0), 2.0).state.name == "producing"


def test_carry_over_restarts_the_timers_of_changed_rules():
    old = Evaluator(load(TIMED))
    run(old, OK, 0.0, 1.5)
    new = Evaluator(load(TIMED.replace('on_delay = "2s"', 'on_delay = "2.5s"')))
    new.carry_over(old)
    assert new.step(good(OK, 2.0), 2.0).state.name == "stopped"


def test_carry_over_keeps_the_current_state_counter_totals_and_edge_memory():
    old = Evaluator(load(COUNT))
    steps = _feed_parts(old, [0, 1, 0, 1])
    assert steps[-1].counters["parts"] == 2
    new = Evaluator(load(COUNT.replace("increment = 2", "increment = 3")))
    new.carry_over(old)
    step = new.step(good(OK, 1.0) | {"part": Sample(1, Quality.GOOD, 1.0)}, 1.0)
    assert step.events == ()  # still producing, part still high: no new state, no new count
    assert step.counters == {"parts": 2, "pairs": 2}
    assert step.state.since == 0.0


def test_carry_over_takes_the_new_code_and_lamps_of_the_current_state_and_keeps_its_timers():
    old = Evaluator(load(TIMED))
    run(old, OK, 0.0, 3.0)  # producing since 2.0 (on_delay 2 s)
    changed = TIMED.replace("code = 10000", "code = 10001").replace(
        'show = { green = "on" }', 'show = { green = "blink_slow" }')
    new = Evaluator(load(changed))
    new.carry_over(old)
    assert new.state == StateInfo("producing", 10001, 2.0)
    off = {"running": False, "fault_code": 0}
    step = new.step(good(off, 3.1), 3.1)  # the off_delay timer was kept: still producing
    assert step.state == StateInfo("producing", 10001, 2.0) and step.events == ()
    assert lit(step) == {"green": "blink_slow"}
    step = run(new, off, 3.2, 4.1)
    assert step.events[0].detail[:2] == (("previous_state", "producing"), ("previous_code", 10001))


def test_carry_over_of_a_removed_current_state_goes_through_unknown():
    old = Evaluator(load(BASIC))
    run(old, OK, 0.0, 1.0)
    new = Evaluator(load(BASIC.replace('"producing"', '"making"')))
    new.carry_over(old)
    assert new.state == StateInfo("unknown", 30000, 0.0)
    step = new.step(good(OK, 1.1), 1.1)
    assert step.state == StateInfo("making", 10000, 1.1)
    assert [(e.name, e.value, e.detail) for e in step.events] == [
        ("unknown", 30000, (("previous_state", "producing"), ("previous_code", 10000),
                            ("previous_duration", 1.1))),
        ("making", 10000, (("previous_state", "unknown"), ("previous_code", 30000),
                           ("previous_duration", 0.0))),
    ]
    assert new.step(good(OK, 1.2), 1.2).events == ()


def test_a_signal_on_when_a_reload_removes_it_is_reported_off_on_the_next_scan():
    old = Evaluator(load(LAMPS))
    run(old, {"running": True, "fault_code": 5}, 0.0, 1.0)  # both signals on since 0.0
    without = LAMPS[:LAMPS.index('[[signal]]\nname = "low"')]
    new = Evaluator(load(without))
    new.carry_over(old)
    step = new.step(good({"running": True, "fault_code": 5}, 1.1), 1.1)
    assert step.events == (RuleEvent("alarm", "low", False, 1.1, (("duration", 1.1),)),)
    assert step.signals == ("door_warning",)
    assert new.step(good({"running": True, "fault_code": 5}, 1.2), 1.2).events == ()


def test_a_signal_on_when_a_reload_restarts_it_is_reported_off_then_on_again_if_still_true():
    old = Evaluator(load(LAMPS))
    run(old, {"running": True, "fault_code": 5}, 0.0, 1.0)
    new = Evaluator(load(LAMPS.replace('when = "fault_code == 5"\nshow = { blue = "blink_slow"',
                                       'when = "fault_code >= 5"\nshow = { blue = "blink_slow"')))
    new.carry_over(old)
    step = new.step(good({"running": True, "fault_code": 5}, 1.1), 1.1)
    assert step.events == (RuleEvent("alarm", "low", False, 1.1, (("duration", 1.1),)),
                           RuleEvent("alarm", "low", True, 1.1))


# -- derived values ----------------------------------------------------------------------------

def test_a_define_can_hold_a_number_other_rules_read():
    rs = load(BASIC.replace('when = "running"', 'when = "running and doubled > 5"')
              + '[define]\ndoubled = "fault_code * 2 + 6"\n')
    assert Evaluator(rs).step(good(OK, 0.0), 0.0).state.name == "producing"


def test_same_history_gives_the_same_outputs():
    def history():
        ev = Evaluator(load(LAMPS))
        return [ev.step(good({"running": i % 7 > 2, "fault_code": i % 11 // 5 * 5}, i * 0.1),
                        i * 0.1) for i in range(100)]

    assert history() == history()


def test_a_number_too_large_for_a_float_is_bad_not_a_crash():
    rs = load(SPEED.replace('speed = { type = "int", scale = 0.1 }', 'speed = { type = "float" }'))
    step = Evaluator(rs).step(good({"speed": 10**400, "button": False}, 0.0), 0.0)
    assert step.state.name == "unknown"


def test_a_state_and_a_signal_may_share_a_name_and_keep_separate_timers():
    rs = load(BASIC + """
[[signal]]
name = "producing"
priority = 3
when = "fault_code == 4"
on_delay = "1s"
show = { blue = "on" }
""")
    ev = Evaluator(rs)
    step = run(ev, {"running": True, "fault_code": 0}, 0.0, 2.0)
    assert step.state.name == "producing" and step.signals == ()
    new = Evaluator(load(BASIC + '[[signal]]\nname = "producing"\npriority = 3\n'
                         'when = "fault_code == 4"\non_delay = "1s"\nshow = { blue = "on" }\n'))
    new.carry_over(ev)
    assert new.step(good(OK, 2.1), 2.1).events == ()


def test_debounce_counts_from_the_sample_that_first_showed_the_value():
    ev = Evaluator(load(SPEED))
    run(ev, {"speed": 0, "button": False}, 0.0, 1.0)
    # an event-driven source saw the press 300 ms before this scan and nothing since
    snap = good({"speed": 0}, 1.1) | {"button": Sample(True, Quality.GOOD, 0.8)}
    assert ev.step(snap, 1.1).state.name == "pressed"
