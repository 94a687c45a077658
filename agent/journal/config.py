"""The agent config's `[journal]` table: its key table and `read_journal_limits`."""

from __future__ import annotations

from linelight.agent.journal.types import JournalLimits
from linelight.rules.fields import Table
from linelight.rules.keys import Key, Keys

_D = JournalLimits()
JOURNAL_KEYS = Keys("the on-disk queue", (
    Key("max_bytes", "size", "queued data kept; beyond it the oldest events of the lowest class "
        "are dropped (and announced by a gap event)", _D.max_bytes, minimum=64 * 1024),
    Key("max_age", "duration", "oldest unacknowledged event kept; 0 keeps events of any age",
        _D.max_age),
    Key("min_free_disk", "size", "stop growing below this much free disk", _D.min_free_disk),
    Key("commit_window", "duration", "group commit: the longest a commit waits for more "
        "events; a few ms is usual", _D.commit_window, maximum=1.0),
    Key("max_group", "integer", "events per commit at most", _D.max_group, minimum=1),
    Key("max_pending", "integer", "events submitted but not yet committed; beyond it they are "
        "dropped and counted", _D.max_pending, minimum=1),
))


def read_journal_limits(table: Table | None) -> JournalLimits:
    """The agent config's `[journal]` table; problems are collected on the table's Problems."""
    if table is None:
        return _D
    JOURNAL_KEYS.bind(table)
    values = {key: JOURNAL_KEYS.read(table, key) for key in JOURNAL_KEYS.names}
    table.finish()
    return JournalLimits(**{key: getattr(_D, key) if value is None else value
                            for key, value in values.items()})
