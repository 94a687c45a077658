"""The journal: linelight's on-disk SQLite queue (the facade; other packages import from here).

Every event is committed here before anything may send it; rows leave only after the broker's
PUBACK. Promises, schema and limits: docs/journal.md. Names load on first use (PEP 562
module `__getattr__`, as in `linelight.agent.mqtt`).

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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# name -> (module, its name there); loaded on first use, so the forwarder process, which
# reads the journal through `connect_readonly` and `read_records` only, never imports the
# writer (`queue`) or the `[journal]` table's reader (`config`): docs/benchmarks.md "Memory"
_HOME: dict[str, tuple[str, str]] = {
    "JOURNAL_KEYS": ("config", "JOURNAL_KEYS"),
    "read_journal_limits": ("config", "read_journal_limits"),
    "Journal": ("queue", "Journal"),
    "JournalFile": ("readonly", "JournalFile"), "JournalReadError": ("readonly", "JournalReadError"),
    "iso": ("readonly", "iso"), "connect_readonly": ("readonly", "connect"),
    "COUNTER_KEYS": ("schema", "COUNTER_KEYS"), "EVENT_COLUMNS": ("schema", "EVENT_COLUMNS"),
    "decode_body": ("store", "decode_body"), "read_records": ("store", "read_records"),
    **{name: ("types", name) for name in (
        "HEALTH_OK", "Event", "Health", "HealthState", "JournalError", "JournalLimits",
        "JournalStats", "JournalUnavailable", "Record")},
}

__all__ = [
    "COUNTER_KEYS", "EVENT_COLUMNS", "Event", "HEALTH_OK", "Health", "HealthState", "JOURNAL_KEYS",
    "Journal", "JournalError", "JournalFile", "JournalLimits", "JournalReadError", "JournalStats",
    "JournalUnavailable", "Record",
    "connect_readonly", "decode_body", "iso", "read_journal_limits", "read_records",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = home
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # later lookups skip this function
    return value
