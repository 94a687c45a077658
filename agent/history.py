"""The history behind the diagnostics page's timeline: a small SQLite file of what happened.

Not the forwarding journal, whose rows are deleted once the broker acknowledged them: this file
(`history.db` beside `journal.db`) keeps, for `KEEP_S`, the marks a person reads at 3 a.m.:
state changes (each with its machine), alarms on and off, broker up and down, agent starts (and whether the previous
run ended cleanly) and stops, rule reloads and rejections, component restarts; and one queue
depth sample every `SAMPLE_EVERY_S` (the highest depth seen in that window, so a short peak is
not missed). Its size is bounded twice: by age, and by `MAX_MARKS` marks and `MAX_SAMPLES`
samples, the oldest deleted first, so a state that flaps every scan cannot fill the disk.

Nothing here may delay the scan loop or stop the agent: the scan loop's events are only
appended to a bounded buffer (`observe`), written once a second in a worker thread; a write
that fails (disk full) drops that batch, counts it and logs once; a damaged file is moved
aside and started afresh, since this history is for people, not a record anyone relies on.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from linelight.agent.events import MACHINE
from linelight.agent.journal import Event
from linelight.agent.scan import EventSink

log = logging.getLogger(__name__)

KEEP_S = 48 * 3600  # two shifts' worth beyond the 24 h the page shows
SAMPLE_EVERY_S = 10.0  # one queue-depth sample per window (its maximum)
PROBE_EVERY_S = 1.0  # link and restarts are looked at, and marks written, this often
MAX_MARKS = 50_000  # a state changing every 1.7 s all day fills it; then the oldest go
MAX_NOTES = 5_000  # of those, marks with a sentence (link down, restart, rejection, start)
PRUNE_EVERY = 60  # writes (about a minute) between two prunes
MAX_SAMPLES = 2 * int(KEEP_S / SAMPLE_EVERY_S)  # room for a clock stepped back once
LINK_GRACE_PROBES = 10  # a link still down this many probes after the start is an outage
MAX_BUFFERED = 10_000  # marks waiting for the next write; beyond, the oldest are dropped
MAX_NAME, MAX_VALUE, MAX_DETAIL = 64, 32, 160  # characters kept: the size bound rests on them
NOTE_KINDS = ("link", "start", "stop", "reload", "reject", "restart")
MAX_HOURS = KEEP_S / 3600
MAX_POINTS = 4000  # queue-depth points served at most (the page asks for its width)
MAX_ALARMS_ON = 1000  # alarms on since before the window, served with it
MAX_MARKS_SERVED = 20_000  # per kind group in one answer: the newest ones

# The kinds of marks, one lane or symbol each on the timeline ("machine": another machine's
# state change in a file written before every machine had its own band row; no longer written).
KINDS = ("state", "machine", "alarm", "link", "start", "stop", "reload", "reject", "restart")
MAX_MACHINES_SERVED = 1000  # machines whose state before the window is served with it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    detail TEXT,
    machine TEXT
);
CREATE INDEX IF NOT EXISTS marks_ts ON marks (ts_ms);
CREATE TABLE IF NOT EXISTS samples (
    ts_ms INTEGER PRIMARY KEY,
    depth INTEGER NOT NULL,
    link INTEGER
);
"""


@dataclass(frozen=True, slots=True)
class Mark:
    """One thing that happened, at `ts_ms` (UTC epoch ms); a state change or an alarm of a
    named machine (`[machines.NAME]`) carries its `machine`, so each gets its own band row."""

    ts_ms: int
    kind: str
    name: str
    value: str | None = None
    detail: str | None = None
    machine: str | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """What the agent looks like now, for the samples and the link and restart marks."""

    depth: int
    link: bool | None  # None: no broker configured
    link_error: str | None = None
    restarts: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # name -> (n, error)


ProbeFn = Callable[[], Probe]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit - 1] + "…"


