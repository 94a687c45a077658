"""The forwarder as a Sparkplug B edge node against a real mosquitto, read by an independent
host (tests/agent/mqtt/sparkplug_host.py, decoding with the generated classes): births before
data, the NDEATH will, QoS 0 data with the receipt barrier, every event in order through an
outage, replayed events flagged historical, bdSeq persisted and wrapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from harness.mosquitto import Mosquitto
from harness.subscriber import Subscriber, dedup_in_order
from linelight.agent.journal import Journal
from linelight.agent.mqtt import SparkplugSettings
from linelight.agent.mqtt.sparkplug import META_BD_SEQ
from tests.agent.mqtt.forwarder_proc import AGENT, fill_journal, settings
from tests.agent.mqtt.sparkplug_host import Host
from tests.agent.mqtt.test_forwarder import Producer, running, wait_until

pytestmark = pytest.mark.anyio

GROUP = "plant-1"
# A host that is briefly away (the broker restarting) still gets the QoS 0 data queued.
QUEUE_QOS0 = "queue_qos0_messages true"


def sp_settings(broker: Mosquitto, **kw: Any) -> Any:
    return settings(broker.host, broker.port, topic_mode="sparkplug",
                    sparkplug=SparkplugSettings(group_id=GROUP), **kw)


def host_of(sub: Subscriber) -> Host:
    return Host(GROUP, AGENT).feed(sub.snapshot())


async def wait_host(sub: Subscriber, done: Callable[[Host], bool], what: str,
                    limit: float = 90) -> Host:
    await wait_until(lambda: done(host_of(sub)), what, within=limit)
    return host_of(sub)


async def before_start(path: Path, *, events: int = 0, bd_seq: int | None = None) -> int:
    """A journal as an earlier run left it: `events` queued, the bdSeq stored; its newest seq."""
    journal = Journal.open(str(path))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.run)
            last = await fill_journal(journal, events) if events else 0
            if bd_seq is not None:
                await journal.put_meta(META_BD_SEQ, bd_seq)
            tg.cancel_scope.cancel()
    finally:
        journal.close()
    return last


def device_live(host: Host) -> list[tuple[int, str | None, str, Any, bool]]:
    """The live lane's device values (not the node's figures)."""
    return [v for v in host.live if v[1] is not None]


def has_all(last: int) -> Callable[[Host], bool]:
    want = set(range(1, last + 1))
    return lambda h: want <= set(h.seqs())


async def test_births_then_every_event_in_order_qos0_and_the_will_carries_the_bdseq(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    async with running(tmp_path / "j.db", sp_settings(mosquitto)) as (journal, fwd):
        await wait_until(lambda: fwd._born.is_set(), "born")  # what waits for the births is historical
        last = await fill_journal(journal, 600)
        host = await wait_host(sub, has_all(last), "every event at the host")
        await wait_until(lambda: journal.stats().depth == 0, "journal drained by the barrier")
        assert journal.get_meta(META_BD_SEQ) == 0
        # the link drops without DISCONNECT: the broker publishes the will
        assert fwd._mqtt is not None
        fwd._mqtt.close("test: dropped")
        host = await wait_host(sub, lambda h: len(h.deaths) == 1 and
                               h.verbs.count("NBIRTH") == 2, "will, then births again")
        assert journal.get_meta(META_BD_SEQ) == 1
    assert host.problems == []
    assert host.verbs[:2] == ["NBIRTH", "DBIRTH"]
    nbirths = [b for b in host.births if b["verb"] == "NBIRTH"]
    assert [b["metrics"]["bdSeq"] for b in nbirths] == [0, 1]
    assert nbirths[0]["metrics"]["Node Control/Rebirth"] is False
    assert host.deaths == [(0, 1)]  # the first connection's bdSeq, delivered at QoS 1
    assert dedup_in_order(host.seqs()) == list(range(1, last + 1))
    first = [s for s in host.seen if s.bd_seq == 0]
    assert {s.agent for s in first} == {AGENT} and not any(s.historical for s in first)
    assert all(s.name == "Signals/spindle" and s.value == s.seq - 1 for s in first)
    # packed: far fewer DDATA messages than events
    assert host.verbs.count("DDATA") < last / 4


async def test_a_broker_outage_loses_nothing_and_the_backlog_comes_flagged_historical(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber]) -> None:
    broker = make_mosquitto(QUEUE_QOS0)
    sub = make_subscriber(broker, "spBv1.0/#")
    async with running(tmp_path / "j.db", sp_settings(broker, historical_after=0.3)) as (
            journal, fwd), anyio.create_task_group() as tg:
        producer = Producer(journal)
        scope = producer.start(tg)
        await wait_host(sub, lambda h: len(h.seqs()) >= 50, "first events")
        await anyio.to_thread.run_sync(broker.stop)
        await wait_until(lambda: not fwd.link.connected, "outage noticed")
        outage_start = journal.newest_seq
        await wait_until(lambda: journal.newest_seq >= outage_start + 100, "backlog grows")
        waited = journal.newest_seq  # these rows wait at least 0.5 s more than the 0.3 s
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(broker.start)
        await wait_until(lambda: fwd.link.reconnects >= 1, "reconnected")
        await wait_host(sub, lambda h: len([s for s in h.seen if s.bd_seq == 1]) >= 50,
                        "live again after the backlog")
        last = await producer.stop_and_settle(scope)
        host = await wait_host(sub, has_all(last), "every event at the host")
        await wait_until(lambda: journal.stats().depth == 0, "journal drained")
    assert host.problems == []
    assert dedup_in_order(host.seqs()) == list(range(1, last + 1))
    after = [s for s in host.seen if s.bd_seq == 1]
    assert [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"] == [0, 1]
    first_after = {}
    for s in after:
        first_after.setdefault(s.seq, s)
    backlog = [first_after[q] for q in range(outage_start + 1, waited + 1) if q in first_after]
    assert len(backlog) == waited - outage_start  # all of them came on the new connection
    assert all(s.historical for s in backlog)
    assert not after[-1].historical  # live again once the backlog is through


async def test_bdseq_is_persisted_across_restarts_and_wraps_255_to_0(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    path = tmp_path / "j.db"
    await before_start(path, bd_seq=254)
    for _ in range(2):
        async with running(path, sp_settings(mosquitto)) as (journal, fwd):
            await wait_until(lambda: fwd.link.connected, "connected")
            await fill_journal(journal, 5)
            await wait_until(lambda: journal.stats().depth == 0, "sent")
            await fwd.stop()
    host = await wait_host(sub, lambda h: len(h.deaths) == 4, "two clean stops")
    assert [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"] == [255, 0]
    # a clean stop says DDEATH, then NDEATH with the connection's bdSeq; its MQTT 5
    # DISCONNECT has reason 0x04, so the broker publishes the will too
    assert host.deaths == [(255, 1), (255, 1), (0, 1), (0, 1)]
    assert host.verbs[-3:] == ["DDEATH", "NDEATH", "NDEATH"]
    assert host.problems == []


def command(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """Publish one command as a host application would (QoS 0, not retained)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-host-app")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def rebirth_payload(value: bool = True) -> bytes:
    from linelight.agent.mqtt import sparkplug_b_pb2 as pb

    payload = pb.Payload(timestamp=1)
    payload.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=value)
    return bytes(payload.SerializeToString())


