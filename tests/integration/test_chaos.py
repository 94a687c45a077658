"""The chaos harness: its checks catch what they claim to, and a one-minute run finds nothing.

The run is `bench/chaos.py --minutes 1` as a subprocess: the real agent, a real mosquitto
behind the stall/cut proxy, faults at random (agent and broker kill -9, broker restarts,
stalls, cuts, disk full, rule reloads, Modbus device gone), each family at least once. It is
a pass/fail check of the invariants (nothing committed lost, order kept, every drop announced
and explained, never producing or a lit green on stale inputs), not a timing threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.chaos_check import (
    NORMAL,
    SMALL,
    Book,
    Watcher,
    Window,
    check_delivery,
    tower_violation,
)
from harness.subscriber import Received

ROOT = Path(__file__).resolve().parents[2]

# The fault families a CI run must reach (bench/chaos.py schedules one of each first).
MUST_INJECT = {
    "agent kill -9": ("agent_kill9",),
    "forwarder process kill -9": ("forwarder_kill9",),
    "broker outage or kill": ("broker_restart", "broker_kill9", "long_outage_small_journal"),
    "link stall or cut": ("link_stall", "link_cut"),
    "disk full or max_bytes drop": ("disk_full", "disk_full_at_start",
                                    "long_outage_small_journal"),
    "damaged files": ("wal_truncate", "wal_delete"),
    "rule reload": ("rules_reload_good", "rules_reload_broken"),
}
TOPIC = "linelight/chaos-press/events/"


def status(state: str, green: str, running: str) -> dict[str, Any]:
    return {"state": {"name": state}, "lamps": {"green": green, "amber": "off"},
            "inputs": {"running": {"quality": running}, "fault_code": {"quality": "good"},
                       "estop_ok": {"quality": "good"}}}


def test_tower_check_flags_producing_on_a_stale_input_only() -> None:
    assert tower_violation(status("producing", "on", "stale")) is not None
    assert tower_violation(status("unknown", "off", "stale")) is None
    assert tower_violation(status("producing", "on", "good")) is None


@pytest.mark.parametrize("green", ["on", "blink_slow", "blink_fast"])
def test_tower_check_flags_any_lit_green_on_a_stale_input(green: str) -> None:
    violation = tower_violation(status("unknown", green, "stale"))
    assert violation is not None and f"green {green}" in violation
    assert tower_violation(status("unknown", green, "bad")) is not None
    assert tower_violation(status("unknown", green, "good")) is None


class Snapshot:
    """What `check_delivery` reads from a subscriber: its received messages."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def snapshot(self) -> list[Received]:
        return [Received(TOPIC + f"{d['kind']}/{d['name']}", b"", False, (), d)
                for d in self.docs]


def event(seq: int, boot: int = 1) -> dict[str, Any]:
    return {"seq": seq, "boot": boot, "kind": "signal", "name": "running", "ts": 0}


def gap(seq: int, first: int, last: int, reason: str, boot: int = 1) -> dict[str, Any]:
    return {"seq": seq, "boot": boot, "kind": "gap", "name": reason, "reason": reason,
            "first_seq": first, "last_seq": last, "count": last - first + 1, "ts": 10}


def kinds(book: Book) -> list[str]:
    return [k for k, _ in book.violations]


def test_delivery_check_passes_a_complete_stream_with_duplicates() -> None:
    book = Book()
    sub = Snapshot([event(1), event(2), event(2), event(3)])
    out = check_delivery(sub, 3, book, first_seq=1)  # type: ignore[arg-type]
    assert book.violations == [] and out["duplicates"] == 1


def test_delivery_check_flags_a_lost_event_and_a_reordered_one() -> None:
    book = Book()
    check_delivery(Snapshot([event(1), event(3), event(2), event(5)]), 5, book,  # type: ignore[arg-type]
                   first_seq=1)
    assert {"order", "lost"} <= set(kinds(book))


def test_delivery_check_accepts_a_drop_only_where_a_limit_explains_it() -> None:
    stream = [event(1), gap(4, 2, 3, "max_bytes", boot=2)]
    explained = Book(boots={2: SMALL})
    check_delivery(Snapshot(stream), 4, explained, first_seq=1)  # type: ignore[arg-type]
    assert explained.violations == []

    unexplained = Book(boots={2: NORMAL})
    check_delivery(Snapshot(stream), 4, unexplained, first_seq=1)  # type: ignore[arg-type]
    assert kinds(unexplained) == ["gap"]

    disk = Book(windows=[Window(frozenset({"disk_full"}), 5, 20)])
    check_delivery(Snapshot([event(1), gap(4, 2, 3, "disk_full")]), 4, disk,  # type: ignore[arg-type]
                   first_seq=1)
    assert disk.violations == []


def test_delivery_check_flags_a_seq_issued_twice() -> None:
    reused = Book()
    check_delivery(Snapshot([event(1), event(2), event(2, boot=2)]), 2, reused,  # type: ignore[arg-type]
                   first_seq=1)
    assert kinds(reused) == ["seq"]

    resent = Book()
    check_delivery(Snapshot([event(1), event(2), event(2)]), 2, resent,  # type: ignore[arg-type]
                   first_seq=1)
    assert resent.violations == []


def test_delivery_check_flags_drops_no_gap_announces() -> None:
    stream = [event(1), gap(4, 2, 3, "disk_full")]
    disk = [Window(frozenset({"disk_full"}), 5, 20)]
    announced = Book(windows=disk, max_dropped=2)
    check_delivery(Snapshot(stream), 4, announced, first_seq=1)  # type: ignore[arg-type]
    assert announced.violations == []

    forgotten = Book(windows=disk, max_dropped=5)  # /status counted 5, gaps name 2
    check_delivery(Snapshot(stream), 4, forgotten, first_seq=1)  # type: ignore[arg-type]
    assert kinds(forgotten) == ["gap"]


def test_a_lost_gap_explains_its_range_only_while_a_file_fault_ran() -> None:
    stream = [event(1), {**gap(9, 2, 8, "lost"), "count": 0}]
    during = Book(windows=[Window(frozenset({"lost"}), 5, 20)])
    check_delivery(Snapshot(stream), 9, during, first_seq=1)  # type: ignore[arg-type]
    assert during.violations == []

    never = Book()
    check_delivery(Snapshot(stream), 9, never, first_seq=1)  # type: ignore[arg-type]
    assert "gap" in kinds(never)


def test_the_watcher_flags_seq_or_dropped_going_back() -> None:
    book = Book()
    watcher = Watcher(None, None, book)  # type: ignore[arg-type]
    watcher._never_back({"seq_hwm": 100, "dropped": 7, "boot": 1})
    watcher._never_back({"seq_hwm": 120, "dropped": 7, "boot": 2})
    assert book.violations == []
    watcher._never_back({"seq_hwm": 50, "dropped": 3, "boot": 3})
    assert kinds(book) == ["seq", "gap"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_one_minute_of_chaos_breaks_no_invariant() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "1", "--seed", "20261122"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    report = done.stdout + "\n" + done.stderr[-6000:]
    assert done.returncode == 0, report
    summary = json.loads(done.stdout.strip().splitlines()[-1])["chaos"]
    assert summary["violations"] == [], report
    assert summary["faults_total"] > 0 and summary["unique"] > 0, report
    # Each fault family that matters was really injected (counted per fault kind by the
    # harness as it ran them), not only "some fault".
    faults = summary["faults"]
    missing = [family for family, kinds in MUST_INJECT.items()
               if not any(faults.get(k, 0) > 0 for k in kinds)]
    assert not missing, f"a one-minute run never injected: {missing}; faults {faults}"
