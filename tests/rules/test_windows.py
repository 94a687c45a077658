"""Expressions that read the state, counters and signal durations; rolling windows; counter
reset; [[output]] rules; the state-reads-itself cycle."""

from __future__ import annotations

from linelight.rules.evaluator import Evaluator, Step
from linelight.rules.values import Pattern, Quality, Sample
from linelight.rules.windows import MAX_ENTRIES, Window
from tests.rules.util import good, load, problems

MACHINE = """
[inputs]
running = { type = "bool", stale_after = "1s" }
jam = { type = "bool", stale_after = "1s" }
part = { type = "bool" }
reset_button = { type = "bool" }
guard_closed = { type = "bool", stale_after = "1s" }

[[signal]]
name = "microstop"
priority = 5
when = "jam"

[[signal]]
name = "call_maintenance"
priority = 6
when = "count_of(microstop, 10m) >= 3"
show = { blue = "on" }

[[signal]]
name = "long_stop"
priority = 1
when = "state == 'stopped' and state_for >= 5s"

[[state]]
name = "producing"
code = 10000
priority = 10
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 1
when = true
show = { amber = "on" }

[[counter]]
name = "parts"
rising = "part"
reset = "rising(reset_button)"

[define]
parts_last_minute = "increase(parts, 1m)"

[[output]]
name = "horn"
when = "call_maintenance and on_for(call_maintenance) < 2s"

[[output]]
name = "may_start"
when = "guard_closed and state != 'producing'"
"""

IDLE = {"running": False, "jam": False, "part": False, "reset_button": False,
        "guard_closed": True}


def _scan(ev: Evaluator, now: float, **values: bool) -> Step:
    return ev.step(good({**IDLE, **values}, now), now)


def _microstops(ev: Evaluator, times: list[float]) -> None:
    """One 1 s jam at each time (the evaluator scans every second around it)."""
    for t in times:
        _scan(ev, t)
        _scan(ev, t + 1, jam=True)
        _scan(ev, t + 2)


def test_three_microstops_within_ten_minutes_call_maintenance_and_the_blue_lamp() -> None:
    ev = Evaluator(load(MACHINE))
    _microstops(ev, [0, 100])
    assert "call_maintenance" not in _scan(ev, 200).signals
    _microstops(ev, [300])
    step = _scan(ev, 303)
    assert "call_maintenance" in step.signals
    assert step.lamps["blue"] is Pattern.ON


def test_a_microstop_leaves_the_window_ten_minutes_after_it_was_seen() -> None:
    ev = Evaluator(load(MACHINE))
    _microstops(ev, [0, 100, 300])  # edges seen at 1 s, 101 s, 301 s
    assert "call_maintenance" in _scan(ev, 600).signals
    assert "call_maintenance" in _scan(ev, 600.5).signals  # the first edge is 599.5 s old
    assert "call_maintenance" not in _scan(ev, 601).signals  # now it is 600 s old: gone


def test_a_window_holds_at_most_its_bound_and_never_reads_low() -> None:
    window = Window(600.0)
    for i in range(MAX_ENTRIES * 3):
        window.add(i * 0.01, 1)
    assert len(window) == MAX_ENTRIES
    assert window.total(30.0) == MAX_ENTRIES * 3


def test_a_window_wider_than_a_day_or_not_a_duration_is_refused_at_its_column() -> None:
    text = MACHINE.replace("count_of(microstop, 10m)", "count_of(microstop, 2d)")
    assert problems(text) == [
        "rules.toml:17:29: count_of() needs a window written as a duration longer than zero "
        "and at most a day, e.g. count_of(c, 10m)"]


def test_increase_counts_what_the_counter_counted_and_a_reset_adds_nothing() -> None:
    ev = Evaluator(load(MACHINE))
    now = 0.0
    for _ in range(5):  # five parts, one every 2 s
        _scan(ev, now, part=True)
        _scan(ev, now + 1)
        now += 2
    step = _scan(ev, now, reset_button=True)
    assert step.counters["parts"] == 0
    assert ("count", "parts", 0, (("reset", True),)) in [
        (e.kind, e.name, e.value, e.detail) for e in step.events]
    _scan(ev, now + 1)
    assert ev._v[ev.ruleset.defines[0].slot] == 4  # the first edge was seen at 1 s
    _scan(ev, now + 60)
    assert ev._v[ev.ruleset.defines[0].slot] == 0


def test_the_counter_reset_is_an_edge_a_held_button_resets_once() -> None:
    ev = Evaluator(load(MACHINE))
    _scan(ev, 0, part=False)
    _scan(ev, 1, part=True)
    _scan(ev, 2, reset_button=True)
    _scan(ev, 3, part=True, reset_button=True)
    assert _scan(ev, 4, reset_button=True).counters["parts"] == 1


def test_expressions_read_the_previous_scans_state_and_how_long_it_lasts() -> None:
    ev = Evaluator(load(MACHINE))
    _scan(ev, 0.0, running=True)
    first = _scan(ev, 1.0)  # stopped from now
    assert first.state.name == "stopped"
    assert "long_stop" not in _scan(ev, 5.9).signals
    assert "long_stop" in _scan(ev, 6.0).signals


def test_outputs_follow_their_condition_and_are_off_while_it_is_unknown() -> None:
    ev = Evaluator(load(MACHINE))
    assert _scan(ev, 0.0).outputs["may_start"] is True
    assert _scan(ev, 1.0, running=True).outputs["may_start"] is True  # state of scan 0
    assert _scan(ev, 2.0, running=True).outputs["may_start"] is False
    stale = {**good({**IDLE}, 3.0), "guard_closed": Sample(True, Quality.STALE, 3.0)}
    assert ev.step(stale, 3.0).outputs["may_start"] is False


