"""What `linelight check` accepts, `run` starts; what check rejects, run refuses with the same
messages; neither shows a traceback (DESIGN.md 7: "What check accepts, run starts").

Hypothesis builds configs and rule files from pieces that each hit one path of the loaders
(valid rules, an empty file, no state, a syntax error, an unknown name, huge integers, a
pattern matching nothing, an empty rules list, sources, towers and output wiring that do or
do not fit).
check runs through the CLI in-process; run is the real Agent started until READY and stopped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from linelight.agent.app import Agent
from linelight.agent.cli import main as cli_main
from linelight.agent.config import load_config
from linelight.rules.errors import ConfigProblems

VALID = """\
[inputs]
running = { type = "bool", stale_after = "2s" }
fault_code = { type = "int", stale_after = "2s" }

[[state]]
name = "fault"
code = 180000
priority = 90
when = "fault_code != 0"
clear_when = "fault_code == 0 and running"
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

[[counter]]
name = "parts"
rising = "running"
"""

RULE_FILES = {
    "valid": VALID,
    "empty": "",
    "no_state": '[inputs]\nrunning = { type = "bool" }\n',
    "syntax": VALID.replace('when = "running"', 'when = "running and"', 1),
    "unknown_name": VALID.replace('when = "running"', 'when = "runing"', 1),
    "huge_code": VALID.replace("code = 10000", "code = 18446744073709551616", 1),
    "huge_priority": VALID.replace("priority = 50", "priority = " + "9" * 400, 1),
    "huge_increment": VALID + "increment = 99999999999999999999999\n",
    "duplicate": VALID + '\n[[state]]\nname = "stopped"\ncode = 1\npriority = 1\nwhen = true\n',
    "not_toml": "[[state\n",
    "extra_signal": ('[[signal]]\nname = "slow"\npriority = 60\nwhen = "not running"\n'
                     'on_delay = "1s"\nshow = { amber = "blink_slow" }\n'),
    "other_lamp": VALID.replace('show = { amber = "on" }', 'show = { white = "on" }', 1),
    "windows": ('[[counter]]\nname = "cycles"\nrising = "running"\n'
                'reset = "rising(fault_code == 7)"\n'
                '[[signal]]\nname = "flaky"\npriority = 70\n'
                'when = "count_of(running, 10m) >= 3 or increase(cycles, 1h) > 100"\n'
                '[[output]]\nname = "may_start"\n'
                'when = "state in (\'stopped\', \'producing\') and on_for(flaky) < 5s"\n'),
    "state_cycle": VALID.replace('when = "running"', 'when = "running and state != \'fault\'"', 1),
    "window_too_wide": VALID.replace('rising = "running"', 'rising = "count_of(running, 2d) > 0"'),
}

SOURCES = {
    "sim": '[sources.machine]\ntype = "sim"\nmodel = "machine"\nperiod = "20ms"\n',
    "none": "",
    "modbus_dead": ('[sources.plc]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = 9\n'
                    '[sources.plc.inputs]\nrunning = { coil = 0 }\n'
                    'fault_code = { holding_register = 0 }\n'),
    "sim_partial": ('[sources.s]\ntype = "sim"\n[sources.s.inputs]\n'
                    'running = { wave = "constant", value = true }\n'),
    "sim_huge": ('[sources.s]\ntype = "sim"\n[sources.s.inputs]\n'
                 'running = { wave = "constant", value = true }\n'
                 'fault_code = { wave = "constant", type = "int", '
                 'value = 99999999999999999999999 }\n'),
}

TOWERS = {
    "virtual": "[tower.lamps]\n" + "".join(f"{lamp} = {{ virtual = true }}\n"
                                           for lamp in ("red", "amber", "green")),
    "none": "",
    "two_lamps": "[tower.lamps]\nred = { virtual = true }\ngreen = { virtual = true }\n",
}

OUTPUTS = {  # the "windows" rule file has the output may_start
    "none": "",
    "virtual": "[outputs.wiring]\nmay_start = { virtual = true }\n",
    "gpio_mock": '[outputs]\npin_factory = "mock"\n[outputs.wiring]\nmay_start = { pin = 21 }\n',
    "misnamed": "[outputs.wiring]\nmay_strat = { virtual = true }\n",
    "dead_coil": '[outputs.wiring]\nmay_start = { coil = 3, source = "plc" }\n',
}

RULES_KEYS = {
    "glob": 'rules = ["rules.d/*.toml"]',
    "string": 'rules = "rules.d/*.toml"',
    "empty_list": "rules = []",
    "extra_nothing": 'rules = ["rules.d/*.toml", "elsewhere/*.toml"]',
    "missing_file": 'rules = ["rules.d/*.toml", "missing.toml"]',
    "absent": "",
}


def write_case(root: Path, rules_key: str, files: list[str], source: str, tower: str,
               outputs: str = "none") -> Path:
    (root / "rules.d").mkdir(parents=True)
    for i, name in enumerate(files):
        (root / "rules.d" / f"{i}-{name}.toml").write_text(RULE_FILES[name])
    config = root / "agent.toml"
    config.write_text(f'agent_id = "fuzz"\ndata_dir = "data"\n{RULES_KEYS[rules_key]}\n'
                      f"[diagnostics]\nenabled = false\n\n{SOURCES[source]}\n{TOWERS[tower]}\n"
                      f"{OUTPUTS[outputs]}")
    return config


def check_verdict(config: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["check", "--config", str(config)])
    return code, out.getvalue() + err.getvalue()


async def run_verdict(config_path: Path) -> tuple[bool, list[str]]:
    """(started, problems): the path `linelight run` takes, up to READY and ten scans on;
    a part that failed and was restarted by the supervisor meanwhile is a problem too."""
    try:
        config = load_config(config_path)
    except ConfigProblems as exc:
        return False, [str(p) for p in exc.problems]
    agent = Agent(config, handle_signals=False, watch_files=False)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(agent.run)
            assert agent.ready and agent.scan is not None
            first = agent.scan.stats.ticks
            while agent.scan.stats.ticks < first + 10:  # noqa: ASYNC110 (ten real scans on)
                await anyio.sleep(0.02)
            failed = {name: part for name, part in agent.supervisor.status().items()
                      if part["restarts"] or part["last_error"]}
            await agent.stop()
    return True, [f"supervised parts failed: {failed}"] if failed else []


@pytest.mark.parametrize(("rules_key", "files", "source", "tower", "outputs"), [
    ("glob", ["valid"], "sim", "virtual", "none"),
    ("string", ["valid", "extra_signal"], "modbus_dead", "virtual", "none"),
    ("glob", ["valid", "windows"], "modbus_dead", "virtual", "dead_coil"),
    ("glob", ["valid", "windows"], "sim", "virtual", "gpio_mock"),
])
def test_the_fuzzed_pieces_include_configs_that_check_accepts_and_run_starts(
        tmp_path: Path, rules_key: str, files: list[str], source: str, tower: str,
        outputs: str) -> None:
    """Without this the agreement test could pass with every case refused by both."""
    config = write_case(tmp_path, rules_key, files, source, tower, outputs)
    code, text = check_verdict(config)
    assert code == 0, text
    assert anyio.run(run_verdict, config, backend="asyncio") == (True, [])


@pytest.mark.slow
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rules_key=st.sampled_from(sorted(RULES_KEYS)),
       files=st.one_of(  # half the cases build on the valid file, so that many start
           st.lists(st.sampled_from(sorted(RULE_FILES)), max_size=1).map(lambda x: ["valid", *x]),
           st.lists(st.sampled_from(sorted(RULE_FILES)), min_size=0, max_size=3)),
       source=st.sampled_from(sorted(SOURCES)), tower=st.sampled_from(sorted(TOWERS)),
       outputs=st.sampled_from(sorted(OUTPUTS)), rules_first=st.booleans())
def test_check_and_run_agree_and_neither_shows_a_traceback(
        rules_key: str, files: list[str], source: str, tower: str, outputs: str,
        rules_first: bool) -> None:
    rules_key = "glob" if rules_first else rules_key  # the usual key, more often
    logging.getLogger("linelight").setLevel(logging.CRITICAL)  # a started agent logs a lot
    with tempfile.TemporaryDirectory() as tmp:
        config = write_case(Path(tmp), rules_key, files, source, tower, outputs)
        code, text = check_verdict(config)
        assert "Traceback" not in text
        assert code in (0, 1), text
        started, problems = anyio.run(run_verdict, config, backend="asyncio")
        event("check ok, run started" if started else "both refused")
        if code == 0:
            assert started, f"check said ok, run refused:\n{problems}"
        else:
            assert not started, f"check refused, run started:\n{text}"
            for problem in problems:  # run gives check's very sentences
                assert problem in text, (problem, text)
