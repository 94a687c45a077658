"""JSON Schema of the `[sources.NAME]` and `[tower]` tables, for taplo / Even Better TOML.

Built from the key tables the readers in `hw.config` read with (`SOURCE_KEYS`, `TOWER_KEYS`),
so a key, its default and its bounds are declared once. Both parts are self-contained (no
`$ref`) so the agent-config schema can embed them as the `sources` and `tower` properties.
"""

from __future__ import annotations

from typing import Any

from linelight.hw.config import SOURCE_KEYS, SOURCE_TYPE, TOWER_KEYS
from linelight.rules.keys import const


def sources_schema_part() -> dict[str, Any]:
    """The schema of the `sources` table: source name -> one source, told apart by `type`."""
    kinds = [keys.with_key(const(SOURCE_TYPE, kind)).schema()
             for kind, keys in SOURCE_KEYS.items()]
    return {"type": "object", "description": "input sources, by name",
            "additionalProperties": {"oneOf": kinds}}


def tower_schema_part() -> dict[str, Any]:
    return TOWER_KEYS.schema()
