"""Several machines on one agent: the [machines.*] config, the per-machine scan, the wire."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from linelight.agent.config import load_config
from linelight.agent.journal import Event
from linelight.agent.memory import RuleMemory
from linelight.agent.mqtt import Wire
from linelight.agent.mqtt.wire import UmhPath
from linelight.agent.scan import MachineLane, ScanLoop
from linelight.hw.inputs import InputTable
from linelight.hw.outputs import VirtualOutput
from linelight.hw.stacklight import StackLight
from linelight.rules.evaluator import Evaluator
from linelight.rules.loader import load_rules
from linelight.rules.values import Pattern, Quality, Sample
from tests.agent.test_config import problems_of
from tests.agent.test_scan import Clocks, Sink

RULES = """\
[inputs]
running = { type = "bool" }

[[state]]
name = "producing"
code = 10000
priority = 50
when = "running"
show = { green = "on" }

[[state]]
name = "stopped"
code = 40000
priority = 10
when = "not running"
show = { red = "on" }

[unknown]
show = { amber = "on" }
"""

# a machine that is `starved` while the machine it reads (its `upstream`) is not producing
DOWNSTREAM = RULES.replace('running = { type = "bool" }\n', """\
running = { type = "bool" }
upstream = { type = "int" }

[[state]]
name = "starved"
code = 60000
priority = 60
when = "upstream != 10000"
show = { amber = "on" }
""", 1)

LAMPS = "red = { virtual = true }\ngreen = { virtual = true }\namber = { virtual = true }\n"

LINE = f"""\
agent_id = "line-1"
data_dir = "data"

[sources.cell]
type = "sim"

[sources.cell.inputs]
p1_running = {{ wave = "constant", value = true }}

[machines.press-1]
rules = ["press.toml"]
inputs = {{ running = "p1_running" }}

[machines.press-1.tower.lamps]
{LAMPS}
[machines.filler]
rules = ["downstream.toml"]
inputs = {{ upstream = "machine:press-1" }}

[machines.filler.sources.filler-sim]
type = "sim"

[machines.filler.sources.filler-sim.inputs]
running = {{ wave = "constant", value = true }}

[machines.filler.tower.lamps]
{LAMPS}
"""


def write(tmp_path: Path, config: str, downstream: str = DOWNSTREAM) -> Path:
    (tmp_path / "press.toml").write_text(RULES)
    (tmp_path / "downstream.toml").write_text(downstream)
    path = tmp_path / "agent.toml"
    path.write_text(config)
    return path


# -- config ---------------------------------------------------------------------------------

def test_machines_are_read_with_their_rules_towers_and_resolved_inputs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LINE))
    press, filler = config.machines
    assert (press.name, filler.name) == ("press-1", "filler") and press.named
    assert dict(press.inputs) == {"running": "p1_running"}
    assert dict(filler.inputs) == {"running": "filler/running", "upstream": "machine:press-1"}
    assert filler.states_read() == {"upstream": "press-1"}
    assert press.tower is not None and set(press.tower.lamps) == {"red", "green", "amber"}
    assert config.ruleset is press.ruleset  # the first machine's, for single-machine readers


def test_a_config_without_machines_is_one_unnamed_machine_named_after_the_agent(
        tmp_path: Path) -> None:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "m.toml").write_text(RULES)
    path = tmp_path / "agent.toml"
    path.write_text(f'agent_id = "press-7"\n[sources.s]\ntype = "sim"\n[sources.s.inputs]\n'
                    f'running = {{ wave = "constant", value = true }}\n[tower.lamps]\n{LAMPS}')
    (machine,) = load_config(path).machines
    assert (machine.name, machine.named, machine.wire_name) == ("press-7", False, None)


def test_machine_problems_name_the_machine_at_file_line_col(tmp_path: Path) -> None:
    broken = DOWNSTREAM.replace('when = "running"', 'when = "runing"')
    config = LINE.replace('inputs = { running = "p1_running" }',
                          'inputs = { running = "p9_running" }')
    path = write(tmp_path, config, downstream=broken)
    found = problems_of(path)
    assert f"{tmp_path / 'downstream.toml'}:16:9: machine 'filler': unknown input 'runing'; " \
           "did you mean 'running'?" in found, found
    assert any(p.startswith(f"{path}:") and "machine 'press-1': input 'running' is wired to "
               "'p9_running', which no shared [sources.*] delivers" in p for p in found), found


def test_with_machines_no_input_can_be_missing_at_run_time_load_and_reload_refuse_it(
        tmp_path: Path) -> None:
    """Without machines an agent may run with no sources (its inputs listed `missing` on the
    page and in /status); with machines every input a machine reads must be delivered, at load
    and at each reload, so there is no machine's missing input to list."""
    from linelight.agent.config import check_ruleset_against, load_ruleset
    from linelight.agent.machines import RuleFiles
    from linelight.rules.errors import ConfigProblems

    reads_more = DOWNSTREAM.replace('upstream = { type = "int" }\n',
                                    'upstream = { type = "int" }\nspeed = { type = "float" }\n')
    said = ("machine 'filler': input 'speed' is read by the rules but no source delivers it "
            "(the machine's own sources: running; shared [sources.*]: p1_running; or wire it "
            "in the machine's 'inputs')")
    for sub in ("load", "reload"):
        (tmp_path / sub).mkdir()
    found = problems_of(write(tmp_path / "load", LINE, downstream=reads_more))
    assert f"{tmp_path / 'load' / 'downstream.toml'}:4:1: {said}" in found, found
    config = load_config(write(tmp_path / "reload", LINE))
    press, filler = config.machines
    new = load_ruleset(RuleFiles(((str(tmp_path / "reload" / "downstream.toml"), reads_more),)))
    with pytest.raises(ConfigProblems) as refused:
        check_ruleset_against(config, new, filler)
    assert [p.message for p in refused.value.problems] == [said]
    assert check_ruleset_against(config, press.ruleset, press) is not None  # the others reload


