"""The example rule sets load and pass their own rule tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from linelight.agent.rulefiles import load_rule_files, load_test_file
from linelight.rules.testing import run_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rules"
TEST_FILES = sorted((EXAMPLES / "tests").glob("*_test.toml"))


def test_there_are_four_example_rule_sets_each_with_tests():
    sets = sorted(p.stem for p in EXAMPLES.glob("*.toml"))
    assert sets == ["cnc", "filling", "packaging", "press"]
    assert [p.name for p in TEST_FILES] == [f"{s}_test.toml" for s in sets]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_rules_load(path: Path):
    assert load_rule_files([path]).states


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_example_rule_tests_pass(path: Path):
    results = run_file(load_test_file(path))
    failures = [str(f) for r in results for f in r.failures]
    assert results and failures == []
