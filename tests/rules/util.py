"""Small helpers for rule tests: load rule text, feed good samples, run scans."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from linelight.rules.errors import ConfigProblems
from linelight.rules.evaluator import Evaluator, Step
from linelight.rules.loader import load_rules
from linelight.rules.model import RuleSet
from linelight.rules.values import Quality, Sample

BASIC = """
[inputs]
running    = { type = "bool", stale_after = "1s" }
fault_code = { type = "int" }

[[state]]
name = "fault"
code = 180000
priority = 90
when = "fault_code != 0"
show = { red = "blink_fast" }

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
"""


def load(text: str, file: str = "rules.toml") -> RuleSet:
    return load_rules([(file, text)])


def problems(text: str, file: str = "rules.toml") -> list[str]:
    """The error lines loading `text` gives (the test fails if it loads)."""
    with pytest.raises(ConfigProblems) as info:
        load_rules([(file, text)])
    return [str(p) for p in info.value.problems]


def good(values: Mapping[str, Any], now: float) -> dict[str, Sample]:
    return {k: Sample(v, Quality.GOOD, now) for k, v in values.items()}


def run(ev: Evaluator, values: Mapping[str, Any], start: float, stop: float,
        dt: float = 0.1) -> Step:
    """Scan from `start` to `stop` (inclusive) with the same good values; the last Step."""
    n = round((stop - start) / dt)
    step = None
    for k in range(n + 1):
        now = start + k * dt
        step = ev.step(good(values, now), now)
    assert step is not None
    return step
