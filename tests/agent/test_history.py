"""The page's history: what it keeps from events and probes, its bounds, and a damaged file."""

from __future__ import annotations

from pathlib import Path

import pytest

from linelight.agent import history as hist
from linelight.agent.history import History, Probe
from linelight.agent.journal import Event

HOUR_MS = 3_600_000


class WallClock:
    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


def state(name: str, code: int, ms: int) -> Event:
    return Event("state", name, code, ms * 1_000_000, {"previous_state": "x"})


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


def test_states_alarms_and_reloads_come_back_as_the_timeline(tmp_path: Path,
                                                             clock: WallClock) -> None:
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    t0 = clock.ms
    h.observe(state("producing", 10000, t0 - 3 * HOUR_MS))  # before the window: its start
    h.observe(Event("alarm", "door_open", True, (t0 - 2 * HOUR_MS) * 1_000_000))  # still on
    h.observe(Event("alarm", "estop", True, (t0 - 2 * HOUR_MS) * 1_000_000))
    h.observe(Event("alarm", "estop", False, (t0 - 2 * HOUR_MS + 1) * 1_000_000))  # over
    h.observe(state("fault", 180000, t0 - 30 * 60_000))
    h.observe(Event("alarm", "overheat", True, (t0 - 20 * 60_000) * 1_000_000))
    h.observe(Event("alarm", "overheat", False, (t0 - 10 * 60_000) * 1_000_000))
    h.observe(Event("agent", "rules_rejected", 2, t0 * 1_000_000, {"errors": ["a.toml:3:1: x"]}))
    h.observe(Event("signal", "temp", 21.5, t0 * 1_000_000))  # not a timeline mark
    h.flush()
    doc = h.query(hours=1, points=100)
    assert [s[1:] for s in doc["states"]] == [["producing", 10000, None], ["fault", 180000, None]]
    assert [(m[1], m[2], m[3]) for m in doc["marks"]] == [
        ("alarm", "door_open", "on"), ("alarm", "overheat", "on"), ("alarm", "overheat", "off"),
        ("reject", "rules rejected", "2")]
    assert doc["marks"][-1][4] == "a.toml:3:1: x"


def test_link_changes_restarts_and_the_depth_peak_of_each_window(tmp_path: Path,
                                                                 clock: WallClock) -> None:
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    clock.ms -= clock.ms % 10_000
    for depth, up in [(0, True), (500, False), (20, False)]:  # one 10 s window
        h.probe(Probe(depth=depth, link=up, link_error="connection refused",
                      restarts={"source plc": (0, "")}))
        clock.ms += 3000
    clock.ms += 1000
    h.probe(Probe(depth=0, link=True, restarts={"source plc": (1, "timed out")}))
    h.flush()
    doc = h.query(hours=1, points=1000)
    assert [d[1:] for d in doc["depth"]] == [[500, 0]]  # the peak, and down at some probe
    assert [(m[1], m[2], m[4]) for m in doc["marks"]] == [
        ("link", "broker up", None), ("link", "broker down", "connection refused"),
        ("link", "broker up", None), ("restart", "source plc", "timed out")]


def test_a_start_after_a_kill_says_the_previous_run_did_not_stop_cleanly(
        tmp_path: Path, clock: WallClock) -> None:
    path = tmp_path / "history.db"
    h = History.open(path, wall_ms=clock)
    h.started(1)
    h.stopped()
    h.close()
    h = History.open(path, wall_ms=clock)
    h.started(2)
    h.flush()  # no stop: as after kill -9
    h = History.open(path, wall_ms=clock)
    h.started(3)
    h.flush()
    starts = [m for m in h.query(1, 10)["marks"] if m[1] == "start"]
    assert [(m[3], m[4] is None) for m in starts] == [("1", True), ("2", True), ("3", False)]
    assert "without a clean stop" in starts[-1][4]


def test_size_is_bounded_by_age_and_by_count(tmp_path: Path, clock: WallClock,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hist, "MAX_MARKS", 50)
    monkeypatch.setattr(hist, "PRUNE_EVERY", 1)
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    old = clock.ms - hist.KEEP_S * 1000 - 1
    h.observe(state("ancient", 1, old))
    h.flush()
    for i in range(200):  # a state flapping every 100 ms
        h.observe(state("a" if i % 2 else "b", 1, clock.ms - 20_000 + i * 100))
    h.flush()
    size = h.size()
    assert size["marks"] == 50
    names = [s[1] for s in h.query(hist.MAX_HOURS, 10)["states"]]
    assert "ancient" not in names and len(names) == 50


