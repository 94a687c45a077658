"""The forwarder process against a real journal file and a real mosquitto: the backlog in order,
the live lane, a kill -9 of the child, and what the journal's writer hands out."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from harness.mosquitto import Mosquitto
from harness.ports import free_port
from harness.subscriber import Subscriber, dedup_in_order
from linelight.agent.journal import Journal
from linelight.agent.mqtt import MqttSettings
from linelight.agent.supervisor import Supervisor
from linelight.agent.uplink import ForwarderProcess
from tests.agent.mqtt.forwarder_proc import AGENT, fill_journal, settings

pytestmark = pytest.mark.anyio

EVENTS = f"linelight/{AGENT}/events/"
LIVE = f"linelight/{AGENT}/live/"


@asynccontextmanager
async def running(path: Path, mqtt: MqttSettings
                  ) -> AsyncIterator[tuple[Journal, ForwarderProcess, Supervisor]]:
    """A journal and a supervised forwarder process, as the app runs them; cancelled on exit."""
    journal = Journal.open(str(path))
    supervisor = Supervisor()
    try:
        forwarder = ForwarderProcess(journal, mqtt, agent_id=AGENT, boot=journal.boot,
                                     version="test")
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            await tg.start(supervisor.run, "forwarder", forwarder.run)
            yield journal, forwarder, supervisor
            tg.cancel_scope.cancel()
    finally:
        journal.close()


async def until(predicate: Callable[[], bool], what: str, limit: float = 90) -> None:
    deadline = anyio.current_time() + limit
    while not predicate():
        if anyio.current_time() > deadline:
            raise TimeoutError(f"not reached within {limit}s: {what}")
        await anyio.sleep(0.02)


async def test_a_backlog_and_the_live_lane_reach_the_broker_and_the_journal_drains(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"linelight/{AGENT}/#"])
    async with running(tmp_path / "j.db", settings("127.0.0.1", mosquitto.port)) as (
            journal, forwarder, _):
        last = await fill_journal(journal, 3000)
        forwarder.publish_live("state", {"name": "producing", "code": 10000})
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(range(1, last + 1)), EVENTS, 90))
        await until(lambda: journal.stats().depth == 0, "acked rows deleted by the agent")
        await until(lambda: forwarder.link.acked >= last, "the child's link status mirrored")
        assert forwarder.link.connected and forwarder.pid != os.getpid()
    assert dedup_in_order(sub.seqs(EVENTS)) == list(range(1, last + 1))
    live = [m for m in sub.snapshot() if m.topic == LIVE + "state"]
    assert live and live[-1].decoded["value"]["name"] == "producing"


async def test_kill_9_of_the_child_is_restarted_and_resends_what_was_not_acked(
        tmp_path: Path, mosquitto: Mosquitto,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"{EVENTS}#"])
    async with running(tmp_path / "j.db", settings("127.0.0.1", mosquitto.port)) as (
            journal, forwarder, supervisor):
        await until(lambda: forwarder.link.connected, "first child connected")
        first = forwarder.pid
        assert first is not None
        last = await fill_journal(journal, 20000)
        await until(lambda: forwarder.link.acked > 0, "some rows acked")
        os.kill(first, signal.SIGKILL)
        await until(lambda: supervisor.status()["forwarder"]["restarts"] >= 1
                    and forwarder.pid != first, "a new child")
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(range(1, last + 1)), EVENTS, 90))
        await until(lambda: journal.stats().depth == 0, "the journal drained")
    assert dedup_in_order(sub.seqs(EVENTS)) == list(range(1, last + 1))


async def test_hand_out_gives_the_newest_committed_seq(tmp_path: Path) -> None:
    journal = Journal.open(str(tmp_path / "j.db"))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            assert await journal.hand_out() == 0
            last = await fill_journal(journal, 10)
            assert await journal.hand_out() == last == journal.newest_seq
            tg.cancel_scope.cancel()
    finally:
        journal.close()


async def test_the_childs_log_lines_come_out_of_the_agents_own_logging(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="linelight.agent.mqtt.forwarder")
    port = free_port()  # nothing listens there
    async with running(tmp_path / "j.db", settings("127.0.0.1", port)) as (_, forwarder, _s):
        await until(lambda: any(f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records),
                    "the child's connection warning, logged by the agent")
        assert forwarder.link.last_error and f"127.0.0.1:{port}" in forwarder.link.last_error
