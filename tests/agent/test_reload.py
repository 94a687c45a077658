"""Hot reload: broken rules keep the old set running; good ones switch and keep unchanged timers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from harness.agent_proc import AgentProcess, write_config
from linelight.agent.clock import ClockWatch
from linelight.agent.config import load_config
from linelight.agent.journal import Event
from linelight.agent.reload import Reloader
from linelight.agent.scan import ScanLoop
from linelight.hw.inputs import InputTable
from linelight.rules.evaluator import Evaluator
from linelight.rules.values import Quality, Sample

RULES = """\
[inputs]
always = { type = "bool" }

[[state]]
name = "running"
code = 10000
priority = 10
when = "always"
show = { green = "on" }

[[signal]]
name = "warm"
priority = 5
when = "always"
on_delay = "8s"
show = { amber = "on" }
"""

SOURCES = """\
[sources.sim]
type = "sim"
period = "20ms"

[sources.sim.inputs]
always = { wave = "constant", value = true, type = "bool" }
"""

TOWER = """\
[tower.lamps]
green = { virtual = true }
amber = { virtual = true }
red = { virtual = true }
"""


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, event: Event) -> None:
        self.events.append(event)


class Harness:
    def __init__(self, tmp_path: Path, *, quiet_heap: bool = True) -> None:
        self.dir = tmp_path
        self.rules_file = tmp_path / "rules.d" / "machine.toml"
        config = write_config(tmp_path, rules=RULES, sources=SOURCES, tower=TOWER)
        self.config = load_config(config)
        self.mono = 100.0
        self.table = InputTable()
        self.sink = Sink()
        clock = ClockWatch(monotonic=lambda: self.mono, wall_ns=lambda: int(self.mono * 1e9),
                           synchronized=lambda: True)
        self.scan = ScanLoop(inputs=self.table, evaluator=Evaluator(self.config.ruleset),
                             tower=_Tower(), sink=self.sink, clock=clock, period=0.02,
                             monotonic=lambda: self.mono)
        self.reloader = Reloader(self.config, self.scan, self.sink, clock, Evaluator,
                                 quiet_heap=quiet_heap)

    def run_for(self, seconds: float) -> None:
        end = self.mono + seconds
        while self.mono < end - 1e-9:
            self.mono += 0.1
            self.table.update("always", Sample(True, Quality.GOOD, self.mono))
            self.scan.tick()


class _Tower:
    def show(self, command: object) -> None:
        return None


@pytest.mark.anyio
async def test_good_rules_switch_and_keep_the_timers_of_unchanged_rules(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.run_for(5.0)
    assert h.scan.view.signals == ()
    h.rules_file.write_text(RULES.replace("code = 10000", "code = 10001"))
    result = await h.reloader.reload("test")
    assert result.ok and result.changed
    assert h.scan.evaluator.ruleset.states[0].code == 10001
    h.run_for(3.2)  # 8.2 s since `warm` began: its on-delay timer was kept
    assert h.scan.view.signals == ("warm",)
    names = [e.name for e in h.sink.events if e.kind == "agent"]
    assert names == ["rules_reloaded"]


@pytest.mark.anyio
async def test_changed_rule_starts_its_timer_again(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.run_for(5.0)
    h.rules_file.write_text(RULES.replace('on_delay = "8s"', 'on_delay = "7s"'))
    assert (await h.reloader.reload("test")).changed
    h.run_for(3.2)
    assert h.scan.view.signals == ()  # a changed rule has a new timer: 3.2 s of 7 s
    h.run_for(4.0)
    assert h.scan.view.signals == ("warm",)


@pytest.mark.anyio
async def test_a_signal_on_when_a_reload_removes_it_is_journalled_off(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.run_for(9.0)
    assert h.scan.view.signals == ("warm",)
    h.rules_file.write_text(RULES[:RULES.index("[[signal]]")])
    assert (await h.reloader.reload("test")).changed
    h.run_for(0.1)
    alarms = [e for e in h.sink.events if e.kind == "alarm"]
    assert [(e.name, e.value) for e in alarms] == [("warm", True), ("warm", False)]
    assert alarms[-1].attrs["duration"] == pytest.approx(1.0)  # on at 8.1 s, off at 9.1 s
    assert h.scan.view.signals == ()


@pytest.mark.anyio
async def test_broken_rules_are_rejected_with_located_errors_and_the_old_set_runs_on(
        tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.run_for(1.0)
    before = h.scan.evaluator
    h.rules_file.write_text(RULES.replace('when = "always"\non_delay', 'when = "alwys"\non_delay'))
    result = await h.reloader.reload("SIGHUP")
    assert not result.ok and h.scan.evaluator is before
    assert result.errors[0].startswith(f"{h.rules_file}:14:9: ")
    assert "alwys" in result.errors[0]
    rejected = [e for e in h.sink.events if e.kind == "agent"]
    assert [e.name for e in rejected] == ["rules_rejected"]
    assert dict(rejected[0].attrs)["requested_by"] == "SIGHUP"
    h.run_for(1.0)
    assert h.scan.view.state == "running"


@pytest.mark.anyio
async def test_rules_reading_an_input_no_source_delivers_are_rejected(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.rules_file.write_text(RULES.replace('always = { type = "bool" }',
                                          'always = { type = "bool" }\npressure = { type = "float" }'))
    result = await h.reloader.reload("test")
    assert not result.ok
    assert "input 'pressure' is read by the rules but no source delivers it" in result.errors[0]


@pytest.mark.anyio
async def test_unchanged_rules_are_a_no_op(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    before = h.scan.evaluator
    result = await h.reloader.reload("test")
    assert result.ok and not result.changed and h.scan.evaluator is before
    assert h.sink.events == []


def save(path: Path, text: str) -> None:
    """Replace a rule file the way an editor saves it (write aside, rename): the agent's file
    watcher polls too, and a file caught half written is rejected (truly, but not what the
    test is about)."""
    aside = path.with_name(path.name + ".saving")
    aside.write_text(text)
    os.replace(aside, path)


def test_sighup_to_the_agent_process_rejects_broken_rules_and_applies_good_ones(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent", rules=RULES, sources=SOURCES, tower=TOWER)
    rules_file = tmp_path / "agent" / "rules.d" / "machine.toml"
    with AgentProcess(config) as agent:
        agent.start()
        first = agent.wait_status(lambda s: s["state"]["name"] == "running", what="running")
        fingerprint = first["rules"]["fingerprint"]

        save(rules_file, RULES.replace("priority = 10", "priority = ten"))
        agent.signal(signal.SIGHUP)
        rejected = agent.wait_status(lambda s: (s["rules"]["last_reload"] or {}).get("ok") is False,
                                     what="reload rejected")
        assert rejected["rules"]["fingerprint"] == fingerprint
        assert rejected["state"]["name"] == "running"
        assert any(r.startswith("rules:") for r in rejected["health"]["reasons"])

        save(rules_file, RULES.replace("code = 10000", "code = 10005"))
        agent.signal(signal.SIGHUP)
        switched = agent.wait_status(lambda s: s["rules"]["fingerprint"] != fingerprint
                                     and s["rules"]["last_reload"]["ok"],
                                     what="new rules running")
        assert switched["rules"]["last_reload"]["ok"] is True
        assert switched["state"]["since_ns"] == first["state"]["since_ns"]  # state carried over
        assert agent.stop() == 0
    log = agent.log()
    assert f"{rules_file}:7:" in log and "rules rejected (asked by SIGHUP)" in log
    assert "rules reloaded (asked by SIGHUP)" in log


def test_a_changed_rule_file_is_picked_up_without_a_signal(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent", rules=RULES, sources=SOURCES, tower=TOWER)
    rules_file = tmp_path / "agent" / "rules.d" / "machine.toml"
    with AgentProcess(config) as agent:
        agent.start()
        fingerprint = agent.status()["rules"]["fingerprint"]
        save(rules_file, RULES.replace('green = "on"', 'green = "blink_slow"'))
        agent.wait_status(lambda s: s["rules"]["fingerprint"] != fingerprint
                          and s["lamps"]["green"] == "blink_slow", what="reload on file change")
        assert agent.stop() == 0
    assert "rules reloaded (asked by rule file change)" in agent.log()


@pytest.mark.anyio
async def test_an_unforeseen_error_while_loading_is_a_rejection_with_the_sentence_check_prints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from linelight.agent import rulefiles
    from linelight.rules.errors import ConfigProblems

    def broken(sources: object) -> object:  # a fault injected where no check foresaw one
        raise RecursionError("maximum recursion depth exceeded")

    h = Harness(tmp_path)
    h.run_for(1.0)
    before = h.scan.evaluator
    monkeypatch.setattr(rulefiles, "load_rules", broken)
    result = await h.reloader.reload("SIGHUP")
    assert not result.ok and h.scan.evaluator is before
    assert result.errors == (f"{h.rules_file}:1:1: loading the rules failed unexpectedly "
                             "(RecursionError: maximum recursion depth exceeded); this is a "
                             "defect in linelight, please report it with this file",)
    with pytest.raises(ConfigProblems) as info:  # what `linelight check --rules` prints
        rulefiles.load_rule_files([h.rules_file])
    assert [str(p) for p in info.value.problems] == list(result.errors)
    h.run_for(1.0)
    assert h.scan.view.state == "running"


HOSTILE = {
    "nested arrays": RULES + "junk = " + "[" * 2000 + "]" * 2000 + "\n",
    "long chain": RULES.replace('when = "always"\nshow', 'when = "' + " and ".join(
        ["always"] * 300) + '"\nshow'),
    "unicode digit": RULES.replace('when = "always"\nshow', 'when = "always and 1 > ²"\nshow'),
    "huge code": RULES.replace("code = 10000", "code = " + "9" * 30),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_rule_file_is_rejected_or_runs_and_never_raises(
        tmp_path: Path, case: str) -> None:
    h = Harness(tmp_path)
    h.run_for(0.5)
    h.rules_file.write_text(HOSTILE[case])
    result = await h.reloader.reload("rule file change")
    if case == "long chain":  # a long chain is no problem: it loads and runs
        assert result.ok and result.changed
    else:
        assert not result.ok and len(result.errors) == 1
        assert result.errors[0].startswith(f"{h.rules_file}:")
    h.run_for(0.5)
    assert h.scan.view.state == "running"


def test_post_reload_answers_with_the_rejection_and_the_agent_keeps_running(
        tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken-for-tests\n")
    config = write_config(tmp_path / "agent", rules=RULES, sources=SOURCES, tower=TOWER,
                          extra=f'token_file = "{token}"')
    rules_file = tmp_path / "agent" / "rules.d" / "machine.toml"
    with AgentProcess(config) as agent:
        agent.start()
        agent.wait_status(lambda s: s["state"]["name"] == "running", what="running")
        rules_file.write_text(HOSTILE["nested arrays"])
        code, body = agent.http("POST", "/reload", {"Authorization": "Bearer t0ken-for-tests"})
        assert code == 200
        assert b"rules rejected (1 problems), old rules kept" in body
        assert f"{rules_file}:".encode() in body and b"nest deeper than 32 levels" in body
        agent.signal(signal.SIGHUP)  # the same file again, through the signal handler
        status = agent.wait_status(lambda s: s["rules"]["rejections"] >= 2, what="2 rejections")
        assert status["state"]["name"] == "running"
        assert agent.stop() == 0


@pytest.mark.anyio
async def test_reading_loading_and_building_the_new_rules_run_in_a_worker_thread(
        tmp_path: Path) -> None:
    import threading

    h = Harness(tmp_path)
    built_in: list[threading.Thread] = []

    def make_evaluator(ruleset: object) -> Evaluator:
        built_in.append(threading.current_thread())
        return Evaluator(ruleset)  # type: ignore[arg-type]

    class Planned(Evaluator):
        def plan_carry_over(self, old: Evaluator):  # type: ignore[no-untyped-def]
            built_in.append(threading.current_thread())
            return super().plan_carry_over(old)

    h.reloader.make_evaluator = make_evaluator
    h.rules_file.write_text(RULES.replace("code = 10000", "code = 10002"))
    assert (await h.reloader.reload("test")).changed
    assert built_in and built_in[0] is not threading.main_thread()
    # matching the new rules to the running ones too; only the copy runs on the loop
    built_in.clear()
    h.reloader.make_evaluator = Planned
    h.rules_file.write_text(RULES.replace("code = 10000", "code = 10003"))
    assert (await h.reloader.reload("test")).changed
    assert len(built_in) == 1 and built_in[0] is not threading.main_thread()


@pytest.mark.anyio
async def test_a_reload_with_the_collector_quiet_ends_as_one_without(tmp_path: Path) -> None:
    """agent.heap changes when garbage is collected (and the reload when the GIL changes
    hands), never what a reload does: the same sequence (a rejected file, a good one, a
    removed signal) gives the same results, events, lamps and carried-over timers with the
    collector off and the short switch interval during the load, and without."""
    import gc
    import sys

    from linelight.agent.reload import RELOAD_SWITCH_INTERVAL

    runs = []
    normal = sys.getswitchinterval()
    for quiet in (False, True):
        h = Harness(tmp_path / str(quiet), quiet_heap=quiet)
        collector: list[bool] = []
        switching: list[float] = []

        def make_evaluator(ruleset: object, collector: list[bool] = collector,
                           switching: list[float] = switching) -> Evaluator:
            collector.append(gc.isenabled())
            switching.append(sys.getswitchinterval())
            return Evaluator(ruleset)  # type: ignore[arg-type]

        h.reloader.make_evaluator = make_evaluator
        h.run_for(5.0)
        seen: list[object] = []
        for text in (RULES.replace("priority = 10", "priority = ten"),
                     RULES.replace("code = 10000", "code = 10001"),
                     RULES[:RULES.index("[[signal]]")], RULES):
            h.rules_file.write_text(text)
            result = await h.reloader.reload("test")
            assert gc.isenabled() and sys.getswitchinterval() == normal
            h.run_for(3.2)
            seen.append((result.ok, result.changed, result.fingerprint, result.errors,
                         h.scan.view.state, h.scan.view.signals, h.scan.view.lamps))
        seen += h.sink.events
        runs.append(repr(seen).replace(str(h.dir), "DIR"))
        assert collector == [not quiet] * 3  # the three files that load
        assert switching == [RELOAD_SWITCH_INTERVAL if quiet else normal] * 3
    assert "rules_rejected" in runs[0] and "rules_reloaded" in runs[0]
    assert runs[0] == runs[1]


@pytest.mark.anyio
async def test_the_collection_after_a_reload_comes_once_the_old_rules_are_freed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """agent.heap: the one collection of a reload scans what is not frozen; it comes after
    the swap, when nothing holds the old evaluator any more (so it is not scanned too)."""
    import weakref

    from linelight.agent import heap

    h = Harness(tmp_path)
    h.run_for(1.0)
    old = weakref.ref(h.scan.evaluator)
    seen: list[bool] = []
    monkeypatch.setattr(heap, "collect", lambda: seen.append(old() is None))
    h.rules_file.write_text(RULES.replace("code = 10000", "code = 10001"))
    assert (await h.reloader.reload("test")).changed
    assert seen == [True]
