"""docs/operations.md's `/status` table lists every field a running agent returns, with its type.

The agent runs as a subprocess (sim machine, virtual tower, a real mosquitto); its /status
document is flattened to dotted paths, names of lamps, inputs, counters and components
becoming `<name>`, and compared with the table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mosquitto import Mosquitto
from tests.integration.agent_proc import (
    EXAMPLE_RULES,
    ROOT,
    VIRTUAL_TOWER,
    AgentProcess,
    write_config,
)

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "operations.md"
NAMED = {"lamps", "counters", "inputs", "components", "tower.lamps", "sources",  # keyed by names
         "machines", "machines.<name>.lamps", "machines.<name>.counters",
         "machines.<name>.inputs", "outputs", "output_lines.outputs",
         "machines.<name>.outputs"}
# the example rules and one [[output]], wired virtually: /status shows the outputs' fields too
OUTPUT = '\n[[output]]\nname = "may_start"\nwhen = "estop_ok and not running"\n'
WIRING = "\n[outputs.wiring]\nmay_start = { virtual = true }\n"
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "list": (list,), "map": (dict,), "null": (type(None),), "any": (object,)}


def documented() -> dict[str, set[str]]:
    text = DOC.read_text()
    part = text[text.index("### The `/status` document"):]
    part = part[:part.index("\n\n", part.index("| field |"))]
    return {path: {t.strip() for t in kind.split("\\|")}
            for path, kind in re.findall(r"^\| `([^`]+)` \| ([^|]+(?:\\\|[^|]+)*) \|",
                                         part, re.MULTILINE)}


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if path in NAMED and isinstance(value, dict):
            for item in value.values():
                if isinstance(item, dict):
                    out.update(flatten(item, f"{path}.<name>."))
                else:
                    out[f"{path}.<name>"] = item
        elif isinstance(value, dict) and path not in ("rules.last_reload",
                                                      "machines.<name>.tower",
                                                      "machines.<name>.output_lines"):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def test_every_status_field_is_documented_with_its_type(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path / "agent", mqtt_port=mosquitto.port,
                          rules=EXAMPLE_RULES.read_text() + OUTPUT, tower=VIRTUAL_TOWER + WIRING)
    with AgentProcess(config) as agent:
        agent.start()
        status = agent.wait_status(lambda s: s["broker"]["connected"]
                                   and s["state"]["name"] != "unknown", what="connected")
        assert agent.stop() == 0
    table = documented()
    # `prefix.*` in the table: fields that depend on the part (a source's type), any type.
    wild = [path[:-1] for path in table if path.endswith(".*")]
    fields = {path: value for path, value in flatten(status).items()
              if path in table or not any(path.startswith(w) for w in wild)}
    table = {path: kinds for path, kinds in table.items() if not path.endswith(".*")}
    assert sorted(set(fields) - set(table)) == [], "fields /status returns, missing in the doc"
    assert sorted(set(table) - set(fields)) == [], "documented fields /status does not return"
    wrong = {path: (type(value).__name__, table[path]) for path, value in fields.items()
             if not any(isinstance(value, TYPES[t]) and not (t in ("integer", "number")
                                                            and isinstance(value, bool))
                        for t in table[path])}
    assert wrong == {}
