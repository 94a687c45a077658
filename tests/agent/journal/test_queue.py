"""The journal's API: append, submit, peek, ack, dead letters, meta, stats, limits, opening."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import pytest

from linelight.agent.journal import (
    Event,
    Journal,
    JournalError,
    JournalLimits,
    read_journal_limits,
    schema,
)
from linelight.rules.errors import ConfigProblems
from linelight.rules.fields import Problems, Table
from linelight.rules.tomldoc import TomlDoc
from tests.agent.journal.support import drain, event, rows, running

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[3]


async def test_append_returns_increasing_seqs_and_peek_gives_them_back_in_order(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        seqs = [await j.append(event(value=i)) for i in range(5)]
        recs = await j.peek(10)
    assert seqs == [1, 2, 3, 4, 5]
    assert [r.seq for r in recs] == seqs
    assert [r.value for r in recs] == [0, 1, 2, 3, 4]
    assert all(r.boot == 1 and r.kind == "signal" and r.name == "press.temp" for r in recs)
    assert all(r.enq_ns >= r.ts_ns for r in recs)


async def test_payload_values_and_attrs_round_trip(tmp_path: Path):
    values = [None, True, -7, 2**40, 1.25, "text é", b"\x00\xff", [1, "a"], {"k": [1, 2]}]
    async with running(tmp_path / "q.db") as j:
        for v in values:
            await j.append(Event("state", "machine", v, 123, {"prev": "idle", "n": 3}))
        recs = await j.peek(100)
    assert [r.value for r in recs] == values
    assert all(r.attrs == {"prev": "idle", "n": 3} and r.ts_ns == 123 for r in recs)


async def test_concurrent_appends_share_commits_and_get_distinct_seqs(tmp_path: Path):
    got: list[int | None] = []
    async with running(tmp_path / "q.db") as j:
        async def one(i: int) -> None:
            got.append(await j.append(event(value=i)))

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, i)
        recs = await j.peek(1000)
    assert sorted(got) == list(range(1, 301))  # type: ignore[type-var]
    assert [r.seq for r in recs] == list(range(1, 301))


async def test_submitted_events_are_committed_and_wake_wait_new(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        for i in range(50):
            j.submit(event("count", "parts", i))
        with anyio.fail_after(30):
            await j.wait_new(49)
        recs = await j.peek(100)
    assert [r.value for r in recs] == list(range(50))


async def test_wait_new_returns_at_once_when_a_newer_row_exists(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        await j.append(event())
        with anyio.fail_after(30):
            await j.wait_new(0)
        assert j.newest_seq == 1


async def test_peek_after_seq_gives_the_next_window(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        for i in range(10):
            await j.append(event(value=i))
        first = await j.peek(4)
        second = await j.peek(4, after_seq=first[-1].seq)
    assert [r.seq for r in first] == [1, 2, 3, 4]
    assert [r.seq for r in second] == [5, 6, 7, 8]


async def test_ack_deletes_exactly_the_given_seqs(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for i in range(6):
            await j.append(event(value=i))
        assert await j.ack([2, 4, 99]) == 2
        assert [r.seq for r in await j.peek(10)] == [1, 3, 5, 6]
        assert j.stats().depth == 4
    assert rows(path) == [1, 3, 5, 6]


async def test_seq_and_boot_keep_increasing_after_everything_was_acked(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for _ in range(5):
            await j.append(event())
        await drain(j)
        assert j.boot == 1
    async with running(path) as j:
        seq = await j.append(event())
        assert j.boot == 2
        assert (await j.peek(1))[0].boot == 2
    assert seq == 6


async def test_close_commits_what_was_submitted_even_without_the_writer(tmp_path: Path):
    path = tmp_path / "q.db"
    j = Journal.open(str(path))
    for i in range(3):
        j.submit(event(value=i))
    j.close()
    assert rows(path) == [1, 2, 3]


@pytest.mark.parametrize("max_group", [4096, 4])
async def test_submit_overflow_is_dropped_counted_and_reported_as_one_gap(tmp_path: Path,
                                                                          max_group: int):
    path = tmp_path / "q.db"
    async with running(path, JournalLimits(max_pending=10, max_group=max_group)) as j:
        for i in range(25):  # no await in between: the writer cannot drain the buffer
            j.submit(event(value=i))
        with anyio.fail_after(30):
            await j.wait_new(11)
        recs = await drain(j)
        stats = j.stats()
    kept = [r for r in recs if r.kind == "signal"]
    gaps = [r for r in recs if r.kind == "gap"]
    assert [r.value for r in kept] == list(range(10))
    assert len(gaps) == 1
    assert gaps[0].name == "overflow"
    assert gaps[0].attrs["count"] == 15 and gaps[0].value == 15
    assert gaps[0].attrs["first_seq"] == 11 and gaps[0].attrs["last_seq"] == 25
    assert gaps[0].attrs["kinds"] == {"signal": 15}
    assert gaps[0].seq == 26
    assert stats.dropped == 15 and stats.gaps == 1


async def test_bad_events_raise_from_append_but_never_from_submit(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        with pytest.raises(ValueError, match="unknown event kind 'sensor'"):
            await j.append(Event("sensor", "x", 1, 0))
        with pytest.raises(TypeError):
            await j.append(Event("signal", "x", object(), 0))
        j.submit(Event("sensor", "x", 1, 0))
        j.submit(event(value=1))
        with anyio.fail_after(30):
            await j.wait_new(2)
        recs = await j.peek(10)
    assert [(r.kind, r.name) for r in recs] == [("signal", "press.temp"), ("gap", "overflow")]


async def test_an_integer_beyond_64_bits_is_counted_and_announced_never_raised_by_submit(
        tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        j.submit(Event("state", "s", 2**64, 0))  # msgpack raises OverflowError for it
        j.submit(Event("signal", "x", 1, 0, {"code": -(10**30)}))
        j.submit(event(value=1))
        with anyio.fail_after(30):
            await j.wait_new(2)
        recs = await j.peek(10)
    assert [(r.kind, r.name) for r in recs] == [("signal", "press.temp"), ("gap", "overflow")]
    assert recs[1].attrs["kinds"] == {"state": 1, "signal": 1}


async def test_dead_letter_moves_the_row_and_counts_it(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        for i in range(3):
            await j.append(event(value=i))
        assert await j.dead_letter(2, "broker refused: payload too large") is True
        assert await j.dead_letter(2, "again") is False
        recs = await j.peek(10)
        assert [r.seq for r in recs] == [1, 3, 4]
        gap = recs[-1]  # never silent: the broker hears that seq 2 will not come
        assert (gap.kind, gap.name, gap.value) == ("gap", "dead_letter", 1)
        assert gap.attrs["first_seq"] == gap.attrs["last_seq"] == 2
        assert gap.attrs["why"] == "broker refused: payload too large"
        assert gap.attrs["kinds"] == {"signal": 1}
        assert j.stats().dead_letters == 1
    assert rows(path, "SELECT seq, reason FROM dead_letters") == [
        (2, "broker refused: payload too large")]


async def test_meta_values_survive_a_restart(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        assert j.get_meta("counters", {}) == {}
        await j.put_meta("counters", {"parts": 1234, "scrap": 5})
        assert j.get_meta("counters") == {"parts": 1234, "scrap": 5}
        with pytest.raises(TypeError):
            await j.put_meta("bad", object())
        await j.put_meta("after", 1)  # the writer is still alive
    j2 = Journal.open(str(path))
    try:
        assert j2.get_meta("counters") == {"parts": 1234, "scrap": 5}
        assert j2.get_meta("after") == 1 and j2.get_meta("bad") is None
    finally:
        j2.close()


async def test_stats_report_depth_bytes_and_the_oldest_and_newest_event(tmp_path: Path):
    async with running(tmp_path / "q.db") as j:
        assert j.stats().depth == 0 and j.stats().oldest_seq is None
        e1 = Event("signal", "a", 1, 1000)
        e3 = Event("alarm", "c", True, 3000)
        await j.append(e1)
        await j.append(Event("state", "b", 10000, 2000))
        await j.append(e3)
        await j.ack([1])
        s = j.stats()
    assert (s.depth, s.oldest_seq, s.oldest_ts_ns, s.newest_seq, s.newest_ts_ns) == (
        2, 2, 2000, 3, 3000)
    assert s.bytes > 0 and s.file_bytes > 0 and s.seq_hwm == 3 and s.boot == 1
    assert s.health.ok and str(s.health) == "ok"


async def test_a_second_open_of_the_same_file_is_refused_in_one_sentence(tmp_path: Path):
    path = tmp_path / "q.db"
    j = Journal.open(str(path))
    try:
        with pytest.raises(JournalError, match=r"q\.db is already open in another process"):
            Journal.open(str(path))
    finally:
        j.close()


def test_a_directory_in_the_way_is_named_in_the_error(tmp_path: Path):
    (tmp_path / "q.db").mkdir()
    with pytest.raises(JournalError, match=r"q\.db is a directory, not a database file"):
        Journal.open(str(tmp_path / "q.db"))


def test_a_file_where_the_directory_should_be_is_named_in_the_error(tmp_path: Path):
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(JournalError, match=r"cannot create directory .*state"):
        Journal.open(str(tmp_path / "state" / "q.db"))


def test_a_zero_byte_file_opens_as_an_empty_journal(tmp_path: Path):
    path = tmp_path / "q.db"
    path.write_bytes(b"")
    j = Journal.open(str(path))
    try:
        assert j.stats().depth == 0 and j.stats().recovered == 0
    finally:
        j.close()


async def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    schema.migrate(conn, str(path), upto=1)
    now = time.time_ns()
    conn.execute(f"INSERT INTO events({schema.EVENT_COLUMNS}) VALUES "
                 "(7, 3, 0, 'signal', 'a', ?, ?, 50, X'9101')", (now, now))  # msgpack [1]
    schema.write_counters(conn, {schema.SEQ_HWM: 9, schema.BOOT: 3})
    conn.close()
    async with running(path) as j:
        recs = await j.peek(10)
        seq = await j.append(event())
        await j.dead_letter(7, "test")  # the v2 table exists
    assert [(r.seq, r.boot, r.value) for r in recs] == [(7, 3, 1)]
    assert seq == 10
    assert rows(path, "PRAGMA user_version") == [schema.SCHEMA_VERSION]


def test_a_file_from_a_newer_linelight_is_refused_not_destroyed(tmp_path: Path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="newer than this linelight understands"):
        Journal.open(str(path))
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def _table(text: str) -> tuple[Table, Problems]:
    problems = Problems()
    root = Table.root(TomlDoc.parse(text, "agent.toml"), problems)
    table = root.table("journal")
    assert table is not None
    return table, problems


def test_journal_limits_are_read_with_their_units():
    table, problems = _table(
        '[journal]\nmax_bytes = "64MiB"\nmax_age = "7d"\nmin_free_disk = "100MB"\n'
        'commit_window = "2ms"\nmax_group = 500\nmax_pending = 2000\n')
    limits = read_journal_limits(table)
    problems.raise_if_any()
    assert limits == JournalLimits(max_bytes=64 * 1024 * 1024, max_age=7 * 86400.0,
                                   min_free_disk=100_000_000, commit_window=0.002,
                                   max_group=500, max_pending=2000)
    assert read_journal_limits(None) == JournalLimits()


def test_journal_limit_mistakes_are_located():
    table, problems = _table(
        '[journal]\nmax_bytes = "lots"\nmax_age = "2 weeks"\ncommit_windw = "5ms"\n'
        'max_group = 0\n')
    read_journal_limits(table)
    with pytest.raises(ConfigProblems) as err:
        problems.raise_if_any()
    text = str(err.value)
    assert "agent.toml:2:13: 'lots' is not a size" in text
    assert "agent.toml:3:11: '2 weeks' is not a duration" in text
    assert "agent.toml:4:1: unknown key 'commit_windw' in journal; did you mean 'commit_window'?" in text
    assert "agent.toml:5:13: 'max_group' must be at least 1, not 0" in text


@pytest.mark.parametrize("in_thread", [False, True], ids=["loop-thread", "worker-thread"])
async def test_close_commits_and_wakes_appends_waiting_without_a_writer(tmp_path: Path,
                                                                        in_thread: bool):
    j = Journal.open(str(tmp_path / "q.db"))
    got: list[int | None] = []
    async with anyio.create_task_group() as tg:
        async def waiter() -> None:
            got.append(await j.append(event()))
            with pytest.raises(JournalError, match="is closed"):
                await j.wait_new(1)

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        if in_thread:
            await anyio.to_thread.run_sync(j.close)
        else:
            j.close()
    assert got == [1]


async def test_stats_after_a_restart_and_after_acking_the_newest(tmp_path: Path):
    path = tmp_path / "q.db"
    async with running(path) as j:
        await j.append(Event("signal", "a", 1, 1000))
        await j.append(Event("signal", "b", 2, 2000))
        await j.append(Event("signal", "c", 3, 3000))
    async with running(path) as j:
        s = j.stats()
        assert (s.depth, s.oldest_seq, s.newest_seq, s.newest_ts_ns) == (3, 1, 3, 3000)
        await j.ack([3])
        s = j.stats()
        assert (s.depth, s.newest_seq, s.newest_ts_ns, s.seq_hwm) == (2, 2, 2000, 3)


def _as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a check as another user")
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", "import linelight.agent.journal"],
                           cwd=REPO, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot import linelight here: {probe.stderr.strip()[-200:]}")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code, *args],
                          cwd=REPO, capture_output=True, text=True)


_OPEN = ("import sys\nfrom linelight.agent.journal import Journal, JournalError\n"
         "try:\n    Journal.open(sys.argv[1])\nexcept JournalError as e:\n    print(e)\n"
         "    sys.exit(3)\n")


@pytest.mark.root
def test_a_directory_this_user_cannot_write_is_one_sentence_not_a_traceback():
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        done = _as_nobody(_OPEN, os.path.join(top, "q.db"))
        assert done.returncode == 3, done.stderr
        assert done.stdout.strip() == (f"journal {top}/q.db: directory {top} is not writable "
                                       "by this user (uid 65534)")


@pytest.mark.root
def test_a_file_this_user_cannot_read_is_one_sentence_not_a_traceback():
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o777)
        path = os.path.join(top, "q.db")
        Journal.open(path).close()
        os.chmod(path, 0o600)
        done = _as_nobody(_OPEN, path)
        assert done.returncode == 3, done.stderr
        assert done.stdout.strip() == (f"journal {path} is not readable and writable by this "
                                       "user (uid 65534)")
