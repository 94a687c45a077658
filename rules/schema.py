"""JSON Schema of rule files (and rule test files), for taplo / Even Better TOML.

`rules_schema_part()` is self-contained (no `$ref`), so the agent-config schema can embed it.
The key lists come from `rules.loader`, and a test checks both stay in step.
"""

from __future__ import annotations

from typing import Any

from linelight.rules.compiler import FUNCTIONS
from linelight.rules.fields import DURATION_PATTERN, DURATION_TEXT
from linelight.rules.loader import (
    COUNTER_KEYS,
    INPUT_KEYS,
    MAX_CODE,
    MAX_INCREMENT,
    MAX_PRIORITY,
    OUTPUT_KEYS,
    SIGNAL_KEYS,
    STATE_KEYS,
    TOP_KEYS,
    TOWER_KEYS,
    UNKNOWN_KEYS,
)
from linelight.rules.model import INPUT_TYPES
from linelight.rules.testing import (
    EXPECT_KEYS,
    FILE_KEYS,
    RELOAD_KEYS,
    RESTART_KEYS,
    TEST_KEYS,
)
from linelight.rules.values import LAMPS, Pattern

DRAFT = "http://json-schema.org/draft-07/schema#"
DURATION = DURATION_PATTERN
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PATTERNS = [p.value for p in Pattern]
LAMP_PATTERN = (rf"^({'|'.join(_PATTERNS)})$|"
                rf"^(on|blink_slow|blink_fast):{DURATION_TEXT}$")
_FUNCS = ", ".join(f.usage for f in FUNCTIONS.values())
EXPRESSION_HELP = ("A condition over inputs, [define] names, signals, counters and the machine "
                   "state of the previous scan (state, state_code, state_for): and, or, not, "
                   f"== != < <= > >=, + - * / %, 'x in (1, 2)', numbers, 500ms, 'text', {_FUNCS}.")


def _duration(text: str) -> dict[str, Any]:
    return {"description": text, "anyOf": [{"type": "string", "pattern": DURATION},
                                           {"type": "integer", "enum": [0]}]}


def _expression(text: str) -> dict[str, Any]:
    return {"description": f"{text} {EXPRESSION_HELP}", "type": ["string", "boolean"]}


def _show(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "type": "object",
        "additionalProperties": False,
        "properties": {lamp: {"type": "string", "pattern": LAMP_PATTERN,
                              "description": f"pattern of the {lamp} lamp: "
                                             f"{', '.join(_PATTERNS)}, or timed like 'on:5s'"}
                       for lamp in LAMPS},
    }


def _object(properties: dict[str, Any], keys: tuple[str, ...], required: list[str],
            description: str) -> dict[str, Any]:
    assert set(properties) == set(keys), (sorted(properties), sorted(keys))
    return {"type": "object", "description": description, "additionalProperties": False,
            "required": required, "properties": properties}


def _rule(kind: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": {"type": "string", "pattern": NAME, "description": f"the {kind}'s name"},
        "priority": {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY,
                     "description": "higher wins; " + (
            "each state needs its own" if kind == "state" else "decides lamps shared with states")},
        "when": _expression(f"the {kind} is active while this is true."),
        "clear_when": _expression("hysteresis: once active, the rule stays active until this "
                                  "is true (instead of until 'when' is false)."),
        "hold_on_stale": {"type": "boolean", "default": False,
                          "description": "with clear_when: stay latched while an input 'when' "
                                         "reads is stale or bad (default false: unknown)"},
        "on_delay": _duration("'when' must hold this long before the rule turns on"),
        "off_delay": _duration("the rule stays on this long after its condition ends"),
        "show": _show("the lamps it shows"),
        "description": {"type": "string", "description": "free text for people"},
    }
    keys = STATE_KEYS if kind == "state" else SIGNAL_KEYS
    required = ["name", "priority", "when"]
    if kind == "state":
        props["code"] = {"type": "integer", "minimum": 0, "maximum": MAX_CODE,
                         "description": "numeric state code, e.g. UMH 10000 producing"}
        required.append("code")
    return _object(props, keys, required, f"one [[{kind}]]")


