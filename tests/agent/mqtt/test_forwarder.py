"""The forwarder against a real mosquitto: order, outages, silent links, TLS, ACL refusals, live lane."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from harness.mosquitto import Mosquitto, TestPki
from harness.proxy import TcpProxy
from harness.subscriber import Subscriber, dedup_in_order
from harness.waiting import wait_until
from linelight.agent.journal import Event, Journal
from linelight.agent.mqtt.config import MqttSettings, TlsSettings
from linelight.agent.mqtt.forwarder import Forwarder
from tests.agent.mqtt.forwarder_proc import AGENT, fill_journal, settings

pytestmark = pytest.mark.anyio

EVENTS = f"linelight/{AGENT}/events/"
LIVE = f"linelight/{AGENT}/live/"
STATUS = f"linelight/{AGENT}/status"


@asynccontextmanager
async def running(path: Path, mqtt: MqttSettings) -> AsyncIterator[tuple[Journal, Forwarder]]:
    """A journal and a forwarder running in a task group; cancelled on exit."""
    journal = Journal.open(str(path))
    try:
        forwarder = Forwarder(journal, mqtt, agent_id=AGENT, boot=journal.boot, version="test")
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            await tg.start(forwarder.run)
            yield journal, forwarder
            tg.cancel_scope.cancel()
    finally:
        journal.close()


async def wait_seqs(sub: Subscriber, last: int, limit: float = 90) -> list[int]:
    return await anyio.to_thread.run_sync(
        lambda: sub.wait_for_seqs(set(range(1, last + 1)), EVENTS, limit))


def assert_complete_in_order(seqs: list[int], last: int) -> None:
    kept = dedup_in_order(seqs)
    assert kept == list(range(1, last + 1)), (
        f"after dedup: {len(kept)} seqs, first out of order at "
        f"{next((i for i, (a, b) in enumerate(zip(kept, range(1, last + 1), strict=False)) if a != b), None)}")


class Producer:
    """A steady stream of events into the journal, like the scan loop would make."""

    def __init__(self, journal: Journal, period: float = 0.005) -> None:
        self.journal = journal
        self.period = period
        self.count = 0
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            self.journal.submit(Event("count", "parts", self.count, time.time_ns(), {}))
            self.count += 1
            await anyio.sleep(self.period)

    def start(self, tg: anyio.abc.TaskGroup) -> anyio.CancelScope:
        """Run in `tg` until the returned scope is cancelled (`stop_and_settle` does)."""
        scope = anyio.CancelScope()

        async def produce() -> None:
            with scope:
                await self.run()

        tg.start_soon(produce)
        return scope

    async def stop_and_settle(self, scope: anyio.CancelScope) -> int:
        """Stop producing; returns the last seq (an append returns once it and everything
        submitted before it are durable)."""
        self.stopped = True  # at once: a cancelled task may still run one more step
        scope.cancel()
        seq = await self.journal.append(Event("count", "parts", self.count, time.time_ns(), {}))
        assert seq is not None
        return seq


async def test_every_event_arrives_in_order_across_a_broker_restart(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    async with running(tmp_path / "j.db", settings(mosquitto.host, mosquitto.port)) as (
            journal, fwd), anyio.create_task_group() as tg:
        producer = Producer(journal)
        scope = producer.start(tg)
        await wait_until(lambda: len(sub.seqs(EVENTS)) >= 50, "first events delivered")
        await anyio.to_thread.run_sync(mosquitto.stop)
        await wait_until(lambda: not fwd.link.connected, "outage noticed")
        outage_start = journal.newest_seq
        await wait_until(lambda: journal.newest_seq >= outage_start + 100, "backlog grows")
        await anyio.to_thread.run_sync(mosquitto.start)
        await wait_until(lambda: fwd.link.reconnects >= 1, "reconnected")
        last = await producer.stop_and_settle(scope)
        seqs = await wait_seqs(sub, last)
        await wait_until(lambda: journal.stats().depth == 0, "journal drained")
    assert_complete_in_order(seqs, last)
    assert fwd.link.acked >= last


async def test_a_stalled_link_is_noticed_and_rebuilt_without_loss(
        tmp_path: Path, mosquitto: Mosquitto, tcp_proxy: TcpProxy,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    mqtt = settings(tcp_proxy.host, tcp_proxy.port, keepalive=1.0, connect_timeout=2.0)
    async with running(tmp_path / "j.db", mqtt) as (journal, fwd), \
            anyio.create_task_group() as tg:
        producer = Producer(journal, period=0.01)
        scope = producer.start(tg)
        await wait_until(lambda: len(sub.seqs(EVENTS)) >= 20, "first events delivered")
        tcp_proxy.stall()
        await wait_until(lambda: not fwd.link.connected, "silent link detected")
        assert "silent link" in (fwd.link.last_error or "")
        tcp_proxy.resume()
        await wait_until(lambda: fwd.link.reconnects >= 1, "reconnected")
        last = await producer.stop_and_settle(scope)
        seqs = await wait_seqs(sub, last)
    assert_complete_in_order(seqs, last)


async def test_a_cut_link_reconnects_and_loses_nothing(
        tmp_path: Path, mosquitto: Mosquitto, tcp_proxy: TcpProxy,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    async with running(tmp_path / "j.db", settings(tcp_proxy.host, tcp_proxy.port)) as (
            journal, fwd):
        await fill_journal(journal, 20_000)
        for cuts in range(1, 4):
            done = fwd.link.acked
            await wait_until(lambda d=done: fwd.link.acked > d, "progress")
            tcp_proxy.cut()
            await wait_until(lambda c=cuts: fwd.link.reconnects >= c, "reconnected")
        seqs = await wait_seqs(sub, 20_000)
    assert_complete_in_order(seqs, 20_000)


async def test_tls_wrong_ca_is_a_clear_error_and_the_right_ca_with_client_cert_delivers(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto], test_pki: TestPki,
        make_subscriber: Callable[..., Subscriber]) -> None:
    broker = make_mosquitto(extra=test_pki.tls_extra(require_client_cert=True))
    other_ca = TestPki(tmp_path / "other-pki", name="some other CA")
    wrong = settings(broker.host, broker.port, tls=TlsSettings(ca_file=other_ca.ca))
    async with running(tmp_path / "j.db", wrong) as (journal, fwd):
        await fill_journal(journal, 10)
        await wait_until(lambda: fwd.link.last_error is not None, "TLS failure reported")
        error = fwd.link.last_error or ""
        assert f"mqtts://127.0.0.1:{broker.port}" in error
        assert "certificate verif" in error and "ca_file" in error
        assert journal.stats().depth == 10 and not fwd.link.connected

    sub = make_subscriber(broker, f"{EVENTS}#", tls={
        "ca_certs": str(test_pki.ca), "certfile": str(test_pki.client_cert),
        "keyfile": str(test_pki.client_key)})
    right = settings(broker.host, broker.port, tls=TlsSettings(
        ca_file=test_pki.ca, cert_file=test_pki.client_cert, key_file=test_pki.client_key))
    async with running(tmp_path / "j.db", right) as (journal, fwd):
        seqs = await wait_seqs(sub, 10)
    assert_complete_in_order(seqs, 10)


async def test_tls_checks_the_broker_name_unless_told_not_to(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber]) -> None:
    pki = TestPki(tmp_path / "pki", server_names=("broker.plant.example",))
    broker = make_mosquitto(extra=pki.tls_extra())
    checked = settings(broker.host, broker.port, tls=TlsSettings(ca_file=pki.ca))
    async with running(tmp_path / "j.db", checked) as (journal, fwd):
        await fill_journal(journal, 3)
        await wait_until(lambda: fwd.link.last_error is not None, "name mismatch reported")
        error = fwd.link.last_error or ""
        assert "not valid for '127.0.0.1'" in error and "insecure_skip_hostname" in error
        assert not fwd.link.connected

    sub = make_subscriber(broker, f"{EVENTS}#", tls={"ca_certs": str(pki.ca)},
                          tls_insecure=True)
    skip = settings(broker.host, broker.port,
                    tls=TlsSettings(ca_file=pki.ca, insecure_skip_hostname=True))
    async with running(tmp_path / "j.db", skip):
        seqs = await wait_seqs(sub, 3)
    assert_complete_in_order(seqs, 3)


async def test_bad_credentials_are_logged_once_and_events_stay_queued(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber], caplog: pytest.LogCaptureFixture) -> None:
    broker = make_mosquitto(start=False)
    passwd = broker.add_user("agent", "right-secret")
    broker.add_user("reader", "reader-secret", passwd)
    broker.extra = f"password_file {passwd}\nallow_anonymous false\n"
    broker.start()
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-secret\n")
    bad = settings(broker.host, broker.port, username="agent", password_file=str(wrong_file))
    caplog.set_level(logging.WARNING, logger="linelight.agent.mqtt.forwarder")
    async with running(tmp_path / "j.db", bad) as (journal, fwd):
        await fill_journal(journal, 5)
        await wait_until(lambda: fwd.link.attempts >= 3, "retries")
        assert journal.stats().depth == 5
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"mqtt://127.0.0.1:{broker.port}" in lines[0]
    assert "not-the-secret" not in caplog.text
    assert "Bad user name or password" in lines[0] or "Not authorized" in lines[0]

    right_file = tmp_path / "right"
    right_file.write_text("right-secret\n")
    sub = make_subscriber(broker, f"{EVENTS}#", username="reader", password="reader-secret")
    good = settings(broker.host, broker.port, username="agent", password_file=str(right_file))
    async with running(tmp_path / "j.db", good):
        seqs = await wait_seqs(sub, 5)
    assert_complete_in_order(seqs, 5)


async def test_a_refused_event_is_dead_lettered_and_the_rest_flows(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber]) -> None:
    acl = tmp_path / "acl"
    forbidden = f"{EVENTS}alarm/forbidden"
    acl.write_text(f"topic deny {forbidden}\ntopic readwrite linelight/#\n")
    broker = make_mosquitto(extra=f"acl_file {acl}\n")
    sub = make_subscriber(broker, f"{EVENTS}#")
    async with running(tmp_path / "j.db", settings(broker.host, broker.port)) as (
            journal, fwd):
        for i in range(1, 11):
            name = "forbidden" if i == 5 else "allowed"
            await journal.append(Event("alarm", name, i, time.time_ns(), {}))
        # The journal announces the refused event (seq 5) upstream with a gap event, which
        # takes the next free seq (6..11, depending on how appends and sends interleave).
        expected = set(range(1, 12)) - {5}
        await anyio.to_thread.run_sync(lambda: sub.wait_for_seqs(expected, EVENTS, 60))
        await wait_until(lambda: journal.stats().depth == 0, "journal emptied")
        stats = journal.stats()
    assert fwd.link.dead_letters == 1
    assert stats.dead_letters == 1
    assert dedup_in_order(sub.seqs(EVENTS)) == sorted(expected)
    received = [m.decoded for m in sub.snapshot()]
    assert [d["value"] for d in received if d["kind"] == "alarm"] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    gap = next(d for d in received if d["kind"] == "gap")
    assert (gap["first_seq"], gap["last_seq"]) == (5, 5)
    assert "0x87" in gap["why"] and "Not authorized" in gap["why"]


async def test_the_live_lane_overtakes_a_draining_backlog(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, [f"{EVENTS}#", f"{LIVE}#"])
    journal = Journal.open(str(tmp_path / "j.db"))
    async with anyio.create_task_group() as tg:
        await tg.start(journal.run)
        backlog = await fill_journal(journal, 50_000)
        tg.cancel_scope.cancel()
    journal.close()
    async with running(tmp_path / "j.db", settings(mosquitto.host, mosquitto.port)) as (
            journal, fwd):
        await wait_until(lambda: fwd.link.published >= 1_000, "drain under way")
        fwd.publish_live("state", {"name": "producing", "code": 10000})
        acked_then = fwd.link.acked
        await anyio.to_thread.run_sync(lambda: sub.wait_for(
            lambda ms: sub.last_on(f"{LIVE}state") is not None, 60, "live state"))
        await wait_seqs(sub, backlog)
    assert acked_then < backlog
    msgs = sub.snapshot()
    live_at = next(i for i, m in enumerate(msgs) if m.topic == f"{LIVE}state")
    last_event_at = max(i for i, m in enumerate(msgs) if m.seq == backlog)
    assert live_at < last_event_at, "the live state waited behind the backlog"
    live = msgs[live_at]
    assert live.decoded["value"] == {"name": "producing", "code": 10000}
    # A subscriber that comes later gets it as a retained message.
    late = make_subscriber(mosquitto, f"{LIVE}#")
    got = await anyio.to_thread.run_sync(lambda: late.wait_for(lambda ms: len(ms) >= 1, 30))
    assert got[0].retain and got[0].decoded["value"]["name"] == "producing"


async def test_mqtt_311_delivers_in_order_without_user_properties(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    mqtt = settings(mosquitto.host, mosquitto.port, protocol="3.1.1", codec="json")
    async with running(tmp_path / "j.db", mqtt) as (journal, _fwd):
        last = await fill_journal(journal, 500)
        seqs = await wait_seqs(sub, last)
    assert_complete_in_order(seqs, last)
    first = next(m for m in sub.snapshot() if m.seq == 1)
    assert first.user_properties == ()
    assert first.decoded["agent"] == AGENT and first.decoded["unit"] == "rpm"



async def test_live_values_are_published_again_after_a_reconnect(
        tmp_path: Path, mosquitto: Mosquitto, tcp_proxy: TcpProxy,
        make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{LIVE}#")  # straight to the broker, not via the proxy

    def live_copies(ms: list[Any]) -> int:
        return sum(1 for m in ms if m.topic == f"{LIVE}lamp/red" and not m.retain)

    async with running(tmp_path / "j.db", settings(tcp_proxy.host, tcp_proxy.port)) as (
            _journal, fwd):
        fwd.publish_live("lamp/red", "blink_fast")
        fwd.publish_live("lamp/red", "on")  # only the latest value per key is kept
        await wait_until(lambda: fwd.link.connected, "connected")
        await anyio.to_thread.run_sync(lambda: sub.wait_for(lambda ms: live_copies(ms) >= 1, 30))
        tcp_proxy.cut()
        await wait_until(lambda: fwd.link.reconnects >= 1, "reconnected")
        got = await anyio.to_thread.run_sync(
            lambda: sub.wait_for(lambda ms: live_copies(ms) >= 2, 30, "republished live value"))
    values = [m.decoded["value"] for m in got if m.topic == f"{LIVE}lamp/red"]
    assert values == ["on", "on"]


async def test_stop_leaves_offline_retained_and_does_not_reconnect(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, STATUS)
    async with running(tmp_path / "j.db", settings(mosquitto.host, mosquitto.port)) as (
            _journal, fwd):
        await anyio.to_thread.run_sync(lambda: sub.wait_for(
            lambda ms: any(m.decoded["status"] == "online" for m in ms), 30, "online"))
        connects = fwd.link.connects
        await fwd.stop()
        assert not fwd.link.connected
        await anyio.sleep(1.0)  # longer than the test backoff: a reconnect would have happened
        assert fwd.link.connects == connects
    late = make_subscriber(mosquitto, STATUS)
    got = await anyio.to_thread.run_sync(lambda: late.wait_for(lambda ms: len(ms) >= 1, 30))
    assert got[0].retain and got[0].decoded == {"status": "offline", "agent": AGENT}


async def test_mosquitto_drops_a_denied_publish_silently_with_mqtt_311(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber]) -> None:
    """MQTT 3.1.1 has no PUBACK reason codes: mosquitto acknowledges and discards (documented
    in docs/wire-format.md). The agent cannot know, so nothing is dead-lettered."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic deny {EVENTS}alarm/forbidden\ntopic readwrite linelight/#\n")
    broker = make_mosquitto(extra=f"acl_file {acl}\n")
    sub = make_subscriber(broker, f"{EVENTS}#")
    mqtt = settings(broker.host, broker.port, protocol="3.1.1")
    async with running(tmp_path / "j.db", mqtt) as (journal, fwd):
        for i in range(1, 4):
            await journal.append(Event("alarm", "forbidden" if i == 2 else "allowed", i,
                                       time.time_ns(), {}))
        await anyio.to_thread.run_sync(lambda: sub.wait_for_seqs({1, 3}, EVENTS, 60))
        await wait_until(lambda: fwd.link.acked == 3, "all three acknowledged")
        assert journal.stats().depth == 0, broker.log_tail()
    assert fwd.link.dead_letters == 0, broker.log_tail()
    assert sub.seqs(EVENTS) == [1, 3]