def test_a_machines_rules_are_tested_on_their_own_another_machines_state_as_a_code_series(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rule tests run per machine as before machines: a test names the machine's rule files;
    an input wired to `machine:OTHER` is an int series of OTHER's state codes."""
    from linelight.agent.cli import main

    (tmp_path / "downstream.toml").write_text(DOWNSTREAM)
    test = tmp_path / "downstream_test.toml"
    test.write_text('rules = ["downstream.toml"]\n[[test]]\nname = "starved when press-1 stops"'
                    '\n[test.inputs]\nrunning = "1x10"\nupstream = "10000x5 40000x5"\n'
                    '[[test.expect]]\nat = "0.4s"\nstate = "producing"\n'
                    '[[test.expect]]\nat = "0.9s"\nstate = "starved"\nlamps = { amber = "on" }\n')
    assert main(["rules", "test", str(test)]) == 0, capsys.readouterr().out
    assert "1 test: 1 passed, 0 failed" in capsys.readouterr().out


def test_top_level_rules_or_tower_beside_machines_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'rules = ["press.toml"]\n' + LINE + f"[tower.lamps]\n{LAMPS}")
    found = problems_of(path)
    assert f"{path}:1:9: with [machines.*] every machine names its own 'rules'; move it into " \
           "[machines.NAME]" in found, found
    assert any("every machine names its own 'tower'" in p for p in found), found


def test_machine_names_must_be_topic_levels_and_not_the_agents_own(tmp_path: Path) -> None:
    config = LINE.replace("[machines.filler]", "[machines.live]").replace(
        "[machines.filler.", "[machines.live.").replace("machines.press-1", 'machines."press 1"'
                                                        ).replace("machine:press-1", "machine:x")
    found = problems_of(write(tmp_path, config))
    assert any("machine name 'press 1' must be a letter or digit" in p for p in found), found
    assert any("machine name 'live' is a topic level of the agent's own" in p for p in found)


def test_reading_a_machine_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, LINE.replace("machine:press-1", "machine:press-9")))
    assert any("machine 'filler': input 'upstream' reads the state of machine 'press-9', which "
               "is not another machine of this agent" in p for p in found), found


# -- scan -----------------------------------------------------------------------------------

def _tower(clocks: Clocks) -> StackLight:
    return StackLight({lamp: VirtualOutput(lamp) for lamp in ("red", "amber", "green")},
                      clock=lambda: clocks.mono)


