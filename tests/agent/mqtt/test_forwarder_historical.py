"""The `historical` flag as a consumer sees it, from a real journal through a real mosquitto.

The forwarder sets `historical = true` on an event it publishes more than `historical_after`
after the event was committed (`enq_ns`, wall clock). Here events committed while the broker
was down for longer than that arrive flagged, and events of the live flow before and after
the outage arrive unflagged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber
from harness.waiting import wait_until
from linelight.agent.journal import Event, Journal
from tests.agent.mqtt.forwarder_proc import settings
from tests.agent.mqtt.test_forwarder import EVENTS, running

pytestmark = pytest.mark.anyio

# Long enough that a live event, delivered within the same second on a loaded machine, is
# never past it; short enough to keep the outage (which must outlast it) brief.
HISTORICAL_AFTER = 4.0


async def deliver_one_by_one(journal: Journal, sub: Subscriber, count: int, start: int) -> list[int]:
    """Live flow: commit one event, wait until the subscriber has it, then the next."""
    seqs = []
    for i in range(count):
        seq = await journal.append(Event("count", "parts", start + i, time.time_ns(), {}))
        assert seq is not None
        await anyio.to_thread.run_sync(
            lambda s=seq: sub.wait_for(lambda ms: any(m.seq == s for m in ms), 60,
                                       f"live seq {s}"))
        seqs.append(seq)
    return seqs


async def test_backlog_older_than_historical_after_is_flagged_and_live_flow_is_not(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    mqtt = settings(mosquitto.host, mosquitto.port, historical_after=HISTORICAL_AFTER)
    async with running(tmp_path / "j.db", mqtt) as (journal, fwd):
        await wait_until(lambda: fwd.link.connected, "connected")
        live_before = await deliver_one_by_one(journal, sub, 5, 0)
        # Acknowledged and deleted, so the reconnect cannot re-send them (late, hence flagged).
        await wait_until(lambda: journal.stats().depth == 0, "live events acknowledged")

        await anyio.to_thread.run_sync(mosquitto.stop)
        await wait_until(lambda: not fwd.link.connected, "outage noticed")
        backlog = []
        for i in range(20):
            seq = await journal.append(Event("count", "parts", 100 + i, time.time_ns(), {}))
            assert seq is not None
            backlog.append(seq)
        # The broker stays down until the newest backlog event is older than historical_after
        # (by the same wall clock the forwarder compares with), plus a margin.
        newest_enq = time.time_ns()  # append returned: every backlog enq_ns is before this
        await anyio.sleep(max(0.0, (newest_enq - time.time_ns()) / 1e9 + HISTORICAL_AFTER + 0.5))
        assert time.time_ns() - newest_enq > HISTORICAL_AFTER * 1e9
        await anyio.to_thread.run_sync(mosquitto.start)
        await wait_until(lambda: fwd.link.reconnects >= 1, "reconnected")
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(backlog), EVENTS, 90))
        await wait_until(lambda: journal.stats().depth == 0, "backlog drained")

        live_after = await deliver_one_by_one(journal, sub, 5, 200)

    flags: dict[int, set[bool]] = {}
    for m in sub.snapshot():
        if m.topic.startswith(EVENTS) and m.seq is not None:
            flags.setdefault(m.seq, set()).add(m.decoded["historical"])
    assert {s: flags[s] for s in backlog} == {s: {True} for s in backlog}, \
        "events that waited out the outage must arrive with historical = true"
    live = live_before + live_after
    assert {s: flags[s] for s in live} == {s: {False} for s in live}, \
        "events of the live flow must arrive with historical = false"
