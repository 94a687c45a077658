"""docs/rule-language.md stays true: its full example loads, every key is documented."""

from __future__ import annotations

import re
from pathlib import Path

from linelight.rules import loader
from linelight.rules.compiler import FUNCTIONS
from linelight.rules.loader import load_rules

DOC = (Path(__file__).resolve().parents[2] / "docs" / "rule-language.md").read_text()


def test_the_first_example_in_the_reference_loads():
    first = re.search(r"```toml\n(.*?)```", DOC, re.S)
    assert first is not None
    rs = load_rules([("doc.toml", first.group(1))])
    assert [s.name for s in rs.states] == ["fault", "producing", "stopped"]


def test_every_key_and_function_is_documented():
    keys = set(loader.TOP_KEYS + loader.INPUT_KEYS + loader.STATE_KEYS + loader.SIGNAL_KEYS +
               loader.COUNTER_KEYS + loader.OUTPUT_KEYS + loader.TOWER_KEYS +
               loader.UNKNOWN_KEYS)
    missing = [k for k in sorted(keys) if f"`{k}`" not in DOC and f"[{k}]" not in DOC
               and f"[[{k}]]" not in DOC]
    assert missing == []
    assert [f for f in FUNCTIONS if f"`{f}(" not in DOC] == []