def _line(clocks: Clocks, table: InputTable, sink: Sink) -> tuple[ScanLoop, list[StackLight]]:
    towers = [_tower(clocks) for _ in range(3)]
    lanes = [
        MachineLane(Evaluator(load_rules([("p.toml", RULES)])), towers[0], name="press-1",
                    inputs={"running": "p1_running"}, label="press-1"),
        MachineLane(Evaluator(load_rules([("p.toml", RULES)])), towers[1], name="press-2",
                    inputs={"running": "press-2/running"}, label="press-2"),
        MachineLane(Evaluator(load_rules([("d.toml", DOWNSTREAM)])), towers[2], name="filler",
                    inputs={"running": "filler/running"}, states={"upstream": "press-2"},
                    label="filler"),
    ]
    scan = ScanLoop(inputs=table, sink=sink, clock=clocks.watch(), period=0.02,  # type: ignore[arg-type]
                    machines=lanes, monotonic=lambda: clocks.mono)
    return scan, towers


def _set(table: InputTable, clocks: Clocks, name: str, value: object,
         quality: Quality = Quality.GOOD) -> None:
    table.update(name, Sample(value, quality, clocks.mono, clocks.wall))  # type: ignore[arg-type]


def test_a_bad_input_makes_only_its_machine_unknown_and_the_others_lamps_follow() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable()
    scan, towers = _line(clocks, table, sink)
    for name in ("p1_running", "press-2/running", "filler/running"):
        _set(table, clocks, name, True)
    scan.tick()
    clocks.advance(0.02)
    scan.tick()  # the filler reads press-2's state of the previous scan
    assert [t.patterns()["green"] for t in towers] == [Pattern.ON] * 3
    _set(table, clocks, "press-2/running", None, Quality.BAD)
    _set(table, clocks, "p1_running", False)
    clocks.advance(0.02)
    scan.tick()
    assert [lane.view.state for lane in scan.machines] == ["stopped", "unknown", "producing"]
    assert towers[0].patterns()["red"] is Pattern.ON
    clocks.advance(0.02)
    scan.tick()  # upstream press-2 no longer producing: the filler is starved
    assert scan.machines[2].view.state == "starved"
    assert towers[2].patterns()["amber"] is Pattern.ON
    states = [(e.attrs["machine"], e.name) for e in sink.of("state")]
    assert states[-3:] == [("press-1", "stopped"), ("press-2", "unknown"), ("filler", "starved")]
    # every machine's signal events carry it, under the names its rules read
    assert {(e.attrs["machine"], e.name) for e in sink.of("signal")} == {
        ("press-1", "running"), ("press-2", "running"), ("filler", "running")}


def test_shared_inputs_no_machine_reads_are_recorded_as_the_agents_own() -> None:
    sink, clocks, table = Sink(), Clocks(), InputTable()
    scan, _ = _line(clocks, table, sink)
    _set(table, clocks, "hall_temperature", 21.5)
    scan.tick()
    (event,) = [e for e in sink.of("signal") if e.name == "hall_temperature"]
    assert "machine" not in event.attrs


# -- memory ---------------------------------------------------------------------------------

class _Store:
    def __init__(self) -> None:
        self.meta: dict[str, object] = {}

    def get_meta(self, key: str, default: object = None) -> object:
        return self.meta.get(key, default)

    async def put_meta(self, key: str, value: object) -> bool:
        self.meta[key] = value
        return True


@pytest.mark.anyio
async def test_each_named_machine_keeps_its_counters_apart_and_the_unnamed_one_the_old_key(
        ) -> None:
    store = _Store()
    for machine, total in ((None, 1), ("press-1", 2), ("press-2", 3)):
        memory = RuleMemory(store, machine=machine)
        memory.counters_changed({"parts": total})
        await memory.flush()
    assert store.meta == {"counter_totals": {"parts": 1}, "counter_totals/press-1": {"parts": 2},
                          "counter_totals/press-2": {"parts": 3}}


# -- wire -----------------------------------------------------------------------------------

def _record(attrs: dict[str, object]) -> Event:
    from linelight.agent.journal import Record

    return Record(seq=7, boot=1, kind="state", name="fault", value=180000,  # type: ignore[call-arg]
                  ts_ns=1_700_000_000_000_000_000, enq_ns=0, attrs=attrs)