def test_the_horn_sounds_for_the_first_two_seconds_of_the_call() -> None:
    ev = Evaluator(load(MACHINE))
    _microstops(ev, [0, 10, 20])
    assert _scan(ev, 22).outputs["horn"] is True  # the call began at 21 s
    assert _scan(ev, 23).outputs["horn"] is False


def test_restored_windows_keep_their_edges_across_a_restart() -> None:
    ev = Evaluator(load(MACHINE))
    _microstops(ev, [0, 100, 200])
    fresh = Evaluator(ev.ruleset)
    assert fresh.restore_windows(ev.windows()) == 2
    assert "call_maintenance" in _scan(fresh, 300).signals


def test_a_state_that_reads_the_machine_state_is_refused_with_the_loop_named() -> None:
    text = MACHINE.replace('name = "producing"\ncode = 10000\npriority = 10\nwhen = "running"',
                           'name = "producing"\ncode = 10000\npriority = 10\n'
                           'when = "running and not long_stop"')
    assert problems(text) == [
        "rules.toml:29:25: state 'producing' reads the machine state it decides: state "
        "'producing' -> long_stop -> state; a state's conditions cannot depend on the state "
        "(signals, outputs and counters can)"]


def test_naming_a_state_in_an_expression_says_how_to_read_the_state() -> None:
    text = MACHINE.replace('when = "guard_closed and state != \'producing\'"',
                           'when = "guard_closed and not producing"')
    assert problems(text) == [
        "rules.toml:53:30: 'producing' is a state; to read the machine state write "
        "state == \"producing\""]


def test_on_for_needs_a_signal_and_increase_a_counter() -> None:
    text = MACHINE.replace("on_for(call_maintenance)", "on_for(jam)").replace(
        "increase(parts, 1m)", "increase(jam, 1m)")
    assert problems(text) == [
        "rules.toml:45:31: increase() needs the name of a counter, e.g. increase(parts, 10m)",
        "rules.toml:49:37: on_for() needs the name of a signal, e.g. on_for(door_open)"]


def test_a_window_that_is_not_read_still_forgets_old_edges() -> None:
    window = Window(10.0)
    for i in range(MAX_ENTRIES * 2):  # one edge a second, never read in between
        window.add(float(i), 1)
    assert len(window) == 10
    assert window.total(MAX_ENTRIES * 2 - 1.0) == 10


def test_more_than_two_hundred_windows_are_refused_where_the_limit_is_passed() -> None:
    signals = "".join(f'[[signal]]\nname = "w{i}"\npriority = {i}\n'
                      f'when = "count_of(jam, {i + 1}s) > 0"\n' for i in range(201))
    found = problems(MACHINE + signals)
    assert len(found) == 1 and found[0].startswith("rules.toml:")
    assert "more than 200 rolling windows" in found[0]
    assert "count_of(jam, 199s)" in (MACHINE + signals).splitlines()[
        int(found[0].split(":")[1]) - 1]


def test_a_reload_keeps_what_expressions_read_of_the_state() -> None:
    ev = Evaluator(load(MACHINE))
    for t in range(8):
        step = _scan(ev, float(t))
    assert "long_stop" in step.signals
    fresh = Evaluator(load(MACHINE.replace("on_for(call_maintenance) < 2s",
                                           "on_for(call_maintenance) < 3s")))
    fresh.carry_over(ev)
    step = _scan(fresh, 8.0)
    assert "long_stop" in step.signals and step.events == ()


PERMITS = """
[inputs]
guard_closed = { type = "bool", stale_after = "1s" }
key_switch = { type = "bool", stale_after = "1s", on_stale = true }
link = { type = "bool", stale_after = "1s", on_stale = "hold:10s" }

[define]
safe = "guard_closed or key_switch"

[[signal]]
name = "guarded"
priority = 1
when = "guard_closed or key_switch"

[[state]]
name = "running"
code = 10000
priority = 0
when = true

[[output]]
name = "permit"
when = "safe"

[[output]]
name = "via_signal"
when = "guarded"

[[output]]
name = "either"
when = "guard_closed or link"

[[output]]
name = "link_lost"
when = "stale(link) or not known(link) or age(link) > 5s"
"""


def test_an_output_is_off_while_any_input_whose_value_it_reads_is_stale_whatever_on_stale(
        ) -> None:
    ev = Evaluator(load(PERMITS))
    all_good = {"guard_closed": True, "key_switch": False, "link": True}
    assert ev.step(good(all_good, 0.0), 0.0).outputs == {
        "permit": True, "via_signal": True, "either": True, "link_lost": False}
    # key_switch stale reads true (on_stale), so `safe` and the signal are true: no permit
    stale_key = {**good({**all_good, "guard_closed": False}, 1.0),
                 "key_switch": Sample(False, Quality.STALE, 1.0)}
    step = ev.step(stale_key, 1.0)
    assert "guarded" in step.signals  # a lamp may trust on_stale; an output does not
    assert step.outputs["permit"] is False and step.outputs["via_signal"] is False
    # link held (hold:10s) and `guard_closed or link` decided by guard_closed alone: still off;
    # an output that only asks whether link can be read is not blocked by it
    stale_link = {**good(all_good, 2.0), "link": Sample(True, Quality.BAD, 2.0)}
    step = ev.step(stale_link, 2.0)
    assert step.outputs == {"permit": True, "via_signal": True, "either": False,
                            "link_lost": True}
    assert ev.step(good(all_good, 3.0), 3.0).outputs["either"] is True
