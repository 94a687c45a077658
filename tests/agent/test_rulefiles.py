"""Reading rule and rule-test files at the edge: an unreadable file is one located sentence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from linelight.agent.rulefiles import load_rule_files, load_test_file
from linelight.rules.errors import ConfigProblems
from linelight.rules.testing import run_file
from tests.rules.util import BASIC

CASE = """
[[test]]
name = "runs"
[test.inputs]
running = "1x5"
fault_code = "0x5"
[[test.expect]]
at = "0.4s"
state = "producing"
"""


def _problems(call: object) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        call()  # type: ignore[operator]
    return [str(p) for p in info.value.problems]


def test_rule_files_are_read_and_named_by_their_paths(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(BASIC)
    assert load_rule_files([f]).files == (str(f),)


def test_an_unreadable_rule_file_is_listed_with_the_problems_of_the_others(tmp_path: Path
                                                                           ) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASIC + "oops = 1\n")
    missing = tmp_path / "missing.toml"
    assert _problems(lambda: load_rule_files([missing, bad])) == [
        f"{bad}:{BASIC.count(chr(10)) + 1}:1: unknown key 'oops' in state[2]",
        f"{missing}:1:1: cannot read the rule file: No such file or directory",
    ]


def test_only_unreadable_rule_files_give_only_their_own_sentence(tmp_path: Path) -> None:
    # Not also "no rule files were given": the user did give one.
    assert _problems(lambda: load_rule_files([tmp_path])) == [
        f"{tmp_path}:1:1: cannot read the rule file: Is a directory"]


def test_a_rule_file_that_is_not_utf8_is_one_located_sentence(tmp_path: Path) -> None:
    f = tmp_path / "latin1.toml"
    f.write_bytes(BASIC.encode() + "# Größe\n".encode("latin-1"))
    assert _problems(lambda: load_rule_files([f])) == [
        f"{f}:1:1: the rule file is not UTF-8 text (invalid start byte at byte "
        f"{len(BASIC.encode()) + 4})"]


def test_a_test_file_reads_its_rules_relative_to_its_own_folder(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.toml").write_text(BASIC)
    (tmp_path / "tests").mkdir()
    t = tmp_path / "tests" / "r_test.toml"
    t.write_text('rules = ["../rules/r.toml"]\n' + CASE)
    test_file = load_test_file(t)
    assert test_file.path == str(t)
    assert [r.passed for r in run_file(test_file)] == [True]


def test_a_missing_rule_file_named_by_a_test_is_reported_at_its_real_path(tmp_path: Path
                                                                          ) -> None:
    t = tmp_path / "t_test.toml"
    t.write_text('rules = ["nope.toml"]\n' + CASE)
    assert _problems(lambda: load_test_file(t)) == [
        f"{tmp_path / 'nope.toml'}:1:1: cannot read the rule file: No such file or directory"]


def test_an_unreadable_test_file_is_one_located_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "gone_test.toml"
    assert _problems(lambda: load_test_file(missing)) == [
        f"{missing}:1:1: cannot read the test file: No such file or directory"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the CLI as an unprivileged user")
def test_check_as_a_user_who_may_not_read_the_rules_says_permission_denied(tmp_path: Path
                                                                           ) -> None:
    f = tmp_path / "r.toml"
    f.write_text(BASIC)
    f.chmod(0o600)
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-m", "linelight.agent", "check", "--rules", str(f)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, f"{f}:1:1: cannot read the rule file: Permission denied\n", "1 problem in 1 file\n")


@pytest.mark.parametrize("kind", ["device", "fifo", "too big"])
def test_a_rule_file_that_is_not_a_small_regular_file_is_refused(tmp_path: Path,
                                                                 kind: str) -> None:
    if kind == "device":
        path = Path("/dev/zero")  # read as text, it would grow without end
        reason = "it is a character device, not a regular file"
    elif kind == "fifo":
        path = tmp_path / "pipe.toml"
        os.mkfifo(path)  # opening it for reading must not wait for a writer
        reason = "it is a pipe, not a regular file"
    else:
        path = tmp_path / "huge.toml"
        path.write_text("# padding\n" * 120_000)
        reason = "it has 1200000 bytes, over the limit of 1048576 bytes"
    assert _problems(lambda: load_rule_files([path])) == [
        f"{path}:1:1: cannot read the rule file: {reason}"]