def test_a_named_machine_is_one_topic_level_below_the_agent_and_named_in_the_payload() -> None:
    wire = Wire(agent_id="line-1", prefix="linelight/{agent}")
    named = wire.event(_record({"machine": "press-2"}), historical=False)  # type: ignore[arg-type]
    plain = wire.event(_record({}), historical=False)  # type: ignore[arg-type]
    assert named.topic == "linelight/line-1/press-2/events/state/fault"
    assert plain.topic == "linelight/line-1/events/state/fault"
    assert b'"machine":"press-2"' in named.payload and b"machine" not in plain.payload
    assert wire.live("state", {"name": "x"}, 0, "press-2").topic == \
        "linelight/line-1/press-2/live/state"


def test_in_umh_modes_a_named_machine_is_the_workcell() -> None:
    path = UmhPath("acme", "berlin", "assembly", "line-4", "cell-9")
    classic = Wire(agent_id="a", prefix="x", mode="umh", umh=path)
    core = Wire(agent_id="a", prefix="x", mode="umh-core", umh=path)
    record = _record({"machine": "press-2"})
    assert classic.event(record, historical=False).topic == \
        "umh/v1/acme/berlin/assembly/line-4/press-2/_historian/state"  # type: ignore[arg-type]
    assert core.event(record, historical=False).topic == \
        "umh.v1.acme.berlin.assembly.line-4.press-2._raw.state.fault"  # type: ignore[arg-type]


# -- metrics and check ----------------------------------------------------------------------

def test_metrics_label_each_machine() -> None:
    from linelight.agent.metrics import Metrics

    status = {"agent": "line-1", "machines": {
        "press-1": {"state": {"code": 10000}, "lamps": {"green": "on", "red": "off"},
                    "counters": {"parts": 12}, "rules": {"fingerprint": "aa11"},
                    "tower": {"write_failures": 3}},
        "press-2": {"state": {"code": 30000}, "lamps": {"amber": "blink_fast"},
                    "rules": {"fingerprint": "bb22"}, "tower": None}}}
    text = Metrics(lambda: status).render().decode()
    assert 'linelight_state_code{machine="press-1"} 10000.0' in text
    assert 'linelight_state_code{machine="press-2"} 30000.0' in text
    assert 'linelight_lamp_lit{lamp="amber",machine="press-2"} 1.0' in text
    assert 'linelight_lamp_lit{lamp="red",machine="press-1"} 0.0' in text
    assert 'linelight_machine_count_total{counter="parts",machine="press-1"} 12.0' in text
    assert 'linelight_machine_rules_info{machine="press-1",rules="aa11"} 1.0' in text
    assert 'linelight_machine_rules_info{machine="press-2",rules="bb22"} 1.0' in text
    assert 'linelight_tower_write_failures_total{machine="press-1"} 3.0' in text
    assert 'linelight_tower_write_failures_total{machine="press-2"}' not in text  # no tower


