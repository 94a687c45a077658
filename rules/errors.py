"""The error tree: one root, a sub-root per concern, and located errors for config files."""

from __future__ import annotations

from dataclasses import dataclass


class LinelightError(Exception):
    """Root of every error linelight raises on purpose."""


class ConfigError(LinelightError):
    """A configuration file (agent config, sources, tower) is wrong."""


class RuleError(ConfigError):
    """A rule file or rule test file is wrong."""


class TransportError(LinelightError):
    """The link to the broker failed."""


class DeviceError(LinelightError):
    """An I/O device (Modbus, GPIO) failed or answered with an error."""


class JournalError(LinelightError):
    """The on-disk journal failed in a way the caller must know about."""


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
