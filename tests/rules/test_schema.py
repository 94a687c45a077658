"""The JSON Schema matches what the loader accepts, and the committed copies are current."""

from __future__ import annotations

import json
from pathlib import Path

from linelight.rules import loader, testing
from linelight.rules.schema import rule_tests_schema, rules_schema, rules_schema_part

ROOT = Path(__file__).resolve().parents[2]


def test_schema_keys_are_the_loader_keys():
    part = rules_schema_part()
    props = part["properties"]
    assert tuple(props) == loader.TOP_KEYS
    assert set(props["inputs"]["additionalProperties"]["properties"]) == set(loader.INPUT_KEYS)
    assert set(props["state"]["items"]["properties"]) == set(loader.STATE_KEYS)
    assert set(props["signal"]["items"]["properties"]) == set(loader.SIGNAL_KEYS)
    assert set(props["counter"]["items"]["properties"]) == set(loader.COUNTER_KEYS)
    assert set(props["unknown"]["properties"]) == set(loader.UNKNOWN_KEYS)
    test_props = rule_tests_schema()["properties"]
    assert tuple(test_props) == testing.FILE_KEYS
    assert tuple(test_props["test"]["items"]["properties"]) == testing.TEST_KEYS


def test_the_rules_part_is_embeddable_without_refs():
    assert "$ref" not in json.dumps(rules_schema_part())


def test_committed_schema_files_are_up_to_date():
    committed = json.loads((ROOT / "docs/schema/rules.schema.json").read_text())
    assert committed == rules_schema(), "run: linelight schema > docs/schema/rules.schema.json"
    committed = json.loads((ROOT / "docs/schema/rule-tests.schema.json").read_text())
    assert committed == rule_tests_schema(), \
        "run: linelight schema rule-tests > docs/schema/rule-tests.schema.json"