def test_check_lists_each_machine_with_its_rules(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from linelight.agent.cli.check import _check_config

    path = write(tmp_path, LINE)
    assert _check_config(str(path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ok: {path}: 2 machines",
                   f"  machine press-1: 1 input, 2 states, 0 signals, 0 counters, from "
                   f"{tmp_path / 'press.toml'}",
                   f"  machine filler: 2 inputs, 3 states, 0 signals, 0 counters, from "
                   f"{tmp_path / 'downstream.toml'}"]


def test_status_shows_machines_side_by_side() -> None:
    from linelight.agent.cli.status import summary

    status = {"machines": {
        "press-1": {"named": True, "state": {"name": "producing", "code": 10000, "for_s": 3},
                    "lamps": {"green": "on"}, "counters": {"parts": 4}},
        "capper": {"named": True, "state": {"name": "unknown", "code": 30000, "for_s": 1,
                                            "reason": "input running is stale"},
                   "lamps": {"amber": "blink_fast"}}}}
    lines = summary(status, "http://x").splitlines()
    at = lines.index("machines   2")
    assert lines[at + 1:at + 5] == [  # one row each, the columns aligned
        "  machine  state       code  for    lamps             signals, counters",
        "  press-1  producing  10000  3.0 s  green on          parts = 4",
        "  capper   unknown    30000  1.0 s  amber blink_fast  -",
        "           - input running is stale"], lines


@pytest.mark.anyio
async def test_each_machines_inputs_in_status_name_the_source_that_delivers_them(
        tmp_path: Path) -> None:
    from linelight.agent.app import Agent
    from tests.hw.helpers import wait_until

    path = write(tmp_path, LINE.replace('data_dir = "data"\n',
                                        'data_dir = "data"\n[diagnostics]\nenabled = false\n'))
    agent = Agent(load_config(path), handle_signals=False, watch_files=False)
    async with anyio.create_task_group() as tg:
        await tg.start(agent.run)
        await wait_until(lambda: agent.status()["machines"]["filler"]["inputs"]["upstream"]
                         ["quality"] == "good", what="the filler reading press-1's state")
        machines = agent.status()["machines"]
        await agent.stop()
    sources = {name: {i: v["source"] for i, v in m["inputs"].items()}
               for name, m in machines.items()}
    assert sources == {"press-1": {"running": "cell"},  # shared, wired from p1_running
                       "filler": {"running": "filler-sim", "upstream": "machine:press-1"}}


def test_the_line_example_is_three_machines_on_their_own_simulators() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "line.toml")
    assert [m.name for m in config.machines] == ["press-1", "press-2", "capper"]
    assert all(m.named and m.tower is not None and len(m.sources) == 1 for m in config.machines)
    assert config.machines[2].inputs["running"] == "capper/running"


def test_umh_modes_with_machines_need_the_line_level(tmp_path: Path) -> None:
    umh = '[mqtt]\nhost = "127.0.0.1"\ntopic_mode = "umh"\n[mqtt.umh]\nenterprise = "acme"\n'
    found = problems_of(write(tmp_path, LINE.replace("[sources.cell]\n", umh + "\n[sources.cell]\n")))
    assert any("[mqtt.umh] needs 'line' (and every level above) with [machines.*]" in p
               for p in found), found


def test_a_machine_without_rules_or_with_an_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'agent_id = "x"\n[machines.a]\ncolour = 1\n')
    assert problems_of(path) == [
        f"{path}:2:2: machine 'a': needs 'rules', its rule files, e.g. "
        'rules = ["rules.d/press.toml"]',
        f"{path}:3:1: machine 'a': unknown key 'colour' in machines.a"]


def test_health_names_the_machine_once_for_its_unknown_state_and_failing_lamps() -> None:
    from linelight.agent.health import assess

    failing = {"lamps": {"red": {"failing": True}}, "last_error": "lamp 'red' on coil 0: gone"}
    first = {"named": True, "state": {"name": "unknown", "reason": "running stale"},
             "tower": failing}
    parts = {"scan": {"healthy": True}, "queue": {"writer_running": True, "health": "ok"},
             "broker": {"url": "mqtt://x", "connected": True},
             "state": first["state"], "tower": failing,
             "machines": {"press-1": first, "press-2": {"named": True,
                                                         "state": {"name": "producing"}}}}
    assert list(assess(parts).reasons) == [
        "machine press-1: state unknown (running stale)",
        "machine press-1: tower cannot write lamps red (lamp 'red' on coil 0: gone)"]


LATCHING = """\
[inputs]
temp = { type = "float" }

[[state]]
name = "running"
code = 10000
priority = 10
when = "true"
show = { green = "on" }

[[signal]]
name = "overheat"
priority = 50
when = "temp > 100"
clear_when = "temp < 50"
show = { red = "on" }
"""


