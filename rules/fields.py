"""Typed, located reading of TOML tables: unknown keys, wrong types and bad units become errors.

Every config reader (rules, sources, tower, agent) walks its file with `Table`, which collects
problems instead of stopping at the first, so `linelight check` lists them all at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.tomldoc import PathKey, TomlDoc

T = TypeVar("T")
MAX_INT = 2**63 - 1  # every integer read from a file fits 64 bits (the wire and journal's size)

# The one duration grammar: config values, rule keys, `hold:5s`, `on:5s`, expression literals
# (`500ms`) and every JSON Schema pattern are built from this table.
DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
                  "d": 86400.0}
DURATION_EXAMPLES = "'20ms', '1.5s', '2m', '1h', '7d'"
_UNIT_CHOICE = "|".join(sorted(DURATION_UNITS, key=len, reverse=True))
# Unanchored, in the regex dialect JSON Schema shares with Python (no named groups, no \Z).
DURATION_TEXT = rf"\s*\d+(\.\d+)?\s*({_UNIT_CHOICE})\s*"
DURATION_PATTERN = f"^{DURATION_TEXT}$"
_DURATION = re.compile(rf"^\s*(\d+(?:\.\d+)?)\s*({_UNIT_CHOICE})\s*$")
SIZE_UNITS: dict[str | None, int] = {
    None: 1, "B": 1, "kB": 1000, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
    "GB": 1000**3, "GiB": 1024**3,
}
_SIZE_CHOICE = "|".join(sorted((u for u in SIZE_UNITS if u), key=len, reverse=True))
SIZE_PATTERN = rf"^\s*\d+(\.\d+)?\s*({_SIZE_CHOICE})?\s*$"
_SIZE = re.compile(rf"^\s*(\d+(?:\.\d+)?)\s*({_SIZE_CHOICE})?\s*$")


def duration_units_text() -> str:
    """`us, ms, s, m, min, h or d`, for messages."""
    units = list(DURATION_UNITS)
    return f"{', '.join(units[:-1])} or {units[-1]}"


class _Missing:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Missing()


def parse_duration(text: str) -> float:
    """`"20ms"` -> 0.02. Raises ValueError with a sentence naming the accepted units."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(
            f"'{text}' is not a duration; write a number and a unit "
            f"({duration_units_text()}), e.g. {DURATION_EXAMPLES}"
        )
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def parse_size(text: str | int) -> int:
    """`"64MiB"` -> 67108864; a bare integer is bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text} is not a size; sizes cannot be negative")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"'{text}' is not a size; write e.g. '64MiB', '1GB' or a number of bytes")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2)])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`"; did you mean 'running'?"` or the empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a table", list: "an array"}


class Problems:
    """Collects located problems; `raise_if_any` turns them into one ConfigProblems."""

    def __init__(self) -> None:
        self.items: list[LocatedError] = []

    def add(self, location: Location, message: str) -> None:
        # echoed user text may hold newlines or control characters: keep one line per problem
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.items.append(LocatedError(location, message))

    def extend(self, errors: Iterable[LocatedError]) -> None:
        self.items.extend(errors)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigProblems(self.items)


class Table:
    """A TOML table read key by key. Call `finish()` to report keys nobody asked for."""

    def __init__(self, doc: TomlDoc, path: PathKey, data: dict[str, Any], problems: Problems):
        self.doc = doc
        self.path = path
        self.data = data
        self.problems = problems
        self._seen: set[str] = set()
        # Set by `rules.keys.Keys.bind`: the keys this table's key table declares. Reading any
        # other key is a reader bug (the schema would not list it), so it fails loudly.
        self.declared: frozenset[str] | None = None

    @classmethod
    def root(cls, doc: TomlDoc, problems: Problems) -> Table:
        return cls(doc, (), doc.data, problems)

    # -- locations -------------------------------------------------------------------------
    def where(self, key: str | None = None) -> Location:
        return self.doc.key_location(self.path if key is None else (*self.path, key))

    def value_where(self, key: str) -> Location:
        return self.doc.value_location((*self.path, key))

    def problem(self, key: str | None, message: str) -> None:
        self.problems.add(self.where(key) if key is None else self.value_where(key), message)

    @property
    def name(self) -> str:
        """Dotted name of this table for messages, e.g. `state[2]` or `sources.plc`."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "top level"

    # -- generic ---------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def _mark(self, key: str) -> None:
        if self.declared is not None and key not in self.declared:
            raise KeyError(f"reader bug: {self.name} reads '{key}', which its key table "
                           "does not declare")
        self._seen.add(key)

    def raw(self, key: str, default: Any = None) -> Any:
        self._mark(key)
        return self.data.get(key, default)

    def take(self, key: str, kind: type[T] | tuple[type, ...], default: Any = REQUIRED) -> Any:
        """The value of `key` if it has type `kind`; else a problem and `default` (or None)."""
        self._mark(key)
        if key not in self.data:
            if default is REQUIRED:
                self.problems.add(self.where(), f"{self.name} needs the key '{key}'")
                return None
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = any(_is(value, k) for k in kinds)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.problem(key, f"'{key}' must be {want}, not {_show(value)}")
            return None if default is REQUIRED else default
        if _is(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
            # TOML integers have no size limit in tomllib; the wire, the journal and the
            # evaluator are 64-bit, and printing a 4,000-digit number is an error of its own
            self.problem(key, f"'{key}' is too large: integers in linelight files go from "
                              f"{-MAX_INT - 1} to {MAX_INT} (64 bits), this one needs "
                              f"{value.bit_length() + 1} bits")
            return None if default is REQUIRED else default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value) if int not in kinds else value
        return value

    def string(self, key: str, default: Any = REQUIRED) -> Any:
        return self.take(key, str, default)

    def integer(self, key: str, default: Any = REQUIRED, *, minimum: int | None = None,
                maximum: int | None = None) -> Any:
        value = self.take(key, int, default)
        if isinstance(value, int) and minimum is not None and value < minimum:
            self.problem(key, f"'{key}' must be at least {minimum}, not {value}")
            return default if default is not REQUIRED else None
        if isinstance(value, int) and maximum is not None and value > maximum:
            self.problem(key, f"'{key}' must be at most {maximum}, not {value}")
            return default if default is not REQUIRED else None
        return value

    def number(self, key: str, default: Any = REQUIRED) -> Any:
        return self.take(key, float, default)

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        return self.take(key, bool, default)

    def choice(self, key: str, choices: Iterable[str], default: Any = REQUIRED) -> Any:
        options = list(choices)
        value = self.take(key, str, default)
        if isinstance(value, str) and value not in options and key in self.data:
            hint = did_you_mean(value, options) or f"; use one of {', '.join(options)}"
            self.problem(key, f"'{key}' cannot be '{value}'{hint}")
            return None if default is REQUIRED else default
        return value

    def duration(self, key: str, default: Any = REQUIRED, *, allow_zero: bool = True) -> Any:
        """Seconds from a string such as `"250ms"`; the number 0 is accepted too."""
        value = self.take(key, (str, int), default)
        if key not in self.data or value is None or value is default:
            return value
        if isinstance(value, int):
            if value != 0:
                self.problem(key, f"'{key}' needs a unit: write '{value}s' or '{value}ms'")
                return None if default is REQUIRED else default
            seconds = 0.0
        else:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                self.problem(key, str(exc))
                return None if default is REQUIRED else default
        if seconds == 0 and not allow_zero:
            self.problem(key, f"'{key}' must be longer than zero")
            return None if default is REQUIRED else default
        return seconds

    def size(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.take(key, (str, int), default)
        if key not in self.data or value is None:
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None if default is REQUIRED else default

    # -- nesting ---------------------------------------------------------------------------
    def table(self, key: str, *, required: bool = False) -> Table | None:
        """The sub-table at `key`, or None (a problem if required)."""
        value = self.take(key, dict, REQUIRED if required else None)
        if not isinstance(value, dict):
            return None
        return Table(self.doc, (*self.path, key), value, self.problems)

    def tables(self, key: str) -> list[Table]:
        """The array of tables at `key` (`[[state]]`), empty if absent."""
        value = self.take(key, list, [])
        out: list[Table] = []
        for i, item in enumerate(value or []):
            if not isinstance(item, dict):
                self.problems.add(self.doc.value_location((*self.path, key, i)),
                                  f"each entry of '{key}' must be a table, not {_show(item)}")
                continue
            out.append(Table(self.doc, (*self.path, key, i), item, self.problems))
        return out

    def entries(self) -> Iterator[tuple[str, Table | None]]:
        """Each `name = {...}` entry of a free-form table; non-tables are reported."""
        for key, value in self.data.items():
            self._seen.add(key)
            if isinstance(value, dict):
                yield key, Table(self.doc, (*self.path, key), value, self.problems)
            else:
                self.problem(key, f"'{key}' must be a table such as {{ type = \"bool\" }}, "
                                  f"not {_show(value)}")
                yield key, None

    def finish(self) -> None:
        """Report every key that was never read: unknown keys are errors, not ignored."""
        allowed = self._seen
        for key in self.data:
            if key not in allowed:
                self.problems.add(self.where(key),
                                  f"unknown key '{key}' in {self.name}{did_you_mean(key, allowed)}")


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _show(value: Any) -> str:
    for k, n in _TYPE_NAMES.items():
        if _is(value, k):
            return f"{n} ({value!r})" if k in (str, int, float, bool) else n
    return type(value).__name__