async def test_rate_limited_replay_still_delivers_everything_in_order(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, f"{EVENTS}#")
    mqtt = settings(mosquitto.host, mosquitto.port, msgs_per_s=2000.0, bytes_per_s=200_000.0)
    async with running(tmp_path / "j.db", mqtt) as (journal, _fwd):
        last = await fill_journal(journal, 600)
        seqs = await wait_seqs(sub, last)
    assert_complete_in_order(seqs, last)


async def test_a_row_of_an_unexpected_shape_is_dead_lettered_and_delivery_goes_on(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber]) -> None:
    import sqlite3

    import msgpack

    path = tmp_path / "j.db"
    journal = Journal.open(str(path))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            for i in range(1, 11):
                await journal.append(Event("count", "parts", i, time.time_ns(), {}))
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET body = ? WHERE seq = 5", (msgpack.packb([1, 5]),))
    conn.commit()
    conn.close()
    broker = make_mosquitto()
    sub = make_subscriber(broker, f"{EVENTS}#")
    async with running(path, settings(broker.host, broker.port)) as (journal, fwd):
        await anyio.to_thread.run_sync(
            lambda: sub.wait_for_seqs(set(range(1, 12)) - {5}, EVENTS, 60))
        await wait_until(lambda: journal.stats().depth == 0, "journal emptied")
        stats = journal.stats()
    assert stats.dead_letters == 1
    received = [m.decoded for m in sub.snapshot()]
    assert [d["value"] for d in received if d["kind"] == "count"] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    gap = next(d for d in received if d["kind"] == "gap")
    assert gap["reason"] == "dead_letter" and gap["first_seq"] == 5
