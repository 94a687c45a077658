"""The journal's locks and its marks outside the database: `PATH.lock` (flock) and `PATH` (flock).

Two writers must never share a queue, whatever file someone deletes: the journal holds an
exclusive `flock` on `PATH.lock` and one on the database file itself (flock and SQLite's own
POSIX locks do not interfere on Linux). A second agent is refused by whichever it reaches.

The lock file also keeps the journal's marks: boot, the seq high-water mark, the persistent
counters and the gaps of refused events whose gap event is not committed yet. They are the
floor the database is checked against at open: a lost or truncated `-wal`, an older copy of
the file or a salvage cannot take seq or the counters back below them, and refused events
are announced after a crash even though the disk never took their gap. The marks are one
fixed-size record rewritten in place (never truncated or grown), so writing them needs no new
block even on a full filesystem; they are written after each commit, and with fsync when
refused events wait in them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from linelight.agent.journal.policy import Gap
from linelight.agent.journal.types import JournalError

log = logging.getLogger(__name__)

RECORD_BYTES = 1024  # the marks' fixed record; the file is kept at exactly this size
MAX_MARKED_GAPS = 8  # refused ranges kept in the record; more are merged into the last
_INT_LIMIT = 2**63  # marks from a damaged or foreign file beyond this are ignored


@dataclass(slots=True)
class Marks:
    """What the lock file remembers; every field 0 / empty when unknown."""

    counters: dict[str, int] = field(default_factory=dict)  # seq_hwm, boot, dropped, ...
    pending: list[Gap] = field(default_factory=list)  # refused events not yet in a gap event

    @property
    def boot(self) -> int:
        return self.counters.get("boot", 0)

    @property
    def seq(self) -> int:
        return self.counters.get("seq_hwm", 0)


def _int(value: object) -> int | None:
    if type(value) is int and 0 <= value < _INT_LIMIT:
        return value
    return None


def parse_marks(text: str) -> Marks:
    """Read a record written by `LockFile.write`, or the bare boot number of older releases."""
    text = text.strip("\x00 \n")
    if not text:
        return Marks()
    if not text.startswith("{"):
        boot = int(text) if text.isdigit() and len(text) < 19 else 0
        return Marks({"boot": boot})
    try:
        data = json.loads(text)
    except ValueError:
        return Marks()
    if not isinstance(data, dict):
        return Marks()
    counters = {str(k): v for k, v in data.get("counters", {}).items()
                if _int(v) is not None} if isinstance(data.get("counters"), dict) else {}
    pending: list[Gap] = []
    for item in data.get("pending", []) if isinstance(data.get("pending"), list) else []:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
                and all(_int(v) is not None for v in item[1:4])
                and isinstance(item[4], dict)):
            continue
        kinds = {str(k): v for k, v in item[4].items() if _int(v) is not None}
        if item[1] <= item[2]:
            pending.append(Gap(item[0][:32], item[1], item[2], item[3], kinds))
    return Marks(counters, pending)


def _record(counters: Mapping[str, int], pending: Iterable[Gap]) -> bytes:
    gaps = [g for g in pending]
    while len(gaps) > MAX_MARKED_GAPS:  # keep the record bounded: merge the newest two
        last = gaps.pop()
        prev = gaps[-1]
        kinds = dict(prev.kinds)
        for k, n in last.kinds.items():
            kinds[k] = kinds.get(k, 0) + n
        gaps[-1] = Gap(prev.reason, prev.first_seq, last.last_seq, prev.count + last.count,
                       kinds)
    body = {"counters": dict(counters),
            "pending": [[g.reason, g.first_seq, g.last_seq, g.count, dict(g.kinds)]
                        for g in gaps]}
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) >= RECORD_BYTES:  # many kinds: the counts per kind are the part to lose
        body["pending"] = [[g.reason, g.first_seq, g.last_seq, g.count, {}] for g in gaps]
        data = json.dumps(body, separators=(",", ":")).encode()
    return data.ljust(RECORD_BYTES - 1) + b"\n"


class LockFile:
    """The held locks of one open journal and the marks record in `PATH.lock`."""

    def __init__(self, path: str, lock_fd: int, db_fd: int, marks: Marks) -> None:
        self.path = path
        self._fd = lock_fd
        self._db_fd = db_fd
        self.marks = marks  # as found at open, then as last written
        self._written = b""
        self._failing = False

    @classmethod
    def acquire(cls, path: str) -> LockFile:
        """Lock `PATH.lock` and `PATH`; JournalError in one sentence if another process holds either."""
        lock_path = path + ".lock"
        fd = _open(path, lock_path)
        try:
            _flock(fd, path, lock_path)
            marks = parse_marks(_read_all(fd))
            _presize(fd)
            db_fd = _open(path, path)
            try:
                _flock(db_fd, path, path)
            except BaseException:
                os.close(db_fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, db_fd, marks)

    def relock_database(self) -> None:
        """After salvage renamed a new file into place: hold the lock on that file."""
        try:
            if os.fstat(self._db_fd).st_ino == os.stat(self.path).st_ino:
                return
        except OSError:
            pass
        new_fd = _open(self.path, self.path)
        try:
            _flock(new_fd, self.path, self.path)
        except BaseException:
            os.close(new_fd)
            raise
        old, self._db_fd = self._db_fd, new_fd
        with contextlib.suppress(OSError):
            os.close(old)

    def write(self, counters: Mapping[str, int], pending: Iterable[Gap] = (), *,
              sync: bool = False) -> bool:
        """Rewrite the marks in place (fsync with `sync`); False if the disk refused."""
        data = _record(counters, pending)
        if data == self._written and not sync:
            return True
        try:
            os.pwrite(self._fd, data, 0)
            if sync:
                os.fsync(self._fd)
        except OSError as exc:
            if not self._failing:  # once, not at every commit
                log.error("journal %s: cannot write the marks in %s.lock: %s", self.path,
                          self.path, exc.strerror)
            self._failing = True
            return False
        if self._failing:
            log.warning("journal %s: the marks in %s.lock are written again", self.path,
                        self.path)
            self._failing = False
        self._written = data
        self.marks = parse_marks(data.decode("ascii"))
        return True

    def release(self) -> None:
        """Close both locks; call only after the database connection is closed (closing a
        descriptor of the database file drops this process's SQLite locks on it)."""
        for fd in (self._db_fd, self._fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def last_marks(path: str) -> Marks:
    """The marks beside `path` (for salvage), or empty ones."""
    try:
        with open(path + ".lock", encoding="ascii", errors="replace") as f:
            return parse_marks(f.read(RECORD_BYTES * 2))
    except OSError:
        return Marks()


def _open(path: str, target: str) -> int:
    try:
        return os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"journal {path}: cannot open {target} to lock it: "
                           f"{exc.strerror}") from exc


def _flock(fd: int, path: str, target: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise JournalError(f"journal {path} is already open in another process "
                           f"({target} is locked)") from exc


def _read_all(fd: int) -> str:
    try:
        return os.pread(fd, RECORD_BYTES * 2, 0).decode("ascii", errors="replace")
    except OSError:
        return ""


def _presize(fd: int) -> None:
    """Give the record its full size now, while there may still be room for it."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size != RECORD_BYTES:
            current = os.pread(fd, RECORD_BYTES * 2, 0)[:RECORD_BYTES - 1].rstrip(b"\n")
            os.pwrite(fd, current.ljust(RECORD_BYTES - 1) + b"\n", 0)
            os.ftruncate(fd, RECORD_BYTES)
