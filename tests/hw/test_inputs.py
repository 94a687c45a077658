"""The input table: updates from the loop and from foreign threads, snapshots, change waits."""

from __future__ import annotations

import threading

import anyio
import pytest

from linelight.hw.inputs import InputTable
from linelight.rules.values import Quality, Sample, Value


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


# -- whole blocks: update_good (the pollers' path) ------------------------------------------------

def _counts(table: InputTable) -> tuple[int, int]:
    return table.version, table.value_changes


def test_update_good_stores_and_counts_what_update_many_does() -> None:
    """The same writes through update_many (Samples made one by one) and update_good: the same
    snapshots and the same value-change counts, including a repeated read (the same tuple, and
    an equal one), a value whose type changes (1 and True are equal in Python), a STALE input
    read again and a name the table did not know."""
    names = ("a", "b", "c")
    first = (1, 2.5, "x")
    steps: list[tuple[tuple[Value, ...], Quality]] = [
        (first, Quality.GOOD),
        (first, Quality.GOOD),  # the same tuple again (bytes read again unchanged)
        ((1, 2.5, "x"), Quality.GOOD),  # an equal tuple: no value change either
        ((True, 2.5, "x"), Quality.GOOD),  # 1 -> True: a change
        ((True, 2.5, "x"), Quality.STALE),  # marked stale by the source's watcher
        ((True, 2.5, "x"), Quality.GOOD),  # read again: GOOD is a change
        ((True, 3.0, "x"), Quality.GOOD),
    ]
    plain, batch = InputTable(["a", "b"]), InputTable(["a", "b"])  # "c" is not declared
    for at, (values, quality) in enumerate(steps):
        before_plain, before_batch = _counts(plain), _counts(batch)
        samples = {n: Sample(v, quality, float(at), at, "r" if quality is Quality.STALE else "")
                   for n, v in zip(names, values, strict=True)}
        plain.update_many(samples)
        if quality is Quality.GOOD:
            batch.update_good(names, values, float(at), at)
        else:
            batch.update_many(samples)
        assert [x - y for x, y in zip(_counts(batch), before_batch, strict=True)] == \
            [x - y for x, y in zip(_counts(plain), before_plain, strict=True)]
        assert batch.snapshot() == plain.snapshot()
    assert plain.value_changes == 5  # all but the two repeated reads


def test_update_good_refuses_names_and_values_of_different_lengths() -> None:
    table = InputTable()
    with pytest.raises(ValueError, match="2 input names for 1 values"):
        table.update_good(("a", "b"), (1,), 1.0, 1)
    assert table.snapshot() == {}


def test_a_block_read_again_unchanged_refreshes_every_age_without_a_value_change() -> None:
    names, values = ("a", "b"), (7, 8.5)
    table = InputTable()
    table.update_good(names, values, 1.0, 100)
    version, changes = _counts(table)
    table.update_good(names, values, 2.0, 200)
    table.update_good(names, values, 3.0, 300)  # twice before anyone reads: the last counts
    assert table.version == version + 2 and table.value_changes == changes
    assert table.get("a") == Sample(7, Quality.GOOD, 3.0, 300)
    assert table.snapshot() == {"a": Sample(7, Quality.GOOD, 3.0, 300),
                                "b": Sample(8.5, Quality.GOOD, 3.0, 300)}
    table.update_good(names, values, 4.0, 400)  # after a read, too
    assert table.snapshot()["b"] == Sample(8.5, Quality.GOOD, 4.0, 400)


def test_updates_between_two_reads_count_every_change_and_the_read_sees_the_last() -> None:
    names = ("a", "b")
    table = InputTable()
    table.update_good(names, (1, 2), 1.0, 1)
    table.snapshot()
    changes = table.value_changes
    table.update_good(names, (1, 3), 2.0, 2)
    table.update_good(names, (1, 3), 3.0, 3)
    table.update_good(names, (True, 3), 4.0, 4)  # the type alone changes
    assert table.value_changes == changes + 2
    assert table.snapshot() == {"a": Sample(True, Quality.GOOD, 4.0, 4),
                                "b": Sample(3, Quality.GOOD, 4.0, 4)}


def test_a_write_after_a_block_update_is_not_overwritten_by_it() -> None:
    names, values = ("a", "b"), (1, 2)
    table = InputTable()
    table.update_good(names, values, 1.0, 1)
    table.update_good(names, values, 2.0, 2)  # its Samples not made yet
    stale = Sample(1, Quality.STALE, 3.0, 3, "no answer")
    table.update("a", stale)
    assert table.snapshot() == {"a": stale, "b": Sample(2, Quality.GOOD, 2.0, 2)}


def test_a_block_input_marked_stale_then_read_again_unchanged_is_good_again_and_counted() -> None:
    names, values = ("a", "b"), (1, 2)
    table = InputTable()
    table.update_good(names, values, 1.0, 1)
    table.update_many({"a": Sample(1, Quality.STALE, 2.0, 2, "no answer")})
    changes = table.value_changes
    table.update_good(names, values, 3.0, 3)  # the same tuple, as a poller passes it
    assert table.value_changes == changes + 1
    assert table.snapshot() == {"a": Sample(1, Quality.GOOD, 3.0, 3),
                                "b": Sample(2, Quality.GOOD, 3.0, 3)}


def test_blocks_sharing_a_name_leave_it_to_the_last_write() -> None:
    table = InputTable()
    ab, bc = (1, 2), (20, 30)
    for at in (1.0, 2.0, 3.0):
        table.update_good(("a", "b"), ab, at, 0)
        table.update_good(("b", "c"), bc, at, 0)
    table.update_good(("a", "b"), ab, 4.0, 0)
    assert {n: (s.value, s.at) for n, s in table.snapshot().items()} == {
        "a": (1, 4.0), "b": (2, 4.0), "c": (30, 3.0)}


def test_scoped_inputs_store_blocks_under_their_prefix() -> None:
    table = InputTable()
    scoped = table.scoped("m1.")
    names, values = ("a", "b"), (1, 2)
    scoped.update_good(names, values, 1.0, 1)
    changes = table.value_changes
    scoped.update_good(names, values, 2.0, 2)
    assert table.value_changes == changes
    assert table.snapshot() == {"m1.a": Sample(1, Quality.GOOD, 2.0, 2),
                                "m1.b": Sample(2, Quality.GOOD, 2.0, 2)}
