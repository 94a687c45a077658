"""The root of the error tree and the located errors every layer's config reading raises.

rules/ is the bottom layer, so what all layers share lives here: `LinelightError`, the root;
`ConfigError` and its located forms, raised by every reader of a TOML file. Errors that only
I/O raises live with the I/O: `linelight.hw.errors.DeviceError`,
`linelight.agent.mqtt.errors.TransportError`, `linelight.agent.journal.JournalError`.
"""

from __future__ import annotations

from dataclasses import dataclass


class LinelightError(Exception):
    """Root of every error linelight raises on purpose."""


class ConfigError(LinelightError):
    """A configuration file (agent config, sources, tower) is wrong."""


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a text file, 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class LocatedError(ConfigError, ValueError):
    """One problem at one place in a file: prints as `file:line:col: message`."""

    def __init__(self, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class ConfigProblems(ConfigError):
    """All the problems found in one or more files; `problems` keeps them in file order."""

    def __init__(self, problems: list[LocatedError]) -> None:
        self.problems = sorted(
            problems, key=lambda p: (p.location.file, p.location.line, p.location.col)
        )
        lines = "\n".join(str(p) for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''}:\n{lines}")