def rules_schema_part() -> dict[str, Any]:
    """The schema of one rule file, without `$schema`: embeddable in another schema."""
    input_props = {
        "type": {"enum": list(INPUT_TYPES), "description": "value type"},
        "scale": {"type": "number", "description": "the value is multiplied by this"},
        "debounce": _duration("a new value must stay this long before it counts"),
        "stale_after": _duration("a sample older than this is stale (unknown)"),
        "on_stale": {"description": "what a stale, bad or missing input reads as: unknown "
                                    "(default, fails safe), false, true, or 'hold:5s'",
                     "anyOf": [{"enum": ["unknown", "false", "true"]}, {"type": "boolean"},
                               {"type": "string", "pattern": rf"^hold:{DURATION_TEXT}$"}]},
        "description": {"type": "string", "description": "free text for people"},
    }
    counter_props = {
        "name": {"type": "string", "pattern": NAME, "description": "the counter's name"},
        "rising": _expression("count each false-to-true edge of this condition."),
        "falling": _expression("count each true-to-false edge of this condition."),
        "increment": {"type": "integer", "minimum": 1, "maximum": MAX_INCREMENT,
                      "description": "added per edge"},
        "reset": _expression("the total becomes 0 in every scan this is true, e.g. "
                             "\"rising(reset_button)\"."),
        "description": {"type": "string", "description": "free text for people"},
    }
    output_props = {
        "name": {"type": "string", "pattern": NAME,
                 "description": "the output's name, as the config's outputs map it"},
        "when": _expression("the output is on while this is true; off while it is false or "
                            "unknown (stale inputs fail safe)."),
        "on_delay": _duration("'when' must hold this long before the output turns on"),
        "off_delay": _duration("the output stays on this long after its condition ends"),
        "description": {"type": "string", "description": "free text for people"},
    }
    top = {
        "inputs": {"type": "object", "description": "the inputs the rules read, by name",
                   "propertyNames": {"pattern": NAME},
                   "additionalProperties": _object(input_props, INPUT_KEYS, ["type"], "an input")},
        "define": {"type": "object", "description": "named expressions other rules can read",
                   "propertyNames": {"pattern": NAME},
                   "additionalProperties": _expression("a named expression.")},
        "state": {"type": "array", "description": "exclusive machine states; exactly one wins",
                  "items": _rule("state")},
        "signal": {"type": "array", "description": "overlays; several can be active at once",
                   "items": _rule("signal")},
        "counter": {"type": "array", "description": "edge counters with cumulative totals",
                    "items": _object(counter_props, COUNTER_KEYS, ["name"], "one [[counter]]")},
        "output": {"type": "array", "description": "digital outputs beyond the tower (a horn, "
                                                   "a 'machine may start' permit)",
                   "items": _object(output_props, OUTPUT_KEYS, ["name", "when"],
                                    "one [[output]]")},
        "tower": _object({"lamps": {"type": "array", "uniqueItems": True, "minItems": 1,
                                    "items": {"enum": list(LAMPS)},
                                    "description": "the lamps this tower has"}},
                         TOWER_KEYS, [], "the stack light's lamps"),
        "unknown": _object({"code": {"type": "integer", "minimum": 0, "maximum": MAX_CODE,
                                     "description": "code of the unknown state (30000)"},
                            "priority": {"type": "integer", "minimum": -MAX_PRIORITY,
                                         "maximum": MAX_PRIORITY, "description":
                                         "lamp priority against signals (default: above all)"},
                            "show": _show("what the tower shows when the state is unknown")},
                           UNKNOWN_KEYS, [], "the state shown when no state can be decided"),
    }
    return _object(top, TOP_KEYS, [], "linelight rule file")


def rules_schema() -> dict[str, Any]:
    """A complete JSON Schema document for rule files."""
    return {"$schema": DRAFT, "title": "linelight rules", **rules_schema_part()}


def rule_tests_schema() -> dict[str, Any]:
    """A complete JSON Schema document for rule test files."""
    counters = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    expect = _object({
        "at": _duration("the scan time of this check, from the start of the test"),
        "state": {"type": "string", "description": "expected state name"},
        "code": {"type": "integer", "description": "expected state code"},
        "lamps": {"type": "object", "additionalProperties": {"enum": _PATTERNS},
                  "description": "expected pattern per lamp (lamps not named are not checked)"},
        "signals": {"type": "array", "items": {"type": "string"},
                    "description": "exactly the signals expected on"},
        "counters": {**counters, "description": "expected counter totals"},
        "outputs": {"type": "object", "additionalProperties": {"type": "boolean"},
                    "description": "expected [[output]] values (outputs not named are not "
                                   "checked)"},
        "events": {"type": "array", "items": {"type": "string"},
                   "description": "exactly the events of that scan, e.g. 'state fault 180000', "
                                  "'alarm microstop true', 'count parts 3'"},
    }, EXPECT_KEYS, ["at"], "one check")
    test = _object({
        "name": {"type": "string"},
        "step": _duration("scan interval of this test"),
        "inputs": {"type": "object", "description": "a series per input: '1x40 0x20 _x20'",
                   "additionalProperties": {"type": "string"}},
        "counters_start": {**counters, "description": "totals restored before the first scan"},
        "restart": {"type": "array", "description": "restarts of the agent: counters, latches "
                                                    "and rolling windows are kept, timers not",
                    "items": _object({
                        "at": _duration("the agent stops before the scan at this time"),
                        "down": _duration("and starts again this much later (default 0s)"),
                    }, RESTART_KEYS, ["at"], "one restart")},
        "reload": {"type": "array", "description": "hot reloads to other rule files",
                   "items": _object({
                       "at": _duration("the reload happens before the scan at this time"),
                       "rules": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                                 "description": "the rule files loaded, relative to this file"},
                   }, RELOAD_KEYS, ["at", "rules"], "one reload")},
        "expect": {"type": "array", "items": expect},
    }, TEST_KEYS, ["name", "expect"], "one [[test]]")
    part = _object({
        "rules": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                  "description": "rule files under test, relative to this file"},
        "step": _duration("scan interval (default 100ms)"),
        "test": {"type": "array", "items": test},
    }, FILE_KEYS, ["rules", "test"], "linelight rule tests")
    return {"$schema": DRAFT, "title": "linelight rule tests", **part}
