"""The JSON Schema of the agent config file (`linelight schema config`), for editors.

Nothing is written here by hand: `agent.config.TOP_KEYS` is the key table the config reader
reads with, and it holds the tables of the other parts (`[journal]`, `[mqtt]`, `[sources.*]`,
`[tower]`). The readers stay the authority for what only code can check (cross-checks,
listen addresses); `linelight check` gives the located, exact verdict.
"""

from __future__ import annotations

from typing import Any

from linelight.agent.config import TOP_KEYS
from linelight.rules.schema import DRAFT


def config_schema() -> dict[str, Any]:
    """A complete JSON Schema document for /etc/linelight/agent.toml."""
    return {"$schema": DRAFT, "title": "linelight agent config", **TOP_KEYS.schema()}
