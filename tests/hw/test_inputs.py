"""The input table: updates from the loop and from foreign threads, snapshots, change waits."""

from __future__ import annotations

import threading

import anyio
import pytest

from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality, Sample


@pytest.mark.anyio
async def test_updates_from_threads_arrive_in_order_through_the_event_loop():
    table = InputTable(["count"])
    assert table.get("count").quality is Quality.INIT
    update = table.threadsafe_updater()

    def worker() -> None:  # like a gpiozero callback thread
        for i in range(1000):
            update("count", Sample(i, Quality.GOOD, float(i)))

    version = table.version
    thread = threading.Thread(target=worker)
    thread.start()
    with anyio.fail_after(20):
        while table.get("count").value != 999:
            version = await table.wait_changed(version)
    thread.join()
    assert table.get("count").at == 999.0


@pytest.mark.anyio
async def test_snapshot_is_a_copy_and_update_many_is_one_change():
    table = InputTable()
    table.update("a", Sample(1, Quality.GOOD, 1.0))
    snap = table.snapshot()
    before = table.version
    table.update_many({"a": Sample(2, Quality.GOOD, 2.0), "b": Sample(3, Quality.GOOD, 2.0)})
    assert snap["a"].value == 1 and "b" not in snap
    assert table.version == before + 1
    assert {n: s.value for n, s in table.snapshot().items()} == {"a": 2, "b": 3}


def test_value_changes_count_new_values_and_qualities_not_repeated_reads() -> None:
    table = InputTable(["a"])
    before = table.value_changes
    table.update("a", Sample(1, Quality.GOOD, 1.0))
    table.update("a", Sample(1, Quality.GOOD, 2.0))  # the same value read again
    table.update_many({"a": Sample(1, Quality.GOOD, 3.0)})
    assert table.value_changes == before + 1
    table.update("a", Sample(1, Quality.STALE, 4.0, reason="timeout"))
    table.update("a", Sample(True, Quality.STALE, 5.0))  # 1 == True, yet another value
    table.update_many({"a": Sample(True, Quality.STALE, 6.0), "b": Sample(0, Quality.GOOD, 6.0)})
    assert table.value_changes == before + 4
