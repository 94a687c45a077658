"""Declared config keys: one table per section gives its reader the types and defaults and the
JSON Schema its properties, so the two cannot drift.

A `Key` names one key (its kind, default, bounds and a sentence for people); a `Keys` is the
table of one section. `Keys.read(table, name)` reads a key the way `Table` does and checks
the declared bounds; `Keys.bind(table)` makes reading an undeclared key a programming error,
so a key the reader takes is always one the schema lists. `Keys.schema()` is the section's
JSON Schema (draft-07, self-contained), with the default in each description.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from linelight.rules.fields import (
    DURATION_PATTERN,
    DURATION_UNITS,
    REQUIRED,
    SIZE_PATTERN,
    SIZE_UNITS,
    Table,
)

# The kinds of value a key can hold; each maps to one `Table` reader and one schema shape.
KINDS = ("string", "integer", "number", "boolean", "choice", "duration", "size", "strings",
         "table", "entries", "value")


@dataclass(frozen=True, slots=True)
class Key:
    """One config key. `default` REQUIRED means the key must be written."""

    name: str
    kind: str
    text: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] = ()  # choice: the words accepted
    minimum: float | None = None  # integer, number, size, duration (seconds): inclusive
    maximum: float | None = None
    above: float | None = None  # number: exclusive bounds
    below: float | None = None
    allow_zero: bool = True  # duration: is "0s" (or the number 0) a valid value?
    pattern: str | None = None  # string: the whole value must match (JSON Schema dialect)
    pattern_text: str = ""  # string: what the pattern means, for the problem message
    keys: Keys | None = None  # table: the sub-table's keys; entries: each entry's keys
    values: Key | None = None  # entries: each entry's value, when entries are not tables
    default_text: str = ""  # for a default computed from other keys, e.g. "3 x poll"
    why: str = ""  # ends the message of a value out of bounds: why the bound is there
    schema: Mapping[str, Any] | None = None  # value: the shape, when no kind fits

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"key '{self.name}': unknown kind '{self.kind}'"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    # -- reading ----------------------------------------------------------------------------
    def read(self, t: Table) -> Any:
        """The value in `t` (or the default); a problem on `t` when it is wrong."""
        name, kind = self.name, self.kind
        if kind == "table":
            sub = t.table(name, required=self.required)
            if sub is not None and self.keys is not None:
                self.keys.bind(sub)
            return sub
        if kind == "entries":
            return t.table(name, required=self.required)
        if kind == "value":
            return t.raw(name, None if self.required else self.default)
        default = self.default
        if kind == "string":
            value = t.string(name, default)
        elif kind == "integer":
            value = t.integer(name, default)
        elif kind == "number":
            value = t.number(name, default)
        elif kind == "boolean":
            value = t.boolean(name, default)
        elif kind == "choice":
            value = t.choice(name, self.choices, default)
        elif kind == "duration":
            value = t.duration(name, default, allow_zero=self.allow_zero)
        elif kind == "size":
            value = t.size(name, default)
        else:
            return self._strings(t)
        if value is None or value is default or not t.has(name):
            return value
        return self._checked(t, value)

    def _strings(self, t: Table) -> Any:
        value = t.raw(self.name, None if self.required else self.default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            t.problem(self.name, f"'{self.name}' must be a string or a list of strings, "
                                 f"e.g. {self._example()}")
            return None if self.required else self.default
        return list(value)

    def _example(self) -> str:
        if isinstance(self.default, list | tuple) and self.default:
            return "[" + ", ".join(f'"{v}"' for v in self.default) + "]"
        return '["..."]'

    def _checked(self, t: Table, value: Any) -> Any:
        name = self.name
        fallback = None if self.required else self.default
        if isinstance(value, str) and self.pattern is not None and not re.fullmatch(
                self.pattern, value):
            t.problem(name, f"'{name}' must be {self.pattern_text or 'like ' + self.pattern}, "
                            f"not '{value}'")
            return fallback
        if isinstance(value, float) and not math.isfinite(value):  # TOML's nan and inf
            t.problem(name, f"'{name}' must be a finite number, not {value}")
            return fallback
        if isinstance(value, int | float) and not isinstance(value, bool):
            too_low = ((self.minimum is not None and value < self.minimum)
                       or (self.above is not None and value <= self.above))
            too_high = ((self.maximum is not None and value > self.maximum)
                        or (self.below is not None and value >= self.below))
            if too_low or too_high:
                why = f" ({self.why})" if self.why else ""
                t.problem(name, f"'{name}' must be {self._range()}, not {self._show(value)}{why}")
                return fallback
        return value

    def _range(self) -> str:
        parts: list[str] = []
        if self.minimum is not None:
            parts.append(f"at least {self._show(self.minimum)}")
        if self.above is not None:
            parts.append(f"above {self._show(self.above)}")
        if self.maximum is not None:
            parts.append(f"at most {self._show(self.maximum)}")
        if self.below is not None:
            parts.append(f"below {self._show(self.below)}")
        if len(parts) == 2 and self.minimum is not None and self.maximum is not None:
            return f"between {self._show(self.minimum)} and {self._show(self.maximum)}"
        return " and ".join(parts)

    def _show(self, value: float) -> str:
        if self.kind == "duration":
            return format_duration(value)
        if self.kind == "size":
            return format_size(int(value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    # -- schema -----------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.describe()}
        kind = self.kind
        if kind == "value":
            out.update(self.schema or {})
        elif kind == "table":
            out.update(self.keys.schema() if self.keys is not None else {"type": "object"})
            out["description"] = self.describe()
        elif kind == "entries":
            each = (self.keys.schema() if self.keys is not None
                    else self.values.json_schema() if self.values is not None else {})
            out.update({"type": "object", "additionalProperties": each})
        elif kind == "strings":
            item: dict[str, Any] = {"type": "string"}
            if self.pattern is not None:
                item["pattern"] = f"^({self.pattern})$"
            if self.choices:
                item["enum"] = list(self.choices)
            out["anyOf"] = [item, {"type": "array", "items": item}]
        elif kind == "choice":
            out["enum"] = list(self.choices)
        elif kind == "duration":
            text: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
            if self.allow_zero:
                out["anyOf"] = [text, {"type": "integer", "enum": [0]}]
            else:
                out.update(text)
        elif kind == "size":
            number: dict[str, Any] = {"type": "integer", "minimum": int(self.minimum or 0)}
            out["anyOf"] = [{"type": "string", "pattern": SIZE_PATTERN}, number]
        else:
            out["type"] = {"string": "string", "integer": "integer", "number": "number",
                           "boolean": "boolean"}[kind]
            if self.pattern is not None:
                out["pattern"] = f"^({self.pattern})$"
            for word, bound in (("minimum", self.minimum), ("maximum", self.maximum),
                                ("exclusiveMinimum", self.above),
                                ("exclusiveMaximum", self.below)):
                if bound is not None:
                    out[word] = bound
        return out

    def describe(self) -> str:
        """The key's sentence for editors, with its default and bounds."""
        notes: list[str] = []
        if self.default_text:
            notes.append(f"default {self.default_text}")
        elif not self.required and self.default is not None and self.kind not in (
                "table", "entries"):
            notes.append(f"default {self._format(self.default)}")
        if self.kind == "duration":
            notes.append(f"units {' '.join(DURATION_UNITS)}")
        if self.kind in ("duration", "size") and (self.minimum is not None
                                                   or self.maximum is not None):
            # JSON Schema cannot bound a duration text: say it in words
            notes.append(self._range())
        return f"{self.text} ({'; '.join(notes)})" if notes else self.text

    def _format(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.kind == "duration":
            return format_duration(float(value))
        if self.kind == "size":
            return format_size(int(value))
        if isinstance(value, list | tuple):
            return "[" + ", ".join(f'"{v}"' for v in value) + "]"
        return f'"{value}"' if isinstance(value, str) else f"{value:g}" if isinstance(
            value, float) else str(value)


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one config section, in the order a person reads them."""

    text: str
    keys: tuple[Key, ...]
    extra_schema: Mapping[str, Any] = field(default_factory=dict)  # e.g. oneOf constraints

    def __post_init__(self) -> None:
        names = [k.name for k in self.keys]
        assert len(names) == len(set(names)), f"{self.text}: a key is declared twice"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)

    def __getitem__(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(f"{self.text}: no key '{name}' is declared")

    def bind(self, t: Table) -> Table:
        """Let `t` read only the keys declared here (a reader bug otherwise)."""
        t.declared = frozenset(self.names)
        return t

    def read(self, t: Table, name: str) -> Any:
        return self[name].read(t)

    def plus(self, *keys: Key, text: str | None = None) -> Keys:
        """These keys and more (a Modbus TCP source: the common Modbus keys plus host, port)."""
        return Keys(self.text if text is None else text, (*self.keys, *keys), self.extra_schema)

    def with_key(self, key: Key) -> Keys:
        """The same keys with one replaced by a variant (e.g. a `type` fixed to one value)."""
        return Keys(self.text, tuple(key if k.name == key.name else k for k in self.keys),
                    self.extra_schema)

    def schema(self, *, text: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "description": self.text if text is None
                               else text, "additionalProperties": False,
                               "properties": {k.name: k.json_schema() for k in self.keys}}
        required = [k.name for k in self.keys if k.required and k.kind != "table"]
        if required:
            out["required"] = required
        out.update(self.extra_schema)
        return out


def const(key: Key, value: str) -> Key:
    """`key` narrowed to one value, for the member of a `oneOf` (`type = "sim"`)."""
    return replace(key, kind="value", schema={"const": value}, default=REQUIRED)


def format_duration(seconds: float) -> str:
    """0.02 -> "20ms", 90.0 -> "90s", 604800.0 -> "7d": the largest unit that divides evenly."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3),
                       ("us", 1e-6)):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def format_size(n: int) -> str:
    """67108864 -> "64MiB", 1000 -> "1kB", 100 -> "100 bytes"."""
    for unit in ("GiB", "MiB", "KiB", "GB", "MB", "kB"):
        size = SIZE_UNITS[unit]
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"