def mark_for(event: Event) -> Mark | None:
    """The timeline's mark for a journal event, or None for events the timeline does not show.

    A named machine's state changes and alarms carry the machine: one band row per machine."""
    ts_ms = event.ts_ns // 1_000_000
    machine = event.attrs.get(MACHINE)
    machine = machine if isinstance(machine, str) else None
    if event.kind == "state":
        return Mark(ts_ms, "state", event.name, _text(event.value), None, machine)
    if event.kind == "alarm":
        return Mark(ts_ms, "alarm", event.name, "on" if event.value else "off", None, machine)
    if event.kind == "agent" and event.name == "rules_reloaded":
        return Mark(ts_ms, "reload", "rules reloaded", _text(event.attrs.get("rules")),
                    _text(event.attrs.get("requested_by")))
    if event.kind == "agent" and event.name == "rules_rejected":
        errors = event.attrs.get("errors") or []
        return Mark(ts_ms, "reject", "rules rejected", _text(event.value),
                    _text(errors[0] if errors else None))
    return None


class History:
    """The history file. `open` it, hand events to `observe`, run `run`, `close` it."""

    def __init__(self, db: sqlite3.Connection | None, path: Path, *,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self._db = db
        self.path = path
        self._wall_ms = wall_ms
        self._lock = threading.Lock()  # the connection is used from worker threads
        self._buffer: deque[Mark] = deque()
        self._last_link: bool | None = None
        self._probes = 0
        self._writes = 0
        self._last_restarts: dict[str, int] = {}
        self._window_start = 0
        self._window_depth = -1
        self._window_link: bool | None = None
        self._samples: deque[tuple[int, int, bool | None]] = deque(maxlen=MAX_BUFFERED)
        self.written = 0
        self.dropped = 0  # marks lost to a full buffer or a failed write
        self._write_failed = False

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, wall_ms: Callable[[], int] | None = None) -> History:
        """Open (or create) the file; a damaged one is moved aside; never raises for the file."""
        kwargs = {"wall_ms": wall_ms} if wall_ms is not None else {}
        try:
            return cls(_connect(path), path, **kwargs)
        except sqlite3.OperationalError as exc:  # no such directory, read-only, disk full
            log.warning("history disabled: %s cannot be opened (%s)", path, exc)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.warning("history %s cannot be read (%s); moved aside to %s, starting afresh",
                        path, exc, aside.name)
            try:
                path.replace(aside)
                return cls(_connect(path), path, **kwargs)
            except (OSError, sqlite3.Error) as again:
                log.warning("history disabled: %s cannot be created (%s)", path, again)
        except OSError as exc:
            log.warning("history disabled: %s cannot be opened (%s)", path, exc)
        return cls(None, path, **kwargs)

    @property
    def available(self) -> bool:
        return self._db is not None

    def started(self, boot: int) -> None:
        """Record this start, saying whether the previous run ended with a clean stop."""
        try:
            previous = self._last_kinds()
        except sqlite3.Error as exc:  # unreadable pages: the start is still worth a mark
            log.warning("history %s: cannot read the last marks (%s)", self.path, exc)
            previous = None
        detail = None
        if previous and previous[0] not in ("stop",):
            detail = "the previous run ended without a clean stop (crash, kill or power loss)"
            if previous[1] is not None:
                detail += f"; last sign of life {_iso(previous[1])}"
        self.note(Mark(self._wall_ms(), "start", "agent started", str(boot), detail))

    def stopped(self) -> None:
        self.note(Mark(self._wall_ms(), "stop", "agent stopped"))

    # -- recording (never blocks) -------------------------------------------------------------
    def observe(self, event: Event) -> None:
        mark = mark_for(event)
        if mark is not None:
            self.note(mark)

    def note(self, mark: Mark) -> None:
        if self._db is None:
            return
        mark = Mark(mark.ts_ms, mark.kind, _cut(mark.name, MAX_NAME) or "",
                    _cut(mark.value, MAX_VALUE), _cut(mark.detail, MAX_DETAIL),
                    _cut(mark.machine, MAX_NAME))
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(mark)

    def probe(self, p: Probe) -> None:
        """Turn what the agent looks like now into link and restart marks and depth samples."""
        now = self._wall_ms()
        if p.link is False and self._last_link is None and self._probes < LINK_GRACE_PROBES:
            self._probes += 1  # connecting after the start: not an outage yet
        elif p.link is not None and p.link != self._last_link:
            self.note(Mark(now, "link", "broker up" if p.link else "broker down", None,
                           None if p.link else _text(p.link_error)))
            self._last_link = p.link
        for name, (count, error) in p.restarts.items():
            if count > self._last_restarts.get(name, 0):
                self.note(Mark(now, "restart", name, str(count), _text(error)))
            self._last_restarts[name] = count
        window = now - now % int(SAMPLE_EVERY_S * 1000)
        if window != self._window_start:
            self._end_window()
            self._window_start = window
        self._window_depth = max(self._window_depth, p.depth)
        if p.link is not None:  # the window's link is up only if it was up at every probe
            self._window_link = p.link and self._window_link is not False

    def _end_window(self) -> None:
        if self._window_depth >= 0:
            self._samples.append((self._window_start, self._window_depth, self._window_link))
        self._window_depth = -1
        self._window_link = None

    async def run(self, probe: ProbeFn, *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Probe and write once a second until cancelled; the last marks are written by close."""
        task_status.started()
        while True:
            self.probe(probe())
            await anyio.to_thread.run_sync(self.flush)
            await anyio.sleep(PROBE_EVERY_S)

    def flush(self) -> None:
        """Write the buffered marks and finished samples; prune. Runs in a worker thread."""
        if self._db is None:
            return
        marks = [self._buffer.popleft() for _ in range(len(self._buffer))]
        samples = [self._samples.popleft() for _ in range(len(self._samples))]
        if not marks and not samples:
            return
        try:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT INTO marks (ts_ms, kind, name, value, detail, machine) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(m.ts_ms, m.kind, m.name, m.value, m.detail, m.machine) for m in marks])
                self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?)",
                                     [(ts, depth, None if link is None else int(link))
                                      for ts, depth, link in samples])
                self._writes += 1
                if (self._writes - 1) % PRUNE_EVERY == 0:
                    self._prune(self._db)
        except sqlite3.Error as exc:
            self.dropped += len(marks)
            if not self._write_failed:
                log.warning("history: %d marks not written to %s (%s); the page's timeline "
                            "misses them, the agent runs on", len(marks), self.path, exc)
            self._write_failed = True
            return
        if self._write_failed:
            log.info("history: writing to %s again", self.path)
        self._write_failed = False
        self.written += len(marks)

    def _prune(self, db: sqlite3.Connection) -> None:
        cutoff = self._wall_ms() - int(KEEP_S * 1000)
        db.execute("DELETE FROM marks WHERE ts_ms < ?", (cutoff,))
        db.execute("DELETE FROM marks WHERE id <= (SELECT id FROM marks ORDER BY id DESC "
                   "LIMIT 1 OFFSET ?)", (MAX_MARKS,))
        notes = ", ".join(f"'{k}'" for k in NOTE_KINDS)
        db.execute(f"DELETE FROM marks WHERE kind IN ({notes}) AND id <= (SELECT id FROM marks "
                   f"WHERE kind IN ({notes}) ORDER BY id DESC LIMIT 1 OFFSET ?)", (MAX_NOTES,))
        db.execute("DELETE FROM samples WHERE ts_ms < ?", (cutoff,))
        db.execute("DELETE FROM samples WHERE ts_ms <= (SELECT ts_ms FROM samples ORDER BY "
                   "ts_ms DESC LIMIT 1 OFFSET ?)", (MAX_SAMPLES,))

    def close(self) -> None:
        if self._db is None:
            return
        self._end_window()
        self._writes = 0  # the last write prunes
        self.flush()
        with self._lock:
            self._db.close()
        self._db = None

    # -- reading ------------------------------------------------------------------------------
    def _last_kinds(self) -> tuple[str, int | None] | None:
        """(kind of the newest start/stop mark, time of the newest mark or sample), or None."""
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT kind FROM marks WHERE kind IN ('start', 'stop') "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
            last = self._db.execute("SELECT max(t) FROM (SELECT max(ts_ms) AS t FROM marks "
                                    "UNION ALL SELECT max(ts_ms) FROM samples)").fetchone()
        return (str(row[0]), last[0]) if row else None

    def query(self, hours: float, points: int) -> dict[str, Any]:
        """The timeline of the last `hours`: states, the broker link and the alarms (each with
        what was in force at the start; states and alarms per machine), other marks, and the
        queue depth bucketed to at most `points` points. Runs in a worker thread.

        `states` rows are [ms, name, code, machine], `marks` rows [ms, kind, name, value,
        detail, machine]; machine is null for the agent's own marks and an unnamed machine."""
        now = self._wall_ms()
        start = now - int(min(max(hours, 0.0), MAX_HOURS) * 3_600_000)
        points = min(max(points, 1), MAX_POINTS)
        doc: dict[str, Any] = {"from_ms": start, "to_ms": now, "keep_s": KEEP_S,
                               "sample_every_s": SAMPLE_EVERY_S, "available": self.available,
                               "states": [], "marks": [], "depth": []}
        if self._db is None:
            return doc
        try:
            doc.update(self._read(start, now, points))
        except sqlite3.Error as exc:
            log.warning("history %s cannot be read: %s", self.path, exc)
            doc["error"] = f"the history file cannot be read: {exc}"
        return doc

    def _read(self, start: int, now: int, points: int) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        bucket = max(int(SAMPLE_EVERY_S * 1000), (now - start) // points + 1)
        with self._lock:
            db = self._db
            if db is None:  # closed meanwhile: the agent is stopping
                return doc
            before = db.execute(  # each machine's state when the window starts
                "SELECT ts_ms, name, value, machine FROM marks WHERE id IN (SELECT max(id) "
                "FROM marks WHERE kind = 'state' AND ts_ms < ? GROUP BY machine) "
                "ORDER BY ts_ms, id LIMIT ?", (start, MAX_MACHINES_SERVED)).fetchall()
            link_before = db.execute("SELECT ts_ms, kind, name, value, detail, machine FROM "
                                     "marks WHERE kind = 'link' AND ts_ms < ? ORDER BY ts_ms "
                                     "DESC, id DESC LIMIT 1", (start,)).fetchall()
            alarms_on = db.execute(  # alarms still on when the window starts
                "SELECT ts_ms, kind, name, value, detail, machine FROM marks WHERE id IN "
                "(SELECT max(id) FROM marks WHERE kind = 'alarm' AND ts_ms < ? GROUP BY "
                "machine, name) AND value = 'on' ORDER BY ts_ms LIMIT ?",
                (start, MAX_ALARMS_ON)).fetchall()
            states = db.execute(
                "SELECT ts_ms, name, value, machine FROM (SELECT id, ts_ms, name, value, machine "
                "FROM marks WHERE kind = 'state' AND ts_ms >= ? ORDER BY ts_ms DESC, id DESC "
                "LIMIT ?) ORDER BY ts_ms, id", (start, MAX_MARKS_SERVED)).fetchall()
            marks = db.execute(
                "SELECT ts_ms, kind, name, value, detail, machine FROM (SELECT * FROM marks "
                "WHERE kind != 'state' AND ts_ms >= ? ORDER BY ts_ms DESC, id DESC LIMIT ?) "
                "ORDER BY ts_ms, id", (start, MAX_MARKS_SERVED)).fetchall()
            depth = db.execute(
                "SELECT (ts_ms - ?) / ? * ? + ? AS b, max(depth), min(link) FROM samples "
                "WHERE ts_ms >= ? GROUP BY b ORDER BY b",
                (start, bucket, bucket, start, start)).fetchall()
        doc["states"] = [[t, n, _int(v), m] for t, n, v, m in before + states]
        doc["marks"] = [list(row) for row in link_before + alarms_on + marks]
        doc["depth"] = [[t, d, link] for t, d, link in depth]
        doc["bucket_ms"] = bucket
        return doc

    def size(self) -> dict[str, int]:
        """Rows and bytes, for docs and tests."""
        if self._db is None:
            return {"marks": 0, "samples": 0, "bytes": 0}
        with self._lock:
            marks = self._db.execute("SELECT count(*) FROM marks").fetchone()[0]
            samples = self._db.execute("SELECT count(*) FROM samples").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return {"marks": marks, "samples": samples, "bytes": pages * page_size}


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        # NORMAL, not FULL: a mark lost in a power cut costs a line on a chart, not an event
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(marks)")}
        if "machine" not in columns:  # a file from before machines had their own band rows
            db.execute("ALTER TABLE marks ADD COLUMN machine TEXT")
        db.execute("SELECT count(*) FROM marks").fetchone()
    except sqlite3.Error:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # `with db:` commits a transaction from here on
    return db


def _int(value: str | None) -> int | str | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


class Recorded:
    """An event sink that hands every event on and shows it to the history."""

    def __init__(self, sink: EventSink, history: History) -> None:
        self.sink = sink
        self.history = history

    def submit(self, event: Event) -> None:
        self.sink.submit(event)
        self.history.observe(event)
