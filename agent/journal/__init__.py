"""The journal: linelight's on-disk SQLite queue (the facade; other packages import from here).

Every event is committed here before anything may send it; rows leave only after the broker's
PUBACK. Promises, schema and limits: docs/journal.md.

- `queue`: `Journal` (open, salvage, group-commit writer, peek/ack, meta);
- `config`: the `[journal]` table's keys (`JOURNAL_KEYS`) and `read_journal_limits`;
- `store`: the SQLite statements of one transaction, run on the writer thread;
- `salvage`: lock, integrity check, moving a damaged file aside and rebuilding it;
- `policy`: what retention drops and how gaps coalesce (pure);
- `schema`: tables, migrations, counters; `types`: the values that cross the facade.
"""

from linelight.agent.journal.config import JOURNAL_KEYS, read_journal_limits
from linelight.agent.journal.queue import Journal
from linelight.agent.journal.schema import COUNTER_KEYS, EVENT_COLUMNS
from linelight.agent.journal.store import decode_body
from linelight.agent.journal.types import (
    HEALTH_OK,
    Event,
    Health,
    HealthState,
    JournalError,
    JournalLimits,
    JournalStats,
    Record,
)

__all__ = [
    "COUNTER_KEYS", "JOURNAL_KEYS", "EVENT_COLUMNS", "decode_body", "HEALTH_OK", "Event", "Health", "HealthState", "Journal", "JournalError", "JournalLimits", "JournalStats",
    "Record", "read_journal_limits",
]
