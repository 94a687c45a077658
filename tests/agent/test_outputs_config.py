"""`[outputs]`: the [[output]] rules' lines are wired like lamps; a rule output without wiring
and wiring without a rule output are config errors at their file:line:col, for `check`,
`run` and a reload alike."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from linelight.agent.cli import main as cli_main
from linelight.agent.config import check_ruleset_against, load_config
from linelight.agent.rulefiles import load_rule_texts
from linelight.rules.errors import ConfigProblems
from tests.agent.test_config import RULES, SIM, TOWER, problems_of, write

OUTPUT_RULE = """
[[output]]
name = "may_start"
when = "running and fault_code == 0"
"""

NAME_LINE = 'name = "may_start"'

MODBUS = """\
[sources.plc]
type = "modbus_tcp"
host = "127.0.0.1"
port = 9
[sources.plc.inputs]
running = { coil = 0 }
fault_code = { holding_register = 0 }
"""


def check(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["check", "--config", str(path)])
    return code, out.getvalue()


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_outputs_are_wired_like_lamps_with_a_default_source_and_on_exit(tmp_path: Path) -> None:
    path = write(tmp_path, MODBUS + '[tower]\nsource = "plc"\n[tower.lamps]\nred = { coil = 0 }\n'
                 'green = { coil = 1 }\namber = { coil = 2 }\n'
                 + '[outputs]\nsource = "plc"\non_exit = { may_start = "off", horn = "on" }\n'
                   '[outputs.wiring]\nmay_start = { coil = 10 }\nhorn = { pin = 17 }\n',
                 RULES + OUTPUT_RULE + OUTPUT_RULE.replace("may_start", "horn"))
    config = load_config(path)
    assert config.outputs is not None
    may_start, horn = config.outputs.wiring["may_start"], config.outputs.wiring["horn"]
    assert (may_start.kind, may_start.source, may_start.point and may_start.point.address) == (
        "modbus", "plc", 10)
    assert (horn.kind, horn.pin) == ("gpiozero", 17)
    assert config.outputs.on_exit == {"may_start": False, "horn": True}
    assert check(path)[0] == 0


def test_an_output_rule_nobody_wired_is_an_error_at_the_rule(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER, RULES + OUTPUT_RULE)
    rules = tmp_path / "rules.d" / "machine.toml"
    want = (f"{rules}:{line_of(rules, NAME_LINE)}:8: output 'may_start' is not wired: add it "
            "to [outputs.wiring], e.g. may_start = { coil = 10, source = \"plc\" }, or write "
            "may_start = { virtual = true } for an output with no hardware")
    assert problems_of(path) == [want]
    code, text = check(path)
    assert code == 1 and want in text  # check says what run refuses with


def test_wiring_for_an_output_no_rule_drives_is_an_error_at_the_binding(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + "[outputs.wiring]\nmay_start = { virtual = true }\n"
                 "may_strat = { virtual = true }\n", RULES + OUTPUT_RULE)
    want = (f"{path}:{line_of(path, 'may_strat')}:1: [outputs.wiring] wires output "
            "'may_strat', which no [[output]] rule drives; did you mean 'may_start'?")
    assert problems_of(path) == [want]
    code, text = check(path)
    assert code == 1 and want in text


def test_an_output_on_a_source_that_is_not_configured_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + '[outputs.wiring]\nmay_start = { coil = 3, source = '
                 '"plc" }\n', RULES + OUTPUT_RULE)
    [problem] = problems_of(path)
    assert f"(bound at {path}:{line_of(path, 'may_start')}:1)" in problem  # as for lamps
    assert "output 'may_start' names source 'plc'" in problem
    assert "which is not a Modbus source (Modbus sources: none)" in problem


@pytest.mark.parametrize(("wiring", "message"), [
    ("may_start = { coil = 3, pin = 4 }",
     "output 'may_start' needs exactly one of pin (gpiozero), line (gpiochip), coil or "
     "holding_register (Modbus), s7 (an S7 bit), opcua (a Boolean node), virtual "
     "(found pin, coil)"),
    ("may_start = { input_register = 3 }", "unknown key 'input_register'"),
])
def test_a_wrong_binding_is_reported_where_it_is_written(tmp_path: Path, wiring: str,
                                                         message: str) -> None:
    path = write(tmp_path, SIM + TOWER + f"[outputs.wiring]\n{wiring}\n", RULES + OUTPUT_RULE)
    problems = problems_of(path)
    assert any(p.startswith(f"{path}:{line_of(path, 'may_start')}:") and message in p
               for p in problems), problems


def test_on_exit_naming_an_output_that_is_not_wired_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER + '[outputs]\non_exit = { horn = "on" }\n'
                 '[outputs.wiring]\nmay_start = { virtual = true }\n', RULES + OUTPUT_RULE)
    assert problems_of(path) == [f"{path}:{line_of(path, 'on_exit')}:13: on_exit names output "
                                 "'horn', which [outputs.wiring] does not bind"]


def test_a_reload_that_adds_an_unwired_output_is_rejected_with_the_same_sentence(
        tmp_path: Path) -> None:
    path = write(tmp_path, SIM + TOWER)
    config = load_config(path)
    new = load_rule_texts([("new.toml", RULES + OUTPUT_RULE)])
    with pytest.raises(ConfigProblems) as info:
        check_ruleset_against(config, new, config.machines[0])
    assert [str(p) for p in info.value.problems] == [
        f"new.toml:{(RULES + OUTPUT_RULE).splitlines().index(NAME_LINE) + 1}:8: "
        "output "
        "'may_start' is not wired: add it to [outputs.wiring], e.g. may_start = { coil = 10, "
        "source = \"plc\" }, or write may_start = { virtual = true } for an output with no "
        "hardware"]


def test_each_machine_wires_its_own_outputs(tmp_path: Path) -> None:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "a.toml").write_text(RULES + OUTPUT_RULE)
    (tmp_path / "rules.d" / "b.toml").write_text(RULES + OUTPUT_RULE)
    path = tmp_path / "agent.toml"
    path.write_text(SIM + '[machines.a]\nrules = ["rules.d/a.toml"]\n'
                    '[machines.a.outputs.wiring]\nmay_start = { virtual = true }\n'
                    '[machines.b]\nrules = ["rules.d/b.toml"]\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{tmp_path / 'rules.d' / 'b.toml'}:")
    assert "machine 'b': output 'may_start' is not wired" in problem
    path.write_text(path.read_text() + '[machines.b.outputs.wiring]\nmay_start = { pin = 5 }\n')
    config = load_config(path)
    assert [m.outputs and sorted(m.outputs.wiring) for m in config.machines] == [
        ["may_start"], ["may_start"]]


def test_outputs_at_the_top_with_machines_is_a_mistake(tmp_path: Path) -> None:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "a.toml").write_text(RULES)
    path = tmp_path / "agent.toml"
    path.write_text(SIM + '[outputs.wiring]\nmay_start = { virtual = true }\n'
                    '[machines.a]\nrules = ["rules.d/a.toml"]\n')
    problems = problems_of(path)
    assert any("with [machines.*] every machine names its own 'outputs'" in p for p in problems)


def test_the_outputs_example_in_docs_hardware_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "hardware.md").read_text()
    section = doc[doc.index("## `[outputs]`"):]
    example = section[section.index("```toml\n") + 8:section.index("```\n", section.index("```toml"))]
    path = write(tmp_path, SIM + TOWER + example, RULES + "".join(
        OUTPUT_RULE.replace("may_start", name) for name in ("may_start", "horn", "agent_down")))
    config = load_config(path)
    assert config.outputs is not None
    assert sorted(config.outputs.wiring) == ["agent_down", "horn", "may_start"]
    assert config.outputs.wiring["may_start"].source == "io"


def test_the_filling_line_example_wires_its_permit_and_horn_and_checks_clean() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "filling-line.toml"
    assert check(path) == (0, f"ok: {path}: 8 inputs, 5 states, 4 signals, 1 counter, "
                              "2 outputs\n")
    config = load_config(path)
    assert config.outputs is not None
    assert {n: (b.kind, b.source, b.point and b.point.address)
            for n, b in config.outputs.wiring.items()} == {
        "may_start": ("modbus", "io", 6), "horn": ("modbus", "io", 7)}


@pytest.mark.parametrize(("lamps", "wiring", "clash"), [
    ("red = { coil = 5 }", "may_start = { coil = 5 }",
     "output 'may_start' is wired to what lamp 'red' already writes"),
    ("red = { coil = 5, unit = 1 }", "may_start = { coil = 5 }",  # the source's unit is 1
     "output 'may_start' is wired to what lamp 'red' already writes"),
    ("red = { holding_register = 3 }", "may_start = { holding_register = 3, bit = 2 }",
     "output 'may_start' is wired to what lamp 'red' already writes"),
    ("red = { pin = 17 }", "may_start = { pin = 17 }",
     "output 'may_start' is wired to what lamp 'red' already writes"),
    ("red = { virtual = true }", "may_start = { virtual = true }\nhorn = { coil = 2 }\n"
                                 "beacon = { coil = 2 }",
     "output 'beacon' is wired to what output 'horn' already writes"),
])
def test_two_writers_on_one_line_are_an_error(tmp_path: Path, lamps: str, wiring: str,
                                              clash: str) -> None:
    rules = RULES + "".join(OUTPUT_RULE.replace("may_start", name)
                            for name in ("may_start", "horn", "beacon") if name in wiring)
    path = write(tmp_path, MODBUS + f'[tower]\nsource = "plc"\n[tower.lamps]\n{lamps}\n'
                 'green = { virtual = true }\namber = { virtual = true }\n'
                 f'[outputs]\nsource = "plc"\n[outputs.wiring]\n{wiring}\n', rules)
    [problem] = problems_of(path)
    assert clash in problem and "two writers would fight over one output" in problem
    assert problem.startswith(f"{path}:{line_of(path, clash.split(chr(39))[1] + ' =')}:")


@pytest.mark.parametrize(("lamps", "wiring"), [
    ("red = { coil = 5, unit = 2 }", "may_start = { coil = 5 }"),   # another unit
    ("red = { holding_register = 3, bit = 1 }", "may_start = { holding_register = 3, bit = 2 }"),
    ("red = { coil = 5 }", "may_start = { holding_register = 5 }"),  # another area
    ("red = { virtual = true }", "may_start = { virtual = true }"),
])
def test_lines_that_only_look_alike_are_no_clash(tmp_path: Path, lamps: str, wiring: str) -> None:
    path = write(tmp_path, MODBUS + f'[tower]\nsource = "plc"\n[tower.lamps]\n{lamps}\n'
                 'green = { virtual = true }\namber = { virtual = true }\n'
                 f'[outputs]\nsource = "plc"\n[outputs.wiring]\n{wiring}\n', RULES + OUTPUT_RULE)
    assert load_config(path).outputs is not None


def test_machines_sharing_a_device_cannot_share_a_coil(tmp_path: Path) -> None:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "a.toml").write_text(RULES)
    (tmp_path / "rules.d" / "b.toml").write_text(RULES + OUTPUT_RULE)
    path = tmp_path / "agent.toml"
    path.write_text(MODBUS + '[machines.a]\nrules = ["rules.d/a.toml"]\n'
                    '[machines.a.tower.lamps]\nred = { coil = 1, source = "plc" }\n'
                    'green = { virtual = true }\namber = { virtual = true }\n'
                    '[machines.b]\nrules = ["rules.d/b.toml"]\n'
                    '[machines.b.outputs.wiring]\nmay_start = { coil = 1, source = "plc" }\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'may_start')}:1: machine 'b': output "
                              "'may_start' is wired to what machine 'a' lamp 'red' already "
                              "writes (bound at ")