@pytest.mark.anyio
async def test_a_latch_survives_a_restart_on_its_own_machine_only(tmp_path: Path) -> None:
    from linelight.agent.journal import Journal

    ruleset = load_rules([("latch.toml", LATCHING)])
    path = str(tmp_path / "journal.db")

    def scan(evaluator: Evaluator, temp: float, now: float) -> tuple[str, ...]:
        step = evaluator.step({"temp": Sample(temp, Quality.GOOD, now)}, now)
        return tuple(step.signals)

    journal = Journal.open(path)
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        for machine, temp in (("press-1", 20.0), ("press-2", 120.0)):
            evaluator, memory = Evaluator(ruleset), RuleMemory(journal, machine=machine)
            memory.restore(evaluator)
            scan(evaluator, temp, 1.0)
            scan(evaluator, 80.0 if machine == "press-2" else temp, 2.0)  # held by clear_when
            memory.latches_changed(evaluator.latches())
            await memory.flush()
        tg.cancel_scope.cancel()
    journal.close()

    journal = Journal.open(path)
    try:
        restored = {}
        for machine in ("press-1", "press-2"):
            evaluator = Evaluator(ruleset)
            restored[machine] = RuleMemory(journal, machine=machine).restore(evaluator)
            assert scan(evaluator, 80.0, 3.0) == (("overheat",) if machine == "press-2" else ())
        assert restored == {"press-1": (), "press-2": ("signal 'overheat'",)}
    finally:
        journal.close()


# -- bounds ---------------------------------------------------------------------------------

def _crowded(tmp_path: Path, declared: int, delivered: int) -> Path:
    """Two machines, each with `declared` extra inputs in its rules and its own sim source
    delivering `delivered` of them."""
    (tmp_path / "rules").mkdir(parents=True)
    parts = ['agent_id = "line-1"\ndata_dir = "data"\n']
    for name in ("press-1", "filler"):
        extra = "".join(f'x{i} = {{ type = "bool" }}\n' for i in range(declared))
        rules = RULES.replace('running = { type = "bool" }\n',
                              'running = { type = "bool" }\n' + extra, 1)
        (tmp_path / "rules" / f"{name}.toml").write_text(rules)
        sim = "".join(f'x{i} = {{ wave = "constant", value = true }}\n'
                      for i in range(delivered))
        parts.append(f'[machines.{name}]\nrules = ["rules/{name}.toml"]\n'
                     f'[machines.{name}.sources.{name}-sim]\ntype = "sim"\n'
                     f'[machines.{name}.sources.{name}-sim.inputs]\n'
                     f'running = {{ wave = "constant", value = true }}\n{sim}'
                     f'[machines.{name}.tower.lamps]\n{LAMPS}')
    path = tmp_path / "agent.toml"
    path.write_text("".join(parts))
    return path


def test_the_machines_together_may_not_declare_more_inputs_than_one_scan_affords(
        tmp_path: Path) -> None:
    """Each rule set is bounded (MAX_INPUTS), and one scan reads every machine's: so the
    machines together are bounded too, at load (at [machines]) and at a reload."""
    from linelight.agent.reload import Reloader
    from linelight.rules.loader import MAX_INPUTS

    half = MAX_INPUTS // 2
    path = _crowded(tmp_path / "load", half, half)
    found = problems_of(path)
    said = (f"the machines' rules declare {2 * (half + 1)} inputs together, more than "
            f"{MAX_INPUTS}: one scan reads every machine's")
    assert any(p.startswith(f"{path}:") and said in p for p in found), found

    path = _crowded(tmp_path / "reload", half - 10, half + 10)
    config = load_config(path)
    clocks, table, sink = Clocks(), InputTable(), Sink()
    lanes = [MachineLane(Evaluator(m.ruleset), _tower(clocks), name=m.name,
                         inputs=dict(m.inputs), label=m.name) for m in config.machines]
    scan = ScanLoop(inputs=table, sink=sink, clock=clocks.watch(), period=0.02,  # type: ignore[arg-type]
                    machines=lanes, monotonic=lambda: clocks.mono)
    reloader = Reloader(config, scan, sink, clocks.watch(), Evaluator)  # type: ignore[arg-type]
    before = scan.machine("filler").evaluator
    grown = (tmp_path / "reload" / "rules" / "filler.toml").read_text().replace(
        'running = { type = "bool" }\n', 'running = { type = "bool" }\n' + "".join(
            f'x{i} = {{ type = "bool" }}\n' for i in range(half - 10, half + 10)), 1)
    (tmp_path / "reload" / "rules" / "filler.toml").write_text(grown)
    result = anyio.run(reloader.reload, "test")
    assert not result.ok and scan.machine("filler").evaluator is before
    [error] = result.errors
    assert error.startswith(f"{path}:") and "machine 'filler': " in error, error
    assert f"declare {2 * half + 2} inputs together, more than {MAX_INPUTS}" in error, error
