"""TOML documents that remember where each key and value stands, for `file:line:col` errors.

tomllib gives values but no positions, so after a successful parse a small scanner walks the
same text and records the line and column of every key and value. Rules, sources, tower and
the agent config all read their files through `TomlDoc` and `Table` (see `rules.fields`).
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.errors import LocatedError, Location

PathKey = tuple[str | int, ...]

_DECODE_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class TomlDoc:
    """A parsed TOML file: its data plus the position of every key and value."""

    file: str
    text: str
    data: dict[str, Any]
    keys: dict[PathKey, Location] = field(default_factory=dict)
    values: dict[PathKey, Location] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, file: str) -> TomlDoc:
        """Parse `text`; a syntax error raises LocatedError naming the line and column."""
        check_bounds(text, file)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = _DECODE_POS.search(msg)
            line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
            plain = _DECODE_POS.sub("", msg).strip().rstrip(".")
            raise LocatedError(Location(file, line, col), f"TOML syntax error: {plain}") from None
        doc = cls(file=file, text=text, data=data)
        # Positions are a convenience; tomllib already accepted the file, so a scanner gap
        # must never turn a valid file into an error. Errors then fall back to the parent key.
        with contextlib.suppress(IndexError, ValueError):
            _Scanner(doc).scan()
        return doc

    def key_location(self, path: PathKey) -> Location:
        """Where the key at `path` is written, or the nearest enclosing key, or line 1."""
        for n in range(len(path), 0, -1):
            loc = self.keys.get(path[:n])
            if loc is not None:
                return loc
        return Location(self.file, 1, 1)

    def value_location(self, path: PathKey) -> Location:
        """Where the value at `path` starts (the opening quote for a string)."""
        loc = self.values.get(path)
        return loc if loc is not None else self.key_location(path)

    def string_offset(self, path: PathKey, offset: int) -> Location:
        """Location of character `offset` inside the string value at `path` (same line only)."""
        loc = self.values.get(path)
        if loc is None:
            return self.key_location(path)
        line_text = self.text.splitlines()[loc.line - 1] if self.text else ""
        start = loc.col - 1
        quote = 3 if line_text[start : start + 3] in ('"""', "'''") else 1
        return Location(self.file, loc.line, loc.col + quote + offset)


class _Scanner:
    """Walks TOML text already known to be valid and records key/value positions."""

    def __init__(self, doc: TomlDoc) -> None:
        self.doc = doc
        self.s = doc.text
        self.i = 0
        self.line = 1
        self.line_start = 0
        self.table: PathKey = ()
        self.array_index: dict[PathKey, int] = {}

    # -- low level -------------------------------------------------------------------------
    def loc(self) -> Location:
        return Location(self.doc.file, self.line, self.i - self.line_start + 1)

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i < len(self.s) and self.s[self.i] == "\n":
                self.line += 1
                self.line_start = self.i + 1
            self.i += 1

    def skip_ws(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.advance()
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.advance()
            else:
                return

    # -- structure -------------------------------------------------------------------------
    def scan(self) -> None:
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.s):
                return
            if self.peek() == "[":
                self.header()
            else:
                self.keyval(self.table)

    def resolve(self, path: PathKey) -> PathKey:
        """Insert the current index of every array-of-tables along `path`."""
        out: list[str | int] = []
        for part in path:
            out.append(part)
            idx = self.array_index.get(tuple(out))
            if idx is not None:
                out.append(idx)
        return tuple(out)

    def header(self) -> None:
        is_array = self.peek(2) == "[["
        self.advance(2 if is_array else 1)
        self.skip_ws(newlines=False)
        start = self.loc()
        keys = self.key()
        self.skip_ws(newlines=False)
        self.advance(2 if is_array else 1)
        if is_array:
            parent = self.resolve(tuple(keys[:-1]))
            base = (*parent, keys[-1])
            idx = self.array_index.get(base, -1) + 1
            self.array_index[base] = idx
            self.table = (*base, idx)
            self.doc.keys.setdefault(base, start)
        else:
            self.table = self.resolve(tuple(keys))
        self.doc.keys[self.table] = start

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws(newlines=False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string_value())
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if not m:
                    raise ValueError("bad key")
                parts.append(m.group(0))
                self.advance(len(m.group(0)))
            self.skip_ws(newlines=False)
            if self.peek() == ".":
                self.advance()
                continue
            return parts

    def keyval(self, table: PathKey) -> None:
        start = self.loc()
        keys = self.key()
        path = (*table, *keys)
        self.doc.keys[path] = start
        self.skip_ws(newlines=False)
        if self.peek() != "=":
            raise ValueError("expected =")
        self.advance()
        self.skip_ws(newlines=False)
        self.value(path)

    def value(self, path: PathKey) -> None:
        self.doc.values[path] = self.loc()
        c = self.peek()
        if c in ('"', "'"):
            self.string_value()
        elif c == "{":
            self.advance()
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "}":
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.keyval(path)
        elif c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.value((*path, index))
                index += 1
        else:
            while self.i < len(self.s) and self.s[self.i] not in ",]}\n#":
                self.advance()

    def string_value(self) -> str:
        q = self.peek()
        if self.peek(3) == q * 3:
            self.advance(3)
            end = self.s.index(q * 3, self.i)
            # a closing run may be up to five quotes long; the last three close it
            while self.s[end + 3 : end + 4] == q:
                end += 1
            text = self.s[self.i : end]
            self.advance(end + 3 - self.i)
            return text
        self.advance()
        buf: list[str] = []
        while self.peek() != q:
            if q == '"' and self.peek() == "\\":
                buf.append(self.peek(2))
                self.advance(2)
            else:
                buf.append(self.peek())
                self.advance()
        self.advance()
        raw = "".join(buf)
        if q == '"' and "\\" in raw:
            # tomllib already accepted this string: let it decode the escapes by TOML's rules
            # (\u00fc, \U0001F600, \"), which leaves every other character as written.
            return str(tomllib.loads(f'k = "{raw}"')["k"])
        return raw


# -- bounds ------------------------------------------------------------------------------------

MAX_NESTING = 32  # arrays and inline tables inside each other; tomllib recurses per level
MAX_DIGITS = 40  # a longer run of digits is no number a machine sends (int() refuses 4,300)


def check_bounds(text: str, file: str) -> None:
    """Refuse what would make tomllib recurse too deep or convert huge numbers, with the line
    and column: a quick pass over brackets and digits outside strings and comments."""
    depth, line, line_start, i, n = 0, 1, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line, line_start = line + 1, i + 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1  # the escaped character is skipped below, even a line break
                if j < n and text[j] == "\n":
                    if len(quote) == 1:
                        break  # an unclosed string: tomllib says so
                    line, line_start = line + 1, j + 1
                j += 1
            i = j + len(quote) if j < n and text[j] != "\n" else j
            continue
        elif c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise LocatedError(Location(file, line, i - line_start + 1),
                                   f"arrays and inline tables nest deeper than {MAX_NESTING} levels")
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c.isascii() and c.isdigit():
            j = i
            while j < n and text[j] in "0123456789_":
                j += 1
            if j - i > MAX_DIGITS:
                raise LocatedError(Location(file, line, i - line_start + 1),
                                   f"this number has {j - i} digits; numbers have at most "
                                   f"{MAX_DIGITS}")
            i = j
            continue
        i += 1
