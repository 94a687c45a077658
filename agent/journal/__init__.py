"""The journal: linelight's on-disk SQLite queue (the facade; other packages import from here).

Every event is committed here before anything may send it; rows leave only after the broker's
PUBACK. Promises, schema and limits: docs/journal.md.

- `queue`: `Journal` (open, salvage, group-commit writer, peek/ack, meta);
- `config`: the `[journal]` table's keys (`JOURNAL_KEYS`) and `read_journal_limits`;
- `store`: the SQLite statements of one transaction, run on the writer thread;
- `salvage`: integrity check, moving a damaged file aside and rebuilding it;
- `lockfile`: the locks (PATH.lock and the database file) and the marks kept outside the
  database (boot, seq, counters, refused ranges);
- `unopened`: the stand-in while a full disk keeps the file from opening;
- `readonly`: the one read-only open (`uri`, `connect`) and `JournalFile`, the offline
  inspection side (queue stats/tail/export, doctor) through sqlite-utils;
- `policy`: what retention drops and how gaps coalesce (pure);
- `schema`: tables, migrations, counters; `types`: the values that cross the facade.
"""

from linelight.agent.journal.config import JOURNAL_KEYS, read_journal_limits
from linelight.agent.journal.queue import Journal
from linelight.agent.journal.readonly import JournalFile, JournalReadError, iso
from linelight.agent.journal.readonly import connect as connect_readonly
from linelight.agent.journal.schema import COUNTER_KEYS, EVENT_COLUMNS
from linelight.agent.journal.store import decode_body, read_records
from linelight.agent.journal.types import (
    HEALTH_OK,
    Event,
    Health,
    HealthState,
    JournalError,
    JournalLimits,
    JournalStats,
    JournalUnavailable,
    Record,
)

__all__ = [
    "COUNTER_KEYS", "EVENT_COLUMNS", "Event", "HEALTH_OK", "Health", "HealthState", "JOURNAL_KEYS",
    "Journal", "JournalError", "JournalFile", "JournalLimits", "JournalReadError", "JournalStats",
    "JournalUnavailable", "Record",
    "connect_readonly", "decode_body", "iso", "read_journal_limits", "read_records",
]
