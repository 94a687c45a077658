"""Read rule files and rule test files from disk for the pure `rules/` core.

`rules/` parses texts and reads no file; this is the edge that does. An unreadable file is a
located problem (`path:1:1: cannot read the rule file: Permission denied`) listed with every
other problem in one `ConfigProblems`, so `linelight check` and `linelight rules test` print
one sentence per problem and exit 1.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from linelight.rules.errors import ConfigProblems, LocatedError, Location
from linelight.rules.loader import load_rules
from linelight.rules.model import RuleSet
from linelight.rules.testing import TestFile, load_test_text

MAX_FILE_BYTES = 1024 * 1024  # a rule file or agent.toml; real ones are a few KiB
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))


def read_bounded(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, of at most `limit` bytes.

    Anything else raises OSError (with `strerror` a plain reason) or UnicodeDecodeError:
    `/dev/zero` would be read forever, a FIFO would block the reader, and a 50 MB file
    would take check half a minute and the agent's memory with it.
    """
    # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a plain file")
            raise OSError(errno.EINVAL, f"it is {kind}, not a regular file")
        data = f.read(limit + 1)  # a file that grows after fstat is caught here
        if len(data) > limit or st.st_size > limit:
            size = max(st.st_size, len(data))
            raise OSError(errno.EFBIG, f"it has {size} bytes, over the limit of {limit} bytes")
    return data.decode("utf-8")


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of `path`, or ConfigProblems with one sentence naming the file and why."""
    name = str(path)
    try:
        return read_bounded(path)
    except OSError as exc:
        message = f"cannot read the {what}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        message = f"the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    raise ConfigProblems([LocatedError(Location(name, 1, 1), message)])


def load_rule_texts(sources: Sequence[tuple[str, str]]) -> RuleSet:
    """`rules.loader.load_rules`, with any error it did not foresee turned into one located
    sentence like its own: `check`, `rules test` and a reload print the same words, and no
    rule file makes any of them end with a traceback."""
    try:
        return load_rules(sources)
    except ConfigProblems:
        raise
    except Exception as exc:  # noqa: BLE001 -- the edge that keeps a defect from killing us
        first = sources[0][0] if sources else "<rules>"
        raise ConfigProblems([unforeseen(first, "loading the rules", exc)]) from None


def unforeseen(file: str, doing: str, exc: Exception) -> LocatedError:
    """The located sentence for an exception no check foresaw (a defect of ours)."""
    detail = " ".join(str(exc).split())[:300]  # one line, however long the error is
    return LocatedError(Location(file, 1, 1), f"{doing} failed unexpectedly "
                        f"({type(exc).__name__}: {detail}); this is a defect in linelight, "
                        "please report it with this file")


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
        ruleset = load_rule_texts(sources)
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
