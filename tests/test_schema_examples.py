"""Every shipped example file validates against its JSON Schema, and a wrong file does not.

The schemas are what editors (taplo / Even Better TOML) check files with, so a valid example
the schema rejects would show red squiggles on a correct file.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from linelight.agent.schema import config_schema
from linelight.rules.schema import rule_tests_schema, rules_schema

ROOT = Path(__file__).resolve().parents[1]

RULE_FILES = sorted([*ROOT.glob("examples/rules/*.toml"), *ROOT.glob("examples/rules.d/*.toml"),
                     *ROOT.glob("packaging/etc/rules.d/*.toml")])
RULE_TEST_FILES = sorted(ROOT.glob("examples/rules/tests/*.toml"))
CONFIG_FILES = [ROOT / "examples/agent.toml", ROOT / "examples/line.toml",
                ROOT / "examples/filling-line.toml", ROOT / "packaging/etc/agent.toml"]

CASES = ([(p, rules_schema) for p in RULE_FILES] + [(p, rule_tests_schema) for p in RULE_TEST_FILES]
         + [(p, config_schema) for p in CONFIG_FILES])


def _errors(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in cls(schema).iter_errors(doc)]


def test_every_kind_of_example_is_found():
    assert len(RULE_FILES) >= 5 and len(RULE_TEST_FILES) >= 3 and all(
        p.exists() for p in CONFIG_FILES)


@pytest.mark.parametrize(("path", "make"), CASES, ids=[str(p.relative_to(ROOT)) for p, _ in CASES])
def test_the_example_validates_against_its_schema(path: Path,
                                                  make: Callable[[], dict[str, Any]]) -> None:
    doc = tomllib.loads(path.read_text())
    assert _errors(make(), doc) == []


@pytest.mark.parametrize("path", [p for p, _ in CASES if p.read_text().startswith("#:schema ")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_schema_an_editor_uses_accepts_the_example(path: Path) -> None:
    """The `#:schema` path in the file's first line is what taplo validates it against."""
    target = (path.parent / path.read_text().split("\n", 1)[0].removeprefix("#:schema ")).resolve()
    schema = json.loads(target.read_text())
    assert _errors(schema, tomllib.loads(path.read_text())) == []


def test_a_wrong_copy_of_an_example_is_rejected() -> None:
    text = (ROOT / "examples/rules/press.toml").read_text()
    wrong = text.replace('off_delay = "3s"', 'off_delay = "3 seconds"', 1).replace(
        'show = { amber = "blink_fast" }', 'show = { amber = "flashing" }', 1)
    assert wrong.count("3 seconds") == 1 and wrong.count('"flashing"') == 1
    errors = _errors(rules_schema(), tomllib.loads(wrong))
    assert [e.split(":")[0] for e in errors] == ["state/0/off_delay", "state/1/show/amber"], errors


@pytest.mark.parametrize(("text", "make", "where"), [
    ('[[state]]\nname = "x"\ncode = "ten"\npriority = 1\nwhen = true\n', rules_schema, "state/0/code"),
    ('[inputs]\nrunning = { type = "boolean" }\n', rules_schema, "inputs/running/type"),
    ('rules = ["r.toml"]\n[[test]]\nname = "t"\nbogus = 1\n', rule_tests_schema, "test/0"),
    ('agent_idd = "x"\n', config_schema, "(top)"),
], ids=["wrong type", "unknown enum value", "unknown key in a test", "unknown config key"])
def test_a_wrong_file_is_rejected(text: str, make: Callable[[], dict[str, Any]],
                                  where: str) -> None:
    errors = _errors(make(), tomllib.loads(text))
    assert any(e.startswith(where + ":") for e in errors), errors