def test_the_file_stays_near_14_mb_with_every_limit_reached_and_the_longest_texts(
        tmp_path: Path, clock: WallClock) -> None:
    from linelight.agent.history import Mark

    h = History.open(tmp_path / "history.db", wall_ms=clock)
    start = clock.ms - hist.KEEP_S * 1000 + 60_000
    long = "x" * 1000
    for i in range(hist.MAX_MARKS + 5000):
        h.note(Mark(start + i, "state", long, long, None, long))
        if i % 10 == 0:
            h.note(Mark(start + i, "restart", long, long, long))
        if i % 5000 == 0:
            h.flush()
    for i in range(hist.MAX_SAMPLES + 100):  # more than fit: as if the clock stepped back
        h._samples.append((start + i * 4000, 10**12, True))
        if i % 5000 == 0:
            h.flush()
    h._writes = 0  # the next write prunes
    h.flush()
    h.close()
    files = sum(p.stat().st_size for p in tmp_path.glob("history.db*"))
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    size = h.size()
    assert size["marks"] == hist.MAX_MARKS and size["samples"] == hist.MAX_SAMPLES
    assert files < 14 * 2**20, f"{files:,} bytes"  # docs/operations.md: about 14 MB at most


def test_a_damaged_file_is_moved_aside_and_history_starts_afresh(tmp_path: Path,
                                                                 clock: WallClock) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database" * 100)
    h = History.open(path, wall_ms=clock)
    assert h.available
    h.observe(state("producing", 10000, clock.ms))
    h.flush()
    assert [s[1] for s in h.query(1, 10)["states"]] == ["producing"]
    assert len(list(tmp_path.glob("history.db.corrupt-*"))) == 1


def test_a_directory_that_cannot_hold_the_file_disables_history_without_failing(
        tmp_path: Path, clock: WallClock) -> None:
    h = History.open(tmp_path / "missing" / "history.db", wall_ms=clock)
    h.observe(state("producing", 10000, clock.ms))
    h.flush()
    h.close()
    assert not h.available and h.query(1, 10)["available"] is False


def test_a_link_still_connecting_after_the_start_is_no_outage_but_one_that_stays_down_is(
        tmp_path: Path, clock: WallClock) -> None:
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    h.probe(Probe(depth=0, link=False, link_error="connecting"))
    h.probe(Probe(depth=0, link=True))
    h.flush()
    assert [m[2] for m in h.query(1, 10)["marks"]] == ["broker up"]
    h = History.open(tmp_path / "other.db", wall_ms=clock)
    for _ in range(hist.LINK_GRACE_PROBES + 1):
        h.probe(Probe(depth=0, link=False, link_error="connection refused"))
    h.flush()
    assert [(m[2], m[4]) for m in h.query(1, 10)["marks"]] == [
        ("broker down", "connection refused")]


def test_with_several_machines_every_machine_has_its_own_states_and_alarms(
        tmp_path: Path, clock: WallClock) -> None:
    h = History.open(tmp_path / "history.db", wall_ms=clock)
    ns = clock.ms * 1_000_000
    before = ns - 2 * HOUR_MS * 1_000_000  # before the window: each machine's state at its start
    h.observe(Event("state", "idle", 40000, before, {"machine": "press1"}))
    h.observe(Event("state", "producing", 10000, before + 1, {"machine": "capper"}))
    h.observe(Event("state", "producing", 10000, ns, {"machine": "press1"}))
    h.observe(Event("state", "fault", 180000, ns, {"machine": "capper"}))
    h.observe(Event("alarm", "jam", True, before, {"machine": "capper"}))  # still on
    h.observe(Event("alarm", "jam", False, before + 1, {"machine": "press1"}))  # another's
    h.flush()
    doc = h.query(1, 10)
    assert doc["states"][2:] == [[clock.ms, "producing", 10000, "press1"],
                                 [clock.ms, "fault", 180000, "capper"]]
    assert sorted(tuple(s[1:]) for s in doc["states"][:2]) == [
        ("idle", 40000, "press1"), ("producing", 10000, "capper")]
    assert [(m[1], m[2], m[3], m[5]) for m in doc["marks"]] == [("alarm", "jam", "on", "capper")]


def test_a_file_from_before_machines_gains_the_machine_column_and_keeps_its_marks(
        tmp_path: Path, clock: WallClock) -> None:
    import sqlite3

    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE marks (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, "
                     "kind TEXT NOT NULL, name TEXT NOT NULL, value TEXT, detail TEXT);")
    db.execute("INSERT INTO marks (ts_ms, kind, name, value) VALUES (?, 'state', 'idle', "
               "'40000')", (clock.ms - 1000,))
    db.commit()
    db.close()
    h = History.open(path, wall_ms=clock)
    h.observe(Event("state", "fault", 180000, clock.ms * 1_000_000, {"machine": "press1"}))
    h.flush()
    assert h.query(1, 10)["states"] == [[clock.ms - 1000, "idle", 40000, None],
                                        [clock.ms, "fault", 180000, "press1"]]