async def test_rebirth_mid_stream_same_bdseq_nothing_lost_or_sent_twice(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    async with running(tmp_path / "j.db", sp_settings(mosquitto)) as (
            journal, fwd), anyio.create_task_group() as tg:
        await wait_until(lambda: fwd._born.is_set(), "born")
        producer = Producer(journal)
        scope = producer.start(tg)
        await wait_host(sub, lambda h: len(h.seqs()) >= 50, "first events")
        await anyio.to_thread.run_sync(
            command, mosquitto, f"spBv1.0/{GROUP}/NCMD/{AGENT}", rebirth_payload())
        host = await wait_host(sub, lambda h: h.verbs.count("NBIRTH") == 2, "the rebirth")
        at_rebirth = len(host.seqs())
        await wait_host(sub, lambda h: len(h.seqs()) >= at_rebirth + 50, "data after it")
        last = await producer.stop_and_settle(scope)
        host = await wait_host(sub, has_all(last), "every event")
    assert host.problems == []  # seq 0 again at the NBIRTH, +1 from there on
    assert [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"] == [0, 0]
    assert host.verbs.count("DBIRTH") >= 2
    assert host.seqs() == list(range(1, last + 1))  # each exactly once, in order
    assert not any(s.historical for s in host.seen)
    assert fwd.link.reconnects == 0


async def test_writes_are_refused_and_a_malformed_command_is_ignored(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber],
        caplog: pytest.LogCaptureFixture) -> None:
    from linelight.agent.mqtt import sparkplug_b_pb2 as pb

    sub = make_subscriber(mosquitto, "spBv1.0/#")
    write = pb.Payload(timestamp=1)
    write.metrics.add(name="Lamps/red", datatype=pb.String, string_value="steady")
    write.metrics.add(name="bad\x1b[2Jname", datatype=pb.Boolean, boolean_value=True)
    async with running(tmp_path / "j.db", sp_settings(mosquitto)) as (journal, fwd):
        await wait_host(sub, lambda h: "DBIRTH" in h.verbs, "births")
        with caplog.at_level("WARNING", logger="linelight.agent.mqtt.forwarder"):
            for topic, payload in (
                    (f"spBv1.0/{GROUP}/DCMD/{AGENT}/{AGENT}", write.SerializeToString()),
                    (f"spBv1.0/{GROUP}/NCMD/{AGENT}", b"\xff\xff\xff\xff not protobuf"),
                    (f"spBv1.0/{GROUP}/NCMD/{AGENT}", rebirth_payload(False))):
                await anyio.to_thread.run_sync(command, mosquitto, topic, bytes(payload))
            await wait_until(lambda: len(caplog.records) >= 2, "both logged")
            last = await fill_journal(journal, 20)
            host = await wait_host(sub, has_all(last), "data goes on")
        assert fwd.link.connected and fwd.link.reconnects == 0
    texts = [r.getMessage() for r in caplog.records]
    refused = [t for t in texts if "refused" in t]
    assert len(refused) == 1 and "writes Lamps/red, bad" in refused[0], texts
    assert "\x1b" not in refused[0] and "\\x1b" in refused[0], refused  # escaped
    malformed = [t for t in texts if "not a Sparkplug B payload" in t]
    assert len(malformed) == 1 and "17 bytes" in malformed[0], texts
    assert not any(r.exc_info for r in caplog.records)
    assert host.verbs.count("NBIRTH") == 1  # Rebirth = false is no rebirth


def state(broker: Mosquitto, online: bool | str, ts: int = 0, host: str = "scada") -> None:
    """The primary host's STATE as a host application publishes it: retained, QoS 1; 3.0 JSON,
    or (a string) the pre-3.0 plain payload on STATE/{host}."""
    import json

    if isinstance(online, str):
        command(broker, f"STATE/{host}", online.encode())
    else:
        command(broker, f"spBv1.0/STATE/{host}",
                json.dumps({"online": online, "timestamp": ts}).encode())


def retained_state(broker: Mosquitto, online: bool, ts: int) -> None:
    import json

    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-host-state")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish("spBv1.0/STATE/scada", json.dumps({"online": online, "timestamp": ts}),
                       qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def node_messages(sub: Subscriber) -> list[str]:
    return [m.topic for m in sub.snapshot() if m.topic.startswith(f"spBv1.0/{GROUP}/")]


async def test_primary_host_offline_holds_births_and_data_online_sends_backlog_then_live(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    await anyio.to_thread.run_sync(retained_state, mosquitto, False, 1000)
    mqtt = settings(mosquitto.host, mosquitto.port, topic_mode="sparkplug", historical_after=0.3,
                    sparkplug=SparkplugSettings(group_id=GROUP, primary_host_id="scada"))
    async with running(tmp_path / "j.db", mqtt) as (journal, fwd):
        await wait_until(lambda: fwd.link.connected and fwd._host_ts == 1000,
                         "connected, the retained offline STATE read")
        first = await fill_journal(journal, 100)
        # an online STATE older than the offline one is a replay: ignored
        await anyio.to_thread.run_sync(state, mosquitto, True, 999)
        await anyio.sleep(0.5)
        assert node_messages(sub) == []  # nothing while the host is offline
        assert journal.stats().depth == first
        await anyio.to_thread.run_sync(retained_state, mosquitto, True, 2000)
        await wait_host(sub, has_all(first), "births, then the backlog")
        live = await fill_journal(journal, 10)
        await wait_host(sub, has_all(live), "live")
        await wait_until(lambda: journal.stats().depth == 0, "confirmed")
        # offline again: NDEATH, the link is left; the journal keeps what comes meanwhile
        await anyio.to_thread.run_sync(retained_state, mosquitto, False, 3000)
        await wait_host(sub, lambda h: len(h.deaths) == 2, "NDEATH (and the will) on offline")
        await wait_until(lambda: fwd.link.reconnects >= 1 and fwd.link.connected,
                         "connected again, waiting")
        held = await fill_journal(journal, 50)
        await anyio.sleep(0.5)
        assert journal.stats().depth == held - live
        # a pre-3.0 host's plain ONLINE is understood too
        await anyio.to_thread.run_sync(state, mosquitto, "ONLINE")
        host = await wait_host(sub, has_all(held), "births and the held events")
    assert host.problems == []
    assert [b["metrics"]["bdSeq"] for b in host.births if b["verb"] == "NBIRTH"] == [0, 1]
    assert host.deaths == [(0, 1), (0, 1)]
    by_seq = {s.seq: s for s in host.seen}
    assert all(by_seq[q].historical for q in range(1, first + 1))
    assert not any(by_seq[q].historical for q in range(first + 1, live + 1))
    assert all(by_seq[q].historical for q in range(live + 1, held + 1))
    assert dedup_in_order(host.seqs()) == list(range(1, held + 1))


async def test_live_values_are_current_ddata_while_a_backlog_replays_historical(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    path = tmp_path / "j.db"
    backlog = await before_start(path, events=6000)
    # 10 DDATA messages a second at most: the backlog takes seconds to replay
    async with running(path, sp_settings(mosquitto, msgs_per_s=10.0)) as (journal, fwd):
        fwd.publish_live("state", {"name": "stopped", "code": 40000, "since_ns": 1})
        host = await wait_host(sub, lambda h: len(h.seqs()) >= 200, "the replay under way")
        assert [v[2:] for v in device_live(host)] == [("State/Code", 40000, False),
                                                      ("State/Name", "stopped", False)]
        fwd.publish_live("state", {"name": "producing", "code": 10000, "since_ns": 2})
        host = await wait_host(sub, lambda h: len(device_live(h)) == 4, "the change, live")
        at = device_live(host)[-1][0]
        host = await wait_host(sub, has_all(backlog), "the whole backlog")
    assert host.problems == []
    assert [v[2:] for v in device_live(host)[2:]] == [("State/Code", 10000, False),
                                                      ("State/Name", "producing", False)]
    # linelight's own figures: the births carry the backlog waiting at the connect
    nbirth = next(b for b in host.births if b["verb"] == "NBIRTH")
    assert nbirth["metrics"]["linelight/queue depth"] == backlog
    assert nbirth["metrics"]["linelight/oldest age s"] > 0
    assert at < backlog  # it did not wait behind the backlog
    assert all(s.historical for s in host.seen)  # the backlog never overwrites a live tag
    assert dedup_in_order(host.seqs()) == list(range(1, backlog + 1))


async def test_a_barrier_the_acl_refuses_still_confirms_the_events_and_says_so_once(
        tmp_path: Path, make_mosquitto: Callable[..., Mosquitto],
        make_subscriber: Callable[..., Subscriber], caplog: pytest.LogCaptureFixture) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic deny linelight/{AGENT}/sparkplug/received\n"
                   "topic readwrite spBv1.0/#\n")
    broker = make_mosquitto(extra=f"acl_file {acl}\n")
    sub = make_subscriber(broker, "spBv1.0/#")
    with caplog.at_level("WARNING", logger="linelight.agent.mqtt.forwarder"):
        async with running(tmp_path / "j.db", sp_settings(broker)) as (journal, fwd):
            await wait_until(lambda: fwd._born.is_set(), "born")
            first = await fill_journal(journal, 300)
            await wait_until(lambda: journal.stats().depth == 0, "confirmed all the same")
            last = await fill_journal(journal, 300)
            host = await wait_host(sub, has_all(last), "every event")
            await wait_until(lambda: journal.stats().depth == 0, "and again")
    assert first < last and host.problems == []
    refusals = [r.getMessage() for r in caplog.records if "receipt barrier" in r.getMessage()]
    assert len(refusals) == 1 and "Not authorized" in refusals[0], refusals
    assert fwd.link.dead_letters == 0


async def test_over_mqtt_3_1_1_the_same_and_a_clean_stop_sends_one_ndeath(
        tmp_path: Path, mosquitto: Mosquitto, make_subscriber: Callable[..., Subscriber]) -> None:
    sub = make_subscriber(mosquitto, "spBv1.0/#")
    async with running(tmp_path / "j.db", sp_settings(mosquitto, protocol="3.1.1",
                                                      protocol_pinned=True)) as (journal, fwd):
        await wait_until(lambda: fwd._born.is_set(), "born")
        last = await fill_journal(journal, 300)
        await wait_until(lambda: journal.stats().depth == 0, "confirmed by the barrier")
        await fwd.stop()
    await wait_host(sub, lambda h: has_all(last)(h) and len(h.deaths) == 1,
                    "every event, then the NDEATH")
    await anyio.sleep(0.5)  # a will would follow at once
    host = host_of(sub)
    assert host.problems == [] and fwd.link.protocol == "3.1.1"
    assert host.deaths == [(0, 1)]  # 3.1.1: our NDEATH, then a DISCONNECT that drops the will
    assert dedup_in_order(host.seqs()) == list(range(1, last + 1))
