"""Read rule files and rule test files from disk for the pure `rules/` core.

`rules/` parses texts and reads no file; this is the edge that does. An unreadable file is a
located problem (`path:1:1: cannot read the rule file: Permission denied`) listed with every
other problem in one `ConfigProblems`, so `linelight check` and `linelight rules test` print
one sentence per problem and exit 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.loader import load_rules
from linelight.rules.model import RuleSet
from linelight.rules.testing import TestFile, load_test_text


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of `path`, or ConfigProblems with one sentence naming the file and why."""
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read the {what}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        message = f"the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    raise ConfigProblems([LocatedError(Location(name, 1, 1), message)])


def load_rule_files(paths: Iterable[str | Path]) -> RuleSet:
    """Read rule files and load them as one RuleSet; raise ConfigProblems listing every problem,
    those of the unreadable files with those of the files that could be read."""
    sources: list[tuple[str, str]] = []
    unreadable: list[LocatedError] = []
    for path in paths:
        try:
            sources.append((str(path), read_text(path, "rule file")))
        except ConfigProblems as exc:
            unreadable.extend(exc.problems)
    try:
        ruleset = load_rules(sources)
    except ConfigProblems as exc:
        # With no readable file at all, "no rule files were given" would be misleading.
        raise ConfigProblems(unreadable + ([] if unreadable and not sources else exc.problems)
                             ) from None
    if unreadable:
        raise ConfigProblems(unreadable)
    return ruleset


def load_test_file(path: str | Path) -> TestFile:
    """Read a rule test file and the rule files it names (relative to the test file's folder);
    raise ConfigProblems listing every problem, each at the real file path."""
    text = read_text(path, "test file")
    folder = Path(path).parent

    def load(files: Sequence[str]) -> RuleSet:
        return load_rule_files([folder / f for f in files])

    return load_test_text(str(path), text, load)
