"""Values that cross the journal's boundary: events in, records out, limits, stats, health, the error."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from linelight.rules.errors import LinelightError

MiB = 1024 * 1024


class JournalError(LinelightError):
    """The on-disk journal failed in a way the caller must know about."""


class JournalUnavailable(JournalError):
    """The database cannot be opened now for a passing reason (disk full, I/O error).

    `Journal.open` does not raise it: the journal then runs without its file, refusing and
    counting events, and opens the file as soon as it can.
    """


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, before it has a seq. `value` and `attrs` must be msgpack-able."""

    kind: str  # signal | lamp | state | agent | alarm | count | gap
    name: str
    value: Any
    ts_ns: int  # event time at the source, UTC epoch ns
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """A committed event as read back from the journal."""

    seq: int
    boot: int
    kind: str
    name: str
    value: Any
    ts_ns: int
    enq_ns: int  # wall time the event was committed, UTC epoch ns
    attrs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class JournalLimits:
    """Bounds and commit tuning, from the agent config's `[journal]` table."""

    max_bytes: int = 256 * MiB  # queued data (rows' accounted bytes), not the file size
    max_age: float = 7 * 86400.0  # seconds an unacknowledged event may wait
    min_free_disk: int = 64 * MiB  # stop growing when the filesystem has less free
    commit_window: float = 0.005  # longest a commit waits for appends that keep arriving
    max_group: int = 4096  # events per commit at most
    max_pending: int = 100_000  # events submitted but not yet committed, then drops
    max_file_bytes: int | None = None  # hard ceiling of the database file (max_page_count)
    maintenance_interval: float = 1.0  # seconds between retention / free-disk checks
    max_dead_letters: int = 10_000  # oldest dead letters beyond this are deleted


class HealthState(enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state is HealthState.OK

    def __str__(self) -> str:
        return self.state.value + (": " + "; ".join(self.reasons) if self.reasons else "")


HEALTH_OK = Health(HealthState.OK)


@dataclass(frozen=True, slots=True)
class JournalStats:
    """A cheap snapshot of the queue, kept up to date after every commit."""

    depth: int = 0  # unacknowledged events
    bytes: int = 0  # their accounted bytes
    file_bytes: int = 0  # database + WAL file size on disk
    oldest_seq: int | None = None
    oldest_ts_ns: int | None = None
    oldest_enq_ns: int | None = None
    newest_seq: int | None = None
    newest_ts_ns: int | None = None
    seq_hwm: int = 0  # highest seq ever assigned
    boot: int = 0
    dropped: int = 0  # events dropped for any reason since the file was created
    gaps: int = 0  # gap events written
    dead_letters: int = 0  # rows moved to the dead-letter table
    recovered: int = 0  # times the file was salvaged after corruption
    pending: int = 0  # submitted, not yet committed
    health: Health = HEALTH_OK
