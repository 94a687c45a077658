"""`linelight check`, `linelight rules test` and `linelight schema`: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linelight.agent.cli import main

from .util import BASIC

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"


def test_check_valid_rules_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "r.toml"
    f.write_text(BASIC)
    assert main(["check", "--rules", str(f)]) == 0
    assert capsys.readouterr().out == f"ok: {f}: 2 inputs, 3 states, 0 signals, 0 counters\n"


def test_check_invalid_rules_exits_1_listing_every_problem(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "r.toml"
    f.write_text(BASIC.replace('"running"', '"runing"').replace("priority = 0", "priority = 0\nx = 1"))
    assert main(["check", "--rules", str(f)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"{f}:17:9: unknown input 'runing'; did you mean 'running'?",
        f"{f}:24:1: unknown key 'x' in state[2]",
    ]
    assert out.err == "2 problems in 1 file\n"


def test_check_an_unreadable_rule_file_is_one_located_sentence_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["check", "--rules", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{tmp_path}:1:1: cannot read the rule file: Is a directory"]
    assert out.err == "1 problem in 1 file\n"


def test_check_without_files_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    assert main(["check"]) == 2
    assert "give --rules FILE... or --config FILE" in capsys.readouterr().err


def test_check_config_reports_the_config_problems(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "agent.toml"
    f.write_text("agent_idd = 'x'\n")
    code = main(["check", "--config", str(f)])
    out = capsys.readouterr()
    assert code == 1 and f"{f}:1:1: unknown key 'agent_idd'" in out.out


def test_rules_test_passes_the_examples(capsys: pytest.CaptureFixture[str]):
    files = [str(p) for p in sorted((EXAMPLES / "tests").glob("*.toml"))]
    assert main(["rules", "test", *files]) == 0
    assert " 0 failed" in capsys.readouterr().out


def test_rules_test_fails_with_expected_and_actual(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    (tmp_path / "r.toml").write_text(BASIC)
    t = tmp_path / "r_test.toml"
    t.write_text('rules = ["r.toml"]\n[[test]]\nname = "x"\n[test.inputs]\nrunning = "1x5"\n'
                 'fault_code = "0x5"\n[[test.expect]]\nat = "0.4s"\nstate = "stopped"\n')
    assert main(["rules", "test", str(t)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"FAIL {t}: x"
    assert out[1] == (f"  {t}:7:3: test 'x' at 0.4s: state: expected 'stopped', "
                      "got 'producing'")
    assert out[2].startswith("1 test: 0 passed, 1 failed")


def test_rules_test_with_a_broken_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    t = tmp_path / "t.toml"
    t.write_text('rules = ["nope.toml"]\n[[test]]\nname = "x"\n[[test.expect]]\nat = "0s"\n')
    assert main(["rules", "test", str(t)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{tmp_path / 'nope.toml'}:1:1: cannot read the rule file: No such file or directory")


def test_rules_test_an_unreadable_test_file_is_one_located_sentence_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "gone_test.toml"
    assert main(["rules", "test", str(missing)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{missing}:1:1: cannot read the test file: No such file or directory"
    assert out[1].startswith("0 tests: 0 passed, 0 failed, 1 file with problems (")
    assert len(out) == 2


def test_rules_without_an_action_is_a_usage_error():
    assert main(["rules"]) == 2


def test_schema_prints_the_rules_schema(capsys: pytest.CaptureFixture[str]):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "linelight rules"
    assert "state" in schema["properties"]
