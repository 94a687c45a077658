"""Numbers for people, shared by the status page and `linelight status`."""

from __future__ import annotations

from typing import Any


def format_age(seconds: Any) -> str:
    """An age for people: `350 ms`, `12.0 s`, `3.5 min`, `2.0 h`, `3.0 days`; `-` if unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
